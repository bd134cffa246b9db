//! CPU kernels of softmax and log-softmax. Each slice is shifted by its maximum and its sum of
//! exponentials accumulates in `f64`, as the cross-entropy kernel does; rows of the last dim
//! (the usual axis) are vectorised, with `f32` exponentials.

use super::{CausalScores, SoftmaxAxis, SoftmaxKernel, SoftmaxOp};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;
use crate::ops::math;

/// The indices of one slice along the normalised axis: `len` of them from `start`, `stride`
/// apart (so walking a slice allocates nothing).
#[derive(Clone, Copy)]
struct Slice {
    start: usize,
    stride: usize,
    len: usize,
}

/// Calls `f` with every slice along the normalised axis.
fn for_each_slice(axis: &SoftmaxAxis, mut f: impl FnMut(Slice)) {
    let &SoftmaxAxis { outer, len, inner } = axis;
    for o in 0..outer {
        for i in 0..inner {
            f(Slice {
                start: o * len * inner + i,
                stride: inner,
                len,
            });
        }
    }
}

impl Slice {
    fn indices(self) -> impl Iterator<Item = usize> + Clone {
        (0..self.len).map(move |j| self.start + j * self.stride)
    }
}

/// `values`' maximum and the sum of `exp(value - maximum)` in `f64`: the log-sum-exp
/// `max + sum.ln()` without overflow for large values, shared with the cross-entropy kernel.
pub(crate) fn shifted_sum_exp(values: impl Iterator<Item = f32> + Clone) -> (f64, f64) {
    let max = f64::from(values.clone().fold(f32::NEG_INFINITY, f32::max));
    let sum_exp = values.map(|v| (f64::from(v) - max).exp()).sum();
    (max, sum_exp)
}

/// `out = op(x)` along the axis: rows of the last dim vectorised, other axes slice by slice.
pub(crate) fn softmax(op: SoftmaxOp, x: &[f32], axis: &SoftmaxAxis, out: &mut [f32]) {
    debug_assert!(x.len() == axis.numel() && out.len() == x.len());
    if axis.inner == 1 {
        vectorized_in_parts(Rows {
            op,
            x,
            out,
            len: axis.len,
        });
        return;
    }
    for_each_slice(axis, |slice| {
        let (max, sum_exp) = shifted_sum_exp(slice.indices().map(|k| x[k]));
        match op {
            SoftmaxOp::Softmax => {
                for k in slice.indices() {
                    out[k] = ((f64::from(x[k]) - max).exp() / sum_exp) as f32;
                }
            }
            SoftmaxOp::LogSoftmax => {
                let log_sum = max + sum_exp.ln();
                for k in slice.indices() {
                    out[k] = (f64::from(x[k]) - log_sum) as f32;
                }
            }
        }
    });
}

/// `op` over contiguous rows of `len`: the exponentials in `f32` (written once, into `out`),
/// their sum in `f64`.
struct Rows<'a> {
    op: SoftmaxOp,
    x: &'a [f32],
    out: &'a mut [f32],
    len: usize,
}

impl Vectorizable for Rows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Rows { op, x, out, len } = self;
        for (x, out) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
            let max = math::max(x);
            for (o, &v) in out.iter_mut().zip(x) {
                *o = math::exp(v - max);
            }
            let sum = math::sum(out);
            match op {
                SoftmaxOp::Softmax => {
                    #[allow(clippy::cast_possible_truncation, reason = "a scale in f32")]
                    let scale = (1.0 / sum) as f32;
                    for o in out.iter_mut() {
                        *o *= scale;
                    }
                }
                SoftmaxOp::LogSoftmax => {
                    #[allow(clippy::cast_possible_truncation, reason = "an offset in f32")]
                    let log_sum = (f64::from(max) + sum.ln()) as f32;
                    for (o, &v) in out.iter_mut().zip(x) {
                        *o = v - log_sum;
                    }
                }
            }
        }
    }
}

/// `out` = the gradient through `op` along the axis, from its output `y` and the output's
/// gradient `g`.
pub(crate) fn softmax_backward(
    op: SoftmaxOp,
    y: &[f32],
    g: &[f32],
    axis: &SoftmaxAxis,
    out: &mut [f32],
) {
    debug_assert!(y.len() == axis.numel() && g.len() == y.len() && out.len() == y.len());
    if axis.inner == 1 {
        vectorized_in_parts(RowsBackward {
            op,
            y,
            g,
            out,
            len: axis.len,
            scale: 1.0,
            causal_from: None,
        });
        return;
    }
    for_each_slice(axis, |slice| match op {
        SoftmaxOp::Softmax => {
            let dot: f64 = slice
                .indices()
                .map(|k| f64::from(g[k]) * f64::from(y[k]))
                .sum();
            for k in slice.indices() {
                out[k] = ((f64::from(g[k]) - dot) * f64::from(y[k])) as f32;
            }
        }
        SoftmaxOp::LogSoftmax => {
            let sum: f64 = slice.indices().map(|k| f64::from(g[k])).sum();
            for k in slice.indices() {
                out[k] = (f64::from(g[k]) - f64::from(y[k]).exp() * sum) as f32;
            }
        }
    });
}

/// The gradient through `op` over contiguous rows of `len`, the row sums in `f64`, times
/// `scale` (the input's scale for the causal softmax, else 1).
struct RowsBackward<'a> {
    op: SoftmaxOp,
    y: &'a [f32],
    g: &'a [f32],
    out: &'a mut [f32],
    len: usize,
    scale: f32,
    /// For the causal softmax, the first row's index in the whole tensor: row `r` reads its
    /// first `r % len + 1` entries only, and writes 0 after them (its masked entries).
    causal_from: Option<usize>,
}

impl Divisible for Rows<'_> {
    fn units(&self) -> usize {
        self.x.len() / self.len.max(1)
    }
    fn unit_len(&self) -> usize {
        self.len
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Rows { op, x, out, len } = self;
        let ((x_left, x_right), (out_left, out_right)) =
            (x.split_at(mid * len), out.split_at_mut(mid * len));
        let part = |x, out| Rows { op, x, out, len };
        (part(x_left, out_left), part(x_right, out_right))
    }
}

impl Divisible for RowsBackward<'_> {
    fn units(&self) -> usize {
        self.y.len() / self.len.max(1)
    }
    fn unit_len(&self) -> usize {
        self.len
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let RowsBackward {
            op,
            y,
            g,
            out,
            len,
            scale,
            causal_from,
        } = self;
        let at = mid * len;
        let ((y_left, y_right), (g_left, g_right)) = (y.split_at(at), g.split_at(at));
        let (out_left, out_right) = out.split_at_mut(at);
        let part = |y, g, out, causal_from| RowsBackward {
            op,
            y,
            g,
            out,
            len,
            scale,
            causal_from,
        };
        (
            part(y_left, g_left, out_left, causal_from),
            part(
                y_right,
                g_right,
                out_right,
                causal_from.map(|first| first + mid),
            ),
        )
    }
}

impl Vectorizable for RowsBackward<'_> {
    type Output = ();
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation, reason = "row sums back in f32")]
    fn run(self) {
        let RowsBackward {
            op,
            y,
            g,
            out,
            len,
            scale,
            causal_from,
        } = self;
        let rows = y.chunks_exact(len).zip(g.chunks_exact(len));
        for (row, ((y, g), out)) in rows.zip(out.chunks_exact_mut(len)).enumerate() {
            let seen = causal_from.map_or(len, |first| (first + row) % len + 1);
            let (y, g) = (&y[..seen], &g[..seen]);
            let (out, masked) = out.split_at_mut(seen);
            masked.fill(0.0);
            match op {
                SoftmaxOp::Softmax => {
                    let dot = math::dot(g, y) as f32;
                    for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                        *o = (g - dot) * y * scale;
                    }
                }
                SoftmaxOp::LogSoftmax => {
                    let sum = math::sum(g) as f32;
                    for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
                        *o = (g - math::exp(y) * sum) * scale;
                    }
                }
            }
        }
    }
}

/// The causal softmax of `x`, row by row.
pub(crate) fn causal_softmax(x: &[f32], scores: &CausalScores, out: &mut [f32]) {
    debug_assert!(x.len() == scores.axis.numel() && out.len() == x.len());
    if scores.axis.len > 0 {
        vectorized_in_parts(CausalRows {
            x,
            out,
            scores: *scores,
            first_row: 0,
        });
    }
}

/// The gradient through the causal softmax, from its output `y` and the output's gradient
/// `g`.
pub(crate) fn causal_softmax_backward(
    y: &[f32],
    g: &[f32],
    scores: &CausalScores,
    out: &mut [f32],
) {
    debug_assert!(y.len() == scores.axis.numel() && g.len() == y.len() && out.len() == y.len());
    // The masked entries get no gradient, as through the mask and the softmax apart; their
    // outputs `y` are 0 and add nothing to the sums, so neither they nor `g` there are read
    // (half of each square).
    if scores.axis.len > 0 {
        vectorized_in_parts(RowsBackward {
            op: SoftmaxOp::Softmax,
            y,
            g,
            out,
            len: scores.axis.len,
            scale: scores.scale,
            causal_from: Some(0),
        });
    }
}

/// Floats in the widest vectors (AVX-512's 16; a multiple of AVX2's 8).
const VECTOR: usize = 16;

/// The causal softmax over rows of `scores.axis.len`, the first of them row `first_row` of the
/// whole tensor (so `first_row % size` is its position).
struct CausalRows<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    scores: CausalScores,
    first_row: usize,
}

impl Vectorizable for CausalRows<'_> {
    type Output = ();
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation, reason = "a scale in f32")]
    fn run(self) {
        let CausalRows {
            x,
            out,
            scores:
                CausalScores {
                    axis: SoftmaxAxis { len: size, .. },
                    scale,
                },
            first_row,
        } = self;
        let rows = x.chunks_exact(size).zip(out.chunks_exact_mut(size));
        for (row, (x, out)) in (first_row..).zip(rows) {
            let seen = row % size + 1;
            // Rounded as `softmax(scale * x)` is: the scaled scores, less their maximum.
            let max = math::max(&x[..seen]) * scale;
            // The exponentials of whole vectors, those past `seen` zeroed after: a row's
            // remainder loop would not vectorise.
            let (head, tail) = out.split_at_mut(seen.next_multiple_of(VECTOR).min(size));
            for (o, &v) in head.iter_mut().zip(x) {
                *o = math::exp(v * scale - max);
            }
            head[seen..].fill(0.0);
            tail.fill(0.0);
            let normalise = (1.0 / math::sum(head)) as f32;
            for o in head.iter_mut() {
                *o *= normalise;
            }
        }
    }
}

impl Divisible for CausalRows<'_> {
    fn units(&self) -> usize {
        self.x.len() / self.scores.axis.len
    }
    fn unit_len(&self) -> usize {
        self.scores.axis.len
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let CausalRows {
            x,
            out,
            scores,
            first_row,
        } = self;
        let at = mid * scores.axis.len;
        let ((x_left, x_right), (out_left, out_right)) = (x.split_at(at), out.split_at_mut(at));
        let part = |x, out, first_row| CausalRows {
            x,
            out,
            scores,
            first_row,
        };
        (
            part(x_left, out_left, first_row),
            part(x_right, out_right, first_row + mid),
        )
    }
}

impl SoftmaxKernel for Cpu {
    fn softmax(
        &self,
        op: SoftmaxOp,
        x: &Vec<f32>,
        axis: &SoftmaxAxis,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self::softmax(op, x, axis, out);
        Ok(())
    }

    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &Vec<f32>,
        grad: &Vec<f32>,
        axis: &SoftmaxAxis,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self::softmax_backward(op, y, grad, axis, out);
        Ok(())
    }

    fn causal_softmax(
        &self,
        x: &Vec<f32>,
        scores: &CausalScores,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self::causal_softmax(x, scores, out);
        Ok(())
    }

    fn causal_softmax_backward(
        &self,
        y: &Vec<f32>,
        grad: &Vec<f32>,
        scores: &CausalScores,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self::causal_softmax_backward(y, grad, scores, out);
        Ok(())
    }
}
