//! CPU kernels of pooling: one pass over the outputs forward and one backward, each output's
//! gradient scattered to its window (or its argmax) in output order, so every input adds its
//! windows' gradients in the order PyTorch's CPU kernels add them (and `pool.cu`, gathering).

use super::{Pool2d, PoolGeometry, PoolKernel, PoolKind};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;

/// The input positions along one spatial dim that output position `o`'s window covers.
fn window(pool: &Pool2d, o: usize, size: usize) -> std::ops::Range<usize> {
    let start = (o * pool.stride).saturating_sub(pool.padding);
    let end = (o * pool.stride + pool.kernel)
        .saturating_sub(pool.padding)
        .min(size);
    start..end
}

/// `MaxPool2d<2>`, the common case, without branches (data-dependent branches mispredict on
/// real data) and in a form the compiler vectorises: each row's pair first, then the lower
/// pair against the upper one. The first maximum in the general kernel's order (upper left,
/// upper right, lower left, lower right) wins, as there. Positions are counted in `u32`
/// (planes larger than that take the general kernel).
#[inline(always)]
fn max_pool_2x2(g: &PoolGeometry, x: &[f32], out: &mut [f32], indices: Option<&mut [f32]>) {
    let (width, out_width) = (g.width, g.out_width);
    let rows_out = out.chunks_exact_mut(out_width);
    let mut rows_indices = indices.map(|indices| indices.chunks_exact_mut(out_width));
    // The larger of a pair, and whether it is the right one.
    let pick = |&[left, right]: &[f32; 2]| {
        let wins = beats(right, left);
        (if wins { right } else { left }, wins)
    };
    for (row, out) in rows_out.enumerate().take(g.planes * g.out_height) {
        let (plane, oy) = (row / g.out_height, row % g.out_height);
        let top = (plane * g.height + 2 * oy) * width;
        let (upper, lower) = (&x[top..][..width], &x[top + width..][..width]);
        let pairs = upper.as_chunks().0.iter().zip(lower.as_chunks().0);
        let Some(indices) = rows_indices.as_mut().and_then(Iterator::next) else {
            for ((up, low), best) in pairs.zip(out.iter_mut()) {
                let ((up, _), (low, _)) = (pick(up), pick(low));
                *best = if beats(low, up) { low } else { up };
            }
            continue;
        };
        #[allow(clippy::cast_possible_truncation, reason = "the plane fits in u32")]
        let (left, width) = ((2 * oy * width) as u32, width as u32);
        let outputs = out.iter_mut().zip(indices.iter_mut());
        for (ox, ((up, low), (best, at))) in (0u32..).zip(pairs.zip(outputs)) {
            let ((up, up_right), (low, low_right)) = (pick(up), pick(low));
            let down = beats(low, up);
            let right = if down { low_right } else { up_right };
            *best = if down { low } else { up };
            #[allow(clippy::cast_precision_loss, reason = "indices are f32, as on CUDA")]
            let position = (left + 2 * ox + if down { width } else { 0 } + u32::from(right)) as f32;
            *at = position;
        }
    }
}

/// Any pooling, plane by plane: each output the maximum (with its position in the plane) or
/// the mean of its window; `MaxPool2d<2>` by [`max_pool_2x2`].
struct Pooling<'a> {
    pool: &'a Pool2d,
    g: &'a PoolGeometry,
    x: &'a [f32],
    out: &'a mut [f32],
    indices: Option<&'a mut [f32]>,
}

/// Pooling's inputs that run in one part: each output compares (or adds) a window and, at
/// max pooling, writes its position; several times a simple map's work, so the digits CNN's
/// `[64, 16, 8, 8]` activations go in parts (its step: 0.53 ms -> 0.49-0.51 ms).
const POOL_PART_MIN_ELEMENTS: usize = 1 << 14;

impl Divisible for Pooling<'_> {
    fn part_min_elements(&self) -> usize {
        POOL_PART_MIN_ELEMENTS
    }
    fn units(&self) -> usize {
        self.out.len() / self.g.plane_out().max(1)
    }
    fn unit_len(&self) -> usize {
        self.g.plane_in()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Pooling {
            pool,
            g,
            x,
            out,
            indices,
        } = self;
        let (x_left, x_right) = x.split_at(mid * g.plane_in());
        let (out_left, out_right) = out.split_at_mut(mid * g.plane_out());
        let (indices_left, indices_right) = indices
            .map(|indices| indices.split_at_mut(mid * g.plane_out()))
            .unzip();
        let part = |x, out, indices| Pooling {
            pool,
            g,
            x,
            out,
            indices,
        };
        (
            part(x_left, out_left, indices_left),
            part(x_right, out_right, indices_right),
        )
    }
}

impl Vectorizable for Pooling<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Pooling {
            pool,
            g,
            x,
            out,
            mut indices,
        } = self;
        let two_by_two = pool.kernel == 2 && pool.stride == 2 && pool.padding == 0;
        if pool.kind == PoolKind::Max && two_by_two && u32::try_from(g.plane_in()).is_ok() {
            return max_pool_2x2(g, x, out, indices);
        }
        let (plane_in, plane_out) = (g.plane_in(), g.plane_out());
        let area = (pool.kernel * pool.kernel) as f32;
        let planes = out.len() / plane_out.max(1);
        for p in 0..planes {
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
                                    if beats(v, best) {
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
    }
}

/// The gradient of a pooling, plane by plane: each output's gradient scattered to its argmax
/// (max) or spread over its window (average), in output order.
struct PoolBackward<'a> {
    pool: &'a Pool2d,
    g: &'a PoolGeometry,
    grad_out: &'a [f32],
    indices: Option<&'a [f32]>,
    grad_in: &'a mut [f32],
}

impl Divisible for PoolBackward<'_> {
    fn part_min_elements(&self) -> usize {
        POOL_PART_MIN_ELEMENTS
    }
    fn units(&self) -> usize {
        self.grad_in.len() / self.g.plane_in().max(1)
    }
    fn unit_len(&self) -> usize {
        self.g.plane_in()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let PoolBackward {
            pool,
            g,
            grad_out,
            indices,
            grad_in,
        } = self;
        let out_at = mid * g.plane_out();
        let (grad_out_left, grad_out_right) = grad_out.split_at(out_at);
        let (indices_left, indices_right) = indices.map(|indices| indices.split_at(out_at)).unzip();
        let (grad_in_left, grad_in_right) = grad_in.split_at_mut(mid * g.plane_in());
        let part = |grad_out, indices, grad_in| PoolBackward {
            pool,
            g,
            grad_out,
            indices,
            grad_in,
        };
        (
            part(grad_out_left, indices_left, grad_in_left),
            part(grad_out_right, indices_right, grad_in_right),
        )
    }
}

impl Vectorizable for PoolBackward<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let PoolBackward {
            pool,
            g,
            grad_out,
            indices,
            grad_in,
        } = self;
        let (plane_in, plane_out) = (g.plane_in(), g.plane_out());
        let area = (pool.kernel * pool.kernel) as f32;
        grad_in.fill(0.0);
        let planes = grad_in
            .chunks_exact_mut(plane_in.max(1))
            .zip(grad_out.chunks_exact(plane_out.max(1)));
        for (p, (plane, grads)) in planes.enumerate() {
            match indices {
                Some(indices) => {
                    let argmax = &indices[p * plane_out..(p + 1) * plane_out];
                    for (&grad, &at) in grads.iter().zip(argmax) {
                        // The forward pass wrote whole numbers in the plane, exact in `f32`
                        // (planes are under 2^24 here). Other values convert as on CUDA: a
                        // fraction truncates, NaN and negatives give 0, and positions past the
                        // plane land nowhere.
                        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                        if let Some(slot) = plane.get_mut(at as usize) {
                            *slot += grad;
                        }
                    }
                }
                None => {
                    for oy in 0..g.out_height {
                        for ox in 0..g.out_width {
                            let grad = grads[oy * g.out_width + ox] / area;
                            let cols = window(pool, ox, g.width);
                            for y in window(pool, oy, g.height) {
                                for slot in &mut plane[y * g.width..][cols.clone()] {
                                    *slot += grad;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `v` replaces `best` as a window's maximum: the first maximum wins; NaN wins and
/// stays.
#[inline(always)]
fn beats(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

impl PoolKernel for Cpu {
    fn pool2d(
        &self,
        pool: &Pool2d,
        g: &PoolGeometry,
        x: &Vec<f32>,
        out: &mut Vec<f32>,
        indices: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        vectorized_in_parts(Pooling {
            pool,
            g,
            x,
            out,
            indices: indices.map(Vec::as_mut_slice),
        });
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
        vectorized_in_parts(PoolBackward {
            pool,
            g,
            grad_out,
            indices: indices.map(Vec::as_slice),
            grad_in,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large enough to run in parts on two threads: the parts give what one part gives, bit
    /// for bit, forward (values and indices, both kernels) and backward (max and average).
    #[test]
    fn pooling_in_parts_matches_one_part() {
        let g = PoolGeometry {
            planes: 64,
            height: 64,
            width: 64,
            out_height: 32,
            out_width: 32,
        };
        let x: Vec<f32> = (0..g.planes * g.plane_in())
            .map(|v| ((v * 7919) % 1013) as f32 - 500.0)
            .collect();
        let outputs = g.planes * g.plane_out();
        let (mut out, mut at) = (vec![0.0; outputs], vec![0.0; outputs]);
        let max = Pool2d::max(2, 2, 0);
        Cpu.pool2d(&max, &g, &x, &mut out, Some(&mut at)).unwrap();
        let (mut one_out, mut one_at) = (vec![0.0; outputs], vec![0.0; outputs]);
        Pooling {
            pool: &max,
            g: &g,
            x: &x,
            out: &mut one_out,
            indices: Some(&mut one_at),
        }
        .run();
        assert!(out == one_out && at == one_at, "max pool forward");
        // The general kernel, with overlapping windows and padding, and average pooling.
        let wide = PoolGeometry {
            out_height: 32,
            out_width: 32,
            ..g
        };
        for pool in [Pool2d::max(3, 2, 1), Pool2d::avg(3, 2, 1)] {
            let (mut out, mut at) = (vec![0.0; outputs], vec![0.0; outputs]);
            Cpu.pool2d(&pool, &wide, &x, &mut out, Some(&mut at))
                .unwrap();
            let (mut one_out, mut one_at) = (vec![0.0; outputs], vec![0.0; outputs]);
            Pooling {
                pool: &pool,
                g: &wide,
                x: &x,
                out: &mut one_out,
                indices: Some(&mut one_at),
            }
            .run();
            assert!(out == one_out && at == one_at, "{:?} forward", pool.kind);
        }
        let grad: Vec<f32> = (0..outputs).map(|v| (v % 13) as f32 - 6.0).collect();
        for (pool, indices) in [(max, Some(&at)), (Pool2d::avg(2, 2, 0), None)] {
            let mut parts = vec![f32::NAN; x.len()];
            Cpu.pool2d_backward(&pool, &g, &grad, indices, &mut parts)
                .unwrap();
            let mut one = vec![f32::NAN; x.len()];
            PoolBackward {
                pool: &pool,
                g: &g,
                grad_out: &grad,
                indices: indices.map(Vec::as_slice),
                grad_in: &mut one,
            }
            .run();
            assert!(parts == one, "{:?} backward", pool.kind);
        }
    }
}
