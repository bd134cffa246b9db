//! Reductions: `sum`, `mean`, and their per-dimension forms `sum_dim`, `mean_dim`.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use super::unary::UnaryOp;
use crate::backend::{Backend, Memory};
use crate::error::{Error, Result, or_panic};
use crate::shape::{Dims, Shape};
use crate::tensor::Tensor;

/// The kernels of reductions.
pub trait ReduceKernel: Memory {
    /// Sums `x`, viewed as `[outer, len, inner]`, over its middle axis into `out` (`[outer, inner]`),
    /// overwriting whatever `out` held.
    ///
    /// # Errors
    /// When the kernel fails.
    fn sum_axis(
        &self,
        x: &Self::Storage,
        outer: usize,
        len: usize,
        inner: usize,
        out: &mut Self::Storage,
    ) -> Result<()>;
}

#[cfg(not(feature = "cuda"))]
impl ReduceKernel for crate::Cuda {
    fn sum_axis(
        &self,
        _: &Self::Storage,
        _: usize,
        _: usize,
        _: usize,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

impl<B: Backend> Tensor<B> {
    /// The sum of all elements as a scalar tensor (shape `[]`), like `torch.sum`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &Cpu);
    /// assert_eq!(t.sum().dims(), &[] as &[usize]);
    /// assert_eq!(t.sum().item(), 10.0);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn sum(&self) -> Self {
        or_panic(self.try_sum())
    }

    /// The sum of all elements as a scalar tensor.
    ///
    /// # Errors
    /// When the device fails.
    pub fn try_sum(&self) -> Result<Self> {
        let flat = Shape::from([self.numel()]);
        self.reduce(&flat, 0, Shape::from([]))
    }

    /// The mean of all elements as a scalar tensor, like `torch.mean` (NaN when empty).
    #[track_caller]
    #[must_use]
    pub fn mean(&self) -> Self {
        or_panic(self.try_mean())
    }

    /// The mean of all elements as a scalar tensor.
    ///
    /// # Errors
    /// When the device fails.
    pub fn try_mean(&self) -> Result<Self> {
        let mut sum = self.try_sum()?;
        sum.device.unary_assign(
            UnaryOp::MulScalar(1.0 / self.numel() as f32),
            &mut sum.storage,
        )?;
        Ok(sum)
    }

    /// Sums over `dim`, removing it (or keeping it with size 1 when `keepdim`), like
    /// `torch.sum(x, dim, keepdim)`. Summing a `[batch, features]` gradient over dim 0 gives
    /// the bias gradient.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &Cpu);
    /// assert_eq!(t.sum_dim(0, false).to_vec(), [5.0, 7.0, 9.0]);
    /// assert_eq!(t.sum_dim(1, true).dims(), &[2, 1]);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn sum_dim(&self, dim: usize, keepdim: bool) -> Self {
        or_panic(self.try_sum_dim(dim, keepdim))
    }

    /// Sums over `dim`.
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] when `dim` is not below the rank.
    pub fn try_sum_dim(&self, dim: usize, keepdim: bool) -> Result<Self> {
        let out_shape = self.reduced_shape("sum_dim", dim, keepdim)?;
        self.reduce(&self.shape, dim, out_shape)
    }

    /// Averages over `dim`, like `torch.mean(x, dim, keepdim)`.
    #[track_caller]
    #[must_use]
    pub fn mean_dim(&self, dim: usize, keepdim: bool) -> Self {
        or_panic(self.try_mean_dim(dim, keepdim))
    }

    /// Averages over `dim`.
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] when `dim` is not below the rank.
    pub fn try_mean_dim(&self, dim: usize, keepdim: bool) -> Result<Self> {
        let mut sum = self.try_sum_dim(dim, keepdim)?;
        sum.try_map_(UnaryOp::MulScalar(1.0 / self.dims()[dim] as f32))?;
        Ok(sum)
    }

    fn reduced_shape(&self, op: &'static str, dim: usize, keepdim: bool) -> Result<Shape> {
        if dim >= self.rank() {
            return Err(Error::DimOutOfRange {
                op,
                dim,
                shape: self.shape.clone(),
            });
        }
        let mut dims = Dims::from_slice(self.dims());
        if keepdim {
            dims[dim] = 1;
        } else {
            dims.remove(dim);
        }
        Ok(Shape::from(dims))
    }

    /// Sums `self`, viewed as `view`, over `dim` into a tensor of shape `out_shape`.
    fn reduce(&self, view: &Shape, dim: usize, out_shape: Shape) -> Result<Self> {
        let (outer, len, inner) = view.split_at_dim(dim);
        let mut out = Self::try_zeros(out_shape, &self.device)?;
        self.device
            .sum_axis(&self.storage, outer, len, inner, &mut out.storage)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cpu, Tensor};

    fn cube() -> Tensor {
        Tensor::from_vec((0..24).map(|i| i as f32).collect(), [2, 3, 4], &Cpu)
    }

    #[test]
    fn sum_and_mean_of_everything() {
        assert_eq!(cube().sum().item(), 276.0);
        assert_eq!(cube().mean().item(), 11.5);
        assert_eq!(Tensor::zeros([0], &Cpu).sum().item(), 0.0);
        assert!(Tensor::zeros([0], &Cpu).mean().item().is_nan());
    }

    #[test]
    fn sum_dim_over_each_axis() {
        let t = cube();
        let d0 = t.sum_dim(0, false);
        assert_eq!(d0.dims(), &[3, 4]);
        assert_eq!(d0.to_vec()[..4], [12.0, 14.0, 16.0, 18.0]);
        let d1 = t.sum_dim(1, true);
        assert_eq!(d1.dims(), &[2, 1, 4]);
        assert_eq!(d1.to_vec()[..4], [12.0, 15.0, 18.0, 21.0]);
        let d2 = t.sum_dim(2, false);
        assert_eq!(d2.dims(), &[2, 3]);
        assert_eq!(d2.to_vec(), [6.0, 22.0, 38.0, 54.0, 70.0, 86.0]);
        assert_eq!(
            t.mean_dim(2, false).to_vec(),
            [1.5, 5.5, 9.5, 13.5, 17.5, 21.5]
        );
    }

    #[test]
    fn dim_out_of_range_is_an_error() {
        let error = cube().try_sum_dim(3, false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "sum_dim: dim 3 is out of range for shape [2, 3, 4]"
        );
    }

    /// Summing rows into one row runs in parts by columns when large: each column's sum,
    /// still added row by row in order, is the one-part result exactly.
    #[test]
    fn large_column_sums_in_parts_match_the_sums_in_order() {
        let (rows, cols) = (1000, 301);
        let values: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let expected: Vec<f32> = (0..cols)
            .map(|c| (0..rows).fold(0.0f32, |acc, r| acc + values[r * cols + c]))
            .collect();
        let sums = Tensor::from_vec(values, [rows, cols], &Cpu).sum_dim(0, false);
        assert_eq!(sums.to_vec(), expected);
    }

    #[test]
    fn sum_is_accurate_for_many_elements() {
        // 1e6 copies of 0.1: a naive f32 running sum drifts by about 1%.
        let t = Tensor::full([1_000_000], 0.1, &Cpu);
        assert!((t.sum().item() - 100_000.0).abs() < 1.0);
    }
}
