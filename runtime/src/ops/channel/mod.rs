//! Per-channel reductions and affine maps over tensors laid out `[N, C, ...]` (channels on
//! dim 1, like PyTorch's `BatchNorm`): the kernels batch normalisation is made of.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ops::unary::{UnaryKernel, UnaryOp};
use crate::shape::Shape;
use crate::tensor::{Tensor, check_vector};

/// A tensor seen as `[outer, channels, inner]`: dim 0, dim 1, and the product of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLayout {
    /// The batch size, dim 0.
    pub outer: usize,
    /// The channels, dim 1.
    pub channels: usize,
    /// The elements of one channel of one sample (`H * W` for images, 1 for `[N, C]`).
    pub inner: usize,
}

impl ChannelLayout {
    /// The layout of `shape`, which needs at least 2 dims.
    ///
    /// # Errors
    /// [`Error::Rank`] for fewer dims.
    pub fn of(op: &'static str, shape: &Shape) -> Result<Self> {
        match shape.dims() {
            [outer, channels, rest @ ..] => Ok(Self {
                outer: *outer,
                channels: *channels,
                inner: rest.iter().product(),
            }),
            _ => Err(Error::Rank {
                op,
                expected: 2,
                found: shape.clone(),
            }),
        }
    }

    /// How many elements each channel holds across the batch: `outer * inner`.
    #[must_use]
    pub const fn per_channel(&self) -> usize {
        self.outer * self.inner
    }

    /// The number of elements.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }

    /// Whether there are no elements.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The kernels of per-channel statistics and maps. Channel vectors hold `channels` elements;
/// sums accumulate in `f64`.
pub trait ChannelKernel: UnaryKernel {
    /// `out[c]` = the sum of channel `c` of `x`, or with `centered` the sum of
    /// `a * (x - mean[c])` over it, where `a` is `x - mean[c]` too when not given (so the sum
    /// of squared deviations).
    ///
    /// # Errors
    /// When the kernel fails.
    fn channel_sum(
        &self,
        layout: &ChannelLayout,
        x: &Self::Storage,
        centered: Option<(Option<&Self::Storage>, &Self::Storage)>,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `sum[c]` = the sum of channel `c` of `a`, and `covariance[c]` = the sum of
    /// `a * (x - mean[c])` over it: batch normalisation's two backward sums, each as
    /// [`ChannelKernel::channel_sum`] gives it. The default makes two passes; the CPU's one.
    ///
    /// # Errors
    /// When the kernel fails.
    fn channel_sum_and_covariance(
        &self,
        layout: &ChannelLayout,
        x: &Self::Storage,
        a: &Self::Storage,
        mean: &Self::Storage,
        sum: &mut Self::Storage,
        covariance: &mut Self::Storage,
    ) -> Result<()> {
        self.channel_sum(layout, a, None, sum)?;
        self.channel_sum(layout, x, Some((Some(a), mean)), covariance)
    }

    /// `mean[c]` and `variance[c]`, the mean and the mean squared deviation (biased variance)
    /// of channel `c` of `x`. The default makes two passes, the second about the first's
    /// mean; the CPU's one.
    ///
    /// # Errors
    /// When the kernel fails.
    fn channel_mean_and_variance(
        &self,
        layout: &ChannelLayout,
        x: &Self::Storage,
        mean: &mut Self::Storage,
        variance: &mut Self::Storage,
    ) -> Result<()> {
        #[allow(clippy::cast_precision_loss, reason = "a count")]
        let per = UnaryOp::MulScalar(1.0 / layout.per_channel() as f32);
        self.channel_sum(layout, x, None, mean)?;
        self.unary_assign(per, mean)?;
        self.channel_sum(layout, x, Some((None, mean)), variance)?;
        self.unary_assign(per, variance)
    }

    /// `out = x * scale[c] + shift[c]`, plus `(y - center[c]) * coef[c]` when `extra` is
    /// `(y, center, coef)`. Writes every element, so `out` may come uninitialised.
    ///
    /// # Errors
    /// When the kernel fails.
    fn channel_affine(
        &self,
        layout: &ChannelLayout,
        x: &Self::Storage,
        scale: &Self::Storage,
        shift: &Self::Storage,
        extra: Option<(&Self::Storage, &Self::Storage, &Self::Storage)>,
        out: &mut Self::Storage,
    ) -> Result<()>;
}

impl<B: Backend> Tensor<B> {
    /// The sum of each channel (dim 1) over every other dim: `x.sum((0, 2, 3))` for images.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec((0..8).map(|v| v as f32).collect(), [2, 2, 2], &Cpu);
    /// assert_eq!(x.try_channel_sum()?.to_vec(), [0.0 + 1.0 + 4.0 + 5.0, 2.0 + 3.0 + 6.0 + 7.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Rank`] for a tensor of fewer than 2 dims.
    pub fn try_channel_sum(&self) -> Result<Self> {
        self.channel_sum_with("channel_sum", None)
    }

    /// The sum over each channel of `a * (self - mean[c])`, or of `(self - mean[c])^2` when
    /// `a` is `None`: a channel's squared deviations, or its covariance with `a`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `mean` is not `[C]` or `a` not `self`'s shape; [`Error::Rank`]
    /// as [`Tensor::try_channel_sum`].
    pub fn try_channel_centered_sum(&self, a: Option<&Self>, mean: &Self) -> Result<Self> {
        const OP: &str = "channel_centered_sum";
        self.centered_layout(OP, a, mean)?;
        self.channel_sum_with(OP, Some((a, mean)))
    }

    /// The sum of each channel of `a`, and the sum over it of `a * (self - mean[c])`: what
    /// `a.try_channel_sum()` and `self.try_channel_centered_sum(Some(a), mean)` give, in one
    /// pass on the CPU.
    ///
    /// # Errors
    /// As [`Tensor::try_channel_centered_sum`].
    pub fn try_channel_sum_and_covariance(&self, a: &Self, mean: &Self) -> Result<(Self, Self)> {
        let layout = self.centered_layout("channel_sum_and_covariance", Some(a), mean)?;
        let mut sum = Self::try_zeros([layout.channels], &self.device)?;
        let mut covariance = Self::try_zeros([layout.channels], &self.device)?;
        self.device.channel_sum_and_covariance(
            &layout,
            &self.storage,
            &a.storage,
            &mean.storage,
            &mut sum.storage,
            &mut covariance.storage,
        )?;
        Ok((sum, covariance))
    }

    /// The mean and the biased variance of each channel (dim 1) over every other dim: batch
    /// normalisation's statistics, in one pass on the CPU.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0], [2, 2, 2], &Cpu);
    /// let (mean, variance) = x.try_channel_mean_and_variance()?;
    /// assert_eq!(mean.to_vec(), [2.5, 25.0]);
    /// assert_eq!(variance.to_vec(), [1.25, 125.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Rank`] for a tensor of fewer than 2 dims.
    pub fn try_channel_mean_and_variance(&self) -> Result<(Self, Self)> {
        let layout = ChannelLayout::of("channel_mean_and_variance", &self.shape)?;
        let mut mean = Self::try_zeros([layout.channels], &self.device)?;
        let mut variance = Self::try_zeros([layout.channels], &self.device)?;
        self.device.channel_mean_and_variance(
            &layout,
            &self.storage,
            &mut mean.storage,
            &mut variance.storage,
        )?;
        Ok((mean, variance))
    }

    /// The layout of `self` for a sum about `mean` (weighted by `a`), after checking that
    /// `mean` is `[C]` and `a` has `self`'s shape and device.
    fn centered_layout(
        &self,
        op: &'static str,
        a: Option<&Self>,
        mean: &Self,
    ) -> Result<ChannelLayout> {
        let layout = ChannelLayout::of(op, &self.shape)?;
        check_vector(op, mean, layout.channels, self)?;
        if let Some(a) = a {
            self.check_same_device(op, a)?;
            self.check_same_shape(op, a)?;
        }
        Ok(layout)
    }

    fn channel_sum_with(
        &self,
        op: &'static str,
        centered: Option<(Option<&Self>, &Self)>,
    ) -> Result<Self> {
        let layout = ChannelLayout::of(op, &self.shape)?;
        let mut out = Self::try_zeros([layout.channels], &self.device)?;
        let centered = centered.map(|(a, mean)| (a.map(|a| &a.storage), &mean.storage));
        self.device
            .channel_sum(&layout, &self.storage, centered, &mut out.storage)?;
        Ok(out)
    }

    /// `self * scale[c] + shift[c]` (plus `(y - center[c]) * coef[c]` when `extra` is
    /// `(y, center, coef)`), with `c` the channel (dim 1): batch normalisation's map and its
    /// gradient.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::ones([1, 2, 2], &Cpu);
    /// let scale = Tensor::from_vec(vec![2.0, 3.0], [2], &Cpu);
    /// let shift = Tensor::from_vec(vec![0.5, -1.0], [2], &Cpu);
    /// assert_eq!(x.try_channel_affine(&scale, &shift, None)?.to_vec(), [2.5, 2.5, 2.0, 2.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Shape`] when a channel vector is not `[C]` or `y` not `self`'s shape;
    /// [`Error::Rank`] for a tensor of fewer than 2 dims.
    pub fn try_channel_affine(
        &self,
        scale: &Self,
        shift: &Self,
        extra: Option<(&Self, &Self, &Self)>,
    ) -> Result<Self> {
        const OP: &str = "channel_affine";
        let layout = ChannelLayout::of(OP, &self.shape)?;
        let vectors = extra.map(|(_, center, coef)| [center, coef]);
        for vector in [scale, shift]
            .into_iter()
            .chain(vectors.into_iter().flatten())
        {
            check_vector(OP, vector, layout.channels, self)?;
        }
        if let Some((y, _, _)) = extra {
            self.check_same_device(OP, y)?;
            self.check_same_shape(OP, y)?;
        }
        // Every kernel writes every element.
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device.channel_affine(
            &layout,
            &self.storage,
            &scale.storage,
            &shift.storage,
            extra.map(|(y, center, coef)| (&y.storage, &center.storage, &coef.storage)),
            &mut out.storage,
        )?;
        Ok(out)
    }
}

#[cfg(not(feature = "cuda"))]
impl ChannelKernel for crate::Cuda {
    fn channel_sum(
        &self,
        _: &ChannelLayout,
        _: &Self::Storage,
        _: Option<(Option<&Self::Storage>, &Self::Storage)>,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn channel_affine(
        &self,
        _: &ChannelLayout,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &Self::Storage,
        _: Option<(&Self::Storage, &Self::Storage, &Self::Storage)>,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn empty_channels_batches_and_planes_give_empty_or_zero_sums() {
        for dims in [[2, 0, 3], [0, 4, 3], [2, 4, 0]] {
            let x = Tensor::<Cpu>::zeros(dims, &Cpu);
            let mean = Tensor::zeros([dims[1]], &Cpu);
            let zeros = vec![0.0; dims[1]];
            assert_eq!(x.try_channel_sum().unwrap().to_vec(), zeros);
            let (sum, covariance) = x.try_channel_sum_and_covariance(&x, &mean).unwrap();
            assert_eq!((sum.to_vec(), covariance.to_vec()), (zeros.clone(), zeros));
            let (mean_found, variance) = x.try_channel_mean_and_variance().unwrap();
            assert_eq!(mean_found.dims(), &[dims[1]]);
            assert_eq!(variance.dims(), &[dims[1]]);
            let y = x.try_channel_affine(&mean, &mean, None).unwrap();
            assert_eq!(y.dims(), &dims);
        }
    }

    #[test]
    fn sums_and_maps_follow_the_channel_dim() {
        let x = Tensor::from_vec((0..12).map(|v| v as f32).collect(), [2, 3, 2], &Cpu);
        // Channel c holds x[n, c, :] for both n.
        assert_eq!(x.try_channel_sum().unwrap().to_vec(), [14.0, 22.0, 30.0]);
        let mean = Tensor::from_vec(vec![3.5, 5.5, 7.5], [3], &Cpu);
        // Deviations of channel 0 are -3.5, -2.5, 2.5, 3.5.
        let squares = x.try_channel_centered_sum(None, &mean).unwrap().to_vec();
        assert_eq!(squares, [37.0; 3]);
        let ones = Tensor::ones([2, 3, 2], &Cpu);
        let covariance = x.try_channel_centered_sum(Some(&ones), &mean).unwrap();
        assert_eq!(covariance.to_vec(), [0.0; 3]);

        let scale = Tensor::from_vec(vec![1.0, 0.0, -1.0], [3], &Cpu);
        let shift = Tensor::from_vec(vec![0.0, 1.0, 2.0], [3], &Cpu);
        let center = Tensor::from_vec(vec![0.0, 0.0, 0.5], [3], &Cpu);
        let coef = Tensor::from_vec(vec![0.0, 0.0, 10.0], [3], &Cpu);
        let y = x
            .try_channel_affine(&scale, &shift, Some((&ones, &center, &coef)))
            .unwrap();
        assert_eq!(
            y.to_vec(),
            [0.0, 1.0, 1.0, 1.0, 3.0, 2.0, 6.0, 7.0, 1.0, 1.0, -3.0, -4.0]
        );
    }

    #[test]
    fn misshaped_channel_vectors_are_errors() {
        let x = Tensor::zeros([2, 3, 4, 4], &Cpu);
        let error = x
            .try_channel_affine(&Tensor::zeros([4], &Cpu), &Tensor::zeros([3], &Cpu), None)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "channel_affine: expected shape [3], found [4]"
        );
        assert!(Tensor::zeros([5], &Cpu).try_channel_sum().is_err());
    }
}
