//! [`Sgd`]: `torch.optim.SGD`.

use super::{Optimizer, UpdateRule, check};
use crate::backend::Cpu;
use crate::error::{Error, Result};
use crate::ops::optim::OptimStep;

/// Stochastic gradient descent with optional momentum, like `torch.optim.SGD`.
pub type Sgd<B = Cpu> = Optimizer<SgdConfig, B>;

/// The hyper-parameters of [`Sgd`]; `Default` gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate (default `1e-3`).
    pub lr: f64,
    /// Momentum factor (default 0: no momentum buffer).
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default off; needs momentum and no dampening).
    pub nesterov: bool,
    /// Ascend the objective instead of descending it (default off).
    pub maximize: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
        }
    }
}

impl UpdateRule for SgdConfig {
    const NAME: &'static str = "SGD";

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        if (momentum == 0.0) != (self.momentum == 0.0) {
            return Err(Error::HyperParameter {
                op: Self::NAME,
                name: "momentum",
                message: format!(
                    "cannot change momentum from {} to {momentum}: it decides whether SGD keeps a momentum buffer",
                    self.momentum
                ),
            });
        }
        self.momentum = momentum;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        check(Self::NAME, "lr", self.lr, self.lr >= 0.0, "a value >= 0")?;
        check(
            Self::NAME,
            "momentum",
            self.momentum,
            self.momentum >= 0.0,
            "a value >= 0",
        )?;
        let wd = self.weight_decay;
        check(Self::NAME, "weight_decay", wd, wd >= 0.0, "a value >= 0")?;
        if self.nesterov {
            let ok = self.momentum > 0.0 && self.dampening == 0.0;
            let message = "nesterov momentum needs momentum > 0 and zero dampening";
            check(Self::NAME, "nesterov", self.momentum, ok, message)?;
        }
        Ok(())
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        if self.momentum == 0.0 {
            &[]
        } else {
            &["momentum_buffer"]
        }
    }

    fn kernel(&self, step: u64) -> OptimStep {
        OptimStep::Sgd {
            lr: self.lr as f32,
            weight_decay: self.weight_decay as f32,
            momentum: self.momentum as f32,
            one_minus_dampening: (1.0 - self.dampening) as f32,
            nesterov: self.nesterov,
            maximize: self.maximize,
            // Without momentum there is no buffer to start, and a step that stays the same
            // from the first call on can be captured in a CUDA graph after one eager step.
            first: step == 1 && self.momentum != 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_momentum_makes_the_first_step_differ() {
        let plain = SgdConfig::default();
        assert_eq!(
            plain.kernel(1),
            plain.kernel(2),
            "a CUDA graph replays step 2"
        );
        let momentum = SgdConfig {
            momentum: 0.9,
            ..SgdConfig::default()
        };
        assert_ne!(momentum.kernel(1), momentum.kernel(2));
    }
}
