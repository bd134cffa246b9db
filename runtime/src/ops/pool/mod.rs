//! 2-D max and average pooling over `[N, C, H, W]` (`F.max_pool2d`, `F.avg_pool2d`), and their
//! gradients: each input element gathers the gradients of the windows it contributed to.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::{Error, Result, or_panic};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Which reduction a pooling window computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The window's maximum (NaN if it holds one, the first maximum for the gradient), like
    /// `F.max_pool2d`; padding never wins.
    Max,
    /// The window's mean, like `F.avg_pool2d` with `count_include_pad=True`: the divisor is
    /// the kernel's area.
    Avg,
}

/// A pooling of square windows: kernel, stride and zero padding on each spatial side, like
/// PyTorch's (`ceil_mode=False`, no dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// The window's height and width.
    pub kernel: usize,
    /// The step between windows.
    pub stride: usize,
    /// Padding on each side of both spatial dims.
    pub padding: usize,
}

impl Pool2d {
    /// Max pooling, like `F.max_pool2d(x, kernel, stride, padding)`.
    #[must_use]
    pub const fn max(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kind: PoolKind::Max,
            kernel,
            stride,
            padding,
        }
    }

    /// Average pooling, like `F.avg_pool2d(x, kernel, stride, padding)`.
    #[must_use]
    pub const fn avg(kernel: usize, stride: usize, padding: usize) -> Self {
        Self {
            kind: PoolKind::Avg,
            kernel,
            stride,
            padding,
        }
    }

    /// The output size along a spatial dim of `size`, or why the pooling does not fit it:
    /// PyTorch's `floor((size + 2 padding - kernel) / stride) + 1`.
    ///
    /// # Errors
    /// A message when the stride or kernel is 0, the padding is more than half the kernel,
    /// or the kernel is larger than the padded input.
    pub fn output_size(&self, size: usize) -> std::result::Result<usize, String> {
        let Self {
            kernel,
            stride,
            padding,
            ..
        } = *self;
        if kernel == 0 || stride == 0 {
            return Err(format!(
                "kernel {kernel} and stride {stride} must be positive"
            ));
        }
        if 2 * padding > kernel {
            return Err(format!(
                "padding {padding} is more than half the kernel {kernel}"
            ));
        }
        let padded = size + 2 * padding;
        if kernel > padded {
            return Err(format!(
                "kernel {kernel} is larger than the padded input, {size} + 2*{padding} = {padded}"
            ));
        }
        Ok((padded - kernel) / stride + 1)
    }
}

/// Where the windows of one pooling fall: the input planes (`N * C`) of `height x width`, and
/// the output's `out_height x out_width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// `N * C`.
    pub planes: usize,
    /// The input's height.
    pub height: usize,
    /// The input's width.
    pub width: usize,
    /// The output's height.
    pub out_height: usize,
    /// The output's width.
    pub out_width: usize,
}

impl PoolGeometry {
    /// Elements in one input plane.
    pub(crate) fn plane_in(&self) -> usize {
        self.height * self.width
    }

    /// Elements in one output plane.
    pub(crate) fn plane_out(&self) -> usize {
        self.out_height * self.out_width
    }

    /// The geometry of `pool` over a `[N, C, H, W]` input of `shape`.
    ///
    /// # Errors
    /// [`Error::Rank`] when `shape` is not 4-D, [`Error::Usage`] when the pooling does not fit.
    pub fn new(op: &'static str, pool: &Pool2d, shape: &Shape) -> Result<Self> {
        let &[n, c, height, width] = shape.dims() else {
            return Err(Error::Rank {
                op,
                expected: 4,
                found: shape.clone(),
            });
        };
        // Max pooling's argmax is an `f32`, exact below 2^24.
        if height * width > 1 << 24 {
            return Err(Error::Usage(format!(
                "{op} of {shape}: planes of more than 2^24 elements are not supported"
            )));
        }
        let fit = |size| {
            pool.output_size(size)
                .map_err(|message| Error::Usage(format!("{op} of {shape}: {message}")))
        };
        Ok(Self {
            planes: n * c,
            height,
            width,
            out_height: fit(height)?,
            out_width: fit(width)?,
        })
    }

    fn output_shape(&self, input: &Shape) -> Shape {
        let dims = input.dims();
        Shape::from([dims[0], dims[1], self.out_height, self.out_width])
    }
}

/// The kernels of pooling, forward and backward.
pub trait PoolKernel: Memory {
    /// `out[p, i, j]` = the window's max or mean; for max pooling `indices`, when given, gets
    /// each window's argmax as a flat index into its plane (as an `f32`). Writes every element
    /// of both, so they may come uninitialised.
    ///
    /// # Errors
    /// When the kernel fails.
    fn pool2d(
        &self,
        pool: &Pool2d,
        geometry: &PoolGeometry,
        x: &Self::Storage,
        out: &mut Self::Storage,
        indices: Option<&mut Self::Storage>,
    ) -> Result<()>;

    /// `grad_in` = the gradient through the pooling: each input element gathers, in output
    /// order, the gradients of the windows whose max it was (`indices`) or that averaged it.
    ///
    /// # Errors
    /// When the kernel fails.
    fn pool2d_backward(
        &self,
        pool: &Pool2d,
        geometry: &PoolGeometry,
        grad_out: &Self::Storage,
        indices: Option<&Self::Storage>,
        grad_in: &mut Self::Storage,
    ) -> Result<()>;
}

impl<B: Backend> Tensor<B> {
    /// `pool` over this `[N, C, H, W]` tensor, like `F.max_pool2d` / `F.avg_pool2d`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::ops::pool::Pool2d;
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), [1, 1, 4, 4], &Cpu);
    /// assert_eq!(x.pool2d(&Pool2d::max(2, 2, 0)).to_vec(), [5.0, 7.0, 13.0, 15.0]);
    /// assert_eq!(x.pool2d(&Pool2d::avg(2, 2, 0)).to_vec(), [2.5, 4.5, 10.5, 12.5]);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn pool2d(&self, pool: &Pool2d) -> Self {
        or_panic(self.try_pool2d(pool))
    }

    /// `pool` over this `[N, C, H, W]` tensor.
    ///
    /// # Errors
    /// [`Error::Rank`] when the tensor is not 4-D, [`Error::Usage`] when the pooling does not
    /// fit its spatial dims.
    pub fn try_pool2d(&self, pool: &Pool2d) -> Result<Self> {
        Ok(self.pool2d_with(pool, false)?.0)
    }

    /// `pool` and, for max pooling, each window's argmax (what the backward pass reads).
    ///
    /// # Errors
    /// As [`Tensor::try_pool2d`].
    pub fn try_pool2d_with_indices(&self, pool: &Pool2d) -> Result<(Self, Option<Self>)> {
        self.pool2d_with(pool, pool.kind == PoolKind::Max)
    }

    fn pool2d_with(&self, pool: &Pool2d, with_indices: bool) -> Result<(Self, Option<Self>)> {
        let geometry = PoolGeometry::new("pool2d", pool, &self.shape)?;
        let shape = geometry.output_shape(&self.shape);
        // The kernel writes every element of both.
        let mut out = Self::try_empty(shape.clone(), &self.device)?;
        let mut indices = if with_indices {
            Some(Self::try_empty(shape, &self.device)?)
        } else {
            None
        };
        self.device.pool2d(
            pool,
            &geometry,
            &self.storage,
            &mut out.storage,
            indices.as_mut().map(|indices| &mut indices.storage),
        )?;
        Ok((out, indices))
    }

    /// The gradient through `pool` for an input of `input_shape`, with `self` the output's
    /// gradient and `indices` the argmax of [`Tensor::try_pool2d_with_indices`] (max pooling).
    ///
    /// # Errors
    /// [`Error::Shape`] when `self` or `indices` does not have the output's shape,
    /// [`Error::Usage`] when max pooling is given no indices.
    pub fn try_pool2d_backward(
        &self,
        pool: &Pool2d,
        indices: Option<&Self>,
        input_shape: &Shape,
    ) -> Result<Self> {
        const OP: &str = "pool2d backward";
        let geometry = PoolGeometry::new(OP, pool, input_shape)?;
        let expected = geometry.output_shape(input_shape);
        for tensor in std::iter::once(self).chain(indices) {
            if tensor.shape != expected {
                return Err(Error::Shape {
                    op: OP,
                    expected,
                    found: tensor.shape.clone(),
                });
            }
            self.check_same_device(OP, tensor)?;
        }
        if pool.kind == PoolKind::Max && indices.is_none() {
            return Err(Error::Usage(format!(
                "{OP}: max pooling's gradient needs the indices of the forward pass"
            )));
        }
        // Every kernel writes every element (the CPU's zero-fills, then scatters).
        let mut grad_in = Self::try_empty(input_shape.clone(), &self.device)?;
        self.device.pool2d_backward(
            pool,
            &geometry,
            &self.storage,
            indices.map(|indices| &indices.storage),
            &mut grad_in.storage,
        )?;
        Ok(grad_in)
    }
}

#[cfg(not(feature = "cuda"))]
impl PoolKernel for crate::Cuda {
    fn pool2d(
        &self,
        _: &Pool2d,
        _: &PoolGeometry,
        _: &Self::Storage,
        _: &mut Self::Storage,
        _: Option<&mut Self::Storage>,
    ) -> Result<()> {
        self.unreachable()
    }

    fn pool2d_backward(
        &self,
        _: &Pool2d,
        _: &PoolGeometry,
        _: &Self::Storage,
        _: Option<&Self::Storage>,
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
    fn output_sizes_follow_pytorch_and_bad_windows_are_errors() {
        assert_eq!(Pool2d::max(3, 2, 0).output_size(9), Ok(4));
        assert_eq!(Pool2d::max(3, 2, 1).output_size(8), Ok(4));
        assert!(Pool2d::max(5, 1, 0).output_size(4).is_err());
        assert!(Pool2d::max(2, 2, 2).output_size(8).is_err());
        let error = Tensor::zeros([1, 1, 3, 3], &Cpu)
            .try_pool2d(&Pool2d::max(4, 4, 0))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: pool2d of [1, 1, 3, 3]: kernel 4 is larger than the padded input, 3 + 2*0 = 3"
        );
        assert!(
            Tensor::zeros([3, 3], &Cpu)
                .try_pool2d(&Pool2d::max(2, 2, 0))
                .is_err()
        );
    }

    /// `MaxPool2d<2>`'s own kernel against the general one (a 2x2 window with stride 2 and
    /// padding 1, whose interior windows are the same): values, ties (the first maximum's
    /// index) and NaN (it wins and stays).
    #[test]
    #[allow(
        clippy::cast_sign_loss,
        clippy::cast_possible_truncation,
        reason = "whole indices"
    )]
    fn the_two_by_two_max_pool_picks_as_the_general_kernel() {
        let mut values: Vec<f32> = (0..2 * 6 * 8).map(|v| ((v * 7) % 5) as f32).collect();
        values[9] = f32::NAN;
        values[50] = f32::NAN;
        values[51] = f32::NAN;
        let x = Tensor::from_vec(values, [1, 2, 6, 8], &Cpu);
        let (fast, fast_at) = x.try_pool2d_with_indices(&Pool2d::max(2, 2, 0)).unwrap();
        // With padding 1 and the input shifted by one row and column, the windows are the same.
        let padded = Tensor::from_vec(
            (0..2 * 7 * 9)
                .map(|i| {
                    let (plane, y, x_) = (i / 63, (i % 63) / 9, i % 9);
                    if y == 0 || x_ == 0 {
                        f32::NEG_INFINITY
                    } else {
                        x.to_vec()[plane * 48 + (y - 1) * 8 + x_ - 1]
                    }
                })
                .collect(),
            [1, 2, 7, 9],
            &Cpu,
        );
        let (general, general_at) = padded
            .try_pool2d_with_indices(&Pool2d::max(2, 2, 1))
            .unwrap();
        // The general output has one more row and column (windows at the padded edge).
        let general = general.to_vec();
        let general_at = general_at.unwrap().to_vec();
        let (fast, fast_at) = (fast.to_vec(), fast_at.unwrap().to_vec());
        for plane in 0..2 {
            for oy in 0..3 {
                for ox in 0..4 {
                    let (f, g) = (plane * 12 + oy * 4 + ox, plane * 20 + (oy + 1) * 5 + ox + 1);
                    assert_eq!(
                        fast[f].to_bits(),
                        general[g].to_bits(),
                        "value at {plane} {oy} {ox}"
                    );
                    // Positions differ by the padded plane's extra row and column.
                    let at = general_at[g] as usize;
                    let (y, x_) = (at / 9 - 1, at % 9 - 1);
                    assert_eq!(
                        fast_at[f] as usize,
                        y * 8 + x_,
                        "index at {plane} {oy} {ox}"
                    );
                }
            }
        }
    }

    /// Every pooling's gradient against central differences, with overlapping windows and
    /// padding.
    #[test]
    fn gradients_match_finite_differences() {
        let x: Vec<f32> = (0..50)
            .map(|v| ((v * 37) % 50) as f32 * 0.13 - 3.0)
            .collect();
        let x = Tensor::from_vec(x, [1, 2, 5, 5], &Cpu);
        for pool in [
            Pool2d::max(2, 2, 0),
            Pool2d::max(3, 2, 1),
            Pool2d::avg(3, 1, 1),
            Pool2d::avg(2, 2, 0),
        ] {
            let (y, indices) = x.try_pool2d_with_indices(&pool).unwrap();
            let weights: Vec<f32> = (0..y.numel()).map(|v| (v % 7) as f32 - 3.0).collect();
            let g = Tensor::from_vec(weights.clone(), y.shape().clone(), &Cpu);
            let grad = g
                .try_pool2d_backward(&pool, indices.as_ref(), x.shape())
                .unwrap()
                .to_vec();
            for i in 0..x.numel() {
                let at = |delta: f32| {
                    let mut data = x.to_vec();
                    data[i] += delta;
                    let y = Tensor::from_vec(data, x.shape().clone(), &Cpu).pool2d(&pool);
                    y.to_vec()
                        .iter()
                        .zip(&weights)
                        .map(|(y, w)| y * w)
                        .sum::<f32>()
                };
                let numeric = (at(1e-3) - at(-1e-3)) / 2e-3;
                assert!(
                    (grad[i] - numeric).abs() < 1e-2,
                    "{pool:?} at {i}: {} vs {numeric}",
                    grad[i]
                );
            }
        }
    }
}
