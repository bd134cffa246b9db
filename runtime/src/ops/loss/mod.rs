//! Loss kernels: per-element losses with their derivative in one pass, and per-row class-index
//! losses (cross entropy through log-sum-exp, negative log-likelihood). The loss types built on
//! them live in `crate::losses`.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::Result;
use crate::tensor::Tensor;

/// A loss of one prediction element against one target element, the unit of work of
/// [`LossKernel::pointwise_loss`]. The kernel writes `l(x, t)` and `dl/dx`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PointwiseLoss {
    /// `(x - t)^2`.
    Squared,
    /// `|x - t|`; the derivative at 0 is 0, like `sign`.
    Absolute,
    /// `0.5 (x - t)^2 / beta` where `|x - t| < beta`, else `|x - t| - 0.5 beta`;
    /// `beta = 0` is [`PointwiseLoss::Absolute`].
    SmoothL1 {
        /// Where the loss turns from quadratic to linear.
        beta: f32,
    },
    /// `-[t log s(x) + (1 - t) log(1 - s(x))]` for the sigmoid `s`, computed as
    /// `max(x, 0) - x t + log(1 + e^-|x|)` so large `|x|` neither overflows nor loses the loss.
    BceWithLogits,
}

/// A loss of one row of a `[batch, classes]` input against its class index, the unit of work of
/// [`LossKernel::class_loss`]. The kernel writes one value per row and the derivative of each
/// row's value with respect to every input.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ClassLoss {
    /// `-log softmax(x)[label]`, mixed with the uniform distribution by `label_smoothing`:
    /// `(1 - e) (lse - x[label]) + e (lse - mean(x))`, where `lse` is the row's log-sum-exp.
    CrossEntropy {
        /// The weight `e` of the uniform target, in `[0, 1]`.
        label_smoothing: f32,
    },
    /// `-x[label]`: the input holds log-probabilities.
    Nll,
}

/// The kernels of the losses: each computes the loss values and their gradient in one pass.
pub trait LossKernel: Memory {
    /// Per element: `values[i] = l(x[i], t[i])` and `grad[i] = dl/dx` for the loss `op`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn pointwise_loss(
        &self,
        op: PointwiseLoss,
        x: &Self::Storage,
        t: &Self::Storage,
        values: &mut Self::Storage,
        grad: &mut Self::Storage,
    ) -> Result<()>;

    /// Per row of the `[rows, classes]` input `x` (`rows` is `values`' length): the loss `op`
    /// against that row's label into `values`, and its derivative with respect to the row into
    /// `grad`. `labels` holds `rows` class indices as `f32`s (see
    /// [`Labels`](crate::losses::Labels)); a row whose label is not below `classes` gets NaN.
    ///
    /// # Errors
    /// When the kernel fails.
    fn class_loss(
        &self,
        op: ClassLoss,
        x: &Self::Storage,
        labels: &Self::Storage,
        classes: usize,
        values: &mut Self::Storage,
        grad: &mut Self::Storage,
    ) -> Result<()>;
}

#[cfg(not(feature = "cuda"))]
impl LossKernel for crate::Cuda {
    fn pointwise_loss(
        &self,
        _: PointwiseLoss,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn class_loss(
        &self,
        _: ClassLoss,
        _: &Self::Storage,
        _: &Self::Storage,
        _: usize,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

impl<B: Backend> Tensor<B> {
    /// Per-element values and derivatives of `op` against `target` (same shape, checked by the
    /// caller).
    pub(crate) fn pointwise_loss(&self, op: PointwiseLoss, target: &Self) -> Result<(Self, Self)> {
        self.check_same_device("loss", target)?;
        let mut values = Self::try_zeros(self.shape.clone(), &self.device)?;
        let mut grad = Self::try_zeros(self.shape.clone(), &self.device)?;
        self.device.pointwise_loss(
            op,
            &self.storage,
            &target.storage,
            &mut values.storage,
            &mut grad.storage,
        )?;
        Ok((values, grad))
    }

    /// Per-row values (`[batch]`) and derivatives (`[batch, classes]`) of `op` for a 2-D input
    /// and labels already checked to be in range.
    pub(crate) fn class_loss(
        &self,
        op: ClassLoss,
        labels: &crate::losses::Labels<B>,
    ) -> Result<(Self, Self)> {
        let classes = self.dims()[1];
        let mut values = Self::try_zeros([labels.len()], &self.device)?;
        let mut grad = Self::try_zeros(self.shape.clone(), &self.device)?;
        self.device.class_loss(
            op,
            &self.storage,
            &labels.encoded.storage,
            classes,
            &mut values.storage,
            &mut grad.storage,
        )?;
        Ok((values, grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn bce_with_logits_is_finite_and_exact_for_large_logits() {
        let x = Tensor::from_vec(vec![100.0, -100.0, 0.0], [3], &Cpu);
        let t = Tensor::from_vec(vec![0.0, 1.0, 1.0], [3], &Cpu);
        let (values, grad) = x.pointwise_loss(PointwiseLoss::BceWithLogits, &t).unwrap();
        // log(1 + e^100) = 100 to f32 precision; a naive log(sigmoid) would give inf.
        assert_eq!(values.to_vec()[..2], [100.0, 100.0]);
        assert!((values.to_vec()[2] - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(grad.to_vec(), [1.0, -1.0, -0.5]);
    }

    #[test]
    fn cross_entropy_survives_huge_logits() {
        let x = Tensor::from_vec(vec![1000.0, 0.0, -1000.0], [1, 3], &Cpu);
        let (values, grad) = x
            .class_loss(
                ClassLoss::CrossEntropy {
                    label_smoothing: 0.0,
                },
                &crate::losses::Labels::new(&[1], &Cpu),
            )
            .unwrap();
        assert_eq!(values.to_vec(), [1000.0]);
        assert_eq!(grad.to_vec(), [1.0, -1.0, 0.0]);
    }

    #[test]
    fn absolute_and_smooth_l1_derivatives_at_zero_are_zero() {
        let x = Tensor::from_vec(vec![1.0, 3.0], [2], &Cpu);
        let t = Tensor::from_vec(vec![1.0, 1.0], [2], &Cpu);
        for op in [
            PointwiseLoss::Absolute,
            PointwiseLoss::SmoothL1 { beta: 0.0 },
            PointwiseLoss::SmoothL1 { beta: 1.0 },
        ] {
            let (values, grad) = x.pointwise_loss(op, &t).unwrap();
            assert_eq!(grad.to_vec(), [0.0, 1.0], "{op:?}");
            let expected = if op == (PointwiseLoss::SmoothL1 { beta: 1.0 }) {
                1.5
            } else {
                2.0
            };
            assert_eq!(values.to_vec(), [0.0, expected], "{op:?}");
        }
    }
}
