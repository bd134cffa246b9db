//! [`Function`]: a differentiable operation with a hand-written backward pass, PyTorch's
//! `torch.autograd.Function`, usable inside `network!` bodies as `MyReLU.apply(x)`, and
//! [`gradcheck`], which tests such a backward pass against finite differences.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A shape-preserving differentiable function of one tensor with a hand-written backward pass.
///
/// `forward` computes the output and returns what `backward` will need (PyTorch's
/// `ctx.save_for_backward`); `backward` maps the output's gradient to the input's.
///
/// # Examples
/// ```
/// use declnet_runtime::function::{Function, gradcheck};
/// use declnet_runtime::{Backend, Cpu, Result, Tensor};
///
/// /// `max(x, 0)`, saving its input like the tutorial's `MyReLU`.
/// struct MyReLU;
///
/// impl<B: Backend> Function<B> for MyReLU {
///     type Saved = Tensor<B>;
///     fn forward(&self, input: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
///         Ok((input.clamp_min(0.0), input.try_clone()?))
///     }
///     fn backward(&self, input: &Tensor<B>, grad_output: &Tensor<B>) -> Result<Tensor<B>> {
///         grad_output.clamp_min_backward(input, 0.0)
///     }
/// }
///
/// let x = Tensor::from_vec(vec![-1.0, 0.5, 2.0], [3], &Cpu);
/// let report = gradcheck(&MyReLU, &x, 1e-3)?;
/// assert!(report.max_error < 1e-2);
/// # Ok::<(), declnet_runtime::Error>(())
/// ```
pub trait Function<B: Backend> {
    /// What `forward` saves for `backward`.
    type Saved;

    /// The output (with the input's shape) and what the backward pass needs.
    ///
    /// # Errors
    /// When an op fails.
    fn forward(&self, input: &Tensor<B>) -> Result<(Tensor<B>, Self::Saved)>;

    /// The gradient with respect to the input, given the output's gradient.
    ///
    /// # Errors
    /// When an op fails.
    fn backward(&self, saved: &Self::Saved, grad_output: &Tensor<B>) -> Result<Tensor<B>>;
}

/// Applies `function` and checks it kept the input's shape, as `network!` assumes.
///
/// # Errors
/// [`Error::FunctionShape`] when the output's shape differs, or what `forward` returns.
pub fn apply<B: Backend, F: Function<B>>(
    function: &F,
    name: &'static str,
    input: &Tensor<B>,
) -> Result<(Tensor<B>, F::Saved)> {
    let (output, saved) = function.forward(input)?;
    if output.shape() != input.shape() {
        return Err(Error::FunctionShape {
            function: name,
            input: input.shape().clone(),
            output: output.shape().clone(),
        });
    }
    Ok((output, saved))
}

/// The outcome of [`gradcheck`].
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    /// The largest `|analytic - numeric| / max(1, |numeric|)` over the input's elements.
    pub max_error: f32,
    /// The element where it occurs.
    pub worst_index: usize,
}

/// Compares `function`'s backward pass with central differences of its forward pass at
/// `input`, for the scalar `sum(forward(x) * r)` with a fixed pseudo-random `r`.
///
/// Runs on the host in `f32`: use an input away from kinks and a `step` around `1e-3`-`1e-2`;
/// a correct backward pass gives errors of about `1e-3` or less, a wrong one of order 1.
///
/// # Errors
/// What `forward` or `backward` return; [`Error::FunctionShape`] for a gradient whose shape is
/// not the input's.
pub fn gradcheck<B: Backend, F: Function<B>>(
    function: &F,
    input: &Tensor<B>,
    step: f32,
) -> Result<GradcheckReport> {
    let device = input.device();
    let (output, saved) = apply(function, "gradcheck", input)?;
    // Weights in [-1, 1) from a fixed linear congruential sequence: reproducible, no rng needed.
    let weights: Vec<f32> = (0..output.numel())
        .scan(12_345u32, |state, _| {
            *state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            Some((*state >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
        })
        .collect();
    let weights = Tensor::try_from_vec(weights, output.shape().clone(), device)?;
    let analytic = function.backward(&saved, &weights)?;
    if analytic.shape() != input.shape() {
        return Err(Error::FunctionShape {
            function: "gradcheck (backward)",
            input: input.shape().clone(),
            output: analytic.shape().clone(),
        });
    }
    let analytic = analytic.try_to_vec()?;
    let values = input.try_to_vec()?;
    let objective = |data: Vec<f32>| -> Result<f32> {
        let moved = Tensor::try_from_vec(data, input.shape().clone(), device)?;
        let (output, _) = function.forward(&moved)?;
        output.try_mul(&weights)?.try_sum()?.try_item()
    };
    let mut report = GradcheckReport {
        max_error: 0.0,
        worst_index: 0,
    };
    for (index, &value) in values.iter().enumerate() {
        let mut data = values.clone();
        data[index] = value + step;
        let up = objective(data.clone())?;
        data[index] = value - step;
        let down = objective(data)?;
        let numeric = (up - down) / (2.0 * step);
        let error = (analytic[index] - numeric).abs() / numeric.abs().max(1.0);
        if error > report.max_error {
            report = GradcheckReport {
                max_error: error,
                worst_index: index,
            };
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    /// `x^3` with a deliberately wrong backward (`x^2` instead of `3x^2`) when `broken`.
    struct Cube {
        broken: bool,
    }

    impl Function<Cpu> for Cube {
        type Saved = Tensor;
        fn forward(&self, input: &Tensor) -> Result<(Tensor, Tensor)> {
            Ok((input.pow(3.0), input.try_clone()?))
        }
        fn backward(&self, input: &Tensor, grad_output: &Tensor) -> Result<Tensor> {
            let derivative = if self.broken {
                input.pow(2.0)
            } else {
                input.pow(2.0) * 3.0
            };
            grad_output.try_mul(&derivative)
        }
    }

    /// Returns a tensor of another shape.
    struct Flatten;

    impl Function<Cpu> for Flatten {
        type Saved = ();
        fn forward(&self, input: &Tensor) -> Result<(Tensor, ())> {
            Ok((input.try_clone()?.try_reshape([input.numel()])?, ()))
        }
        fn backward(&self, (): &(), grad_output: &Tensor) -> Result<Tensor> {
            grad_output.try_clone()
        }
    }

    #[test]
    fn gradcheck_accepts_a_correct_backward_and_catches_a_wrong_one() {
        let x = Tensor::from_vec(vec![-1.5, -0.2, 0.3, 1.1], [2, 2], &Cpu);
        let good = gradcheck(&Cube { broken: false }, &x, 1e-3).unwrap();
        assert!(good.max_error < 1e-2, "{good:?}");
        let bad = gradcheck(&Cube { broken: true }, &x, 1e-3).unwrap();
        assert!(bad.max_error > 0.5, "{bad:?}");
    }

    #[test]
    fn apply_rejects_functions_that_change_the_shape() {
        let x = Tensor::zeros([2, 2], &Cpu);
        let error = apply(&Flatten, "Flatten", &x).unwrap_err();
        assert_eq!(
            error.to_string(),
            "custom function `Flatten` must keep its input's shape [2, 2], but returned [4]"
        );
    }
}
