//! Fused optimizer updates: one kernel pass per parameter per step that reads the gradient,
//! updates the optimizer's state buffers and the parameter together (so a GPU backend does one
//! launch per parameter). The optimizers that drive them live in `crate::optim`.
//!
//! Scalars that depend only on the step count (bias corrections, decayed learning rates) are
//! computed by the optimizer on the host in `f64`, as PyTorch does in Python, and arrive here
//! rounded to `f32`, as PyTorch's kernels receive them. A capturable Adam instead keeps its
//! step count on the device and the update advances it and computes them there
//! ([`StepScalars`]), with the same `f64` formulas, so a captured CUDA graph replays them
//! right, still in one launch per parameter.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory, expect_len};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One step of one optimizer on one parameter, the unit of work of [`OptimKernel::optim_step`].
///
/// Each variant documents the state buffers it expects, in order; all have the parameter's
/// length. `g` below is the gradient, negated when `maximize`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum OptimStep {
    /// `torch.optim.SGD`. State: `[]` without momentum, `[momentum_buffer]` with it.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
        /// Momentum factor; 0 means no state.
        momentum: f32,
        /// `1 - dampening`, the weight of the new gradient in the momentum buffer.
        one_minus_dampening: f32,
        /// Nesterov momentum.
        nesterov: bool,
        /// Ascend instead of descend.
        maximize: bool,
        /// The buffer is empty: set it to the gradient instead of decaying it (always `false`
        /// without momentum).
        first: bool,
    },
    /// `torch.optim.Adam` and `AdamW`. State: `[exp_avg, exp_avg_sq]`, plus `max_exp_avg_sq`
    /// with `amsgrad`.
    Adam {
        /// `1 - lr * weight_decay`, the decoupled decay (`AdamW`); 1 for Adam. Read from the
        /// device with device scalars, like `one_minus_beta1` and the bias corrections.
        decay_factor: f32,
        /// L2 penalty added to the gradient (Adam); 0 for `AdamW`.
        weight_decay: f32,
        /// `1 - beta1`: the weight of `g` in the first moment.
        one_minus_beta1: f32,
        /// `beta2`.
        beta2: f32,
        /// `1 - beta2`.
        one_minus_beta2: f32,
        /// Added to the denominator.
        eps: f32,
        /// `sqrt(1 - beta2^step)`.
        bias_correction2_sqrt: f32,
        /// `-lr / (1 - beta1^step)`.
        neg_step_size: f32,
        /// `Some(rule)`: advance the parameter's device step scalars by `rule` and compute the
        /// four step-dependent scalars above from them, and the learning rate and `beta1` they
        /// hold, instead of reading these fields (see [`StepScalars`]).
        device_scalars: Option<StepScalars>,
        /// Use the running maximum of the second moment.
        amsgrad: bool,
        /// Ascend instead of descend.
        maximize: bool,
    },
    /// `torch.optim.Adadelta`. State: `[square_avg, acc_delta]`.
    Adadelta {
        /// Learning rate.
        lr: f32,
        /// Decay of the running averages.
        rho: f32,
        /// `1 - rho`.
        one_minus_rho: f32,
        /// Added inside the square roots.
        eps: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
        /// Ascend instead of descend.
        maximize: bool,
    },
    /// `torch.optim.Adagrad`. State: `[sum]`.
    Adagrad {
        /// `-lr / (1 + (step - 1) * lr_decay)`.
        neg_clr: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
        /// Added to the denominator.
        eps: f32,
        /// Ascend instead of descend.
        maximize: bool,
    },
    /// `torch.optim.RMSprop`. State: `[square_avg]`, then `momentum_buffer` if `momentum > 0`,
    /// then `grad_avg` if `centered`.
    RmsProp {
        /// Learning rate.
        lr: f32,
        /// Decay of the running averages.
        alpha: f32,
        /// `1 - alpha`.
        one_minus_alpha: f32,
        /// Added to the denominator.
        eps: f32,
        /// L2 penalty added to the gradient.
        weight_decay: f32,
        /// Momentum factor; 0 means no momentum buffer.
        momentum: f32,
        /// Normalise by the variance instead of the second moment.
        centered: bool,
        /// Ascend instead of descend.
        maximize: bool,
    },
}

/// The scalars of an update that depend on the step count or on hyper-parameters a
/// scheduler changes, computed on the device from a buffer kept there, so a captured CUDA
/// graph replays them right: each [`OptimKernel::optim_step`] that reads them first advances the
/// buffer by one step. It holds [`STEP_SCALARS_LEN`] `f32`s:
/// - the step count (exact up to 2^24 steps);
/// - a word the CUDA kernel uses to count its blocks within a launch, zero between launches;
/// - from [`DeviceHyper::OFFSET`], the learning rate and `beta1` ([`DeviceHyper`]), which the
///   host writes when they change.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum StepScalars {
    /// Adam's and `AdamW`'s scalars.
    Adam {
        /// `beta2`.
        beta2: f64,
        /// `AdamW`'s weight decay, applied as `p *= 1 - lr * weight_decay`; 0 for Adam.
        decoupled_weight_decay: f64,
    },
}

/// The length of a [`StepScalars`] buffer.
pub const STEP_SCALARS_LEN: usize = 6;

/// The hyper-parameters a [`StepScalars`] buffer holds because the host may change them
/// between steps (a scheduler's learning rate and momentum). Each `f64` is kept as its two
/// 32-bit halves, high first, so the device computes with the host's exact values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceHyper {
    /// Learning rate.
    pub lr: f64,
    /// `beta1`.
    pub beta1: f64,
}

impl DeviceHyper {
    /// Where they start in a [`StepScalars`] buffer.
    pub const OFFSET: usize = 2;

    /// The buffer words that hold them.
    #[must_use]
    pub fn to_words(self) -> [f32; 4] {
        let [lr_high, lr_low] = f64_words(self.lr);
        let [beta1_high, beta1_low] = f64_words(self.beta1);
        [lr_high, lr_low, beta1_high, beta1_low]
    }

    /// Read back from [`to_words`](Self::to_words)' words.
    #[must_use]
    pub fn from_words([lr_high, lr_low, beta1_high, beta1_low]: [f32; 4]) -> Self {
        Self {
            lr: words_f64([lr_high, lr_low]),
            beta1: words_f64([beta1_high, beta1_low]),
        }
    }
}

/// `x`'s bits as two `f32` words, high half first (copies keep any bit pattern).
fn f64_words(x: f64) -> [f32; 2] {
    let bits = x.to_bits();
    #[allow(clippy::cast_possible_truncation, reason = "the low half, on purpose")]
    [
        f32::from_bits((bits >> 32) as u32),
        f32::from_bits(bits as u32),
    ]
}

fn words_f64([high, low]: [f32; 2]) -> f64 {
    f64::from_bits((u64::from(high.to_bits()) << 32) | u64::from(low.to_bits()))
}

/// The four scalars of an Adam update that depend on the step, the learning rate or `beta1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamScalars {
    pub(crate) decay_factor: f32,
    pub(crate) one_minus_beta1: f32,
    pub(crate) bias_correction2_sqrt: f32,
    pub(crate) neg_step_size: f32,
}

impl AdamScalars {
    /// Step `step`'s scalars, computed in `f64` as PyTorch computes them in Python, then
    /// rounded: the one definition the host path and the device scalars share (the CUDA
    /// kernel writes the same formulas). Without decoupled decay the factor is exactly 1,
    /// whatever the learning rate.
    pub(crate) fn new(
        lr: f64,
        beta1: f64,
        beta2: f64,
        decoupled_weight_decay: f64,
        step: f64,
    ) -> Self {
        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        let decay_factor = if decoupled_weight_decay == 0.0 {
            1.0
        } else {
            (1.0 - lr * decoupled_weight_decay) as f32
        };
        Self {
            decay_factor,
            one_minus_beta1: (1.0 - beta1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            neg_step_size: (-lr / bias_correction1) as f32,
        }
    }
}

impl StepScalars {
    /// Advances `buffer` by one step and returns the scalars of the new step: what every
    /// backend's [`OptimKernel::optim_step`] computes before the update, with the host path's
    /// [`AdamScalars::new`], so the two agree to the bit on the CPU (CUDA's `pow` may round
    /// the bias corrections an ulp differently).
    pub(crate) fn advance(&self, buffer: &mut [f32; STEP_SCALARS_LEN]) -> AdamScalars {
        let Self::Adam {
            beta2,
            decoupled_weight_decay,
        } = *self;
        let mut words = [0.0; 4];
        words.copy_from_slice(&buffer[DeviceHyper::OFFSET..]);
        let DeviceHyper { lr, beta1 } = DeviceHyper::from_words(words);
        let step = f64::from(buffer[0]) + 1.0;
        buffer[0] = step as f32;
        AdamScalars::new(lr, beta1, beta2, decoupled_weight_decay, step)
    }
}

impl OptimStep {
    /// The rule of the step scalars the step advances and reads on the device, if it does.
    #[must_use]
    pub fn device_scalars(&self) -> Option<StepScalars> {
        match *self {
            Self::Adam { device_scalars, .. } => device_scalars,
            _ => None,
        }
    }

    /// Checks the buffers a backend is given for this step, before it touches any: a gradient
    /// and [`buffers`](Self::buffers) state buffers as long as the parameter, and a step
    /// scalars buffer of [`STEP_SCALARS_LEN`] when the step reads one.
    pub(crate) fn check_buffers(
        &self,
        param_len: usize,
        grad_len: usize,
        state_lens: impl ExactSizeIterator<Item = usize>,
        scalars_len: Option<usize>,
    ) -> Result<()> {
        const OP: &str = "optim_step";
        if state_lens.len() != self.buffers() {
            return Err(Error::Backend {
                op: OP,
                message: format!("expected {} state buffers for {self:?}", self.buffers()),
            });
        }
        expect_len(OP, "gradient", grad_len, param_len)?;
        for len in state_lens {
            expect_len(OP, "state buffer", len, param_len)?;
        }
        match (self.device_scalars(), scalars_len) {
            (None, _) => Ok(()),
            (Some(_), Some(len)) => expect_len(OP, "step scalars", len, STEP_SCALARS_LEN),
            (Some(_), None) => Err(Error::Backend {
                op: OP,
                message: format!("expected a step scalars buffer for {self:?}"),
            }),
        }
    }

    /// The number of state buffers this step reads and writes.
    #[must_use]
    pub fn buffers(&self) -> usize {
        match *self {
            Self::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            Self::Adam { amsgrad, .. } => 2 + usize::from(amsgrad),
            Self::Adadelta { .. } => 2,
            Self::Adagrad { .. } => 1,
            Self::RmsProp {
                momentum, centered, ..
            } => 1 + usize::from(momentum > 0.0) + usize::from(centered),
        }
    }
}

/// Runs `step` on `param` with `grad`, the parameter's `state` buffers and, when the step
/// advances and reads them, its device step `scalars`.
pub(crate) fn fused_step<B: Backend>(
    step: &OptimStep,
    param: &mut Tensor<B>,
    grad: &Tensor<B>,
    state: &mut [B::Storage],
    scalars: Option<&mut B::Storage>,
) -> Result<()> {
    param.check_same_device("optimizer step", grad)?;
    if grad.shape != param.shape || state.len() != step.buffers() {
        return Err(Error::InPlaceShape {
            op: "optimizer step",
            target: param.shape.clone(),
            result: grad.shape.clone(),
        });
    }
    param
        .device
        .optim_step(step, &mut param.storage, &grad.storage, state, scalars)
}

/// The kernel of the optimizers' fused updates.
pub trait OptimKernel: Memory {
    /// One fused optimizer update of `param` from `grad`, reading and writing the optimizer's
    /// per-parameter `state` buffers (as many as [`OptimStep::buffers`], each as long as
    /// `param`). When [`OptimStep::device_scalars`] has a rule, the update first advances the
    /// parameter's step `scalars` buffer ([`StepScalars`]) by it and reads them from there,
    /// all in one launch.
    ///
    /// # Errors
    /// When the kernel fails, or `state` or `scalars` does not fit `step`.
    fn optim_step(
        &self,
        step: &OptimStep,
        param: &mut Self::Storage,
        grad: &Self::Storage,
        state: &mut [Self::Storage],
        scalars: Option<&mut Self::Storage>,
    ) -> Result<()>;
}

#[cfg(not(feature = "cuda"))]
impl OptimKernel for crate::Cuda {
    fn optim_step(
        &self,
        _: &OptimStep,
        _: &mut Self::Storage,
        _: &Self::Storage,
        _: &mut [Self::Storage],
        _: Option<&mut Self::Storage>,
    ) -> Result<()> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    fn sgd(momentum: f32) -> OptimStep {
        OptimStep::Sgd {
            lr: 0.5,
            weight_decay: 0.0,
            momentum,
            one_minus_dampening: 1.0,
            nesterov: false,
            maximize: true,
            first: true,
        }
    }

    #[test]
    fn one_pass_updates_parameter_and_state() {
        let mut p = Tensor::from_vec(vec![1.0, 2.0], [2], &Cpu);
        let g = Tensor::from_vec(vec![2.0, -2.0], [2], &Cpu);
        let mut state = vec![vec![0.0; 2]];
        fused_step(&sgd(0.9), &mut p, &g, &mut state, None).unwrap();
        // maximize: ascend, and the buffer holds the negated gradient.
        assert_eq!(p.to_vec(), [2.0, 1.0]);
        assert_eq!(state[0], [-2.0, 2.0]);
    }

    #[test]
    fn mismatched_gradient_or_state_is_an_error() {
        let mut p = Tensor::zeros([2], &Cpu);
        let error = fused_step(&sgd(0.0), &mut p, &Tensor::zeros([3], &Cpu), &mut [], None);
        assert!(matches!(error, Err(Error::InPlaceShape { .. })));
        let g = Tensor::zeros([2], &Cpu);
        assert!(fused_step(&sgd(0.9), &mut p, &g, &mut [], None).is_err());
        let error =
            cpu::optim_step(&sgd(0.9), &mut [0.0; 2], &[0.0; 2], &mut [], None).unwrap_err();
        assert!(
            error.to_string().contains("expected 1 state buffers"),
            "{error}"
        );
        let short = &mut [vec![0.0; 1]];
        let error = cpu::optim_step(&sgd(0.9), &mut [0.0; 2], &[0.0; 2], short, None);
        assert_eq!(
            error.unwrap_err().to_string(),
            "optim_step: state buffer holds 1 elements, expected 2"
        );
    }
}
