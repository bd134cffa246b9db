//! CPU GEMM on faer, and the transpose kernel that materialises a view.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::ops::Range;

use super::{Gemm, GemmBatch, MatmulKernel};
use crate::backend::cpu::join;
use crate::backend::{Cpu, Memory};
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

/// Sums of products with outputs of at most this many elements split the products, not the
/// output, between threads (each thread's partial sum in a buffer of the output's size): the
/// larger CNN's first two weight gradients (32x27 and 64x288 over 32 samples) take 0.49 ms
/// instead of 0.68 ms, and 2.64 ms instead of 2.82 ms. Its third (128x576) takes as long
/// either way.
const SPLIT_PRODUCTS_MAX_OUTPUT: usize = 1 << 16;

/// `op(a)` and `op(b)` of `gemm`'s shape as faer views of row-major slices.
fn operands<'a>(gemm: &Gemm, a: &'a [f32], b: &'a [f32]) -> (MatRef<'a, f32>, MatRef<'a, f32>) {
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
    (a, b)
}

/// `c` as a faer view, scaled by `beta` when that is neither 0 nor 1, and how the products
/// then go into it.
fn output<'a>(gemm: &Gemm, c: &'a mut [f32]) -> (MatMut<'a, f32>, Accum) {
    let mut c = MatMut::from_row_major_slice_mut(c, gemm.m, gemm.n);
    let accum = if gemm.beta == 0.0 {
        Accum::Replace
    } else {
        if gemm.beta != 1.0 {
            c *= faer::Scale(gemm.beta);
        }
        Accum::Add
    };
    (c, accum)
}

/// Two parts per thread for products at or over [`PARALLEL_MIN_FLOPS`], else one: with a busy
/// neighbour on one core, the other thread takes over the parts left waiting (measured: the
/// MLP bench step at the one-thread time, 8.7-9.9 ms against 8.8; with four parts per thread
/// 12 ms).
fn parts_for(flops: usize) -> usize {
    if flops < PARALLEL_MIN_FLOPS {
        1
    } else {
        2 * crate::backend::num_threads()
    }
}

/// `c = alpha * op(a) * op(b) + beta * c` with faer, transposes read through strides.
pub(crate) fn gemm(gemm: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (a, b) = operands(gemm, a, b);
    let (c, accum) = output(gemm, c);
    let product = |_| (a, b);
    sum_in_parts(
        c,
        accum,
        (1, &product),
        (0, 0),
        gemm.alpha,
        parts_for(gemm.flops()),
    );
}

/// Product `i`'s `op(a)` and `op(b)`.
type ProductOperands<'p, 'a> = dyn Fn(usize) -> (MatRef<'a, f32>, MatRef<'a, f32>) + Sync + 'p;

/// `count` products, product `i`'s `op(a)` and `op(b)` at `operands(i)`.
type Products<'p, 'a> = (usize, &'p ProductOperands<'p, 'a>);

/// `c (accum) alpha Σ_i a_i b_i` (in product order) in `parts` blocks of `c` that run on the
/// rayon pool, each on one thread: `c` split along its longer side, each block reading the
/// rows of every `a_i` and the columns of every `b_i` it needs. `c` is the block at `at`
/// (row, column) of the whole output. (faer's own parallel products allocate on every call.)
fn sum_in_parts(
    c: MatMut<'_, f32>,
    accum: Accum,
    products: Products<'_, '_>,
    at: (usize, usize),
    alpha: f32,
    parts: usize,
) {
    if parts < 2 || c.nrows().max(c.ncols()) < 2 {
        let (count, operands) = products;
        let (rows, cols) = (c.nrows(), c.ncols());
        let mut c = c;
        for i in 0..count {
            let (a, b) = operands(i);
            let (a, b) = (a.subrows(at.0, rows), b.subcols(at.1, cols));
            let accum = if i == 0 { accum } else { Accum::Add };
            matmul(c.as_mut(), accum, a, b, alpha, Par::Seq);
        }
        return;
    }
    let (first, second) = (parts / 2, parts - parts / 2);
    if c.nrows() >= c.ncols() {
        let mid = c.nrows() * first / parts;
        let (top, bottom) = c.split_at_row_mut(mid);
        join(
            || sum_in_parts(top, accum, products, at, alpha, first),
            || sum_in_parts(bottom, accum, products, (at.0 + mid, at.1), alpha, second),
        );
    } else {
        let mid = c.ncols() * first / parts;
        let (left, right) = c.split_at_col_mut(mid);
        join(
            || sum_in_parts(left, accum, products, at, alpha, first),
            || sum_in_parts(right, accum, products, (at.0, at.1 + mid), alpha, second),
        );
    }
}

/// `alpha Σ_i op(a_i) op(b_i)` into row-major `rows x cols` outputs.
struct ProductSum<'p, 'a> {
    shape: (usize, usize),
    operands: &'p ProductOperands<'p, 'a>,
    alpha: f32,
}

/// [`sum_in_parts`] split by products instead of by blocks of `c`, for small outputs summed
/// over many products (a convolution's weight gradient, 64x288 over 32 samples of 256
/// positions), whose blocks would be too thin for the GEMM kernels: the first run of
/// `products` sums into `c` (`accum`), each other run into its own output-sized part of
/// `scratch` (`parts - 1` of them), added to `c` after. Needs at least `parts` products.
fn sum_products_in_parts(
    sum: &ProductSum<'_, '_>,
    c: &mut [f32],
    accum: Accum,
    products: Range<usize>,
    parts: usize,
    scratch: &mut [f32],
) {
    let (rows, cols) = sum.shape;
    if parts < 2 {
        let mut c = MatMut::from_row_major_slice_mut(c, rows, cols);
        for i in products.clone() {
            let (a, b) = (sum.operands)(i);
            let accum = if i == products.start {
                accum
            } else {
                Accum::Add
            };
            matmul(c.as_mut(), accum, a, b, sum.alpha, Par::Seq);
        }
        return;
    }
    let (first, second) = (parts / 2, parts - parts / 2);
    // Each run keeps at least as many products as parts: `len * first / parts >= first`.
    let mid = products.start + products.len() * first / parts;
    let (second_sum, scratch) = scratch.split_at_mut(rows * cols);
    let (first_scratch, second_scratch) = scratch.split_at_mut((first - 1) * rows * cols);
    join(
        || sum_products_in_parts(sum, c, accum, products.start..mid, first, first_scratch),
        || {
            let replace = Accum::Replace;
            let run = mid..products.end;
            sum_products_in_parts(sum, second_sum, replace, run, second, second_scratch);
        },
    );
    for (total, part) in c.iter_mut().zip(second_sum.iter()) {
        *total += part;
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

/// Product `i`'s `a` and `b` matrices in a batch (checked to lie inside `a` and `b`).
fn product_operands<'a>(
    gemm: &Gemm,
    batch: &GemmBatch,
    i: usize,
    a: &'a [f32],
    b: &'a [f32],
) -> (&'a [f32], &'a [f32]) {
    let at = |strided: super::Strided| strided.offset + i * strided.step;
    let (m, n, k) = (gemm.m, gemm.n, gemm.k);
    (&a[at(batch.a)..][..m * k], &b[at(batch.b)..][..k * n])
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
        let (m, n) = (gemm.m, gemm.n);
        let operands = |i| product_operands(gemm, batch, i, a, b);
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
            let per_task = batch.count.div_ceil(2 * crate::backend::num_threads());
            crate::backend::warm_pool::keep_warm();
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

    fn gemm_summed(
        &self,
        gemm: &Gemm,
        batch: &GemmBatch,
        a: &Vec<f32>,
        b: &Vec<f32>,
        c: &mut Vec<f32>,
    ) -> Result<()> {
        batch.check_summed(gemm, a.len(), b.len(), c.len())?;
        let product = |i| {
            let (a, b) = product_operands(gemm, batch, i, a, b);
            operands(gemm, a, b)
        };
        let (m, n) = (gemm.m, gemm.n);
        let c = &mut c[batch.c.offset..][..m * n];
        let parts = parts_for(gemm.flops() * batch.count);
        if parts > 1 && batch.count >= parts && m * n <= SPLIT_PRODUCTS_MAX_OUTPUT {
            let (_, accum) = output(gemm, c);
            let mut scratch = self.empty((parts - 1) * m * n)?;
            let sum = ProductSum {
                shape: (m, n),
                operands: &product,
                alpha: gemm.alpha,
            };
            sum_products_in_parts(&sum, c, accum, 0..batch.count, parts, &mut scratch);
            self.recycle(&mut scratch);
            return Ok(());
        }
        let (c, accum) = output(gemm, c);
        sum_in_parts(c, accum, (batch.count, &product), (0, 0), gemm.alpha, parts);
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
