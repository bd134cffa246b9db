//! `Embedding<num, dim>`: the runtime's `layers::Embedding`, PyTorch's `nn.Embedding`. It is
//! called with an index input (`idx: Indices<[B, T]>`) and gives `[B, T, dim]`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

use super::{LayerRule, Mismatch, read_dims};
use crate::codegen::{dim_expr, private};
use crate::errors::Errors;
use crate::ir::{Dim, DimAssertion, FieldKind, Shape};
use crate::parse::LayerType;

struct Embedding {
    num: Dim,
    dim: Dim,
}

/// Reads `Embedding<num_embeddings, embedding_dim>`.
pub fn check(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let [num, dim] = read_dims(
        ty,
        const_generics,
        errors,
        "num_embeddings, embedding_dim",
        "Embedding<65, 128>",
    )?;
    Some(FieldKind::Layer(Box::new(Embedding { num, dim })))
}

impl LayerRule for Embedding {
    fn describe(&self) -> String {
        format!("Embedding<{}, {}>", self.num, self.dim)
    }

    fn field_type(&self) -> TokenStream {
        let private = private();
        quote!(#private::layers::Embedding<B>)
    }

    fn init(&self) -> TokenStream {
        let private = private();
        let (num, dim) = (dim_expr(&self.num), dim_expr(&self.dim));
        quote!(#private::layers::Embedding::new(#num, #dim, device, rng))
    }

    fn num_params(&self) -> TokenStream {
        let (num, dim) = (dim_expr(&self.num), dim_expr(&self.dim));
        quote!((#num * #dim))
    }

    /// Only reached from a sequential network, where the input is a tensor.
    fn output_shape(
        &self,
        _x: &Shape,
        _at: Span,
        _assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        Err(Mismatch {
            expected: "indices, an input declared like `idx: Indices<[B, T]>` in `fn forward`"
                .to_owned(),
            declared: None,
        })
    }

    fn reads_input(&self) -> bool {
        false
    }

    fn embedding_width(&self) -> Option<&Dim> {
        Some(&self.dim)
    }
}
