//! CPU kernels of the indexing ops, in memory order.

use super::{Axis, Block, IndexKernel};
use crate::backend::Cpu;
use crate::error::Result;

/// An index buffer's entry as a position (a whole number below 2^24, checked by the caller).
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
fn position(index: f32) -> usize {
    index as usize
}

impl IndexKernel for Cpu {
    fn extremum(
        &self,
        axis: &Axis,
        max: bool,
        x: &Vec<f32>,
        values: &mut Vec<f32>,
        indices: &mut Vec<f32>,
    ) -> Result<()> {
        let Axis { outer, len, inner } = *axis;
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| x[(o * len + j) * inner + i];
                let (mut best, mut best_j) = (at(0), 0);
                for j in 1..len {
                    let v = at(j);
                    let better = if max { v > best } else { v < best };
                    // NaN is the extreme; the first of equal extremes stays.
                    if !best.is_nan() && (better || v.is_nan()) {
                        (best, best_j) = (v, j);
                    }
                }
                values[o * inner + i] = best;
                indices[o * inner + i] = best_j as f32;
            }
        }
        Ok(())
    }

    fn copy_block(&self, b: &Block, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        let run = b.count * b.inner;
        for o in 0..b.outer {
            let from = (o * b.src_len + b.src_offset) * b.inner;
            let to = (o * b.dst_len + b.dst_offset) * b.inner;
            dst[to..to + run].copy_from_slice(&src[from..from + run]);
        }
        Ok(())
    }

    fn gather(
        &self,
        axis: &Axis,
        x: &Vec<f32>,
        indices: &Vec<f32>,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let Axis { outer, len, inner } = *axis;
        for o in 0..outer {
            for (j, &index) in indices[..count].iter().enumerate() {
                let from = (o * len + position(index)) * inner;
                let to = (o * count + j) * inner;
                out[to..to + inner].copy_from_slice(&x[from..from + inner]);
            }
        }
        Ok(())
    }

    fn fill_above_diagonal(
        &self,
        matrices: usize,
        size: usize,
        value: f32,
        x: &mut Vec<f32>,
    ) -> Result<()> {
        // Chunk `r` is row `r % size` of its matrix.
        for (r, row) in x
            .chunks_exact_mut(size.max(1))
            .enumerate()
            .take(matrices * size)
        {
            row[r % size + 1..].fill(value);
        }
        Ok(())
    }

    fn scatter_add(
        &self,
        axis: &Axis,
        src: &Vec<f32>,
        indices: &Vec<f32>,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let Axis { outer, len, inner } = *axis;
        for o in 0..outer {
            for (j, &index) in indices[..count].iter().enumerate() {
                let to = (o * len + position(index)) * inner;
                let from = (o * count + j) * inner;
                for (out, &v) in out[to..to + inner].iter_mut().zip(&src[from..from + inner]) {
                    *out += v;
                }
            }
        }
        Ok(())
    }
}
