//! CPU GEMM on faer, and the transpose kernel that materialises a view.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::{Gemm, GemmBatch, MatmulKernel};
use crate::backend::Cpu;
use crate::error::Result;

/// Products below this many flops run on one thread: on small shapes (the tutorial's are 12.8
/// MFLOP) a fork-join costs more than it saves on two cores.
const PARALLEL_MIN_FLOPS: usize = 64_000_000;

/// `c = alpha * op(a) * op(b) + beta * c` with faer, transposes read through strides.
pub(crate) fn gemm(gemm: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let &Gemm { m, n, k, .. } = gemm;
    let a = if gemm.trans_a {
        MatRef::from_row_major_slice(a, k, m).transpose()
    } else {
        MatRef::from_row_major_slice(a, m, k)
    };
    let b = if gemm.trans_b {
        MatRef::from_row_major_slice(b, n, k).transpose()
    } else {
        MatRef::from_row_major_slice(b, k, n)
    };
    let mut c = MatMut::from_row_major_slice_mut(c, m, n);
    let accum = if gemm.beta == 0.0 {
        Accum::Replace
    } else {
        if gemm.beta != 1.0 {
            c *= faer::Scale(gemm.beta);
        }
        Accum::Add
    };
    let par = if gemm.flops() < PARALLEL_MIN_FLOPS {
        Par::Seq
    } else {
        Par::rayon(0)
    };
    matmul(c, accum, a, b, gemm.alpha, par);
}

/// Writes the transpose of the row-major `rows x cols` matrix `src` into `dst`.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for (i, row) in src.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            dst[j * rows + i] = v;
        }
    }
}

impl MatmulKernel for Cpu {
    fn gemm(&self, gemm: &Gemm, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>) -> Result<()> {
        self::gemm(gemm, a, b, c);
        Ok(())
    }

    fn gemm_batched(
        &self,
        gemm: &Gemm,
        batch: &GemmBatch,
        a: &Vec<f32>,
        b: &Vec<f32>,
        c: &mut Vec<f32>,
    ) -> Result<()> {
        batch.check(gemm, a.len(), b.len(), c.len())?;
        let (m, n, k) = (gemm.m, gemm.n, gemm.k);
        for i in 0..batch.count {
            let at = |strided: super::Strided| strided.offset + i * strided.step;
            let (a, b) = (&a[at(batch.a)..][..m * k], &b[at(batch.b)..][..k * n]);
            self::gemm(gemm, a, b, &mut c[at(batch.c)..][..m * n]);
        }
        Ok(())
    }

    fn transpose(
        &self,
        src: &Vec<f32>,
        rows: usize,
        cols: usize,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        self::transpose(src, rows, cols, dst);
        Ok(())
    }
}
