//! `Dropout`, `Dropout<p>` (`p = 0.5` by default): the runtime's `layers::Dropout`, PyTorch's
//! `nn.Dropout`. It has no parameters but a mode and a mask generator, so it is a field; the
//! output has the input's shape.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

use super::{LayerRule, Mismatch};
use crate::codegen::private;
use crate::errors::Errors;
use crate::ir::{DimAssertion, FieldKind, Shape};
use crate::parse::{DimDecl, LayerArg, LayerType};

struct Dropout {
    p: f32,
}

/// Reads `Dropout`, `Dropout<0.25>` or `Dropout<p = 0.25>`.
pub fn check(ty: &LayerType, _: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let p = match &ty.args[..] {
        [] => Some(0.5),
        [LayerArg::Float(p, _)] => Some(*p),
        [LayerArg::Dim(DimDecl::Lit(p, _))] => Some(*p as f32),
        [LayerArg::Named { name, value }] if name == "p" => match value {
            syn::Lit::Float(float) => float.base10_parse::<f32>().ok(),
            syn::Lit::Int(int) => int.base10_parse::<f32>().ok(),
            _ => None,
        },
        _ => None,
    };
    match p {
        Some(p) if (0.0..=1.0).contains(&p) => Some(FieldKind::Layer(Box::new(Dropout { p }))),
        _ => {
            errors.at(
                ty.name.span(),
                "`Dropout` takes a probability between 0 and 1: `Dropout<0.5>`",
            );
            None
        }
    }
}

impl LayerRule for Dropout {
    fn describe(&self) -> String {
        format!("Dropout<{}>", self.p)
    }

    fn field_type(&self) -> TokenStream {
        let private = private();
        quote!(#private::layers::Dropout<B>)
    }

    fn init(&self) -> TokenStream {
        let private = private();
        let p = self.p;
        quote!(#private::layers::Dropout::new(#p, rng))
    }

    fn num_params(&self) -> TokenStream {
        quote!(0)
    }

    fn output_shape(
        &self,
        x: &Shape,
        _at: Span,
        _assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        Ok(x.clone())
    }

    fn reads_input(&self) -> bool {
        false
    }
}
