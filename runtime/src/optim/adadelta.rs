//! [`Adadelta`]: `torch.optim.Adadelta`.

use super::{Optimizer, UpdateRule, check};
use crate::backend::Cpu;
use crate::error::Result;
use crate::ops::optim::OptimStep;

/// Adadelta, like `torch.optim.Adadelta`.
pub type Adadelta<B = Cpu> = Optimizer<AdadeltaConfig, B>;

/// The hyper-parameters of [`Adadelta`]; `Default` gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdadeltaConfig {
    /// Scale of the update (default 1).
    pub lr: f64,
    /// Decay of the running averages (default 0.9).
    pub rho: f64,
    /// Added inside the square roots (default `1e-6`).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Ascend the objective instead of descending it (default off).
    pub maximize: bool,
}

impl Default for AdadeltaConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

impl UpdateRule for AdadeltaConfig {
    const NAME: &'static str = "Adadelta";

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn validate(&self) -> Result<()> {
        check(Self::NAME, "lr", self.lr, self.lr >= 0.0, "a value >= 0")?;
        let rho = self.rho;
        check(
            Self::NAME,
            "rho",
            rho,
            (0.0..=1.0).contains(&rho),
            "a value in [0, 1]",
        )?;
        check(Self::NAME, "eps", self.eps, self.eps >= 0.0, "a value >= 0")?;
        let wd = self.weight_decay;
        check(Self::NAME, "weight_decay", wd, wd >= 0.0, "a value >= 0")
    }

    fn buffer_names(&self) -> &'static [&'static str] {
        &["square_avg", "acc_delta"]
    }

    fn kernel(&self, _step: u64) -> OptimStep {
        OptimStep::Adadelta {
            lr: self.lr as f32,
            rho: self.rho as f32,
            one_minus_rho: (1.0 - self.rho) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            maximize: self.maximize,
        }
    }
}
