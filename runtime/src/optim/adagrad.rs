//! [`Adagrad`]: `torch.optim.Adagrad`.

use super::{Optimizer, UpdateRule, check};
use crate::backend::Cpu;
use crate::error::Result;
use crate::ops::optim::OptimStep;

/// Adagrad, like `torch.optim.Adagrad`.
pub type Adagrad<B = Cpu> = Optimizer<AdagradConfig, B>;

/// The hyper-parameters of [`Adagrad`]; `Default` gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate (default `1e-2`).
    pub lr: f64,
    /// Decay of the learning rate with the step count (default 0).
    pub lr_decay: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Start value of the sum of squared gradients (default 0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator (default `1e-10`).
    pub eps: f64,
    /// Ascend the objective instead of descending it (default off).
    pub maximize: bool,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

impl UpdateRule for AdagradConfig {
    const NAME: &'static str = "Adagrad";

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn validate(&self) -> Result<()> {
        check(Self::NAME, "lr", self.lr, self.lr >= 0.0, "a value >= 0")?;
        let decay = self.lr_decay;
        check(Self::NAME, "lr_decay", decay, decay >= 0.0, "a value >= 0")?;
        let wd = self.weight_decay;
        check(Self::NAME, "weight_decay", wd, wd >= 0.0, "a value >= 0")?;
        let init = self.initial_accumulator_value;
        let name = "initial_accumulator_value";
        check(Self::NAME, name, init, init >= 0.0, "a value >= 0")?;
        check(Self::NAME, "eps", self.eps, self.eps >= 0.0, "a value >= 0")
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        &["sum"]
    }

    fn initial_value(&self) -> f32 {
        self.initial_accumulator_value as f32
    }

    fn kernel(&self, step: u64) -> OptimStep {
        let clr = self.lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        OptimStep::Adagrad {
            neg_clr: (-clr) as f32,
            weight_decay: self.weight_decay as f32,
            eps: self.eps as f32,
            maximize: self.maximize,
        }
    }
}
