//! `Flatten`, `Flatten<start>`, `Flatten<start, end>`: PyTorch's `nn.Flatten` (from dim 1 to
//! the last by default); stateless, it lowers to a reshape whose shape is computed here, from
//! literal dims, when the crate compiles.

use syn::Ident;

use crate::errors::Errors;
use crate::ir::{FieldKind, StatelessLayer};
use crate::parse::{DimDecl, LayerArg, LayerType};

/// Reads `Flatten` with up to two integer dims.
pub fn check(ty: &LayerType, _: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let mut dims = Vec::new();
    for arg in &ty.args {
        let dim = match arg {
            LayerArg::Dim(DimDecl::Lit(dim, _)) => isize::try_from(*dim).ok(),
            LayerArg::Negative(dim, _) => isize::try_from(*dim).ok().map(|dim| -dim),
            _ => None,
        };
        match dim {
            Some(dim) => dims.push(dim),
            None => {
                errors.at(
                    arg.span(),
                    "`Flatten` takes its start and end dims as integer literals, like `Flatten<1>` or `Flatten<1, -1>`",
                );
                return None;
            }
        }
    }
    match dims[..] {
        [] => Some(FieldKind::Stateless(StatelessLayer::Flatten {
            start: 1,
            end: -1,
        })),
        [start] => Some(FieldKind::Stateless(StatelessLayer::Flatten {
            start,
            end: -1,
        })),
        [start, end] => Some(FieldKind::Stateless(StatelessLayer::Flatten { start, end })),
        _ => {
            errors.at(
                ty.args[2].span(),
                "`Flatten` takes at most two dims: `Flatten<start, end>`",
            );
            None
        }
    }
}
