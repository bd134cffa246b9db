//! CPU GEMM on faer, and the transpose kernel that materialises a view.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::{Gemm, GemmBatch, MatmulKernel};
use crate::backend::Cpu;
use crate::error::Result;

/// Products below this many flops run on one thread: on small shapes (the tutorial's are 12.8
/// MFLOP) a fork-join costs more than it saves on two cores; the char GPT's 33.5 MFLOP
/// projections gain from two.
const PARALLEL_MIN_FLOPS: usize = 32_000_000;

/// Batches of small products with this many flops in all share the threads: the char GPT's
/// attention (64 products of 0.26 MFLOP a call) takes 5 ms less a step, and the larger CNN's
/// per-sample convolutions (1.8-9.4 MFLOP each, 32 samples) 6 ms less; the digits CNN's
/// (9.4 MFLOP a call in all) take 0.2 ms more a step when split.
const BATCH_PARALLEL_MIN_FLOPS: usize = 16_000_000;

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
    // Two parts per thread: with a busy neighbour on one core, the other thread takes over
    // the parts left waiting (measured: the MLP bench step at the one-thread time, 8.7-9.9 ms
    // against 8.8; with four parts per thread 12 ms).
    let parts = if gemm.flops() < PARALLEL_MIN_FLOPS {
        1
    } else {
        2 * rayon::current_num_threads()
    };
    product_in_parts(c, accum, a, b, gemm.alpha, parts);
}

/// `c (accum) alpha a b` in `parts` products that run on the rayon pool, each on one thread:
/// `c` split along its longer side, with the rows of `a` or the columns of `b` it needs.
/// (faer's own parallel products allocate on every call.)
fn product_in_parts(
    c: MatMut<'_, f32>,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    parts: usize,
) {
    if parts < 2 || c.nrows().max(c.ncols()) < 2 {
        matmul(c, accum, a, b, alpha, Par::Seq);
        return;
    }
    let (first, second) = (parts / 2, parts - parts / 2);
    if c.nrows() >= c.ncols() {
        let mid = c.nrows() * first / parts;
        let (c_top, c_bottom) = c.split_at_row_mut(mid);
        let (a_top, a_bottom) = a.split_at_row(mid);
        rayon::join(
            || product_in_parts(c_top, accum, a_top, b, alpha, first),
            || product_in_parts(c_bottom, accum, a_bottom, b, alpha, second),
        );
    } else {
        let mid = c.ncols() * first / parts;
        let (c_left, c_right) = c.split_at_col_mut(mid);
        let (b_left, b_right) = b.split_at_col(mid);
        rayon::join(
            || product_in_parts(c_left, accum, a, b_left, alpha, first),
            || product_in_parts(c_right, accum, a, b_right, alpha, second),
        );
    }
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
        let operands = |i: usize| {
            let at = |strided: super::Strided| strided.offset + i * strided.step;
            (&a[at(batch.a)..][..m * k], &b[at(batch.b)..][..k * n])
        };
        // Many small products (attention's per batch and head, a convolution's per sample)
        // share the threads when their outputs do not overlap: two runs of consecutive
        // products per thread, as tasks of one tiny product each cost more than they run.
        let (size, step) = (m * n, batch.c.step);
        if batch.count > 1
            && gemm.flops() < PARALLEL_MIN_FLOPS
            && gemm.flops() * batch.count >= BATCH_PARALLEL_MIN_FLOPS
            && step >= size
            && size > 0
        {
            let per_task = batch.count.div_ceil(2 * rayon::current_num_threads());
            c[batch.c.offset..]
                .par_chunks_mut(step * per_task)
                .take(batch.count.div_ceil(per_task))
                .enumerate()
                .for_each(|(task, c)| {
                    let first = task * per_task;
                    let last = (first + per_task).min(batch.count);
                    for (i, c) in (first..last).zip(c.chunks_mut(step)) {
                        let (a, b) = operands(i);
                        self::gemm(gemm, a, b, &mut c[..size]);
                    }
                });
            return Ok(());
        }
        for i in 0..batch.count {
            let (a, b) = operands(i);
            self::gemm(gemm, a, b, &mut c[batch.c.offset + i * step..][..size]);
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
