//! Expressions of a forward body: names, layer calls, operators and numbers.

use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, UnOp};

use super::{Lowered, Lowerer, SUPPORTED_SYNTAX, binary_op, expr_ident, parse_scalar};
use crate::elementwise::{self, MapOp};
use crate::errors::did_you_mean;
use crate::ir::{BinaryOp, FieldKind, Op, Shape, ValueId};
use crate::shape::broadcast;

impl Lowerer<'_> {
    /// Lowers `expr` to a tensor value, materialising a transposed view.
    pub(super) fn tensor(&mut self, expr: &Expr) -> Option<ValueId> {
        let lowered = self.expr(expr)?;
        self.materialize(lowered, expr)
    }

    pub(super) fn materialize(&mut self, lowered: Lowered, expr: &Expr) -> Option<ValueId> {
        match lowered {
            Lowered::Value(id) => Some(id),
            Lowered::Transposed(id) => {
                let rank = self.shape(id).0.len();
                let mut order: Vec<usize> = (0..rank).collect();
                order.swap(rank - 2, rank - 1);
                let what = if rank == 2 {
                    "`.t()`"
                } else {
                    "`.transpose()`"
                };
                Some(self.permute_node(id, order, what))
            }
            Lowered::Scalar(_) => {
                self.errors
                    .over(expr, "expected a tensor here, found a number");
                None
            }
        }
    }

    pub(super) fn expr(&mut self, expr: &Expr) -> Option<Lowered> {
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
    pub(super) fn name(&mut self, name: &Ident) -> Option<Lowered> {
        if let Some(&id) = self.locals.get(&name.to_string()) {
            return Some(Lowered::Value(id));
        }
        if self.failed.contains(&name.to_string()) {
            return None;
        }
        if self.index_inputs.iter().any(|(input, _)| *name == input) {
            self.errors.at(
                name.span(),
                format!("`{name}` holds indices: only an `Embedding` layer takes them, like `embed({name})`"),
            );
            return None;
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

    /// `layer(x)`, `blocks[2](x)`, or `block(x)` in a loop over a list of layers.
    pub(super) fn call(&mut self, call: &syn::ExprCall) -> Option<Lowered> {
        let (index, name) = match self.callee(&call.func) {
            Callee::Field(index, name) => (index, name),
            Callee::Reported => return None,
            Callee::Unknown(name) => return self.unknown_call(call, name),
        };
        if call.args.len() != 1 {
            self.errors.over(
                call,
                format!("{name} takes one input, got {}", call.args.len()),
            );
            return None;
        }
        let arg = &call.args[0];
        if let FieldKind::Layer(rule) = &self.fields[index].kind
            && let Some(width) = rule.embedding_width()
        {
            return self.embed(index, width.clone(), &name, arg);
        }
        let x = self.tensor(arg)?;
        match &self.fields[index].kind {
            FieldKind::Layer(_) => {
                let id = self.layer(index, x, arg.span(), &name, true)?;
                Some(Lowered::Value(id))
            }
            FieldKind::Stateless(layer) => {
                let id = self.stateless(layer, index, x, name, call.func.span())?;
                Some(Lowered::Value(id))
            }
            FieldKind::Param { .. } => {
                let ident = &self.fields[index].ident;
                self.errors.over(&call.func, format!("`{ident}` is a parameter, not a layer; use it in an expression, like `x.mm({ident})`"));
                None
            }
        }
    }

    /// The field `func` calls, and how messages name it: `` `fc` ``, `` `blocks[2]` ``, or
    /// `` `block` (`blocks[2]`) `` for a loop's variable.
    fn callee<'e>(&mut self, func: &'e Expr) -> Callee<'e> {
        match func {
            Expr::Index(indexed) => self.list_index(indexed),
            _ => match expr_ident(func) {
                Some(name) => {
                    if let Some((var, element)) = &self.list_element
                        && *name == var
                    {
                        let shown = self.fields[*element].display_name();
                        return Callee::Field(*element, format!("`{name}` (`{shown}`)"));
                    }
                    let Some(index) = self.fields.iter().position(|field| field.ident == *name)
                    else {
                        return Callee::Unknown(name);
                    };
                    if self.fields[index].element.is_some() {
                        self.errors.at(
                            name.span(),
                            format!(
                                "`{name}` is a list of layers: call one, like `{name}[0](x)`, or \
                                 each in turn, like `for block in {name} {{ x = block(x); }}`"
                            ),
                        );
                        return Callee::Reported;
                    }
                    Callee::Field(index, format!("`{name}`"))
                }
                None => {
                    self.errors.over(
                        func,
                        "only layers declared as fields can be called, like `linear1(x)`",
                    );
                    Callee::Reported
                }
            },
        }
    }

    /// `blocks[2]`: an element of a list of layers, by a literal index.
    fn list_index<'e>(&mut self, indexed: &'e syn::ExprIndex) -> Callee<'e> {
        let Some(name) = expr_ident(&indexed.expr) else {
            self.errors.over(
                &indexed.expr,
                "only lists of layers declared as fields can be indexed, like `blocks[0](x)`",
            );
            return Callee::Reported;
        };
        let elements: Vec<usize> = (0..self.fields.len())
            .filter(|&index| self.fields[index].ident == *name)
            .collect();
        if elements.is_empty() {
            return Callee::Unknown(name);
        }
        if self.fields[elements[0]].element.is_none() {
            self.errors.at(
                name.span(),
                format!("`{name}` is one layer, not a list of layers; call it: `{name}(x)`"),
            );
            return Callee::Reported;
        }
        let position = match &*indexed.index {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Int(int), ..
            }) => int.base10_parse::<usize>().ok(),
            _ => None,
        };
        match position.and_then(|position| elements.get(position)) {
            Some(&index) => {
                Callee::Field(index, format!("`{}`", self.fields[index].display_name()))
            }
            None => {
                self.errors.over(
                    &indexed.index,
                    format!(
                        "`{name}` holds {} layers: index it with a number from 0 to {}, or loop \
                         over it with `for block in {name}`",
                        elements.len(),
                        elements.len() - 1
                    ),
                );
                Callee::Reported
            }
        }
    }

    /// A call of `name`, which is no field: an elementwise function (`relu(h)`), else an error
    /// that suggests the field meant or the declaration to add.
    fn unknown_call(&mut self, call: &syn::ExprCall, name: &Ident) -> Option<Lowered> {
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
        None
    }

    /// Embedding field `field` (rows of `width`) looking up `arg`, which must name an index
    /// input: `[..ids, width]`.
    fn embed(
        &mut self,
        field: usize,
        width: crate::ir::Dim,
        name: &str,
        arg: &Expr,
    ) -> Option<Lowered> {
        let ids = expr_ident(arg).and_then(|ident| {
            self.index_inputs
                .iter()
                .position(|(input, _)| *ident == input)
        });
        let Some(ids) = ids else {
            // Say what the argument is, if it lowers to a tensor.
            let found = match self.tensor(arg) {
                Some(x) => format!(", found `{}` from {}", self.shape(x), self.origin(x)),
                None => String::new(),
            };
            self.errors.over(
                arg,
                format!(
                    "{name} is an `Embedding`: it looks up indices, an input declared like \
                     `idx: Indices<[B, T]>`{found}"
                ),
            );
            return None;
        };
        let (input, shape) = &self.index_inputs[ids];
        let mut dims = shape.0.clone();
        dims.push(width);
        let origin = format!("{name} of `{input}`");
        Some(Lowered::Value(self.push(
            Op::Embed { field, ids },
            crate::ir::Shape(dims),
            origin,
        )))
    }

    /// `relu(h)`, `leaky_relu(h, 0.2)`: an elementwise method called as a function, as
    /// PyTorch's `F.relu(h)`, lowered as `h.relu()`.
    pub(super) fn function_form(&mut self, call: &syn::ExprCall, name: &Ident) -> Option<Lowered> {
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

    pub(super) fn binary(&mut self, binary: &syn::ExprBinary) -> Option<Lowered> {
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
    pub(super) fn combine(
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
                if op == BinaryOp::Div && !(1.0 / s).is_finite() {
                    let message = if s == 0.0 {
                        "division of a tensor by zero"
                    } else {
                        "dividing by this number overflows an `f32`"
                    };
                    self.errors.over(right_expr, message);
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
}

/// What a call's function names.
enum Callee<'e> {
    /// A layer field, and how messages name it.
    Field(usize, String),
    /// A name that is no field.
    Unknown(&'e Ident),
    /// Something already reported.
    Reported,
}
