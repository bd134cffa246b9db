//! `Param<[dims]>`: a raw trainable tensor, N(0, 1) at initialisation like `torch.randn`,
//! used by name in a forward body.

use quote::ToTokens;
use syn::Ident;

use crate::check::resolve_shape;
use crate::errors::Errors;
use crate::ir::{DimKind, FieldKind};
use crate::parse::{LayerArg, LayerType};

/// `Param<[dims]>`.
pub fn check(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    match ty.args.as_slice() {
        [LayerArg::Shape(shape)] => {
            let shape = resolve_shape(shape, const_generics, false, errors);
            // As in `check_linear`: a dim unknown at compile time was reported already.
            let known = shape
                .0
                .iter()
                .all(|dim| !matches!(dim.kind, DimKind::Named(_)));
            known.then_some(FieldKind::Param { shape })
        }
        _ => {
            errors.over(
                ty.tokens.to_token_stream(),
                "`Param` takes one shape in brackets, like `Param<[784, 128]>`",
            );
            None
        }
    }
}
