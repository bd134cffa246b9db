//! Dropout with a counter-based mask: element `i` is kept when a hash of `(seed, i)` clears the
//! drop probability, so the mask is a pure function of the seed. The backward pass applies the
//! same op with the same seed to the output gradient, and the CPU and CUDA kernels draw the
//! same mask; no mask is ever stored.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One dropout: which elements it drops and how it scales the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutMask {
    /// The seed the mask is hashed from.
    pub seed: u64,
    /// An element is dropped when the top 24 bits of its hash are below this: `p * 2^24`.
    pub threshold: u32,
    /// What kept elements are multiplied by, `1 / (1 - p)`.
    pub scale: f32,
}

/// The resolution of the drop probability: masks compare 24-bit hashes.
const LEVELS: f64 = (1u32 << 24) as f64;

impl DropoutMask {
    /// The mask of seed `seed` dropping each element with probability `p`, like
    /// `F.dropout(x, p)`.
    ///
    /// # Errors
    /// [`Error::Usage`] when `p` is not in `[0, 1]`.
    pub fn new(p: f32, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Usage(format!(
                "dropout probability has to be between 0 and 1, but got {p}"
            )));
        }
        // `p` is in [0, 1], so the threshold is in [0, 2^24].
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        let threshold = (f64::from(p) * LEVELS).round() as u32;
        Ok(Self {
            seed,
            threshold,
            scale: if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 },
        })
    }

    /// Whether element `index` is kept.
    #[must_use]
    #[inline(always)]
    pub fn keeps(&self, index: u64) -> bool {
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as u32 >= self.threshold
    }
}

/// The dropout kernel.
pub trait DropoutKernel: Memory {
    /// `out[i] = x[i] * mask.scale` where `mask` keeps element `i`, else 0.
    ///
    /// # Errors
    /// When the kernel fails.
    fn dropout(&self, mask: &DropoutMask, x: &Self::Storage, out: &mut Self::Storage)
    -> Result<()>;
}

impl<B: Backend> Tensor<B> {
    /// This tensor with `mask` applied: the dropped elements zeroed, the rest scaled. The
    /// gradient of a dropout is the same dropout of the output's gradient.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::ops::dropout::DropoutMask;
    /// use declnet_runtime::{Cpu, Tensor};
    /// let mask = DropoutMask::new(0.5, 7)?;
    /// let y = Tensor::ones([1000], &Cpu).try_dropout(&mask)?.to_vec();
    /// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    /// let kept = y.iter().filter(|&&v| v == 2.0).count();
    /// assert!((450..550).contains(&kept), "{kept}");
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// When the device fails.
    pub fn try_dropout(&self, mask: &DropoutMask) -> Result<Self> {
        let mut out = Self::try_zeros(self.shape.clone(), &self.device)?;
        self.device.dropout(mask, &self.storage, &mut out.storage)?;
        Ok(out)
    }
}

#[cfg(not(feature = "cuda"))]
impl DropoutKernel for crate::Cuda {
    fn dropout(&self, _: &DropoutMask, _: &Self::Storage, _: &mut Self::Storage) -> Result<()> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn masks_depend_on_the_seed_and_drop_about_p() {
        let x = Tensor::ones([10_000], &Cpu);
        let kept = |p: f32, seed| {
            let mask = DropoutMask::new(p, seed).unwrap();
            let y = x.try_dropout(&mask).unwrap().to_vec();
            assert!(y.iter().all(|&v| v == 0.0 || v == mask.scale), "{p}");
            y.iter().filter(|&&v| v != 0.0).count()
        };
        assert_eq!(kept(0.0, 1), 10_000);
        assert_eq!(kept(1.0, 1), 0);
        for p in [0.1, 0.5, 0.9] {
            let expected = (1.0 - p) * 10_000.0;
            let found = kept(p, 3) as f32;
            // Four standard deviations of a binomial count.
            let tolerance = 4.0 * (10_000.0 * p * (1.0 - p)).sqrt();
            assert!((found - expected).abs() < tolerance, "p {p}: {found}");
        }
        let a = x.try_dropout(&DropoutMask::new(0.5, 1).unwrap()).unwrap();
        let b = x.try_dropout(&DropoutMask::new(0.5, 2).unwrap()).unwrap();
        assert_ne!(a.to_vec(), b.to_vec());
    }

    #[test]
    fn probabilities_outside_zero_to_one_are_errors() {
        let error = DropoutMask::new(1.5, 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: dropout probability has to be between 0 and 1, but got 1.5"
        );
        assert!(DropoutMask::new(f32::NAN, 0).is_err());
    }
}
