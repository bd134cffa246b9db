//! From the parsed declaration to the IR: fields, inputs, and the forward pass as SSA nodes,
//! with every node's shape inferred (and every mismatch reported) as it is created.

use std::collections::{HashMap, HashSet};

use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, Pat, Stmt, UnOp};

use crate::autodiff;
use crate::check;
use crate::elementwise::{self, MapOp};
use crate::errors::{Errors, did_you_mean};
use crate::ir::{
    BinaryOp, DimAssertion, Extra, Field, FieldKind, Input, Loop, Network, Node, Op, Shape, ValueId,
};
use crate::parse::{Body, ForwardDecl, InputDecl, InputKind, NetworkDef, ShapeDecl};
use crate::shape::{broadcast, unify};

/// The methods other than the elementwise ones, for "did you mean" suggestions.
const OTHER_METHODS: &[&str] = &[
    "softmax",
    "log_softmax",
    "maximum",
    "minimum",
    "mm",
    "t",
    "sum",
    "mean",
    "apply",
];

/// Everything a forward body may contain, for "unsupported" messages.
const SUPPORTED_SYNTAX: &str = "`let` bindings and reassignment (also `+=`, `-=`, `*=`, `/=`), \
    `for _ in ..` loops and `if`/`else` statements on non-tensor arguments, layer calls like \
    `linear1(x)`, `MyFunction.apply(x)`, `Param` fields, `+ - * /` of tensors and numbers, \
    unary `-`, elementwise methods like `.relu()` (also called as functions, `relu(x)`), \
    `.softmax(dim)`, `.mm(m)`, `.t()`, `.sum()` and `.mean()`";

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
            let fields: Vec<Option<Field>> = layers
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
                    let name = field.name.clone()?;
                    Some(check::check_field(
                        name.clone(),
                        name.to_string(),
                        field,
                        &generics,
                        errors,
                    ))
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
        .collect();
    let (inputs, extras) = inputs;
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
        region: None,
        loops: Vec::new(),
        identity_layers: HashSet::new(),
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
    // With errors already reported, a field may look unused only because its use was not lowered.
    if let Some(ids) = output_ids.as_ref().filter(|_| lowerer.errors.is_empty()) {
        lowerer.check_fields_used(ids);
    }
    let Lowerer {
        nodes,
        assertions,
        loops,
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
        extras,
        declared_outputs: declared,
        nodes,
        loops,
        assertions,
    };
    (network, output_ids)
}

/// The tensor inputs and the non-tensor arguments, which must come after them (the generated
/// signature lists tensors first).
fn lower_inputs(
    decls: &[InputDecl],
    generics: &[Ident],
    errors: &mut Errors,
) -> (Vec<Input>, Vec<Extra>) {
    let (mut inputs, mut extras) = (Vec::new(), Vec::<Extra>::new());
    for decl in decls {
        match &decl.kind {
            InputKind::Tensor(shape) => {
                if let Some(extra) = extras.first() {
                    errors.at(
                        decl.name.span(),
                        format!(
                            "declare tensor inputs before non-tensor arguments: `{}` comes after `{}`",
                            decl.name, extra.ident
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
    (inputs, extras)
}

/// A lowered expression: a tensor value, a tensor read transposed (`x.t()`, kept as a view
/// until something needs it materialised), or a number.
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
    /// The loop whose body is being lowered.
    region: Option<usize>,
    loops: Vec<Loop>,
    /// `Identity` layers applied (they add no node, but count as used).
    identity_layers: HashSet<usize>,
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
            let description = match &field.kind {
                FieldKind::Layer(rule) if field.state_name == index.to_string() => {
                    format!("`{}` (layer {index})", rule.describe())
                }
                FieldKind::Map(op) if field.state_name == index.to_string() => {
                    format!("`{}` (layer {index})", op.layer_name())
                }
                FieldKind::Softmax { dim, log } if field.state_name == index.to_string() => {
                    format!("`{}<{dim}>` (layer {index})", softmax_name(*log))
                }
                _ => format!("`{}`", field.ident),
            };
            value = match &field.kind {
                FieldKind::Layer(rule) => {
                    let span = rule.input_span().unwrap_or_else(|| field.ident.span());
                    self.layer(index, value, span, &description, false)?
                }
                FieldKind::Map(op) => self.map(op.clone(), value, Some(index), description),
                &FieldKind::Softmax { dim, log } => {
                    self.softmax_layer(index, value, dim, log, description)?
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

    /// The statements of `fn forward`.
    fn forward_body(&mut self, forward: &ForwardDecl) -> Option<Vec<ValueId>> {
        let stmts = &forward.body.stmts;
        let mut output = None;
        // Whether a missing output expression was already reported at the last statement.
        let mut ended = false;
        for (index, stmt) in stmts.iter().enumerate() {
            let last = index + 1 == stmts.len();
            match stmt {
                Stmt::Expr(Expr::ForLoop(for_loop), _) if !last => self.for_loop(for_loop),
                Stmt::Expr(Expr::If(branch), _) if !last => self.branch(branch),
                Stmt::Expr(expr, None) if last => {
                    output = self.outputs(expr, forward.outputs.len());
                }
                Stmt::Expr(Expr::Return(ret), _) => {
                    self.errors.over(
                        ret,
                        "end `forward` with the output expression instead of `return`",
                    );
                    ended |= last;
                }
                Stmt::Expr(expr, Some(semi)) if last => {
                    self.errors.at(
                        semi.span,
                        "`forward` returns its last expression; remove this `;`",
                    );
                    // Still lowered, for the errors inside it.
                    self.tensor(expr);
                    ended = true;
                }
                other => self.statement(other),
            }
        }
        if !ended && output.is_none() && !matches!(stmts.last(), Some(Stmt::Expr(_, None))) {
            self.errors.at(
                forward.body.brace_token.span.close(),
                "`forward` must end with the output expression (no `;` after it)",
            );
        }
        output
    }

    /// The output expression: one tensor, or a tuple of as many as the declared outputs.
    fn outputs(&mut self, expr: &Expr, count: usize) -> Option<Vec<ValueId>> {
        match expr {
            Expr::Tuple(tuple) if count > 1 && tuple.elems.len() == count => {
                let ids: Vec<Option<ValueId>> =
                    tuple.elems.iter().map(|e| self.tensor(e)).collect();
                ids.into_iter().collect()
            }
            _ if count > 1 => {
                self.errors.over(
                    expr,
                    format!(
                        "`forward` declares {count} outputs: end it with a tuple of {count} tensors"
                    ),
                );
                None
            }
            _ => self.tensor(expr).map(|id| vec![id]),
        }
    }

    /// A statement other than the output expression: `let`, reassignment, `for`.
    fn statement(&mut self, stmt: &Stmt) {
        match stmt {
            Stmt::Local(local) => {
                let Some(name) = binding_name(&local.pat) else {
                    self.errors.over(
                        &local.pat,
                        "`let` in `forward` binds one name, like `let h = ..`",
                    );
                    return;
                };
                let Some(init) = local.init.as_ref().filter(|init| init.diverge.is_none()) else {
                    self.errors
                        .over(local, "`let` in `forward` needs a value: `let h = ..;`");
                    return;
                };
                if let Some(value) = self.tensor(&init.expr) {
                    self.locals.insert(name.to_string(), value);
                }
            }
            Stmt::Expr(Expr::Assign(assign), Some(_)) => {
                let Some(name) = expr_ident(&assign.left) else {
                    self.errors.over(
                        &assign.left,
                        "only a name can be reassigned in `forward`, like `h = ..;`",
                    );
                    return;
                };
                if !self.locals.contains_key(&name.to_string()) {
                    self.errors.at(
                        name.span(),
                        format!("cannot assign to `{name}`: it is not a `let` binding or input"),
                    );
                    return;
                }
                if let Some(value) = self.tensor(&assign.right) {
                    self.locals.insert(name.to_string(), value);
                }
            }
            Stmt::Expr(Expr::Binary(binary), Some(_)) if compound_op(binary.op).is_some() => {
                self.compound_assign(binary);
            }
            Stmt::Expr(Expr::ForLoop(for_loop), _) => self.for_loop(for_loop),
            Stmt::Expr(expr, _) => {
                self.errors.over(expr, "this statement's value is unused; bind it with `let` or make it the last expression");
            }
            other => {
                self.errors.over(
                    other,
                    format!("unsupported statement in `forward`; supported: {SUPPORTED_SYNTAX}"),
                );
            }
        }
    }

    /// `h += expr` (and `-=`, `*=`, `/=`): `h = h + expr`.
    fn compound_assign(&mut self, binary: &syn::ExprBinary) {
        let Some(name) = expr_ident(&binary.left) else {
            self.errors.over(
                &binary.left,
                "only a name can be updated in `forward`, like `h += ..;`",
            );
            return;
        };
        let Some(&current) = self.locals.get(&name.to_string()) else {
            self.errors.at(
                name.span(),
                format!("cannot update `{name}`: it is not a `let` binding or input"),
            );
            return;
        };
        let Some(op) = compound_op(binary.op) else {
            return;
        };
        let Some(right) = self.expr(&binary.right) else {
            return;
        };
        let operands = [
            (Lowered::Value(current), &*binary.left),
            (right, &*binary.right),
        ];
        let origin = format!("`{}`", binary.op.to_token_stream());
        if let Some(value) = self.combine(op, operands, &binary.op, origin)
            && let Some(value) = self.materialize(value, &binary.right)
        {
            self.locals.insert(name.to_string(), value);
        }
    }

    /// `for _ in <range> { .. }`: a loop whose trip count is known at run time. Variables the
    /// body reassigns are carried from iteration to iteration and must keep their shape.
    fn for_loop(&mut self, for_loop: &syn::ExprForLoop) {
        if self.region.is_some() {
            self.errors.at(
                for_loop.for_token.span,
                "nested loops and branches in `forward` are not supported yet",
            );
            return;
        }
        if !matches!(&*for_loop.pat, Pat::Wild(_) | Pat::Ident(_)) {
            self.errors.over(
                &for_loop.pat,
                "loop with `for _ in ..`; the loop variable cannot be a tensor",
            );
            return;
        }
        self.region_body((*for_loop.expr).clone(), &for_loop.body, "the loop");
    }

    /// `if cond { .. } else if .. { .. } else { .. }` on run-time `bool`s: each arm becomes a
    /// region that runs once when its guard (its condition, and no earlier one) holds, else not
    /// at all; so backward replays exactly the arm that ran. Tensors an arm reassigns must keep
    /// their shape, so every arm leaves them as the others do.
    fn branch(&mut self, branch: &syn::ExprIf) {
        if self.region.is_some() {
            self.errors.at(
                branch.if_token.span,
                "nested loops and branches in `forward` are not supported yet",
            );
            return;
        }
        let mut earlier: Vec<&Expr> = Vec::new();
        let mut arm = Some(branch);
        let mut last_else: Option<&syn::Block> = None;
        while let Some(current) = arm.take() {
            let cond = &*current.cond;
            let guard: Expr = syn::parse_quote!(0..usize::from(#(!(#earlier) &&)* (#cond)));
            self.region_body(guard, &current.then_branch, "an `if` arm");
            earlier.push(cond);
            match current.else_branch.as_ref().map(|(_, expr)| &**expr) {
                Some(Expr::If(next)) => arm = Some(next),
                Some(Expr::Block(block)) => last_else = Some(&block.block),
                Some(other) => self.errors.over(other, "expected a block after `else`"),
                None => {}
            }
        }
        if let Some(block) = last_else {
            let guard: Expr = syn::parse_quote!(0..usize::from(#(!(#earlier))&&*));
            self.region_body(guard, block, "the `else` arm");
        }
    }

    /// A region that runs `iter`'s number of times (a loop, or an `if` arm run 0 or 1 times).
    /// Variables the body reassigns are carried from run to run and must keep their shape.
    fn region_body(&mut self, iter: Expr, block: &syn::Block, what: &str) {
        let looped = self.loops.len();
        let mut carried: Vec<(String, Span)> = Vec::new();
        for stmt in &block.stmts {
            let target = match stmt {
                Stmt::Expr(Expr::Assign(assign), _) => Some(&*assign.left),
                Stmt::Expr(Expr::Binary(binary), _) if compound_op(binary.op).is_some() => {
                    Some(&*binary.left)
                }
                _ => None,
            };
            if let Some(name) = target.and_then(expr_ident)
                && self.locals.contains_key(&name.to_string())
            {
                let key = name.to_string();
                match carried.iter_mut().find(|(n, _)| *n == key) {
                    Some(entry) => entry.1 = name.span(),
                    None => carried.push((key, name.span())),
                }
            }
        }
        self.loops.push(Loop {
            iter,
            carried: Vec::new(),
        });
        let outer = self.locals.clone();
        self.region = Some(looped);
        let params: Vec<ValueId> = carried
            .iter()
            .map(|(name, _)| {
                let init = outer[name];
                let op = Op::LoopParam { init, result: init };
                let shape = self.shape(init).clone();
                let id = self.push(op, shape, format!("`{name}` in {what}"));
                self.locals.insert(name.clone(), id);
                id
            })
            .collect();
        for stmt in &block.stmts {
            match stmt {
                Stmt::Expr(expr, None) if !matches!(expr, Expr::ForLoop(_) | Expr::If(_)) => {
                    self.errors
                        .over(expr, format!("end each statement of {what} with `;`"));
                }
                other => self.statement(other),
            }
        }
        self.region = None;
        let results: Vec<ValueId> = carried.iter().map(|(name, _)| self.locals[name]).collect();
        self.locals = outer;
        for ((name, span), (&param, &result)) in carried.iter().zip(params.iter().zip(&results)) {
            let Op::LoopParam { init, .. } = self.nodes[param].op else {
                unreachable!("pushed as a loop parameter above")
            };
            if let Op::LoopParam { result: slot, .. } = &mut self.nodes[param].op {
                *slot = result;
            }
            let (before, after) = (self.shape(init).clone(), self.shape(result).clone());
            let keeps = before.0.len() == after.0.len()
                && before
                    .0
                    .iter()
                    .zip(&after.0)
                    .all(|(b, a)| unify(b, a, &mut self.assertions));
            if !keeps {
                self.errors.at(
                    *span,
                    format!(
                        "`{name}` changes shape in {what}: `{before}` before it, `{after}` after; \
                         a tensor reassigned in a loop or an `if` arm must keep its shape"
                    ),
                );
            }
            let op = Op::LoopOutput {
                looped,
                init,
                result,
            };
            let output = self.push(op, before, format!("`{name}` after {what}"));
            self.locals.insert(name.clone(), output);
            self.loops[looped].carried.push((param, output));
        }
    }

    /// Lowers `expr` to a tensor value, materialising a transposed view.
    fn tensor(&mut self, expr: &Expr) -> Option<ValueId> {
        let lowered = self.expr(expr)?;
        self.materialize(lowered, expr)
    }

    fn materialize(&mut self, lowered: Lowered, expr: &Expr) -> Option<ValueId> {
        match lowered {
            Lowered::Value(id) => Some(id),
            Lowered::Transposed(id) => {
                let dims = &self.shape(id).0;
                let shape = Shape(vec![dims[1].clone(), dims[0].clone()]);
                Some(self.push(Op::Transpose { x: id }, shape, "`.t()`".to_owned()))
            }
            Lowered::Scalar(_) => {
                self.errors
                    .over(expr, "expected a tensor here, found a number");
                None
            }
        }
    }

    fn expr(&mut self, expr: &Expr) -> Option<Lowered> {
        match expr {
            Expr::Path(_) => match expr_ident(expr) {
                Some(name) => self.name(name),
                None => {
                    self.errors.over(expr, "only plain names (inputs, `let` bindings, fields) can be used in `forward`");
                    None
                }
            },
            Expr::Lit(lit) => match &lit.lit {
                Lit::Float(value) => parse_scalar(&value.base10_parse::<f32>(), expr, self.errors),
                Lit::Int(value) => parse_scalar(&value.base10_parse::<f32>(), expr, self.errors),
                _ => {
                    self.errors
                        .over(expr, "only numbers can appear as literals in `forward`");
                    None
                }
            },
            Expr::Paren(paren) => self.expr(&paren.expr),
            Expr::Group(group) => self.expr(&group.expr),
            Expr::Unary(unary) if matches!(unary.op, UnOp::Neg(_)) => {
                match self.expr(&unary.expr)? {
                    Lowered::Scalar(value) => Some(Lowered::Scalar(-value)),
                    tensor => {
                        let x = self.materialize(tensor, &unary.expr)?;
                        Some(Lowered::Value(self.map(
                            MapOp::neg(),
                            x,
                            None,
                            "`-`".to_owned(),
                        )))
                    }
                }
            }
            Expr::Binary(binary) => self.binary(binary),
            Expr::Call(call) => self.call(call),
            Expr::MethodCall(call) => self.method(call),
            _ => {
                self.errors.over(
                    expr,
                    format!("unsupported expression in `forward`; supported: {SUPPORTED_SYNTAX}"),
                );
                None
            }
        }
    }

    /// A name: an input or `let` binding, or a `Param` field.
    fn name(&mut self, name: &Ident) -> Option<Lowered> {
        if let Some(&id) = self.locals.get(&name.to_string()) {
            return Some(Lowered::Value(id));
        }
        if self.extras.contains(&name.to_string()) {
            self.errors.at(
                name.span(),
                format!("`{name}` is a non-tensor argument: use it in a loop range, like `for _ in 0..{name}`"),
            );
            return None;
        }
        let Some(index) = self.fields.iter().position(|field| field.ident == *name) else {
            if self.rejected.contains(&name.to_string()) {
                return None;
            }
            self.errors.at(
                name.span(),
                format!("cannot find `{name}` in `forward`: it is not an input, a `let` binding or a field"),
            );
            return None;
        };
        match &self.fields[index].kind {
            FieldKind::Param { shape } => {
                if let Some(&id) = self.params.get(&index) {
                    return Some(Lowered::Value(id));
                }
                let origin = format!("`{name}`");
                let id = self.push(Op::Param(index), shape.clone(), origin);
                self.params.insert(index, id);
                Some(Lowered::Value(id))
            }
            _ => {
                self.errors.at(
                    name.span(),
                    format!("`{name}` is a layer, not a tensor; call it: `{name}(x)`"),
                );
                None
            }
        }
    }

    /// `layer(x)`.
    fn call(&mut self, call: &syn::ExprCall) -> Option<Lowered> {
        let Some(name) = expr_ident(&call.func) else {
            self.errors.over(
                &call.func,
                "only layers declared as fields can be called, like `linear1(x)`",
            );
            return None;
        };
        let Some(index) = self.fields.iter().position(|field| field.ident == *name) else {
            if self.rejected.contains(&name.to_string()) {
                return None;
            }
            if elementwise::method(&name.to_string()).is_some() {
                return self.function_form(call, name);
            }
            let fields: Vec<String> = self.fields.iter().map(|f| f.ident.to_string()).collect();
            let message = match did_you_mean(&name.to_string(), fields.iter().map(String::as_str)) {
                Some(close) => format!("cannot find layer `{name}`; did you mean `{close}`?"),
                None => {
                    // Suggest the declaration that fits here: its input width is the argument's.
                    let width = match call.args.first().map(|arg| self.tensor(arg)) {
                        Some(Some(x)) => self.shape(x).0.last().map(ToString::to_string),
                        _ => None,
                    };
                    let width = width.unwrap_or_else(|| "in_features".to_owned());
                    format!(
                        "cannot find layer `{name}`: declare it as a field, like \
                         `{name}: Linear<{width}, out_features>`"
                    )
                }
            };
            self.errors.at(name.span(), message);
            return None;
        };
        if call.args.len() != 1 {
            self.errors.over(
                call,
                format!("`{name}` takes one input, got {}", call.args.len()),
            );
            return None;
        }
        let arg = &call.args[0];
        let x = self.tensor(arg)?;
        match &self.fields[index].kind {
            FieldKind::Layer(_) => {
                let id = self.layer(index, x, arg.span(), &format!("`{name}`"), true)?;
                Some(Lowered::Value(id))
            }
            FieldKind::Map(op) => Some(Lowered::Value(self.map(
                op.clone(),
                x,
                Some(index),
                format!("`{name}`"),
            ))),
            &FieldKind::Softmax { dim, log } => {
                let id = self.softmax_layer(index, x, dim, log, format!("`{name}`"))?;
                Some(Lowered::Value(id))
            }
            FieldKind::Param { .. } => {
                self.errors.at(name.span(), format!("`{name}` is a parameter, not a layer; use it in an expression, like `x.mm({name})`"));
                None
            }
        }
    }

    /// `relu(h)`, `leaky_relu(h, 0.2)`: an elementwise method called as a function, as
    /// PyTorch's `F.relu(h)`, lowered as `h.relu()`.
    fn function_form(&mut self, call: &syn::ExprCall, name: &Ident) -> Option<Lowered> {
        let mut args = call.args.iter();
        let Some(receiver) = args.next() else {
            self.errors.over(
                call,
                format!("`{name}()` takes the tensor it applies to: `{name}(x)`"),
            );
            return None;
        };
        let method = syn::ExprMethodCall {
            attrs: Vec::new(),
            receiver: Box::new(receiver.clone()),
            dot_token: syn::Token![.](name.span()),
            method: name.clone(),
            turbofish: None,
            paren_token: call.paren_token,
            args: args.cloned().collect(),
        };
        self.method(&method)
    }

    fn binary(&mut self, binary: &syn::ExprBinary) -> Option<Lowered> {
        let Some(op) = binary_op(binary.op) else {
            self.errors.over(
                binary.op,
                format!("unsupported operator in `forward`; supported: {SUPPORTED_SYNTAX}"),
            );
            return None;
        };
        let (left, right) = (self.expr(&binary.left), self.expr(&binary.right));
        let operands = [(left?, &*binary.left), (right?, &*binary.right)];
        let origin = format!("`{}`", binary.op.to_token_stream());
        self.combine(op, operands, &binary.op, origin)
    }

    /// `a op b` of two lowered operands (tensors or numbers); a mismatch is reported over `at`.
    fn combine(
        &mut self,
        op: BinaryOp,
        [(left, left_expr), (right, right_expr)]: [(Lowered, &Expr); 2],
        at: &dyn ToTokens,
        origin: String,
    ) -> Option<Lowered> {
        if matches!(op, BinaryOp::Maximum | BinaryOp::Minimum) {
            for (operand, expr) in [(left, left_expr), (right, right_expr)] {
                if let Lowered::Scalar(_) = operand {
                    self.errors.over(
                        expr,
                        "expected a tensor here, found a number; use `.clamp_min(c)` to bound a \
                         tensor by a number",
                    );
                    return None;
                }
            }
        }
        let scalar_op = |this: &mut Self, x: ValueId, op: BinaryOp, s: f32| {
            let map = match op {
                BinaryOp::Add => MapOp::add_scalar(s),
                BinaryOp::Sub => MapOp::add_scalar(-s),
                BinaryOp::Div => MapOp::mul_scalar(1.0 / s),
                _ => MapOp::mul_scalar(s),
            };
            Lowered::Value(this.map(map, x, None, origin.clone()))
        };
        match (left, right) {
            (Lowered::Scalar(a), Lowered::Scalar(b)) => {
                let value = match op {
                    BinaryOp::Add => a + b,
                    BinaryOp::Sub => a - b,
                    BinaryOp::Mul => a * b,
                    BinaryOp::Div => a / b,
                    BinaryOp::Maximum => a.max(b),
                    BinaryOp::Minimum => a.min(b),
                };
                parse_scalar(&Ok(value), left_expr, self.errors)
            }
            (tensor, Lowered::Scalar(s)) => {
                let x = self.materialize(tensor, left_expr)?;
                if op == BinaryOp::Div && s == 0.0 {
                    self.errors.over(right_expr, "division of a tensor by zero");
                    return None;
                }
                Some(scalar_op(self, x, op, s))
            }
            (Lowered::Scalar(s), tensor) => {
                let x = self.materialize(tensor, right_expr)?;
                match op {
                    // s - x = (-x) + s
                    BinaryOp::Sub => {
                        let negated = self.map(MapOp::neg(), x, None, "`-`".to_owned());
                        Some(scalar_op(self, negated, BinaryOp::Add, s))
                    }
                    // s / x = x^-1 * s
                    BinaryOp::Div => {
                        let inverse = self.map(MapOp::pow(-1.0), x, None, origin.clone());
                        Some(scalar_op(self, inverse, BinaryOp::Mul, s))
                    }
                    _ => Some(scalar_op(self, x, op, s)),
                }
            }
            (left, right) => {
                let a = self.materialize(left, left_expr)?;
                let b = self.materialize(right, right_expr)?;
                let (a_shape, b_shape) = (self.shape(a).clone(), self.shape(b).clone());
                match broadcast(&a_shape, &b_shape, &mut self.assertions) {
                    Ok(shape) => Some(Lowered::Value(self.push(
                        Op::Binary { op, a, b },
                        shape,
                        origin,
                    ))),
                    Err(dim) => {
                        let pick = |shape: &Shape| {
                            let offset = a_shape.0.len().max(b_shape.0.len()) - shape.0.len();
                            dim.checked_sub(offset)
                                .map_or_else(|| "1".to_owned(), |i| shape.0[i].to_string())
                        };
                        self.errors.over(
                            at,
                            format!(
                                "cannot {} `{a_shape}` ({}) and `{b_shape}` ({}): dims {} and {} differ and neither is 1",
                                op.verb(),
                                self.origin(a),
                                self.origin(b),
                                pick(&a_shape),
                                pick(&b_shape),
                            ),
                        );
                        None
                    }
                }
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

    fn method(&mut self, call: &syn::ExprMethodCall) -> Option<Lowered> {
        let method = call.method.to_string();
        if method == "apply" {
            return self.custom_function(call);
        }
        let receiver = self.expr(&call.receiver)?;
        let span = call.method.span();
        let origin = format!("`.{method}()`");
        let no_args = |this: &mut Self| {
            if call.args.is_empty() {
                true
            } else {
                this.errors
                    .over(&call.args, format!("`.{method}()` takes no arguments"));
                false
            }
        };
        match method.as_str() {
            "t" => {
                if !no_args(self) {
                    return None;
                }
                match receiver {
                    Lowered::Transposed(id) => Some(Lowered::Value(id)),
                    Lowered::Value(id) if self.shape(id).0.len() == 2 => {
                        Some(Lowered::Transposed(id))
                    }
                    Lowered::Value(id) => {
                        let shape = self.shape(id).clone();
                        self.errors.at(
                            span,
                            format!(
                                "`.t()` needs a 2-D tensor, found `{shape}` from {}",
                                self.origin(id)
                            ),
                        );
                        None
                    }
                    Lowered::Scalar(_) => {
                        self.errors
                            .over(&call.receiver, "expected a tensor here, found a number");
                        None
                    }
                }
            }
            "mm" => self.mm(call, receiver),
            "maximum" | "minimum" => {
                let [arg] = call.args.iter().collect::<Vec<_>>()[..] else {
                    self.errors
                        .over(call, format!("`.{method}()` takes one tensor"));
                    return None;
                };
                let other = self.expr(arg)?;
                let op = if method == "maximum" {
                    BinaryOp::Maximum
                } else {
                    BinaryOp::Minimum
                };
                let operands = [(receiver, &*call.receiver), (other, arg)];
                self.combine(op, operands, &call.method, origin)
            }
            "softmax" | "log_softmax" => {
                let x = self.materialize(receiver, &call.receiver)?;
                let dim = self.dim_arg(call, &method, x)?;
                let shape = self.shape(x).clone();
                let log = method == "log_softmax";
                let op = Op::Softmax {
                    x,
                    dim,
                    log,
                    layer: None,
                };
                let origin = format!("{origin} of {}", self.producer(x));
                Some(Lowered::Value(self.push(op, shape, origin)))
            }
            "sum" | "mean" => {
                let x = self.materialize(receiver, &call.receiver)?;
                if !no_args(self) {
                    return None;
                }
                let op = if method == "sum" {
                    Op::Sum { x }
                } else {
                    Op::Mean { x }
                };
                Some(Lowered::Value(self.push(op, Shape(Vec::new()), origin)))
            }
            _ => match elementwise::method(&method) {
                Some(entry) => {
                    let x = self.materialize(receiver, &call.receiver)?;
                    let mut args = Vec::new();
                    for arg in &call.args {
                        match self.expr(arg)? {
                            Lowered::Scalar(value) => args.push(value),
                            _ => {
                                self.errors
                                    .over(arg, format!("`.{method}()` takes numbers"));
                                return None;
                            }
                        }
                    }
                    match MapOp::with_args(entry, &args, &origin) {
                        Ok(op) => Some(Lowered::Value(self.map(op, x, None, origin))),
                        Err(message) => {
                            self.errors.at(span, message);
                            None
                        }
                    }
                }
                None => {
                    let methods = elementwise::TABLE.iter().filter_map(|entry| entry.method);
                    let message = match did_you_mean(
                        &method,
                        methods.chain(OTHER_METHODS.iter().copied()),
                    ) {
                        Some(close) => format!(
                            "unknown method `.{method}()` in `forward`; did you mean `.{close}()`?"
                        ),
                        None => format!(
                            "unknown method `.{method}()` in `forward`; the `network!` documentation lists the methods a forward body can call"
                        ),
                    };
                    self.errors.at(span, message);
                    None
                }
            },
        }
    }

    /// A `Softmax<dim>` / `LogSoftmax<dim>` layer (field `index`) applied to `x`; the dim is
    /// checked against `x`'s rank, and a bad one reported at the field's declaration.
    fn softmax_layer(
        &mut self,
        index: usize,
        x: ValueId,
        dim: isize,
        log: bool,
        origin: String,
    ) -> Option<ValueId> {
        let what = format!("`{}<{dim}>`", softmax_name(log));
        match self.resolve_dim(dim, x, &what) {
            Ok(dim) => {
                let shape = self.shape(x).clone();
                let op = Op::Softmax {
                    x,
                    dim,
                    log,
                    layer: Some(index),
                };
                Some(self.push(op, shape, origin))
            }
            Err(message) => {
                let decl = self.fields[index].decl.clone();
                self.errors.over(&decl, message);
                None
            }
        }
    }

    /// The one argument of `.softmax(dim)`: an integer literal below `x`'s rank, or negative
    /// and counted from the end as in PyTorch (`-1` is the last dim).
    fn dim_arg(&mut self, call: &syn::ExprMethodCall, method: &str, x: ValueId) -> Option<usize> {
        let [arg] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.errors.at(
                call.method.span(),
                format!("`.{method}()` takes one dim, like `.{method}(1)`"),
            );
            return None;
        };
        let int_literal = |expr: &Expr| match expr {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(int),
                ..
            }) => int.base10_parse::<usize>().ok(),
            _ => None,
        };
        let dim = match arg {
            Expr::Unary(syn::ExprUnary {
                op: syn::UnOp::Neg(_),
                expr,
                ..
            }) => int_literal(expr).map(|dim| (true, dim)),
            _ => int_literal(arg).map(|dim| (false, dim)),
        };
        let Some((from_end, dim)) = dim else {
            self.errors.over(
                arg,
                format!("`.{method}()` takes a dim as an integer literal, like `1` or `-1`"),
            );
            return None;
        };
        let signed =
            isize::try_from(dim).map_or(isize::MAX, |dim| if from_end { -dim } else { dim });
        match self.resolve_dim(signed, x, &format!("`.{method}()`")) {
            Ok(index) => Some(index),
            Err(message) => {
                self.errors.over(arg, message);
                None
            }
        }
    }

    /// `dim` as an index into `x`'s dims, counting from the end when negative as PyTorch
    /// does, or the message saying why it is not one; `what` names the op for it.
    fn resolve_dim(&self, dim: isize, x: ValueId, what: &str) -> Result<usize, String> {
        let shape = self.shape(x);
        let rank = shape.0.len();
        if rank == 0 {
            return Err(format!(
                "{what} needs a tensor with a dim, found `[]` from {}",
                self.origin(x)
            ));
        }
        let index = if dim < 0 {
            rank.checked_sub(dim.unsigned_abs())
        } else {
            dim.try_into().ok().filter(|&dim: &usize| dim < rank)
        };
        index.ok_or_else(|| {
            format!(
                "dim {dim} is out of range for `{shape}` from {}: {what} takes a dim from \
                 -{rank} to {}",
                self.origin(x),
                rank - 1
            )
        })
    }

    /// `MyFunction.apply(x)`: a user's `Function` (a unit struct implementing
    /// `declnet::runtime::function::Function<B>`), which keeps its input's shape.
    fn custom_function(&mut self, call: &syn::ExprMethodCall) -> Option<Lowered> {
        let function = match &*call.receiver {
            Expr::Path(path) if path.qself.is_none() => {
                let local = path.path.get_ident().is_some_and(|ident| {
                    self.locals.contains_key(&ident.to_string())
                        || self.fields.iter().any(|field| field.ident == *ident)
                });
                (!local).then(|| path.path.clone())
            }
            _ => None,
        };
        let Some(function) = function else {
            self.errors.over(
                &call.receiver,
                "`.apply(x)` is called on a custom function: a unit struct implementing `Function`, like `MyReLU.apply(x)`",
            );
            return None;
        };
        let [arg] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.errors.over(call, "`.apply()` takes one tensor");
            return None;
        };
        let x = self.tensor(arg)?;
        let shape = self.shape(x).clone();
        let origin = format!("`{}.apply()`", function.to_token_stream());
        Some(Lowered::Value(self.push(
            Op::Custom { function, x },
            shape,
            origin,
        )))
    }

    /// `a.mm(b)`, reading `.t()` operands in place.
    fn mm(&mut self, call: &syn::ExprMethodCall, receiver: Lowered) -> Option<Lowered> {
        let [arg] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.errors.over(call, "`.mm()` takes one matrix");
            return None;
        };
        let operand = |this: &mut Self, lowered: Lowered, expr: &Expr| -> Option<(ValueId, bool)> {
            match lowered {
                Lowered::Value(id) => Some((id, false)),
                Lowered::Transposed(id) => Some((id, true)),
                Lowered::Scalar(_) => {
                    this.errors.over(
                        expr,
                        "`.mm()` multiplies matrices; use `*` to scale by a number",
                    );
                    None
                }
            }
        };
        let (a, a_t) = operand(self, receiver, &call.receiver)?;
        let rhs = self.expr(arg)?;
        let (b, b_t) = operand(self, rhs, arg)?;
        let view = |this: &Self, id: ValueId, transposed: bool| {
            let mut dims = this.shape(id).0.clone();
            if transposed {
                dims.reverse();
            }
            Shape(dims)
        };
        let (a_shape, b_shape) = (view(self, a, a_t), view(self, b, b_t));
        for (shape, id, expr) in [(&a_shape, a, &*call.receiver), (&b_shape, b, arg)] {
            if shape.0.len() != 2 {
                self.errors.over(
                    expr,
                    format!(
                        "`.mm()` needs 2-D tensors, found `{shape}` from {}",
                        self.origin(id)
                    ),
                );
                return None;
            }
        }
        if !unify(&a_shape.0[1], &b_shape.0[0], &mut self.assertions) {
            self.errors.at(
                call.method.span(),
                format!(
                    "`.mm()` cannot multiply `{a_shape}` ({}) by `{b_shape}` ({}): inner dims {} and {} differ",
                    self.origin(a),
                    self.origin(b),
                    a_shape.0[1],
                    b_shape.0[0]
                ),
            );
            return None;
        }
        let shape = Shape(vec![a_shape.0[0].clone(), b_shape.0[1].clone()]);
        let op = Op::Mm { a, a_t, b, b_t };
        Some(Lowered::Value(self.push(op, shape, "`.mm()`".to_owned())))
    }

    /// Every declared layer and parameter must be used, and must matter to the output: a field
    /// that `forward` ignores, or uses only in values the output does not depend on, would never
    /// get a gradient and silently stay at its initial value.
    fn check_fields_used(&mut self, outputs: &[ValueId]) {
        let live = autodiff::live(&self.nodes, outputs);
        for (index, field) in self.fields.iter().enumerate() {
            let uses: Vec<ValueId> = (0..self.nodes.len())
                .filter(|&id| self.nodes[id].op.field() == Some(index))
                .collect();
            let name = &field.ident;
            if uses.is_empty() && !self.identity_layers.contains(&index) {
                self.errors.at(
                    name.span(),
                    format!(
                        "`{name}` is declared but `forward` never uses it; remove it or use it"
                    ),
                );
            } else if field.kind.has_state() && !uses.iter().any(|&id| live[id]) {
                self.errors.at(
                    name.span(),
                    format!(
                        "`{name}` can never receive a gradient: the output of `forward` does not depend on it"
                    ),
                );
            }
        }
    }

    /// The forward pass must produce the declared output shape.
    fn check_output(&mut self, id: ValueId, declared: &Shape, decl: &ShapeDecl) -> bool {
        let found = self.shape(id).clone();
        let matches = found.0.len() == declared.0.len()
            && declared
                .0
                .iter()
                .zip(&found.0)
                .all(|(d, f)| unify(d, f, &mut self.assertions));
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

/// The layer type of a softmax field.
fn softmax_name(log: bool) -> &'static str {
    if log { "LogSoftmax" } else { "Softmax" }
}
