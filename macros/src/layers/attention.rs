//! `CausalSelfAttention<embed, heads>`: the runtime's `layers::CausalSelfAttention`, causal
//! multi-head self-attention on `[B, T, embed]` with `nn.MultiheadAttention`'s parameters. The
//! head count must divide the width, which is checked when the crate compiles.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

use super::{LayerRule, Mismatch, read_dims};
use crate::codegen::{dim_expr, private};
use crate::errors::Errors;
use crate::ir::{Dim, DimAssertion, DimKind, FieldKind, Shape};
use crate::parse::LayerType;
use crate::shape::unify;

struct CausalSelfAttention {
    embed: Dim,
    heads: Dim,
}

/// Reads `CausalSelfAttention<embed, heads>`.
pub fn check(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let [embed, heads] = read_dims(
        ty,
        const_generics,
        errors,
        "embed_dim, num_heads",
        "CausalSelfAttention<128, 4>",
    )?;
    if let (DimKind::Lit(embed), DimKind::Lit(count)) = (&embed.kind, &heads.kind)
        && (*count == 0 || embed % count != 0)
    {
        errors.at(
            heads.span,
            format!(
                "HEADS does not divide EMBED: {count} heads cannot split a width of {embed} evenly"
            ),
        );
        return None;
    }
    Some(FieldKind::Layer(Box::new(CausalSelfAttention {
        embed,
        heads,
    })))
}

impl LayerRule for CausalSelfAttention {
    fn describe(&self) -> String {
        format!("CausalSelfAttention<{}, {}>", self.embed, self.heads)
    }

    fn field_type(&self) -> TokenStream {
        let private = private();
        quote!(#private::layers::CausalSelfAttention<B>)
    }

    fn init(&self) -> TokenStream {
        let private = private();
        let (embed, heads) = (dim_expr(&self.embed), dim_expr(&self.heads));
        quote!(#private::layers::CausalSelfAttention::new(#embed, #heads, device, rng))
    }

    fn num_params(&self) -> TokenStream {
        let embed = dim_expr(&self.embed);
        quote!((4 * #embed * #embed + 4 * #embed))
    }

    fn output_shape(
        &self,
        x: &Shape,
        _at: Span,
        assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        if let [_, _, width] = x.0.as_slice()
            && unify(&self.embed, width, assertions)
        {
            return Ok(x.clone());
        }
        let leading = match x.0.as_slice() {
            [batch, time, _] => format!("{batch}, {time}"),
            _ => "B, T".to_owned(),
        };
        Err(Mismatch {
            expected: format!("input `[{leading}, {}]`", self.embed),
            declared: Some((
                self.embed.span,
                format!("is declared with width {} here", self.embed),
            )),
        })
    }

    fn input_span(&self) -> Option<Span> {
        Some(self.embed.span)
    }

    fn reads_input(&self) -> bool {
        true
    }

    fn recovered_shape(&self, x: &Shape) -> Option<Shape> {
        (x.0.len() == 3).then(|| x.clone())
    }
}
