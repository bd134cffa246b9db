//! Methods of a forward body that reorder, select or mask dims, as attention written out by
//! hand uses them: `.transpose(a, b)`, `.permute([..])`, `.contiguous()`, `.narrow(dim, start,
//! len)`, `let (q, k, v) = x.split(size, dim)` (or `.chunk(n, dim)`), and `.causal_mask()`.

use syn::{Expr, Pat};

use super::methods::int_arg;
use super::{Lowered, Lowerer, binding_name};
use crate::ir::{Dim, DimKind, Op, Shape, ValueId};
use crate::shape::unify;

impl Lowerer<'_> {
    /// `x.transpose(a, b)`. Swapping the last two dims stays a view until something needs the
    /// values, so a `.matmul()` reads it in place; other pairs are copied.
    pub(super) fn transpose(
        &mut self,
        call: &syn::ExprMethodCall,
        receiver: Lowered,
    ) -> Option<Lowered> {
        // A view's dims are those of the tensor it views, the last two swapped: same rank.
        let base = match receiver {
            Lowered::Transposed(id) => id,
            other => self.materialize(other, &call.receiver)?,
        };
        let usage = "two dims, like `.transpose(1, 2)`";
        let [a, b] = self.dim_args(call, "transpose", base, usage)?[..] else {
            return None;
        };
        let rank = self.shape(base).0.len();
        let (low, high) = (a.min(b), a.max(b));
        if low == high {
            return Some(receiver);
        }
        if (low, high) == (rank - 2, rank - 1) {
            return Some(match receiver {
                Lowered::Transposed(original) => Lowered::Value(original),
                _ => Lowered::Transposed(base),
            });
        }
        let x = self.materialize(receiver, &call.receiver)?;
        let mut order: Vec<usize> = (0..rank).collect();
        order.swap(a, b);
        Some(Lowered::Value(self.permute_node(
            x,
            order,
            "`.transpose()`",
        )))
    }

    /// `x.permute([..])` or `x.permute(..)`: every dim once, in the new order.
    pub(super) fn permute(
        &mut self,
        call: &syn::ExprMethodCall,
        receiver: Lowered,
    ) -> Option<Lowered> {
        let x = self.materialize(receiver, &call.receiver)?;
        let usage = "every dim once, like `.permute([0, 2, 1, 3])`";
        let args: Vec<Expr> = match call.args.iter().collect::<Vec<_>>()[..] {
            [Expr::Array(array)] => array.elems.iter().cloned().collect(),
            _ => call.args.iter().cloned().collect(),
        };
        let order = self.resolve_dims(&args, call, "permute", x, usage)?;
        let rank = self.shape(x).0.len();
        let mut seen = vec![false; rank];
        let is_permutation = order.len() == rank
            && order
                .iter()
                .all(|&dim| !std::mem::replace(&mut seen[dim], true));
        if !is_permutation {
            let shape = self.shape(x).clone();
            self.errors.over(
                &call.args,
                format!(
                    "`.permute()` of `{shape}` (from {}) takes each of its {rank} dims once, \
                     found {order:?}",
                    self.origin(x)
                ),
            );
            return None;
        }
        if order.iter().enumerate().all(|(i, &dim)| i == dim) {
            return Some(Lowered::Value(x));
        }
        Some(Lowered::Value(self.permute_node(x, order, "`.permute()`")))
    }

    /// The node copying `x` with its dims in `order`, made by `what`.
    pub(super) fn permute_node(&mut self, x: ValueId, order: Vec<usize>, what: &str) -> ValueId {
        let dims = &self.shape(x).0;
        let shape = Shape(order.iter().map(|&dim| dims[dim].clone()).collect());
        let origin = format!("{what} of {}", self.producer(x));
        self.push(Op::Permute { x, order }, shape, origin)
    }

    /// `x.narrow(dim, start, len)`: `len` entries of `dim` from `start`.
    pub(super) fn narrow(
        &mut self,
        call: &syn::ExprMethodCall,
        receiver: Lowered,
    ) -> Option<Lowered> {
        let x = self.materialize(receiver, &call.receiver)?;
        let usage = "`.narrow()` takes a dim, a start and a length as integer literals, like \
                     `.narrow(-1, 0, 32)`";
        let [dim, start, len] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.errors.over(call, usage);
            return None;
        };
        let dim = self.resolve_dims(std::slice::from_ref(dim), call, "narrow", x, usage)?[0];
        let (Some(start), Some(len)) = (count_arg(start), count_arg(len)) else {
            self.errors.over(&call.args, usage);
            return None;
        };
        let size = self.literal_size(x, dim, "`.narrow()`", call)?;
        if start + len > size || len == 0 {
            let shape = self.shape(x).clone();
            self.errors.over(
                &call.args,
                format!(
                    "`.narrow()` of `{shape}` (from {}) takes entries {start}..{} of dim {dim}, \
                     which has {size}",
                    self.origin(x),
                    start + len
                ),
            );
            return None;
        }
        Some(Lowered::Value(self.narrow_node(
            x,
            dim,
            start,
            len,
            "`.narrow()`",
            call,
        )))
    }

    /// `let (a, b, ..) = x.split(size, dim);` or `.chunk(count, dim)`, as PyTorch splits: parts
    /// of `size` (the last one maybe shorter), or `count` parts of the size rounded up. The
    /// pattern names every part.
    pub(super) fn split_let(&mut self, pat: &syn::PatTuple, call: &syn::ExprMethodCall) {
        let method = call.method.to_string();
        // `Some(None)` for a `_` that drops its part.
        let names: Option<Vec<Option<&syn::Ident>>> = pat
            .elems
            .iter()
            .map(|elem| match elem {
                Pat::Wild(_) => Some(None),
                other => binding_name(other).map(Some),
            })
            .collect();
        let Some(names) = names else {
            self.errors.over(
                pat,
                format!("`.{method}()` binds its parts to names, like `let (q, k, v) = ..`"),
            );
            return;
        };
        let parts = self.split_parts(call, &method, names.len());
        for (index, name) in names.into_iter().enumerate() {
            if let Some(name) = name {
                self.bind(name, parts.as_ref().map(|parts| parts[index]));
            }
        }
    }

    /// The parts of `.split()` / `.chunk()`, when there are `wanted` of them.
    fn split_parts(
        &mut self,
        call: &syn::ExprMethodCall,
        method: &str,
        wanted: usize,
    ) -> Option<Vec<ValueId>> {
        let receiver = self.expr(&call.receiver)?;
        let x = self.materialize(receiver, &call.receiver)?;
        let what = if method == "split" {
            "a part size"
        } else {
            "a number of parts"
        };
        let usage = format!(
            "`.{method}()` takes {what} and a dim as integer literals, like `.{method}({}, -1)`",
            if method == "split" { 32 } else { 3 }
        );
        let [amount, dim] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.errors.over(call, usage);
            return None;
        };
        let dim = self.resolve_dims(std::slice::from_ref(dim), call, method, x, &usage)?[0];
        let Some(amount) = count_arg(amount).filter(|&amount| amount > 0) else {
            self.errors.over(amount, usage);
            return None;
        };
        let what = format!("`.{method}()`");
        let size = self.literal_size(x, dim, &what, call)?;
        let part = if method == "split" {
            amount
        } else {
            size.div_ceil(amount)
        };
        let count = size.div_ceil(part.max(1));
        if count != wanted {
            let shape = self.shape(x).clone();
            self.errors.at(
                call.method.span(),
                format!(
                    "{what} of dim {dim} of `{shape}` (from {}) makes {count} parts of up to \
                     {part}, but the pattern names {wanted}",
                    self.origin(x)
                ),
            );
            return None;
        }
        let parts = (0..count).map(|index| {
            let start = index * part;
            (start, part.min(size - start))
        });
        Some(
            parts
                .map(|(start, len)| self.narrow_node(x, dim, start, len, &what, call))
                .collect(),
        )
    }

    /// The node of `len` entries of `x`'s `dim` from `start`, made by `what` at `call`.
    fn narrow_node(
        &mut self,
        x: ValueId,
        dim: usize,
        start: usize,
        len: usize,
        what: &str,
        call: &syn::ExprMethodCall,
    ) -> ValueId {
        let mut dims = self.shape(x).0.clone();
        dims[dim] = Dim::lit(len, call.method.span());
        let origin = format!(
            "{what} (entries {start}..{} of dim {dim}) of {}",
            start + len,
            self.producer(x)
        );
        self.push(Op::Narrow { x, dim, start }, Shape(dims), origin)
    }

    /// `x.causal_mask()`: a `[.., T, T]` tensor with the entries above the diagonal (the
    /// future, for a query row) set to `-inf`, so a softmax after it gives them no weight.
    pub(super) fn causal_mask(
        &mut self,
        call: &syn::ExprMethodCall,
        receiver: Lowered,
    ) -> Option<Lowered> {
        let x = self.materialize(receiver, &call.receiver)?;
        if !call.args.is_empty() {
            self.errors
                .over(&call.args, "`.causal_mask()` takes no arguments");
            return None;
        }
        let shape = self.shape(x).clone();
        let square = match &shape.0[..] {
            [.., rows, cols] => unify(rows, cols, &mut self.assertions),
            _ => false,
        };
        if !square {
            self.errors.at(
                call.method.span(),
                format!(
                    "`.causal_mask()` masks a `[.., T, T]` tensor of scores, found `{shape}` from {}",
                    self.origin(x)
                ),
            );
            return None;
        }
        let origin = format!("`.causal_mask()` of {}", self.producer(x));
        Some(Lowered::Value(self.push(
            Op::CausalMask { x },
            shape,
            origin,
        )))
    }

    /// Dim arguments of `.method()` on `x` (literals, negative ones counted from the end);
    /// `usage` says what the method takes.
    fn dim_args(
        &mut self,
        call: &syn::ExprMethodCall,
        method: &str,
        x: ValueId,
        usage: &str,
    ) -> Option<Vec<usize>> {
        let args: Vec<Expr> = call.args.iter().cloned().collect();
        if args.len() != 2 {
            self.errors
                .at(call.method.span(), format!("`.{method}()` takes {usage}"));
            return None;
        }
        self.resolve_dims(&args, call, method, x, usage)
    }

    /// `args` as dims of `x`.
    fn resolve_dims(
        &mut self,
        args: &[Expr],
        call: &syn::ExprMethodCall,
        method: &str,
        x: ValueId,
        usage: &str,
    ) -> Option<Vec<usize>> {
        let mut dims = Vec::with_capacity(args.len());
        for arg in args {
            let Some(dim) = int_arg(arg) else {
                self.errors
                    .over(arg, format!("`.{method}()` takes {usage}"));
                return None;
            };
            match self.resolve_dim(dim, x, &format!("`.{method}()`")) {
                Ok(dim) => dims.push(dim),
                Err(message) => {
                    self.errors.over(arg, message);
                    return None;
                }
            }
        }
        if args.is_empty() {
            self.errors
                .over(call, format!("`.{method}()` takes {usage}"));
            return None;
        }
        Some(dims)
    }

    /// The size of `x`'s `dim` as a number, which `what` needs to check its range.
    fn literal_size(
        &mut self,
        x: ValueId,
        dim: usize,
        what: &str,
        call: &syn::ExprMethodCall,
    ) -> Option<usize> {
        let shape = self.shape(x).clone();
        match shape.0[dim].kind {
            DimKind::Lit(size) => Some(size),
            _ => {
                self.errors.at(
                    call.method.span(),
                    format!(
                        "{what} needs dim {dim} of `{shape}` (from {}) as a number, found `{}`",
                        self.origin(x),
                        shape.0[dim]
                    ),
                );
                None
            }
        }
    }
}

/// A non-negative integer literal: a start, a length, a count.
fn count_arg(expr: &Expr) -> Option<usize> {
    int_arg(expr).and_then(|value| usize::try_from(value).ok())
}

/// The tuple pattern and the call of `let (a, b) = x.split(..);` / `.chunk(..)`.
pub(super) fn split_binding(local: &syn::Local) -> Option<(&syn::PatTuple, &syn::ExprMethodCall)> {
    let Pat::Tuple(pat) = &local.pat else {
        return None;
    };
    match local.init.as_ref().map(|init| &*init.expr) {
        Some(Expr::MethodCall(call))
            if matches!(call.method.to_string().as_str(), "split" | "chunk") =>
        {
            Some((pat, call))
        }
        _ => None,
    }
}
