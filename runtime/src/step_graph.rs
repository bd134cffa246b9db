//! [`StepGraph`]: a whole training step (forward, loss, backward, optimizer) captured once as
//! a CUDA graph and replayed, so each step costs one launch instead of one per op.

use crate::backend::{CapturedGraph, Cuda};
use crate::error::{Error, Result};

/// A training step and the state it updates, run eagerly or, once [captured](Self::capture)
/// on a GPU, replayed as a CUDA graph.
///
/// The step is a plain function of the state (a closure that captures nothing coerces to
/// one), so what a captured graph reads and writes is owned here. Every GPU buffer the graph
/// uses stays allocated as long as the graph lives, even if the tensor that held it is
/// dropped (say, one the state shares with outside code through `Rc<RefCell<_>>`), so a
/// replay never touches freed memory.
///
/// A graph replays the step exactly as captured:
/// - the same kernels with the same scalars, so [`capture`](Self::capture) refuses a step
///   whose scalars change between steps (Adam's bias corrections, unless it is built with
///   `capturable: true`, which counts steps on the device) or whose control flow does. A
///   capturable Adam or `AdamW` also keeps its learning rate and `beta1` on the device, so a
///   scheduler stepped between replays (through
///   [`state_mut_keeping_graph`](Self::state_mut_keeping_graph)) reaches them;
/// - into the same buffers, so the step must write results into the state's tensors in place
///   (`copy_`, `add_scaled_`, an optimizer's step) rather than assign new tensors to it;
/// - with no host copies: read a result (`state().loss.item()`) between replays, not inside
///   the step.
///
/// Host-side bookkeeping runs only when the step runs on the host (eager steps, and the
/// capture): after replays, an optimizer's exported state undercounts its steps, except a
/// capturable Adam's, whose count lives on the device.
///
/// # Examples
/// ```
/// use declnet_runtime::{Cuda, Result, StepGraph, Tensor};
///
/// /// Least squares by gradient descent: everything the step touches.
/// struct Fit {
///     x: Tensor<Cuda>,
///     y: Tensor<Cuda>,
///     w: Tensor<Cuda>,
///     loss: Tensor<Cuda>,
/// }
///
/// fn step(fit: &mut Fit) -> Result<()> {
///     let diff = fit.x.try_mm(&fit.w)?.try_sub(&fit.y)?;
///     fit.loss.try_copy_(&diff.pow(2.0).try_sum()?)?;
///     let grad = fit.x.t().try_mm(&diff)?;
///     fit.w.try_add_scaled_(-0.01, &grad)
/// }
///
/// # fn main() -> Result<()> {
/// let Ok(cuda) = Cuda::new(0) else { return Ok(()) }; // no GPU here
/// let fit = Fit {
///     x: Tensor::ones([8, 3], &cuda),
///     y: Tensor::ones([8, 1], &cuda),
///     w: Tensor::zeros([3, 1], &cuda),
///     loss: Tensor::zeros([], &cuda),
/// };
/// let mut training = StepGraph::new(fit, step);
/// training.capture(&cuda)?; // one step eagerly, then records the next
/// for _ in 0..100 {
///     training.run()?; // one graph launch, no sync
/// }
/// println!("loss {}", training.state().loss.try_item()?);
/// # Ok(())
/// # }
/// ```
pub struct StepGraph<S> {
    // Declared first so it is dropped before the state whose buffers it names.
    graph: Option<CapturedGraph>,
    step: fn(&mut S) -> Result<()>,
    state: S,
    /// A failed capture left the state naming memory of a discarded graph.
    lost: bool,
}

/// Why a step was not captured, and whether its state survived.
pub(crate) struct CaptureFailure {
    pub(crate) error: Error,
    /// The driver failed the capture after the step stored buffers the discarded graph
    /// allocated: the state names memory that does not exist.
    pub(crate) state_lost: bool,
}

impl From<Error> for CaptureFailure {
    fn from(error: Error) -> Self {
        Self {
            error,
            state_lost: false,
        }
    }
}

impl<S> StepGraph<S> {
    /// Holds `state` and `step`; nothing is captured yet, so [`run`](Self::run) steps eagerly.
    pub fn new(state: S, step: fn(&mut S) -> Result<()>) -> Self {
        Self {
            graph: None,
            step,
            state,
            lost: false,
        }
    }

    /// Runs the step once eagerly (it counts as a training step), then records the next step
    /// as a CUDA graph on `device`; that step runs at the first [`run`](Self::run).
    ///
    /// # Errors
    /// When the eager step fails; when the step copies between host and device, or another
    /// thread uses the device meanwhile; when the captured step differs from the eager one
    /// (scalars or control flow that change between steps); when it replaces the state's
    /// tensors instead of writing into them; or when the driver cannot capture it.
    ///
    /// The state is kept and the step stays eager. A refused graph has run once, as far as
    /// the step got, exactly as if it had run eagerly. When the driver failed the capture,
    /// though, the recorded work never reached the device while its host-side bookkeeping
    /// happened (an optimizer's step count, SGD momentum's first step); and if that step, or
    /// one that panicked while being recorded, stored new tensors in its state, the state is
    /// lost (those tensors name memory of the discarded graph): the error says so, and every
    /// later `capture`, `run` or `run_eagerly` fails.
    pub fn capture(&mut self, device: &Cuda) -> Result<()> {
        self.check_state()?;
        self.graph = None;
        let eager_trace = device.trace_step(&mut self.state, self.step)?;
        // Until the capture returns: a step that panics during it may leave tensors of the
        // discarded graph in the state.
        self.lost = true;
        let captured = device.capture_traced(&mut self.state, self.step, &eager_trace);
        self.lost = matches!(&captured, Err(failure) if failure.state_lost);
        self.graph = Some(captured.map_err(|failure| failure.error)?);
        Ok(())
    }

    /// Fails once a failed capture has lost the state.
    fn check_state(&self) -> Result<()> {
        if self.lost {
            return Err(Error::Backend {
                op: "StepGraph",
                message: "the state was lost by a failed capture: build a new one".to_owned(),
            });
        }
        Ok(())
    }

    /// Whether [`run`](Self::run) replays a captured graph.
    #[must_use]
    pub fn is_captured(&self) -> bool {
        self.graph.is_some()
    }

    /// One training step: the captured graph, launched without waiting for it, or the step
    /// run eagerly when nothing is captured.
    ///
    /// # Errors
    /// When the launch fails, or the eager step does, or a failed capture lost the state.
    pub fn run(&mut self) -> Result<()> {
        self.check_state()?;
        match &self.graph {
            Some(graph) => graph.replay(),
            None => self.run_eagerly(),
        }
    }

    /// One training step run op by op, even when a graph is captured (the graph stays valid:
    /// the step writes into the same buffers).
    ///
    /// # Errors
    /// When the step does, or a failed capture lost the state.
    pub fn run_eagerly(&mut self) -> Result<()> {
        self.check_state()?;
        (self.step)(&mut self.state)
    }

    /// The state, to read results from; reading device data waits for the steps launched so
    /// far.
    #[must_use]
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The state, to change; this discards the captured graph, which names the state's
    /// buffers (capture again after changing it).
    pub fn state_mut(&mut self) -> &mut S {
        self.graph = None;
        &mut self.state
    }

    /// The state, to write new inputs into, keeping the captured graph. Replays use the
    /// buffers they were captured with, so write into the state's tensors in place
    /// (`copy_from_slice`, `copy_`, `fill_`): a tensor assigned anew here is not the one
    /// replays read or update (its old buffer stays allocated for the graph, so this is never
    /// unsafe, only stale). Host-side values the step passed to kernels are part of the graph
    /// too: changing them here has no effect on replays, except a capturable Adam's or
    /// `AdamW`'s learning rate and momentum, which live on the device (so a scheduler may step
    /// here). To change anything else, use [`state_mut`](Self::state_mut) and capture again.
    pub fn state_mut_keeping_graph(&mut self) -> &mut S {
        &mut self.state
    }

    /// The state, with the graph discarded.
    pub fn into_state(self) -> S {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cpu, Tensor};

    #[test]
    fn runs_eagerly_until_captured() {
        let mut training = StepGraph::new(Tensor::zeros([2], &Cpu), |t: &mut Tensor| {
            t.try_add_scaled_(1.0, &Tensor::ones([2], &Cpu))
        });
        assert!(!training.is_captured());
        training.run().unwrap();
        training.run_eagerly().unwrap();
        assert_eq!(training.state().to_vec(), [2.0, 2.0]);
        training.state_mut().fill_(5.0);
        assert_eq!(training.into_state().to_vec(), [5.0, 5.0]);
    }
}
