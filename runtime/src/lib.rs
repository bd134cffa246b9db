//! The runtime of declnet: [`Tensor`], the [`Backend`]s it runs on, and the kernels that
//! `network!`-generated code calls.
//!
//! ```
//! use declnet_runtime::{Cpu, Tensor, rng::seeded};
//! let rng = &mut seeded(0);
//! let x = Tensor::randn([64, 1000], &Cpu, rng);
//! let w = Tensor::randn([1000, 100], &Cpu, rng);
//! let h = x.mm(&w).clamp_min(0.0);
//! assert_eq!(h.dims(), &[64, 100]);
//! ```

// The CPU kernels' scalar code must be inlined into loops compiled for AVX2 or AVX-512 at run
// time; see `backend::cpu::vectorized`.
#![allow(clippy::inline_always)]

pub mod backend;
pub mod data;
pub mod distributed;
mod error;
pub mod function;
pub mod io;
pub mod layers;
pub mod losses;
mod module;
pub mod network;
pub mod ops;
pub mod optim;
mod param;
mod print;
pub mod rng;
mod shape;
mod step_graph;
mod tensor;

#[cfg(feature = "cuda")]
pub use backend::CudaBuffer;
pub use backend::{Backend, Cpu, Cuda, Memory, num_threads, set_num_threads};
pub use error::{Error, Result};
pub use io::ModuleIo;
pub use module::{
    Buffer, BufferMut, Module, ParamList, ParamName, visit_buffers_prefixed,
    visit_buffers_prefixed_mut, visit_config_prefixed, visit_prefixed, visit_prefixed_mut,
};
pub use ops::matmul::MatView;
pub use param::Param;
pub use shape::{Dims, Shape};
pub use step_graph::StepGraph;
pub use tensor::Tensor;

/// Re-exported so users name the same `rand` traits the runtime takes.
pub use rand;
