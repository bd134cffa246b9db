//! Winograd's minimal filtering F(2x2, 3x3) on the CPU, for 3x3 convolutions with stride and
//! dilation 1 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! Each 2x2 tile of an output plane is `A^T [Σ_c (G g_c G^T) ⊙ (B^T d_c B)] A`, `g_c` the
//! kernel and `d_c` the 4x4 input patch under the tile in channel `c`. So the sums over the
//! channels are 16 matrix products, one per entry of the 4x4 transforms, with 4 multiplications
//! per output where im2col's product has 9. Samples run in chunks of about [`CHUNK_TILES`]
//! tiles: a chunk's input transform, products and output transform run on one thread, in
//! buffers that stay in its cache.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::{ConvGeometry, FilterRead, Filters};
use crate::backend::cpu::{Vectorizable, join, vectorized};
use crate::backend::{Cpu, Memory};
use crate::error::{Error, Result};

/// Entries of a 4x4 transformed tile: one matrix product each.
const ENTRIES: usize = 16;

/// The distance between the matrices of consecutive entries, `len` elements each, in the
/// transformed weight, input and products: one cache line more than `len`. Matrices of 4 KiB
/// multiples would map a tile's 16 values to one cache set, which holds fewer (measured: the
/// weight transform of 128x64 filters took 430 us instead of 100 us).
fn entry_stride(len: usize) -> usize {
    len + 16
}

/// Tiles per chunk of samples (whole samples, at least one). Measured on the larger CNN's
/// convolutions (see `benches/cnn_step.rs`).
const CHUNK_TILES: usize = 128;

/// Products with fewer flops in all run on one thread (the matrix products' threshold).
const PARALLEL_MIN_FLOPS: usize = 16_000_000;

/// A convolution computed by [`winograd`]: the windows over its input, its output channels
/// and its tiles.
#[derive(Debug, Clone, Copy)]
struct Plan<'a> {
    g: &'a ConvGeometry,
    out_channels: usize,
    /// Tiles down an output plane: `ceil(OH / 2)`.
    tile_rows: usize,
    /// Tiles across an output plane: `ceil(OW / 2)`.
    tile_cols: usize,
    /// Samples per chunk.
    chunk: usize,
}

impl Plan<'_> {
    fn tiles_per_sample(&self) -> usize {
        self.tile_rows * self.tile_cols
    }

    /// The zero-padded input plane the tiles read: `2 * tile_rows + 2` by `2 * tile_cols + 2`.
    fn padded(&self) -> (usize, usize) {
        (2 * self.tile_rows + 2, 2 * self.tile_cols + 2)
    }

    fn input_len(&self) -> usize {
        self.g.channels * self.g.height * self.g.width
    }

    fn output_len(&self) -> usize {
        self.out_channels * self.g.out_height * self.g.out_width
    }

    /// The lengths of one thread's buffers, in [`Buffers`] order.
    fn buffer_lens(&self) -> [usize; 5] {
        let (channels, out) = (self.g.channels, self.out_channels);
        let (rows, cols) = self.padded();
        let tiles = self.chunk * self.tiles_per_sample();
        [
            self.chunk * rows * cols * channels,
            ENTRIES * entry_stride(tiles * channels),
            ENTRIES * entry_stride(tiles * out),
            self.chunk * self.g.out_height * self.g.out_width * out,
            self.partial_len() + 2 * self.row_len() + out,
        ]
    }

    /// A tile row's partial transform: the input's four padded rows `[4, cols, C]`, or the
    /// output's `[4, 2 tile_cols, out]`.
    fn partial_len(&self) -> usize {
        let (_, cols) = self.padded();
        (4 * cols * self.g.channels).max(4 * self.row_len())
    }

    /// The outputs of a tile row's row of outputs, `2 tile_cols` positions of `out` channels.
    fn row_len(&self) -> usize {
        2 * self.tile_cols * self.out_channels
    }

    fn scratch_len(&self) -> usize {
        self.buffer_lens().iter().sum()
    }
}

/// One thread's buffers for a chunk, all channels-last so that the transforms run along the
/// channels: the padded input `[samples, rows, cols, C]`, the transformed input
/// `[16, tiles, C]`, the products `[16, tiles, out]`, the output `[samples, OH, OW, out]`,
/// a tile row's partial transform, the bias repeated along a row of outputs, room for a row
/// below the planes, and a zero bias.
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
    fn new(plan: &Plan<'_>, bias: Option<&[f32]>, scratch: &'a mut [f32]) -> Self {
        let [input, transformed, products, output, _] = plan.buffer_lens();
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

/// Four disjoint `len`-long slices of `buffer`, at `offsets` (increasing).
#[inline(always)]
fn four_mut(buffer: &mut [f32], offsets: [usize; 4], len: usize) -> [&mut [f32]; 4] {
    let (first, rest) = buffer[offsets[0]..].split_at_mut(offsets[1] - offsets[0]);
    let (second, rest) = rest.split_at_mut(offsets[2] - offsets[1]);
    let (third, fourth) = rest.split_at_mut(offsets[3] - offsets[2]);
    [
        &mut first[..len],
        &mut second[..len],
        &mut third[..len],
        &mut fourth[..len],
    ]
}

/// `G g G^T` of every kernel, into `u` as `[16, out, C]`: kernel `(o, c)` of `weight`
/// `[out, C, 3, 3]` as stored, or of `[C, out, 3, 3]` transposed and flipped.
fn transform_weight(plan: &Plan<'_>, weight: &[f32], read: FilterRead, u: &mut [f32]) {
    let (out, channels) = (plan.out_channels, plan.g.channels);
    let stride = entry_stride(out * channels);
    for o in 0..out {
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
                    u[(4 * i + j) * stride + o * channels + c] = value;
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

/// One thread's share: the samples of `x` and `y` in hand, chunk by chunk.
struct Chunks<'a> {
    plan: Plan<'a>,
    u: &'a [f32],
    bias: Option<&'a [f32]>,
    x: &'a [f32],
    y: &'a mut [f32],
    scratch: &'a mut [f32],
}

impl Vectorizable for Chunks<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Chunks {
            plan,
            u,
            bias,
            x,
            y,
            scratch,
        } = self;
        let mut buffers = Buffers::new(&plan, bias, scratch);
        let per_chunk = (
            plan.chunk * plan.input_len(),
            plan.chunk * plan.output_len(),
        );
        for (x, y) in x.chunks(per_chunk.0).zip(y.chunks_mut(per_chunk.1)) {
            let tiles = x.len() / plan.input_len() * plan.tiles_per_sample();
            pad_channels_last(&plan, x, buffers.input);
            transform_input(&plan, &mut buffers, tiles);
            multiply(&plan, u, &mut buffers, tiles);
            transform_output(&plan, &mut buffers, tiles);
            channels_first(&plan, buffers.output, y);
        }
    }
}

/// `x` (`[samples, C, H, W]`) zero-padded into `padded` as `[samples, rows, cols, C]`.
#[inline(always)]
fn pad_channels_last(plan: &Plan<'_>, x: &[f32], padded: &mut [f32]) {
    let g = plan.g;
    let (rows, cols) = plan.padded();
    let channels = g.channels;
    let plane = g.height * g.width;
    for (x, padded) in x
        .chunks_exact(plan.input_len())
        .zip(padded.chunks_exact_mut(rows * cols * channels))
    {
        padded.fill(0.0);
        for y in 0..g.height {
            let row = &mut padded[((y + g.padding) * cols + g.padding) * channels..];
            for (c, x) in x.chunks_exact(plane).enumerate() {
                let x = &x[y * g.width..][..g.width];
                for (i, &value) in x.iter().enumerate() {
                    row[i * channels + c] = value;
                }
            }
        }
    }
}

/// `[samples, OH, OW, out]` back to `[samples, out, OH, OW]`.
#[inline(always)]
fn channels_first(plan: &Plan<'_>, output: &[f32], y: &mut [f32]) {
    let out = plan.out_channels;
    let positions = plan.g.out_height * plan.g.out_width;
    for (y, output) in y
        .chunks_exact_mut(plan.output_len())
        .zip(output.chunks_exact(plan.output_len()))
    {
        for (o, plane) in y.chunks_exact_mut(positions).enumerate() {
            for (i, value) in plane.iter_mut().enumerate() {
                *value = output[i * out + o];
            }
        }
    }
}

/// `B^T (d0, d1, d2, d3)`, element by element: one axis of the input transform.
#[inline(always)]
fn input_step([d0, d1, d2, d3]: [&[f32]; 4], [t0, t1, t2, t3]: [&mut [f32]; 4]) {
    let n = t0.len();
    let (d0, d1, d2, d3) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n]);
    let (t1, t2, t3) = (&mut t1[..n], &mut t2[..n], &mut t3[..n]);
    for i in 0..n {
        t0[i] = d0[i] - d2[i];
        t1[i] = d1[i] + d2[i];
        t2[i] = d2[i] - d1[i];
        t3[i] = d1[i] - d3[i];
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

/// The sample, tile row and tile column of tile `tile` of a chunk.
#[inline(always)]
fn tile_at(plan: &Plan<'_>, tile: usize) -> (usize, usize, usize) {
    let (sample, within) = (
        tile / plan.tiles_per_sample(),
        tile % plan.tiles_per_sample(),
    );
    (sample, within / plan.tile_cols, within % plan.tile_cols)
}

/// `B^T d B` of every tile's input patch, into the transformed input: down the columns of a
/// tile row's four padded rows at once, then along the rows tile by tile.
#[inline(always)]
fn transform_input(plan: &Plan<'_>, buffers: &mut Buffers<'_>, tiles: usize) {
    let channels = plan.g.channels;
    let (rows, cols) = plan.padded();
    let row_len = cols * channels;
    let (input, transformed) = (&*buffers.input, &mut *buffers.transformed);
    let partial = &mut buffers.partial[..4 * row_len];
    let step = entry_stride(tiles * channels);
    for first_tile in (0..tiles).step_by(plan.tile_cols) {
        let (sample, tile_row, _) = tile_at(plan, first_tile);
        let top = (sample * rows + 2 * tile_row) * row_len;
        let d = &input[top..][..4 * row_len];
        let (d0, rest) = d.split_at(row_len);
        let (d1, rest) = rest.split_at(row_len);
        let (d2, d3) = rest.split_at(row_len);
        let offsets = [0, row_len, 2 * row_len, 3 * row_len];
        input_step([d0, d1, d2, d3], four_mut(partial, offsets, row_len));
        for a in 0..4 {
            let row = &partial[a * row_len..][..row_len];
            for tile_col in 0..plan.tile_cols {
                let t = &row[2 * tile_col * channels..][..4 * channels];
                let (t0, rest) = t.split_at(channels);
                let (t1, rest) = rest.split_at(channels);
                let (t2, t3) = rest.split_at(channels);
                let at = 4 * a * step + (first_tile + tile_col) * channels;
                let offsets = [at, at + step, at + 2 * step, at + 3 * step];
                input_step([t0, t1, t2, t3], four_mut(transformed, offsets, channels));
            }
        }
    }
}

/// `m[e] = v[e] u[e]^T` for the 16 entries: `[tiles, C]` by `[C, out]`.
fn multiply(plan: &Plan<'_>, u: &[f32], buffers: &mut Buffers<'_>, tiles: usize) {
    let (out, channels) = (plan.out_channels, plan.g.channels);
    let products = u
        .chunks_exact(entry_stride(out * channels))
        .zip(
            buffers
                .transformed
                .chunks_exact(entry_stride(tiles * channels)),
        )
        .zip(buffers.products.chunks_exact_mut(entry_stride(tiles * out)));
    for ((u, v), m) in products {
        let u = MatRef::from_row_major_slice(&u[..out * channels], out, channels);
        let v = MatRef::from_row_major_slice(&v[..tiles * channels], tiles, channels);
        let m = MatMut::from_row_major_slice_mut(&mut m[..tiles * out], tiles, out);
        matmul(m, Accum::Replace, v, u.transpose(), 1.0, Par::Seq);
    }
}

/// `A^T m A` of every tile, plus the bias, into the channels-last output: along the rows
/// tile by tile, then down the columns of a whole tile row at once.
#[inline(always)]
fn transform_output(plan: &Plan<'_>, buffers: &mut Buffers<'_>, tiles: usize) {
    let g = plan.g;
    let out = plan.out_channels;
    let (row_len, out_row_len) = (plan.row_len(), g.out_width * out);
    let products = &*buffers.products;
    let partial = &mut buffers.partial[..4 * row_len];
    for first_tile in (0..tiles).step_by(plan.tile_cols) {
        let (sample, tile_row, _) = tile_at(plan, first_tile);
        for tile_col in 0..plan.tile_cols {
            let stride = entry_stride(tiles * out);
            let at = |e: usize| &products[e * stride + (first_tile + tile_col) * out..][..out];
            for r in 0..4 {
                let m = [at(4 * r), at(4 * r + 1), at(4 * r + 2), at(4 * r + 3)];
                let (left, right) =
                    partial[r * row_len + 2 * tile_col * out..][..2 * out].split_at_mut(out);
                output_step(m, [left, right], buffers.zeros);
            }
        }
        let (p0, rest) = partial.split_at(row_len);
        let (p1, rest) = rest.split_at(row_len);
        let (p2, p3) = rest.split_at(row_len);
        let y = 2 * tile_row;
        let at = (sample * g.out_height + y) * out_row_len;
        let (top, bottom) = if y + 1 < g.out_height {
            buffers.output[at..][..2 * out_row_len].split_at_mut(out_row_len)
        } else {
            (
                &mut buffers.output[at..][..out_row_len],
                &mut buffers.discard[..out_row_len],
            )
        };
        output_step([p0, p1, p2, p3], [top, bottom], buffers.bias_row);
    }
}

/// The chunks of samples in `x` and `y` in `parts` runs on the thread pool, each with its
/// own part of `scratch`.
fn in_parts(chunks: Chunks<'_>, parts: usize) {
    let plan = chunks.plan;
    let samples = chunks.x.len() / plan.input_len();
    let chunk_count = samples.div_ceil(plan.chunk);
    if parts < 2 || chunk_count < 2 {
        vectorized(chunks);
        return;
    }
    let first = parts / 2;
    let mid = chunk_count * first / parts * plan.chunk;
    let Chunks {
        u,
        bias,
        x,
        y,
        scratch,
        ..
    } = chunks;
    let (x_left, x_right) = x.split_at(mid * plan.input_len());
    let (y_left, y_right) = y.split_at_mut(mid * plan.output_len());
    let (scratch_left, scratch_right) = scratch.split_at_mut(first * plan.scratch_len());
    let part = |x, y, scratch| Chunks {
        plan,
        u,
        bias,
        x,
        y,
        scratch,
    };
    let (left, right) = (
        part(x_left, y_left, scratch_left),
        part(x_right, y_right, scratch_right),
    );
    join(|| in_parts(left, first), || in_parts(right, parts - first));
}

/// `y = conv(x, weight) + bias` for the 3x3 convolution of windows `g` (stride and dilation
/// 1) with `filters`, through buffers from the pool.
///
/// # Errors
/// [`Error::Usage`] when `g` is not such a convolution or a buffer's length does not match it.
pub(super) fn winograd(
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
    if (g.kernel, g.stride, g.dilation) != (3, 1, 1) {
        return Err(Error::Usage(format!(
            "winograd: {g:?} is not a 3x3 convolution with stride and dilation 1"
        )));
    }
    if let Some((name, found, expected)) = lens
        .into_iter()
        .find(|(_, found, expected)| found != expected)
    {
        return Err(Error::Usage(format!(
            "winograd: the {name} holds {found} elements, {expected} expected for {g:?}"
        )));
    }
    let (tile_rows, tile_cols) = (g.out_height.div_ceil(2), g.out_width.div_ceil(2));
    let plan = Plan {
        g,
        out_channels: out,
        tile_rows,
        tile_cols,
        chunk: (CHUNK_TILES / (tile_rows * tile_cols).max(1)).max(1),
    };
    let flops = 2 * ENTRIES * out * g.channels * g.batch * plan.tiles_per_sample();
    let threads = crate::backend::num_threads();
    let parts = if threads < 2 || flops < PARALLEL_MIN_FLOPS {
        1
    } else {
        g.batch.div_ceil(plan.chunk).min(2 * threads)
    };
    let mut u = Cpu.empty(ENTRIES * entry_stride(out * g.channels))?;
    transform_weight(&plan, weight, filters.read, &mut u);
    let mut scratch = Cpu.empty(parts * plan.scratch_len())?;
    let chunks = Chunks {
        plan,
        u: &u,
        bias,
        x,
        y,
        scratch: &mut scratch,
    };
    in_parts(chunks, parts);
    Cpu.recycle(&mut scratch);
    Cpu.recycle(&mut u);
    Ok(())
}

#[cfg(test)]
mod tests {
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

    fn values(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * scale).sin()).collect()
    }

    #[test]
    fn both_filter_reads_match_the_definition() {
        // (batch, channels, out, height, width, padding): odd and even planes, planes smaller
        // than a tile, channel counts that are no multiple of anything, chunks of several
        // samples with a short last one, and enough work to share the threads.
        for (batch, channels, out, height, width, padding) in [
            (2, 3, 5, 5, 7, 1),
            (3, 4, 2, 6, 6, 0),
            (2, 2, 3, 4, 5, 2),
            (1, 3, 2, 3, 3, 1),
            (9, 5, 7, 4, 4, 1),
            (2, 1, 1, 1, 1, 1),
            (8, 32, 40, 16, 16, 1),
        ] {
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
                    winograd(&g, filters, &weight, bias, &x, &mut y).unwrap();
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
        assert!(winograd(&g, filters, &weight, None, &x, &mut y).is_ok());
        for (kernel, stride, dilation) in [(5, 1, 1), (3, 2, 1), (3, 1, 2)] {
            let g = ConvGeometry::new("test", &shape, kernel, stride, 2, dilation).unwrap();
            let error = winograd(&g, filters, &weight, None, &x, &mut y).unwrap_err();
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
            let error = winograd(&g, filters, weight, bias, x, &mut y[..y_len]).unwrap_err();
            assert!(
                error.to_string().contains(&format!("the {name} holds")),
                "{error}"
            );
        }
    }
}
