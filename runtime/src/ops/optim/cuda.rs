//! Launch glue of the fused optimizer kernel in `optim.cu`: one launch per parameter per step.

use cudarc::driver::{CudaSlice, DeviceRepr};

use super::{OptimKernel, OptimStep, StepScalars};
use crate::backend::cuda::{CValue, Cuda, CudaBuffer, cuda_error, launch_config};
use crate::error::Result;

/// The kernel's source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("optim.cu")
}

const MAXIMIZE: u32 = 1;
const NESTEROV: u32 = 2;
const FIRST: u32 = 4;
const AMSGRAD: u32 = 8;
const CENTERED: u32 = 16;
const DEVICE_SCALARS: u32 = 32;

/// `optim.cu`'s `Hyper`: a step's hyper-parameters, in the order its kind reads them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hyper([f32; 8]);

// SAFETY: `Hyper` is `repr(C)` plain data, laid out like `struct Hyper { float v[8]; }`.
unsafe impl DeviceRepr for Hyper {}

// SAFETY: as above.
unsafe impl CValue for Hyper {
    const C_TYPE: &'static str = "Hyper";
}

/// `optim.cu`'s `AdamRule`: a [`StepScalars::Adam`] (zeros for a step without device scalars,
/// which the kernel then ignores).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct AdamRule {
    beta2: f64,
    decoupled_weight_decay: f64,
}

// SAFETY: `AdamRule` is `repr(C)` plain data, laid out like
// `struct AdamRule { double beta2; double decoupled_weight_decay; }`.
unsafe impl DeviceRepr for AdamRule {}

// SAFETY: as above.
unsafe impl CValue for AdamRule {
    const C_TYPE: &'static str = "AdamRule";
}

/// `step` as `optim.cu`'s kind, flags and hyper-parameters.
fn encode(step: &OptimStep) -> (i32, u32, Hyper) {
    let flag = |set: bool, bit: u32| if set { bit } else { 0 };
    let (kind, flags, hyper) = match *step {
        OptimStep::Sgd {
            lr,
            weight_decay,
            momentum,
            one_minus_dampening,
            nesterov,
            maximize,
            first,
        } => (
            0,
            flag(maximize, MAXIMIZE) | flag(nesterov, NESTEROV) | flag(first, FIRST),
            [
                lr,
                weight_decay,
                momentum,
                one_minus_dampening,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
        ),
        OptimStep::Adam {
            decay_factor,
            weight_decay,
            one_minus_beta1,
            beta2,
            one_minus_beta2,
            eps,
            bias_correction2_sqrt,
            neg_step_size,
            amsgrad,
            maximize,
            device_scalars,
        } => (
            1,
            flag(maximize, MAXIMIZE)
                | flag(amsgrad, AMSGRAD)
                | flag(device_scalars.is_some(), DEVICE_SCALARS),
            [
                decay_factor,
                weight_decay,
                one_minus_beta1,
                beta2,
                one_minus_beta2,
                eps,
                bias_correction2_sqrt,
                neg_step_size,
            ],
        ),
        OptimStep::Adadelta {
            lr,
            rho,
            one_minus_rho,
            eps,
            weight_decay,
            maximize,
        } => (
            2,
            flag(maximize, MAXIMIZE),
            [lr, rho, one_minus_rho, eps, weight_decay, 0.0, 0.0, 0.0],
        ),
        OptimStep::Adagrad {
            neg_clr,
            weight_decay,
            eps,
            maximize,
        } => (
            3,
            flag(maximize, MAXIMIZE),
            [neg_clr, weight_decay, eps, 0.0, 0.0, 0.0, 0.0, 0.0],
        ),
        OptimStep::RmsProp {
            lr,
            alpha,
            one_minus_alpha,
            eps,
            weight_decay,
            momentum,
            centered,
            maximize,
        } => (
            4,
            flag(maximize, MAXIMIZE) | flag(centered, CENTERED),
            [
                lr,
                alpha,
                one_minus_alpha,
                eps,
                weight_decay,
                momentum,
                0.0,
                0.0,
            ],
        ),
    };
    (kind, flags, Hyper(hyper))
}

/// Applies `step` to `param` elementwise; `state` holds [`OptimStep::buffers`] buffers, and
/// `scalars` the parameter's [`StepScalars`] buffer when the step advances and reads one.
pub(crate) fn optim_step(
    dev: &Cuda,
    step: &OptimStep,
    param: &mut CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    state: &mut [CudaBuffer],
    scalars: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    const OP: &str = "optim_step";
    let scalars_len = scalars.as_deref().map(CudaSlice::len);
    let state_lens = state.iter().map(|buffer| buffer.len());
    step.check_buffers(param.len(), grad.len(), state_lens, scalars_len)?;
    let (scalars, rule) = match step.device_scalars() {
        Some(StepScalars::Adam {
            beta2,
            decoupled_weight_decay,
        }) => (
            scalars,
            AdamRule {
                beta2,
                decoupled_weight_decay,
            },
        ),
        None => (None, AdamRule::default()),
    };
    let n = param.len();
    // An empty parameter's step still advances its step scalars (one block, no elements).
    if n == 0 && scalars.is_none() {
        return Ok(());
    }
    let (kind, flags, hyper) = encode(step);
    let count = n as u64;
    // Null for each state buffer the step does not have; the kernel never reads it.
    let mut buffers = state.iter_mut().map(CudaBuffer::slice_mut);
    let [s0, s1, s2] = [buffers.next(), buffers.next(), buffers.next()];
    let kernels = dev.kernels()?;
    let config = launch_config(n);
    // SAFETY: `param`, `grad` and each present state buffer hold the `n` elements touched;
    // the kernel dereferences only the state buffers `step.buffers()` says exist, which are
    // exactly the ones passed, and the step scalars (`STEP_SCALARS_LEN` elements, checked)
    // only when passed.
    unsafe {
        kernels.optim_step(
            dev.stream(),
            config,
            param,
            grad,
            s0,
            s1,
            s2,
            scalars,
            &count,
            &kind,
            &flags,
            &hyper,
            &rule,
        )
    }
    .map_err(cuda_error(OP))
}

impl OptimKernel for Cuda {
    fn optim_step(
        &self,
        step: &OptimStep,
        param: &mut CudaBuffer,
        grad: &CudaBuffer,
        state: &mut [CudaBuffer],
        scalars: Option<&mut CudaBuffer>,
    ) -> Result<()> {
        let buffers = [&*param, grad].into_iter().chain(state.iter());
        self.recorder()
            .record(buffers.chain(scalars.as_deref()), || {
                format!("{step:?} {}", param.len())
            });
        self::optim_step(
            self,
            step,
            param.slice_mut(),
            grad,
            state,
            scalars.map(CudaBuffer::slice_mut),
        )
    }
}
