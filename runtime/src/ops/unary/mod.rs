//! Elementwise ops of one tensor (and an optional scalar): activations, scalar arithmetic,
//! comparisons that produce masks.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::Backend;
use crate::error::{Result, or_panic};
use crate::tensor::Tensor;

/// An elementwise map `x -> f(x)`, the unit of work of [`Backend::unary`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `x + s`.
    AddScalar(f32),
    /// `x * s`.
    MulScalar(f32),
    /// `max(x, min)`, like `clamp(min=..)`; NaN stays NaN.
    ClampMin(f32),
    /// `x^p`; `p = 2` is computed as `x * x`, like PyTorch.
    Pow(f32),
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// GELU with the exact (erf) form, like `torch.nn.functional.gelu`.
    Gelu,
    /// `1.0` where `x < s`, else `0.0`: a mask for [`Tensor::masked_fill_`].
    LtScalar(f32),
    /// `1.0` where `x > s`, else `0.0`: a mask for [`Tensor::masked_fill_`].
    GtScalar(f32),
}

impl<B: Backend> Tensor<B> {
    /// A new tensor with `op` applied to every element.
    #[track_caller]
    #[must_use]
    pub fn map(&self, op: UnaryOp) -> Self {
        or_panic(self.try_map(op))
    }

    /// A new tensor with `op` applied to every element.
    ///
    /// # Errors
    /// When the device cannot allocate or run the kernel.
    pub fn try_map(&self, op: UnaryOp) -> Result<Self> {
        let mut out = Self::try_zeros(self.shape.clone(), &self.device)?;
        self.device.unary(op, &self.storage, &mut out.storage)?;
        Ok(out)
    }

    /// Applies `op` to every element in place.
    #[track_caller]
    pub fn map_(&mut self, op: UnaryOp) {
        or_panic(self.try_map_(op));
    }

    /// Applies `op` to every element in place.
    ///
    /// # Errors
    /// When the device cannot run the kernel.
    pub fn try_map_(&mut self, op: UnaryOp) -> Result<()> {
        self.device.unary_assign(op, &mut self.storage)
    }

    /// Applies `op` in place and returns the tensor: how owned operands reuse their buffer.
    #[track_caller]
    pub(crate) fn map_owned(mut self, op: UnaryOp) -> Self {
        self.map_(op);
        self
    }

    /// `max(x, min)` elementwise, like `torch.clamp(x, min=min)`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![-1.0, 0.5], [2], &Cpu);
    /// assert_eq!(t.clamp_min(0.0).to_vec(), [0.0, 0.5]);
    /// ```
    #[must_use]
    pub fn clamp_min(&self, min: f32) -> Self {
        self.map(UnaryOp::ClampMin(min))
    }

    /// `max(x, 0)` elementwise.
    #[must_use]
    pub fn relu(&self) -> Self {
        self.clamp_min(0.0)
    }

    /// `x^exponent` elementwise, like `torch.pow`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![-3.0, 2.0], [2], &Cpu);
    /// assert_eq!(t.pow(2.0).to_vec(), [9.0, 4.0]);
    /// ```
    #[must_use]
    pub fn pow(&self, exponent: f32) -> Self {
        self.map(UnaryOp::Pow(exponent))
    }

    /// `e^x` elementwise.
    #[must_use]
    pub fn exp(&self) -> Self {
        self.map(UnaryOp::Exp)
    }

    /// Natural logarithm elementwise.
    #[must_use]
    pub fn log(&self) -> Self {
        self.map(UnaryOp::Log)
    }

    /// The logistic sigmoid elementwise.
    #[must_use]
    pub fn sigmoid(&self) -> Self {
        self.map(UnaryOp::Sigmoid)
    }

    /// Hyperbolic tangent elementwise.
    #[must_use]
    pub fn tanh(&self) -> Self {
        self.map(UnaryOp::Tanh)
    }

    /// GELU elementwise, `x * Φ(x)` with the exact erf form (PyTorch's default).
    #[must_use]
    pub fn gelu(&self) -> Self {
        self.map(UnaryOp::Gelu)
    }

    /// A mask, `1.0` where `x < value` and `0.0` elsewhere, like `x < value` in PyTorch.
    #[must_use]
    pub fn lt(&self, value: f32) -> Self {
        self.map(UnaryOp::LtScalar(value))
    }

    /// A mask, `1.0` where `x > value` and `0.0` elsewhere, like `x > value` in PyTorch.
    #[must_use]
    pub fn gt(&self, value: f32) -> Self {
        self.map(UnaryOp::GtScalar(value))
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::assert_close;
    use crate::{Cpu, Tensor};

    fn input() -> Tensor {
        Tensor::from_vec(vec![-2.0, -0.5, 0.0, 0.5, 3.0], [5], &Cpu)
    }

    #[test]
    fn clamp_min_and_relu() {
        assert_eq!(input().clamp_min(0.0).to_vec(), [0.0, 0.0, 0.0, 0.5, 3.0]);
        assert_eq!(
            input().clamp_min(-1.0).to_vec(),
            [-1.0, -0.5, 0.0, 0.5, 3.0]
        );
        assert_eq!(input().relu().to_vec(), input().clamp_min(0.0).to_vec());
        let nan = Tensor::from_vec(vec![f32::NAN], [1], &Cpu);
        assert!(
            nan.relu().item().is_nan(),
            "clamp propagates NaN like PyTorch"
        );
    }

    #[test]
    fn pow_integer_and_fractional() {
        assert_eq!(input().pow(2.0).to_vec(), [4.0, 0.25, 0.0, 0.25, 9.0]);
        assert_eq!(input().pow(3.0).to_vec(), [-8.0, -0.125, 0.0, 0.125, 27.0]);
        let t = Tensor::from_vec(vec![4.0, 9.0], [2], &Cpu);
        assert_close(&t.pow(0.5).to_vec(), &[2.0, 3.0]);
    }

    #[test]
    fn transcendental_functions() {
        let x = input().to_vec();
        let exp: Vec<f32> = x.iter().map(|v| v.exp()).collect();
        assert_close(&input().exp().to_vec(), &exp);
        let sig: Vec<f32> = x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        assert_close(&input().sigmoid().to_vec(), &sig);
        let tanh: Vec<f32> = x.iter().map(|v| v.tanh()).collect();
        assert_close(&input().tanh().to_vec(), &tanh);
        let gelu: Vec<f32> = [-2.0f32, -0.5, 0.0, 0.5, 3.0]
            .iter()
            .map(|&v| 0.5 * v * (1.0 + libm::erff(v / std::f32::consts::SQRT_2)))
            .collect();
        assert_close(&input().gelu().to_vec(), &gelu);
        // Values from torch.nn.functional.gelu.
        assert_close(
            &input().gelu().to_vec()[..2],
            &[-0.045_500_26, -0.154_268_57],
        );
        let pos = Tensor::from_vec(vec![1.0, std::f32::consts::E], [2], &Cpu);
        assert_close(&pos.log().to_vec(), &[0.0, 1.0]);
    }

    #[test]
    fn sigmoid_is_stable_for_large_inputs() {
        let t = Tensor::from_vec(vec![-100.0, 100.0], [2], &Cpu);
        let [low, high] = t.sigmoid().to_vec()[..] else {
            unreachable!()
        };
        assert!((0.0..1e-40).contains(&low), "sigmoid(-100) = {low}");
        assert_eq!(high, 1.0);
    }

    #[test]
    fn masks() {
        assert_eq!(input().lt(0.0).to_vec(), [1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(input().gt(0.0).to_vec(), [0.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn map_in_place_matches_map() {
        let mut t = input();
        t.map_(super::UnaryOp::MulScalar(2.0));
        assert_eq!(
            t.to_vec(),
            input().map(super::UnaryOp::MulScalar(2.0)).to_vec()
        );
    }
}
