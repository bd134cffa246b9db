//! Softmax and log-softmax over one dimension (`torch.softmax`, `torch.log_softmax`), and
//! their gradients, which the generated backward pass computes from the output; and the
//! causal softmax of attention scores, scale and mask in the same pass.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::{Error, Result, or_panic};
use crate::tensor::Tensor;

/// Which normalisation a kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxOp {
    /// `exp(x_j) / sum_k exp(x_k)`.
    Softmax,
    /// `x_j - log(sum_k exp(x_k))`.
    LogSoftmax,
}

/// A tensor viewed as `[outer, len, inner]` and normalised over `len`: element `(o, j, i)` is
/// at `(o * len + j) * inner + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxAxis {
    /// The product of the dims before the normalised one.
    pub outer: usize,
    /// The normalised dim's size.
    pub len: usize,
    /// The product of the dims after it.
    pub inner: usize,
}

impl SoftmaxAxis {
    /// The number of elements.
    #[must_use]
    pub fn numel(&self) -> usize {
        self.outer * self.len * self.inner
    }
}

/// Attention scores as `[.., T, T]` matrices, normalised row by row as `softmax(scale * x)`
/// over each row's first `row + 1` entries: query `row` sees the keys up to its own position,
/// the rest get 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CausalScores {
    /// The rows of every matrix, one after another: `outer` rows of `len = T` (`inner` 1).
    pub axis: SoftmaxAxis,
    /// What the scores are multiplied by before the softmax (`1 / sqrt(D)`).
    pub scale: f32,
}

/// The kernels of softmax and log-softmax.
pub trait SoftmaxKernel: Memory {
    /// `out = op(x)` along `axis`'s middle dimension.
    ///
    /// # Errors
    /// When the kernel fails.
    fn softmax(
        &self,
        op: SoftmaxOp,
        x: &Self::Storage,
        axis: &SoftmaxAxis,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `out` = the gradient through `op` along `axis`'s middle dimension, from the op's output
    /// `y` and that output's gradient `grad`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &Self::Storage,
        grad: &Self::Storage,
        axis: &SoftmaxAxis,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `out` = the causal softmax of `scores`, every element written.
    ///
    /// # Errors
    /// When the kernel fails.
    fn causal_softmax(
        &self,
        x: &Self::Storage,
        scores: &CausalScores,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `out` = the gradient through the causal softmax of `scores`, from its output `y` and
    /// that output's gradient `grad`: `scale * y * (grad - sum(grad * y))` row by row.
    ///
    /// # Errors
    /// When the kernel fails.
    fn causal_softmax_backward(
        &self,
        y: &Self::Storage,
        grad: &Self::Storage,
        scores: &CausalScores,
        out: &mut Self::Storage,
    ) -> Result<()>;
}

#[cfg(not(feature = "cuda"))]
impl SoftmaxKernel for crate::Cuda {
    fn softmax(
        &self,
        _: SoftmaxOp,
        _: &Self::Storage,
        _: &SoftmaxAxis,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn softmax_backward(
        &self,
        _: SoftmaxOp,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &SoftmaxAxis,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn causal_softmax(
        &self,
        _: &Self::Storage,
        _: &CausalScores,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn causal_softmax_backward(
        &self,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &CausalScores,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

impl<B: Backend> Tensor<B> {
    /// `exp(x) / sum(exp(x))` along `dim`, like `torch.softmax(x, dim)`, computed around each
    /// slice's maximum so large inputs do not overflow.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let p = Tensor::from_vec(vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0], [2, 3], &Cpu).softmax(1);
    /// assert!((p.to_vec()[2] - 0.665_240_94).abs() < 1e-7);
    /// assert_eq!(p.sum_dim(1, false).to_vec(), [1.0, 1.0]);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn softmax(&self, dim: usize) -> Self {
        or_panic(self.try_softmax(dim))
    }

    /// `exp(x) / sum(exp(x))` along `dim`.
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] when `dim` is not below the rank.
    pub fn try_softmax(&self, dim: usize) -> Result<Self> {
        self.normalise(SoftmaxOp::Softmax, "softmax", dim)
    }

    /// `x - log(sum(exp(x)))` along `dim`, like `torch.log_softmax(x, dim)`; more accurate than
    /// taking the log of [`softmax`](Self::softmax).
    #[track_caller]
    #[must_use]
    pub fn log_softmax(&self, dim: usize) -> Self {
        or_panic(self.try_log_softmax(dim))
    }

    /// `x - log(sum(exp(x)))` along `dim`.
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] when `dim` is not below the rank.
    pub fn try_log_softmax(&self, dim: usize) -> Result<Self> {
        self.normalise(SoftmaxOp::LogSoftmax, "log_softmax", dim)
    }

    /// The gradient through `softmax(dim)`, from its `output`: `y * (g - sum(g * y))`, with
    /// `self` as `g` and the sum along `dim`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `output` does not have `self`'s shape;
    /// [`Error::DimOutOfRange`] when `dim` is not below the rank.
    pub fn softmax_backward(&self, output: &Self, dim: usize) -> Result<Self> {
        self.normalise_backward(SoftmaxOp::Softmax, "softmax_backward", output, dim)
    }

    /// The gradient through `log_softmax(dim)`, from its `output`: `g - exp(y) * sum(g)`, with
    /// `self` as `g` and the sum along `dim`.
    ///
    /// # Errors
    /// As [`softmax_backward`](Self::softmax_backward).
    pub fn log_softmax_backward(&self, output: &Self, dim: usize) -> Result<Self> {
        self.normalise_backward(SoftmaxOp::LogSoftmax, "log_softmax_backward", output, dim)
    }

    /// Causal attention weights from raw scores `[.., T, T]`, in one pass: `softmax(scale *
    /// x)` over each row's first `row + 1` entries, 0 after them, as
    /// `torch.softmax(x * scale + mask, -1)` gives with `-inf` above the diagonal of `mask`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let scores = Tensor::from_vec(vec![1.0, 7.0, 2.0, 2.0], [2, 2], &Cpu);
    /// assert_eq!(scores.try_causal_softmax(0.5)?.to_vec(), [1.0, 0.0, 0.5, 0.5]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Usage`] when the last two dims are not one square size, or `scale` is not
    /// positive and finite.
    pub fn try_causal_softmax(&self, scale: f32) -> Result<Self> {
        let scores = self.causal_scores("causal_softmax", scale)?;
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device
            .causal_softmax(&self.storage, &scores, &mut out.storage)?;
        Ok(out)
    }

    /// The gradient through [`try_causal_softmax`](Self::try_causal_softmax) with `scale`,
    /// from its `output`, `self` being the output's gradient.
    ///
    /// # Errors
    /// As [`try_causal_softmax`](Self::try_causal_softmax); [`Error::Shape`] when `output`
    /// is not this tensor's shape.
    pub fn try_causal_softmax_backward(&self, output: &Self, scale: f32) -> Result<Self> {
        const OP: &str = "causal_softmax_backward";
        self.check_same_shape(OP, output)?;
        let scores = self.causal_scores(OP, scale)?;
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device.causal_softmax_backward(
            &output.storage,
            &self.storage,
            &scores,
            &mut out.storage,
        )?;
        Ok(out)
    }

    fn causal_scores(&self, op: &'static str, scale: f32) -> Result<CausalScores> {
        let size = self.square_size(op)?;
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(Error::Usage(format!(
                "{op}: the scale {scale} is not positive and finite"
            )));
        }
        let axis = SoftmaxAxis {
            outer: self.numel().checked_div(size).unwrap_or(0),
            len: size,
            inner: 1,
        };
        Ok(CausalScores { axis, scale })
    }

    fn softmax_axis(&self, op: &'static str, dim: usize) -> Result<SoftmaxAxis> {
        if dim >= self.rank() {
            return Err(Error::DimOutOfRange {
                op,
                dim,
                shape: self.shape.clone(),
            });
        }
        let (outer, len, inner) = self.shape.split_at_dim(dim);
        Ok(SoftmaxAxis { outer, len, inner })
    }

    fn normalise(&self, op: SoftmaxOp, name: &'static str, dim: usize) -> Result<Self> {
        let axis = self.softmax_axis(name, dim)?;
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device
            .softmax(op, &self.storage, &axis, &mut out.storage)?;
        Ok(out)
    }

    fn normalise_backward(
        &self,
        op: SoftmaxOp,
        name: &'static str,
        output: &Self,
        dim: usize,
    ) -> Result<Self> {
        self.check_same_shape(name, output)?;
        let axis = self.softmax_axis(name, dim)?;
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device.softmax_backward(
            op,
            &output.storage,
            &self.storage,
            &axis,
            &mut out.storage,
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::assert_close;
    use crate::{Cpu, Tensor};

    #[test]
    fn softmax_matches_pytorch_values() {
        // torch.softmax(torch.tensor([[1., 2., 3.], [-1., 0., 1000.]]), 1)
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, -1.0, 0.0, 1000.0], [2, 3], &Cpu);
        assert_close(
            &x.softmax(1).to_vec(),
            &[0.090_030_57, 0.244_728_48, 0.665_240_94, 0.0, 0.0, 1.0],
        );
        // torch.log_softmax(...): the large input does not overflow.
        assert_close(
            &x.log_softmax(1).to_vec(),
            &[-2.407_606, -1.407_606, -0.407_606, -1001.0, -1000.0, 0.0],
        );
    }

    #[test]
    fn softmax_over_a_middle_dim_normalises_each_slice() {
        let x = Tensor::from_vec(
            (0..24).map(|i| (i as f32 * 0.37).sin()).collect(),
            [2, 3, 4],
            &Cpu,
        );
        let sums = x.softmax(1).sum_dim(1, false).to_vec();
        assert_close(&sums, &[1.0; 8]);
        let y = x.log_softmax(0).to_vec();
        let x = x.to_vec();
        // log_softmax over dim 0 of a pair: x_a - log(exp(x_a) + exp(x_b)).
        let expected = x[0] - (x[0].exp() + x[12].exp()).ln();
        assert!((y[0] - expected).abs() < 1e-6);
    }

    #[test]
    fn backward_rules_match_their_formulas() {
        let x = Tensor::from_vec(vec![0.5, -1.0, 2.0, 0.0, 1.0, -2.0], [2, 3], &Cpu);
        let g = Tensor::from_vec(vec![1.0, -2.0, 0.5, 3.0, 0.0, -1.0], [2, 3], &Cpu);
        let y = x.softmax(1);
        let (yv, gv) = (y.to_vec(), g.to_vec());
        let mut expected = Vec::new();
        for row in 0..2 {
            let r = row * 3..row * 3 + 3;
            let dot: f32 = r.clone().map(|j| gv[j] * yv[j]).sum();
            expected.extend(r.map(|j| yv[j] * (gv[j] - dot)));
        }
        assert_close(&g.softmax_backward(&y, 1).unwrap().to_vec(), &expected);

        let y = x.log_softmax(1);
        let yv = y.to_vec();
        let mut expected = Vec::new();
        for row in 0..2 {
            let r = row * 3..row * 3 + 3;
            let sum: f32 = r.clone().map(|j| gv[j]).sum();
            expected.extend(r.map(|j| gv[j] - yv[j].exp() * sum));
        }
        assert_close(&g.log_softmax_backward(&y, 1).unwrap().to_vec(), &expected);
    }

    /// The causal softmax against what it fuses (scale, mask, softmax) and its gradient
    /// against the softmax's, scaled: on a tensor small enough for one part, and on one
    /// large enough to run in several (rows that start mid-matrix).
    #[test]
    fn causal_softmax_is_the_masked_softmax_of_the_scaled_scores() {
        use crate::ops::unary::UnaryOp;
        for dims in [[2, 3, 5, 5], [5, 1, 230, 230]] {
            let n = dims.iter().product();
            let values = |seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| ((i * 7 + seed) as f32 * 0.61).sin() * 4.0)
                    .collect()
            };
            let x = Tensor::from_vec(values(1), dims, &Cpu);
            let g = Tensor::from_vec(values(2), dims, &Cpu);
            let scale = 0.3;
            let mut masked = x.clone();
            masked.try_map_(UnaryOp::MulScalar(scale)).unwrap();
            masked.try_causal_fill_(f32::NEG_INFINITY).unwrap();
            let expected = masked.softmax(3);
            let y = x.try_causal_softmax(scale).unwrap();
            assert_close(&y.to_vec(), &expected.to_vec());
            let mut expected_grad = g.softmax_backward(&expected, 3).unwrap();
            expected_grad.try_map_(UnaryOp::MulScalar(scale)).unwrap();
            let grad = g.try_causal_softmax_backward(&y, scale).unwrap();
            assert_close(&grad.to_vec(), &expected_grad.to_vec());
            // Nothing reaches a masked score: the entry after the first row's own.
            assert_eq!((y.to_vec()[1], grad.to_vec()[1]), (0.0, 0.0));
            // Nor is a masked entry's output gradient read: not even NaN there reaches a result.
            let mut unwritten = g.to_vec();
            let size = dims[3];
            for (i, value) in unwritten.iter_mut().enumerate() {
                if i % size > i / size % size {
                    *value = f32::NAN;
                }
            }
            let unwritten = Tensor::from_vec(unwritten, dims, &Cpu);
            let from_unwritten = unwritten.try_causal_softmax_backward(&y, scale).unwrap();
            assert_eq!(from_unwritten.to_vec(), grad.to_vec());
        }
    }

    #[test]
    fn causal_softmax_needs_square_scores_and_a_positive_scale() {
        let x = Tensor::zeros([2, 3], &Cpu);
        assert_eq!(
            x.try_causal_softmax(1.0).unwrap_err().to_string(),
            "usage: causal_softmax: [2, 3] has no square last two dims"
        );
        let x = Tensor::zeros([3, 3], &Cpu);
        assert_eq!(
            x.try_causal_softmax(f32::NAN).unwrap_err().to_string(),
            "usage: causal_softmax: the scale NaN is not positive and finite"
        );
        assert!(x.try_causal_softmax(0.0).is_err());
        let error = x
            .try_causal_softmax_backward(&Tensor::zeros([2, 3, 3], &Cpu), 1.0)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "causal_softmax_backward: expected shape [3, 3], found [2, 3, 3]"
        );
        // No positions: an empty result, no kernel.
        assert_eq!(
            Tensor::zeros([2, 0, 0], &Cpu)
                .try_causal_softmax(1.0)
                .unwrap()
                .numel(),
            0
        );
    }

    #[test]
    fn bad_dim_or_shape_is_an_error_naming_them() {
        let x = Tensor::zeros([2, 3], &Cpu);
        assert_eq!(
            x.try_softmax(2).unwrap_err().to_string(),
            "softmax: dim 2 is out of range for shape [2, 3]"
        );
        let error = x
            .softmax_backward(&Tensor::zeros([3, 2], &Cpu), 1)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "softmax_backward: expected shape [2, 3], found [3, 2]"
        );
    }
}
