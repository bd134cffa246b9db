//! CPU kernels of softmax and log-softmax. Each slice is shifted by its maximum and its sum of
//! exponentials accumulates in `f64`, as the cross-entropy kernel does.

use super::{SoftmaxAxis, SoftmaxOp};

/// Calls `f` with the element indices of every slice along the normalised axis.
fn for_each_slice(axis: &SoftmaxAxis, mut f: impl FnMut(&[usize])) {
    let &SoftmaxAxis { outer, len, inner } = axis;
    let mut slice = Vec::with_capacity(len);
    for o in 0..outer {
        for i in 0..inner {
            slice.clear();
            slice.extend((0..len).map(|j| (o * len + j) * inner + i));
            f(&slice);
        }
    }
}

/// `out = op(x)` along the axis.
pub(crate) fn softmax(op: SoftmaxOp, x: &[f32], axis: &SoftmaxAxis, out: &mut [f32]) {
    debug_assert!(x.len() == axis.numel() && out.len() == x.len());
    for_each_slice(axis, |slice| {
        let max = slice
            .iter()
            .map(|&k| x[k])
            .fold(f32::NEG_INFINITY, f32::max);
        let max = f64::from(max);
        let sum_exp: f64 = slice.iter().map(|&k| (f64::from(x[k]) - max).exp()).sum();
        match op {
            SoftmaxOp::Softmax => {
                for &k in slice {
                    out[k] = ((f64::from(x[k]) - max).exp() / sum_exp) as f32;
                }
            }
            SoftmaxOp::LogSoftmax => {
                let log_sum = max + sum_exp.ln();
                for &k in slice {
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
                .iter()
                .map(|&k| f64::from(g[k]) * f64::from(y[k]))
                .sum();
            for &k in slice {
                out[k] = ((f64::from(g[k]) - dot) * f64::from(y[k])) as f32;
            }
        }
        SoftmaxOp::LogSoftmax => {
            let sum: f64 = slice.iter().map(|&k| f64::from(g[k])).sum();
            for &k in slice {
                out[k] = (f64::from(g[k]) - f64::from(y[k]).exp() * sum) as f32;
            }
        }
    });
}
