//! [`BceWithLogitsLoss`], like `torch.nn.BCEWithLogitsLoss`.

use super::{Loss, Reduction, pointwise};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::loss::PointwiseLoss;
use crate::tensor::Tensor;

/// The name in messages, PyTorch's functional name.
const NAME: &str = "binary_cross_entropy_with_logits";

/// Binary cross entropy of `sigmoid(x)` against a target probability `y`, computed from the logit `x` so that large `|x|` stays exact (`max(x, 0) - x y + log(1 + e^-|x|)`), like `torch.nn.BCEWithLogitsLoss`; the prediction and target have the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BceWithLogitsLoss {
    /// How the per-element losses are combined.
    pub reduction: Reduction,
}

impl BceWithLogitsLoss {
    /// The loss with `reduction`.
    #[must_use]
    pub fn new(reduction: Reduction) -> Self {
        Self { reduction }
    }
}

impl<B: Backend> Loss<B> for BceWithLogitsLoss {
    type Target = Tensor<B>;
    fn name(&self) -> &'static str {
        NAME
    }

    fn try_value_and_grad(
        &self,
        pred: &Tensor<B>,
        target: &Tensor<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        pointwise(
            NAME,
            PointwiseLoss::BceWithLogits,
            self.reduction,
            pred,
            target,
        )
    }
}
