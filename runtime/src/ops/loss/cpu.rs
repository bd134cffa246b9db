//! CPU kernels of the loss family.

use super::{ClassLoss, LossKernel, PointwiseLoss};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;
use crate::ops::math;
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

/// [`class_loss`] over the rows in hand; rows run in parts on the thread pool.
struct ClassRows<'a> {
    op: ClassLoss,
    x: &'a [f32],
    labels: &'a [f32],
    classes: usize,
    values: &'a mut [f32],
    grad: &'a mut [f32],
}

impl Divisible for ClassRows<'_> {
    /// Each element costs an exponential, several times a simple map's work.
    fn part_min_elements(&self) -> usize {
        1 << 14
    }

    fn units(&self) -> usize {
        self.values.len()
    }
    fn unit_len(&self) -> usize {
        self.classes
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let ClassRows {
            op,
            x,
            labels,
            classes,
            values,
            grad,
        } = self;
        let at = mid * classes;
        let ((x_left, x_right), (grad_left, grad_right)) = (x.split_at(at), grad.split_at_mut(at));
        let ((labels_left, labels_right), (values_left, values_right)) =
            (labels.split_at(mid), values.split_at_mut(mid));
        let part = |x, labels, values, grad| ClassRows {
            op,
            x,
            labels,
            classes,
            values,
            grad,
        };
        (
            part(x_left, labels_left, values_left, grad_left),
            part(x_right, labels_right, values_right, grad_right),
        )
    }
}

impl Vectorizable for ClassRows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        class_loss(
            self.op,
            self.x,
            self.labels,
            self.classes,
            self.values,
            self.grad,
        );
    }
}

/// Per row `r` of the `[rows, classes]` input: `values[r]` and `grad[r, ..]` of `op` against
/// `labels[r]` (a class index as `f32`); a row whose label is not below `classes` gets NaN.
#[inline(always)]
fn class_loss(
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
#[inline(always)]
fn class_loss_row(op: ClassLoss, row: &[f32], label: usize, grad_row: &mut [f32]) -> f32 {
    match op {
        // The softmax as `softmax` computes it (f32 exponentials, summed in f64), minus the
        // target distribution: what PyTorch's f32 kernels compute too.
        ClassLoss::CrossEntropy { label_smoothing } => {
            let classes = row.len() as f64;
            let smooth = f64::from(label_smoothing);
            let max = math::max(row);
            for (g, &v) in grad_row.iter_mut().zip(row) {
                *g = math::exp(v - max);
            }
            let sum_exp = math::sum(grad_row);
            let lse = f64::from(max) + sum_exp.ln();
            let mean = math::sum(row) / classes;
            let nll = lse - f64::from(row[label]);
            let scale = (1.0 / sum_exp) as f32;
            let uniform = (smooth / classes) as f32;
            for g in grad_row.iter_mut() {
                *g = *g * scale - uniform;
            }
            grad_row[label] -= (1.0 - smooth) as f32;
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
        vectorized_in_parts(ClassRows {
            op,
            x,
            labels,
            classes,
            values,
            grad,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enough rows to run in parts on two threads: the parts give what one part gives, bit for
    /// bit, a row with a label out of range included.
    #[test]
    fn class_loss_in_parts_matches_one_part() {
        let (rows, classes) = (300, 40);
        let x: Vec<f32> = (0..rows * classes)
            .map(|i| ((i * 7919) % 1013) as f32 / 100.0 - 5.0)
            .collect();
        let mut labels: Vec<f32> = (0..rows).map(|r| (r % classes) as f32).collect();
        labels[17] = classes as f32;
        let op = ClassLoss::CrossEntropy {
            label_smoothing: 0.1,
        };
        let (mut values, mut grad) = (vec![0.0; rows], vec![0.0; rows * classes]);
        Cpu.class_loss(op, &x, &labels, classes, &mut values, &mut grad)
            .unwrap();
        let (mut one_values, mut one_grad) = (vec![0.0; rows], vec![0.0; rows * classes]);
        class_loss(op, &x, &labels, classes, &mut one_values, &mut one_grad);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&values), bits(&one_values));
        assert_eq!(bits(&grad), bits(&one_grad));
        assert!(values[17].is_nan() && values[16].is_finite());
    }
}
