//! [`MseLoss`], like `torch.nn.MSELoss`.

use super::{Loss, Reduction, pointwise};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::loss::PointwiseLoss;
use crate::tensor::Tensor;

/// The name in messages, PyTorch's functional name.
const NAME: &str = "mse_loss";

/// The squared error `(x - y)^2`, like `torch.nn.MSELoss`; the prediction and target have the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MseLoss {
    /// How the per-element losses are combined.
    pub reduction: Reduction,
}

impl MseLoss {
    /// The loss with `reduction`.
    #[must_use]
    pub fn new(reduction: Reduction) -> Self {
        Self { reduction }
    }
}

impl<B: Backend> Loss<B> for MseLoss {
    type Target = Tensor<B>;
    fn name(&self) -> &'static str {
        NAME
    }

    fn try_value_and_grad(
        &self,
        pred: &Tensor<B>,
        target: &Tensor<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        pointwise(NAME, PointwiseLoss::Squared, self.reduction, pred, target)
    }
}
