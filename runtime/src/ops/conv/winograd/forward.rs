//! The convolution itself: `y = A^T [U ⊙ V] A + bias` per tile, `U` the transformed filters.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::{Chunk, ENTRIES, Job, Plan, Share, entry_stride, four, in_parts, transform_samples};
use crate::backend::cpu::{Vectorizable, join};
use crate::backend::{Cpu, Memory};
use crate::error::Result;
use crate::ops::conv::{ConvGeometry, FilterRead, Filters};
use crate::ops::matmul::cpu::transpose::transpose;

/// Filters from which the weight transform splits its output channels between two threads.
const PARALLEL_MIN_FILTERS: usize = 4096;

/// `G g G^T` of every kernel, into `u` as `[16, out, C]`: kernel `(o, c)` of `weight`
/// `[out, C, 3, 3]` as stored, or of `[C, out, 3, 3]` transposed and flipped. Many filters
/// split their output channels in two halves that run on the thread pool.
fn transform_weight(plan: &Plan<'_>, weight: &[f32], read: FilterRead, u: &mut [f32]) {
    let (out, channels) = (plan.out_channels, plan.g.channels);
    let mut entries: [&mut [f32]; ENTRIES] = Default::default();
    for (entry, matrix) in entries
        .iter_mut()
        .zip(u.chunks_exact_mut(entry_stride(out * channels)))
    {
        *entry = &mut matrix[..out * channels];
    }
    if out * channels < PARALLEL_MIN_FILTERS || out < 2 || crate::backend::num_threads() < 2 {
        transform_filters(weight, read, (out, channels), 0, &mut entries);
        return;
    }
    // Each entry's rows of the first half of the output channels, and of the second.
    let half = out / 2;
    let mut second: [&mut [f32]; ENTRIES] = Default::default();
    for (first, second) in entries.iter_mut().zip(&mut second) {
        let (head, tail) = std::mem::take(first).split_at_mut(half * channels);
        (*first, *second) = (head, tail);
    }
    join(
        || transform_filters(weight, read, (out, channels), 0, &mut entries),
        || transform_filters(weight, read, (out, channels), half, &mut second),
    );
}

/// [`transform_weight`] of output channels `first..`, as many as `entries` hold rows: entry
/// `e`'s row of output channel `o` at `entries[e][(o - first) * C..]`.
fn transform_filters(
    weight: &[f32],
    read: FilterRead,
    (out, channels): (usize, usize),
    first: usize,
    entries: &mut [&mut [f32]; ENTRIES],
) {
    let count = entries[0].len() / channels.max(1);
    for o in first..first + count {
        for c in 0..channels {
            let mut kernel = [0.0; 9];
            match read {
                FilterRead::AsStored => {
                    kernel.copy_from_slice(&weight[(o * channels + c) * 9..][..9]);
                }
                FilterRead::TransposedFlipped => {
                    kernel.copy_from_slice(&weight[(c * out + o) * 9..][..9]);
                    kernel.reverse();
                }
            }
            // G down the kernel's columns, then along the rows.
            let mut columns = [[0.0; 3]; 4];
            for j in 0..3 {
                let column = g_times(kernel[j], kernel[3 + j], kernel[6 + j]);
                for i in 0..4 {
                    columns[i][j] = column[i];
                }
            }
            for (i, [a, b, c_]) in columns.into_iter().enumerate() {
                for (j, value) in g_times(a, b, c_).into_iter().enumerate() {
                    entries[4 * i + j][(o - first) * channels + c] = value;
                }
            }
        }
    }
}

/// `G (a, b, c)`: one axis of the weight transform.
#[inline(always)]
fn g_times(a: f32, b: f32, c: f32) -> [f32; 4] {
    [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
}

/// One thread's buffers for a chunk: the padded input `[slots, rows, cols, C]`, the
/// transformed input `[16, tiles, C]`, the products `[16, tiles, out]`, the output
/// `[slots, rows, OW, out]`, a tile row's partial transform, the bias repeated along a row of
/// outputs, room for a row below the planes, and a zero bias.
struct Buffers<'a> {
    input: &'a mut [f32],
    transformed: &'a mut [f32],
    products: &'a mut [f32],
    output: &'a mut [f32],
    partial: &'a mut [f32],
    bias_row: &'a [f32],
    discard: &'a mut [f32],
    zeros: &'a [f32],
}

impl<'a> Buffers<'a> {
    /// The lengths of the buffers, in order.
    fn lens(plan: &Plan<'_>) -> [usize; 5] {
        let (channels, out) = (plan.g.channels, plan.out_channels);
        [
            plan.padded_input_len(),
            plan.transformed_len(channels, plan.input_rows_len()),
            plan.transformed_len(out, 0),
            plan.chunk * plan.output_rows_len(),
            plan.partial_len() + 2 * plan.row_len() + out,
        ]
    }

    fn scratch_len(plan: &Plan<'_>) -> usize {
        Self::lens(plan).iter().sum()
    }

    fn new(plan: &Plan<'_>, bias: Option<&[f32]>, scratch: &'a mut [f32]) -> Self {
        let [input, transformed, products, output, _] = Self::lens(plan);
        let (input, rest) = scratch.split_at_mut(input);
        let (transformed, rest) = rest.split_at_mut(transformed);
        let (products, rest) = rest.split_at_mut(products);
        let (output, rest) = rest.split_at_mut(output);
        let (partial, rest) = rest.split_at_mut(plan.partial_len());
        let (bias_row, rest) = rest.split_at_mut(plan.row_len());
        let (discard, zeros) = rest.split_at_mut(plan.row_len());
        let out = plan.out_channels;
        let zeros = &mut zeros[..out];
        zeros.fill(0.0);
        for position in bias_row.chunks_exact_mut(out) {
            position.copy_from_slice(bias.unwrap_or(zeros));
        }
        Self {
            input,
            transformed,
            products,
            output,
            partial,
            bias_row,
            discard,
            zeros,
        }
    }
}

/// What the forward pass reads besides the samples: the transformed filters and the bias.
#[derive(Clone, Copy)]
struct Forward<'a> {
    u: &'a [f32],
    bias: Option<&'a [f32]>,
}

/// One thread's share: the samples of `x` and `y` (`share.other`) in hand, chunk by chunk.
impl Vectorizable for Job<'_, Forward<'_>, &mut [f32]> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Job {
            plan,
            pass: Forward { u, bias },
            share,
        } = self;
        let mut b = Buffers::new(&plan, bias, share.scratch);
        let samples = share.x.len() / plan.input_len();
        for (first, chunk) in plan.chunks(samples) {
            let x = &share.x[first * plan.input_len()..][..chunk.samples * plan.input_len()];
            let y = &mut share.other[first * plan.output_len()..];
            let tiles = chunk.tiles(&plan);
            let buffers = (&mut *b.input, &mut *b.partial, &mut *b.transformed);
            transform_samples(&plan, chunk, x, buffers);
            multiply(&plan, u, b.transformed, b.products, tiles);
            transform_output(&plan, chunk, &mut b);
            channels_first(&plan, chunk, b.output, y);
        }
    }
}

/// The chunk's output `[slots, rows, OW, out]` into its rows of `y` (`[samples, out, OH, OW]`,
/// from the chunk's first sample on).
#[inline(always)]
fn channels_first(plan: &Plan<'_>, chunk: Chunk, output: &[f32], y: &mut [f32]) {
    let out = plan.out_channels;
    let (plane, first) = (
        plan.g.out_height * plan.g.out_width,
        2 * chunk.first_row * plan.g.out_width,
    );
    let positions = chunk.out_rows(plan) * plan.g.out_width;
    let samples = y.chunks_exact_mut(plan.output_len()).take(chunk.samples);
    for (y, output) in samples.zip(output.chunks_exact(positions * out)) {
        let y = &mut y[first..];
        transpose(output, |p| p * out, y, |o| o * plane, (positions, out));
    }
}

/// `m[e] = v[e] u[e]^T` for the 16 entries: `[tiles, C]` by `[C, out]`.
fn multiply(plan: &Plan<'_>, u: &[f32], transformed: &[f32], products: &mut [f32], tiles: usize) {
    let (out, channels) = (plan.out_channels, plan.g.channels);
    let entries = u
        .chunks_exact(entry_stride(out * channels))
        .zip(transformed.chunks_exact(entry_stride(tiles * channels)))
        .zip(products.chunks_exact_mut(entry_stride(tiles * out)));
    for ((u, v), m) in entries {
        let u = MatRef::from_row_major_slice(&u[..out * channels], out, channels);
        let v = MatRef::from_row_major_slice(&v[..tiles * channels], tiles, channels);
        let m = MatMut::from_row_major_slice_mut(&mut m[..tiles * out], tiles, out);
        matmul(m, Accum::Replace, v, u.transpose(), 1.0, Par::Seq);
    }
}

/// `A^T (m0, m1, m2, m3)` (plus `bias`), element by element: one axis of the output
/// transform.
#[inline(always)]
fn output_step([m0, m1, m2, m3]: [&[f32]; 4], [s0, s1]: [&mut [f32]; 2], bias: &[f32]) {
    let n = s0.len();
    let (m0, m1, m2, m3, bias) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &bias[..n]);
    let s1 = &mut s1[..n];
    for i in 0..n {
        s0[i] = m0[i] + m1[i] + m2[i] + bias[i];
        s1[i] = m1[i] - m2[i] - m3[i] + bias[i];
    }
}

/// `A^T m A` of every tile of `chunk`, plus the bias, into the channels-last output: along
/// the rows tile by tile, then down the columns of a whole tile row at once.
#[inline(always)]
fn transform_output(plan: &Plan<'_>, chunk: Chunk, b: &mut Buffers<'_>) {
    let g = plan.g;
    let out = plan.out_channels;
    let (row_len, out_row_len) = (plan.row_len(), g.out_width * out);
    let stride = entry_stride(chunk.tiles(plan) * out);
    let partial = &mut b.partial[..4 * row_len];
    let slot_rows = chunk.out_rows(plan);
    for (slot, tile_row, first_tile) in chunk.tile_rows(plan) {
        for tile_col in 0..plan.tile_cols {
            let at = |e: usize| &b.products[e * stride + (first_tile + tile_col) * out..][..out];
            for r in 0..4 {
                let m = [at(4 * r), at(4 * r + 1), at(4 * r + 2), at(4 * r + 3)];
                let (left, right) =
                    partial[r * row_len + 2 * tile_col * out..][..2 * out].split_at_mut(out);
                output_step(m, [left, right], b.zeros);
            }
        }
        let y = 2 * tile_row;
        let at = (slot * slot_rows + y) * out_row_len;
        let (top, bottom) = if 2 * chunk.first_row + y + 1 < g.out_height {
            b.output[at..][..2 * out_row_len].split_at_mut(out_row_len)
        } else {
            (
                &mut b.output[at..][..out_row_len],
                &mut b.discard[..out_row_len],
            )
        };
        output_step(four(partial, row_len), [top, bottom], b.bias_row);
    }
}

/// `y = conv(x, weight) + bias` for the 3x3 convolution of windows `g` (stride and dilation
/// 1) with `filters`, through buffers from the pool.
///
/// # Errors
/// [`Error::Usage`](crate::Error::Usage) when `g` is not such a convolution or a buffer's
/// length does not match it.
pub(in crate::ops::conv) fn convolve(
    g: &ConvGeometry,
    filters: Filters,
    weight: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let out = filters.out_channels;
    let plane = |channels: usize, h: usize, w: usize| g.batch * channels * h * w;
    let lens = [
        ("weight", weight.len(), out * g.channels * 9),
        ("bias", bias.map_or(out, <[f32]>::len), out),
        ("input", x.len(), plane(g.channels, g.height, g.width)),
        ("output", y.len(), plane(out, g.out_height, g.out_width)),
    ];
    let plan = Plan::new("winograd", g, out, &lens)?;
    let parts = plan.parts(2);
    let mut u = Cpu.empty(ENTRIES * entry_stride(out * g.channels))?;
    transform_weight(&plan, weight, filters.read, &mut u);
    let scratch_len = Buffers::scratch_len(&plan);
    let mut scratch = Cpu.empty(parts * scratch_len)?;
    let job = Job {
        plan,
        pass: Forward { u: &u, bias },
        share: Share {
            x,
            other: y,
            scratch: &mut scratch,
        },
    };
    in_parts(job, parts, scratch_len);
    Cpu.recycle(&mut scratch);
    Cpu.recycle(&mut u);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{SHAPES, values};
    use super::*;
    use crate::Shape;

    /// The convolution by its definition, in `f64`: `filter(o, c)` gives the nine taps.
    fn reference(
        g: &ConvGeometry,
        out: usize,
        filter: impl Fn(usize, usize) -> [f32; 9],
        bias: Option<&[f32]>,
        x: &[f32],
    ) -> Vec<f32> {
        let (h, w) = (g.out_height, g.out_width);
        let mut y = vec![0.0; g.batch * out * h * w];
        for n in 0..g.batch {
            for o in 0..out {
                for oy in 0..h {
                    for ox in 0..w {
                        let mut sum = bias.map_or(0.0, |bias| f64::from(bias[o]));
                        for c in 0..g.channels {
                            let taps = filter(o, c);
                            for (t, &tap) in taps.iter().enumerate() {
                                let (iy, ix) = (
                                    (oy + t / 3).checked_sub(g.padding),
                                    (ox + t % 3).checked_sub(g.padding),
                                );
                                if let (Some(iy), Some(ix)) = (iy, ix)
                                    && iy < g.height
                                    && ix < g.width
                                {
                                    let at = ((n * g.channels + c) * g.height + iy) * g.width + ix;
                                    sum += f64::from(tap) * f64::from(x[at]);
                                }
                            }
                        }
                        y[((n * out + o) * h + oy) * w + ox] = sum as f32;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn both_filter_reads_match_the_definition() {
        for (batch, channels, out, height, width, padding) in SHAPES {
            let shape = Shape::from([batch, channels, height, width]);
            let g = ConvGeometry::new("test", &shape, 3, 1, padding, 1).unwrap();
            let x = values(shape.numel(), 0.37);
            let weight = values(out * channels * 9, 0.23);
            let bias = values(out, 0.71);
            let len = batch * out * g.out_height * g.out_width;
            for read in [FilterRead::AsStored, FilterRead::TransposedFlipped] {
                let filter = |o: usize, c: usize| -> [f32; 9] {
                    let mut taps = [0.0; 9];
                    for (t, tap) in taps.iter_mut().enumerate() {
                        *tap = match read {
                            FilterRead::AsStored => weight[(o * channels + c) * 9 + t],
                            FilterRead::TransposedFlipped => weight[(c * out + o) * 9 + 8 - t],
                        };
                    }
                    taps
                };
                for bias in [None, Some(bias.as_slice())] {
                    let expected = reference(&g, out, filter, bias, &x);
                    let mut y = vec![f32::NAN; len];
                    let filters = Filters {
                        out_channels: out,
                        read,
                    };
                    convolve(&g, filters, &weight, bias, &x, &mut y).unwrap();
                    let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                    for (i, (a, b)) in y.iter().zip(&expected).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale,
                            "{shape} -> {out} p{padding} {read:?} bias {}: y[{i}] {a} vs {b}",
                            bias.is_some()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_convolutions_and_wrong_buffers_are_errors() {
        let shape = Shape::from([2, 3, 5, 5]);
        let filters = Filters {
            out_channels: 4,
            read: FilterRead::AsStored,
        };
        let (x, weight, mut y) = (vec![0.0; 150], vec![0.0; 108], vec![0.0; 200]);
        let g = ConvGeometry::new("test", &shape, 3, 1, 1, 1).unwrap();
        assert!(convolve(&g, filters, &weight, None, &x, &mut y).is_ok());
        for (kernel, stride, dilation) in [(5, 1, 1), (3, 2, 1), (3, 1, 2)] {
            let g = ConvGeometry::new("test", &shape, kernel, stride, 2, dilation).unwrap();
            let error = convolve(&g, filters, &weight, None, &x, &mut y).unwrap_err();
            assert!(
                error.to_string().contains("not a 3x3 convolution"),
                "{error}"
            );
        }
        let short = [0.0; 3];
        for (weight, bias, x, y_len, name) in [
            (&weight[..100], None, &x[..], 200, "weight"),
            (&weight[..], Some(&short[..]), &x[..], 200, "bias"),
            (&weight[..], None, &x[..149], 200, "input"),
            (&weight[..], None, &x[..], 199, "output"),
        ] {
            let error = convolve(&g, filters, weight, bias, x, &mut y[..y_len]).unwrap_err();
            assert!(
                error.to_string().contains(&format!("the {name} holds")),
                "{error}"
            );
        }
    }
}
