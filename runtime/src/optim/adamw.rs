//! [`AdamW`]: `torch.optim.AdamW`.

use super::adam::{adam_kernel, validate_adam};
use super::{AdamConfig, Optimizer, UpdateRule};
use crate::backend::Cpu;
use crate::error::Result;
use crate::ops::optim::{DeviceHyper, OptimStep};

/// Adam with decoupled weight decay (`p *= 1 - lr * weight_decay` before the Adam update), like
/// `torch.optim.AdamW`.
pub type AdamW<B = Cpu> = Optimizer<AdamWConfig, B>;

/// The hyper-parameters of [`AdamW`]; `Default` gives PyTorch's defaults (the same as Adam's,
/// except `weight_decay = 1e-2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (default `1e-3`).
    pub lr: f64,
    /// Decay rates of the first and second moment (default `(0.9, 0.999)`).
    pub betas: (f64, f64),
    /// Added to the denominator (default `1e-8`).
    pub eps: f64,
    /// Decoupled weight decay (default `1e-2`).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (default off).
    pub amsgrad: bool,
    /// Ascend the objective instead of descending it (default off).
    pub maximize: bool,
    /// Keep the step count, learning rate and `beta1` on the device, as
    /// [`AdamConfig::capturable`](super::AdamConfig::capturable) does (default off).
    pub capturable: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
            capturable: false,
        }
    }
}

impl UpdateRule for AdamWConfig {
    const NAME: &'static str = "AdamW";

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        self.betas.0 = momentum;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        validate_adam(Self::NAME, self.lr, self.betas, self.eps, self.weight_decay)
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        self.as_adam().buffer_names()
    }

    fn kernel(&self, step: u64) -> OptimStep {
        adam_kernel(&self.as_adam(), true, step)
    }

    fn device_hyper(&self) -> Option<DeviceHyper> {
        self.as_adam().device_hyper()
    }
}

impl AdamWConfig {
    /// The same hyper-parameters as an Adam rule; `kernel` decouples the weight decay.
    fn as_adam(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
            maximize: self.maximize,
            capturable: self.capturable,
        }
    }
}
