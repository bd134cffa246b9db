//! Capturing a training step as a CUDA graph, for [`StepGraph`](crate::StepGraph): the capture
//! itself, the checks that make replaying it safe, and the [`Recorder`] those checks read.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaGraph, CudaStream, DriverError, sys};

use super::{Cuda, cuda_error};
use crate::backend::Backend as _;
use crate::error::{Error, Result};

const OP: &str = "StepGraph::capture";

/// What the device's ops report while a step is captured: whether a capture is running (host
/// copies must then fail), and a trace of the kernels launched, to compare the captured step
/// with the eager step before it.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    capturing: AtomicBool,
    tracing: AtomicBool,
    trace: Mutex<Vec<String>>,
}

impl Recorder {
    /// Adds `op()` to the trace while one is being taken; costs one atomic load otherwise.
    pub(crate) fn record(&self, op: impl FnOnce() -> String) {
        if self.tracing.load(Ordering::Relaxed) {
            let op = op();
            self.trace
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(op);
        }
    }

    /// Whether a step is being captured on this device.
    pub(crate) fn is_capturing(&self) -> bool {
        self.capturing.load(Ordering::Relaxed)
    }

    /// Fails with `why` for `op` while a step is being captured: `op` cannot be recorded.
    pub(crate) fn refuse_while_capturing(&self, op: &'static str, why: &str) -> Result<()> {
        if self.is_capturing() {
            return Err(Error::Backend {
                op,
                message: why.to_owned(),
            });
        }
        Ok(())
    }

    /// Runs `f` with the ops it launches traced, and `capturing` set for its duration.
    pub(crate) fn traced<T>(
        &self,
        capturing: bool,
        f: impl FnOnce() -> T,
    ) -> Result<(T, Vec<String>)> {
        if self.tracing.swap(true, Ordering::AcqRel) {
            return Err(Error::Backend {
                op: OP,
                message: "another step is being captured on this device".to_owned(),
            });
        }
        let _done = TracingDone(self);
        self.capturing.store(capturing, Ordering::Release);
        let result = f();
        let trace = std::mem::take(&mut *self.trace.lock().unwrap_or_else(PoisonError::into_inner));
        Ok((result, trace))
    }
}

/// Clears a [`Recorder`]'s flags when a trace ends, even by a panic in the traced step.
struct TracingDone<'a>(&'a Recorder);

impl Drop for TracingDone<'_> {
    fn drop(&mut self) {
        self.0.capturing.store(false, Ordering::Release);
        self.0.tracing.store(false, Ordering::Release);
    }
}

/// A stream capture in progress. Dropped without [`end`](Self::end) (a step that panicked),
/// it ends the capture and discards the graph, so the stream stays usable.
struct OpenCapture<'a> {
    stream: &'a Arc<CudaStream>,
    ended: bool,
}

impl<'a> OpenCapture<'a> {
    fn begin(stream: &'a Arc<CudaStream>) -> Result<Self> {
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_error(OP))?;
        Ok(Self {
            stream,
            ended: false,
        })
    }

    /// Ends the capture and instantiates the graph (`None` when nothing was captured).
    fn end(mut self) -> Result<Option<CudaGraph>, DriverError> {
        self.ended = true;
        self.end_capture()
    }

    fn end_capture(&self) -> Result<Option<CudaGraph>, DriverError> {
        // Buffers freed inside a capture the driver invalidated record their error in the
        // context, and cudarc reports a recorded error instead of making the next call: clear
        // it, or the capture would never end.
        let _ = self.stream.context().check_err();
        self.stream.end_capture(sys::CUgraphInstantiate_flags(0))
    }
}

impl Drop for OpenCapture<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.end_capture();
        }
    }
}

/// A captured step, ready to replay.
pub(crate) struct CapturedGraph {
    graph: CudaGraph,
}

impl CapturedGraph {
    /// Launches the graph on the device's stream, without waiting for it.
    pub(crate) fn replay(&self) -> Result<()> {
        self.graph.launch().map_err(cuda_error("StepGraph::replay"))
    }
}

impl Cuda {
    /// Runs `step` once eagerly, then records it once more as a graph (recording runs
    /// nothing), and checks that the two did the same work and that the graph leaves the
    /// state's buffers where they were. A graph refused by these checks (or recorded from a
    /// step that failed) is launched once before the error returns, so the state is what
    /// running the recorded work eagerly would have left.
    pub(crate) fn capture_step<S>(
        &self,
        state: &mut S,
        step: fn(&mut S) -> Result<()>,
    ) -> Result<CapturedGraph> {
        let (eager, eager_trace) = self.recorder.traced(false, || step(state))?;
        eager?;
        if eager_trace.is_empty() {
            return Err(Error::Backend {
                op: OP,
                message: format!(
                    "the step launched nothing on {}: its tensors must live on the device it \
                     is captured on",
                    self.name()
                ),
            });
        }
        let capture = OpenCapture::begin(&self.stream)?;
        let (captured, captured_trace) = self.recorder.traced(true, || step(state))?;
        let graph = match capture.end() {
            Ok(Some(graph)) => graph,
            Ok(None) => {
                captured?;
                return Err(Error::Backend {
                    op: OP,
                    message: "the captured step is empty".to_owned(),
                });
            }
            Err(error) => {
                // Buffers freed inside the failed capture leave an error in the context that
                // would otherwise surface at the next, unrelated call.
                let _ = self.ctx.check_err();
                captured?;
                return Err(Error::Backend {
                    op: OP,
                    message: format!("the driver could not capture the step: {error}"),
                });
            }
        };
        let verdict = captured
            .and_then(|()| check_same_work(&eager_trace, &captured_trace))
            .and_then(|()| check_memory(&graph).map_err(cuda_error(OP))?);
        if let Err(error) = verdict {
            // The host side of the recorded work has happened (gradient flags, optimizer
            // counts, tensors of the state replaced by ones the graph allocates): run it once,
            // so the device agrees, as after an eager step that stopped at the same point.
            graph.launch().map_err(cuda_error(OP))?;
            return Err(error);
        }
        graph.upload().map_err(cuda_error(OP))?;
        Ok(CapturedGraph { graph })
    }
}

/// Fails when the captured step launched other kernels, or the same kernels with other
/// scalars, than the eager step before it: a graph replays its scalars as captured.
fn check_same_work(eager: &[String], captured: &[String]) -> Result<()> {
    let differ = |index: usize, eager: &str, captured: &str| Error::Backend {
        op: OP,
        message: format!(
            "the step changes from one step to the next, and a graph would replay it frozen: \
             op {index} was `{eager}` in the eager step and `{captured}` when captured. \
             Scalars that depend on the step count (Adam's bias corrections, unless the \
             optimizer is built with `capturable: true`; a scheduler's learning rate; SGD \
             momentum's first step) and control flow that changes between steps cannot be \
             replayed; run more steps eagerly first, or keep them out of the captured step"
        ),
    };
    let missing = "(nothing)";
    for index in 0..eager.len().max(captured.len()) {
        let eager = eager.get(index).map_or(missing, String::as_str);
        let captured = captured.get(index).map_or(missing, String::as_str);
        if eager != captured {
            return Err(differ(index, eager, captured));
        }
    }
    Ok(())
}

/// Checks that every buffer the graph allocates it also frees, and that it frees no other:
/// a step that replaced a tensor of its state would free the old buffer on every replay and
/// hand out a new one the state cannot keep. The outer result is the driver's.
fn check_memory(graph: &CudaGraph) -> Result<Result<()>, DriverError> {
    let graph = graph.cu_graph();
    let mut count = 0;
    // SAFETY: `graph` is a live graph owned by the caller's `CudaGraph`; a null node array
    // asks only for the count.
    unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &raw mut count) }.result()?;
    let mut nodes = vec![std::ptr::null_mut(); count];
    // SAFETY: `nodes` has room for `count` nodes.
    unsafe { sys::cuGraphGetNodes(graph, nodes.as_mut_ptr(), &raw mut count) }.result()?;
    let (mut allocated, mut freed) = (BTreeSet::new(), BTreeSet::new());
    for &node in &nodes[..count] {
        let mut kind = MaybeUninit::uninit();
        // SAFETY: `node` belongs to `graph`, and the driver writes the type on success.
        unsafe { sys::cuGraphNodeGetType(node, kind.as_mut_ptr()) }.result()?;
        // SAFETY: initialised by the successful call above.
        match unsafe { kind.assume_init() } {
            sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC => {
                let mut params = MaybeUninit::<sys::CUDA_MEM_ALLOC_NODE_PARAMS>::uninit();
                // SAFETY: `node` is an allocation node of `graph`; the driver fills `params`.
                unsafe { sys::cuGraphMemAllocNodeGetParams(node, params.as_mut_ptr()) }.result()?;
                // SAFETY: initialised by the successful call above.
                allocated.insert(unsafe { params.assume_init() }.dptr);
            }
            sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE => {
                let mut pointer = 0;
                // SAFETY: `node` is a free node of `graph`; the driver writes its pointer.
                unsafe { sys::cuGraphMemFreeNodeGetParams(node, &raw mut pointer) }.result()?;
                freed.insert(pointer);
            }
            _ => {}
        }
    }
    let fix = "write results into the state's tensors in place (`copy_`, `add_scaled_`) instead \
               of assigning new tensors to it";
    if freed.difference(&allocated).next().is_some() {
        return Ok(Err(Error::Backend {
            op: OP,
            message: format!("the step frees a buffer of its state (it replaced a tensor); {fix}"),
        }));
    }
    if allocated.difference(&freed).next().is_some() {
        return Ok(Err(Error::Backend {
            op: OP,
            message: format!(
                "the step keeps a buffer it allocated (it stored a new tensor); {fix}"
            ),
        }));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_work_passes_and_a_changed_scalar_names_the_op() {
        let eager = ["gemm".to_owned(), "Adam { t: 1 }".to_owned()];
        assert!(check_same_work(&eager, &eager).is_ok());
        let captured = ["gemm".to_owned(), "Adam { t: 2 }".to_owned()];
        let error = check_same_work(&eager, &captured).unwrap_err().to_string();
        assert!(
            error.contains("op 1 was `Adam { t: 1 }` in the eager step and `Adam { t: 2 }`"),
            "{error}"
        );
        let error = check_same_work(&eager, &eager[..1])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("when captured") && error.contains("(nothing)"),
            "{error}"
        );
    }

    #[test]
    fn recorder_traces_only_inside_traced() {
        let recorder = Recorder::default();
        recorder.record(|| "before".to_owned());
        let ((), trace) = recorder
            .traced(true, || {
                assert!(recorder.is_capturing());
                recorder.record(|| "inside".to_owned());
            })
            .unwrap();
        recorder.record(|| "after".to_owned());
        assert_eq!(trace, ["inside"]);
        assert!(!recorder.is_capturing());
        let nested = recorder.traced(false, || recorder.traced(false, || ()).is_err());
        assert!(nested.unwrap().0, "a second capture at once is refused");
    }

    #[test]
    fn a_panicking_step_leaves_the_recorder_idle() {
        let recorder = Recorder::default();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            recorder.traced(true, || panic!("step failed")).ok();
        }));
        assert!(panicked.is_err());
        assert!(!recorder.is_capturing());
        assert!(
            recorder.traced(false, || ()).is_ok(),
            "a new capture may start"
        );
    }
}
