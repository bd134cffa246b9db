//! The CPU permutation: the output in order, the source read through an odometer of indices.
//! Runs of the innermost output dim split into parts on the thread pool.

use super::{MAX_RANK, Permutation, PermuteKernel};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;

/// The output runs (of the innermost output dim) from run `first` on, in `dst`.
struct Runs<'a> {
    p: &'a Permutation,
    src: &'a [f32],
    dst: &'a mut [f32],
    first: usize,
}

impl Runs<'_> {
    /// Elements per run.
    fn len(&self) -> usize {
        self.p.dims[self.p.rank - 1]
    }
}

impl Divisible for Runs<'_> {
    fn units(&self) -> usize {
        self.dst.len().checked_div(self.len()).unwrap_or(0)
    }
    fn unit_len(&self) -> usize {
        self.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (left, right) = self.dst.split_at_mut(mid * self.len());
        let part = |dst, first| Runs { dst, first, ..self };
        (part(left, self.first), part(right, self.first + mid))
    }
}

impl Vectorizable for Runs<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Runs { p, src, dst, first } = self;
        let rank = p.rank;
        let (inner, inner_stride) = (p.dims[rank - 1], p.strides[rank - 1]);
        // The outer index of run `first`, last dim fastest, and where it starts in `src`.
        let mut index = [0usize; MAX_RANK];
        let mut rest = first;
        for dim in (0..rank - 1).rev() {
            index[dim] = rest % p.dims[dim];
            rest /= p.dims[dim];
        }
        let mut offset: usize = (0..rank - 1).map(|dim| index[dim] * p.strides[dim]).sum();
        for run in dst.chunks_exact_mut(inner) {
            if inner_stride == 1 {
                run.copy_from_slice(&src[offset..offset + inner]);
            } else {
                for (j, out) in run.iter_mut().enumerate() {
                    *out = src[offset + j * inner_stride];
                }
            }
            // Advance the outer dims, last fastest.
            for dim in (0..rank - 1).rev() {
                index[dim] += 1;
                offset += p.strides[dim];
                if index[dim] < p.dims[dim] {
                    break;
                }
                offset -= index[dim] * p.strides[dim];
                index[dim] = 0;
            }
        }
    }
}

impl PermuteKernel for Cpu {
    fn permute(&self, p: &Permutation, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        if p.rank == 0 || p.dims[p.rank - 1] == 0 {
            dst.copy_from_slice(src);
            return Ok(());
        }
        vectorized_in_parts(Runs {
            p,
            src,
            dst,
            first: 0,
        });
        Ok(())
    }
}
