//! [`RmsProp`]: `torch.optim.RMSprop`.

use super::{Optimizer, UpdateRule, check};
use crate::backend::Cpu;
use crate::error::{Error, Result};
use crate::ops::optim::OptimStep;

/// `RMSprop`, like `torch.optim.RMSprop`.
pub type RmsProp<B = Cpu> = Optimizer<RmsPropConfig, B>;

/// The hyper-parameters of [`RmsProp`]; `Default` gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (default `1e-2`).
    pub lr: f64,
    /// Decay of the running averages (default 0.99).
    pub alpha: f64,
    /// Added to the denominator (default `1e-8`).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0: no momentum buffer).
    pub momentum: f64,
    /// Normalise by an estimate of the variance instead of the second moment (default off).
    pub centered: bool,
    /// Ascend the objective instead of descending it (default off).
    pub maximize: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

impl UpdateRule for RmsPropConfig {
    const NAME: &'static str = "RMSprop";

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        if (momentum > 0.0) != (self.momentum > 0.0) {
            return Err(Error::HyperParameter {
                op: Self::NAME,
                name: "momentum",
                message: format!(
                    "cannot change momentum from {} to {momentum}: it decides whether RMSprop keeps a momentum buffer",
                    self.momentum
                ),
            });
        }
        self.momentum = momentum;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        check(Self::NAME, "lr", self.lr, self.lr >= 0.0, "a value >= 0")?;
        check(Self::NAME, "eps", self.eps, self.eps >= 0.0, "a value >= 0")?;
        let m = self.momentum;
        check(Self::NAME, "momentum", m, m >= 0.0, "a value >= 0")?;
        let wd = self.weight_decay;
        check(Self::NAME, "weight_decay", wd, wd >= 0.0, "a value >= 0")?;
        check(
            Self::NAME,
            "alpha",
            self.alpha,
            self.alpha >= 0.0,
            "a value >= 0",
        )
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        match (self.momentum > 0.0, self.centered) {
            (false, false) => &["square_avg"],
            (true, false) => &["square_avg", "momentum_buffer"],
            (false, true) => &["square_avg", "grad_avg"],
            (true, true) => &["square_avg", "momentum_buffer", "grad_avg"],
        }
    }

    fn kernel(&self, _step: u64) -> OptimStep {
        OptimStep::RmsProp {
            lr: self.lr as f32,
            alpha: self.alpha as f32,
            one_minus_alpha: (1.0 - self.alpha) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            momentum: self.momentum as f32,
            centered: self.centered,
            maximize: self.maximize,
        }
    }
}
