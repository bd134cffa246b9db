//! CPU kernel of the axis sum.

use super::ReduceKernel;
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized, vectorized_in_parts};
use crate::error::Result;

/// Sums `x`, viewed as `[outer, len, inner]`, over the middle axis into `out` (`[outer, inner]`).
///
/// Contiguous sums (`inner == 1`, which includes summing everything) accumulate in `f64`;
/// strided ones add whole rows, which vectorises and is exact enough for batch-sized `len`.
#[inline(always)]
fn sum_axis(x: &[f32], outer: usize, len: usize, inner: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), outer * len * inner);
    if len == 0 || out.is_empty() {
        out.fill(0.0);
        return;
    }
    if inner == 1 {
        for (o, row) in out.iter_mut().zip(x.chunks_exact(len)) {
            *o = row.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
        }
        return;
    }
    // `out` may hold anything (a reused gradient buffer): start from zero.
    out.fill(0.0);
    for (o, block) in out.chunks_exact_mut(inner).zip(x.chunks_exact(len * inner)) {
        for row in block.chunks_exact(inner) {
            for (acc, &v) in o.iter_mut().zip(row) {
                *acc += v;
            }
        }
    }
}

/// [`sum_axis`] under the CPU's widest vectors (in one part: the sums keep their order).
struct SumAxis<'a> {
    x: &'a [f32],
    outer: usize,
    len: usize,
    inner: usize,
    out: &'a mut [f32],
}

impl Vectorizable for SumAxis<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let SumAxis {
            x,
            outer,
            len,
            inner,
            out,
        } = self;
        sum_axis(x, outer, len, inner, out);
    }
}

/// The sums of the columns `out` covers, over every row of `x` (rows of `width`; `out`'s
/// columns are the first of `x`'s rows): each column's rows added in order, as [`sum_axis`]
/// does, so the parts give the same sums.
struct ColumnSums<'a> {
    x: &'a [f32],
    width: usize,
    out: &'a mut [f32],
}

impl Vectorizable for ColumnSums<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ColumnSums { x, width, out } = self;
        // Blocks of columns summed in registers down all the rows, rather than `out` read and
        // written back per row.
        for (block, out) in out.chunks_mut(COLUMN_BLOCK).enumerate() {
            let start = block * COLUMN_BLOCK;
            if let Ok(out) = <&mut [f32; COLUMN_BLOCK]>::try_from(&mut *out) {
                let mut sums = [0.0f32; COLUMN_BLOCK];
                for row in x[start..].chunks(width) {
                    for (sum, &v) in sums.iter_mut().zip(&row[..COLUMN_BLOCK]) {
                        *sum += v;
                    }
                }
                *out = sums;
            } else {
                out.fill(0.0);
                for row in x[start..].chunks(width) {
                    for (sum, &v) in out.iter_mut().zip(row) {
                        *sum += v;
                    }
                }
            }
        }
    }
}

/// Columns [`ColumnSums`] sums at once: four AVX-512 registers.
const COLUMN_BLOCK: usize = 64;

impl Divisible for ColumnSums<'_> {
    fn units(&self) -> usize {
        self.out.len()
    }
    fn unit_len(&self) -> usize {
        self.x.len().div_ceil(self.width)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let ColumnSums { x, width, out } = self;
        let (left, right) = out.split_at_mut(mid);
        (
            ColumnSums {
                x,
                width,
                out: left,
            },
            ColumnSums {
                x: &x[mid..],
                width,
                out: right,
            },
        )
    }
}

impl ReduceKernel for Cpu {
    fn sum_axis(
        &self,
        x: &Vec<f32>,
        outer: usize,
        len: usize,
        inner: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if outer == 1 && inner > 1 && len > 0 {
            // Rows summed into one row (a bias gradient): in parts by columns.
            vectorized_in_parts(ColumnSums {
                x,
                width: inner,
                out,
            });
        } else {
            vectorized(SumAxis {
                x,
                outer,
                len,
                inner,
                out,
            });
        }
        Ok(())
    }
}
