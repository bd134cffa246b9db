//! `MaxPool2d<kernel>`, `MaxPool2d<kernel, stride>`, `MaxPool2d<kernel, stride, padding>` and
//! the same for `AvgPool2d`: PyTorch's `nn.MaxPool2d` / `nn.AvgPool2d` (the stride is the kernel
//! unless given; `stride = s` and `padding = p` may be named). Stateless: they lower to the
//! pooling op, whose output shape is computed when the crate compiles. `AdaptiveAvgPool2d<h, w>`
//! (`nn.AdaptiveAvgPool2d`) lowers to the average pooling with its windows.

use syn::Ident;

use crate::errors::Errors;
use crate::ir::{FieldKind, PoolSpec, StatelessLayer};
use crate::parse::{DimDecl, LayerArg, LayerType};

/// Reads `AdaptiveAvgPool2d<size>` or `AdaptiveAvgPool2d<height, width>`.
pub fn check_adaptive(ty: &LayerType, _: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let sizes: Vec<usize> = ty
        .args
        .iter()
        .map_while(|arg| match arg {
            LayerArg::Dim(DimDecl::Lit(value, _)) if *value > 0 => Some(*value),
            _ => None,
        })
        .collect();
    let (height, width) = match (&sizes[..], sizes.len() == ty.args.len()) {
        (&[size], true) => (size, size),
        (&[height, width], true) => (height, width),
        _ => {
            errors.at(
                ty.name.span(),
                "`AdaptiveAvgPool2d` takes its output size as one or two positive integers, \
                 like `AdaptiveAvgPool2d<1, 1>`",
            );
            return None;
        }
    };
    Some(FieldKind::Stateless(StatelessLayer::AdaptiveAvgPool {
        height,
        width,
    }))
}

/// Reads a pooling layer; `MaxPool2d` or `AvgPool2d` by its name.
pub fn check(ty: &LayerType, _: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let name = ty.name.to_string();
    let mut positional = Vec::new();
    let (mut stride, mut padding) = (None, None);
    for arg in &ty.args {
        match arg {
            LayerArg::Dim(DimDecl::Lit(value, _)) => positional.push(*value),
            LayerArg::Named {
                name: key,
                value: syn::Lit::Int(value),
            } if key == "stride" || key == "padding" => {
                let Ok(value) = value.base10_parse::<usize>() else {
                    errors.over(value, "expected a non-negative integer");
                    return None;
                };
                if key == "stride" {
                    stride = Some(value);
                } else {
                    padding = Some(value);
                }
            }
            other => {
                errors.at(
                    other.span(),
                    format!(
                        "`{name}` takes its kernel, stride and padding as integers, like \
                         `{name}<2>` or `{name}<3, 2, 1>` (or `stride = 2`, `padding = 1`)"
                    ),
                );
                return None;
            }
        }
    }
    let [kernel, ref rest @ ..] = positional[..] else {
        errors.at(
            ty.name.span(),
            format!("`{name}` takes its kernel size: `{name}<2>`"),
        );
        return None;
    };
    if rest.len() > 2 {
        errors.at(
            ty.args[3].span(),
            format!("`{name}` takes at most a kernel, a stride and a padding"),
        );
        return None;
    }
    Some(FieldKind::Stateless(StatelessLayer::Pool(PoolSpec::new(
        name == "MaxPool2d",
        kernel,
        stride.or(rest.first().copied()),
        padding.or(rest.get(1).copied()),
    ))))
}
