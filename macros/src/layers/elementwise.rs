//! Elementwise layers (`ReLU`, `LeakyReLU<0.2>`, every layer of the elementwise table):
//! stateless, they lower to the op that computes them.

use crate::elementwise::{Elementwise, MapOp};
use crate::errors::Errors;
use crate::ir::{FieldKind, StatelessLayer};
use crate::parse::{DimDecl, LayerArg, LayerType};

/// An elementwise layer: `ReLU`, or with numbers for its parameters, `LeakyReLU<0.2>`
/// (PyTorch's defaults for those left out).
pub fn check(
    ty: &LayerType,
    entry: &'static Elementwise,
    errors: &mut Errors,
) -> Option<FieldKind> {
    let mut args = Vec::new();
    for arg in &ty.args {
        let value = match arg {
            LayerArg::Dim(DimDecl::Lit(value, _)) => Some(*value as f32),
            LayerArg::Negative(value, _) => Some(-(*value as f32)),
            LayerArg::Float(value, _) => Some(*value),
            _ => None,
        };
        match value {
            Some(value) if !value.is_finite() => {
                errors.at(arg.span(), "this number does not fit in an `f32`");
                return None;
            }
            Some(value) => args.push(value),
            None => {
                errors.at(
                    arg.span(),
                    format!("`{}` takes numbers, like `LeakyReLU<0.2>`", ty.name),
                );
                return None;
            }
        }
    }
    match MapOp::with_args(entry, &args, &format!("`{}`", ty.name)) {
        Ok(op) => Some(FieldKind::Stateless(StatelessLayer::Map(op))),
        Err(message) => {
            let span = ty.args.first().map_or(ty.name.span(), LayerArg::span);
            errors.at(span, message);
            None
        }
    }
}
