//! CPU kernel of the axis sum.

use super::ReduceKernel;
use crate::backend::Cpu;
use crate::backend::cpu::{Vectorizable, vectorized};
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

impl ReduceKernel for Cpu {
    fn sum_axis(
        &self,
        x: &Vec<f32>,
        outer: usize,
        len: usize,
        inner: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        vectorized(SumAxis {
            x,
            outer,
            len,
            inner,
            out,
        });
        Ok(())
    }
}
