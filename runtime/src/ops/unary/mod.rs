//! Elementwise ops of one tensor (and up to two scalars): activations, scalar arithmetic,
//! comparisons that produce masks, and their gradients. Every op is one row of the table
//! below; `elementwise.rs` says what a row generates.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::{Result, or_panic};
use crate::ops::elementwise::unary_ops;
use crate::ops::math;
use crate::tensor::Tensor;

unary_ops! {
    /// `-x`.
    Neg => fn neg {
        forward: |x| -x => "-x",
        backward from Input: |g, x| -g => "-g",
    }
    /// `x + s`.
    AddScalar(s = 0.5) => fn add_scalar {
        forward: |x| x + s => "x + s",
        backward from Input: |g, x| g => "g",
    }
    /// `x * s`.
    MulScalar(s = -1.5) => fn mul_scalar {
        forward: |x| x * s => "x * s",
        backward from Input: |g, x| g * s => "g * s",
    }
    /// `max(x, min)`, like `torch.clamp(x, min=min)`; NaN stays NaN. The gradient passes where
    /// `x >= min`, as PyTorch's does.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![-1.0, 0.5], [2], &Cpu);
    /// assert_eq!(t.clamp_min(0.0).to_vec(), [0.0, 0.5]);
    /// ```
    ClampMin(min = 0.1) => fn clamp_min {
        // `x < min` is false for NaN, so NaN passes through like in PyTorch.
        forward: |x| if x < min { min } else { x } => "x < min ? min : x",
        backward from Input: |g, x| if x >= min { g } else { 0.0 } => "x >= min ? g : 0.0f",
    }
    /// `max(x, 0)`, like `torch.relu`; NaN stays NaN. Its gradient is read from the output
    /// and is 0 at 0, as PyTorch's is.
    Relu => fn relu {
        forward: |x| if x < 0.0 { 0.0 } else { x } => "x < 0.0f ? 0.0f : x",
        backward from Output: |g, y| if y > 0.0 { g } else { 0.0 } => "y > 0.0f ? g : 0.0f",
    }
    /// `x^p`, like `torch.pow`; `p = 2` is computed as `x * x`, as PyTorch does, and the
    /// gradient of `p = 0` is 0 everywhere (also at `x = 0`), as PyTorch's is.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![-3.0, 2.0], [2], &Cpu);
    /// assert_eq!(t.pow(2.0).to_vec(), [9.0, 4.0]);
    /// ```
    Pow(p = 3.0) => fn pow {
        forward: |x| if p == 2.0 { x * x } else { x.powf(p) }
            => "p == 2.0f ? x * x : powf(x, p)",
        backward from Input: |g, x| if p == 0.0 {
            0.0
        } else if p == 2.0 {
            g * 2.0 * x
        } else {
            g * p * x.powf(p - 1.0)
        } => "p == 0.0f ? 0.0f : (p == 2.0f ? g * 2.0f * x : g * p * powf(x, p - 1.0f))",
    }
    /// `e^x`.
    Exp => fn exp {
        forward: |x| math::exp(x) => "expf(x)",
        backward from Output: |g, y| g * y => "g * y",
    }
    /// The natural logarithm.
    Log => fn log {
        forward: |x| x.ln() => "logf(x)",
        backward from Input: |g, x| g / x => "g / x",
    }
    /// The square root.
    Sqrt => fn sqrt {
        forward: |x| x.sqrt() => "sqrtf(x)",
        backward from Output: |g, y| g / (2.0 * y) => "g / (2.0f * y)",
    }
    /// `|x|`. Its gradient is `sign(x)`, 0 at 0, as PyTorch's is.
    Abs => fn abs {
        forward: |x| x.abs() => "fabsf(x)",
        backward from Input: |g, x| if x > 0.0 { g } else if x < 0.0 { -g } else { 0.0 }
            => "x > 0.0f ? g : (x < 0.0f ? -g : 0.0f)",
    }
    /// The sine.
    Sin => fn sin {
        forward: |x| x.sin() => "sinf(x)",
        backward from Input: |g, x| g * x.cos() => "g * cosf(x)",
    }
    /// The cosine.
    Cos => fn cos {
        forward: |x| x.cos() => "cosf(x)",
        backward from Input: |g, x| g * -x.sin() => "g * -sinf(x)",
    }
    /// The logistic sigmoid `1 / (1 + e^-x)`, without overflow for large `|x|`.
    Sigmoid => fn sigmoid {
        forward: |x| sigmoid(x) => "sigmoid(x)",
        backward from Output: |g, y| g * y * (1.0 - y) => "g * y * (1.0f - y)",
    }
    /// The hyperbolic tangent.
    Tanh => fn tanh {
        forward: |x| x.tanh() => "tanhf(x)",
        backward from Output: |g, y| g * (1.0 - y * y) => "g * (1.0f - y * y)",
    }
    /// GELU, `x * Φ(x)` with the exact erf form, like `torch.nn.functional.gelu`.
    Gelu => fn gelu {
        forward: |x| gelu(x) => "gelu(x)",
        backward from Input: |g, x| g * gelu_derivative(x) => "g * gelu_derivative(x)",
    }
    /// `SiLU` (swish), `x * sigmoid(x)`, like `torch.nn.functional.silu`.
    Silu => fn silu {
        forward: |x| x / (1.0 + math::exp(-x)) => "x / (1.0f + expf(-x))",
        backward from Input: |g, x| {
            let s = 1.0 / (1.0 + math::exp(-x));
            g * (s * (1.0 + x * (1.0 - s)))
        } => "g * ((1.0f / (1.0f + expf(-x))) * (1.0f + x * (1.0f - 1.0f / (1.0f + expf(-x)))))",
    }
    /// `x` where `x > 0`, else `slope * x`, like `torch.nn.functional.leaky_relu`.
    LeakyRelu(slope = 0.01) => fn leaky_relu {
        forward: |x| if x > 0.0 { x } else { x * slope } => "x > 0.0f ? x : x * slope",
        backward from Input: |g, x| if x > 0.0 { g } else { g * slope }
            => "x > 0.0f ? g : g * slope",
    }
    /// `x` where `x > 0`, else `alpha * (e^x - 1)`, like `torch.nn.functional.elu`.
    Elu(alpha = 1.0) => fn elu {
        forward: |x| if x > 0.0 { x } else { alpha * x.exp_m1() }
            => "x > 0.0f ? x : alpha * expm1f(x)",
        backward from Input: |g, x| if x > 0.0 { g } else { g * alpha * math::exp(x) }
            => "x > 0.0f ? g : g * alpha * expf(x)",
    }
    /// `log(1 + e^(beta x)) / beta`, and `x` itself where `beta x > threshold`, like
    /// `torch.nn.functional.softplus` (whose defaults are `beta = 1`, `threshold = 20`).
    Softplus(beta = 1.0, threshold = 20.0) => fn softplus {
        forward: |x| if x * beta > threshold { x } else { (x * beta).exp().ln_1p() / beta }
            => "x * beta > threshold ? x : log1pf(expf(x * beta)) / beta",
        backward from Input: |g, x| if x * beta > threshold {
            g
        } else {
            let z = (x * beta).exp();
            g * z / (z + 1.0)
        } => "x * beta > threshold ? g : g * expf(x * beta) / (expf(x * beta) + 1.0f)",
    }
    /// Mish, `x * tanh(softplus(x))`, like `torch.nn.functional.mish`.
    Mish => fn mish {
        forward: |x| x * x.exp().ln_1p().tanh() => "x * tanhf(log1pf(expf(x)))",
        backward from Input: |g, x| {
            let t = x.exp().ln_1p().tanh();
            g * (t + x * sigmoid(x) * (1.0 - t * t))
        } => "g * (tanhf(log1pf(expf(x))) + x * sigmoid(x) \
              * (1.0f - tanhf(log1pf(expf(x))) * tanhf(log1pf(expf(x)))))",
    }
    /// `x` clamped to `[min, max]`, like `torch.nn.functional.hardtanh` (whose defaults are
    /// `-1` and `1`); the gradient is 0 outside the open interval, as PyTorch's is.
    Hardtanh(min = -1.0, max = 1.0) => fn hardtanh {
        forward: |x| if x < min { min } else if x > max { max } else { x }
            => "x < min ? min : (x > max ? max : x)",
        backward from Input: |g, x| if x <= min || x >= max { 0.0 } else { g }
            => "x <= min || x >= max ? 0.0f : g",
    }
    /// `min(max(x, 0), 6)`, like `torch.nn.functional.relu6`; the gradient is 0 outside the
    /// open interval, as PyTorch's is.
    Relu6 => fn relu6 {
        forward: |x| x.clamp(0.0, 6.0) => "x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x)",
        backward from Input: |g, x| if x <= 0.0 || x >= 6.0 { 0.0 } else { g }
            => "x <= 0.0f || x >= 6.0f ? 0.0f : g",
    }
    /// A mask, `1.0` where `x < value` and `0.0` elsewhere, like `x < value` in PyTorch.
    LtScalar(value = 0.2) => fn lt {
        forward: |x| f32::from(u8::from(x < value)) => "x < value ? 1.0f : 0.0f",
        backward from Input: |g, x| 0.0 => "0.0f",
    }
    /// A mask, `1.0` where `x > value` and `0.0` elsewhere, like `x > value` in PyTorch.
    GtScalar(value = -0.3) => fn gt {
        forward: |x| f32::from(u8::from(x > value)) => "x > value ? 1.0f : 0.0f",
        backward from Input: |g, x| 0.0 => "0.0f",
    }
}

/// The logistic function, without overflow for large `|v|`.
#[inline(always)]
pub(crate) fn sigmoid(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + math::exp(-v))
    } else {
        let e = math::exp(v);
        e / (1.0 + e)
    }
}

/// `x * Φ(x)`, Φ the standard normal CDF.
#[inline(always)]
fn gelu(v: f32) -> f32 {
    v * math::normal_cdf(v)
}

/// The derivative of [`gelu`]: `Φ(x) + x φ(x)`, with the `Φ(x)` [`gelu`] computes (the two
/// share their one `exp` when computed together).
#[inline(always)]
fn gelu_derivative(v: f32) -> f32 {
    math::normal_cdf(v) + v * math::normal_density(v)
}

/// The kernels of the unary ops, forward and backward.
pub trait UnaryKernel: Memory {
    /// `out[i] = op(x[i])` for every element.
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary(&self, op: UnaryOp, x: &Self::Storage, out: &mut Self::Storage) -> Result<()>;

    /// `x[i] = op(x[i])` in place.
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary_assign(&self, op: UnaryOp, x: &mut Self::Storage) -> Result<()>;

    /// `out[i] = op(x[i])` and `derivative[i] = op'(x[i])` (the backward rule at a gradient
    /// of 1), in one pass.
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary_with_derivative(
        &self,
        op: UnaryOp,
        x: &Self::Storage,
        out: &mut Self::Storage,
        derivative: &mut Self::Storage,
    ) -> Result<()>;

    /// `x[i] = op(x[i])` in place, and `derivative[i]` as [`Self::unary_with_derivative`].
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary_assign_with_derivative(
        &self,
        op: UnaryOp,
        x: &mut Self::Storage,
        derivative: &mut Self::Storage,
    ) -> Result<()>;

    /// `out[i] = grad[i] * op'(..)`, the derivative read from `saved[i]`, the op's input or
    /// output as [`UnaryOp::saves`] says.
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary_backward(
        &self,
        op: UnaryOp,
        grad: &Self::Storage,
        saved: &Self::Storage,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `grad[i] = grad[i] * op'(..)` in place, as [`Self::unary_backward`].
    ///
    /// # Errors
    /// When the kernel fails.
    fn unary_backward_assign(
        &self,
        op: UnaryOp,
        grad: &mut Self::Storage,
        saved: &Self::Storage,
    ) -> Result<()>;
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
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
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

    /// `op` applied to every element, and its derivative at every element: what a training
    /// forward pass keeps of an op whose derivative costs as much as the op itself (GELU),
    /// sharing the work of the two, so that the backward pass is one multiplication. The
    /// derivative is the backward rule's value at a gradient of 1.
    ///
    /// # Errors
    /// When the device cannot allocate or run the kernel.
    pub fn try_map_with_derivative(&self, op: UnaryOp) -> Result<(Self, Self)> {
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
        let mut derivative = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device.unary_with_derivative(
            op,
            &self.storage,
            &mut out.storage,
            &mut derivative.storage,
        )?;
        Ok((out, derivative))
    }

    /// As [`Self::try_map_with_derivative`], applying `op` in place; returns the derivative.
    ///
    /// # Errors
    /// When the device cannot allocate or run the kernel.
    pub fn try_map_with_derivative_(&mut self, op: UnaryOp) -> Result<Self> {
        let mut derivative = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device
            .unary_assign_with_derivative(op, &mut self.storage, &mut derivative.storage)?;
        Ok(derivative)
    }

    /// Applies `op` in place and returns the tensor: how owned operands reuse their buffer.
    #[track_caller]
    pub(crate) fn map_owned(mut self, op: UnaryOp) -> Self {
        self.map_(op);
        self
    }

    /// The gradient through `op`: `self` (the gradient of the op's output) times the op's
    /// derivative, read from `saved`, the op's input or output as [`UnaryOp::saves`] says.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `saved` does not have `self`'s shape.
    pub fn try_map_backward(&self, op: UnaryOp, saved: &Self) -> Result<Self> {
        self.check_same_shape("map_backward", saved)?;
        self.check_same_device("map_backward", saved)?;
        let mut out = Self::try_empty(self.shape.clone(), &self.device)?;
        self.device
            .unary_backward(op, &self.storage, &saved.storage, &mut out.storage)?;
        Ok(out)
    }

    /// As [`Self::try_map_backward`], overwriting `self`.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `saved` does not have `self`'s shape.
    pub fn try_map_backward_(&mut self, op: UnaryOp, saved: &Self) -> Result<()> {
        self.check_same_shape("map_backward_", saved)?;
        self.check_same_device("map_backward_", saved)?;
        self.device
            .unary_backward_assign(op, &mut self.storage, &saved.storage)
    }

    /// `self` where `output > 0`, else 0: the gradient through `relu`, from its output.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `output` does not have `self`'s shape.
    pub fn relu_backward(&self, output: &Self) -> Result<Self> {
        self.try_map_backward(UnaryOp::Relu, output)
    }

    /// `self * output * (1 - output)`: the gradient through `sigmoid`, from its output.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `output` does not have `self`'s shape.
    pub fn sigmoid_backward(&self, output: &Self) -> Result<Self> {
        self.try_map_backward(UnaryOp::Sigmoid, output)
    }

    /// `self * (1 - output^2)`: the gradient through `tanh`, from its output.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `output` does not have `self`'s shape.
    pub fn tanh_backward(&self, output: &Self) -> Result<Self> {
        self.try_map_backward(UnaryOp::Tanh, output)
    }

    /// `self * gelu'(input)`: the gradient through `gelu`, from its input.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `input` does not have `self`'s shape.
    pub fn gelu_backward(&self, input: &Self) -> Result<Self> {
        self.try_map_backward(UnaryOp::Gelu, input)
    }

    /// `self` where `input >= min`, else 0: the gradient through `clamp_min(min)`, like
    /// PyTorch's `clamp` backward (which passes the gradient at `input == min`).
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `input` does not have `self`'s shape.
    pub fn clamp_min_backward(&self, input: &Self, min: f32) -> Result<Self> {
        self.try_map_backward(UnaryOp::ClampMin(min), input)
    }

    /// `self * exponent * input^(exponent - 1)`: the gradient through `pow(exponent)`.
    ///
    /// # Errors
    /// [`Error::Shape`](crate::Error::Shape) when `input` does not have `self`'s shape.
    pub fn pow_backward(&self, input: &Self, exponent: f32) -> Result<Self> {
        self.try_map_backward(UnaryOp::Pow(exponent), input)
    }
}

#[cfg(not(feature = "cuda"))]
impl UnaryKernel for crate::Cuda {
    fn unary(&self, _: UnaryOp, _: &Self::Storage, _: &mut Self::Storage) -> Result<()> {
        self.unreachable()
    }

    fn unary_assign(&self, _: UnaryOp, _: &mut Self::Storage) -> Result<()> {
        self.unreachable()
    }

    fn unary_with_derivative(
        &self,
        _: UnaryOp,
        _: &Self::Storage,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn unary_assign_with_derivative(
        &self,
        _: UnaryOp,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn unary_backward(
        &self,
        _: UnaryOp,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn unary_backward_assign(
        &self,
        _: UnaryOp,
        _: &mut Self::Storage,
        _: &Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use super::UnaryOp;
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

    /// Each new activation against its definition, computed in `f64`.
    #[test]
    fn activations_match_their_definitions() {
        let x: Vec<f64> = input().to_vec().iter().map(|&v| f64::from(v)).collect();
        let expect =
            |f: &dyn Fn(f64) -> f64| -> Vec<f32> { x.iter().map(|&v| f(v) as f32).collect() };
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let softplus = |v: f64| v.exp().ln_1p();
        assert_close(&input().silu().to_vec(), &expect(&|v| v * sigmoid(v)));
        assert_close(
            &input().leaky_relu(0.2).to_vec(),
            &expect(&|v| if v > 0.0 { v } else { 0.2 * v }),
        );
        assert_close(
            &input().elu(1.5).to_vec(),
            &expect(&|v| if v > 0.0 { v } else { 1.5 * v.exp_m1() }),
        );
        assert_close(&input().softplus(1.0, 20.0).to_vec(), &expect(&softplus));
        assert_close(
            &input().softplus(2.0, 1.0).to_vec(),
            &expect(&|v| {
                if 2.0 * v > 1.0 {
                    v
                } else {
                    (2.0 * v).exp().ln_1p() / 2.0
                }
            }),
        );
        assert_close(
            &input().mish().to_vec(),
            &expect(&|v| v * softplus(v).tanh()),
        );
        assert_eq!(
            input().hardtanh(-1.0, 1.0).to_vec(),
            [-1.0, -0.5, 0.0, 0.5, 1.0]
        );
        assert_eq!(input().abs().to_vec(), [2.0, 0.5, 0.0, 0.5, 3.0]);
        assert_close(&input().sin().to_vec(), &expect(&f64::sin));
        assert_close(&input().cos().to_vec(), &expect(&f64::cos));
        assert_close(&input().abs().sqrt().to_vec(), &expect(&|v| v.abs().sqrt()));
        assert_eq!(input().neg().to_vec(), [2.0, 0.5, -0.0, -0.5, -3.0]);
    }

    /// Every op's backward rule against a central difference of its forward function, at
    /// points away from kinks, with the saved value the op names.
    #[test]
    fn every_backward_rule_matches_a_finite_difference() {
        let points = [-1.7f32, -0.6, 0.3, 0.8, 2.2];
        let x = Tensor::from_vec(points.to_vec(), [5], &Cpu);
        let grad = Tensor::from_vec(vec![0.5, -1.0, 2.0, 1.5, -0.25], [5], &Cpu);
        for &op in UnaryOp::EXAMPLES {
            let input = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt) {
                x.abs()
            } else {
                x.clone()
            };
            let saved = match op.saves() {
                crate::ops::elementwise::Saved::Input => input.clone(),
                crate::ops::elementwise::Saved::Output => input.map(op),
            };
            let analytic = grad.try_map_backward(op, &saved).unwrap().to_vec();
            let mut in_place = grad.clone();
            in_place.try_map_backward_(op, &saved).unwrap();
            assert_eq!(in_place.to_vec(), analytic, "{op:?} in place");
            for (i, &v) in input.to_vec().iter().enumerate() {
                let f = |v: f32| {
                    let t = Tensor::from_vec(vec![f64::from(v) as f32], [1], &Cpu);
                    f64::from(t.map(op).item())
                };
                let h = 1e-3f32;
                let numeric = (f(v + h) - f(v - h)) / (2.0 * f64::from(h));
                let expected = f64::from(grad.to_vec()[i]) * numeric;
                assert!(
                    (f64::from(analytic[i]) - expected).abs() <= 2e-3 * expected.abs().max(1.0),
                    "{op:?} at {v}: analytic {} vs numeric {expected}",
                    analytic[i]
                );
            }
        }
    }

    /// Every op's output with its derivative equals its plain output bit for bit, and the
    /// gradient times that derivative its backward rule's value (bit for bit where the rule
    /// is `g * f'`, as for GELU, `SiLU` and Mish); in place too.
    #[test]
    fn the_derivative_is_the_backward_rule_at_a_unit_gradient() {
        let x = Tensor::from_vec(vec![-9.0, -1.7, -0.6, 0.0, 0.3, 0.8, 2.2, 12.0], [8], &Cpu);
        let grad = Tensor::from_vec(vec![0.5, -1.0, 2.0, 1.5, -0.25, 3.0, 1.0, -2.0], [8], &Cpu);
        for &op in UnaryOp::EXAMPLES {
            let input = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt) {
                x.abs()
            } else {
                x.clone()
            };
            let (output, derivative) = input.try_map_with_derivative(op).unwrap();
            assert_eq!(output.to_vec(), input.map(op).to_vec(), "{op:?}");
            let saved = match op.saves() {
                crate::ops::elementwise::Saved::Input => &input,
                crate::ops::elementwise::Saved::Output => &output,
            };
            let ones = Tensor::ones([8], &Cpu);
            let at_one = ones.try_map_backward(op, saved).unwrap().to_vec();
            assert_eq!(derivative.to_vec().map_bits(), at_one.map_bits(), "{op:?}");
            let rule = grad.try_map_backward(op, saved).unwrap().to_vec();
            let product = (&grad * &derivative).to_vec();
            let exact = matches!(op, UnaryOp::Gelu | UnaryOp::Silu | UnaryOp::Mish);
            for (&a, &b) in product.iter().zip(&rule) {
                let close = a == b || (!exact && (a - b).abs() <= 1e-6 * b.abs().max(1.0));
                assert!(close, "{op:?}: {product:?} against {rule:?}");
            }
            let mut in_place = input.clone();
            let derivative_in_place = in_place.try_map_with_derivative_(op).unwrap();
            assert_eq!(in_place.to_vec().map_bits(), output.to_vec().map_bits());
            assert_eq!(
                derivative_in_place.to_vec().map_bits(),
                derivative.to_vec().map_bits()
            );
        }
    }

    /// Floats as bits, so that NaNs compare equal.
    trait MapBits {
        fn map_bits(&self) -> Vec<u32>;
    }

    impl MapBits for Vec<f32> {
        fn map_bits(&self) -> Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
        }
    }

    #[test]
    fn pow_zero_has_a_zero_gradient_even_at_zero() {
        let x = Tensor::from_vec(vec![0.0, 2.0], [2], &Cpu);
        let grad = Tensor::ones([2], &Cpu).pow_backward(&x, 0.0).unwrap();
        assert_eq!(grad.to_vec(), [0.0, 0.0]);
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
        t.map_(UnaryOp::MulScalar(2.0));
        assert_eq!(t.to_vec(), input().map(UnaryOp::MulScalar(2.0)).to_vec());
    }

    #[test]
    fn backward_rules_of_the_classic_activations() {
        let t = |data: &[f32]| Tensor::from_slice(data, [4], &Cpu);
        let grad = t(&[1.0, 2.0, 3.0, 4.0]);
        let x = t(&[-1.0, 0.0, 0.5, 2.0]);
        assert_eq!(
            grad.relu_backward(&x).unwrap().to_vec(),
            [0.0, 0.0, 3.0, 4.0]
        );
        // clamp passes the gradient at the bound, relu (from its output) does not.
        assert_eq!(
            grad.clamp_min_backward(&x, 0.0).unwrap().to_vec(),
            [0.0, 2.0, 3.0, 4.0]
        );
        let y = t(&[0.5, 0.25, 0.0, 1.0]);
        assert_eq!(
            grad.sigmoid_backward(&y).unwrap().to_vec(),
            [0.25, 0.375, 0.0, 0.0]
        );
        assert_eq!(
            grad.tanh_backward(&y).unwrap().to_vec(),
            [0.75, 1.875, 3.0, 0.0]
        );
        assert_eq!(
            grad.pow_backward(&x, 2.0).unwrap().to_vec(),
            [-2.0, 0.0, 3.0, 16.0]
        );
        let error = grad
            .relu_backward(&t(&[0.0; 4]).reshape([2, 2]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "map_backward: expected shape [4], found [2, 2]"
        );
    }
}
