//! Declarations to IR: const generics, dims, and each field's layer type. One `check_*` per
//! rule; each records its errors and carries on.

use std::collections::HashMap;

use quote::ToTokens;
use syn::Ident;

use crate::elementwise::{self, MapOp};
use crate::errors::{Errors, did_you_mean};
use crate::ir::{Dim, DimKind, Field, FieldKind, Shape};
use crate::parse::{DimDecl, FieldDecl, LayerArg, LayerType, ShapeDecl};

/// The layer types `network!` knows, for "unknown layer" messages.
const KNOWN_LAYERS: &str = "`Linear<in, out>`, `Param<[dims]>`, `Softmax<dim>`, \
    `LogSoftmax<dim>`, an elementwise layer like `ReLU` or `LeakyReLU<0.2>`, or another \
    network's type";

/// The names of the layer types, for "did you mean" suggestions.
fn layer_names() -> impl Iterator<Item = &'static str> {
    ["Linear", "Param", "Softmax", "LogSoftmax"]
        .into_iter()
        .chain(elementwise::TABLE.iter().filter_map(|entry| entry.layer))
}

/// The name of the backend type parameter every generated network gets.
pub const BACKEND_PARAM: &str = "B";

/// Const generics must be unique and must not take the backend parameter's name.
pub fn check_const_generics(generics: &[Ident], errors: &mut Errors) {
    let mut seen: HashMap<String, &Ident> = HashMap::new();
    for generic in generics {
        // `network!` adds `B: Backend`; a const generic of the same name would shadow it.
        if generic == BACKEND_PARAM {
            errors.at(
                generic.span(),
                format!("`{BACKEND_PARAM}` is the backend type parameter `network!` adds; rename this const generic"),
            );
        }
        if seen.insert(generic.to_string(), generic).is_some() {
            errors.at(
                generic.span(),
                format!("duplicate const generic `{generic}`"),
            );
        }
    }
}

/// Resolves a dim written in a shape: a number, a const generic, or (where `allow_named`) a
/// name bound at run time.
pub fn resolve_dim(
    dim: &DimDecl,
    const_generics: &[Ident],
    allow_named: bool,
    errors: &mut Errors,
) -> Dim {
    match dim {
        DimDecl::Lit(value, span) => Dim::lit(*value, *span),
        DimDecl::Name(name) if const_generics.contains(name) => Dim {
            kind: DimKind::Const(name.to_string()),
            span: name.span(),
        },
        DimDecl::Name(name) => {
            // Parameter shapes are fixed when the network is built, so a name there must be a
            // const generic; only inputs may have dims bound at run time.
            if !allow_named {
                errors.at(
                    name.span(),
                    format!(
                        "layer and parameter dims must be known at compile time: `{name}` is not a const generic; \
                         declare it as `struct Name<const {name}: usize>` or write a number"
                    ),
                );
            }
            Dim {
                kind: DimKind::Named(name.to_string()),
                span: name.span(),
            }
        }
    }
}

/// Resolves every dim of a shape (see [`resolve_dim`]).
pub fn resolve_shape(
    shape: &ShapeDecl,
    const_generics: &[Ident],
    allow_named: bool,
    errors: &mut Errors,
) -> Shape {
    Shape(
        shape
            .dims
            .iter()
            .map(|dim| resolve_dim(dim, const_generics, allow_named, errors))
            .collect(),
    )
}

/// Field names must be unique: they become struct fields and `state_dict` names. Returns, per
/// field, whether it is the first of its name (the later ones are left out of the struct).
pub fn check_duplicate_fields(fields: &[FieldDecl], errors: &mut Errors) -> Vec<bool> {
    let mut seen: HashMap<String, &Ident> = HashMap::new();
    fields
        .iter()
        .map(|field| {
            let Some(name) = field.name.as_ref() else {
                return true;
            };
            match seen.get(&name.to_string()) {
                Some(first) => {
                    errors.at(name.span(), format!("duplicate field `{name}`"));
                    errors.at(first.span(), format!("`{name}` is first declared here"));
                    false
                }
                None => {
                    seen.insert(name.to_string(), name);
                    true
                }
            }
        })
        .collect()
}

/// Interprets a field's layer type, or records why it cannot.
pub fn check_field(
    ident: Ident,
    state_name: String,
    decl: &FieldDecl,
    const_generics: &[Ident],
    errors: &mut Errors,
) -> Option<Field> {
    let kind = check_layer_type(&decl.ty, const_generics, errors)?;
    Some(Field {
        attrs: decl.attrs.clone(),
        ident,
        state_name,
        kind,
        decl: decl.ty.tokens.clone(),
    })
}

fn check_layer_type(
    ty: &LayerType,
    const_generics: &[Ident],
    errors: &mut Errors,
) -> Option<FieldKind> {
    let name = ty.name.to_string();
    match name.as_str() {
        "Linear" => return check_linear(ty, const_generics, errors),
        "Softmax" | "LogSoftmax" => return check_softmax(ty, errors),
        "Param" => return check_param(ty, const_generics, errors),
        _ => {}
    }
    if let Some(entry) = elementwise::layer(&name) {
        return check_elementwise(ty, entry, errors);
    }
    // Another network's type, written without arguments: `block: ResBlock`. rustc checks
    // that it exists and is a network (implements `Layer`); so only a known layer's name in
    // other letter case (`Relu`) is taken for a typo.
    let miscased = layer_names().find(|known| known.eq_ignore_ascii_case(&name));
    if ty.args.is_empty() && name.starts_with(char::is_uppercase) && miscased.is_none() {
        return Some(FieldKind::Network {
            ty: ty.name.clone(),
        });
    }
    let message = match miscased.or_else(|| did_you_mean(&name, layer_names())) {
        Some(close) => format!("unknown layer `{name}`; did you mean `{close}`?"),
        None => format!("unknown layer `{name}`; expected {KNOWN_LAYERS}"),
    };
    errors.at(ty.name.span(), message);
    None
}

/// An elementwise layer: `ReLU`, or with numbers for its parameters, `LeakyReLU<0.2>`
/// (PyTorch's defaults for those left out).
fn check_elementwise(
    ty: &LayerType,
    entry: &'static elementwise::Elementwise,
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
        Ok(op) => Some(FieldKind::Map(op)),
        Err(message) => {
            let span = ty.args.first().map_or(ty.name.span(), LayerArg::span);
            errors.at(span, message);
            None
        }
    }
}

/// `Softmax<dim>` or `LogSoftmax<dim>`, with `dim` an integer literal, negative to count from
/// the end.
fn check_softmax(ty: &LayerType, errors: &mut Errors) -> Option<FieldKind> {
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
    Some(FieldKind::Softmax {
        dim,
        log: name == "LogSoftmax",
    })
}

/// `Linear<in, out>` or `Linear<in, out, bias = false>`.
fn check_linear(
    ty: &LayerType,
    const_generics: &[Ident],
    errors: &mut Errors,
) -> Option<FieldKind> {
    let mut dims = Vec::new();
    let mut bias = true;
    for arg in &ty.args {
        match arg {
            LayerArg::Dim(dim) => dims.push(resolve_dim(dim, const_generics, false, errors)),
            LayerArg::Named { name, value } if name == "bias" => match value {
                syn::Lit::Bool(value) => bias = value.value,
                other => errors.over(other, "`bias` takes `true` or `false`"),
            },
            LayerArg::Named { name, .. } => {
                errors.at(
                    name.span(),
                    format!("unknown `Linear` option `{name}`; the only option is `bias = false`"),
                );
            }
            LayerArg::Shape(shape) => {
                errors.at(
                    shape.span,
                    "`Linear` takes two dims, `Linear<in_features, out_features>`, not a shape",
                );
            }
            LayerArg::Negative(_, span) | LayerArg::Float(_, span) => {
                errors.at(
                    *span,
                    "a dim must be a non-negative integer that fits in `usize`",
                );
            }
        }
    }
    // A dim that is not a const generic was reported by `resolve_dim`, a negative one above;
    // a layer built from them would only add errors that are not the user's.
    if dims.iter().any(|dim| matches!(dim.kind, DimKind::Named(_)))
        || ty
            .args
            .iter()
            .any(|arg| matches!(arg, LayerArg::Negative(..) | LayerArg::Float(..)))
    {
        return None;
    }
    if dims.len() != 2 {
        errors.over(
            ty.tokens.to_token_stream(),
            format!(
                "`Linear` takes 2 dims (in_features, out_features), got {}: write `Linear<784, 128>`",
                dims.len()
            ),
        );
        return None;
    }
    let output = dims.pop()?;
    let input = dims.pop()?;
    Some(FieldKind::Linear {
        input,
        output,
        bias,
    })
}

/// `Param<[dims]>`.
fn check_param(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
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
