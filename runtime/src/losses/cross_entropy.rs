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
/// `[batch, classes]` logits; the target is one class index per row.
///
/// PyTorch's options: with label smoothing `e` the target distribution is
/// `(1 - e) one_hot + e / classes`; a class `weight` scales each sample's loss by its target
/// class's weight (the uniform part by every class's), and the mean then divides by the sum of
/// the targets' weights; samples whose label is `ignore_index` count for nothing.
///
/// # Examples
/// ```
/// use declnet_runtime::losses::{CrossEntropyLoss, Labels, Loss, Reduction};
/// use declnet_runtime::{Cpu, Tensor};
///
/// let logits = Tensor::from_vec(vec![2.0, 0.0, 0.0, 2.0], [2, 2], &Cpu);
/// let labels = Labels::new(&[0, 9], &Cpu); // 9: padding, ignored
/// let loss = CrossEntropyLoss::new(Reduction::Mean)
///     .with_weight(vec![0.5, 2.0])
///     .with_ignore_index(9);
/// let value = loss.forward(&logits, &labels).item();
/// assert!((value - (1.0 + (-2f32).exp()).ln()).abs() < 1e-6); // only sample 0 counts
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CrossEntropyLoss {
    /// How the per-sample losses are combined (a mean over the batch by default).
    pub reduction: Reduction,
    /// The weight of the uniform distribution in the target, in `[0, 1]`; 0 by default.
    pub label_smoothing: f32,
    /// One weight per class, like PyTorch's `weight`; `None` weighs every class 1.
    pub weight: Option<Vec<f32>>,
    /// A label whose samples are left out, like PyTorch's `ignore_index` (a padding class);
    /// it may lie outside the classes.
    pub ignore_index: Option<usize>,
}

impl CrossEntropyLoss {
    /// The loss with `reduction` and none of the options.
    #[must_use]
    pub fn new(reduction: Reduction) -> Self {
        Self {
            reduction,
            ..Self::default()
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

    /// The same loss with one weight per class.
    #[must_use]
    pub fn with_weight(self, weight: Vec<f32>) -> Self {
        Self {
            weight: Some(weight),
            ..self
        }
    }

    /// The same loss, leaving out the samples labelled `ignore_index`.
    #[must_use]
    pub fn with_ignore_index(self, ignore_index: usize) -> Self {
        Self {
            ignore_index: Some(ignore_index),
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
        if self.weight.is_none() && self.ignore_index.is_none() {
            // One fused kernel: the loss and its gradient in one pass.
            let op = ClassLoss::CrossEntropy {
                label_smoothing: self.label_smoothing,
            };
            return class_index(NAME, op, self.reduction, pred, labels);
        }
        self.weighted(pred, labels)
    }
}

impl CrossEntropyLoss {
    /// The loss with class weights or ignored samples, from the unsmoothed kernel:
    /// per sample `i` with factor `r_i` (0 when ignored, else 1) and target weight `w[y_i]`,
    /// `(1 - e) r_i w[y_i] nll_i + (e / C) r_i sum_c w_c (lse_i - x_ic)`, and its gradient
    /// `(1 - e) r_i w[y_i] (p_i - onehot_i) + (e / C) r_i (p_i sum(w) - w)`.
    fn weighted<B: Backend>(
        &self,
        pred: &Tensor<B>,
        labels: &Labels<B>,
    ) -> Result<(Tensor<B>, Tensor<B>)> {
        let &[rows, classes] = pred.dims() else {
            return Err(Error::Rank {
                op: NAME,
                expected: 2,
                found: pred.shape().clone(),
            });
        };
        let weight = match &self.weight {
            Some(weight) if weight.len() != classes => {
                return Err(Error::HyperParameter {
                    op: NAME,
                    name: "weight",
                    message: format!(
                        "expected one weight per class, {classes}, found {}",
                        weight.len()
                    ),
                });
            }
            Some(weight) => weight.clone(),
            None => vec![1.0; classes],
        };
        let ignored = |label: usize| self.ignore_index == Some(label);
        // Ignored samples take class 0 in the kernel; their factor of 0 removes them.
        let kept: Vec<usize> = labels
            .as_slice()
            .iter()
            .map(|&label| if ignored(label) { 0 } else { label })
            .collect();
        let device = pred.device();
        let (nll, grad_nll) = class_index(
            NAME,
            ClassLoss::CrossEntropy {
                label_smoothing: 0.0,
            },
            Reduction::None,
            pred,
            &Labels::try_new(&kept, device)?,
        )?;
        let present: Vec<f32> = labels
            .as_slice()
            .iter()
            .map(|&label| if ignored(label) { 0.0 } else { 1.0 })
            .collect();
        let target_weight: Vec<f32> = kept
            .iter()
            .zip(&present)
            .map(|(&label, &present)| present * weight[label])
            .collect();
        let e = self.label_smoothing;
        let per_row = |factors: &[f32], scale: f32| {
            let scaled: Vec<f32> = factors.iter().map(|f| f * scale).collect();
            Tensor::try_from_vec(scaled, [rows, 1], device)
        };
        let nll_factor = per_row(&target_weight, 1.0 - e)?;
        let smooth_factor = per_row(&present, e / classes as f32)?;
        let weight_row = Tensor::try_from_slice(&weight, [classes], device)?;
        let log_p = pred.try_log_softmax(1)?;
        // sum_c w_c (lse - x_c) = -sum_c w_c log p_c.
        let smooth = -log_p.try_mul(&weight_row)?.try_sum_dim(1, true)?;
        let values = nll
            .try_reshape([rows, 1])?
            .try_mul(&nll_factor)?
            .try_add(&smooth.try_mul(&smooth_factor)?)?
            .try_reshape([rows])?;
        let total_weight: f32 = weight.iter().sum();
        let smooth_grad = (pred.try_softmax(1)? * total_weight).try_sub(&weight_row)?;
        let grad = grad_nll
            .try_mul(&nll_factor)?
            .try_add(&smooth_grad.try_mul(&smooth_factor)?)?;
        Ok(match self.reduction {
            Reduction::None => (values, grad),
            Reduction::Sum => (values.try_sum()?, grad),
            Reduction::Mean => {
                // PyTorch divides by the targets' total weight (a count without weights). With
                // every sample ignored the loss is 0 / 0 = NaN, and the gradient 0, as there.
                let total: f32 = target_weight.iter().sum();
                let grad_scale = if total > 0.0 { 1.0 / total } else { 0.0 };
                (values.try_sum()? * (1.0 / total), grad * grad_scale)
            }
        })
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

    /// PyTorch's formula, in `f64`: per sample, `(1 - e) w[y] nll + (e / C) sum_c w_c nll_c`
    /// where `nll_c = lse - x_c`, left out when ignored; the mean divides by the kept targets'
    /// total weight.
    fn reference(
        x: &[f32],
        classes: usize,
        labels: &[usize],
        weight: &[f64],
        e: f64,
        ignore: Option<usize>,
    ) -> (Vec<f64>, f64) {
        let mut values = Vec::new();
        let mut denominator = 0.0;
        for (row, &label) in x.chunks(classes).zip(labels) {
            if Some(label) == ignore {
                values.push(0.0);
                continue;
            }
            let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            let max = row.iter().copied().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            let smooth: f64 = row.iter().zip(weight).map(|(v, w)| w * (lse - v)).sum();
            values
                .push((1.0 - e) * weight[label] * (lse - row[label]) + e / classes as f64 * smooth);
            denominator += weight[label];
        }
        let mean = values.iter().sum::<f64>() / denominator;
        (values, mean)
    }

    fn logits() -> (Tensor, Vec<usize>) {
        let data: Vec<f32> = (0..12).map(|v| ((v * 7) % 5) as f32 * 0.7 - 1.2).collect();
        (Tensor::from_vec(data, [4, 3], &Cpu), vec![2, 0, 7, 1])
    }

    #[test]
    fn weight_ignore_index_and_smoothing_follow_pytorchs_formula() {
        let (x, labels) = logits();
        let weight = [0.5, 2.0, 1.5];
        let loss = |reduction| {
            CrossEntropyLoss::new(reduction)
                .with_weight(weight.to_vec())
                .with_ignore_index(7)
                .with_label_smoothing(0.1)
        };
        let (expected, mean) = reference(
            &x.to_vec(),
            3,
            &labels,
            &weight.map(f64::from),
            0.1,
            Some(7),
        );
        let labels = Labels::new(&labels, &Cpu);
        let values = loss(Reduction::None).forward(&x, &labels).to_vec();
        for (value, expected) in values.iter().zip(&expected) {
            assert!(
                (f64::from(*value) - expected).abs() < 1e-6,
                "{values:?} vs {expected:?}"
            );
        }
        let value = f64::from(loss(Reduction::Mean).forward(&x, &labels).item());
        assert!((value - mean).abs() < 1e-6, "{value} vs {mean}");
        // The gradient against central differences of the mean.
        let (_, grad) = loss(Reduction::Mean).value_and_grad(&x, &labels);
        for i in 0..x.numel() {
            let at = |delta: f32| {
                let mut data = x.to_vec();
                data[i] += delta;
                let moved = Tensor::from_vec(data, [4, 3], &Cpu);
                f64::from(loss(Reduction::Mean).forward(&moved, &labels).item())
            };
            let numeric = (at(1e-2) - at(-1e-2)) / 2e-2;
            let analytic = f64::from(grad.to_vec()[i]);
            assert!(
                (analytic - numeric).abs() < 1e-3,
                "{i}: {analytic} vs {numeric}"
            );
        }
    }

    #[test]
    fn unit_weights_agree_with_the_fused_kernel() {
        let (x, mut labels) = logits();
        labels[2] = 1;
        let labels = Labels::new(&labels, &Cpu);
        for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let fused = CrossEntropyLoss::new(reduction).with_label_smoothing(0.2);
            let weighted = fused.clone().with_weight(vec![1.0; 3]);
            let (a, ga) = fused.value_and_grad(&x, &labels);
            let (b, gb) = weighted.value_and_grad(&x, &labels);
            crate::ops::assert_close(&b.to_vec(), &a.to_vec());
            crate::ops::assert_close(&gb.to_vec(), &ga.to_vec());
        }
    }

    #[test]
    fn a_weight_per_class_is_checked() {
        let (x, labels) = logits();
        let loss = CrossEntropyLoss::default().with_weight(vec![1.0; 2]);
        let error = loss
            .try_forward(&x, &Labels::new(&labels[..2], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cross_entropy: invalid weight: expected one weight per class, 3, found 2"
        );
    }

    #[test]
    fn a_batch_of_ignored_samples_has_a_nan_mean_and_no_gradient() {
        let (x, _) = logits();
        let labels = Labels::new(&[9; 4], &Cpu);
        let loss = CrossEntropyLoss::default().with_ignore_index(9);
        let (value, grad) = loss.value_and_grad(&x, &labels);
        assert!(value.item().is_nan(), "0 / 0, as in PyTorch");
        assert!(
            grad.to_vec().iter().all(|&g| g == 0.0),
            "{:?}",
            grad.to_vec()
        );
    }
}
