//! Tensor methods in a forward body: the elementwise table's, softmax, `mm`, `t`, the
//! reductions, and custom functions' `.apply`.

use quote::ToTokens;
use syn::Expr;

use super::{Lowered, Lowerer, OTHER_METHODS};
use crate::elementwise::{self, MapOp};
use crate::errors::did_you_mean;
use crate::ir::{BinaryOp, Op, PoolSpec, Shape, ValueId, softmax_name};
use crate::shape::unify;

impl Lowerer<'_> {
    pub(super) fn method(&mut self, call: &syn::ExprMethodCall) -> Option<Lowered> {
        let method = call.method.to_string();
        if method == "apply" {
            return self.custom_function(call);
        }
        let receiver = self.expr(&call.receiver)?;
        let span = call.method.span();
        if let (Lowered::Scalar(value), "sqrt") = (receiver, method.as_str())
            && call.args.is_empty()
        {
            // A scale written as it reads, `att / 8.0.sqrt()`.
            return Some(Lowered::Scalar(value.sqrt()));
        }
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
            "mm" | "matmul" => self.mm(call, receiver, &method),
            "transpose" => self.transpose(call, receiver),
            "permute" => self.permute(call, receiver),
            "narrow" => self.narrow(call, receiver),
            "causal_mask" => self.causal_mask(call, receiver),
            "contiguous" => {
                let x = self.materialize(receiver, &call.receiver)?;
                no_args(self).then_some(Lowered::Value(x))
            }
            "split" | "chunk" => {
                self.errors.at(
                    span,
                    format!("bind the parts of `.{method}()` to names, like `let (q, k, v) = x.{method}(..);`"),
                );
                None
            }
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
            "flatten" => {
                let x = self.materialize(receiver, &call.receiver)?;
                let mut dims = Vec::new();
                for arg in &call.args {
                    match int_arg(arg) {
                        Some(dim) => dims.push(dim),
                        None => {
                            self.errors.over(
                                arg,
                                "`.flatten()` takes dims as integer literals, like `.flatten(1)`",
                            );
                            return None;
                        }
                    }
                }
                // PyTorch's `torch.flatten` defaults: all dims, from 0 to the last.
                let range = match dims[..] {
                    [] => (0, -1),
                    [start] => (start, -1),
                    [start, end] => (start, end),
                    _ => {
                        self.errors.over(
                            &call.args,
                            "`.flatten()` takes at most a start and an end dim",
                        );
                        return None;
                    }
                };
                Some(Lowered::Value(self.flatten(x, range, None, &origin, span)?))
            }
            "reshape" | "view" => self.reshape(call, receiver, &method),
            "max_pool2d" | "avg_pool2d" => {
                let x = self.materialize(receiver, &call.receiver)?;
                let mut args = Vec::new();
                for arg in &call.args {
                    match int_arg(arg).and_then(|value| usize::try_from(value).ok()) {
                        Some(value) => args.push(value),
                        None => {
                            self.errors.over(arg, format!("`.{method}()` takes its kernel, stride and padding as integer literals"));
                            return None;
                        }
                    }
                }
                let [kernel, ref rest @ ..] = args[..] else {
                    self.errors.at(
                        span,
                        format!("`.{method}()` takes its kernel size, like `.{method}(2)`"),
                    );
                    return None;
                };
                if rest.len() > 2 {
                    self.errors.over(
                        &call.args,
                        format!("`.{method}()` takes at most a kernel, a stride and a padding"),
                    );
                    return None;
                }
                let pool = PoolSpec::new(
                    method == "max_pool2d",
                    kernel,
                    rest.first().copied(),
                    rest.get(1).copied(),
                );
                Some(Lowered::Value(self.pool(x, pool, None, &origin, span)?))
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
    pub(super) fn softmax_layer(
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
    pub(super) fn dim_arg(
        &mut self,
        call: &syn::ExprMethodCall,
        method: &str,
        x: ValueId,
    ) -> Option<usize> {
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
    pub(super) fn resolve_dim(&self, dim: isize, x: ValueId, what: &str) -> Result<usize, String> {
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
    pub(super) fn custom_function(&mut self, call: &syn::ExprMethodCall) -> Option<Lowered> {
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

    /// `a.mm(b)` of matrices, or `a.matmul(b)` of tensors of one rank whose leading dims
    /// agree (`[B, H, T, D]` by `[B, H, D, T]`), reading transposed operands in place.
    pub(super) fn mm(
        &mut self,
        call: &syn::ExprMethodCall,
        receiver: Lowered,
        method: &str,
    ) -> Option<Lowered> {
        let what = format!("`.{method}()`");
        let [arg] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.errors.over(call, format!("{what} takes one tensor"));
            return None;
        };
        let operand = |this: &mut Self, lowered: Lowered, expr: &Expr| -> Option<(ValueId, bool)> {
            match lowered {
                Lowered::Value(id) => Some((id, false)),
                Lowered::Transposed(id) => Some((id, true)),
                Lowered::Scalar(_) => {
                    this.errors.over(
                        expr,
                        format!("{what} multiplies tensors; use `*` to scale by a number"),
                    );
                    None
                }
            }
        };
        let (a, a_t) = operand(self, receiver, &call.receiver)?;
        let rhs = self.expr(arg)?;
        let (b, b_t) = operand(self, rhs, arg)?;
        let (a_shape, b_shape) = (self.viewed(a, a_t), self.viewed(b, b_t));
        for (shape, id, expr) in [(&a_shape, a, &*call.receiver), (&b_shape, b, arg)] {
            let rank = shape.0.len();
            let fits = if method == "mm" { rank == 2 } else { rank >= 2 };
            if !fits {
                let needs = if method == "mm" {
                    "2-D tensors"
                } else {
                    "tensors of at least 2 dims"
                };
                self.errors.over(
                    expr,
                    format!(
                        "{what} needs {needs}, found `{shape}` from {}",
                        self.origin(id)
                    ),
                );
                return None;
            }
        }
        let rank = a_shape.0.len();
        let batch_agrees = rank == b_shape.0.len()
            && a_shape.0[..rank - 2]
                .iter()
                .zip(&b_shape.0[..rank - 2])
                .all(|(x, y)| unify(x, y, &mut self.assertions));
        let (inner_a, inner_b) = (&a_shape.0[rank - 1], b_shape.0.get(rank - 2));
        let inner_agrees = batch_agrees
            && inner_b.is_some_and(|inner_b| unify(inner_a, inner_b, &mut self.assertions));
        let why = if !batch_agrees {
            Some("the leading (batch) dims must be the same, as the ranks".to_owned())
        } else if !inner_agrees {
            let inner_b = inner_b.map_or_else(String::new, ToString::to_string);
            Some(format!("inner dims {inner_a} and {inner_b} differ"))
        } else {
            None
        };
        let message = why.map(|why| {
            format!(
                "{what} cannot multiply `{a_shape}` ({}) by `{b_shape}` ({}): {why}",
                self.origin(a),
                self.origin(b)
            )
        });
        if let Some(message) = message {
            self.errors.at(call.method.span(), message);
            return None;
        }
        let mut dims = a_shape.0[..rank - 1].to_vec();
        dims.push(b_shape.0[rank - 1].clone());
        let op = Op::Mm { a, a_t, b, b_t };
        Some(Lowered::Value(self.push(op, Shape(dims), what)))
    }

    /// Value `id`'s shape, with its last two dims swapped when `transposed`.
    pub(super) fn viewed(&self, id: ValueId, transposed: bool) -> Shape {
        let mut dims = self.shape(id).0.clone();
        if transposed && dims.len() >= 2 {
            let rank = dims.len();
            dims.swap(rank - 2, rank - 1);
        }
        Shape(dims)
    }
}

/// An integer literal, maybe negative: a dim argument.
pub(super) fn int_arg(expr: &Expr) -> Option<isize> {
    let literal = |expr: &Expr| match expr {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(int),
            ..
        }) => int.base10_parse::<isize>().ok(),
        _ => None,
    };
    match expr {
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            expr,
            ..
        }) => literal(expr).map(|dim| -dim),
        _ => literal(expr),
    }
}
