//! [`SmoothL1Loss`], like `torch.nn.SmoothL1Loss`.

use super::{Loss, Reduction, pointwise};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::loss::PointwiseLoss;
use crate::tensor::Tensor;

/// The name in messages, PyTorch's functional name.
const NAME: &str = "smooth_l1_loss";

/// The Huber-like loss `0.5 d^2 / beta` for `|d| < beta`, else `|d| - 0.5 beta`, where
/// `d = x - y`, like `torch.nn.SmoothL1Loss`; `beta = 0` is the L1 loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothL1Loss {
    /// How the per-element losses are combined.
    pub reduction: Reduction,
    /// Where the loss turns from quadratic to linear; PyTorch's default is 1.
    pub beta: f32,
}

impl Default for SmoothL1Loss {
    fn default() -> Self {
        Self::new(Reduction::Mean, 1.0)
    }
}

impl SmoothL1Loss {
    /// The loss with `reduction` and `beta`.
    #[must_use]
    pub fn new(reduction: Reduction, beta: f32) -> Self {
        Self { reduction, beta }
    }
}

impl<B: Backend> Loss<B> for SmoothL1Loss {
    type Target = Tensor<B>;
    fn name(&self) -> &'static str {
        NAME
    }

    fn try_value_and_grad(
        &self,
        pred: &Tensor<B>,
        target: &Tensor<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        // PyTorch rejects a negative beta too; NaN fails the same test.
        if self.beta.is_nan() || self.beta < 0.0 {
            return Err(Error::HyperParameter {
                op: NAME,
                name: "beta",
                message: format!("expected a value >= 0, found {}", self.beta),
            });
        }
        let op = PointwiseLoss::SmoothL1 { beta: self.beta };
        pointwise(NAME, op, self.reduction, pred, target)
    }
}
