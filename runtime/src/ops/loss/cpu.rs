//! CPU kernels of the loss family.

use super::{ClassLoss, LossKernel, PointwiseLoss};
use crate::backend::Cpu;
use crate::error::Result;
use crate::ops::softmax::cpu::shifted_sum_exp;
use crate::ops::unary::sigmoid;

/// `values[i] = l(x[i], t[i])`, `grad[i] = dl/dx (x[i], t[i])`.
pub(crate) fn pointwise_loss(
    op: PointwiseLoss,
    x: &[f32],
    t: &[f32],
    values: &mut [f32],
    grad: &mut [f32],
) {
    let elements = x.iter().zip(t).zip(values.iter_mut().zip(grad.iter_mut()));
    match op {
        PointwiseLoss::Squared => {
            for ((&x, &t), (v, g)) in elements {
                let d = x - t;
                *v = d * d;
                *g = 2.0 * d;
            }
        }
        PointwiseLoss::Absolute => {
            for ((&x, &t), (v, g)) in elements {
                let d = x - t;
                *v = d.abs();
                *g = sign(d);
            }
        }
        PointwiseLoss::SmoothL1 { beta } => {
            for ((&x, &t), (v, g)) in elements {
                let d = x - t;
                if d.abs() < beta {
                    *v = 0.5 * d * d / beta;
                    *g = d / beta;
                } else {
                    *v = d.abs() - 0.5 * beta;
                    *g = sign(d);
                }
            }
        }
        PointwiseLoss::BceWithLogits => {
            for ((&x, &t), (v, g)) in elements {
                *v = x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
                *g = sigmoid(x) - t;
            }
        }
    }
}

/// Per row `r` of the `[rows, classes]` input: `values[r]` and `grad[r, ..]` of `op` against
/// `labels[r]` (a class index as `f32`); a row whose label is not below `classes` gets NaN.
pub(crate) fn class_loss(
    op: ClassLoss,
    x: &[f32],
    labels: &[f32],
    classes: usize,
    values: &mut [f32],
    grad: &mut [f32],
) {
    for ((row, grad_row), (&label, value)) in x
        .chunks_exact(classes)
        .zip(grad.chunks_exact_mut(classes))
        .zip(labels.iter().zip(values.iter_mut()))
    {
        #[allow(clippy::cast_sign_loss, reason = "used only when checked non-negative")]
        let label_index = label as usize;
        if !(label >= 0.0 && label.fract() == 0.0 && label_index < classes) {
            *value = f32::NAN;
            grad_row.fill(f32::NAN);
            continue;
        }
        *value = class_loss_row(op, row, label_index, grad_row);
    }
}

/// One row's loss against class `label`, writing its derivative into `grad_row`.
fn class_loss_row(op: ClassLoss, row: &[f32], label: usize, grad_row: &mut [f32]) -> f32 {
    match op {
        ClassLoss::CrossEntropy { label_smoothing } => {
            let classes = row.len() as f64;
            let smooth = f64::from(label_smoothing);
            let uniform = smooth / classes;
            let (max, sum_exp) = shifted_sum_exp(row.iter().copied());
            let lse = max + sum_exp.ln();
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / classes;
            let nll = lse - f64::from(row[label]);
            for (j, (g, &v)) in grad_row.iter_mut().zip(row).enumerate() {
                let target = if j == label { 1.0 - smooth } else { 0.0 } + uniform;
                *g = ((f64::from(v) - lse).exp() - target) as f32;
            }
            ((1.0 - smooth) * nll + smooth * (lse - mean)) as f32
        }
        ClassLoss::Nll => {
            grad_row.fill(0.0);
            grad_row[label] = -1.0;
            -row[label]
        }
    }
}

/// `-1`, `0` or `1`, like `torch.sign` (0 at 0, so `|x|` has derivative 0 there).
fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

impl LossKernel for Cpu {
    fn pointwise_loss(
        &self,
        op: PointwiseLoss,
        x: &Vec<f32>,
        t: &Vec<f32>,
        values: &mut Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<()> {
        self::pointwise_loss(op, x, t, values, grad);
        Ok(())
    }

    fn class_loss(
        &self,
        op: ClassLoss,
        x: &Vec<f32>,
        labels: &Vec<f32>,
        classes: usize,
        values: &mut Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<()> {
        self::class_loss(op, x, labels, classes, values, grad);
        Ok(())
    }
}
