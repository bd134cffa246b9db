//! Shape arithmetic of `.flatten()`, `.reshape([..])` / `.view([..])`, the `Flatten` layer and
//! 2-D pooling: the output shape from literal dims, checked when the crate compiles, with the
//! derivation in the node's origin so that a later mismatch shows it.

use proc_macro2::Span;
use syn::Expr;

use super::{Lowered, Lowerer};
use crate::ir::{Dim, DimKind, Op, PoolSpec, Shape, ValueId};

/// A dim of a `.reshape([..])` target as written.
enum Target {
    Dim(Dim),
    /// `-1`: the one dim inferred from the element count.
    Inferred(Span),
}

impl Lowerer<'_> {
    /// `x` flattened from dim `start` to dim `end` (inclusive, non-negative), applied by field
    /// `layer` or a method; an error is reported at `at`.
    pub(super) fn flatten(
        &mut self,
        x: ValueId,
        (start, end): (isize, isize),
        layer: Option<usize>,
        what: &str,
        at: Span,
    ) -> Option<ValueId> {
        let shape = self.shape(x).clone();
        let rank = shape.0.len();
        let resolve = |dim: isize| {
            let index = if dim < 0 {
                rank.checked_sub(dim.unsigned_abs())
            } else {
                usize::try_from(dim).ok().filter(|&dim| dim < rank.max(1))
            };
            index.ok_or_else(|| {
                format!(
                    "dim {dim} is out of range for `{shape}` from {}: {what} takes a dim from \
                     -{rank} to {}",
                    self.origin(x),
                    rank.saturating_sub(1)
                )
            })
        };
        let range = if rank == 0 {
            Ok((0, 0))
        } else {
            resolve(start).and_then(|start| Ok((start, resolve(end)?)))
        };
        let (start, end) = match range {
            Ok((start, end)) if start <= end || rank == 0 => (start, end),
            Ok(_) => {
                self.errors.at(
                    at,
                    format!("{what}: the start dim {start} comes after the end dim {end}"),
                );
                return None;
            }
            Err(message) => {
                self.errors.at(at, message);
                return None;
            }
        };
        if rank == 0 {
            // PyTorch flattens a scalar into one element.
            let out = Shape(vec![Dim::lit(1, at)]);
            let origin = format!("{what} of `[]` from {}", self.producer(x));
            return Some(self.push(Op::Reshape { x, layer }, out, origin));
        }
        let merged = &shape.0[start..=end];
        let literals: Option<Vec<usize>> = merged
            .iter()
            .map(|dim| match dim.kind {
                DimKind::Lit(value) => Some(value),
                _ => None,
            })
            .collect();
        let dim = match (merged, literals) {
            ([only], _) => only.clone(),
            (_, Some(values)) => {
                let product = values.iter().try_fold(1usize, |acc, &v| acc.checked_mul(v));
                let Some(product) = product else {
                    self.errors
                        .at(at, format!("{what} of `{shape}` overflows `usize`"));
                    return None;
                };
                Dim::lit(product, at)
            }
            (_, None) => {
                self.errors.at(
                    at,
                    format!(
                        "{what} would merge dims of `{shape}` (from {}) that are not numbers; \
                         only literal dims can be flattened together, so keep the batch out \
                         (flatten from dim 1)",
                        self.origin(x)
                    ),
                );
                return None;
            }
        };
        let mut dims = shape.0[..start].to_vec();
        dims.push(dim.clone());
        dims.extend_from_slice(&shape.0[end + 1..]);
        let out = Shape(dims);
        let arithmetic: Vec<String> = merged.iter().map(ToString::to_string).collect();
        let origin = if merged.len() > 1 {
            format!(
                "{what} of `{shape}` from {} ({} = {dim})",
                self.producer(x),
                arithmetic.join("*")
            )
        } else {
            format!("{what} of `{shape}` from {}", self.producer(x))
        };
        Some(self.push(Op::Reshape { x, layer }, out, origin))
    }

    /// `pool` over `x`, a `[N, C, H, W]` tensor with numbers for `H` and `W`, applied by field
    /// `layer` or a method; an error is reported at `at`.
    pub(super) fn pool(
        &mut self,
        x: ValueId,
        pool: PoolSpec,
        layer: Option<usize>,
        what: &str,
        at: Span,
    ) -> Option<ValueId> {
        let shape = self.shape(x).clone();
        let [n, c, h, w] = &shape.0[..] else {
            self.errors.at(
                at,
                format!(
                    "{what} pools a `[N, C, H, W]` tensor, found `{shape}` from {}",
                    self.origin(x)
                ),
            );
            return None;
        };
        let mut out = vec![n.clone(), c.clone()];
        for (dim, name) in [(h, "height"), (w, "width")] {
            let DimKind::Lit(size) = dim.kind else {
                self.errors.at(
                    at,
                    format!(
                        "{what} needs the {name} of `{shape}` (from {}) as a number, found `{dim}`",
                        self.origin(x)
                    ),
                );
                return None;
            };
            match pool.output_size(size) {
                Ok(size) => out.push(Dim::lit(size, at)),
                Err(message) => {
                    self.errors.at(
                        at,
                        format!(
                            "{what} does not fit `{shape}` from {}: {message}",
                            self.origin(x)
                        ),
                    );
                    return None;
                }
            }
        }
        let origin = format!("{what} of `{shape}` from {}", self.producer(x));
        Some(self.push(Op::Pool { x, pool, layer }, Shape(out), origin))
    }

    /// `AdaptiveAvgPool2d<out>` (field `layer`) over `x`: PyTorch's adaptive windows are
    /// uniform when each spatial size is a multiple of the output's, and then the pooling is
    /// `AvgPool2d<size / out>`; the other cases (windows of several sizes, or rectangular ones)
    /// are reported at `at`.
    pub(super) fn adaptive_avg_pool(
        &mut self,
        x: ValueId,
        out: [usize; 2],
        layer: usize,
        what: &str,
        at: Span,
    ) -> Option<ValueId> {
        let shape = self.shape(x).clone();
        let kernels = match &shape.0[..] {
            [_, _, h, w] => match (&h.kind, &w.kind) {
                (DimKind::Lit(h), DimKind::Lit(w)) => Some([(*h, out[0]), (*w, out[1])]),
                _ => None,
            },
            _ => None,
        };
        let Some(kernels) = kernels else {
            // `pool` reports what is wrong with the shape.
            return self.pool(
                x,
                PoolSpec::new(false, 1, None, None),
                Some(layer),
                what,
                at,
            );
        };
        let windows = kernels.map(|(size, out)| (out > 0 && size % out == 0).then(|| size / out));
        match windows {
            [Some(kh), Some(kw)] if kh == kw => self.pool(
                x,
                PoolSpec::new(false, kh, None, None),
                Some(layer),
                what,
                at,
            ),
            _ => {
                self.errors.at(
                    at,
                    format!(
                        "{what} of `{shape}` from {} needs windows of one square size: each \
                         spatial size a multiple of the output's, by the same factor (pooling \
                         to other sizes is not supported yet)",
                        self.origin(x)
                    ),
                );
                None
            }
        }
    }

    /// `x.reshape([..])` / `x.view([..])`: the dims in brackets are numbers, named dims of the
    /// inputs, const generics, or one `-1`; the element counts must agree.
    pub(super) fn reshape(
        &mut self,
        call: &syn::ExprMethodCall,
        receiver: Lowered,
        method: &str,
    ) -> Option<Lowered> {
        let x = self.materialize(receiver, &call.receiver)?;
        let usage =
            format!("`.{method}()` takes the new shape in brackets, like `.{method}([N, 4, -1])`");
        let [Expr::Array(array)] = call.args.iter().collect::<Vec<_>>()[..] else {
            self.errors.over(call, usage);
            return None;
        };
        let mut targets = Vec::new();
        for elem in &array.elems {
            match self.target_dim(elem) {
                Some(target) => targets.push(target),
                None => {
                    self.errors.over(
                        elem,
                        format!(
                            "a dim of `.{method}()` is a number, a dim named in the inputs, a \
                             const generic, or `-1`"
                        ),
                    );
                    return None;
                }
            }
        }
        let shape = self.shape(x).clone();
        let at = call.method.span();
        match infer(&shape, targets) {
            Ok(out) => {
                let origin = format!("`.{method}()` of {}", self.producer(x));
                let op = Op::Reshape { x, layer: None };
                Some(Lowered::Value(self.push(op, out, origin)))
            }
            Err(message) => {
                self.errors.at(
                    at,
                    format!(
                        "`.{method}()` cannot make `{shape}` (from {}) {message}",
                        self.origin(x)
                    ),
                );
                None
            }
        }
    }

    /// One dim of a reshape target.
    fn target_dim(&self, expr: &Expr) -> Option<Target> {
        match expr {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(int),
                ..
            }) => Some(Target::Dim(Dim::lit(int.base10_parse().ok()?, int.span()))),
            Expr::Unary(syn::ExprUnary {
                op: syn::UnOp::Neg(_),
                expr,
                ..
            }) => match &**expr {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(int),
                    ..
                }) if int.base10_digits() == "1" => Some(Target::Inferred(int.span())),
                _ => None,
            },
            Expr::Path(path) => {
                let ident = path.path.get_ident()?;
                let name = ident.to_string();
                // A name of the inputs' shapes (the batch) or a const generic of the network.
                let kind = self
                    .nodes
                    .iter()
                    .flat_map(|node| &node.shape.0)
                    .find(|dim| {
                        matches!(&dim.kind, DimKind::Named(n) | DimKind::Const(n) if *n == name)
                    })?
                    .kind
                    .clone();
                Some(Target::Dim(Dim {
                    kind,
                    span: ident.span(),
                }))
            }
            _ => None,
        }
    }
}

/// The target shape with its `-1` inferred, or why `shape` cannot become it: the symbolic
/// dims (named, const generic, a nested network's width) must pair up, and the numbers'
/// products agree.
fn infer(shape: &Shape, targets: Vec<Target>) -> Result<Shape, String> {
    let written = || {
        let dims: Vec<String> = targets
            .iter()
            .map(|target| match target {
                Target::Dim(dim) => dim.to_string(),
                Target::Inferred(_) => "-1".to_owned(),
            })
            .collect();
        format!("[{}]", dims.join(", "))
    };
    if targets
        .iter()
        .filter(|target| matches!(target, Target::Inferred(_)))
        .count()
        > 1
    {
        return Err(format!("into `{}`: only one dim can be `-1`", written()));
    }
    let split = |dims: &mut dyn Iterator<Item = &Dim>| {
        let (mut product, mut symbols) = (Some(1usize), Vec::new());
        for dim in dims {
            match &dim.kind {
                DimKind::Lit(value) => product = product.and_then(|p| p.checked_mul(*value)),
                other => symbols.push(other.clone()),
            }
        }
        (product, symbols)
    };
    let (from, mut from_symbols) = split(&mut shape.0.iter());
    let (to, mut to_symbols) = split(&mut targets.iter().filter_map(|target| match target {
        Target::Dim(dim) => Some(dim),
        Target::Inferred(_) => None,
    }));
    let key = |kind: &DimKind| format!("{kind:?}");
    from_symbols.sort_by_key(key);
    to_symbols.sort_by_key(key);
    if from_symbols != to_symbols {
        return Err(format!(
            "into `{}`: the dims that are not numbers must be the same on both sides",
            written()
        ));
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(format!(
            "into `{}`: the element count overflows `usize`",
            written()
        ));
    };
    let inferred = targets.iter().find_map(|target| match target {
        Target::Inferred(span) => Some(*span),
        Target::Dim(_) => None,
    });
    let size = match inferred {
        Some(_) if to == 0 || from % to != 0 => {
            return Err(format!(
                "into `{}`: {from} elements per the other dims do not divide into dims of {to}",
                written()
            ));
        }
        Some(_) => Some(from / to),
        None if from != to => {
            return Err(format!(
                "into `{}`: {from} elements against {to}",
                written()
            ));
        }
        None => None,
    };
    Ok(Shape(
        targets
            .into_iter()
            .map(|target| match target {
                Target::Dim(dim) => dim,
                Target::Inferred(span) => Dim::lit(size.unwrap_or(1), span),
            })
            .collect(),
    ))
}
