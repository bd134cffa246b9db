//! [`Adam`]: `torch.optim.Adam`.

use super::{Optimizer, UpdateRule, check};
use crate::backend::Cpu;
use crate::error::Result;
use crate::ops::optim::{AdamScalars, DeviceHyper, OptimStep, StepScalars};

/// Adam, like `torch.optim.Adam` (weight decay as an L2 term added to the gradient).
pub type Adam<B = Cpu> = Optimizer<AdamConfig, B>;

/// The hyper-parameters of [`Adam`]; `Default` gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default `1e-3`).
    pub lr: f64,
    /// Decay rates of the first and second moment (default `(0.9, 0.999)`).
    pub betas: (f64, f64),
    /// Added to the denominator (default `1e-8`).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (default off).
    pub amsgrad: bool,
    /// Ascend the objective instead of descending it (default off).
    pub maximize: bool,
    /// Keep the step count, learning rate and `beta1` on the device and compute the bias
    /// corrections there, like PyTorch's `capturable=True` with a tensor learning rate, so a
    /// [`StepGraph`](crate::StepGraph) can capture the step and a scheduler still reaches its
    /// replays (default off: computed on the host, as PyTorch does by default; the two agree
    /// to the last bit on the CPU).
    pub capturable: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            capturable: false,
        }
    }
}

/// Checks Adam-family hyper-parameters like PyTorch's constructor.
pub(super) fn validate_adam(
    op: &'static str,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
) -> Result<()> {
    check(op, "lr", lr, lr >= 0.0, "a value >= 0")?;
    check(op, "eps", eps, eps >= 0.0, "a value >= 0")?;
    let (beta1, beta2) = betas;
    check(
        op,
        "beta1",
        beta1,
        (0.0..1.0).contains(&beta1),
        "a value in [0, 1)",
    )?;
    check(
        op,
        "beta2",
        beta2,
        (0.0..1.0).contains(&beta2),
        "a value in [0, 1)",
    )?;
    check(
        op,
        "weight_decay",
        weight_decay,
        weight_decay >= 0.0,
        "a value >= 0",
    )
}

/// The Adam-family kernel of update `step`. The scalars that depend on the step, the
/// learning rate or `beta1` are computed here in `f64`, as PyTorch computes them in Python;
/// a capturable rule leaves them NaN and the kernel computes them on the device from the
/// values kept there (see [`StepScalars`]), so its update is the same at every step.
pub(super) fn adam_kernel(
    config: &AdamConfig,
    decoupled_weight_decay: bool,
    step: u64,
) -> OptimStep {
    let (beta1, beta2) = config.betas;
    // AdamW decays the parameter (`p *= 1 - lr * wd`); Adam adds `wd * p` to the gradient.
    let (decoupled, l2) = if decoupled_weight_decay {
        (config.weight_decay, 0.0)
    } else {
        (0.0, config.weight_decay)
    };
    let AdamScalars {
        decay_factor,
        one_minus_beta1,
        bias_correction2_sqrt,
        neg_step_size,
    } = if config.capturable {
        AdamScalars {
            decay_factor: f32::NAN,
            one_minus_beta1: f32::NAN,
            bias_correction2_sqrt: f32::NAN,
            neg_step_size: f32::NAN,
        }
    } else {
        AdamScalars::new(config.lr, beta1, beta2, decoupled, step as f64)
    };
    OptimStep::Adam {
        decay_factor,
        weight_decay: l2 as f32,
        one_minus_beta1,
        beta2: beta2 as f32,
        one_minus_beta2: (1.0 - beta2) as f32,
        eps: config.eps as f32,
        bias_correction2_sqrt,
        neg_step_size,
        amsgrad: config.amsgrad,
        maximize: config.maximize,
        device_scalars: config.capturable.then_some(StepScalars::Adam {
            beta2,
            decoupled_weight_decay: decoupled,
        }),
    }
}

impl UpdateRule for AdamConfig {
    const NAME: &'static str = "Adam";

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
        if self.amsgrad {
            &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            &["exp_avg", "exp_avg_sq"]
        }
    }

    fn kernel(&self, step: u64) -> OptimStep {
        adam_kernel(self, false, step)
    }

    fn device_hyper(&self) -> Option<DeviceHyper> {
        self.capturable.then_some(DeviceHyper {
            lr: self.lr,
            beta1: self.betas.0,
        })
    }
}
