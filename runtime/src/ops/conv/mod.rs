//! The unfolding a 2-D convolution is computed through: `im2col` lays out every window of
//! `[N, C, H, W]` as a column, so the convolution is a matrix product per sample and group
//! (`layers::Conv2d`), and `col2im` folds column gradients back, each input element gathering
//! the entries it was copied to. Where a backend has a faster algorithm for a 3x3
//! convolution (Winograd's, on the CPU), [`ConvKernel::winograd`] and
//! [`ConvKernel::winograd_weight_gradient`] compute it and its weight gradient directly.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod depthwise;
mod winograd;

use crate::backend::Memory;
use crate::error::{Error, Result};
use crate::shape::Shape;

/// The windows of a 2-D convolution over a `[N, C, H, W]` input, PyTorch's
/// (`Conv2d(stride, padding, dilation)`), with square kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// `N`.
    pub batch: usize,
    /// `C`, all groups together.
    pub channels: usize,
    /// `H`.
    pub height: usize,
    /// `W`.
    pub width: usize,
    /// The kernel's height and width.
    pub kernel: usize,
    /// The step between windows.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// The spacing of the kernel's taps.
    pub dilation: usize,
    /// The output's height.
    pub out_height: usize,
    /// The output's width.
    pub out_width: usize,
}

impl ConvGeometry {
    /// The windows of a `kernel x kernel` convolution over an input of `shape`.
    ///
    /// # Errors
    /// [`Error::Rank`] when `shape` is not 4-D, [`Error::Usage`] when the kernel (dilated) is
    /// larger than the padded input or the stride or dilation is 0.
    pub fn new(
        op: &'static str,
        shape: &Shape,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        let &[batch, channels, height, width] = shape.dims() else {
            return Err(Error::Rank {
                op,
                expected: 4,
                found: shape.clone(),
            });
        };
        let out = |size: usize| {
            let span = dilation * (kernel.max(1) - 1) + 1;
            let padded = size + 2 * padding;
            if kernel == 0 || stride == 0 || dilation == 0 || span > padded {
                Err(Error::Usage(format!(
                    "{op} of {shape}: a kernel of {kernel} (dilation {dilation}, stride \
                     {stride}) does not fit {size} + 2*{padding} = {padded}"
                )))
            } else {
                Ok((padded - span) / stride + 1)
            }
        };
        Ok(Self {
            batch,
            channels,
            height,
            width,
            kernel,
            stride,
            padding,
            dilation,
            out_height: out(height)?,
            out_width: out(width)?,
        })
    }

    /// Rows of one sample's columns: `C * K * K`.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Elements of the samples' columns: `N * C K K * OH OW`.
    #[must_use]
    pub fn columns_len(&self) -> usize {
        self.batch * self.rows() * self.positions()
    }

    /// Elements of one input sample: `C * H * W`.
    #[must_use]
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The samples `first..first + len` of `x`, as the range of their elements, once checked
    /// to lie inside a buffer of `capacity` elements holding this geometry's samples.
    pub(crate) fn samples(
        &self,
        op: &'static str,
        first: usize,
        capacity: usize,
    ) -> Result<std::ops::Range<usize>> {
        let len = self.batch * self.sample_len();
        let start = first.saturating_mul(self.sample_len());
        let end = crate::backend::check_fits(op, len, start, capacity)?;
        Ok(start..end)
    }

    /// Columns of one sample: `OH * OW`.
    #[must_use]
    pub fn positions(&self) -> usize {
        self.out_height * self.out_width
    }

    /// Whether the windows are single positions, one per output (a 1x1 kernel, stride 1, no
    /// padding): the input is its own columns.
    #[must_use]
    pub fn is_pointwise(&self) -> bool {
        (self.kernel, self.stride, self.padding) == (1, 1, 0)
    }
}

/// The 3x3 filters [`ConvKernel::winograd`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filters {
    /// How many: the output's channels.
    pub out_channels: usize,
    /// How the weight holds them.
    pub read: FilterRead,
}

/// How a weight holds the filters of a convolution from `C` channels to `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterRead {
    /// `[out, C, 3, 3]`: a `Conv2d` weight, as its forward pass reads it.
    AsStored,
    /// `[C, out, 3, 3]`, each filter flipped in both dims: the stride-1 convolution of a
    /// `Conv2d`'s output gradient (padded by `2 - padding`) that gives its input gradient.
    TransposedFlipped,
}

/// The unfolding kernels, and direct convolutions (3x3, depthwise) where the backend has them.
pub trait ConvKernel: Memory {
    /// `cols[n, (c K + ky) K + kx, oy OW + ox]` = `x[first + n, c, oy s - p + ky d, ox s - p +
    /// kx d]`, 0 in the padding, for `x_from = (x, first)`: `cols` is `[N, C K K, OH OW]`, the
    /// `N = geometry.batch` samples of `x` from sample `first` on. Writes every entry, so
    /// `cols` may come uninitialised.
    ///
    /// # Errors
    /// When `x` holds fewer samples or `cols` another length, or the kernel fails.
    fn im2col(
        &self,
        geometry: &ConvGeometry,
        x_from: (&Self::Storage, usize),
        cols: &mut Self::Storage,
    ) -> Result<()>;

    /// The gradient of [`Self::im2col`], for `x_from = (x, first)`: each element of samples
    /// `first..first + N` of `x` (`[.., C, H, W]`) is the sum of the entries of `cols` it was
    /// copied to, in kernel-tap order. Writes every element of those samples; may zero the
    /// entries of `cols` that no element was copied to (the padding).
    ///
    /// # Errors
    /// When `x` holds fewer samples or `cols` another length, or the kernel fails.
    fn col2im(
        &self,
        geometry: &ConvGeometry,
        cols: &mut Self::Storage,
        x_from: (&mut Self::Storage, usize),
    ) -> Result<()>;

    /// Whether [`Self::winograd`] computes the convolution of windows `g` into `out_channels`
    /// channels faster than `im2col` and matrix products: the backend's choice, false for
    /// anything but 3x3 kernels with stride and dilation 1. The default, for a backend without
    /// Winograd kernels (CUDA convolves through `im2col` and cuBLAS): never.
    fn prefers_winograd(&self, g: &ConvGeometry, out_channels: usize) -> bool {
        let _ = (g, out_channels);
        false
    }

    /// `y = conv(x) + bias` (`y` `[N, out, OH, OW]`) for a 3x3 kernel with stride and dilation
    /// 1, by Winograd's F(2x2, 3x3): the same sums as the definition's up to rounding. Writes
    /// every element.
    ///
    /// # Errors
    /// [`Error::Usage`] when `g` has another kernel, stride or dilation, when a buffer does not
    /// match it, or when the backend has no such kernel (the default).
    fn winograd(
        &self,
        g: &ConvGeometry,
        filters: Filters,
        weight: &Self::Storage,
        bias: Option<&Self::Storage>,
        x: &Self::Storage,
        y: &mut Self::Storage,
    ) -> Result<()> {
        let _ = (filters, weight, bias, x, y);
        Err(no_winograd(self, g))
    }

    /// `grad_w = Σ_n dY[n] ⋆ x[n] + beta grad_w` (`grad_w` `[out, C, 3, 3]`, `beta` 0 or 1):
    /// the weight gradient of the convolution of windows `g` into `out_channels` channels
    /// (3x3, stride and dilation 1) for the input `x` and the output gradient `grad_out`, by
    /// Winograd's F(2x2, 3x3): the same sums as the definition's up to rounding.
    ///
    /// # Errors
    /// As [`Self::winograd`].
    fn winograd_weight_gradient(
        &self,
        g: &ConvGeometry,
        out_channels: usize,
        x: &Self::Storage,
        grad_out: &Self::Storage,
        grad_w: &mut Self::Storage,
        beta: f32,
    ) -> Result<()> {
        let _ = (out_channels, x, grad_out, grad_w, beta);
        Err(no_winograd(self, g))
    }

    /// Whether [`Self::depthwise`] computes the convolution of windows `g` in `groups` groups
    /// into `out_channels` channels: the backend's choice, false for anything but one group
    /// per input and output channel. The default, for a backend without depthwise kernels
    /// (CUDA convolves through `im2col` and cuBLAS): never.
    fn prefers_depthwise(&self, g: &ConvGeometry, groups: usize, out_channels: usize) -> bool {
        let _ = (g, groups, out_channels);
        false
    }

    /// `y = conv(x) + bias` (`y` `[N, C, OH, OW]`) of a depthwise convolution, each channel
    /// with its own filter (`weight` `[C, 1, K, K]`), any kernel, stride, padding and
    /// dilation. Writes every element.
    ///
    /// # Errors
    /// [`Error::Usage`] when a buffer does not match `g`, or when the backend has no such
    /// kernel (the default).
    fn depthwise(
        &self,
        g: &ConvGeometry,
        weight: &Self::Storage,
        bias: Option<&Self::Storage>,
        x: &Self::Storage,
        y: &mut Self::Storage,
    ) -> Result<()> {
        let _ = (weight, bias, x, y);
        Err(no_depthwise(self, g))
    }

    /// The input gradient `grad_x` (`[N, C, H, W]`, every element written) of
    /// [`Self::depthwise`] for the output gradient `grad_out`.
    ///
    /// # Errors
    /// As [`Self::depthwise`].
    fn depthwise_input_gradient(
        &self,
        g: &ConvGeometry,
        weight: &Self::Storage,
        grad_out: &Self::Storage,
        grad_x: &mut Self::Storage,
    ) -> Result<()> {
        let _ = (weight, grad_out, grad_x);
        Err(no_depthwise(self, g))
    }

    /// `grad_w = Σ_n dY[n] ⋆ x[n] + beta grad_w` (`grad_w` `[C, 1, K, K]`, `beta` 0 or 1):
    /// the weight gradient of [`Self::depthwise`] for the input `x` and the output gradient
    /// `grad_out`.
    ///
    /// # Errors
    /// As [`Self::depthwise`].
    fn depthwise_weight_gradient(
        &self,
        g: &ConvGeometry,
        x: &Self::Storage,
        grad_out: &Self::Storage,
        grad_w: &mut Self::Storage,
        beta: f32,
    ) -> Result<()> {
        let _ = (x, grad_out, grad_w, beta);
        Err(no_depthwise(self, g))
    }
}

/// What the depthwise methods of a backend without them return.
fn no_depthwise(backend: &impl Memory, g: &ConvGeometry) -> Error {
    Error::Usage(format!(
        "depthwise {g:?}: the {} backend has no depthwise kernel; it convolves through im2col",
        backend.name()
    ))
}

/// What the Winograd methods of a backend without them return.
fn no_winograd(backend: &impl Memory, g: &ConvGeometry) -> Error {
    Error::Usage(format!(
        "winograd {g:?}: the {} backend has no Winograd kernel; it convolves through im2col",
        backend.name()
    ))
}

#[cfg(not(feature = "cuda"))]
impl ConvKernel for crate::Cuda {
    fn im2col(
        &self,
        _: &ConvGeometry,
        _: (&Self::Storage, usize),
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn col2im(
        &self,
        _: &ConvGeometry,
        _: &mut Self::Storage,
        _: (&mut Self::Storage, usize),
    ) -> Result<()> {
        self.unreachable()
    }
}
