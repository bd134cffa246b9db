//! The weight gradient: `dW[o, c] = G^T [Σ_tiles (A dY_o A^T) ⊙ (B^T d_c B)] G`, the sums
//! over the tiles 16 matrix products of the transformed output gradient and input.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::{
    Chunk, ENTRIES, Job, Plan, Share, channels_last, entry_stride, four_mut, in_parts,
    transform_samples,
};
use crate::backend::cpu::Vectorizable;
use crate::backend::{Cpu, Memory};
use crate::error::Result;
use crate::ops::conv::ConvGeometry;

/// One thread's buffers: its sums `[16, out, C]` (first, so that the caller finds them), and
/// for a chunk the padded input `[slots, rows, cols, C]`, the transformed input
/// `[16, tiles, C]`, the output gradient on the tiles' grid `[slots, 2 rows, 2 tile_cols,
/// out]`, its transform `[16, tiles, out]`, and a tile row's partial transform.
struct Buffers<'a> {
    sums: &'a mut [f32],
    input: &'a mut [f32],
    transformed: &'a mut [f32],
    gradient: &'a mut [f32],
    transformed_gradient: &'a mut [f32],
    partial: &'a mut [f32],
}

impl<'a> Buffers<'a> {
    /// The lengths of the buffers, in order.
    fn lens(plan: &Plan<'_>) -> [usize; 6] {
        let (channels, out) = (plan.g.channels, plan.out_channels);
        [
            ENTRIES * entry_stride(out * channels),
            plan.padded_input_len(),
            plan.transformed_len(channels, plan.input_rows_len()),
            plan.chunk_tiles() * 4 * out,
            plan.transformed_len(out, plan.output_rows_len()),
            plan.partial_len(),
        ]
    }

    fn scratch_len(plan: &Plan<'_>) -> usize {
        Self::lens(plan).iter().sum()
    }

    fn new(plan: &Plan<'_>, scratch: &'a mut [f32]) -> Self {
        let [sums, input, transformed, gradient, transformed_gradient, _] = Self::lens(plan);
        let (sums, rest) = scratch.split_at_mut(sums);
        let (input, rest) = rest.split_at_mut(input);
        let (transformed, rest) = rest.split_at_mut(transformed);
        let (gradient, rest) = rest.split_at_mut(gradient);
        let (transformed_gradient, partial) = rest.split_at_mut(transformed_gradient);
        Self {
            sums,
            input,
            transformed,
            gradient,
            transformed_gradient,
            partial,
        }
    }
}

/// The weight-gradient pass, which reads nothing besides the samples.
#[derive(Clone, Copy)]
struct WeightGradient;

/// One thread's share: the samples of `x` and `dy` (`share.other`) in hand, chunk by chunk,
/// summed into the sums at the start of its scratch.
impl Vectorizable for Job<'_, WeightGradient, &[f32]> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Job { plan, share, .. } = self;
        let g = plan.g;
        let b = Buffers::new(&plan, share.scratch);
        b.sums.fill(0.0);
        let samples = share.x.len() / plan.input_len();
        for (first, chunk) in plan.chunks(samples) {
            let x = &share.x[first * plan.input_len()..][..chunk.samples * plan.input_len()];
            let dy = &share.other[first * plan.output_len()..][..chunk.samples * plan.output_len()];
            let buffers = (&mut *b.input, &mut *b.partial, &mut *b.transformed);
            transform_samples(&plan, chunk, x, buffers);
            let dims = (plan.out_channels, g.out_height, g.out_width);
            let grid = (2 * chunk.first_row, 2 * chunk.rows, 2 * plan.tile_cols);
            channels_last(
                dy,
                dims,
                (&mut *b.gradient, grid, 0),
                b.transformed_gradient,
            );
            transform_gradient(&plan, chunk, b.gradient, b.partial, b.transformed_gradient);
            let tiles = chunk.tiles(&plan);
            accumulate(&plan, b.transformed_gradient, b.transformed, b.sums, tiles);
        }
    }
}

/// `A (d0, d1)`, element by element: one axis of the output gradient's transform.
#[inline(always)]
fn gradient_step([d0, d1]: [&[f32]; 2], [t0, t1, t2, t3]: [&mut [f32]; 4]) {
    let n = t0.len();
    let (d0, d1) = (&d0[..n], &d1[..n]);
    let (t1, t2, t3) = (&mut t1[..n], &mut t2[..n], &mut t3[..n]);
    for i in 0..n {
        t0[i] = d0[i];
        t1[i] = d0[i] + d1[i];
        t2[i] = d0[i] - d1[i];
        t3[i] = -d1[i];
    }
}

/// `A dY A^T` of every tile of `chunk`'s output gradient (channels-last on the tiles' grid),
/// into `transformed` (`[16, tiles, out]`): down the columns of a tile row's two rows at once
/// (into `partial`), then along the rows tile by tile.
#[inline(always)]
fn transform_gradient(
    plan: &Plan<'_>,
    chunk: Chunk,
    gradient: &[f32],
    partial: &mut [f32],
    transformed: &mut [f32],
) {
    let out = plan.out_channels;
    let row_len = plan.row_len();
    let partial = &mut partial[..4 * row_len];
    let step = entry_stride(chunk.tiles(plan) * out);
    for (slot, tile_row, first_tile) in chunk.tile_rows(plan) {
        let (top, bottom) = gradient[(slot * chunk.rows + tile_row) * 2 * row_len..][..2 * row_len]
            .split_at(row_len);
        let offsets = [0, row_len, 2 * row_len, 3 * row_len];
        gradient_step([top, bottom], four_mut(partial, offsets, row_len));
        for r in 0..4 {
            let row = &partial[r * row_len..][..row_len];
            for tile_col in 0..plan.tile_cols {
                let pair = row[2 * tile_col * out..][..2 * out].split_at(out);
                let at = 4 * r * step + (first_tile + tile_col) * out;
                let offsets = [at, at + step, at + 2 * step, at + 3 * step];
                gradient_step([pair.0, pair.1], four_mut(transformed, offsets, out));
            }
        }
    }
}

/// `sums[e] += dy[e]^T v[e]` for the 16 entries: `[out, tiles]` by `[tiles, C]`.
fn accumulate(plan: &Plan<'_>, dy: &[f32], v: &[f32], sums: &mut [f32], tiles: usize) {
    let (out, channels) = (plan.out_channels, plan.g.channels);
    let entries = dy
        .chunks_exact(entry_stride(tiles * out))
        .zip(v.chunks_exact(entry_stride(tiles * channels)))
        .zip(sums.chunks_exact_mut(entry_stride(out * channels)));
    for ((dy, v), sum) in entries {
        let dy = MatRef::from_row_major_slice(&dy[..tiles * out], tiles, out);
        let v = MatRef::from_row_major_slice(&v[..tiles * channels], tiles, channels);
        let sum = MatMut::from_row_major_slice_mut(&mut sum[..out * channels], out, channels);
        matmul(sum, Accum::Add, dy.transpose(), v, 1.0, Par::Seq);
    }
}

/// `G^T (a, b, c, d)`: one axis of the sums' transform back to a 3x3 kernel, for [`LANES`]
/// kernels at once.
#[inline(always)]
fn g_transposed_times([a, b, c, d]: [&Lanes; 4]) -> [Lanes; 3] {
    [
        std::array::from_fn(|k| a[k] + 0.5 * (b[k] + c[k])),
        std::array::from_fn(|k| 0.5 * (b[k] - c[k])),
        std::array::from_fn(|k| 0.5 * (b[k] + c[k]) + d[k]),
    ]
}

/// Kernels whose weight gradients [`weight_from_sums`] computes at once.
const LANES: usize = 16;

/// One value of [`LANES`] kernels.
type Lanes = [f32; LANES];

/// `grad_w[o, c] = G^T sums[o, c] G (+ beta grad_w[o, c])`, `grad_w` `[out, C, 3, 3]`:
/// [`LANES`] kernels at a time, each entry's values of them side by side in `sums`.
fn weight_from_sums(plan: &Plan<'_>, sums: &[f32], grad_w: &mut [f32], beta: f32) {
    let (out, channels) = (plan.out_channels, plan.g.channels);
    let stride = entry_stride(out * channels);
    for (block, grads) in grad_w.chunks_mut(9 * LANES).enumerate() {
        let kernels = grads.len() / 9;
        let m: [Lanes; ENTRIES] = std::array::from_fn(|entry| {
            let mut lanes = [0.0; LANES];
            let at = entry * stride + block * LANES;
            lanes[..kernels].copy_from_slice(&sums[at..at + kernels]);
            lanes
        });
        // G^T down the columns, then along the rows.
        let columns: [[Lanes; 3]; 4] =
            std::array::from_fn(|j| g_transposed_times([&m[j], &m[4 + j], &m[8 + j], &m[12 + j]]));
        let rows: [[Lanes; 3]; 3] = std::array::from_fn(|i| {
            let [a, b, c, d] = columns.each_ref().map(|column| &column[i]);
            g_transposed_times([a, b, c, d])
        });
        for (k, grad) in grads.chunks_exact_mut(9).enumerate() {
            for (value, grad) in rows.as_flattened().iter().map(|lanes| lanes[k]).zip(grad) {
                *grad = if beta == 0.0 {
                    value
                } else {
                    beta * *grad + value
                };
            }
        }
    }
}

/// `grad_w = Σ_n dY[n] ⋆ x[n] (+ beta grad_w)`: the weight gradient (`[out, C, 3, 3]`) of the
/// 3x3 convolution of windows `g` (stride and dilation 1) into `out_channels` channels, for
/// the input `x` and the output gradient `grad_out`, through buffers from the pool.
///
/// # Errors
/// [`Error::Usage`](crate::Error::Usage) when `g` is not such a convolution or a buffer's
/// length does not match it.
pub(in crate::ops::conv) fn weight_gradient(
    g: &ConvGeometry,
    out_channels: usize,
    x: &[f32],
    grad_out: &[f32],
    grad_w: &mut [f32],
    beta: f32,
) -> Result<()> {
    let out = out_channels;
    let plane = |channels: usize, h: usize, w: usize| g.batch * channels * h * w;
    let lens = [
        ("input", x.len(), plane(g.channels, g.height, g.width)),
        (
            "output gradient",
            grad_out.len(),
            plane(out, g.out_height, g.out_width),
        ),
        ("weight gradient", grad_w.len(), out * g.channels * 9),
    ];
    let plan = Plan::new("winograd weight gradient", g, out, &lens)?;
    // One run per thread: each run's sums are added up after.
    let parts = plan.parts(1);
    let scratch_len = Buffers::scratch_len(&plan);
    let mut scratch = Cpu.empty(parts * scratch_len)?;
    let job = Job {
        plan,
        pass: WeightGradient,
        share: Share {
            x,
            other: grad_out,
            scratch: &mut scratch,
        },
    };
    in_parts(job, parts, scratch_len);
    let sums_len = Buffers::lens(&plan)[0];
    let (total, others) = scratch.split_at_mut(scratch_len);
    for part in others.chunks_exact(scratch_len) {
        for (total, part) in total[..sums_len].iter_mut().zip(&part[..sums_len]) {
            *total += part;
        }
    }
    weight_from_sums(&plan, &total[..sums_len], grad_w, beta);
    Cpu.recycle(&mut scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{SHAPES, values};
    use super::*;
    use crate::Shape;

    /// The weight gradient by its definition, in `f64`.
    fn reference(g: &ConvGeometry, out: usize, x: &[f32], dy: &[f32]) -> Vec<f64> {
        let (h, w) = (g.out_height, g.out_width);
        let mut grad = vec![0.0; out * g.channels * 9];
        for n in 0..g.batch {
            for o in 0..out {
                for c in 0..g.channels {
                    for t in 0..9 {
                        let mut sum = 0.0;
                        for oy in 0..h {
                            for ox in 0..w {
                                let iy = (oy + t / 3).checked_sub(g.padding);
                                let ix = (ox + t % 3).checked_sub(g.padding);
                                if let (Some(iy), Some(ix)) = (iy, ix)
                                    && iy < g.height
                                    && ix < g.width
                                {
                                    let at = ((n * g.channels + c) * g.height + iy) * g.width + ix;
                                    let dy = dy[((n * out + o) * h + oy) * w + ox];
                                    sum += f64::from(dy) * f64::from(x[at]);
                                }
                            }
                        }
                        grad[(o * g.channels + c) * 9 + t] += sum;
                    }
                }
            }
        }
        grad
    }

    #[test]
    fn matches_the_definition_written_or_added() {
        for (batch, channels, out, height, width, padding) in SHAPES {
            let shape = Shape::from([batch, channels, height, width]);
            let g = ConvGeometry::new("test", &shape, 3, 1, padding, 1).unwrap();
            let x = values(shape.numel(), 0.37);
            let dy_len = batch * out * g.out_height * g.out_width;
            let dy: Vec<f32> = (0..dy_len).map(|i| (i as f32 * 0.19).cos()).collect();
            let expected = reference(&g, out, &x, &dy);
            let before: Vec<f32> = (0..expected.len()).map(|i| i as f32 * 0.01).collect();
            for beta in [0.0, 1.0] {
                let mut grad = before.clone();
                weight_gradient(&g, out, &x, &dy, &mut grad, beta).unwrap();
                let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (i, (&found, &sum)) in grad.iter().zip(&expected).enumerate() {
                    let expected = f64::from(beta * before[i]) + sum;
                    assert!(
                        (f64::from(found) - expected).abs() <= 1e-5 * scale,
                        "{shape} -> {out} p{padding} beta {beta}: dW[{i}] {found} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_buffers_are_errors() {
        let shape = Shape::from([2, 3, 5, 5]);
        let g = ConvGeometry::new("test", &shape, 3, 1, 1, 1).unwrap();
        let (x, dy, mut grad) = (vec![0.0; 150], vec![0.0; 200], vec![0.0; 108]);
        assert!(weight_gradient(&g, 4, &x, &dy, &mut grad, 0.0).is_ok());
        let error = weight_gradient(&g, 4, &x, &dy[..199], &mut grad, 0.0).unwrap_err();
        assert!(
            error.to_string().contains("the output gradient holds 199"),
            "{error}"
        );
        let error = weight_gradient(&g, 4, &x, &dy, &mut grad[..100], 0.0).unwrap_err();
        assert!(
            error.to_string().contains("the weight gradient holds 100"),
            "{error}"
        );
        let g = ConvGeometry::new("test", &shape, 3, 2, 1, 1).unwrap();
        let error = weight_gradient(&g, 4, &x, &dy, &mut grad, 0.0).unwrap_err();
        assert!(
            error.to_string().contains("not a 3x3 convolution"),
            "{error}"
        );
    }
}
