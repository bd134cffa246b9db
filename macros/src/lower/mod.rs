//! From the parsed declaration to the IR: fields, inputs, and the forward pass as SSA nodes,
//! with every node's shape inferred (and every mismatch reported) as it is created. This file
//! holds the entry, the sequential form and the layer and elementwise nodes; the forward
//! body's statements, expressions and methods each have a file beside it.

mod dims;
mod expressions;
mod methods;
mod reshape;
mod statements;

use std::collections::{HashMap, HashSet};

use proc_macro2::Span;
use syn::{Expr, Ident, Pat};

use crate::check;
use crate::elementwise::MapOp;
use crate::errors::Errors;
use crate::ir::{
    BinaryOp, DimAssertion, Extra, Field, FieldKind, Input, Network, Node, Op, Region, Shape,
    StatelessLayer, ValueId,
};
use crate::parse::{Body, InputDecl, InputKind, NetworkDef, ShapeDecl};
use crate::shape::unify_shapes;

/// The methods other than the elementwise ones, for "did you mean" suggestions.
const OTHER_METHODS: &[&str] = &[
    "softmax",
    "log_softmax",
    "maximum",
    "minimum",
    "mm",
    "matmul",
    "t",
    "transpose",
    "permute",
    "contiguous",
    "narrow",
    "split",
    "chunk",
    "causal_mask",
    "sum",
    "mean",
    "apply",
    "flatten",
    "reshape",
    "view",
    "max_pool2d",
    "avg_pool2d",
];

/// Everything a forward body may contain, for "unsupported" messages.
const SUPPORTED_SYNTAX: &str = "`let` bindings and reassignment (also `+=`, `-=`, `*=`, `/=`), \
    `for _ in ..` loops and `if`/`else` statements on non-tensor arguments, layer calls like \
    `linear1(x)`, `MyFunction.apply(x)`, `Param` fields, `+ - * /` of tensors and numbers, \
    unary `-`, elementwise methods like `.relu()` (also called as functions, `relu(x)`), \
    `.softmax(dim)`, `.mm(m)`, `.matmul(m)`, `.t()`, `.transpose(a, b)`, `.permute([..])`, \
    `.reshape([..])`, `.narrow(dim, start, len)`, `let (a, b) = x.split(size, dim)`, \
    `.causal_mask()`, `.sum()` and `.mean()`";

/// Lowers a whole declaration. Errors are recorded in `errors`; the network returned then
/// still has its fields and inputs (for the fallback struct) but maybe no outputs.
pub fn lower(def: NetworkDef, errors: &mut Errors) -> (Network, Option<Vec<ValueId>>) {
    check::check_const_generics(&def.const_generics, errors);
    let generics = def.const_generics.clone();
    let (fields, first, inputs, output) = match &def.body {
        Body::Sequential {
            input,
            output,
            layers,
        } => {
            let first = check::check_duplicate_fields(layers, errors);
            let fields: Vec<Option<Vec<Field>>> = layers
                .iter()
                .enumerate()
                .map(|(index, layer)| {
                    let (ident, state_name) = match &layer.name {
                        Some(name) => (name.clone(), name.to_string()),
                        None => (
                            Ident::new(&format!("layer{index}"), layer.ty.name.span()),
                            index.to_string(),
                        ),
                    };
                    check::check_field(ident, state_name, layer, &generics, errors)
                        .map(|field| vec![field])
                })
                .collect();
            let inputs = lower_inputs(std::slice::from_ref(input), &generics, errors);
            (fields, first, inputs, std::slice::from_ref(output))
        }
        Body::Module { fields, forward } => {
            let first = check::check_duplicate_fields(fields, errors);
            let checked = fields
                .iter()
                .filter_map(|field| {
                    let name = field.name.as_ref()?;
                    Some(check::check_fields(name, field, &generics, errors))
                })
                .collect();
            let inputs = lower_inputs(&forward.inputs, &generics, errors);
            (checked, first, inputs, forward.outputs.as_slice())
        }
    };
    // Names of fields whose type was rejected: using them reports nothing more.
    let rejected: HashSet<String> = match &def.body {
        Body::Module { fields: decls, .. } => decls
            .iter()
            .zip(&fields)
            .filter(|(_, field)| field.is_none())
            .filter_map(|(decl, _)| decl.name.as_ref().map(ToString::to_string))
            .collect(),
        Body::Sequential { .. } => HashSet::new(),
    };
    let unique = first.iter().all(|&first| first);
    let complete = fields.iter().all(Option::is_some);
    let fields: Vec<Field> = fields
        .into_iter()
        .zip(first)
        .filter_map(|(field, first)| field.filter(|_| first))
        .flatten()
        .collect();
    let (inputs, index_inputs, extras) = inputs;
    let declared: Vec<Shape> = output
        .iter()
        .map(|shape| check::resolve_shape(shape, &generics, true, errors))
        .collect();

    let mut lowerer = Lowerer {
        errors,
        fields: &fields,
        rejected,
        nodes: Vec::new(),
        assertions: Vec::new(),
        locals: HashMap::new(),
        params: HashMap::new(),
        extras: extras.iter().map(|extra| extra.ident.to_string()).collect(),
        index_inputs: index_inputs
            .iter()
            .map(|input| (input.ident.to_string(), input.shape.clone()))
            .collect(),
        region: None,
        regions: Vec::new(),
        identity_layers: HashSet::new(),
        failed: HashSet::new(),
        list_element: None,
    };
    for (index, input) in inputs.iter().enumerate() {
        let id = lowerer.push(
            Op::Input(index),
            input.shape.clone(),
            format!("input `{}`", input.ident),
        );
        lowerer.locals.insert(input.ident.to_string(), id);
    }
    let result = match &def.body {
        // With a layer missing or a name declared twice, the chain or the forward body would
        // report errors that are not the user's.
        _ if !unique => None,
        Body::Sequential { .. } if complete => lowerer.sequential().map(|id| vec![id]),
        Body::Sequential { .. } => None,
        Body::Module { forward, .. } => lowerer.forward_body(forward),
    };
    let output_ids = result.filter(|ids| {
        let checks: Vec<bool> = ids
            .iter()
            .zip(declared.iter().zip(output))
            .map(|(&id, (shape, decl))| lowerer.check_output(id, shape, decl))
            .collect();
        checks.iter().all(|&ok| ok)
    });
    let Lowerer {
        nodes,
        assertions,
        regions,
        identity_layers,
        ..
    } = lowerer;
    // A const generic named like the backend parameter, or declared twice, was reported;
    // the struct emitted for the errors leaves it out so rustc adds no errors of its own.
    let mut const_generics: Vec<Ident> = Vec::new();
    for generic in def.const_generics {
        if generic != check::BACKEND_PARAM && !const_generics.contains(&generic) {
            const_generics.push(generic);
        }
    }
    let network = Network {
        attrs: def.attrs,
        vis: def.vis,
        name: def.name,
        const_generics,
        fields,
        inputs,
        index_inputs,
        extras,
        declared_outputs: declared,
        nodes,
        regions,
        assertions,
        identity_layers,
    };
    (network, output_ids)
}

/// The tensor inputs, the index inputs and the non-tensor arguments, declared in that order
/// (the generated signature lists them so).
fn lower_inputs(
    decls: &[InputDecl],
    generics: &[Ident],
    errors: &mut Errors,
) -> (Vec<Input>, Vec<Input>, Vec<Extra>) {
    let (mut inputs, mut index_inputs, mut extras) =
        (Vec::new(), Vec::<Input>::new(), Vec::<Extra>::new());
    for decl in decls {
        match &decl.kind {
            InputKind::Indices(shape) => {
                if let Some(extra) = extras.first() {
                    errors.at(
                        decl.name.span(),
                        format!(
                            "declare index inputs before non-tensor arguments: `{}` comes after `{}`",
                            decl.name, extra.ident
                        ),
                    );
                }
                index_inputs.push(Input {
                    ident: decl.name.clone(),
                    shape: check::resolve_shape(shape, generics, true, errors),
                });
            }
            InputKind::Tensor(shape) => {
                if let Some(extra) = extras.first() {
                    errors.at(
                        decl.name.span(),
                        format!(
                            "declare tensor inputs before non-tensor arguments: `{}` comes after `{}`",
                            decl.name, extra.ident
                        ),
                    );
                } else if let Some(ids) = index_inputs.first() {
                    errors.at(
                        decl.name.span(),
                        format!(
                            "declare tensor inputs before index inputs: `{}` comes after `{}`",
                            decl.name, ids.ident
                        ),
                    );
                }
                inputs.push(Input {
                    ident: decl.name.clone(),
                    shape: check::resolve_shape(shape, generics, true, errors),
                });
            }
            InputKind::Extra(ty) => extras.push(Extra {
                ident: decl.name.clone(),
                ty: (**ty).clone(),
            }),
        }
    }
    (inputs, index_inputs, extras)
}

/// A lowered expression: a tensor value, a tensor read with its last two dims swapped (`x.t()`,
/// `x.transpose(-2, -1)`, kept as a view until something needs it materialised), or a number.
#[derive(Clone, Copy)]
enum Lowered {
    Value(ValueId),
    Transposed(ValueId),
    Scalar(f32),
}

struct Lowerer<'a> {
    errors: &'a mut Errors,
    fields: &'a [Field],
    /// Fields whose declaration was rejected (already reported).
    rejected: HashSet<String>,
    nodes: Vec<Node>,
    assertions: Vec<DimAssertion>,
    /// Inputs and `let` bindings in scope.
    locals: HashMap<String, ValueId>,
    /// The node of each `Param` field already read.
    params: HashMap<usize, ValueId>,
    /// Non-tensor arguments of `forward`: usable in loop ranges, not in tensor expressions.
    extras: HashSet<String>,
    /// `Indices<[..]>` inputs, by name, with their shapes: what `Embedding` layers take.
    index_inputs: Vec<(String, Shape)>,
    /// The loop whose body is being lowered.
    region: Option<usize>,
    regions: Vec<Region>,
    /// `Identity` layers applied (they add no node, but count as used).
    identity_layers: HashSet<usize>,
    /// Names whose value failed to lower (and said why): their uses report nothing more.
    failed: HashSet<String>,
    /// The variable of a loop over a list of layers (`block` in `for block in blocks`), and
    /// the element field it names in the iteration being lowered.
    list_element: Option<(String, usize)>,
}

impl Lowerer<'_> {
    fn push(&mut self, op: Op, shape: Shape, origin: String) -> ValueId {
        // Inputs and parameters are read in place, whichever loop reads them first.
        let region = match op {
            Op::Input(_) | Op::Param(_) => None,
            _ => self.region,
        };
        self.nodes.push(Node {
            op,
            shape,
            region,
            origin,
        });
        self.nodes.len() - 1
    }

    fn shape(&self, id: ValueId) -> &Shape {
        &self.nodes[id].shape
    }

    fn origin(&self, id: ValueId) -> &str {
        &self.nodes[id].origin
    }

    /// The layers of a sequential network, applied in order to its input.
    fn sequential(&mut self) -> Option<ValueId> {
        let mut value = 0;
        for (index, field) in self.fields.iter().enumerate() {
            let name = match &field.kind {
                FieldKind::Layer(rule) => Some(rule.describe()),
                FieldKind::Stateless(layer) => Some(layer.layer_name()),
                FieldKind::Param { .. } => None,
            };
            let description = match name {
                Some(name) if field.state_name == index.to_string() => {
                    format!("`{name}` (layer {index})")
                }
                _ => format!("`{}`", field.ident),
            };
            value = match &field.kind {
                FieldKind::Layer(rule) => {
                    let span = rule.input_span().unwrap_or_else(|| field.ident.span());
                    self.layer(index, value, span, &description, false)?
                }
                FieldKind::Stateless(layer) => {
                    self.stateless(layer, index, value, description, field.ident.span())?
                }
                FieldKind::Param { .. } => {
                    self.errors.over(
                        &field.decl,
                        "a `Param` cannot be a layer of a sequential network; \
                         declare it as a field and use it in `fn forward`",
                    );
                    return None;
                }
            };
        }
        Some(value)
    }

    /// Layer field `field` applied to `x`. A mismatch is reported at `span`, and for a call in
    /// `forward` (`at_call`) also where the layer declares the input it takes.
    fn layer(
        &mut self,
        field: usize,
        x: ValueId,
        span: Span,
        name: &str,
        at_call: bool,
    ) -> Option<ValueId> {
        let fields = self.fields;
        let FieldKind::Layer(rule) = &fields[field].kind else {
            return None;
        };
        let x_shape = self.shape(x).clone();
        match rule.output_shape(&x_shape, span, &mut self.assertions) {
            Ok(shape) => Some(self.push(Op::Layer { field, x }, shape, name.to_owned())),
            Err(mismatch) => {
                self.errors.at(
                    span,
                    format!(
                        "{name} expects {}, found `{x_shape}` from {}",
                        mismatch.expected,
                        self.origin(x)
                    ),
                );
                if at_call && let Some((declared, what)) = mismatch.declared {
                    self.errors.at(declared, format!("{name} {what}"));
                }
                let shape = rule.recovered_shape(&x_shape)?;
                Some(self.push(Op::Layer { field, x }, shape, name.to_owned()))
            }
        }
    }

    /// Elementwise op `op` applied to `x`, by field `layer` if a layer applies it; `Identity`
    /// computes nothing and yields `x` itself.
    fn map(&mut self, op: MapOp, x: ValueId, layer: Option<usize>, origin: String) -> ValueId {
        if op.entry.variant.is_empty() {
            self.identity_layers.extend(layer);
            return x;
        }
        let shape = self.shape(x).clone();
        let origin = match layer {
            Some(_) => origin,
            None => format!("{origin} of {}", self.producer(x)),
        };
        self.push(Op::Map { op, x, layer }, shape, origin)
    }

    /// Where `id` comes from, past the methods and operators applied to it: the layer, input
    /// or parameter a message should name (`fc` for `fc(x).relu() * 2.0`).
    fn producer(&self, mut id: ValueId) -> &str {
        while let Op::Map { x, layer: None, .. } | Op::Softmax { x, layer: None, .. } =
            self.nodes[id].op
        {
            id = x;
        }
        self.origin(id)
    }

    /// Field `index`'s parameterless `layer` applied to `x`; `what` names it in errors, which
    /// are reported at `at`.
    fn stateless(
        &mut self,
        layer: &StatelessLayer,
        index: usize,
        x: ValueId,
        what: String,
        at: Span,
    ) -> Option<ValueId> {
        match *layer {
            StatelessLayer::Map(ref op) => Some(self.map(op.clone(), x, Some(index), what)),
            StatelessLayer::Softmax { dim, log } => self.softmax_layer(index, x, dim, log, what),
            StatelessLayer::Flatten { start, end } => {
                self.flatten(x, (start, end), Some(index), &what, at)
            }
            StatelessLayer::Pool(pool) => self.pool(x, pool, Some(index), &what, at),
            StatelessLayer::AdaptiveAvgPool { height, width } => {
                self.adaptive_avg_pool(x, [height, width], index, &what, at)
            }
        }
    }

    /// The forward pass must produce the declared output shape.
    fn check_output(&mut self, id: ValueId, declared: &Shape, decl: &ShapeDecl) -> bool {
        let found = self.shape(id).clone();
        let matches = unify_shapes(declared, &found, &mut self.assertions);
        if !matches {
            self.errors.at(
                decl.span,
                format!(
                    "the network declares output `{declared}`, but forward produces `{found}` from {}",
                    self.origin(id)
                ),
            );
        }
        matches
    }
}

/// The op of a binary operator the forward body supports.
fn binary_op(op: syn::BinOp) -> Option<BinaryOp> {
    match op {
        syn::BinOp::Add(_) => Some(BinaryOp::Add),
        syn::BinOp::Sub(_) => Some(BinaryOp::Sub),
        syn::BinOp::Mul(_) => Some(BinaryOp::Mul),
        syn::BinOp::Div(_) => Some(BinaryOp::Div),
        _ => None,
    }
}

/// The operator that writes `op`: `+` for `Add`.
fn op_symbol(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Maximum | BinaryOp::Minimum => "..",
    }
}

/// The op of a compound assignment the forward body supports: `+=`, `-=`, `*=`, `/=`.
fn compound_op(op: syn::BinOp) -> Option<BinaryOp> {
    match op {
        syn::BinOp::AddAssign(_) => Some(BinaryOp::Add),
        syn::BinOp::SubAssign(_) => Some(BinaryOp::Sub),
        syn::BinOp::MulAssign(_) => Some(BinaryOp::Mul),
        syn::BinOp::DivAssign(_) => Some(BinaryOp::Div),
        _ => None,
    }
}

/// The name a `let` pattern binds: `h` or `mut h`.
fn binding_name(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(pat) if pat.subpat.is_none() && pat.by_ref.is_none() => Some(&pat.ident),
        _ => None,
    }
}

/// The identifier an expression consists of, if it is a bare name.
fn expr_ident(expr: &Expr) -> Option<&Ident> {
    match expr {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => path.path.get_ident(),
        _ => None,
    }
}

fn parse_scalar(value: &syn::Result<f32>, expr: &Expr, errors: &mut Errors) -> Option<Lowered> {
    match value {
        Ok(value) if value.is_finite() => Some(Lowered::Scalar(*value)),
        _ => {
            errors.over(expr, "this number does not fit in an `f32`");
            None
        }
    }
}
