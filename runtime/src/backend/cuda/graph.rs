//! Capturing a training step as a CUDA graph, for [`StepGraph`](crate::StepGraph): the capture
//! itself, and the checks that make replaying it safe, which read the device's
//! [`Recorder`](super::recorder::Recorder).

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::sync::Arc;

use cudarc::driver::{CudaGraph, CudaSlice, CudaStream, DriverError, sys};

use super::recorder::{Leftovers, PinSet, Recorder};
use super::{Cuda, cuda_error};
use crate::backend::Memory as _;
use crate::error::{Error, Result};
use crate::step_graph::CaptureFailure;

const OP: &str = "StepGraph::capture";

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
        // cudarc reports an error recorded in the context during the capture (an op's failure
        // it could not return) instead of making the next call: take it, or the capture would
        // never end.
        let recorded = self.stream.context().check_err();
        let ended = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        recorded.and(ended)
    }
}

impl Drop for OpenCapture<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.end_capture();
        }
    }
}

/// A captured step, ready to replay. It keeps the buffers from before the capture that the
/// step used alive as long as it lives (see [`CudaBuffer`](super::CudaBuffer)).
pub(crate) struct CapturedGraph {
    graph: CudaGraph,
    /// Dropped after the graph, so its buffers are freed after its last launch.
    pinned: PinSet,
}

impl CapturedGraph {
    /// Launches the graph on the device's stream, without waiting for it; refused while
    /// another step is being captured on the device, whose graph it would end up in.
    pub(crate) fn replay(&self) -> Result<()> {
        const REPLAY: &str = "StepGraph::replay";
        self.pinned.recorder().refuse_while_capturing(
            REPLAY,
            "cannot replay a graph while another step is being captured on the device",
        )?;
        self.graph.launch().map_err(cuda_error(REPLAY))
    }
}

impl Cuda {
    /// Runs `step` once eagerly, tracing the ops it launches, for
    /// [`capture_traced`](Self::capture_traced) to compare the captured step with.
    pub(crate) fn trace_step<S>(
        &self,
        state: &mut S,
        step: fn(&mut S) -> Result<()>,
    ) -> Result<Vec<String>> {
        let trace = self.recorder.start_trace()?;
        let eager = step(state);
        let eager_trace = trace.finish();
        eager?;
        let eager_trace = eager_trace?;
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
        // An error cudarc recorded before the capture is not the capture's.
        self.ctx.check_err().map_err(|error| Error::Backend {
            op: OP,
            message: format!("an earlier GPU operation failed: {error}"),
        })?;
        Ok(eager_trace)
    }

    /// Records `step` as a graph (recording runs nothing), and checks that it did the work
    /// of the eager step traced as `eager_trace` and that the graph leaves the state's
    /// buffers where they were. A graph refused by these checks (or recorded from a step
    /// that failed) is launched once before the error returns, so the state is what running
    /// the recorded work eagerly would have left.
    pub(crate) fn capture_traced<S>(
        &self,
        state: &mut S,
        step: fn(&mut S) -> Result<()>,
        eager_trace: &[String],
    ) -> Result<CapturedGraph, CaptureFailure> {
        // Claimed before the stream capture begins and held until this returns, so no other
        // trace's work can slip in; a panic in the step drops `stream_capture` first (ending
        // the stream capture), then `recording` (which discards what the capture allocated).
        let mut recording = self.recorder.start_capture()?;
        let stream_capture = OpenCapture::begin(&self.stream)?;
        let captured = step(state);
        let ended = stream_capture.end();
        let discarded = !matches!(ended, Ok(Some(_)));
        let (captured_trace, leftovers) = recording.finish(discarded);
        let Leftovers {
            dropped,
            escaped,
            pinned,
            alone,
        } = leftovers;
        // Buffers of the state the step dropped: the graph does not own them, so they are
        // released after whatever runs next (the graph's one launch, or nothing).
        let replaced = Replaced {
            recorder: &self.recorder,
            buffers: dropped,
        };
        // Why nothing ran, with what became of the state: tensors the step stored name memory
        // only once its graph has run.
        let failed = |error: Error| CaptureFailure {
            error: if escaped > 0 {
                Error::Backend {
                    op: OP,
                    message: format!(
                        "{error}; the step stored tensors of the discarded graph, so its state \
                         is lost: build a new one"
                    ),
                }
            } else {
                error
            },
            state_lost: escaped > 0,
        };
        let captured = captured.and(alone);
        let graph = match ended {
            Ok(Some(graph)) => graph,
            ended => {
                let why = match ended {
                    Err(error) => format!("the driver could not capture the step: {error}"),
                    Ok(_) => "the captured step is empty".to_owned(),
                };
                let error = captured.err().unwrap_or(Error::Backend {
                    op: OP,
                    message: why,
                });
                return Err(failed(error));
            }
        };
        let verdict = captured
            .and_then(|()| check_same_work(eager_trace, &captured_trace))
            .and_then(|()| check_replaced(replaced.buffers.len()))
            .and_then(|()| check_memory(&graph).map_err(cuda_error(OP))?)
            .and_then(|()| graph.upload().map_err(cuda_error(OP)));
        let Err(refused) = verdict else {
            return Ok(CapturedGraph { graph, pinned });
        };
        // The host side of the recorded work has happened (gradient flags, optimizer counts,
        // tensors of the state replaced by ones the graph allocates): run it once, so the
        // device agrees, as after an eager step that stopped at the same point. The buffers
        // it used and the replaced ones are released on the stream after it.
        let launched = graph.launch();
        if launched.is_err() {
            self.recorder.discard(recording.id());
        }
        drop((replaced, pinned));
        match launched {
            Ok(()) => Err(refused.into()),
            Err(error) => Err(failed(Error::Backend {
                op: OP,
                message: format!("{refused}; and running the recorded step failed: {error}"),
            })),
        }
    }
}

/// Buffers from before a capture that the step dropped, released when this is dropped.
struct Replaced<'a> {
    recorder: &'a Recorder,
    buffers: Vec<(sys::CUdeviceptr, Option<u64>, CudaSlice<f32>)>,
}

impl Drop for Replaced<'_> {
    fn drop(&mut self) {
        self.recorder.release_all(std::mem::take(&mut self.buffers));
    }
}

/// Fails when the step dropped `replaced` buffers it did not allocate: tensors of its state
/// it replaced, whose new buffers the graph would hand out again at every replay.
fn check_replaced(replaced: usize) -> Result<()> {
    if replaced == 0 {
        return Ok(());
    }
    Err(Error::Backend {
        op: OP,
        message: format!(
            "the step frees {replaced} buffer(s) of its state (it replaced tensors); {IN_PLACE}"
        ),
    })
}

/// How to fix a step that replaces the state's tensors.
const IN_PLACE: &str = "write results into the state's tensors in place (`copy_`, \
                        `add_scaled_`) instead of assigning new tensors to it";

/// Fails when the captured step launched other kernels, or the same kernels with other
/// scalars, than the eager step before it: a graph replays its scalars as captured.
fn check_same_work(eager: &[String], captured: &[String]) -> Result<()> {
    let differ = |index: usize, eager: &str, captured: &str| Error::Backend {
        op: OP,
        message: format!(
            "the step changes from one step to the next, and a graph would replay it frozen: \
             op {index} was `{eager}` in the eager step and `{captured}` when captured. \
             Scalars that depend on the step count (Adam's bias corrections, unless the \
             optimizer is built with `capturable: true`; SGD momentum's first step) and \
             control flow that changes between steps cannot be replayed; run more steps \
             eagerly first, or keep them out of the captured step"
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

/// Checks that every buffer the graph allocates it also frees, and nothing else: a step that
/// stored a new tensor in its state would keep an allocation of the graph, which the next
/// replay cannot make again. Addresses are counted, as the driver may give two allocations of
/// one graph the same address when their lifetimes do not overlap. The outer result is the
/// driver's.
fn check_memory(graph: &CudaGraph) -> Result<Result<()>, DriverError> {
    let graph = graph.cu_graph();
    let mut count = 0;
    // SAFETY: `graph` is a live graph owned by the caller's `CudaGraph`; a null node array
    // asks only for the count.
    unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &raw mut count) }.result()?;
    let mut nodes = vec![std::ptr::null_mut(); count];
    // SAFETY: `nodes` has room for `count` nodes.
    unsafe { sys::cuGraphGetNodes(graph, nodes.as_mut_ptr(), &raw mut count) }.result()?;
    // Allocations minus frees, per address.
    let mut outstanding: BTreeMap<sys::CUdeviceptr, i64> = BTreeMap::new();
    for &node in &nodes[..count] {
        // Read as a plain integer: a node type newer than these bindings is no enum value.
        let mut kind = 0u32;
        // SAFETY: `node` belongs to `graph`, and the driver writes the type, a C enum of the
        // size of a `u32`, on success.
        unsafe { sys::cuGraphNodeGetType(node, (&raw mut kind).cast()) }.result()?;
        if kind == sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_ALLOC as u32 {
            let mut params = MaybeUninit::<sys::CUDA_MEM_ALLOC_NODE_PARAMS>::uninit();
            // SAFETY: `node` is an allocation node of `graph`; the driver fills `params`.
            unsafe { sys::cuGraphMemAllocNodeGetParams(node, params.as_mut_ptr()) }.result()?;
            // SAFETY: initialised by the successful call above.
            *outstanding
                .entry(unsafe { params.assume_init() }.dptr)
                .or_default() += 1;
        } else if kind == sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEM_FREE as u32 {
            let mut pointer = 0;
            // SAFETY: `node` is a free node of `graph`; the driver writes its pointer.
            unsafe { sys::cuGraphMemFreeNodeGetParams(node, &raw mut pointer) }.result()?;
            *outstanding.entry(pointer).or_default() -= 1;
        }
    }
    Ok(check_balance(outstanding.values().copied()))
}

/// Fails unless every address a graph allocates is freed as often: `balances` holds the
/// allocations minus the frees of each address.
fn check_balance(balances: impl IntoIterator<Item = i64>) -> Result<()> {
    let mut balances = balances.into_iter();
    let message = match balances.find(|&balance| balance != 0) {
        None => return Ok(()),
        Some(kept) if kept > 0 => {
            format!("the step keeps a buffer it allocated (it stored a new tensor); {IN_PLACE}")
        }
        Some(_) => format!("the step frees a buffer the graph did not allocate; {IN_PLACE}"),
    };
    Err(Error::Backend { op: OP, message })
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
    fn graph_memory_must_balance_per_address() {
        assert!(check_balance([0, 0]).is_ok());
        let kept = check_balance([0, 1]).unwrap_err().to_string();
        assert!(kept.contains("keeps a buffer it allocated"), "{kept}");
        let freed = check_balance([-1]).unwrap_err().to_string();
        assert!(freed.contains("did not allocate"), "{freed}");
        let replaced = check_replaced(2).unwrap_err().to_string();
        assert!(
            replaced.contains("frees 2 buffer(s) of its state"),
            "{replaced}"
        );
        assert!(check_replaced(0).is_ok());
    }
}
