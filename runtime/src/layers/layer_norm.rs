//! [`LayerNorm`]: PyTorch's `nn.LayerNorm(len)`, normalising each row of the last dim; the
//! same in training and evaluation mode.

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::module::Module;
use crate::network::{Layer, kept_input};
use crate::ops::norm::RowStats;
use crate::param::Param;
use crate::tensor::Tensor;

/// A [`LayerNorm`]'s options, with PyTorch's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormConfig {
    /// Added to the variance before its square root (1e-5).
    pub eps: f32,
    /// Whether the layer has a learned `weight` (ones) (true).
    pub elementwise_affine: bool,
    /// Whether it also has a learned `bias` (zeros), when affine (true).
    pub bias: bool,
}

impl Default for LayerNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
        }
    }
}

/// Layer normalisation over a last dim of `len`, with PyTorch's `weight` and `bias`.
#[derive(Debug, Clone)]
pub struct LayerNorm<B: Backend = Cpu> {
    /// `[len]`, initialised to ones; `None` without `elementwise_affine`.
    pub weight: Option<Param<B>>,
    /// `[len]`, initialised to zeros; `None` without `elementwise_affine` or `bias`.
    pub bias: Option<Param<B>>,
    /// Epsilon and which parameters there are.
    pub config: LayerNormConfig,
    len: usize,
}

impl<B: Backend> LayerNorm<B> {
    /// A layer normalising rows of `len`, with PyTorch's initialisation.
    #[must_use]
    pub fn new(len: usize, config: LayerNormConfig, device: &B) -> Self {
        let param = |value| Param::new(Tensor::full([len], value, device));
        let affine = config.elementwise_affine;
        Self {
            weight: affine.then(|| param(1.0)),
            bias: (affine && config.bias).then(|| param(0.0)),
            config,
            len,
        }
    }

    /// The forward pass, and the row statistics backward reads.
    ///
    /// # Errors
    /// When the last dim of `x` is not the layer's length, or the device fails.
    pub fn forward(&self, x: &Tensor<B>) -> Result<(Tensor<B>, RowStats<B>)> {
        if x.dims().last() != Some(&self.len) {
            return Err(Error::Usage(format!(
                "LayerNorm({}) expects input [.., {}], found {}",
                self.len,
                self.len,
                x.shape()
            )));
        }
        x.try_layer_norm(
            self.weight.as_ref().map(Param::value),
            self.bias.as_ref().map(Param::value),
            self.config.eps,
        )
    }

    /// Accumulates the weight's and bias's gradients for input `x` and output gradient
    /// `grad_out`; returns the input's gradient if `input_grad`.
    ///
    /// # Errors
    /// When the shapes do not fit, or the device fails.
    pub fn backward(
        &mut self,
        x: &Tensor<B>,
        stats: &RowStats<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let weight = self.weight.as_ref().map(Param::value);
        let grad_x = if input_grad {
            Some(grad_out.try_layer_norm_backward(x, stats, weight)?)
        } else {
            None
        };
        // Both parameters' gradients are column sums over every row, of `grad * xhat` and
        // of `grad`.
        if self.weight.is_some() || self.bias.is_some() {
            let (grad_weight, grad_bias) = grad_out.try_layer_norm_param_grads(x, stats)?;
            if let Some(weight) = &mut self.weight {
                weight.try_accumulate_grad(&grad_weight)?;
            }
            if let Some(bias) = &mut self.bias {
                bias.try_accumulate_grad(&grad_bias)?;
            }
        }
        Ok(grad_x)
    }
}

impl<B: Backend> Module<B> for LayerNorm<B> {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param<B>)) {
        if let Some(weight) = &self.weight {
            f("weight", weight);
        }
        if let Some(bias) = &self.bias {
            f("bias", bias);
        }
    }

    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param<B>)) {
        if let Some(weight) = &mut self.weight {
            f("weight", weight);
        }
        if let Some(bias) = &mut self.bias {
            f("bias", bias);
        }
    }
}

impl<B: Backend> Layer<B> for LayerNorm<B> {
    type Tape = RowStats<B>;

    fn layer_forward(&self, x: &Tensor<B>) -> Result<Tensor<B>> {
        Ok(self.forward(x)?.0)
    }

    fn layer_forward_train(&self, x: &Tensor<B>) -> Result<(Tensor<B>, RowStats<B>)> {
        self.forward(x)
    }

    fn layer_backward(
        &mut self,
        x: Option<&Tensor<B>>,
        stats: RowStats<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let x = kept_input("LayerNorm", x)?;
        self.backward(x, &stats, grad_out, input_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    /// Every gradient against central differences, with and without the parameters, on a
    /// `[2, 3, 5]` input.
    #[test]
    fn gradients_match_finite_differences() {
        for (affine, bias) in [(true, true), (true, false), (false, false)] {
            let config = LayerNormConfig {
                elementwise_affine: affine,
                bias,
                ..LayerNormConfig::default()
            };
            let mut layer = LayerNorm::new(5, config, &Cpu);
            if let Some(weight) = &mut layer.weight {
                weight
                    .set_value(Tensor::randn([5], &Cpu, &mut seeded(1)))
                    .unwrap();
            }
            if let Some(bias) = &mut layer.bias {
                bias.set_value(Tensor::randn([5], &Cpu, &mut seeded(2)))
                    .unwrap();
            }
            let x = Tensor::randn([2, 3, 5], &Cpu, &mut seeded(3));
            let g = Tensor::randn([2, 3, 5], &Cpu, &mut seeded(4));
            let (_, stats) = layer.forward(&x).unwrap();
            let grad_x = layer.backward(&x, &stats, &g, true).unwrap().unwrap();
            let objective = |layer: &LayerNorm, x: &Tensor| -> f64 {
                let y = layer.forward(x).unwrap().0.to_vec();
                y.iter()
                    .zip(g.to_vec())
                    .map(|(y, g)| f64::from(y * g))
                    .sum()
            };
            let h = 1e-2f32;
            for i in 0..x.numel() {
                let at = |delta: f32| {
                    let mut data = x.to_vec();
                    data[i] += delta;
                    objective(&layer, &Tensor::from_vec(data, [2, 3, 5], &Cpu))
                };
                let numeric = ((at(h) - at(-h)) / f64::from(2.0 * h)) as f32;
                let analytic = grad_x.to_vec()[i];
                assert!(
                    (analytic - numeric).abs() < 1e-2 * numeric.abs().max(1.0),
                    "affine {affine} bias {bias} input {i}: {analytic} vs {numeric}"
                );
            }
            let grads: Vec<(String, Vec<f32>)> = layer
                .params()
                .iter()
                .map(|(name, p)| (name.to_string(), p.grad().unwrap().to_vec()))
                .collect();
            for (name, analytic) in grads {
                for j in 0..5 {
                    let at = |delta: f32| {
                        let mut probe = layer.clone();
                        probe.visit_params_mut(&mut |n, p| {
                            if n == name {
                                let mut value = p.value().to_vec();
                                value[j] += delta;
                                p.set_value(Tensor::from_vec(value, [5], &Cpu)).unwrap();
                            }
                        });
                        objective(&probe, &x)
                    };
                    let numeric = ((at(h) - at(-h)) / f64::from(2.0 * h)) as f32;
                    assert!(
                        (analytic[j] - numeric).abs() < 1e-2 * numeric.abs().max(1.0),
                        "{name} {j}: {} vs {numeric}",
                        analytic[j]
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_of_another_length_is_an_error() {
        let layer = LayerNorm::new(4, LayerNormConfig::default(), &Cpu);
        let error = layer.forward(&Tensor::zeros([2, 5], &Cpu)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: LayerNorm(4) expects input [.., 4], found [2, 5]"
        );
    }
}
