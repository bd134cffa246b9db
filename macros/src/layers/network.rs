//! Another `network!` network as a layer (`block: ResBlock`): its widths are its
//! `LayerShape` constants, which rustc compares with the shapes around it.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::Ident;

use super::{LayerRule, Mismatch};
use crate::codegen::private;
use crate::ir::{Dim, DimAssertion, DimKind, FieldKind, Shape};
use crate::parse::LayerType;
use crate::shape::unify;

struct Network {
    ty: Ident,
}

/// A type name without arguments; rustc checks that it is a network.
pub fn check(ty: &LayerType) -> FieldKind {
    FieldKind::Layer(Box::new(Network {
        ty: ty.name.clone(),
    }))
}

impl Network {
    /// One of the nested type's `LayerShape` constants, as a dim rustc checks at `span`.
    fn width(&self, constant: &'static str, span: Span) -> Dim {
        Dim {
            kind: DimKind::Extern {
                ty: self.ty.to_string(),
                constant,
            },
            span,
        }
    }
}

impl LayerRule for Network {
    fn describe(&self) -> String {
        self.ty.to_string()
    }

    fn field_type(&self) -> TokenStream {
        let ty = &self.ty;
        quote!(#ty<B>)
    }

    fn init(&self) -> TokenStream {
        let ty = &self.ty;
        quote!(<#ty<B>>::new(device, rng))
    }

    fn num_params(&self) -> TokenStream {
        let (private, ty) = (private(), &self.ty);
        quote!(<#ty<#private::Cpu>>::NUM_PARAMS)
    }

    fn output_shape(
        &self,
        x: &Shape,
        at: Span,
        assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        let Some(last) = x.0.len().checked_sub(1).filter(|&last| last > 0) else {
            return Err(Mismatch {
                expected: "an input `[batch, features]` or `[B, T, features]`".to_owned(),
                declared: None,
            });
        };
        // rustc checks the rank and the widths against the nested network's constants.
        unify(
            &self.width("INPUT_RANK", at),
            &Dim::lit(x.0.len(), at),
            assertions,
        );
        unify(&self.width("IN_FEATURES", at), &x.0[last], assertions);
        let mut out = x.0.clone();
        out[last] = self.width("OUT_FEATURES", at);
        Ok(Shape(out))
    }

    /// Its tape holds its own copy of the input.
    fn reads_input(&self) -> bool {
        false
    }
}
