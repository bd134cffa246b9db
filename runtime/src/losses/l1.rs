//! [`L1Loss`], like `torch.nn.L1Loss`.

use super::{Loss, Reduction, pointwise};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::loss::PointwiseLoss;
use crate::tensor::Tensor;

/// The name in messages, PyTorch's functional name.
const NAME: &str = "l1_loss";

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
    fn name(&self) -> &'static str {
        NAME
    }

    fn try_value_and_grad(
        &self,
        pred: &Tensor<B>,
        target: &Tensor<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        pointwise(NAME, PointwiseLoss::Absolute, self.reduction, pred, target)
    }
}
