//! [`CrossEntropyLoss`], like `torch.nn.CrossEntropyLoss` on class indices.

use super::{Labels, Loss, Reduction, class_index};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::loss::ClassLoss;
use crate::tensor::Tensor;

/// The name in messages, PyTorch's functional name.
const NAME: &str = "cross_entropy";

/// Cross entropy of `softmax(x)` against class indices, computed through log-sum-exp (no
/// overflow for large logits), like `torch.nn.CrossEntropyLoss`. The prediction is
/// `[batch, classes]` logits; the target is one class index per row. With label smoothing `e`
/// the target distribution is `(1 - e) one_hot + e / classes`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CrossEntropyLoss {
    /// How the per-sample losses are combined (a mean over the batch by default).
    pub reduction: Reduction,
    /// The weight of the uniform distribution in the target, in `[0, 1]`; 0 by default.
    pub label_smoothing: f32,
}

impl CrossEntropyLoss {
    /// The loss with `reduction` and no label smoothing.
    #[must_use]
    pub fn new(reduction: Reduction) -> Self {
        Self {
            reduction,
            label_smoothing: 0.0,
        }
    }

    /// The same loss with label smoothing `label_smoothing`.
    #[must_use]
    pub fn with_label_smoothing(self, label_smoothing: f32) -> Self {
        Self {
            label_smoothing,
            ..self
        }
    }
}

impl<B: Backend> Loss<B> for CrossEntropyLoss {
    type Target = Labels<B>;
    fn name(&self) -> &'static str {
        NAME
    }

    fn try_value_and_grad(
        &self,
        pred: &Tensor<B>,
        labels: &Labels<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(Error::HyperParameter {
                op: NAME,
                name: "label_smoothing",
                message: format!("expected a value in [0, 1], found {}", self.label_smoothing),
            });
        }
        let op = ClassLoss::CrossEntropy {
            label_smoothing: self.label_smoothing,
        };
        class_index(NAME, op, self.reduction, pred, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn label_smoothing_matches_the_closed_form() {
        // Uniform logits over 4 classes: log-softmax is -ln 4 everywhere, whatever the target.
        let x = Tensor::zeros([1, 4], &Cpu);
        let loss = CrossEntropyLoss::new(Reduction::Sum).with_label_smoothing(0.2);
        let (value, grad) = loss.value_and_grad(&x, &Labels::new(&[3], &Cpu));
        assert!((value.item() - 4f32.ln()).abs() < 1e-6);
        // softmax (0.25) minus the smoothed target (0.8 one-hot + 0.05).
        let expected = [0.2, 0.2, 0.2, -0.6];
        for (g, e) in grad.to_vec().iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{g} vs {e}");
        }
        let bad = CrossEntropyLoss::default().with_label_smoothing(1.5);
        assert_eq!(
            bad.try_forward(&x, &Labels::new(&[0], &Cpu))
                .unwrap_err()
                .to_string(),
            "cross_entropy: invalid label_smoothing: expected a value in [0, 1], found 1.5"
        );
    }
}
