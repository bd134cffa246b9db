//! [`NllLoss`], like `torch.nn.NLLLoss`.

use super::{Labels, Loss, Reduction, class_index};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops::loss::ClassLoss;
use crate::tensor::Tensor;

/// The name in messages, PyTorch's functional name.
const NAME: &str = "nll_loss";

/// Negative log-likelihood `-x[label]` of `[batch, classes]` log-probabilities (the output of
/// a log-softmax) against one class index per row, like `torch.nn.NLLLoss`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NllLoss {
    /// How the per-sample losses are combined (a mean over the batch by default).
    pub reduction: Reduction,
}

impl NllLoss {
    /// The loss with `reduction`.
    #[must_use]
    pub fn new(reduction: Reduction) -> Self {
        Self { reduction }
    }
}

impl<B: Backend> Loss<B> for NllLoss {
    type Target = Labels<B>;
    fn name(&self) -> &'static str {
        NAME
    }

    fn try_value_and_grad(
        &self,
        pred: &Tensor<B>,
        labels: &Labels<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        class_index(NAME, ClassLoss::Nll, self.reduction, pred, labels)
    }
}
