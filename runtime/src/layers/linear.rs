//! [`Linear`]: `y = x W^T + b`, PyTorch's `nn.Linear`.

use rand::Rng;

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::param::Param;
use crate::shape::{Dims, Shape};
use crate::tensor::Tensor;

/// A fully connected layer, `y = x W^T + b`, with PyTorch's layout and initialisation.
///
/// `weight` is `[out_features, in_features]` and `bias` is `[out_features]`, so a PyTorch
/// `state_dict` loads unchanged. Both start uniform in `±1/sqrt(in_features)`, the distribution
/// `nn.Linear.reset_parameters` draws from.
#[derive(Debug, Clone)]
pub struct Linear<B: Backend = Cpu> {
    /// `[out_features, in_features]`.
    pub weight: Param<B>,
    /// `[out_features]`, or `None` for a layer declared without bias.
    pub bias: Option<Param<B>>,
}

impl<B: Backend> Linear<B> {
    /// A layer with PyTorch's default initialisation, drawn from `rng`.
    pub fn new<R: Rng + ?Sized>(
        in_features: usize,
        out_features: usize,
        bias: bool,
        device: &B,
        rng: &mut R,
    ) -> Self {
        let bound = 1.0 / (in_features as f32).sqrt();
        let weight = Tensor::uniform([out_features, in_features], -bound, bound, device, rng);
        let bias = bias.then(|| Tensor::uniform([out_features], -bound, bound, device, rng));
        Self {
            weight: Param::new(weight),
            bias: bias.map(Param::new),
        }
    }

    /// The bias of a layer declared with one (the default), for the common case that would
    /// otherwise unwrap the `Option`.
    ///
    /// # Errors
    /// [`Error::Usage`] when the layer was declared with `bias = false`.
    pub fn try_bias(&self) -> Result<&Param<B>> {
        self.bias.as_ref().ok_or_else(|| self.no_bias())
    }

    /// The bias, mutably, as [`Linear::try_bias`].
    ///
    /// # Errors
    /// [`Error::Usage`] when the layer was declared with `bias = false`.
    pub fn try_bias_mut(&mut self) -> Result<&mut Param<B>> {
        let error = self.no_bias();
        self.bias.as_mut().ok_or(error)
    }

    fn no_bias(&self) -> Error {
        Error::Usage(format!(
            "this `Linear<{}, {}>` was declared with `bias = false`: it has no bias",
            self.in_features(),
            self.out_features()
        ))
    }

    /// The width of the input.
    #[must_use]
    pub fn in_features(&self) -> usize {
        self.weight.value().dims()[1]
    }

    /// The width of the output.
    #[must_use]
    pub fn out_features(&self) -> usize {
        self.weight.value().dims()[0]
    }

    /// `x W^T + b` for `x` of shape `[.., in_features]` (`[batch, in]`, `[B, T, in]`), applied
    /// to the last dim like `nn.Linear`.
    ///
    /// # Errors
    /// [`Error::MatmulInnerDims`] or [`Error::Rank`] when `x` is not `[.., in_features]`.
    pub fn forward(&self, x: &Tensor<B>) -> Result<Tensor<B>> {
        let mut y = x.try_rows()?.try_mm(self.weight.value().t())?;
        if let Some(bias) = &self.bias {
            y.try_zip_(crate::ops::binary::BinaryOp::Add, "linear", bias.value())?;
        }
        y.try_reshape(self.output_shape(x))
    }

    /// The output's shape for input `x`: its own with the last dim `out_features` (inline
    /// dims: a training step allocates no shape).
    fn output_shape(&self, x: &Tensor<B>) -> Shape {
        let mut dims = Dims::from_slice(x.dims());
        if let Some(last) = dims.last_mut() {
            *last = self.out_features();
        }
        Shape::from(dims)
    }

    /// Accumulates the parameters' gradients for the input `x` and the output gradient
    /// `grad_out`, and returns the input gradient when `input_grad` asks for it.
    ///
    /// # Errors
    /// [`Error::Shape`] when `grad_out` is not `x`'s shape with `out_features` last.
    pub fn backward(
        &mut self,
        x: &Tensor<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let expected = self.output_shape(x);
        if grad_out.shape() != &expected || x.rank() == 0 {
            return Err(Error::Shape {
                op: "linear backward",
                expected,
                found: grad_out.shape().clone(),
            });
        }
        // dW += dy^T x over every row, straight into the gradient buffer.
        let (rows, grad_rows) = (x.try_rows()?, grad_out.try_rows()?);
        self.weight.try_accumulate_grad_mm(grad_rows.t(), rows)?;
        if let Some(bias) = &mut self.bias {
            bias.try_accumulate_grad_sum_rows(grad_out)?;
        }
        input_grad
            .then(|| {
                grad_rows
                    .try_mm(self.weight.value())?
                    .try_reshape(x.shape().clone())
            })
            .transpose()
    }
}

weight_and_bias_layer!(Linear);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Module;
    use crate::rng::seeded;

    fn layer() -> Linear {
        let mut linear = Linear::new(3, 2, true, &Cpu, &mut seeded(0));
        linear
            .weight
            .set_value(Tensor::from_vec(
                vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0],
                [2, 3],
                &Cpu,
            ))
            .unwrap();
        linear
            .bias
            .as_mut()
            .unwrap()
            .set_value(Tensor::from_vec(vec![0.5, -0.5], [2], &Cpu))
            .unwrap();
        linear
    }

    #[test]
    fn init_is_bounded_by_one_over_sqrt_fan_in() {
        let linear = Linear::new(100, 50, true, &Cpu, &mut seeded(1));
        let bound = 0.1;
        let weights = linear.weight.value().to_vec();
        assert!(weights.iter().all(|w| w.abs() <= bound));
        assert!(
            weights.iter().any(|w| w.abs() > 0.9 * bound),
            "spans the range"
        );
        assert_eq!(linear.try_bias().unwrap().value().dims(), &[50]);
        assert_eq!(linear.param_names(), ["weight", "bias"]);
        assert_eq!(linear.num_params(), 5050);
        assert_eq!(
            Linear::new(4, 2, false, &Cpu, &mut seeded(1)).param_names(),
            ["weight"]
        );
    }

    #[test]
    fn forward_and_backward_by_hand() {
        let mut linear = layer();
        let x = Tensor::from_vec(vec![1.0, 0.0, 2.0, 0.0, 1.0, 1.0], [2, 3], &Cpu);
        let y = linear.forward(&x).unwrap();
        assert_eq!(y.to_vec(), [7.5, 0.5, 5.5, 0.5]);
        let grad_out = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], [2, 2], &Cpu);
        let grad_x = linear.backward(&x, &grad_out, true).unwrap().unwrap();
        assert_eq!(grad_x.to_vec(), [1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
        assert_eq!(
            linear.weight.grad().unwrap().to_vec(),
            [1.0, 0.0, 2.0, 0.0, 1.0, 1.0]
        );
        assert_eq!(
            linear.try_bias().unwrap().grad().unwrap().to_vec(),
            [1.0, 1.0]
        );
        assert!(linear.backward(&x, &grad_out, false).unwrap().is_none());
        assert_eq!(
            linear.try_bias().unwrap().grad().unwrap().to_vec(),
            [2.0, 2.0],
            "a second backward accumulates"
        );
    }

    #[test]
    fn wrong_input_width_names_both_shapes() {
        let linear = layer();
        let error = linear.forward(&Tensor::zeros([4, 5], &Cpu)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "mm: cannot multiply [4, 5] by [3, 2]: inner dims 5 and 3 differ"
        );
    }

    #[test]
    fn a_layer_without_bias_says_so() {
        let mut linear = Linear::new(3, 2, false, &Cpu, &mut seeded(0));
        let error = linear.try_bias_mut().unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: this `Linear<3, 2>` was declared with `bias = false`: it has no bias"
        );
        assert!(linear.try_bias().is_err());
    }
}
