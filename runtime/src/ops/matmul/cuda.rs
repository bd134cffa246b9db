//! GEMM on cuBLAS and the launch glue of the transpose kernel in `matmul.cu`.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm as _, GemmConfig, StridedBatchedConfig};
use cudarc::driver::CudaSlice;

use super::{Gemm, GemmBatch, MatmulKernel};
use crate::backend::cuda::{Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::{Error, Result};

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("matmul.cu")
}

/// `c = alpha * op(a) * op(b) + beta * c` on row-major buffers.
///
/// cuBLAS is column-major, and a row-major `[r, c]` buffer is the column-major `[c, r]`
/// matrix, its transpose. So row-major `C = op(A) op(B)` is column-major
/// `C^T = op(B)^T op(A)^T`: cuBLAS gets `b` first, `a` second, `m` and `n` swapped, and each
/// operand's transpose flag as given, with no copies.
pub(crate) fn gemm(
    dev: &Cuda,
    gemm: &Gemm,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    c: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "gemm";
    let &Gemm { m, n, k, .. } = gemm;
    expect_len(OP, "a", a.len(), m * k)?;
    expect_len(OP, "b", b.len(), k * n)?;
    expect_len(OP, "c", c.len(), m * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let config = config(gemm, gemm.stored().map(|(_, cols)| cols))?;
    let blas = dev.blas()?;
    // SAFETY: with the dims and leading dims above, cuBLAS reads `k * n` elements of `b`,
    // `m * k` of `a` and writes `m * n` of `c`, the lengths checked above; all three live on
    // the stream the handle is bound to.
    unsafe { blas.gemm(config, b, a, c) }.map_err(cuda_error(OP))
}

/// `gemm` as cuBLAS's column-major configuration (see [`gemm`]), for operands whose rows lie
/// `rows_apart` (of `a`, `b` and `c`) apart.
fn config(gemm: &Gemm, rows_apart: [usize; 3]) -> Result<GemmConfig<f32>> {
    const OP: &str = "gemm";
    let &Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha,
        beta,
    } = gemm;
    let int = |v: usize| {
        i32::try_from(v.max(1)).map_err(|_| Error::Backend {
            op: OP,
            message: format!(
                "cuBLAS takes 32-bit dims, found {m}x{k} by {k}x{n} (rows {rows_apart:?} apart)"
            ),
        })
    };
    let op = |transposed: bool| {
        if transposed {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    // A row-major matrix is the column-major transpose, its leading dim the distance between
    // its rows.
    let [a_apart, b_apart, c_apart] = rows_apart;
    Ok(GemmConfig {
        transa: op(trans_b),
        transb: op(trans_a),
        m: int(n)?,
        n: int(m)?,
        k: i32::try_from(k).map_err(|_| Error::Backend {
            op: OP,
            message: format!("cuBLAS takes 32-bit dims, found inner dim {k}"),
        })?,
        alpha,
        lda: int(b_apart)?,
        ldb: int(a_apart)?,
        beta,
        ldc: int(c_apart)?,
    })
}

/// The batch `batch` of products of `gemm`'s shape, one strided-batched cuBLAS call per group,
/// with the operands swapped as in [`gemm`].
pub(crate) fn gemm_batched(
    dev: &Cuda,
    gemm: &Gemm,
    batch: &GemmBatch,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    c: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "gemm_batched";
    batch.check(gemm, a.len(), b.len(), c.len())?;
    if batch.count == 0 || gemm.m == 0 || gemm.n == 0 {
        return Ok(());
    }
    let int = |what: &str, value: usize| {
        i64::try_from(value).map_err(|_| Error::Backend {
            op: OP,
            message: format!("cuBLAS takes 64-bit {what}, found {value}"),
        })
    };
    let per_group = batch.per_group();
    let [(_, a_cols), (_, b_cols), _] = gemm.stored();
    let rows_apart = [
        batch.a.rows_apart(a_cols),
        batch.b.rows_apart(b_cols),
        batch.c.rows_apart(gemm.n),
    ];
    let config = StridedBatchedConfig {
        gemm: config(gemm, rows_apart)?,
        batch_size: i32::try_from(per_group).map_err(|_| Error::Backend {
            op: OP,
            message: format!("cuBLAS takes a 32-bit batch, found {per_group}"),
        })?,
        stride_a: int("strides", batch.b.step)?,
        stride_b: int("strides", batch.a.step)?,
        stride_c: int("strides", batch.c.step)?,
    };
    let blas = dev.blas()?;
    for first in (0..batch.count).step_by(per_group) {
        let at = |strided: super::Strided| strided.start(first, batch.group);
        let (a, b) = (a.slice(at(batch.a)..), b.slice(at(batch.b)..));
        let mut c = c.slice_mut(at(batch.c)..);
        // SAFETY: `batch.check` verified that every matrix the configuration reads or writes
        // (with these leading dims) lies inside its buffer and that the outputs do not
        // overlap; all live on the handle's stream.
        unsafe { blas.gemm_strided_batched(config, &b, &a, &mut c) }.map_err(cuda_error(OP))?;
    }
    Ok(())
}

/// Writes the transpose of the row-major `rows x cols` matrix `src` into `dst`.
pub(crate) fn transpose(
    dev: &Cuda,
    src: &CudaSlice<f32>,
    rows: usize,
    cols: usize,
    dst: &mut CudaSlice<f32>,
) -> Result<()> {
    let n = rows * cols;
    expect_len("transpose", "source", src.len(), n)?;
    expect_len("transpose", "destination", dst.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let (rows, cols) = (rows as u64, cols as u64);
    let kernels = dev.kernels()?;
    // SAFETY: both buffers hold the `rows * cols` elements the kernel touches.
    unsafe { kernels.transpose(dev.stream(), launch_config(n), dst, src, &rows, &cols) }
        .map_err(cuda_error("transpose"))
}

impl MatmulKernel for Cuda {
    fn gemm(&self, gemm: &Gemm, a: &CudaBuffer, b: &CudaBuffer, c: &mut CudaBuffer) -> Result<()> {
        self.recorder().record([a, b, &*c], || format!("{gemm:?}"));
        self::gemm(self, gemm, a, b, c.slice_mut())
    }

    fn gemm_batched(
        &self,
        gemm: &Gemm,
        batch: &GemmBatch,
        a: &CudaBuffer,
        b: &CudaBuffer,
        c: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([a, b, &*c], || format!("{gemm:?} {batch:?}"));
        self::gemm_batched(self, gemm, batch, a, b, c.slice_mut())
    }

    fn transpose(
        &self,
        src: &CudaBuffer,
        rows: usize,
        cols: usize,
        dst: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([src, &*dst], || format!("transpose {rows}x{cols}"));
        self::transpose(self, src, rows, cols, dst.slice_mut())
    }
}
