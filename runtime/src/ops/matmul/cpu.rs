//! CPU GEMM on faer, and the transpose kernel that materialises a view (`transpose`).

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;
use std::ops::Range;

pub(crate) mod transpose;

use super::{Gemm, GemmBatch, MatmulKernel, Strided};
use crate::backend::cpu::join;
use crate::backend::{Cpu, Memory};
use crate::error::Result;

/// Products below this many flops run on one thread: on small shapes (the tutorial's are 12.8
/// MFLOP) a fork-join costs more than it saves on two cores; the char GPT's 33.5 MFLOP
/// projections gain from two, and so do its head's 19.9 MFLOP products (180-190 us on one
/// thread, 98-111 on two).
const PARALLEL_MIN_FLOPS: usize = 16_000_000;

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

/// A stored row-major matrix: its elements from the first on, and the distance between its
/// rows.
type Stored<'a> = (&'a [f32], usize);

/// `op(a)` and `op(b)` of `gemm`'s shape as faer views of row-major matrices.
fn operands<'a>(gemm: &Gemm, a: Stored<'a>, b: Stored<'a>) -> (MatRef<'a, f32>, MatRef<'a, f32>) {
    let [(a_rows, a_cols), (b_rows, b_cols), _] = gemm.stored();
    let view = |(values, rows_apart): Stored<'a>, rows, cols, transposed: bool| {
        let view = MatRef::from_row_major_slice_with_stride(values, rows, cols, rows_apart);
        if transposed { view.transpose() } else { view }
    };
    (
        view(a, a_rows, a_cols, gemm.trans_a),
        view(b, b_rows, b_cols, gemm.trans_b),
    )
}

/// `c` (rows `rows_apart` apart) as a faer view, scaled by `beta` when that is neither 0 nor 1,
/// and how the products then go into it.
fn output<'a>(gemm: &Gemm, c: &'a mut [f32], rows_apart: usize) -> (MatMut<'a, f32>, Accum) {
    // The transpose of the column-major view: faer 0.24's `from_row_major_slice_with_stride_mut`
    // lays the matrix out column-major (rows 1 apart), writing outside the slice it checked.
    let mut c = MatMut::from_column_major_slice_with_stride_mut(c, gemm.n, gemm.m, rows_apart)
        .transpose_mut();
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

/// `c = alpha * op(a) * op(b) + beta * c` with faer, transposes read through strides, the rows
/// of `c` `c_rows_apart` apart.
fn gemm(gemm: &Gemm, a: Stored<'_>, b: Stored<'_>, c: &mut [f32], c_rows_apart: usize) {
    let (a, b) = operands(gemm, a, b);
    let (c, accum) = output(gemm, c, c_rows_apart);
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
        let c = MatMut::from_row_major_slice_mut(c, rows, cols);
        let run = |i| (sum.operands)(products.start + i);
        sum_in_parts(c, accum, (products.len(), &run), (0, 0), sum.alpha, 1);
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

/// Operand `strided`'s matrix `i` in a batch of groups of `group`, stored `rows x cols` in
/// `values` (checked to lie inside).
fn matrix(
    values: &[f32],
    strided: Strided,
    i: usize,
    group: usize,
    (rows, cols): (usize, usize),
) -> Stored<'_> {
    let rows_apart = strided.rows_apart(cols);
    let len = super::extent(rows, cols, rows_apart).unwrap_or(0);
    (&values[strided.start(i, group)..][..len], rows_apart)
}

/// Product `i`'s `a` and `b` matrices in a batch (checked to lie inside `a` and `b`).
fn product_operands<'a>(
    gemm: &Gemm,
    batch: &GemmBatch,
    i: usize,
    a: &'a [f32],
    b: &'a [f32],
) -> (Stored<'a>, Stored<'a>) {
    let [a_shape, b_shape, _] = gemm.stored();
    (
        matrix(a, batch.a, i, batch.group, a_shape),
        matrix(b, batch.b, i, batch.group, b_shape),
    )
}

impl MatmulKernel for Cpu {
    fn gemm(&self, gemm: &Gemm, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>) -> Result<()> {
        let [(_, a_cols), (_, b_cols), _] = gemm.stored();
        self::gemm(gemm, (a, a_cols), (b, b_cols), c, gemm.n);
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
        let rows_apart = batch.c.rows_apart(n);
        let Some(size) = super::extent(m, n, rows_apart).filter(|&size| size > 0) else {
            return Ok(()); // no output elements
        };
        let operands = |i| product_operands(gemm, batch, i, a, b);
        // Product `i` into `c`, which starts where its output does.
        let product = |i, c: &mut [f32]| {
            let (a, b) = operands(i);
            self::gemm(gemm, a, b, &mut c[..size], rows_apart);
        };
        // Many small products (attention's per batch and head, a convolution's per sample)
        // share the threads: two runs of consecutive products per thread (tasks of one tiny
        // product each cost more than they run), or, in a batch of groups, whole groups.
        let (per_group, group, step) = (batch.per_group(), batch.group, batch.c.step);
        let parallel = batch.count > 1
            && gemm.flops() < PARALLEL_MIN_FLOPS
            && gemm.flops() * batch.count >= BATCH_PARALLEL_MIN_FLOPS;
        let _kernel = parallel.then(crate::backend::warm_pool::Kernel::start);
        if parallel && crate::backend::warm_pool::hand_off() {
            if per_group < batch.count {
                // Groups lie `group_step` apart, each within its step (`check`).
                let group_step = batch.c.group_step;
                c[batch.c.offset..]
                    .par_chunks_mut(group_step)
                    .take(batch.count / group)
                    .enumerate()
                    .for_each(|(index, c)| {
                        for i in index * group..(index + 1) * group {
                            product(i, &mut c[(i % group) * step..]);
                        }
                        crate::backend::warm_pool::beat();
                    });
                return Ok(());
            }
            if step >= size {
                let per_task = batch.count.div_ceil(2 * crate::backend::num_threads());
                c[batch.c.offset..]
                    .par_chunks_mut(step * per_task)
                    .take(batch.count.div_ceil(per_task))
                    .enumerate()
                    .for_each(|(task, c)| {
                        let first = task * per_task;
                        let last = (first + per_task).min(batch.count);
                        for (i, c) in (first..last).zip(c.chunks_mut(step)) {
                            product(i, c);
                        }
                        crate::backend::warm_pool::beat();
                    });
                return Ok(());
            }
        }
        for i in 0..batch.count {
            product(i, &mut c[batch.c.start(i, group)..]);
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
        let rows_apart = batch.c.rows_apart(n);
        let c = &mut c[batch.c.offset..][..super::extent(m, n, rows_apart).unwrap_or(0)];
        let parts = parts_for(gemm.flops() * batch.count);
        let packed = rows_apart == n;
        if packed && parts > 1 && batch.count >= parts && m * n <= SPLIT_PRODUCTS_MAX_OUTPUT {
            let (_, accum) = output(gemm, c, n);
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
        let (c, accum) = output(gemm, c, rows_apart);
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
        transpose::transpose(src, |i| i * cols, dst, |j| j * rows, (rows, cols));
        Ok(())
    }
}
