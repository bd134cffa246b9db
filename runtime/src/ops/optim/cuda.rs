//! Launch glue of the fused optimizer kernel in `optim.cu`: one launch per parameter per step.

use cudarc::driver::{CudaSlice, DeviceRepr};

use super::{OptimStep, STEP_SCALARS_LEN, StepScalars};
use crate::backend::cuda::{CValue, Cuda, cuda_error, expect_len, launch_config};
use crate::error::{Error, Result};

/// The kernel's source, compiled by the backend.
pub(crate) const SOURCE: &str = include_str!("optim.cu");

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
                | flag(device_scalars, DEVICE_SCALARS),
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
/// `scalars` the step's [`StepScalars`] buffer when it reads one.
pub(crate) fn optim_step(
    dev: &Cuda,
    step: &OptimStep,
    param: &mut CudaSlice<f32>,
    grad: &CudaSlice<f32>,
    state: &mut [CudaSlice<f32>],
    scalars: Option<&CudaSlice<f32>>,
) -> Result<()> {
    const OP: &str = "optim_step";
    if state.len() != step.buffers() {
        return Err(Error::Backend {
            op: OP,
            message: format!("expected {} state buffers for {step:?}", step.buffers()),
        });
    }
    let scalars = match (step.reads_device_scalars(), scalars) {
        (false, _) => None,
        (true, Some(scalars)) => {
            expect_len(OP, "step scalars", scalars.len(), STEP_SCALARS_LEN)?;
            Some(scalars)
        }
        (true, None) => {
            return Err(Error::Backend {
                op: OP,
                message: format!("expected a step scalars buffer for {step:?}"),
            });
        }
    };
    let n = param.len();
    expect_len(OP, "gradient", grad.len(), n)?;
    for buffer in state.iter() {
        expect_len(OP, "state buffer", buffer.len(), n)?;
    }
    if n == 0 {
        return Ok(());
    }
    let (kind, flags, hyper) = encode(step);
    let count = n as u64;
    // Null for each state buffer the step does not have; the kernel never reads it.
    let mut buffers = state.iter_mut();
    let [s0, s1, s2] = [buffers.next(), buffers.next(), buffers.next()];
    let kernels = dev.kernels()?;
    let config = launch_config(n);
    // SAFETY: `param`, `grad` and each present state buffer hold the `n` elements touched;
    // the kernel dereferences only the state buffers `step.buffers()` says exist, which are
    // exactly the ones passed, and the step scalars (3 elements, checked) only when passed.
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
        )
    }
    .map_err(cuda_error(OP))
}

/// Advances a [`StepScalars`] buffer by one step: one thread, on the stream, so the updates
/// launched after it read the new scalars.
pub(crate) fn optim_scalars(
    dev: &Cuda,
    rule: &StepScalars,
    scalars: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "optim_scalars";
    expect_len(OP, "step scalars", scalars.len(), STEP_SCALARS_LEN)?;
    let StepScalars::Adam { lr, beta1, beta2 } = *rule;
    let kernels = dev.kernels()?;
    // SAFETY: the buffer holds the three elements the kernel's single thread touches.
    unsafe { kernels.adam_scalars(dev.stream(), launch_config(1), scalars, &lr, &beta1, &beta2) }
        .map_err(cuda_error(OP))
}
