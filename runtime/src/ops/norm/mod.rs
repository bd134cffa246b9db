//! Layer normalisation: each row of the last dim normalised to mean 0 and variance 1, then
//! scaled and shifted per column (`F.layer_norm(x, (len,), weight, bias, eps)`), and the
//! input's gradient through it.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::{Tensor, check_vector};

/// The rows one layer normalisation works on: `rows` of `len` contiguous elements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rows {
    /// The number of rows: the product of every dim but the last.
    pub rows: usize,
    /// The row length: the last dim.
    pub len: usize,
    /// Added to the variance before its square root.
    pub eps: f32,
}

/// The kernels of layer normalisation. Sums accumulate in `f64`.
pub trait NormKernel: Memory {
    /// `y = (x - mean) * rstd * weight + bias` per row (each of `weight` and `bias` 1 when
    /// absent), writing each row's `mean` and `rstd = 1 / sqrt(biased variance + eps)`.
    ///
    /// # Errors
    /// When the kernel fails.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        rows: &Rows,
        x: &Self::Storage,
        weight: Option<&Self::Storage>,
        bias: Option<&Self::Storage>,
        y: &mut Self::Storage,
        mean: &mut Self::Storage,
        rstd: &mut Self::Storage,
    ) -> Result<()>;

    /// The input's gradient for the output's `grad`: with `gw = grad * weight` and
    /// `xhat = (x - mean) * rstd`, `rstd * (gw - mean(gw) - xhat * mean(gw * xhat))` per row.
    ///
    /// # Errors
    /// When the kernel fails.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        rows: &Rows,
        x: &Self::Storage,
        grad: &Self::Storage,
        weight: Option<&Self::Storage>,
        mean: &Self::Storage,
        rstd: &Self::Storage,
        grad_x: &mut Self::Storage,
    ) -> Result<()>;

    /// The affine parameters' gradients for the output's `grad`: `grad_weight[j]` sums
    /// `grad * xhat` and `grad_bias[j]` sums `grad` over the rows of column `j`, in row order
    /// in `f32` (as a bias's `sum_rows` adds them).
    ///
    /// # Errors
    /// When the kernel fails.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_param_grads(
        &self,
        rows: &Rows,
        x: &Self::Storage,
        grad: &Self::Storage,
        mean: &Self::Storage,
        rstd: &Self::Storage,
        grad_weight: &mut Self::Storage,
        grad_bias: &mut Self::Storage,
    ) -> Result<()>;
}

/// What a layer normalisation's backward pass reads besides its input: each row's mean and
/// inverse standard deviation, `[rows]`.
#[derive(Debug)]
pub struct RowStats<B: Backend> {
    /// Each row's mean.
    pub mean: Tensor<B>,
    /// Each row's `1 / sqrt(variance + eps)`.
    pub rstd: Tensor<B>,
}

impl<B: Backend> Tensor<B> {
    /// Layer normalisation over the last dim, like `F.layer_norm(x, (len,), weight, bias,
    /// eps)`, and the statistics its gradient reads.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 3.0, 2.0, 2.0], [2, 2], &Cpu);
    /// let (y, _) = x.try_layer_norm(None, None, 1e-5)?;
    /// let y = y.to_vec();
    /// assert!((y[0] + 1.0).abs() < 1e-4 && (y[1] - 1.0).abs() < 1e-4);
    /// assert_eq!(y[2..], [0.0, 0.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Rank`] for a tensor without dims; [`Error::Shape`] when `weight` or `bias` is
    /// not `[len]`.
    pub fn try_layer_norm(
        &self,
        weight: Option<&Self>,
        bias: Option<&Self>,
        eps: f32,
    ) -> Result<(Self, RowStats<B>)> {
        const OP: &str = "layer_norm";
        let rows = self.rows(OP, eps)?;
        for vector in weight.into_iter().chain(bias) {
            check_vector(OP, vector, rows.len, self)?;
        }
        let mut y = Self::try_empty(self.shape.clone(), &self.device)?;
        let mut mean = Self::try_zeros([rows.rows], &self.device)?;
        let mut rstd = Self::try_zeros([rows.rows], &self.device)?;
        self.device.layer_norm(
            &rows,
            &self.storage,
            weight.map(|w| &w.storage),
            bias.map(|b| &b.storage),
            &mut y.storage,
            &mut mean.storage,
            &mut rstd.storage,
        )?;
        Ok((y, RowStats { mean, rstd }))
    }

    /// The gradient of [`Tensor::try_layer_norm`] for its input `x`, with `self` the output's
    /// gradient and `stats` what the forward pass returned.
    ///
    /// # Errors
    /// [`Error::Shape`] when `self` is not `x`'s shape, or `weight` or the statistics do not
    /// fit it.
    pub fn try_layer_norm_backward(
        &self,
        x: &Self,
        stats: &RowStats<B>,
        weight: Option<&Self>,
    ) -> Result<Self> {
        const OP: &str = "layer_norm backward";
        let rows = self.check_norm_grad(OP, x, stats)?;
        if let Some(weight) = weight {
            check_vector(OP, weight, rows.len, x)?;
        }
        let mut grad_x = Self::try_empty(x.shape.clone(), &x.device)?;
        self.device.layer_norm_backward(
            &rows,
            &x.storage,
            &self.storage,
            weight.map(|w| &w.storage),
            &stats.mean.storage,
            &stats.rstd.storage,
            &mut grad_x.storage,
        )?;
        Ok(grad_x)
    }

    /// The gradients of [`Tensor::try_layer_norm`]'s weight and bias (each `[len]`) for its
    /// input `x` and the output's gradient `self`: the column sums of `self * xhat` and of
    /// `self`, in one pass.
    ///
    /// # Errors
    /// As [`Tensor::try_layer_norm_backward`].
    pub fn try_layer_norm_param_grads(
        &self,
        x: &Self,
        stats: &RowStats<B>,
    ) -> Result<(Self, Self)> {
        const OP: &str = "layer_norm parameter gradients";
        let rows = self.check_norm_grad(OP, x, stats)?;
        let mut grad_weight = Self::try_empty([rows.len], &x.device)?;
        let mut grad_bias = Self::try_empty([rows.len], &x.device)?;
        self.device.layer_norm_param_grads(
            &rows,
            &x.storage,
            &self.storage,
            &stats.mean.storage,
            &stats.rstd.storage,
            &mut grad_weight.storage,
            &mut grad_bias.storage,
        )?;
        Ok((grad_weight, grad_bias))
    }

    /// The rows of a gradient `self` through the layer normalisation of `x` with `stats`,
    /// checked to fit.
    fn check_norm_grad(&self, op: &'static str, x: &Self, stats: &RowStats<B>) -> Result<Rows> {
        x.check_same_shape(op, self)?;
        x.check_same_device(op, self)?;
        let rows = x.rows(op, 0.0)?;
        for stat in [&stats.mean, &stats.rstd] {
            x.check_same_device(op, stat)?;
            if stat.dims() != [rows.rows] {
                return Err(Error::Shape {
                    op,
                    expected: Shape::from([rows.rows]),
                    found: stat.shape.clone(),
                });
            }
        }
        Ok(rows)
    }

    fn rows(&self, op: &'static str, eps: f32) -> Result<Rows> {
        let Some((&len, rest)) = self.shape.dims().split_last() else {
            return Err(Error::Rank {
                op,
                expected: 1,
                found: self.shape.clone(),
            });
        };
        Ok(Rows {
            rows: rest.iter().product(),
            len,
            eps,
        })
    }
}

#[cfg(not(feature = "cuda"))]
impl NormKernel for crate::Cuda {
    fn layer_norm(
        &self,
        _: &Rows,
        _: &Self::Storage,
        _: Option<&Self::Storage>,
        _: Option<&Self::Storage>,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn layer_norm_backward(
        &self,
        _: &Rows,
        _: &Self::Storage,
        _: &Self::Storage,
        _: Option<&Self::Storage>,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn layer_norm_param_grads(
        &self,
        _: &Rows,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::Cpu;
    use crate::rng::seeded;
    use crate::tensor::Tensor;

    /// The parameters' gradients against plain column sums in row order, bit for bit: rows of
    /// 70 (two blocks of columns and part of one), few rows and enough to run in parts.
    #[test]
    fn parameter_gradients_are_column_sums_in_row_order() {
        let rng = &mut seeded(5);
        for rows in [3, 1100] {
            let x = Tensor::randn([rows, 70], &Cpu, rng);
            let grad = Tensor::randn([rows, 70], &Cpu, rng);
            let (_, stats) = x.try_layer_norm(None, None, 1e-5).unwrap();
            let (weight, bias) = grad.try_layer_norm_param_grads(&x, &stats).unwrap();
            let (x, grad) = (x.to_vec(), grad.to_vec());
            let (mean, rstd) = (stats.mean.to_vec(), stats.rstd.to_vec());
            let mut expected = (vec![0.0f32; 70], vec![0.0f32; 70]);
            for row in 0..rows {
                for j in 0..70 {
                    let (v, g) = (x[row * 70 + j], grad[row * 70 + j]);
                    expected.0[j] += (v - mean[row]) * rstd[row] * g;
                    expected.1[j] += g;
                }
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&weight.to_vec()),
                bits(&expected.0),
                "weight, {rows} rows"
            );
            assert_eq!(bits(&bias.to_vec()), bits(&expected.1), "bias, {rows} rows");
        }
        let (x, grad) = (Tensor::zeros([2, 3], &Cpu), Tensor::zeros([3, 2], &Cpu));
        let (_, stats) = x.try_layer_norm(None, None, 1e-5).unwrap();
        let error = grad.try_layer_norm_param_grads(&x, &stats).unwrap_err();
        assert!(error.to_string().contains("[2, 3]"), "{error}");
    }
}
