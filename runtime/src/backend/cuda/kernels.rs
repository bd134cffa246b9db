//! The kernel table: every kernel declared once with its parameters' Rust types, which give
//! it a typed launcher; every op family's `.cu` source compiled by NVRTC for the device's
//! architecture and checked against those launchers; and the helpers the launch glue in
//! `ops/*/cuda.rs` shares.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut,
    DriverError, LaunchConfig,
};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};

use super::launch::{Family, KernelArg};
use crate::error::{Error, Result};
use crate::ops::{binary, channel, conv, index, optim, permute, pool};

/// Threads per block of the elementwise kernels (and of `sum_rows_f32`, which relies on it).
pub(crate) const BLOCK: u32 = 256;

/// At most this many blocks; the kernels loop over the rest (grid-stride loops).
const MAX_BLOCKS: usize = 65_535;

/// Declares every kernel once: the op family whose `.cu` file holds it, its name there, and
/// its parameters as the Rust types its launcher takes ([`KernelArg`]s). Generates
/// [`Kernels`], with an unsafe launcher method per kernel, whose loading checks each launcher
/// against the kernel's PTX, and, for the tests, every [`Family`] in `FAMILIES`.
macro_rules! kernel_table {
    ($(
        $family:ident {
            $(
                $(#[doc = $doc:literal])*
                fn $kernel:ident = $name:literal($($arg:ident: $ty:ty),* $(,)?);
            )*
        }
    )*) => {
        /// Every kernel, loaded into the device's context, with a typed launcher each.
        pub(crate) struct Kernels {
            $($($kernel: CudaFunction,)*)*
        }

        impl Kernels {
            /// Compiles every family's source for `ctx`'s device, checks the launchers against
            /// the PTX, and loads the kernels.
            pub(crate) fn compile(ctx: &Arc<CudaContext>) -> Result<Self> {
                let (major, minor) = ctx
                    .compute_capability()
                    .map_err(cuda_error("compile kernels"))?;
                let arch = format!("--gpu-architecture=sm_{major}{minor}");
                $(
                    let $family = load_family(
                        ctx,
                        &arch,
                        &kernel_table!(@family $family { $($name($($ty),*))* }),
                    )?;
                )*
                Ok(Self {
                    $($($kernel: function(&$family, $name)?,)*)*
                })
            }

            $($(
                $(#[doc = $doc])*
                ///
                /// # Safety
                /// Every buffer must hold the elements the kernel indexes for the other
                /// arguments and `config`. The argument types are checked: the tests hold them
                /// against the kernel's declaration and PTX.
                #[allow(clippy::too_many_arguments)]
                pub(crate) unsafe fn $kernel(
                    &self,
                    stream: &CudaStream,
                    config: LaunchConfig,
                    $($arg: $ty,)*
                ) -> std::result::Result<(), DriverError> {
                    let mut launch = stream.launch_builder(&self.$kernel);
                    $(KernelArg::push($arg, &mut launch);)*
                    // SAFETY: the arguments have the kernel's parameter types, in order; the
                    // caller vouches for the buffers' lengths.
                    unsafe { launch.launch(config) }.map(drop)
                }
            )*)*
        }

        /// Every family, for the tests.
        #[cfg(test)]
        const FAMILIES: &[Family] = &[$(
            kernel_table!(@family $family { $($name($($ty),*))* }),
        )*];
    };
    (@family $family:ident { $($name:literal($($ty:ty),*))* }) => {
        Family {
            file: concat!(stringify!($family), ".cu"),
            source: crate::ops::$family::cuda::source,
            kernels: &[$(($name, &[$(<$ty as KernelArg>::PARAM),*])),*],
        }
    };
}

kernel_table! {
    unary {
        /// `out[i] = op(x[i])`.
        fn unary = "unary_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s0: &f32,
            s1: &f32,
        );
        /// `x[i] = op(x[i])`.
        fn unary_assign = "unary_assign_f32"(
            x: &mut CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s0: &f32,
            s1: &f32,
        );
        /// `out[i] = op(x[i])`, `derivative[i] = op'(x[i])`.
        fn unary_with_derivative = "unary_with_derivative_f32"(
            out: &mut CudaSlice<f32>,
            derivative: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s0: &f32,
            s1: &f32,
            from_output: &i32,
        );
        /// `x[i] = op(x[i])`, `derivative[i] = op'(x[i])`.
        fn unary_assign_with_derivative = "unary_assign_with_derivative_f32"(
            x: &mut CudaSlice<f32>,
            derivative: &mut CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s0: &f32,
            s1: &f32,
            from_output: &i32,
        );
        /// `out[i] = grad[i] * op'(saved[i])`.
        fn unary_backward = "unary_backward_f32"(
            out: &mut CudaSlice<f32>,
            grad: &CudaSlice<f32>,
            saved: &CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s0: &f32,
            s1: &f32,
        );
        /// `grad[i] = grad[i] * op'(saved[i])`.
        fn unary_backward_assign = "unary_backward_assign_f32"(
            grad: &mut CudaSlice<f32>,
            saved: &CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s0: &f32,
            s1: &f32,
        );
        /// `x[i] = value`.
        fn fill = "fill_f32"(x: &mut CudaSlice<f32>, n: &u64, value: &f32);
    }
    binary {
        /// `out = f(lhs, rhs)`, broadcast over `layout`, `f` an op's value or partial derivative.
        fn binary = "binary_f32"(
            out: &mut CudaSlice<f32>,
            lhs: &CudaSlice<f32>,
            rhs: &CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s: &f32,
            layout: &binary::cuda::Layout,
        );
        /// `lhs = op(lhs, rhs)`, broadcast over `layout`.
        fn binary_assign = "binary_assign_f32"(
            lhs: &mut CudaSlice<f32>,
            rhs: &CudaSlice<f32>,
            n: &u64,
            op: &i32,
            s: &f32,
            layout: &binary::cuda::Layout,
        );
    }
    reduce {
        /// Sums each of `rows` rows of `len`, one block of [`BLOCK`] threads per row.
        fn sum_rows = "sum_rows_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            rows: &u64,
            len: &u64,
        );
        /// Sums `[outer, len, inner]` over its middle axis, one thread per output.
        fn sum_strided = "sum_strided_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            outer: &u64,
            len: &u64,
            inner: &u64,
        );
    }
    matmul {
        /// `dst` = the transpose of the row-major `rows x cols` matrix `src`.
        fn transpose = "transpose_f32"(
            dst: &mut CudaSlice<f32>,
            src: &CudaSlice<f32>,
            rows: &u64,
            cols: &u64,
        );
    }
    loss {
        /// The elementwise loss `op` and its gradient.
        fn pointwise_loss = "pointwise_loss_f32"(
            values: &mut CudaSlice<f32>,
            grad: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            t: &CudaSlice<f32>,
            n: &u64,
            op: &i32,
            beta: &f32,
        );
        /// Each row's class loss `op` against its label, and the gradient.
        fn class_loss = "class_loss_f32"(
            values: &mut CudaSlice<f32>,
            grad: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            labels: &CudaSlice<f32>,
            rows: &u64,
            classes: &u64,
            op: &i32,
            label_smoothing: &f32,
        );
    }
    optim {
        /// One fused optimizer update of `param`, with up to three state buffers, advancing
        /// its step scalars first when it reads them.
        fn optim_step = "optim_step_f32"(
            param: &mut CudaSlice<f32>,
            grad: &CudaSlice<f32>,
            s0: Option<&mut CudaSlice<f32>>,
            s1: Option<&mut CudaSlice<f32>>,
            s2: Option<&mut CudaSlice<f32>>,
            scalars: Option<&mut CudaSlice<f32>>,
            n: &u64,
            kind: &i32,
            flags: &u32,
            hyper: &optim::cuda::Hyper,
            rule: &optim::cuda::AdamRule,
        );
    }
    conv {
        /// Unfolds every convolution window into a column, one thread per column entry.
        fn im2col = "im2col_f32"(
            cols: &mut CudaSlice<f32>,
            x: &CudaView<'_, f32>,
            geometry: &conv::cuda::Geometry,
        );
        /// Folds column gradients back, one thread per input element.
        fn col2im = "col2im_f32"(
            x: &mut CudaViewMut<'_, f32>,
            cols: &CudaSlice<f32>,
            geometry: &conv::cuda::Geometry,
        );
    }
    channel {
        /// The sum of each channel (or of its deviations from `mean`, weighted by `a`), one
        /// block of [`BLOCK`] threads per channel.
        fn channel_sum = "channel_sum_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            a: Option<&CudaSlice<f32>>,
            mean: Option<&CudaSlice<f32>>,
            layout: &channel::cuda::Layout,
        );
        /// `out = x * scale[c] + shift[c] (+ (y - center[c]) * coef[c])`.
        fn channel_affine = "channel_affine_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            scale: &CudaSlice<f32>,
            shift: &CudaSlice<f32>,
            y: Option<&CudaSlice<f32>>,
            center: Option<&CudaSlice<f32>>,
            coef: Option<&CudaSlice<f32>>,
            layout: &channel::cuda::Layout,
        );
    }
    dropout {
        /// `out[i] = x[i] * scale` where the hash of `(seed, i)` clears `threshold`, else 0.
        fn dropout = "dropout_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            n: &u64,
            seed: &u64,
            threshold: &u32,
            scale: &f32,
        );
    }
    index {
        /// The extreme of each `[o, :, i]` line and its index, one thread per line.
        fn extremum = "extremum_f32"(
            values: &mut CudaSlice<f32>,
            indices: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            line: &index::cuda::Line,
            max: &i32,
        );
        /// Copies slices along a dim between two tensors, one thread per element.
        fn copy_block = "copy_block_f32"(
            dst: &mut CudaSlice<f32>,
            src: &CudaSlice<f32>,
            block: &index::cuda::CopyBlock,
        );
        /// `out[o, j, i] = x[o, indices[j], i]`, one thread per output element.
        fn gather = "gather_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            indices: &CudaSlice<f32>,
            count: &u64,
            line: &index::cuda::Line,
        );
        /// `x[m, i, j] = value` where `j > i`, one thread per element.
        fn fill_above_diagonal = "fill_above_diagonal_f32"(
            x: &mut CudaSlice<f32>,
            matrices: &u64,
            size: &u64,
            value: &f32,
        );
        /// `out[o, indices[j], i] += src[o, j, i]` with atomic adds.
        fn scatter_add = "scatter_add_f32"(
            out: &mut CudaSlice<f32>,
            src: &CudaSlice<f32>,
            indices: &CudaSlice<f32>,
            count: &u64,
            line: &index::cuda::Line,
        );
    }
    norm {
        /// Layer normalisation, one block of [`BLOCK`] threads per row.
        fn layer_norm = "layer_norm_f32"(
            y: &mut CudaSlice<f32>,
            mean: &mut CudaSlice<f32>,
            rstd: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            weight: Option<&CudaSlice<f32>>,
            bias: Option<&CudaSlice<f32>>,
            rows: &u64,
            len: &u64,
            eps: &f32,
        );
        /// The input's gradient through layer normalisation, one block per row.
        fn layer_norm_backward = "layer_norm_backward_f32"(
            grad_x: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            grad: &CudaSlice<f32>,
            weight: Option<&CudaSlice<f32>>,
            mean: &CudaSlice<f32>,
            rstd: &CudaSlice<f32>,
            rows: &u64,
            len: &u64,
        );
        /// Layer normalisation's weight and bias gradients, one thread per column.
        fn layer_norm_param_grads = "layer_norm_param_grads_f32"(
            grad_weight: &mut CudaSlice<f32>,
            grad_bias: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            grad: &CudaSlice<f32>,
            mean: &CudaSlice<f32>,
            rstd: &CudaSlice<f32>,
            rows: &u64,
            len: &u64,
        );
    }
    permute {
        /// A permutation's copy, one thread per output element.
        fn permute = "permute_f32"(
            dst: &mut CudaSlice<f32>,
            src: &CudaSlice<f32>,
            n: &u64,
            order: &permute::cuda::Order,
        );
    }
    pool {
        /// Max or average pooling, one thread per output; `indices` gets max pooling's argmax.
        fn pool2d = "pool2d_f32"(
            out: &mut CudaSlice<f32>,
            indices: Option<&mut CudaSlice<f32>>,
            x: &CudaSlice<f32>,
            window: &pool::cuda::Window,
        );
        /// The gradient through a pooling, one thread per input, gathering its windows.
        fn pool2d_backward = "pool2d_backward_f32"(
            grad_in: &mut CudaSlice<f32>,
            grad_out: &CudaSlice<f32>,
            indices: Option<&CudaSlice<f32>>,
            window: &pool::cuda::Window,
        );
    }
    softmax {
        /// `out = op(x)` along the middle axis of `[outer, len, inner]`.
        fn softmax = "softmax_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            outer: &u64,
            len: &u64,
            inner: &u64,
            op: &i32,
        );
        /// The gradient through `op`, from its output `y` and the output's gradient `g`.
        fn softmax_backward = "softmax_backward_f32"(
            out: &mut CudaSlice<f32>,
            y: &CudaSlice<f32>,
            g: &CudaSlice<f32>,
            outer: &u64,
            len: &u64,
            inner: &u64,
            op: &i32,
        );
        /// Causal attention weights, one thread per row of `[.., size, size]` scores.
        fn causal_softmax = "causal_softmax_f32"(
            out: &mut CudaSlice<f32>,
            x: &CudaSlice<f32>,
            rows: &u64,
            size: &u64,
            scale: &f32,
        );
        /// The gradient through `causal_softmax`, from its output `y` and the output's
        /// gradient `g`.
        fn causal_softmax_backward = "causal_softmax_backward_f32"(
            out: &mut CudaSlice<f32>,
            y: &CudaSlice<f32>,
            g: &CudaSlice<f32>,
            rows: &u64,
            size: &u64,
            scale: &f32,
        );
    }
}

/// Compiles `family`'s source to PTX, checks its launchers against it, and loads it.
fn load_family(ctx: &Arc<CudaContext>, arch: &str, family: &Family) -> Result<Arc<CudaModule>> {
    let ptx = compile(arch, family.file, (family.source)())?;
    family
        .check_ptx(&ptx.to_src())
        .map_err(|message| Error::Backend {
            op: "load kernels",
            message,
        })?;
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
            crate::backend::skip_without_cuda(
                &"no NVRTC library (libnvrtc.so.13) on the loader path",
            );
        }
        present
    }

    /// Every launcher against its kernel's declaration in the `.cu` source: buffer or value,
    /// read-only (`const float*`) or written, and the C type, in order. Needs no NVRTC.
    #[test]
    fn every_launcher_matches_its_kernels_declaration() {
        for family in FAMILIES {
            for &(kernel, params) in family.kernels {
                let declared = declared_params((family.source)(), kernel)
                    .unwrap_or_else(|| panic!("{} declares no kernel `{kernel}`", family.file));
                let passed: Vec<&str> = params.iter().map(|param| param.c_type()).collect();
                assert_eq!(passed, declared, "`{kernel}` in {}", family.file);
            }
        }
    }

    /// The C types of the parameters `source` declares for `extern "C"` kernel `kernel`.
    fn declared_params<'s>(source: &'s str, kernel: &str) -> Option<Vec<&'s str>> {
        let signature = format!("__global__ void {kernel}(");
        let start = source.find(&signature)? + signature.len();
        let list = &source[start..start + source[start..].find(')')?];
        let params = list.split(',').map(|param| {
            let param = param.trim();
            let name = param.rsplit([' ', '*']).next().unwrap_or_default();
            param[..param.len() - name.len()].trim_end()
        });
        Some(params.collect())
    }

    /// Compiles every family with NVRTC when its library is on the loader path (it needs no
    /// GPU) and checks its launchers against the PTX, as loading does on a device: a syntax or
    /// type error in a `.cu` file, or a struct whose size differs from its Rust twin, shows up
    /// without one.
    #[test]
    fn sources_compile_with_nvrtc_and_match_their_launchers() {
        if !nvrtc_present() {
            return;
        }
        for family in FAMILIES {
            let ptx = compile("--gpu-architecture=sm_90", family.file, (family.source)())
                .unwrap_or_else(|error| panic!("{error}"));
            family
                .check_ptx(&ptx.to_src())
                .unwrap_or_else(|error| panic!("{error}"));
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
