//! [`Labels`]: class indices on a device, the target of [`CrossEntropyLoss`] and [`NllLoss`].
//!
//! [`CrossEntropyLoss`]: super::CrossEntropyLoss
//! [`NllLoss`]: super::NllLoss

use std::fmt;

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result, or_panic};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The most classes a label can index: labels travel to the device as `f32`, exact up to 2^24.
pub const MAX_CLASSES: usize = 1 << 24;

/// Class indices, one per sample, like the `int64` target tensor of `torch.nn.CrossEntropyLoss`.
///
/// They are copied to the device once, when made (or in place with
/// [`try_copy_from_slice`](Self::try_copy_from_slice)), so a loss reads them there without a
/// transfer per call, and a captured [`StepGraph`](crate::StepGraph) can hold them. A host copy
/// is kept too, so a label out of range for a prediction is an error before any kernel runs.
///
/// ```
/// use declnet_runtime::{Cpu, Tensor};
/// use declnet_runtime::losses::{CrossEntropyLoss, Labels, Loss, Reduction};
/// let logits = Tensor::from_vec(vec![2.0, 0.0, 0.0, 2.0], [2, 2], &Cpu);
/// let labels = Labels::new(&[0, 1], &Cpu);
/// let loss = CrossEntropyLoss::new(Reduction::Mean).forward(&logits, &labels);
/// assert!((loss.item() - 0.126_928_02).abs() < 1e-7);
/// ```
pub struct Labels<B: Backend = Cpu> {
    host: Vec<usize>,
    /// The labels as the `f32`s the kernels read, shape `[len]`.
    pub(crate) encoded: Tensor<B>,
}

impl<B: Backend> Labels<B> {
    /// `labels` on `device`.
    #[track_caller]
    #[must_use]
    pub fn new(labels: &[usize], device: &B) -> Self {
        or_panic(Self::try_new(labels, device))
    }

    /// `labels` on `device`.
    ///
    /// # Errors
    /// [`Error::LabelOutOfRange`] for a label of [`MAX_CLASSES`] or more; an error of the
    /// device when it cannot allocate or copy.
    pub fn try_new(labels: &[usize], device: &B) -> Result<Self> {
        let encoded = Tensor::try_from_vec(encode("Labels::new", labels)?, [labels.len()], device)?;
        Ok(Self {
            host: labels.to_vec(),
            encoded,
        })
    }

    /// Replaces the labels with as many new ones, in place on the device (the buffer stays
    /// where it is, so a captured [`StepGraph`](crate::StepGraph) reads the new labels).
    ///
    /// # Errors
    /// [`Error::Length`] when `labels` has another length; [`Error::LabelOutOfRange`] as for
    /// [`try_new`](Self::try_new). The labels are unchanged then.
    pub fn try_copy_from_slice(&mut self, labels: &[usize]) -> Result<()> {
        const OP: &str = "Labels::copy_from_slice";
        if labels.len() != self.host.len() {
            return Err(Error::Length {
                op: OP,
                shape: Shape::from([self.host.len()]),
                len: labels.len(),
            });
        }
        self.encoded.try_copy_from_slice(&encode(OP, labels)?)?;
        self.host.copy_from_slice(labels);
        Ok(())
    }

    /// The number of labels.
    #[must_use]
    pub fn len(&self) -> usize {
        self.host.len()
    }

    /// Whether there are no labels.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// The labels, from the host copy.
    #[must_use]
    pub fn as_slice(&self) -> &[usize] {
        &self.host
    }

    /// The device the labels live on.
    #[must_use]
    pub fn device(&self) -> &B {
        self.encoded.device()
    }
}

/// `labels` as the `f32`s the kernels read.
fn encode(op: &'static str, labels: &[usize]) -> Result<Vec<f32>> {
    labels
        .iter()
        .enumerate()
        .map(|(index, &label)| {
            if label < MAX_CLASSES {
                Ok(label as f32)
            } else {
                Err(Error::LabelOutOfRange {
                    op,
                    index,
                    label,
                    classes: MAX_CLASSES,
                })
            }
        })
        .collect()
}

impl<B: Backend> fmt::Debug for Labels<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The device copy holds the same labels, as `f32`s.
        f.debug_struct("Labels")
            .field("labels", &self.host)
            .field("device", &self.device().name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_update_in_place_and_refuse_what_does_not_fit() {
        let mut labels = Labels::new(&[1, 0, 2], &Cpu);
        assert_eq!(labels.encoded.storage, [1.0, 0.0, 2.0]);
        labels.try_copy_from_slice(&[2, 2, 0]).unwrap();
        assert_eq!((labels.as_slice(), labels.len()), (&[2, 2, 0][..], 3));
        assert_eq!(labels.encoded.storage, [2.0, 2.0, 0.0]);
        let error = labels.try_copy_from_slice(&[1]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Labels::copy_from_slice: shape [3] holds 3 elements, but 1 were given"
        );
        let error = Labels::try_new(&[0, MAX_CLASSES], &Cpu).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Labels::new: label 16777216 at index 1 is out of range for 16777216 classes"
        );
        assert_eq!(
            labels.as_slice(),
            [2, 2, 0],
            "unchanged by the failed update"
        );
    }
}
