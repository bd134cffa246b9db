//! The kernel table: every op family's `.cu` source compiled by NVRTC for the device's
//! architecture, and the helpers the launch glue in `ops/*/cuda.rs` shares.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchConfig};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};

use crate::error::{Error, Result};
use crate::ops::{binary, loss, matmul, optim, reduce, softmax, unary};

/// Threads per block of the elementwise kernels (and of `sum_rows_f32`, which relies on it).
pub(crate) const BLOCK: u32 = 256;

/// At most this many blocks; the kernels loop over the rest (grid-stride loops).
const MAX_BLOCKS: usize = 65_535;

/// Every kernel, loaded into the device's context.
pub(crate) struct Kernels {
    pub(crate) unary: CudaFunction,
    pub(crate) unary_assign: CudaFunction,
    pub(crate) fill: CudaFunction,
    pub(crate) binary: CudaFunction,
    pub(crate) binary_assign: CudaFunction,
    pub(crate) sum_rows: CudaFunction,
    pub(crate) sum_strided: CudaFunction,
    pub(crate) transpose: CudaFunction,
    pub(crate) pointwise_loss: CudaFunction,
    pub(crate) class_loss: CudaFunction,
    pub(crate) optim_step: CudaFunction,
    pub(crate) adam_scalars: CudaFunction,
    pub(crate) softmax: CudaFunction,
    pub(crate) softmax_backward: CudaFunction,
}

impl Kernels {
    /// Compiles every family's source for `ctx`'s device and loads its kernels.
    pub(crate) fn compile(ctx: &Arc<CudaContext>) -> Result<Self> {
        let (major, minor) = ctx
            .compute_capability()
            .map_err(cuda_error("compile kernels"))?;
        let arch = format!("--gpu-architecture=sm_{major}{minor}");
        let module = |(file, source): (&str, &str)| load_module(ctx, &arch, file, source);
        let [unary, binary, reduce, matmul, loss, optim, softmax] = SOURCES;
        let (unary, binary, reduce) = (module(unary)?, module(binary)?, module(reduce)?);
        let (matmul, loss, optim) = (module(matmul)?, module(loss)?, module(optim)?);
        let softmax = module(softmax)?;
        Ok(Self {
            unary: function(&unary, "unary_f32")?,
            unary_assign: function(&unary, "unary_assign_f32")?,
            fill: function(&unary, "fill_f32")?,
            binary: function(&binary, "binary_f32")?,
            binary_assign: function(&binary, "binary_assign_f32")?,
            sum_rows: function(&reduce, "sum_rows_f32")?,
            sum_strided: function(&reduce, "sum_strided_f32")?,
            transpose: function(&matmul, "transpose_f32")?,
            pointwise_loss: function(&loss, "pointwise_loss_f32")?,
            class_loss: function(&loss, "class_loss_f32")?,
            optim_step: function(&optim, "optim_step_f32")?,
            adam_scalars: function(&optim, "adam_scalars_f32")?,
            softmax: function(&softmax, "softmax_f32")?,
            softmax_backward: function(&softmax, "softmax_backward_f32")?,
        })
    }
}

/// The family sources, by the file name NVRTC's messages use.
const SOURCES: [(&str, &str); 7] = [
    ("unary.cu", unary::cuda::SOURCE),
    ("binary.cu", binary::cuda::SOURCE),
    ("reduce.cu", reduce::cuda::SOURCE),
    ("matmul.cu", matmul::cuda::SOURCE),
    ("loss.cu", loss::cuda::SOURCE),
    ("optim.cu", optim::cuda::SOURCE),
    ("softmax.cu", softmax::cuda::SOURCE),
];

/// Compiles `source` to PTX and loads it.
fn load_module(
    ctx: &Arc<CudaContext>,
    arch: &str,
    file: &str,
    source: &str,
) -> Result<Arc<CudaModule>> {
    let ptx = compile(arch, file, source)?;
    ctx.load_module(ptx).map_err(cuda_error("load kernels"))
}

/// Compiles `source` to PTX for `arch` (an NVRTC `--gpu-architecture=` option); errors carry
/// NVRTC's log.
///
/// Contraction into fused multiply-adds is off (`--fmad=false`), so each kernel rounds like
/// its CPU twin, which writes out `fmaf` where the CPU uses `mul_add`.
fn compile(arch: &str, file: &str, source: &str) -> Result<Ptx> {
    let options = CompileOptions {
        fmad: Some(false),
        options: vec![arch.to_owned()],
        name: Some(file.to_owned()),
        ..CompileOptions::default()
    };
    compile_ptx_with_opts(source, options).map_err(|error| Error::Backend {
        op: "compile kernels",
        message: match error {
            CompileError::CompileError { nvrtc, log, .. } => format!(
                "NVRTC cannot compile `{file}` ({nvrtc:?}):\n{}",
                log.to_string_lossy()
            ),
            other => format!("NVRTC cannot compile `{file}`: {other}"),
        },
    })
}

fn function(module: &Arc<CudaModule>, name: &str) -> Result<CudaFunction> {
    module.load_function(name).map_err(|error| Error::Backend {
        op: "load kernels",
        message: format!("kernel `{name}`: {error}"),
    })
}

/// Converts a cudarc error (driver, cuBLAS, NVRTC) into [`Error::Backend`] for `op`.
pub(crate) fn cuda_error<E: fmt::Display>(op: &'static str) -> impl FnOnce(E) -> Error {
    move |error| Error::Backend {
        op,
        message: error.to_string(),
    }
}

/// Checks that a buffer has the length a kernel will index it with: the kernels trust their
/// lengths, so a short buffer would be written out of bounds.
pub(crate) fn expect_len(op: &'static str, what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::Backend {
            op,
            message: format!("{what} holds {len} elements, expected {expected}"),
        })
    }
}

/// One thread per element for `n > 0` elements, [`BLOCK`] threads per block, at most
/// [`MAX_BLOCKS`] blocks.
pub(crate) fn launch_config(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether NVRTC can be loaded (it needs no GPU); says the test is skipped when not.
    fn nvrtc_present() -> bool {
        // SAFETY: only tries to dlopen the library.
        let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
        if !present {
            println!("skipped: no NVRTC library (libnvrtc.so.13) on the loader path");
        }
        present
    }

    /// Compiles every kernel source with NVRTC when its library is on the loader path (it
    /// needs no GPU), so a syntax or type error in a `.cu` file shows up without a device.
    #[test]
    fn sources_compile_with_nvrtc() {
        if !nvrtc_present() {
            return;
        }
        for (file, source) in SOURCES {
            let ptx = compile("--gpu-architecture=sm_90", file, source)
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(ptx.to_src().contains(".entry"), "{file} has no kernels");
        }
    }

    #[test]
    fn a_kernel_that_fails_to_compile_is_an_error_with_nvrtc_log() {
        if !nvrtc_present() {
            return;
        }
        let source = "extern \"C\" __global__ void broken(float* x) { x[0] = undeclared; }";
        let error = compile("--gpu-architecture=sm_90", "broken.cu", source)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("compile kernels: NVRTC cannot compile `broken.cu`"),
            "{error}"
        );
        assert!(
            error.contains("undeclared"),
            "the log names the culprit: {error}"
        );
    }
}
