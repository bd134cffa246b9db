//! Optimizers with `torch.optim`'s update rules, hyper-parameters and defaults, and learning-rate
//! schedulers.
//!
//! An [`Optimizer`] pairs an [`UpdateRule`] (the hyper-parameters: [`SgdConfig`],
//! [`AdamConfig`], [`AdamWConfig`], [`AdadeltaConfig`], [`AdagradConfig`], [`RmsPropConfig`])
//! with per-parameter state, keyed by the order in which a [`Module`] visits its parameters.
//! Like PyTorch, a parameter without a gradient is skipped by [`Optimizer::step`]: its state is
//! not touched (a zero gradient still decays momentum; no gradient does not).
//!
//! ```
//! use declnet_runtime::{Cpu, Module, Param, Tensor};
//! use declnet_runtime::optim::{Sgd, SgdConfig};
//!
//! struct One(Param);
//! impl Module<Cpu> for One {
//!     fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) { f("w", &self.0) }
//!     fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) { f("w", &mut self.0) }
//! }
//!
//! let mut model = One(Param::new(Tensor::from_vec(vec![1.0], [1], &Cpu)));
//! let mut opt = Sgd::new(SgdConfig { lr: 0.5, momentum: 0.9, ..SgdConfig::default() });
//! model.0.accumulate_grad(&Tensor::from_vec(vec![1.0], [1], &Cpu));
//! opt.step(&mut model);
//! assert_eq!(model.0.value().to_vec(), [0.5]);
//! opt.zero_grad(&mut model);
//! opt.step(&mut model); // no gradient: nothing moves, the momentum buffer is kept
//! assert_eq!(model.0.value().to_vec(), [0.5]);
//! ```

mod adadelta;
mod adagrad;
mod adam;
mod adamw;
mod rmsprop;
pub mod scheduler;
mod sgd;
mod state_file;

pub use adadelta::{Adadelta, AdadeltaConfig};
pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig};
pub use adamw::{AdamW, AdamWConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

use std::fmt;

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result, or_panic};
use crate::module::Module;
use crate::ops::optim::{DeviceHyper, OptimStep, STEP_SCALARS_LEN, fused_step};
use crate::param::Param;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The hyper-parameters of one optimizer and how they turn into a fused update per step.
pub trait UpdateRule: Clone + fmt::Debug {
    /// PyTorch's class name (`SGD`, `Adam`), recorded in exported state.
    const NAME: &'static str;

    /// The learning rate.
    fn lr(&self) -> f64;

    /// Sets the learning rate (what schedulers do).
    fn set_lr(&mut self, lr: f64);

    /// Sets the momentum a one-cycle schedule cycles (`momentum`, or Adam's `beta1`).
    ///
    /// # Errors
    /// [`Error::HyperParameter`] when the rule has no such momentum, or when setting it would
    /// change which state buffers the rule keeps (momentum 0 keeps no buffer).
    fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        let _ = momentum;
        Err(Error::HyperParameter {
            op: Self::NAME,
            name: "momentum",
            message: "this optimizer has no momentum to cycle".to_owned(),
        })
    }

    /// Checks the hyper-parameters the way PyTorch's constructor does.
    ///
    /// # Errors
    /// [`Error::HyperParameter`] naming the first invalid one.
    fn validate(&self) -> Result<()>;

    /// The names of the per-parameter state buffers, as in PyTorch's `state_dict`.
    fn buffer_names(&self) -> &'static [&'static str];

    /// The value state buffers start at.
    fn initial_value(&self) -> f32 {
        0.0
    }

    /// The fused update of a parameter's `step`-th update (counting from 1). A capturable
    /// rule's update advances a step count kept on the device instead, and computes the
    /// scalars that depend on it there ([`OptimStep::device_scalars`]).
    fn kernel(&self, step: u64) -> OptimStep;

    /// The hyper-parameters a capturable rule keeps on the device, next to its step count,
    /// so changing them (a scheduler) reaches a captured graph; `None` (the default) for a
    /// rule that is not capturable.
    fn device_hyper(&self) -> Option<DeviceHyper> {
        None
    }
}

/// Checks one hyper-parameter, PyTorch-style: `ok` or an error naming it and the expectation.
pub(crate) fn check(
    op: &'static str,
    name: &'static str,
    value: f64,
    ok: bool,
    expected: &str,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::HyperParameter {
            op,
            name,
            message: format!("expected {expected}, found {value}"),
        })
    }
}

/// One parameter's optimizer state.
#[derive(Debug)]
struct Slot<B: Backend> {
    name: String,
    shape: Shape,
    /// Where the parameter, and so its buffers, live.
    device: B,
    /// Updates done so far (PyTorch's `state["step"]`).
    step: u64,
    /// Empty until the first update, then one buffer per [`UpdateRule::buffer_names`].
    buffers: Vec<B::Storage>,
    /// A capturable rule's [`StepScalars`](crate::ops::optim::StepScalars) buffer, whose
    /// count is the truth once a captured graph has replayed updates (`step` counts only those
    /// run from the host).
    scalars: Option<B::Storage>,
}

impl<B: Backend> Slot<B> {
    /// The updates done so far: the device's count for a capturable rule.
    fn steps_done(&self) -> Result<u64> {
        match &self.scalars {
            #[allow(clippy::cast_sign_loss, reason = "a count of steps, never negative")]
            Some(scalars) => Ok(self.device.download(scalars)?[0] as u64),
            None => Ok(self.step),
        }
    }
}

/// An optimizer: an [`UpdateRule`] and per-parameter state.
#[derive(Debug)]
pub struct Optimizer<R: UpdateRule, B: Backend = Cpu> {
    rule: R,
    slots: Vec<Slot<B>>,
}

/// An optimizer's state as named tensors and scalars, ready to be written to a safetensors
/// file: restoring it into a fresh optimizer (built with the same hyper-parameters) resumes a
/// run exactly.
///
/// Tensors are named `<param>.<buffer>` (`linear1.weight.exp_avg`); scalars are the learning
/// rate `lr` and each stepped parameter's update count `<param>.step`.
/// [`OptimizerState::save`] and [`OptimizerState::load`] keep it in a file.
#[derive(Debug, Clone)]
pub struct OptimizerState<B: Backend = Cpu> {
    /// The optimizer's PyTorch class name.
    pub optimizer: String,
    /// Scalar metadata.
    pub scalars: Vec<(String, f64)>,
    /// The state buffers.
    pub tensors: Vec<(String, Tensor<B>)>,
}

impl<R: UpdateRule, B: Backend> Optimizer<R, B> {
    /// An optimizer with `rule`'s hyper-parameters and no state yet.
    #[track_caller]
    #[must_use]
    pub fn new(rule: R) -> Self {
        or_panic(Self::try_new(rule))
    }

    /// An optimizer with `rule`'s hyper-parameters and no state yet.
    ///
    /// # Errors
    /// [`Error::HyperParameter`] when PyTorch would reject a hyper-parameter.
    pub fn try_new(rule: R) -> Result<Self> {
        rule.validate()?;
        Ok(Self {
            rule,
            slots: Vec::new(),
        })
    }

    /// The hyper-parameters.
    #[must_use]
    pub fn rule(&self) -> &R {
        &self.rule
    }

    /// The learning rate.
    #[must_use]
    pub fn lr(&self) -> f64 {
        self.rule.lr()
    }

    /// Sets the learning rate.
    ///
    /// # Panics
    /// As [`try_set_lr`](Self::try_set_lr) fails.
    #[track_caller]
    pub fn set_lr(&mut self, lr: f64) {
        or_panic(self.try_set_lr(lr));
    }

    /// Sets the learning rate; a capturable rule also writes it to the device, where the
    /// updates (and a captured graph's replays of them) read it.
    ///
    /// # Errors
    /// [`Error::HyperParameter`] for a learning rate the rule rejects (negative, NaN), or
    /// when the device cannot copy (inside a captured step, for one); nothing changes then.
    pub fn try_set_lr(&mut self, lr: f64) -> Result<()> {
        self.change_rule(|rule| {
            rule.set_lr(lr);
            Ok(())
        })
    }

    /// Sets the momentum (see [`UpdateRule::set_momentum`]); a capturable rule also writes it
    /// to the device, as [`try_set_lr`](Self::try_set_lr) does.
    ///
    /// # Errors
    /// As [`UpdateRule::set_momentum`], for a momentum the rule's checks reject, or when the
    /// device cannot copy; nothing changes then.
    pub fn set_momentum(&mut self, momentum: f64) -> Result<()> {
        self.change_rule(|rule| rule.set_momentum(momentum))
    }

    /// Sets the learning rate and, if given, the momentum, both or neither (for schedulers).
    pub(crate) fn set_schedule(&mut self, lr: f64, momentum: Option<f64>) -> Result<()> {
        self.change_rule(|rule| {
            if let Some(momentum) = momentum {
                rule.set_momentum(momentum)?;
            }
            rule.set_lr(lr);
            Ok(())
        })
    }

    /// Applies `change` to a copy of the rule, checks it, writes its [`DeviceHyper`] to the
    /// device, and only then keeps it: on an error the rule is as before, and so is the
    /// device, unless it also refuses the old values back.
    fn change_rule(&mut self, change: impl FnOnce(&mut R) -> Result<()>) -> Result<()> {
        let mut rule = self.rule.clone();
        change(&mut rule)?;
        rule.validate()?;
        if let (Some(old), Some(new)) = (self.rule.device_hyper(), rule.device_hyper()) {
            let (old, new) = (old.to_words(), new.to_words());
            let write = |slot: &mut Slot<B>, words: &[f32]| match &mut slot.scalars {
                Some(scalars) => slot
                    .device
                    .upload_into_at(words, scalars, DeviceHyper::OFFSET),
                None => Ok(()),
            };
            for index in 0..self.slots.len() {
                if let Err(error) = write(&mut self.slots[index], &new) {
                    for slot in &mut self.slots[..index] {
                        // Best effort: the device that refused the new values may refuse these.
                        let _ = write(slot, &old);
                    }
                    return Err(error);
                }
            }
        }
        self.rule = rule;
        Ok(())
    }

    /// Forgets every parameter's gradient, like `optimizer.zero_grad()`.
    pub fn zero_grad<M: Module<B> + ?Sized>(&self, model: &mut M) {
        model.zero_grad();
    }

    /// Updates every parameter of `model` that has a gradient, like `optimizer.step()`.
    #[track_caller]
    pub fn step<M: Module<B> + ?Sized>(&mut self, model: &mut M) {
        or_panic(self.try_step(model));
    }

    /// Updates every parameter of `model` that has a gradient.
    ///
    /// # Errors
    /// [`Error::OptimizerState`] when `model`'s parameters (names, shapes, count) are not those
    /// the optimizer was first used with; nothing is updated then.
    pub fn try_step<M: Module<B> + ?Sized>(&mut self, model: &mut M) -> Result<()> {
        if self.slots.is_empty() {
            self.slots = Self::fresh_slots(model);
        } else {
            self.check_model(model)?;
        }
        let rule = &self.rule;
        let mut slots = self.slots.iter_mut();
        let mut result = Ok(());
        model.visit_params_mut(&mut |_, param| {
            if let (Ok(()), Some(slot)) = (&result, slots.next()) {
                result = update(rule, slot, param);
            }
        });
        result
    }

    /// The state, to restore later with [`Optimizer::try_load_state`].
    ///
    /// # Errors
    /// When the device cannot copy a buffer.
    pub fn try_state(&self) -> Result<OptimizerState<B>> {
        let mut scalars = vec![("lr".to_owned(), self.rule.lr())];
        let mut tensors = Vec::new();
        for slot in self.slots.iter().filter(|slot| slot.step > 0) {
            scalars.push((format!("{}.step", slot.name), slot.steps_done()? as f64));
            for (buffer, name) in slot.buffers.iter().zip(self.rule.buffer_names()) {
                let copy = slot.device.copy(buffer)?;
                let tensor = Tensor::from_parts(slot.device.clone(), slot.shape.clone(), copy);
                tensors.push((format!("{}.{name}", slot.name), tensor));
            }
        }
        Ok(OptimizerState {
            optimizer: R::NAME.to_owned(),
            scalars,
            tensors,
        })
    }

    /// The state, to restore later with [`Optimizer::load_state`].
    #[track_caller]
    #[must_use]
    pub fn state(&self) -> OptimizerState<B> {
        or_panic(self.try_state())
    }

    /// Replaces the state with `state`, exported from an optimizer of the same kind that
    /// trained `model` (or one with the same parameter names and shapes).
    #[track_caller]
    pub fn load_state<M: Module<B> + ?Sized>(&mut self, model: &M, state: &OptimizerState<B>) {
        or_panic(self.try_load_state(model, state));
    }

    /// Replaces the state with `state`, checked against `model`'s parameters.
    ///
    /// # Errors
    /// [`Error::OptimizerState`] naming the first entry that does not fit: another optimizer's
    /// state, a parameter the model lacks, a buffer of the wrong shape or a missing buffer.
    /// The optimizer is unchanged then.
    pub fn try_load_state<M: Module<B> + ?Sized>(
        &mut self,
        model: &M,
        state: &OptimizerState<B>,
    ) -> Result<()> {
        let error = |message: String| Error::OptimizerState {
            op: R::NAME,
            message,
        };
        if state.optimizer != R::NAME {
            return Err(error(format!(
                "state was exported from `{}`, not `{}`",
                state.optimizer,
                R::NAME
            )));
        }
        let mut slots = Self::fresh_slots(model);
        let mut used_scalars = 0;
        let mut used_tensors = 0;
        let mut lr = self.rule.lr();
        if let Some(&(_, value)) = state.scalars.iter().find(|(name, _)| name == "lr") {
            lr = value;
            used_scalars += 1;
        }
        for slot in &mut slots {
            let step_name = format!("{}.step", slot.name);
            let Some(&(_, step)) = state.scalars.iter().find(|(name, _)| *name == step_name) else {
                continue;
            };
            used_scalars += 1;
            if !(step >= 1.0 && step.fract() == 0.0) {
                return Err(error(format!("`{step_name}` is {step}, not a step count")));
            }
            #[allow(clippy::cast_sign_loss, reason = "checked above: a whole number >= 1")]
            let step = step as u64;
            slot.step = step;
            for name in self.rule.buffer_names() {
                let key = format!("{}.{name}", slot.name);
                let Some((_, tensor)) = state.tensors.iter().find(|(k, _)| *k == key) else {
                    return Err(error(format!("state has no `{key}`")));
                };
                if tensor.shape() != &slot.shape {
                    return Err(error(format!(
                        "`{key}` has shape {}, but parameter `{}` has shape {}",
                        tensor.shape(),
                        slot.name,
                        slot.shape
                    )));
                }
                used_tensors += 1;
                slot.buffers.push(tensor.device.copy(&tensor.storage)?);
            }
        }
        let known = |name: &str| {
            slots
                .iter()
                .any(|slot| name.starts_with(&format!("{}.", slot.name)))
        };
        if used_scalars != state.scalars.len() || used_tensors != state.tensors.len() {
            let unknown = state
                .scalars
                .iter()
                .map(|(name, _)| name)
                .chain(state.tensors.iter().map(|(name, _)| name))
                .find(|name| *name != "lr" && !known(name))
                .map_or_else(
                    || "duplicate or extra entries".to_owned(),
                    |name| format!("`{name}`"),
                );
            return Err(error(format!(
                "state has {unknown}, which does not fit the model's parameters"
            )));
        }
        self.rule.set_lr(lr);
        self.slots = slots;
        Ok(())
    }

    /// One slot per parameter of `model`, without state.
    fn fresh_slots<M: Module<B> + ?Sized>(model: &M) -> Vec<Slot<B>> {
        let mut slots = Vec::new();
        model.visit_params(&mut |name, param| {
            slots.push(Slot {
                name: name.to_owned(),
                shape: param.value().shape().clone(),
                device: param.value().device().clone(),
                step: 0,
                buffers: Vec::new(),
                scalars: None,
            });
        });
        slots
    }

    /// Checks that `model` has the parameters the state was built for.
    fn check_model<M: Module<B> + ?Sized>(&self, model: &M) -> Result<()> {
        let mut index = 0;
        let mut result = Ok(());
        model.visit_params(&mut |name, param| {
            if result.is_err() {
                return;
            }
            let shape = param.value().shape();
            match self.slots.get(index) {
                Some(slot) if slot.name == name && &slot.shape == shape => {}
                Some(slot) => {
                    result = Err(Error::OptimizerState {
                        op: R::NAME,
                        message: format!(
                            "parameter {index} is `{name}` {shape}, but the state was built for `{}` {}",
                            slot.name, slot.shape
                        ),
                    });
                }
                None => {
                    result = Err(Error::OptimizerState {
                        op: R::NAME,
                        message: format!(
                            "the model has more than the {} parameters the state was built for",
                            self.slots.len()
                        ),
                    });
                }
            }
            index += 1;
        });
        result?;
        if index != self.slots.len() {
            return Err(Error::OptimizerState {
                op: R::NAME,
                message: format!(
                    "the model has {index} parameters, but the state was built for {}",
                    self.slots.len()
                ),
            });
        }
        Ok(())
    }
}

/// Applies `rule` to one parameter, if it has a gradient.
fn update<R: UpdateRule, B: Backend>(
    rule: &R,
    slot: &mut Slot<B>,
    param: &mut Param<B>,
) -> Result<()> {
    let (value, grad) = param.value_and_grad_mut();
    let Some(grad) = grad else {
        return Ok(());
    };
    if slot.buffers.is_empty() {
        for _ in rule.buffer_names() {
            let mut buffer = value.device.zeros(value.numel())?;
            let initial = rule.initial_value();
            if initial != 0.0 {
                value.device.fill(&mut buffer, initial)?;
            }
            slot.buffers.push(buffer);
        }
    }
    let kernel = rule.kernel(slot.step + 1);
    let scalars = match (kernel.device_scalars(), &mut slot.scalars) {
        (None, _) => None,
        (Some(_), Some(scalars)) => Some(scalars),
        (Some(_), None) => {
            let mut initial = [0.0; STEP_SCALARS_LEN];
            initial[0] = slot.steps_done()? as f32;
            if let Some(hyper) = rule.device_hyper() {
                initial[DeviceHyper::OFFSET..].copy_from_slice(&hyper.to_words());
            }
            Some(slot.scalars.insert(value.device.upload(&initial)?))
        }
    };
    slot.step += 1;
    fused_step(&kernel, value, grad, &mut slot.buffers, scalars)
}
