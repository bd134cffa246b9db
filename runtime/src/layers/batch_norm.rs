//! [`BatchNorm`]: PyTorch's `nn.BatchNorm1d` and `nn.BatchNorm2d`, normalising each channel
//! (dim 1) over the batch and every other dim.
//!
//! In training mode a forward pass normalises with the batch's mean and biased variance and
//! folds them into the running statistics (momentum 0.1, the variance unbiased, as PyTorch
//! does); in evaluation mode it normalises with the running statistics. The running
//! statistics are updated by every training-mode forward pass, [`Layer::layer_forward`]
//! included, like a PyTorch module called under `no_grad`; they sit behind a lock so that
//! forward passes keep taking `&self`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::module::{Buffer, BufferMut, Module};
use crate::network::{Layer, kept_input};
use crate::ops::channel::ChannelLayout;
use crate::ops::unary::UnaryOp;
use crate::param::Param;
use crate::tensor::Tensor;

/// A [`BatchNorm`]'s hyperparameters, with PyTorch's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before its square root (1e-5).
    pub eps: f32,
    /// The weight of each batch's statistics in the running ones (0.1).
    pub momentum: f32,
    /// Whether the layer has a learned `weight` (ones) and `bias` (zeros) (true).
    pub affine: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
        }
    }
}

/// Which inputs a [`BatchNorm`] takes, by PyTorch's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchNormKind {
    /// `BatchNorm1d`: `[N, C]` or `[N, C, L]`.
    OneD,
    /// `BatchNorm2d`: `[N, C, H, W]`.
    TwoD,
}

impl BatchNormKind {
    fn name(self) -> &'static str {
        match self {
            BatchNormKind::OneD => "BatchNorm1d",
            BatchNormKind::TwoD => "BatchNorm2d",
        }
    }

    fn takes_rank(self, rank: usize) -> bool {
        match self {
            BatchNormKind::OneD => rank == 2 || rank == 3,
            BatchNormKind::TwoD => rank == 4,
        }
    }
}

/// The statistics a [`BatchNorm`] keeps between batches: its buffers.
#[derive(Debug)]
struct Running<B: Backend> {
    mean: Tensor<B>,
    var: Tensor<B>,
    batches: i64,
}

/// Batch normalisation over `features` channels, with PyTorch's parameters and buffers:
/// `weight`, `bias`, `running_mean`, `running_var` and `num_batches_tracked`.
#[derive(Debug)]
pub struct BatchNorm<B: Backend = Cpu> {
    /// `[C]`, initialised to ones; `None` without `affine`.
    pub weight: Option<Param<B>>,
    /// `[C]`, initialised to zeros; `None` without `affine`.
    pub bias: Option<Param<B>>,
    /// Epsilon, momentum and affine.
    pub config: BatchNormConfig,
    kind: BatchNormKind,
    training: bool,
    running: Mutex<Running<B>>,
}

/// What a training forward pass of a [`BatchNorm`] saves: the statistics it normalised with.
#[derive(Debug)]
pub struct BatchNormTape<B: Backend> {
    mean: Tensor<B>,
    invstd: Tensor<B>,
    /// `weight * invstd`, the map's per-channel slope.
    scale: Tensor<B>,
    /// Whether `mean` and `invstd` are the batch's (training mode), so the gradient flows
    /// through them too.
    batch: bool,
}

impl<B: Backend> BatchNorm<B> {
    /// A layer over `features` channels in training mode, with running mean 0 and variance 1.
    #[must_use]
    pub fn new(kind: BatchNormKind, features: usize, config: BatchNormConfig, device: &B) -> Self {
        let param = |value| Param::new(Tensor::full([features], value, device));
        Self {
            weight: config.affine.then(|| param(1.0)),
            bias: config.affine.then(|| param(0.0)),
            config,
            kind,
            training: true,
            running: Mutex::new(Running {
                mean: Tensor::zeros([features], device),
                var: Tensor::ones([features], device),
                batches: 0,
            }),
        }
    }

    /// Whether the layer is in training mode.
    #[must_use]
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Copies of the running mean and variance.
    ///
    /// # Errors
    /// When the device cannot copy.
    pub fn running_stats(&self) -> Result<(Tensor<B>, Tensor<B>)> {
        let running = self.lock();
        Ok((running.mean.try_clone()?, running.var.try_clone()?))
    }

    /// How many training batches the running statistics have seen.
    #[must_use]
    pub fn num_batches_tracked(&self) -> i64 {
        self.lock().batches
    }

    fn lock(&self) -> MutexGuard<'_, Running<B>> {
        // The statistics are replaced whole, so a panic elsewhere cannot leave them torn.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn features(&self) -> usize {
        self.lock().mean.numel()
    }

    /// Checks that `x` is an input of this layer.
    fn check_input(&self, x: &Tensor<B>) -> Result<ChannelLayout> {
        let name = self.kind.name();
        let features = self.features();
        let fits = self.kind.takes_rank(x.rank()) && x.dims()[1] == features;
        if !fits {
            let expected = match self.kind {
                BatchNormKind::OneD => format!("[N, {features}] or [N, {features}, L]"),
                BatchNormKind::TwoD => format!("[N, {features}, H, W]"),
            };
            return Err(Error::Usage(format!(
                "{name}({features}) expects input {expected}, found {}",
                x.shape()
            )));
        }
        ChannelLayout::of(name, x.shape())
    }

    /// The output for `x`, and what backward needs.
    fn normalise(&self, x: &Tensor<B>) -> Result<(Tensor<B>, BatchNormTape<B>)> {
        let layout = self.check_input(x)?;
        let (mean, invstd) = if self.training {
            self.batch_stats(x, &layout)?
        } else {
            let running = self.lock();
            let invstd = inverse_std(&running.var, self.config.eps)?;
            (running.mean.try_clone()?, invstd)
        };
        let scale = match &self.weight {
            Some(weight) => invstd.try_mul(weight.value())?,
            None => invstd.try_clone()?,
        };
        // y = x * scale + (bias - mean * scale), PyTorch's form of `(x - mean) * invstd * w + b`.
        let mut shift = mean.try_mul(&scale)?;
        shift.try_map_(UnaryOp::MulScalar(-1.0))?;
        if let Some(bias) = &self.bias {
            shift.try_add_scaled_(1.0, bias.value())?;
        }
        let y = x.try_channel_affine(&scale, &shift, None)?;
        let tape = BatchNormTape {
            mean,
            invstd,
            scale,
            batch: self.training,
        };
        Ok((y, tape))
    }

    /// The batch's mean and inverse standard deviation, folded into the running statistics.
    fn batch_stats(&self, x: &Tensor<B>, layout: &ChannelLayout) -> Result<(Tensor<B>, Tensor<B>)> {
        let count = layout.per_channel();
        if count < 2 {
            return Err(Error::Usage(format!(
                "{}: expected more than 1 value per channel when training, got input {}",
                self.kind.name(),
                x.shape()
            )));
        }
        let (mean, var) = x.try_channel_mean_and_variance()?;
        let invstd = inverse_std(&var, self.config.eps)?;
        let momentum = self.config.momentum;
        let unbiased = count as f32 / (count - 1) as f32;
        let mut running = self.lock();
        running.mean.try_map_(UnaryOp::MulScalar(1.0 - momentum))?;
        running.mean.try_add_scaled_(momentum, &mean)?;
        running.var.try_map_(UnaryOp::MulScalar(1.0 - momentum))?;
        running.var.try_add_scaled_(momentum * unbiased, &var)?;
        running.batches += 1;
        Ok((mean, invstd))
    }

    /// The gradients for input `x` and output gradient `grad_out`: accumulates the weight's
    /// and bias's, returns the input's if `input_grad`.
    ///
    /// # Errors
    /// When `grad_out` does not have `x`'s shape, or the device fails.
    pub fn backward(
        &mut self,
        x: &Tensor<B>,
        tape: BatchNormTape<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        if grad_out.shape() != x.shape() {
            return Err(Error::Shape {
                op: "BatchNorm backward",
                expected: x.shape().clone(),
                found: grad_out.shape().clone(),
            });
        }
        let BatchNormTape {
            mean,
            invstd,
            scale,
            batch,
        } = tape;
        // sum(g) and sum(g * xhat) per channel, xhat = (x - mean) * invstd.
        let (grad_sum, grad_dot) = x.try_channel_sum_and_covariance(grad_out, &mean)?;
        let grad_dot = grad_dot.try_mul(&invstd)?;
        if let Some(weight) = &mut self.weight {
            weight.try_accumulate_grad(&grad_dot)?;
        }
        if let Some(bias) = &mut self.bias {
            bias.try_accumulate_grad(&grad_sum)?;
        }
        if !input_grad {
            return Ok(None);
        }
        if !batch {
            let zeros = Tensor::try_zeros(scale.shape().clone(), scale.device())?;
            return grad_out.try_channel_affine(&scale, &zeros, None).map(Some);
        }
        // grad_x = scale * (g - sum(g) / M - xhat * sum(g * xhat) / M)
        //        = g * scale - scale * sum(g) / M + (x - mean) * (-scale * invstd * sum(g xhat) / M)
        let per = 1.0 / ChannelLayout::of("BatchNorm backward", x.shape())?.per_channel() as f32;
        let shift = scale
            .try_mul(&grad_sum)?
            .try_map(UnaryOp::MulScalar(-per))?;
        let coef = scale
            .try_mul(&invstd)?
            .try_mul(&grad_dot)?
            .try_map(UnaryOp::MulScalar(-per))?;
        grad_out
            .try_channel_affine(&scale, &shift, Some((x, &mean, &coef)))
            .map(Some)
    }
}

/// `1 / sqrt(var + eps)`.
fn inverse_std<B: Backend>(var: &Tensor<B>, eps: f32) -> Result<Tensor<B>> {
    let std = var
        .try_map(UnaryOp::AddScalar(eps))?
        .try_map(UnaryOp::Sqrt)?;
    Tensor::try_full(std.shape().clone(), 1.0, std.device())?.try_div(&std)
}

impl<B: Backend> Module<B> for BatchNorm<B> {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param<B>)) {
        if let (Some(weight), Some(bias)) = (&self.weight, &self.bias) {
            f("weight", weight);
            f("bias", bias);
        }
    }

    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param<B>)) {
        if let (Some(weight), Some(bias)) = (&mut self.weight, &mut self.bias) {
            f("weight", weight);
            f("bias", bias);
        }
    }

    fn visit_buffers(&self, f: &mut dyn FnMut(&str, Buffer<'_, B>)) {
        let running = self.lock();
        f("running_mean", Buffer::Tensor(&running.mean));
        f("running_var", Buffer::Tensor(&running.var));
        f("num_batches_tracked", Buffer::Count(running.batches));
    }

    fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, BufferMut<'_, B>)) {
        let running = self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        f("running_mean", BufferMut::Tensor(&mut running.mean));
        f("running_var", BufferMut::Tensor(&mut running.var));
        f(
            "num_batches_tracked",
            BufferMut::Count(&mut running.batches),
        );
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

impl<B: Backend> Layer<B> for BatchNorm<B> {
    type Tape = BatchNormTape<B>;

    fn layer_forward(&self, x: &Tensor<B>) -> Result<Tensor<B>> {
        Ok(self.normalise(x)?.0)
    }

    fn layer_forward_train(&self, x: &Tensor<B>) -> Result<(Tensor<B>, BatchNormTape<B>)> {
        self.normalise(x)
    }

    fn layer_backward(
        &mut self,
        x: Option<&Tensor<B>>,
        tape: BatchNormTape<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let x = kept_input(self.kind.name(), x)?;
        self.backward(x, tape, grad_out, input_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum(y * weights)` for input `x`, with the layer in its current mode.
    fn weighted_output(bn: &BatchNorm, x: &[f32], shape: &[usize], weights: &[f32]) -> f64 {
        let x = Tensor::from_slice(x, shape, &Cpu);
        let y = bn.layer_forward(&x).unwrap().to_vec();
        y.iter()
            .zip(weights)
            .map(|(y, w)| f64::from(*y) * f64::from(*w))
            .sum()
    }

    /// The input, weight and bias gradients against central differences, in both modes, with
    /// and without affine parameters, for `[N, C]`, `[N, C, L]` and `[N, C, H, W]` inputs.
    #[test]
    fn gradients_match_finite_differences() {
        let cases = [
            (BatchNormKind::OneD, vec![5, 3]),
            (BatchNormKind::OneD, vec![2, 3, 4]),
            (BatchNormKind::TwoD, vec![2, 3, 2, 3]),
        ];
        for (kind, shape) in cases {
            for affine in [true, false] {
                for training in [true, false] {
                    check_case(kind, &shape, affine, training);
                }
            }
        }
    }

    fn check_case(kind: BatchNormKind, shape: &[usize], affine: bool, training: bool) {
        let config = BatchNormConfig {
            affine,
            ..BatchNormConfig::default()
        };
        let mut bn = BatchNorm::new(kind, 3, config, &Cpu);
        if affine {
            let weight = Tensor::from_vec(vec![0.5, -1.5, 2.0], [3], &Cpu);
            let bias = Tensor::from_vec(vec![0.1, 0.0, -0.3], [3], &Cpu);
            bn.weight.as_mut().unwrap().set_value(weight).unwrap();
            bn.bias.as_mut().unwrap().set_value(bias).unwrap();
        }
        {
            let running = bn.running.get_mut().unwrap();
            running.mean = Tensor::from_vec(vec![0.3, -0.2, 1.0], [3], &Cpu);
            running.var = Tensor::from_vec(vec![0.5, 2.0, 1.5], [3], &Cpu);
        }
        bn.set_training(training);
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7) % 11) as f32 * 0.37 - 1.5 + i as f32 * 0.01)
            .collect();
        let weights: Vec<f32> = (0..n).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
        let input = Tensor::from_slice(&x, shape, &Cpu);
        let (_, tape) = bn.layer_forward_train(&input).unwrap();
        let g = Tensor::from_slice(&weights, shape, &Cpu);
        let grad = bn.layer_backward(Some(&input), tape, &g, true);
        let grad = grad.unwrap().unwrap();
        let grad = grad.to_vec();
        let what = format!("{kind:?} {shape:?} affine {affine} training {training}");
        let h = 1e-2;
        for i in 0..n {
            let at = |delta: f32| {
                let mut x = x.clone();
                x[i] += delta;
                weighted_output(&bn, &x, shape, &weights)
            };
            let numeric = ((at(h) - at(-h)) / f64::from(2.0 * h)) as f32;
            assert!(
                (grad[i] - numeric).abs() < 2e-2 * numeric.abs().max(1.0),
                "{what}: input {i}: {} vs {numeric}",
                grad[i]
            );
        }
        if !affine {
            assert!(bn.params().is_empty());
            return;
        }
        let params = [bn.weight.as_ref().unwrap(), bn.bias.as_ref().unwrap()];
        let analytic: Vec<Vec<f32>> = params.iter().map(|p| p.grad().unwrap().to_vec()).collect();
        for (which, analytic) in analytic.iter().enumerate() {
            for c in 0..3 {
                let at = |delta: f32| {
                    let mut probe = BatchNorm::new(kind, 3, config, &Cpu);
                    for (index, param) in
                        [&mut probe.weight, &mut probe.bias].into_iter().enumerate()
                    {
                        let mut value = params[index].value().to_vec();
                        if index == which {
                            value[c] += delta;
                        }
                        let value = Tensor::from_vec(value, [3], &Cpu);
                        param.as_mut().unwrap().set_value(value).unwrap();
                    }
                    let (mean, var) = bn.running_stats().unwrap();
                    *probe.running.get_mut().unwrap() = Running {
                        mean,
                        var,
                        batches: 0,
                    };
                    probe.set_training(training);
                    weighted_output(&probe, &x, shape, &weights)
                };
                let numeric = ((at(h) - at(-h)) / f64::from(2.0 * h)) as f32;
                assert!(
                    (analytic[c] - numeric).abs() < 2e-2 * numeric.abs().max(1.0),
                    "{what}: param {which} channel {c}: {} vs {numeric}",
                    analytic[c]
                );
            }
        }
    }

    /// The running statistics follow PyTorch's update: momentum 0.1, unbiased variance.
    #[test]
    fn running_statistics_follow_pytorch() {
        let bn = BatchNorm::new(BatchNormKind::OneD, 1, BatchNormConfig::default(), &Cpu);
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 6.0], [4, 1], &Cpu);
        bn.layer_forward(&x).unwrap();
        let (mean, var) = bn.running_stats().unwrap();
        // Mean 3, unbiased variance 14 / 3.
        assert!((mean.to_vec()[0] - 0.3).abs() < 1e-6);
        assert!((var.to_vec()[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6);
        assert_eq!(bn.num_batches_tracked(), 1);
    }
}
