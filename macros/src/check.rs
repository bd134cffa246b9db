//! The rules of a declaration that are not shapes: const generics, dims and fields (each
//! field's layer type is read by its rule in `layers/`) before lowering, and that every field
//! is used after it. One `check_*` per rule; each records its errors and carries on.

use std::collections::HashMap;

use syn::Ident;

use crate::errors::Errors;
use crate::ir::{Dim, DimKind, Field, FieldKind, Network, Shape, ValueId};
use crate::parse::{DimDecl, FieldDecl, ShapeDecl};
use crate::plan;

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
    let kind = crate::layers::check_layer_type(&decl.ty, const_generics, errors)?;
    Some(Field {
        attrs: decl.attrs.clone(),
        ident,
        element: None,
        state_name,
        kind,
        decl: decl.ty.tokens.clone(),
    })
}

/// A module-form field: one, or the elements of a list (`blocks: [Block; 4]`, named `blocks.0`
/// to `blocks.3` in the `state_dict`), which must be layers with parameters.
pub fn check_fields(
    name: &Ident,
    decl: &FieldDecl,
    const_generics: &[Ident],
    errors: &mut Errors,
) -> Option<Vec<Field>> {
    let first = check_field(name.clone(), name.to_string(), decl, const_generics, errors)?;
    let Some((count, _)) = decl.count else {
        return Some(vec![first]);
    };
    if !matches!(first.kind, FieldKind::Layer(_)) {
        errors.over(
            &decl.ty.tokens,
            "a list holds layers with parameters, like `[Linear<8, 8>; 3]` or a network",
        );
        return None;
    }
    let mut elements = vec![first];
    // The type checked once: its other elements cannot fail.
    let mut quiet = Errors::default();
    for _ in 1..count {
        elements.extend(check_field(
            name.clone(),
            String::new(),
            decl,
            const_generics,
            &mut quiet,
        ));
    }
    for (index, element) in elements.iter_mut().enumerate() {
        element.element = Some(index);
        element.state_name = format!("{name}.{index}");
    }
    Some(elements)
}

/// Every declared layer and parameter must be used, and must matter to the output: a field
/// that `forward` ignores, or uses only in values the output does not depend on, would never
/// get a gradient and silently stay at its initial value.
pub fn check_fields_used(net: &Network, outputs: &[ValueId], errors: &mut Errors) {
    let live = plan::live(&net.nodes, outputs);
    for (index, field) in net.fields.iter().enumerate() {
        let uses: Vec<ValueId> = (0..net.nodes.len())
            .filter(|&id| net.nodes[id].op.field() == Some(index))
            .collect();
        let name = field.display_name();
        let span = field.ident.span();
        if uses.is_empty() && !net.identity_layers.contains(&index) {
            errors.at(
                span,
                format!("`{name}` is declared but `forward` never uses it; remove it or use it"),
            );
        } else if field.kind.has_state() && !uses.iter().any(|&id| live[id]) {
            errors.at(
                span,
                format!(
                    "`{name}` can never receive a gradient: the output of `forward` does not depend on it"
                ),
            );
        }
    }
}
