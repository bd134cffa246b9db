//! Learning-rate schedulers with the closed forms of `torch.optim.lr_scheduler`:
//! [`StepLr`], [`ExponentialLr`], [`CosineAnnealingLr`], [`OneCycleLr`], and
//! [`WarmupCosineLr`] (linear warm-up, then cosine), which transformers train with.
//!
//! A [`Schedule`] is the formula; an [`LrScheduler`] drives an optimizer with it. Like
//! PyTorch's, creating the scheduler sets the epoch-0 learning rate, and each
//! [`LrScheduler::step`] (called after `optimizer.step()`) moves to the next epoch.
//!
//! ```
//! use declnet_runtime::optim::{Sgd, SgdConfig, scheduler::{LrScheduler, StepLr}};
//! let mut opt: Sgd = Sgd::new(SgdConfig { lr: 0.1, ..SgdConfig::default() });
//! let mut sched = LrScheduler::new(StepLr { step_size: 2, gamma: 0.5 }, &mut opt);
//! let mut lrs = vec![opt.lr()];
//! for _ in 0..4 {
//!     sched.step(&mut opt);
//!     lrs.push(opt.lr());
//! }
//! assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
//! ```

use std::f64::consts::PI;

use super::{Optimizer, UpdateRule, check};
use crate::backend::Backend;
use crate::error::{Error, Result, or_panic};

/// A learning-rate formula of the epoch (PyTorch's `last_epoch`).
pub trait Schedule {
    /// The scheduler's name in messages (PyTorch's class name).
    const NAME: &'static str;

    /// The learning rate at `epoch`, for an optimizer whose learning rate was `base_lr` when
    /// the scheduler was created.
    ///
    /// # Errors
    /// When the schedule is not defined at `epoch` (past a one-cycle schedule's end).
    fn lr(&self, base_lr: f64, epoch: usize) -> Result<f64>;

    /// The momentum at `epoch`, for schedules that cycle it.
    fn momentum(&self, epoch: usize) -> Option<f64> {
        let _ = epoch;
        None
    }

    /// Checks the schedule's parameters like PyTorch's constructor.
    ///
    /// # Errors
    /// [`Error::HyperParameter`] naming the first invalid one.
    fn validate(&self) -> Result<()>;
}

/// Drives an optimizer's learning rate (and, for one-cycle schedules, its momentum) with a
/// [`Schedule`].
#[derive(Debug, Clone)]
pub struct LrScheduler<S> {
    schedule: S,
    base_lr: f64,
    epoch: usize,
}

impl<S: Schedule> LrScheduler<S> {
    /// Starts `schedule` at epoch 0, setting `optimizer`'s learning rate (and momentum).
    #[track_caller]
    pub fn new<R: UpdateRule, B: Backend>(schedule: S, optimizer: &mut Optimizer<R, B>) -> Self {
        or_panic(Self::try_new(schedule, optimizer))
    }

    /// Starts `schedule` at epoch 0, setting `optimizer`'s learning rate (and momentum).
    ///
    /// # Errors
    /// [`Error::HyperParameter`] for invalid schedule parameters, or a momentum the optimizer
    /// cannot cycle; or when the device refuses a capturable optimizer's new values.
    pub fn try_new<R: UpdateRule, B: Backend>(
        schedule: S,
        optimizer: &mut Optimizer<R, B>,
    ) -> Result<Self> {
        schedule.validate()?;
        let scheduler = Self {
            schedule,
            base_lr: optimizer.lr(),
            epoch: 0,
        };
        scheduler.apply(optimizer)?;
        Ok(scheduler)
    }

    /// The schedule.
    #[must_use]
    pub fn schedule(&self) -> &S {
        &self.schedule
    }

    /// The current epoch (PyTorch's `last_epoch`).
    #[must_use]
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The learning rate the schedule gives at `epoch`.
    ///
    /// # Errors
    /// As [`Schedule::lr`].
    pub fn lr_at(&self, epoch: usize) -> Result<f64> {
        self.schedule.lr(self.base_lr, epoch)
    }

    /// Moves to the next epoch and sets its learning rate, like `scheduler.step()`.
    #[track_caller]
    pub fn step<R: UpdateRule, B: Backend>(&mut self, optimizer: &mut Optimizer<R, B>) {
        or_panic(self.try_step(optimizer));
    }

    /// Moves to the next epoch and sets its learning rate.
    ///
    /// # Errors
    /// As [`Schedule::lr`] (stepping past a one-cycle schedule's end), or when the optimizer
    /// cannot take the new learning rate and momentum; nothing changes then.
    pub fn try_step<R: UpdateRule, B: Backend>(
        &mut self,
        optimizer: &mut Optimizer<R, B>,
    ) -> Result<()> {
        self.epoch += 1;
        let result = self.apply(optimizer);
        if result.is_err() {
            self.epoch -= 1;
        }
        result
    }

    fn apply<R: UpdateRule, B: Backend>(&self, optimizer: &mut Optimizer<R, B>) -> Result<()> {
        let lr = self.lr_at(self.epoch)?;
        optimizer.set_schedule(lr, self.schedule.momentum(self.epoch))
    }
}

/// `base_lr * gamma^(epoch / step_size)` (integer division), like `StepLR`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLr {
    /// Epochs between decays.
    pub step_size: usize,
    /// Factor of each decay (PyTorch's default 0.1).
    pub gamma: f64,
}

impl Schedule for StepLr {
    const NAME: &'static str = "StepLR";

    fn lr(&self, base_lr: f64, epoch: usize) -> Result<f64> {
        let decays = epoch
            .checked_div(self.step_size)
            .ok_or(Error::HyperParameter {
                op: Self::NAME,
                name: "step_size",
                message: "expected a value > 0, found 0".to_owned(),
            })?;
        Ok(base_lr * self.gamma.powf(decays as f64))
    }

    fn validate(&self) -> Result<()> {
        let size = self.step_size as f64;
        check(
            Self::NAME,
            "step_size",
            size,
            self.step_size > 0,
            "a value > 0",
        )
    }
}

/// `base_lr * gamma^epoch`, like `ExponentialLR`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialLr {
    /// Factor of each epoch's decay.
    pub gamma: f64,
}

impl Schedule for ExponentialLr {
    const NAME: &'static str = "ExponentialLR";

    fn lr(&self, base_lr: f64, epoch: usize) -> Result<f64> {
        Ok(base_lr * self.gamma.powf(epoch as f64))
    }

    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// `eta_min + (base_lr - eta_min) (1 + cos(pi epoch / t_max)) / 2`, the closed form of
/// `CosineAnnealingLR`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealingLr {
    /// Epochs of the half cosine.
    pub t_max: usize,
    /// The lowest learning rate (PyTorch's default 0).
    pub eta_min: f64,
}

impl Schedule for CosineAnnealingLr {
    const NAME: &'static str = "CosineAnnealingLR";

    fn lr(&self, base_lr: f64, epoch: usize) -> Result<f64> {
        let cos = (PI * epoch as f64 / self.t_max as f64).cos();
        Ok(self.eta_min + (base_lr - self.eta_min) * (1.0 + cos) / 2.0)
    }

    fn validate(&self) -> Result<()> {
        let t_max = self.t_max as f64;
        check(Self::NAME, "t_max", t_max, self.t_max > 0, "a value > 0")
    }
}

/// A linear warm-up from 0 over `warmup` steps, then half a cosine down to `min_lr` at
/// `total` steps (and `min_lr` after): the schedule GPT training uses, as in Hugging Face's
/// `get_cosine_schedule_with_warmup` (with a floor).
///
/// ```
/// use declnet_runtime::optim::scheduler::{Schedule, WarmupCosineLr};
/// let schedule = WarmupCosineLr { warmup: 10, total: 110, min_lr: 0.0 };
/// assert_eq!(schedule.lr(1.0, 5)?, 0.5);
/// assert_eq!(schedule.lr(1.0, 10)?, 1.0);
/// assert!((schedule.lr(1.0, 60)? - 0.5).abs() < 1e-12);
/// assert_eq!(schedule.lr(1.0, 200)?, 0.0);
/// # Ok::<(), declnet_runtime::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosineLr {
    /// Steps of the linear warm-up.
    pub warmup: usize,
    /// The step at which the cosine reaches `min_lr`.
    pub total: usize,
    /// The floor of the learning rate.
    pub min_lr: f64,
}

impl Schedule for WarmupCosineLr {
    const NAME: &'static str = "WarmupCosineLR";

    fn lr(&self, base_lr: f64, epoch: usize) -> Result<f64> {
        if epoch < self.warmup {
            return Ok(base_lr * epoch as f64 / self.warmup as f64);
        }
        let progress = ((epoch - self.warmup) as f64 / (self.total - self.warmup) as f64).min(1.0);
        Ok(self.min_lr + (base_lr - self.min_lr) * (1.0 + (PI * progress).cos()) / 2.0)
    }

    fn validate(&self) -> Result<()> {
        check(
            Self::NAME,
            "total",
            self.total as f64,
            self.total > self.warmup,
            "more steps than the warm-up",
        )?;
        check(
            Self::NAME,
            "min_lr",
            self.min_lr,
            self.min_lr >= 0.0,
            "a value >= 0",
        )
    }
}

/// How a one-cycle phase moves between its end points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anneal {
    /// Half a cosine (PyTorch's default, `"cos"`).
    #[default]
    Cos,
    /// A straight line (`"linear"`).
    Linear,
}

impl Anneal {
    fn at(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            Self::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
            Self::Linear => (end - start) * pct + start,
        }
    }
}

/// The 1cycle policy, like `OneCycleLR`: warm up from `max_lr / div_factor` to `max_lr` over
/// `pct_start` of the steps, then anneal to `max_lr / div_factor / final_div_factor`, cycling
/// the momentum inversely between `max_momentum` and `base_momentum`. The optimizer's own
/// learning rate is ignored. [`OneCycleLr::new`] gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycleLr {
    /// The peak learning rate.
    pub max_lr: f64,
    /// Steps in the cycle; stepping past it is an error.
    pub total_steps: usize,
    /// Fraction of the cycle spent warming up (default 0.3).
    pub pct_start: f64,
    /// The annealing curve (default cosine).
    pub anneal_strategy: Anneal,
    /// Cycle the optimizer's momentum (`momentum`, or Adam's `beta1`) too (default on).
    pub cycle_momentum: bool,
    /// The lowest momentum (default 0.85).
    pub base_momentum: f64,
    /// The highest momentum (default 0.95).
    pub max_momentum: f64,
    /// `max_lr / div_factor` is the start learning rate (default 25).
    pub div_factor: f64,
    /// The final learning rate is the start one divided by this (default `1e4`).
    pub final_div_factor: f64,
    /// Anneal back to the start learning rate before the final annealing (default off).
    pub three_phase: bool,
}

/// One phase of a one-cycle schedule: it ends at `end_step` (a float, as in PyTorch).
struct Phase {
    end_step: f64,
    lr: (f64, f64),
    momentum: (f64, f64),
}

impl OneCycleLr {
    /// A cycle of `total_steps` peaking at `max_lr`, with PyTorch's defaults otherwise.
    #[must_use]
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal_strategy: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }

    fn phases(&self) -> Vec<Phase> {
        let total = self.total_steps as f64;
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let (low, high) = (self.base_momentum, self.max_momentum);
        if self.three_phase {
            vec![
                Phase {
                    end_step: self.pct_start * total - 1.0,
                    lr: (initial, self.max_lr),
                    momentum: (high, low),
                },
                Phase {
                    end_step: 2.0 * self.pct_start * total - 2.0,
                    lr: (self.max_lr, initial),
                    momentum: (low, high),
                },
                Phase {
                    end_step: total - 1.0,
                    lr: (initial, min),
                    momentum: (high, high),
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: self.pct_start * total - 1.0,
                    lr: (initial, self.max_lr),
                    momentum: (high, low),
                },
                Phase {
                    end_step: total - 1.0,
                    lr: (self.max_lr, min),
                    momentum: (low, high),
                },
            ]
        }
    }

    /// `(lr, momentum)` at `epoch`, following PyTorch's `get_lr`.
    fn at(&self, epoch: usize) -> Result<(f64, f64)> {
        if epoch > self.total_steps {
            return Err(Error::HyperParameter {
                op: Self::NAME,
                name: "total_steps",
                message: format!(
                    "tried to step {epoch} times, but the schedule has {} steps",
                    self.total_steps
                ),
            });
        }
        let step = epoch as f64;
        let phases = self.phases();
        let mut start_step = 0.0;
        for (i, phase) in phases.iter().enumerate() {
            if step <= phase.end_step || i + 1 == phases.len() {
                let pct = (step - start_step) / (phase.end_step - start_step);
                let anneal = self.anneal_strategy;
                return Ok((
                    anneal.at(phase.lr.0, phase.lr.1, pct),
                    anneal.at(phase.momentum.0, phase.momentum.1, pct),
                ));
            }
            start_step = phase.end_step;
        }
        unreachable!("the last phase always matches")
    }
}

impl Schedule for OneCycleLr {
    const NAME: &'static str = "OneCycleLR";

    fn lr(&self, _base_lr: f64, epoch: usize) -> Result<f64> {
        Ok(self.at(epoch)?.0)
    }

    fn momentum(&self, epoch: usize) -> Option<f64> {
        if self.cycle_momentum {
            self.at(epoch).ok().map(|(_, momentum)| momentum)
        } else {
            None
        }
    }

    fn validate(&self) -> Result<()> {
        let total = self.total_steps as f64;
        check(
            Self::NAME,
            "total_steps",
            total,
            self.total_steps > 0,
            "a value > 0",
        )?;
        let pct = self.pct_start;
        check(
            Self::NAME,
            "pct_start",
            pct,
            (0.0..=1.0).contains(&pct),
            "a value in [0, 1]",
        )?;
        check(
            Self::NAME,
            "max_lr",
            self.max_lr,
            self.max_lr >= 0.0,
            "a value >= 0",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, AdamConfig, Sgd, SgdConfig};

    /// Closed forms are evaluated in f64 like PyTorch's Python; values agree to rounding.
    const TOLERANCE: f64 = 1e-12;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= TOLERANCE * expected.abs().max(1e-3),
            "{actual} vs {expected}"
        );
    }

    fn lrs<S: Schedule>(schedule: &S, base_lr: f64, epochs: usize) -> Vec<f64> {
        (0..epochs)
            .map(|e| schedule.lr(base_lr, e).unwrap())
            .collect()
    }

    #[test]
    fn step_exponential_and_cosine_closed_forms() {
        let step = StepLr {
            step_size: 3,
            gamma: 0.1,
        };
        for (actual, expected) in lrs(&step, 1.0, 8)
            .into_iter()
            .zip([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01])
        {
            assert_close(actual, expected);
        }
        let exponential = ExponentialLr { gamma: 0.5 };
        assert_eq!(lrs(&exponential, 0.8, 4), [0.8, 0.4, 0.2, 0.1]);
        let cosine = CosineAnnealingLr {
            t_max: 4,
            eta_min: 0.1,
        };
        let got = lrs(&cosine, 1.1, 9);
        // (1 + cos(pi / 4)) / 2 = 0.853553...
        let quarter = 0.1 + f64::midpoint(1.0, std::f64::consts::FRAC_1_SQRT_2);
        for (actual, expected) in got.into_iter().zip([
            1.1,
            quarter,
            0.6,
            1.2 - quarter,
            0.1,
            1.2 - quarter,
            0.6,
            quarter,
            1.1,
        ]) {
            assert_close(actual, expected);
        }
    }

    #[test]
    fn one_cycle_follows_pytorchs_phases() {
        // max_lr 1, 10 steps: start 1/25 = 0.04, end 0.04 / 1e4; warm-up ends at step
        // 0.3 * 10 - 1 = 2, the annealing at step 9.
        let cycle = OneCycleLr::new(1.0, 10);
        let at = |e| cycle.at(e).unwrap();
        assert_close(at(0).0, 0.04);
        assert_close(at(0).1, 0.95);
        assert_close(at(1).0, 0.52);
        assert_close(at(1).1, 0.90);
        assert_close(at(2).0, 1.0);
        assert_close(at(2).1, 0.85);
        assert_close(at(9).0, 4e-6);
        assert_close(at(9).1, 0.95);
        assert!(cycle.at(10).is_ok(), "PyTorch allows total_steps steps");
        assert_eq!(
            cycle.at(11).unwrap_err().to_string(),
            "OneCycleLR: invalid total_steps: tried to step 11 times, but the schedule has 10 steps"
        );

        let three = one_cycle_three_phase();
        assert_close(three.at(3).unwrap().0, 0.52);
        assert_close(three.at(4).unwrap().0, 0.04);
        assert_close(three.at(4).unwrap().1, 0.95);
        assert_close(three.at(9).unwrap().0, 4e-6);

        // 20 steps: the warm-up ends at step 5, so step 1 is 20% into it.
        let cos = OneCycleLr::new(1.0, 20);
        let linear = OneCycleLr {
            anneal_strategy: Anneal::Linear,
            ..cos
        };
        assert_close(linear.at(1).unwrap().0, 0.232);
        let cos_lr = 1.0 - 0.48 * ((0.2 * PI).cos() + 1.0);
        assert_close(cos.at(1).unwrap().0, cos_lr);
    }

    fn one_cycle_three_phase() -> OneCycleLr {
        OneCycleLr {
            three_phase: true,
            ..OneCycleLr::new(1.0, 10)
        }
    }

    #[test]
    fn scheduler_drives_lr_and_momentum_of_the_optimizer() {
        let mut adam: Adam = Adam::new(AdamConfig::default());
        let mut sched = LrScheduler::new(OneCycleLr::new(1.0, 10), &mut adam);
        assert_close(adam.lr(), 0.04);
        assert_close(adam.rule().betas.0, 0.95);
        sched.step(&mut adam);
        assert_close(adam.lr(), 0.52);
        assert_close(adam.rule().betas.0, 0.90);
        for _ in 1..10 {
            sched.step(&mut adam);
        }
        assert_eq!(sched.epoch(), 10);
        let lr = adam.lr();
        let error = sched.try_step(&mut adam).unwrap_err();
        assert!(
            error.to_string().contains("tried to step 11 times"),
            "{error}"
        );
        assert_eq!(sched.epoch(), 10, "a failed step changes nothing");
        assert_eq!(adam.lr(), lr);

        let mut sgd: Sgd = Sgd::new(SgdConfig::default());
        let error = LrScheduler::try_new(OneCycleLr::new(1.0, 5), &mut sgd).unwrap_err();
        assert!(
            error.to_string().starts_with("SGD: invalid momentum"),
            "{error}"
        );
        let no_cycle = OneCycleLr {
            cycle_momentum: false,
            ..OneCycleLr::new(1.0, 5)
        };
        LrScheduler::new(no_cycle, &mut sgd);
        assert_close(sgd.lr(), 0.04);

        let error = LrScheduler::try_new(
            StepLr {
                step_size: 0,
                gamma: 0.1,
            },
            &mut sgd,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "StepLR: invalid step_size: expected a value > 0, found 0"
        );
        let unchecked = StepLr {
            step_size: 0,
            gamma: 0.1,
        };
        assert!(unchecked.lr(1.0, 3).is_err(), "no division by zero");
    }
}
