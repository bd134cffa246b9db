//! The CPU permutation: the output in order, the source read through an odometer of indices.

use super::{MAX_RANK, Permutation, PermuteKernel};
use crate::backend::Cpu;
use crate::error::Result;

impl PermuteKernel for Cpu {
    fn permute(&self, p: &Permutation, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        let rank = p.rank;
        if rank == 0 {
            dst.copy_from_slice(src);
            return Ok(());
        }
        // The innermost output dim is copied as a strided run.
        let (inner, inner_stride) = (p.dims[rank - 1], p.strides[rank - 1]);
        let mut index = [0usize; MAX_RANK];
        let mut offset = 0;
        for run in dst.chunks_exact_mut(inner.max(1)) {
            for (j, out) in run.iter_mut().enumerate() {
                *out = src[offset + j * inner_stride];
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
        Ok(())
    }
}
