//! [`L1Loss`], like `torch.nn.L1Loss`.

use super::{Loss, Reduction, pointwise};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::loss::PointwiseLoss;
use crate::tensor::Tensor;

/// The absolute error `|x - y|`, like `torch.nn.L1Loss`; the prediction and target have the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct L1Loss {
    /// How the per-element losses are combined.
    pub reduction: Reduction,
}

impl L1Loss {
    /// The loss with `reduction`.
    #[must_use]
    pub fn new(reduction: Reduction) -> Self {
        Self { reduction }
    }
}

impl<B: Backend> Loss<B> for L1Loss {
    type Target = Tensor<B>;
    const NAME: &'static str = "l1_loss";

    fn try_value_and_grad(&self, pred: &Tensor<B>, target: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        pointwise(<Self as Loss<B>>::NAME, PointwiseLoss::Absolute, self.reduction, pred, target)
    }
}
