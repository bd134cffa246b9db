//! `Softmax<dim>` and `LogSoftmax<dim>`: stateless, they lower to the softmax op, whose dim
//! is checked against the input's rank where the layer is applied.

use syn::Ident;

use crate::errors::Errors;
use crate::ir::{FieldKind, StatelessLayer};
use crate::parse::{DimDecl, LayerArg, LayerType};

/// `Softmax<dim>` or `LogSoftmax<dim>`, with `dim` an integer literal, negative to count from
/// the end.
pub fn check(ty: &LayerType, _: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let name = ty.name.to_string();
    let dim = match ty.args.as_slice() {
        [LayerArg::Dim(DimDecl::Lit(dim, _))] => isize::try_from(*dim).ok(),
        [LayerArg::Negative(dim, _)] => isize::try_from(*dim).ok().map(|dim| -dim),
        _ => None,
    };
    let Some(dim) = dim else {
        let span = ty.args.first().map_or(ty.name.span(), LayerArg::span);
        errors.at(
            span,
            format!("`{name}` takes the dim it normalises, an integer literal: `{name}<1>`, or `{name}<-1>` for the last"),
        );
        return None;
    };
    Some(FieldKind::Stateless(StatelessLayer::Softmax {
        dim,
        log: name == "LogSoftmax",
    }))
}
