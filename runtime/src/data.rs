//! Data sets in memory: samples with a class label each, a seeded train/test split, shuffled
//! mini-batches on a device, and accuracy.
//!
//! ```
//! use declnet_runtime::data::{Dataset, accuracy};
//! use declnet_runtime::rng::seeded;
//! use declnet_runtime::{Cpu, Tensor};
//!
//! // Ten samples of shape [2]; the label is the sample's index mod 3.
//! let data: Vec<f32> = (0..20).map(|v| v as f32).collect();
//! let set = Dataset::new(data, [2], (0..10).map(|i| i % 3).collect())?;
//! let (train, test) = set.split(0.2, &mut seeded(0));
//! assert_eq!((train.len(), test.len()), (8, 2));
//! let rng = &mut seeded(1);
//! let batches: Vec<_> = train.batches(3, &Cpu, Some(rng), false).collect::<Result<_, _>>()?;
//! assert_eq!(batches.len(), 3); // 3 + 3 + 2: the last, partial batch is kept
//! assert_eq!(batches[2].0.dims(), &[2, 2]);
//! let logits = Tensor::from_vec(vec![0.1, 0.9, 0.0, 2.0, 1.0, 0.0], [2, 3], &Cpu);
//! assert_eq!(accuracy(&logits, &[1, 2])?, 0.5);
//! # Ok::<(), declnet_runtime::Error>(())
//! ```

use rand::Rng;
use rand::seq::SliceRandom;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::losses::Labels;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Samples of one shape, each with a class label, held on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    data: Vec<f32>,
    sample: Shape,
    labels: Vec<usize>,
}

impl Dataset {
    /// `labels.len()` samples of shape `sample`, stored one after another in `data`.
    ///
    /// # Errors
    /// [`Error::Usage`] when `data` does not hold one sample per label.
    pub fn new(data: Vec<f32>, sample: impl Into<Shape>, labels: Vec<usize>) -> Result<Self> {
        let sample = sample.into();
        if Some(data.len()) != sample.numel().checked_mul(labels.len()) {
            return Err(Error::Usage(format!(
                "dataset: {} labels need {} values of samples of shape {sample}, found {}",
                labels.len(),
                sample.numel() * labels.len(),
                data.len()
            )));
        }
        Ok(Self {
            data,
            sample,
            labels,
        })
    }

    /// The samples of `inputs`, whose first dim counts them, with `labels`.
    ///
    /// # Errors
    /// [`Error::Usage`] when `inputs` has no dim or its count differs from the labels';
    /// a device error copying `inputs` to the host.
    pub fn from_tensor<B: Backend>(inputs: &Tensor<B>, labels: Vec<usize>) -> Result<Self> {
        let Some((&count, sample)) = inputs.dims().split_first() else {
            return Err(Error::Usage(
                "dataset: the inputs need a first dim counting the samples".to_owned(),
            ));
        };
        if count != labels.len() {
            return Err(Error::Usage(format!(
                "dataset: the inputs {} hold {count} samples, but {} labels were given",
                inputs.shape(),
                labels.len()
            )));
        }
        Self::new(inputs.try_to_vec()?, sample, labels)
    }

    /// The number of samples.
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Each sample's label.
    #[must_use]
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// The samples at `indices`, in that order.
    fn select(&self, indices: &[usize]) -> Self {
        let size = self.sample.numel();
        let mut data = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            data.extend_from_slice(&self.data[i * size..(i + 1) * size]);
        }
        Self {
            data,
            sample: self.sample.clone(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// A shuffled split: `test_fraction` of the samples (rounded) for testing, the rest for
    /// training, like `sklearn.model_selection.train_test_split` with a seed.
    #[must_use]
    pub fn split<R: Rng + ?Sized>(&self, test_fraction: f32, rng: &mut R) -> (Self, Self) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(rng);
        #[allow(clippy::cast_sign_loss, reason = "the fraction is clamped to [0, 1]")]
        let test =
            ((self.len() as f32 * test_fraction.clamp(0.0, 1.0)).round() as usize).min(self.len());
        let (test, train) = order.split_at(test);
        (self.select(train), self.select(test))
    }

    /// This rank's share of the samples for data-parallel training, like PyTorch's
    /// `DistributedSampler`: samples `rank`, `rank + world`, `rank + 2 * world`, .., after
    /// padding the set with its first samples to a multiple of `world`, so every rank gets
    /// the same number of samples (and of batches: a rank with one batch more would wait for
    /// the others forever).
    ///
    /// # Errors
    /// [`Error::Usage`] when `rank` is not below `world`, or the set is empty.
    pub fn shard(&self, rank: usize, world: usize) -> Result<Self> {
        if rank >= world || self.is_empty() {
            return Err(Error::Usage(format!(
                "dataset: cannot take shard {rank} of {world} of {} samples",
                self.len()
            )));
        }
        let padded = self.len().div_ceil(world) * world;
        let indices: Vec<usize> = (rank..padded)
            .step_by(world)
            .map(|i| i % self.len())
            .collect();
        Ok(self.select(&indices))
    }

    /// Mini-batches of `size` samples on `device`, in order or shuffled by `rng` (a new order
    /// each call, like a `DataLoader` with `shuffle=True`); the last, partial batch is kept
    /// unless `drop_last`. Each batch is `[size, ..sample]` with its labels.
    pub fn batches<'a, B: Backend, R: Rng + ?Sized>(
        &'a self,
        size: usize,
        device: &'a B,
        rng: Option<&mut R>,
        drop_last: bool,
    ) -> impl Iterator<Item = Result<(Tensor<B>, Labels<B>)>> + 'a {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if let Some(rng) = rng {
            order.shuffle(rng);
        }
        let size = size.max(1);
        let count = if drop_last {
            self.len() / size
        } else {
            self.len().div_ceil(size)
        };
        (0..count).map(move |batch| {
            let indices = &order[batch * size..((batch + 1) * size).min(self.len())];
            let chosen = self.select(indices);
            let mut dims = vec![indices.len()];
            dims.extend_from_slice(self.sample.dims());
            let inputs = Tensor::try_from_vec(chosen.data, dims, device)?;
            Ok((inputs, Labels::try_new(&chosen.labels, device)?))
        })
    }
}

/// The fraction of rows of `logits` (`[batch, classes]`) whose largest value is at the row's
/// label; the first largest wins a tie, as `argmax` does. Copies the logits to the host.
///
/// # Errors
/// [`Error::Rank`] when `logits` is not 2-D, [`Error::LabelCount`] when the counts differ.
pub fn accuracy<B: Backend>(logits: &Tensor<B>, labels: &[usize]) -> Result<f32> {
    let &[rows, classes] = logits.dims() else {
        return Err(Error::Rank {
            op: "accuracy",
            expected: 2,
            found: logits.shape().clone(),
        });
    };
    if rows != labels.len() {
        return Err(Error::LabelCount {
            op: "accuracy",
            input: logits.shape().clone(),
            labels: labels.len(),
        });
    }
    let values = logits.try_to_vec()?;
    let correct = values
        .chunks_exact(classes.max(1))
        .zip(labels)
        .filter(|(row, label)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                });
            best.0 == **label
        })
        .count();
    Ok(correct as f32 / rows.max(1) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use crate::rng::seeded;

    #[test]
    fn mismatched_counts_are_errors() {
        assert!(Dataset::new(vec![0.0; 5], [2], vec![0, 1]).is_err());
        let inputs = Tensor::zeros([3, 2], &Cpu);
        let error = Dataset::from_tensor(&inputs, vec![0, 1]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: dataset: the inputs [3, 2] hold 3 samples, but 2 labels were given"
        );
        assert!(accuracy(&Tensor::zeros([2, 3], &Cpu), &[0]).is_err());
    }

    #[test]
    fn shards_are_equal_interleaved_and_padded_from_the_start() {
        let set = Dataset::new((0..5).map(|v| v as f32).collect(), [], (0..5).collect()).unwrap();
        let labels = |rank| set.shard(rank, 3).unwrap().labels().to_vec();
        assert_eq!([labels(0), labels(1), labels(2)], [[0, 3], [1, 4], [2, 0]]);
        assert_eq!(set.shard(0, 1).unwrap(), set);
        assert!(set.shard(3, 3).is_err());
    }

    #[test]
    fn batches_cover_every_sample_once_and_keep_labels_with_samples() {
        let data: Vec<f32> = (0..7).map(|v| v as f32).collect();
        let set = Dataset::new(data, [], (0..7).collect()).unwrap();
        let mut seen = Vec::new();
        for batch in set.batches(3, &Cpu, Some(&mut seeded(4)), false) {
            let (x, labels) = batch.unwrap();
            let values = x.to_vec();
            let expected: Vec<f32> = labels.as_slice().iter().map(|&l| l as f32).collect();
            assert_eq!(values, expected);
            seen.extend(labels.as_slice().to_vec());
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        let dropped: Vec<_> = set
            .batches::<Cpu, rand::rngs::StdRng>(3, &Cpu, None, true)
            .collect();
        assert_eq!(dropped.len(), 2);
    }
}
