//! CPU kernels of softmax and log-softmax. Each slice is shifted by its maximum and its sum of
//! exponentials accumulates in `f64`, as the cross-entropy kernel does.

use super::{SoftmaxAxis, SoftmaxKernel, SoftmaxOp};
use crate::backend::Cpu;
use crate::error::Result;

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

/// `out = op(x)` along the axis.
pub(crate) fn softmax(op: SoftmaxOp, x: &[f32], axis: &SoftmaxAxis, out: &mut [f32]) {
    debug_assert!(x.len() == axis.numel() && out.len() == x.len());
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
}
