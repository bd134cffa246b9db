//! CPU kernels of the fused optimizer updates, written to round like PyTorch's single-tensor
//! CPU implementations (`torch/optim/*.py`): same operations, same order, in `f32`.
//!
//! SGD's `x.add_(y, alpha=a)` steps (weight decay, momentum, the update) are fused
//! multiply-adds: PyTorch's CPU `add` kernel rounds `x + a * y` once, and with `mul_add` the
//! SGD fixtures match bit for bit (with a separate multiply and add they were off by up to
//! 7e-6 relative). The other rules measured no closer with `mul_add`, so they keep PyTorch's
//! written order of separate operations.

use super::{OptimKernel, OptimStep, STEP_SCALARS_LEN};
use crate::backend::Cpu;
use smallvec::SmallVec;

use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::{Error, Result};

/// Applies `step` to `param` elementwise; `state` holds [`OptimStep::buffers`] buffers, and
/// `scalars` the parameter's [`StepScalars`](super::StepScalars) buffer when the step advances and reads one.
///
/// `mul_add` is one instruction only where the CPU has FMA; elsewhere it is a library call per
/// element (20x slower here). The kernel runs compiled for the CPU's SIMD instructions (see
/// [`vectorized_in_parts`]), which include FMA.
pub(crate) fn optim_step(
    step: &OptimStep,
    param: &mut [f32],
    grad: &[f32],
    state: &mut [Vec<f32>],
    scalars: Option<&mut [f32]>,
) -> Result<()> {
    // Checked before the step scalars advance, so a failed step leaves them as they were.
    let scalars_len = scalars.as_deref().map(<[f32]>::len);
    let state_lens = state.iter().map(Vec::len);
    step.check_buffers(param.len(), grad.len(), state_lens, scalars_len)?;
    let step = &with_device_scalars(step, scalars)?;
    let state = state.iter_mut().map(Vec::as_mut_slice).collect();
    // Each element's update is independent of the others': in parts, the result is the same.
    vectorized_in_parts(Update {
        step,
        param,
        grad,
        state,
    })
}

/// One parameter's update, or a part of it, for [`vectorized_in_parts`].
struct Update<'a> {
    step: &'a OptimStep,
    param: &'a mut [f32],
    grad: &'a [f32],
    state: SmallVec<[&'a mut [f32]; 3]>,
}

impl Divisible for Update<'_> {
    /// The adaptive rules' square root and divisions per element make the tutorial's
    /// 100k-element weight worth three parts (Adam: 33 us against 47 in one, with the pool
    /// kept warm); SGD's few multiply-adds do not (its step was 5% slower in three).
    fn part_min_elements(&self) -> usize {
        match self.step {
            OptimStep::Sgd { .. } => 1 << 16,
            _ => 1 << 15,
        }
    }
    fn units(&self) -> usize {
        self.param.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (param_left, param_right) = self.param.split_at_mut(mid);
        let (grad_left, grad_right) = self.grad.split_at(mid);
        let (state_left, state_right) = self
            .state
            .into_iter()
            .map(|buffer| buffer.split_at_mut(mid))
            .unzip();
        let part = |param, grad, state| Update {
            step: self.step,
            param,
            grad,
            state,
        };
        (
            part(param_left, grad_left, state_left),
            part(param_right, grad_right, state_right),
        )
    }
}

impl Vectorizable for Update<'_> {
    type Output = Result<()>;
    #[inline(always)]
    fn run(mut self) -> Result<()> {
        optim_step_portable(self.step, self.param, self.grad, &mut self.state)
    }
}

/// PyTorch's `lerp` for a scalar weight: the form it picks depends on `|weight| < 0.5`.
#[inline(always)]
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// `g`, negated when maximizing, plus the L2 penalty `weight_decay * p`.
#[inline(always)]
fn effective_grad(g: f32, p: f32, weight_decay: f32, maximize: bool) -> f32 {
    let g = if maximize { -g } else { g };
    if weight_decay == 0.0 {
        g
    } else {
        weight_decay.mul_add(p, g)
    }
}

/// The kernels: one loop per rule. Always inlined, so each caller compiles it for its own
/// target features.
#[allow(
    clippy::too_many_lines,
    reason = "one short loop per optimizer, side by side with the dispatch on the step"
)]
#[inline(always)]
fn optim_step_portable(
    step: &OptimStep,
    param: &mut [f32],
    grad: &[f32],
    state: &mut [&mut [f32]],
) -> Result<()> {
    match (*step, state) {
        (
            OptimStep::Sgd {
                lr,
                weight_decay,
                momentum: 0.0,
                maximize,
                ..
            },
            [],
        ) => {
            for (p, &g) in param.iter_mut().zip(grad) {
                let g = effective_grad(g, *p, weight_decay, maximize);
                *p = (-lr).mul_add(g, *p);
            }
        }
        (
            OptimStep::Sgd {
                lr,
                weight_decay,
                momentum,
                one_minus_dampening,
                nesterov,
                maximize,
                first,
            },
            [buf],
        ) if momentum != 0.0 => {
            for ((p, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
                let g = effective_grad(g, *p, weight_decay, maximize);
                *b = if first {
                    g
                } else {
                    one_minus_dampening.mul_add(g, *b * momentum)
                };
                let update = if nesterov {
                    momentum.mul_add(*b, g)
                } else {
                    *b
                };
                *p = (-lr).mul_add(update, *p);
            }
        }
        (
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
                ..
            },
            state,
        ) => {
            let [m, v, rest @ ..] = state else {
                return Err(state_error(step));
            };
            // One element: `max_sq` is AMSGrad's running maximum of `v`.
            let update =
                |p: &mut f32, g: f32, m: &mut f32, v: &mut f32, max_sq: Option<&mut f32>| {
                    if decay_factor != 1.0 {
                        *p *= decay_factor;
                    }
                    let g = effective_grad(g, *p, weight_decay, maximize);
                    *m = lerp(*m, g, one_minus_beta1);
                    *v = *v * beta2 + one_minus_beta2 * g * g;
                    let second = match max_sq {
                        Some(max_sq) => {
                            *max_sq = max_sq.max(*v);
                            *max_sq
                        }
                        None => *v,
                    };
                    let denom = second.sqrt() / bias_correction2_sqrt + eps;
                    *p += neg_step_size * *m / denom;
                };
            let moments = param
                .iter_mut()
                .zip(grad)
                .zip(m.iter_mut().zip(v.iter_mut()));
            // Separate loops, so that the one without AMSGrad has no branch to vectorise.
            match rest.first_mut().filter(|_| amsgrad) {
                Some(max_sq) => {
                    for (((p, &g), (m, v)), max_sq) in moments.zip(max_sq.iter_mut()) {
                        update(p, g, m, v, Some(max_sq));
                    }
                }
                None => {
                    for ((p, &g), (m, v)) in moments {
                        update(p, g, m, v, None);
                    }
                }
            }
        }
        (
            OptimStep::Adadelta {
                lr,
                rho,
                one_minus_rho,
                eps,
                weight_decay,
                maximize,
            },
            [square_avg, acc_delta],
        ) => {
            for ((p, &g), (sq, acc)) in param
                .iter_mut()
                .zip(grad)
                .zip(square_avg.iter_mut().zip(acc_delta.iter_mut()))
            {
                let g = effective_grad(g, *p, weight_decay, maximize);
                *sq = *sq * rho + one_minus_rho * g * g;
                let std = (*sq + eps).sqrt();
                let delta = (*acc + eps).sqrt() / std * g;
                *acc = *acc * rho + one_minus_rho * delta * delta;
                *p += -lr * delta;
            }
        }
        (
            OptimStep::Adagrad {
                neg_clr,
                weight_decay,
                eps,
                maximize,
            },
            [sum],
        ) => {
            for ((p, &g), s) in param.iter_mut().zip(grad).zip(sum.iter_mut()) {
                let g = effective_grad(g, *p, weight_decay, maximize);
                *s += g * g;
                let std = s.sqrt() + eps;
                *p += neg_clr * g / std;
            }
        }
        (
            OptimStep::RmsProp {
                lr,
                alpha,
                one_minus_alpha,
                eps,
                weight_decay,
                momentum,
                centered,
                maximize,
            },
            state,
        ) => {
            let Some((square_avg, rest)) = state.split_first_mut() else {
                return Err(state_error(step));
            };
            let (mut buf, rest) = if momentum > 0.0 {
                match rest.split_first_mut() {
                    Some((buf, rest)) => (Some(buf), rest),
                    None => return Err(state_error(step)),
                }
            } else {
                (None, rest)
            };
            let mut grad_avg = rest.first_mut().filter(|_| centered);
            for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
                let g = effective_grad(g, *p, weight_decay, maximize);
                let sq = &mut square_avg[i];
                *sq = *sq * alpha + one_minus_alpha * g * g;
                let avg = match grad_avg.as_deref_mut() {
                    Some(grad_avg) => {
                        grad_avg[i] = lerp(grad_avg[i], g, one_minus_alpha);
                        (*sq + -grad_avg[i] * grad_avg[i]).sqrt()
                    }
                    None => sq.sqrt(),
                } + eps;
                match buf.as_deref_mut() {
                    Some(buf) => {
                        buf[i] = buf[i] * momentum + g / avg;
                        *p += -lr * buf[i];
                    }
                    None => *p += -lr * g / avg,
                }
            }
        }
        _ => return Err(state_error(step)),
    }
    Ok(())
}

/// `step` with the scalars it reads from the device written into its fields, after advancing
/// them by one step.
fn with_device_scalars(step: &OptimStep, scalars: Option<&mut [f32]>) -> Result<OptimStep> {
    let mut step = *step;
    if let OptimStep::Adam {
        decay_factor,
        one_minus_beta1,
        bias_correction2_sqrt,
        neg_step_size,
        device_scalars,
        ..
    } = &mut step
        && let Some(rule) = device_scalars.take()
    {
        let buffer: Option<&mut [f32; STEP_SCALARS_LEN]> =
            scalars.and_then(|scalars| scalars.try_into().ok());
        let Some(buffer) = buffer else {
            return Err(Error::Backend {
                op: "optim_step",
                message: format!(
                    "expected a step scalars buffer of {STEP_SCALARS_LEN} for {rule:?}"
                ),
            });
        };
        let scalars = rule.advance(buffer);
        *decay_factor = scalars.decay_factor;
        *one_minus_beta1 = scalars.one_minus_beta1;
        *bias_correction2_sqrt = scalars.bias_correction2_sqrt;
        *neg_step_size = scalars.neg_step_size;
    }
    Ok(step)
}

/// The error for a state slice that does not fit the step (a bug in the optimizer driving it).
fn state_error(step: &OptimStep) -> Error {
    Error::Backend {
        op: "optim_step",
        message: format!("expected {} state buffers for {step:?}", step.buffers()),
    }
}

impl OptimKernel for Cpu {
    fn optim_step(
        &self,
        step: &OptimStep,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        state: &mut [Vec<f32>],
        scalars: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        self::optim_step(step, param, grad, state, scalars.map(Vec::as_mut_slice))
    }
}
