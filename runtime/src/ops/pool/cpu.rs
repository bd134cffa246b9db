//! CPU kernels of pooling: one pass over the outputs forward, and one over the inputs
//! backward, each input gathering its windows' gradients in output order (the order in which
//! PyTorch's CPU kernels add them).

use super::{Pool2d, PoolGeometry, PoolKernel, PoolKind};
use crate::backend::Cpu;
use crate::error::Result;

/// The output positions along one spatial dim whose windows cover input position `at`.
fn covering(pool: &Pool2d, at: usize, outputs: usize) -> std::ops::Range<usize> {
    let shifted = at + pool.padding;
    // Windows `o` with `o * stride <= shifted < o * stride + kernel`.
    let first = (shifted + 1)
        .saturating_sub(pool.kernel)
        .div_ceil(pool.stride);
    let last = (shifted / pool.stride + 1).min(outputs);
    first..last.max(first)
}

/// The input positions along one spatial dim that output position `o`'s window covers.
fn window(pool: &Pool2d, o: usize, size: usize) -> std::ops::Range<usize> {
    let start = (o * pool.stride).saturating_sub(pool.padding);
    let end = (o * pool.stride + pool.kernel)
        .saturating_sub(pool.padding)
        .min(size);
    start..end
}

impl PoolKernel for Cpu {
    fn pool2d(
        &self,
        pool: &Pool2d,
        g: &PoolGeometry,
        x: &Vec<f32>,
        out: &mut Vec<f32>,
        mut indices: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        let (plane_in, plane_out) = (g.height * g.width, g.out_height * g.out_width);
        let area = (pool.kernel * pool.kernel) as f32;
        for p in 0..g.planes {
            let input = &x[p * plane_in..(p + 1) * plane_in];
            for oy in 0..g.out_height {
                for ox in 0..g.out_width {
                    let o = p * plane_out + oy * g.out_width + ox;
                    let (rows, cols) = (window(pool, oy, g.height), window(pool, ox, g.width));
                    match pool.kind {
                        PoolKind::Max => {
                            let (mut best, mut at) = (f32::NEG_INFINITY, 0);
                            for y in rows {
                                for x in cols.clone() {
                                    let v = input[y * g.width + x];
                                    // The first maximum wins; NaN wins and stays.
                                    if v > best || (v.is_nan() && !best.is_nan()) {
                                        (best, at) = (v, y * g.width + x);
                                    }
                                }
                            }
                            out[o] = best;
                            if let Some(indices) = indices.as_deref_mut() {
                                indices[o] = at as f32;
                            }
                        }
                        PoolKind::Avg => {
                            let mut sum = 0.0;
                            for y in rows {
                                for x in cols.clone() {
                                    sum += input[y * g.width + x];
                                }
                            }
                            out[o] = sum / area;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn pool2d_backward(
        &self,
        pool: &Pool2d,
        g: &PoolGeometry,
        grad_out: &Vec<f32>,
        indices: Option<&Vec<f32>>,
        grad_in: &mut Vec<f32>,
    ) -> Result<()> {
        let (plane_in, plane_out) = (g.height * g.width, g.out_height * g.out_width);
        let area = (pool.kernel * pool.kernel) as f32;
        for p in 0..g.planes {
            for y in 0..g.height {
                for x in 0..g.width {
                    let here = y * g.width + x;
                    let mut sum = 0.0;
                    for oy in covering(pool, y, g.out_height) {
                        for ox in covering(pool, x, g.out_width) {
                            let o = p * plane_out + oy * g.out_width + ox;
                            match indices {
                                // Indices are exact in `f32` (planes are under 2^24 here).
                                Some(indices) if indices[o] == here as f32 => sum += grad_out[o],
                                Some(_) => {}
                                None => sum += grad_out[o] / area,
                            }
                        }
                    }
                    grad_in[p * plane_in + here] = sum;
                }
            }
        }
        Ok(())
    }
}
