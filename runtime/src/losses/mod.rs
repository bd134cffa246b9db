//! Losses with PyTorch's definitions and reductions, each giving its value and its gradient
//! with respect to the prediction: [`MseLoss`], [`L1Loss`], [`SmoothL1Loss`],
//! [`BceWithLogitsLoss`] (against a target tensor) and [`CrossEntropyLoss`], [`NllLoss`]
//! (against class indices).
//!
//! ```
//! use declnet_runtime::{Cpu, Tensor};
//! use declnet_runtime::losses::{Loss, MseLoss, Reduction};
//! let pred = Tensor::from_vec(vec![1.0, 2.0], [2], &Cpu);
//! let target = Tensor::from_vec(vec![0.0, 4.0], [2], &Cpu);
//! let (loss, grad) = MseLoss::new(Reduction::Sum).value_and_grad(&pred, &target);
//! assert_eq!(loss.item(), 5.0);
//! assert_eq!(grad.to_vec(), [2.0, -4.0]);
//! ```

mod bce_with_logits;
mod cross_entropy;
mod l1;
mod labels;
mod mse;
mod nll;
mod smooth_l1;

pub use bce_with_logits::BceWithLogitsLoss;
pub use cross_entropy::CrossEntropyLoss;
pub use l1::L1Loss;
pub use labels::{Labels, MAX_CLASSES};
pub use mse::MseLoss;
pub use nll::NllLoss;
pub use smooth_l1::SmoothL1Loss;

use crate::backend::Backend;
use crate::error::{Error, Result, or_panic};
use crate::ops::binary::BinaryOp;
use crate::ops::loss::{ClassLoss, PointwiseLoss};
use crate::ops::unary::UnaryOp;
use crate::tensor::Tensor;

/// How per-element (or per-sample) losses are combined, like PyTorch's `reduction=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The sum, a scalar.
    Sum,
    /// The mean, a scalar (PyTorch's default).
    #[default]
    Mean,
    /// No reduction: one loss per element (per sample for class-index losses).
    None,
}

/// A loss function: its value and its gradient with respect to the prediction.
///
/// Implementors provide [`Loss::try_value_and_grad`]; the other methods derive from it.
pub trait Loss<B: Backend> {
    /// What the prediction is compared with: a tensor, or class indices ([`Labels`]).
    type Target: ?Sized;

    /// The loss's name in messages, like PyTorch's functional name (`mse_loss`).
    fn name(&self) -> &'static str;

    /// The loss (a scalar, or one value per element or sample with [`Reduction::None`]) and its
    /// gradient with respect to `pred` for an upstream gradient of ones.
    ///
    /// # Errors
    /// When `pred` and `target` do not fit together (shapes, label count, labels out of
    /// range) or `pred` is empty.
    fn try_value_and_grad(
        &self,
        pred: &Tensor<B>,
        target: &Self::Target,
    ) -> Result<(Tensor<B>, Tensor<B>)>;

    /// The loss and its gradient with respect to `pred`.
    #[track_caller]
    fn value_and_grad(&self, pred: &Tensor<B>, target: &Self::Target) -> (Tensor<B>, Tensor<B>) {
        or_panic(self.try_value_and_grad(pred, target))
    }

    /// The loss. The kernels compute the gradient in the same pass; use
    /// [`Loss::try_value_and_grad`] when training.
    ///
    /// # Errors
    /// As [`Loss::try_value_and_grad`].
    fn try_forward(&self, pred: &Tensor<B>, target: &Self::Target) -> Result<Tensor<B>> {
        Ok(self.try_value_and_grad(pred, target)?.0)
    }

    /// The loss.
    #[track_caller]
    fn forward(&self, pred: &Tensor<B>, target: &Self::Target) -> Tensor<B> {
        or_panic(self.try_forward(pred, target))
    }

    /// The gradient with respect to `pred` for the upstream gradient `grad_out`, which has the
    /// loss's shape (`[]` when reduced).
    ///
    /// # Errors
    /// As [`Loss::try_value_and_grad`], and [`Error::LossShapes`] when `grad_out` does not have
    /// the loss's shape.
    fn try_backward(
        &self,
        pred: &Tensor<B>,
        target: &Self::Target,
        grad_out: &Tensor<B>,
    ) -> Result<Tensor<B>> {
        let (value, mut grad) = self.try_value_and_grad(pred, target)?;
        if grad_out.shape() != value.shape() {
            return Err(Error::LossShapes {
                op: self.name(),
                input: pred.shape().clone(),
                what: "grad_out",
                other: grad_out.shape().clone(),
            });
        }
        if value.rank() == 1 && grad.rank() == 2 {
            // Per-sample losses of a `[batch, classes]` input: scale each row.
            let rows = grad_out.try_clone()?.try_reshape([value.numel(), 1])?;
            grad.try_zip_(BinaryOp::Mul, self.name(), &rows)?;
        } else {
            grad.try_zip_(BinaryOp::Mul, self.name(), grad_out)?;
        }
        Ok(grad)
    }

    /// The gradient with respect to `pred` for the upstream gradient `grad_out`.
    #[track_caller]
    fn backward(&self, pred: &Tensor<B>, target: &Self::Target, grad_out: &Tensor<B>) -> Tensor<B> {
        or_panic(self.try_backward(pred, target, grad_out))
    }
}

/// Checks that every value of `loss` is finite, naming how many are not: call it on a loss
/// before stepping when a diverging run should stop with an error instead of training on NaN.
/// Copies the loss to the host.
///
/// # Errors
/// [`Error::NonFinite`] when a value is NaN or infinite.
///
/// # Examples
/// ```
/// use declnet_runtime::{Cpu, Tensor, losses::check_finite};
/// assert!(check_finite(&Tensor::full([], 1.0, &Cpu)).is_ok());
/// let error = check_finite(&Tensor::full([], f32::NAN, &Cpu)).unwrap_err();
/// assert_eq!(error.to_string(), "check_finite: 1 of 1 values are not finite (first: NaN)");
/// ```
pub fn check_finite<B: Backend>(loss: &Tensor<B>) -> Result<()> {
    let values = loss.try_to_vec()?;
    let mut bad = values.iter().filter(|v| !v.is_finite());
    match bad.next() {
        None => Ok(()),
        Some(first) => Err(Error::NonFinite {
            op: "check_finite",
            first: first.to_string(),
            count: 1 + bad.count(),
            total: values.len(),
        }),
    }
}

/// Value and gradient of an elementwise loss, reduced.
fn pointwise<B: Backend>(
    name: &'static str,
    op: PointwiseLoss,
    reduction: Reduction,
    pred: &Tensor<B>,
    target: &Tensor<B>,
) -> Result<(Tensor<B>, Tensor<B>)> {
    if pred.shape() != target.shape() {
        return Err(Error::LossShapes {
            op: name,
            input: pred.shape().clone(),
            what: "target",
            other: target.shape().clone(),
        });
    }
    check_not_empty(name, pred)?;
    let (values, grad) = pred.pointwise_loss(op, target)?;
    Ok(reduce(reduction, values, grad, pred.numel()))
}

/// Value and gradient of a class-index loss, reduced over the batch.
fn class_index<B: Backend>(
    name: &'static str,
    op: ClassLoss,
    reduction: Reduction,
    pred: &Tensor<B>,
    labels: &Labels<B>,
) -> Result<(Tensor<B>, Tensor<B>)> {
    let &[rows, classes] = pred.dims() else {
        return Err(Error::Rank {
            op: name,
            expected: 2,
            found: pred.shape().clone(),
        });
    };
    if labels.len() != rows {
        return Err(Error::LabelCount {
            op: name,
            input: pred.shape().clone(),
            labels: labels.len(),
        });
    }
    check_not_empty(name, pred)?;
    if labels.device() != pred.device() {
        return Err(Error::DeviceMismatch {
            op: name,
            lhs: pred.device().name(),
            rhs: labels.device().name(),
        });
    }
    let host = labels.as_slice();
    if let Some((index, &label)) = host.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(Error::LabelOutOfRange {
            op: name,
            index,
            label,
            classes,
        });
    }
    let (values, grad) = pred.class_loss(op, labels)?;
    Ok(reduce(reduction, values, grad, rows))
}

fn check_not_empty<B: Backend>(name: &'static str, pred: &Tensor<B>) -> Result<()> {
    if pred.numel() == 0 {
        return Err(Error::EmptyBatch {
            op: name,
            input: pred.shape().clone(),
        });
    }
    Ok(())
}

/// Applies `reduction` to per-element `values` and scales `grad` to match; `count` is what a
/// mean divides by.
fn reduce<B: Backend>(
    reduction: Reduction,
    values: Tensor<B>,
    grad: Tensor<B>,
    count: usize,
) -> (Tensor<B>, Tensor<B>) {
    match reduction {
        Reduction::None => (values, grad),
        Reduction::Sum => (values.sum(), grad),
        Reduction::Mean => {
            let scale = 1.0 / count as f32;
            (
                values.sum() * scale,
                grad.map_owned(UnaryOp::MulScalar(scale)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    fn pair() -> (Tensor, Tensor) {
        (
            Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &Cpu),
            Tensor::from_vec(vec![1.5, 2.0, 2.0, 6.0], [2, 2], &Cpu),
        )
    }

    #[test]
    fn reductions_of_mse() {
        let (p, t) = pair();
        let sum = MseLoss::new(Reduction::Sum).forward(&p, &t).item();
        let mean = MseLoss::new(Reduction::Mean).forward(&p, &t).item();
        let none = MseLoss::new(Reduction::None).forward(&p, &t);
        assert_eq!(sum, 5.25);
        assert_eq!(mean, 5.25 / 4.0);
        assert_eq!(none.dims(), &[2, 2]);
        assert_eq!(none.to_vec(), [0.25, 0.0, 1.0, 4.0]);
    }

    #[test]
    fn backward_scales_by_grad_out_of_the_loss_shape() {
        let (p, t) = pair();
        let none = MseLoss::new(Reduction::None);
        let go = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &Cpu);
        assert_eq!(none.backward(&p, &t, &go).to_vec(), [-1.0, 0.0, 6.0, -16.0]);
        let error = none
            .try_backward(&p, &t, &Tensor::ones([], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "mse_loss: prediction has shape [2, 2], but grad_out has shape []"
        );
        let ce = CrossEntropyLoss::new(Reduction::None);
        let rows = Tensor::from_vec(vec![0.0, 2.0], [2], &Cpu);
        let grad = ce.backward(&p, &Labels::new(&[0, 1], &Cpu), &rows).to_vec();
        assert_eq!(grad[..2], [0.0, 0.0], "row 0 scaled by 0");
        let unit = ce
            .value_and_grad(&p, &Labels::new(&[0, 1], &Cpu))
            .1
            .to_vec();
        assert_eq!(
            grad[2..],
            [2.0 * unit[2], 2.0 * unit[3]],
            "row 1 scaled by 2"
        );
    }

    #[test]
    fn bad_input_is_an_error_naming_the_problem() {
        let (p, _) = pair();
        let mse = MseLoss::default();
        let error = mse
            .try_forward(&p, &Tensor::zeros([2, 3], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "mse_loss: prediction has shape [2, 2], but target has shape [2, 3]"
        );
        let empty = Tensor::zeros([0, 2], &Cpu);
        let error = mse.try_forward(&empty, &empty).unwrap_err();
        assert_eq!(
            error.to_string(),
            "mse_loss: empty batch: prediction has shape [0, 2]"
        );
        let ce = CrossEntropyLoss::default();
        let error = ce.try_forward(&p, &Labels::new(&[0, 2], &Cpu)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cross_entropy: label 2 at index 1 is out of range for 2 classes"
        );
        let error = ce.try_forward(&p, &Labels::new(&[0], &Cpu)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cross_entropy: prediction [2, 2] has 2 rows, but 1 labels were given"
        );
        let error = NllLoss::default()
            .try_forward(&empty, &Labels::new(&[], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "nll_loss: empty batch: prediction has shape [0, 2]"
        );
        let error = ce
            .try_forward(&Tensor::zeros([3], &Cpu), &Labels::new(&[0], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cross_entropy: expected a 2-D tensor, found shape [3]"
        );
    }

    #[test]
    #[should_panic(expected = "l1_loss: prediction has shape [2, 2], but target has shape [4]")]
    fn plain_form_panics_with_the_same_message() {
        let (p, _) = pair();
        let _ = L1Loss::default().forward(&p, &Tensor::zeros([4], &Cpu));
    }

    #[test]
    fn check_finite_counts_bad_values() {
        let t = Tensor::from_vec(vec![1.0, f32::INFINITY, f32::NAN], [3], &Cpu);
        let error = check_finite(&t).unwrap_err();
        assert_eq!(
            error.to_string(),
            "check_finite: 2 of 3 values are not finite (first: inf)"
        );
    }
}
