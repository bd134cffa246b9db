//! Winograd's minimal filtering F(2x2, 3x3) on the CPU, for 3x3 convolutions with stride and
//! dilation 1 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! Each 2x2 tile of an output plane is `A^T [Σ_c (G g_c G^T) ⊙ (B^T d_c B)] A`, `g_c` the
//! kernel and `d_c` the 4x4 input patch under the tile in channel `c`. So the sums over the
//! channels are 16 matrix products, one per entry of the 4x4 transforms, with 4 multiplications
//! per output where im2col's product has 9 ([`forward`]). The weight gradient is the same
//! identity read backwards: `dW = G^T [Σ_tiles (A dY A^T) ⊙ (B^T d B)] G`, 16 products
//! summed over the tiles ([`weight_gradient`]).
//!
//! Samples run in chunks of about [`CHUNK_TILES`] tiles: a chunk's transforms and products
//! run on one thread, in buffers that stay in its cache. The buffers are channels-last, so
//! that the transforms run along the channels.

mod forward;
mod weight_gradient;

pub(super) use forward::convolve;
pub(super) use weight_gradient::weight_gradient;

use super::ConvGeometry;
use crate::backend::cpu::{Vectorizable, join, vectorized};
use crate::error::{Error, Result};
use crate::ops::matmul::cpu::transpose::transpose;

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

/// Products with fewer flops in all run on one thread. Lower than the matrix products'
/// threshold, as each part also transforms its samples: the digits CNN's 16-to-32-channel
/// layer (4.2 MFLOP of products a pass) in two parts takes its step from 0.69 ms to 0.54 ms.
const PARALLEL_MIN_FLOPS: usize = 2_000_000;

/// A convolution's windows, its output channels and its tiles.
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

impl<'a> Plan<'a> {
    /// The plan for the convolution of windows `g` into `out_channels` channels, once `lens`
    /// (each buffer's name, length and expected length) are checked.
    ///
    /// # Errors
    /// [`Error::Usage`] when `g` is not a 3x3 convolution with stride and dilation 1, or a
    /// buffer's length differs from the one expected.
    fn new(
        op: &str,
        g: &'a ConvGeometry,
        out_channels: usize,
        lens: &[(&str, usize, usize)],
    ) -> Result<Self> {
        if (g.kernel, g.stride, g.dilation) != (3, 1, 1) {
            return Err(Error::Usage(format!(
                "{op}: {g:?} is not a 3x3 convolution with stride and dilation 1"
            )));
        }
        if let Some((name, found, expected)) =
            lens.iter().find(|(_, found, expected)| found != expected)
        {
            return Err(Error::Usage(format!(
                "{op}: the {name} holds {found} elements, {expected} expected for {g:?}"
            )));
        }
        let (tile_rows, tile_cols) = (g.out_height.div_ceil(2), g.out_width.div_ceil(2));
        Ok(Self {
            g,
            out_channels,
            tile_rows,
            tile_cols,
            chunk: (CHUNK_TILES / (tile_rows * tile_cols).max(1)).max(1),
        })
    }

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

    /// A chunk's padded channels-last input, `[samples, rows, cols, C]`.
    fn padded_input_len(&self) -> usize {
        let (rows, cols) = self.padded();
        self.chunk * rows * cols * self.g.channels
    }

    /// A chunk's transformed input, `[16, tiles, C]`, or products, `[16, tiles, out]`, or
    /// whichever is longer of that and one sample's `height x width` planes channels-last, which
    /// the buffer holds before the transform.
    fn transformed_len(&self, channels: usize, (height, width): (usize, usize)) -> usize {
        let transformed = ENTRIES * entry_stride(self.chunk * self.tiles_per_sample() * channels);
        transformed.max(height * width * channels)
    }

    /// A tile row's partial transform: the input's four padded rows `[4, cols, C]`, or the
    /// output's `[4, 2 tile_cols, out]`.
    fn partial_len(&self) -> usize {
        let (_, cols) = self.padded();
        (4 * cols * self.g.channels).max(4 * self.row_len())
    }

    /// A tile row's row of outputs: `2 tile_cols` positions of `out` channels.
    fn row_len(&self) -> usize {
        2 * self.tile_cols * self.out_channels
    }

    /// The flops of a pass's 16 products over every tile.
    fn products_flops(&self) -> usize {
        let tiles = self.g.batch * self.tiles_per_sample();
        2 * ENTRIES * self.out_channels * self.g.channels * tiles
    }

    /// The runs the samples' chunks take on the thread pool: one when the products' flops
    /// are few, else up to `per_thread` per thread.
    fn parts(&self, per_thread: usize) -> usize {
        let threads = crate::backend::num_threads();
        if threads < 2 || self.products_flops() < PARALLEL_MIN_FLOPS {
            1
        } else {
            self.g.batch.div_ceil(self.chunk).min(per_thread * threads)
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

/// The first four consecutive `len`-long slices of `values`.
#[inline(always)]
fn four(values: &[f32], len: usize) -> [&[f32]; 4] {
    let (first, rest) = values.split_at(len);
    let (second, rest) = rest.split_at(len);
    let (third, rest) = rest.split_at(len);
    [first, second, third, &rest[..len]]
}

/// Planes `x` (`[samples, C, height, width]`) into `out` as `[samples, rows, cols, C]`, each
/// plane `pad` rows and columns in from the top left, zeros around; each sample through
/// `temp` (`height * width * C` elements) as `[height * width, C]`.
#[inline(always)]
fn channels_last(
    x: &[f32],
    (channels, height, width): (usize, usize, usize),
    (out, (rows, cols), pad): (&mut [f32], (usize, usize), usize),
    temp: &mut [f32],
) {
    let plane = height * width;
    let temp = &mut temp[..plane * channels];
    let (row_len, pitch) = (width * channels, cols * channels);
    for (x, out) in x
        .chunks_exact(channels * plane)
        .zip(out.chunks_exact_mut(rows * pitch))
    {
        transpose(x, |c| c * plane, temp, |p| p * channels, (channels, plane));
        for (r, out) in out.chunks_exact_mut(pitch).enumerate() {
            match r.checked_sub(pad).filter(|&y| y < height) {
                Some(y) => {
                    let (left, rest) = out.split_at_mut(pad * channels);
                    let (row, right) = rest.split_at_mut(row_len);
                    left.fill(0.0);
                    row.copy_from_slice(&temp[y * row_len..][..row_len]);
                    right.fill(0.0);
                }
                None => out.fill(0.0),
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

/// The sample and tile row of tile `tile` of a chunk.
#[inline(always)]
fn tile_row_of(plan: &Plan<'_>, tile: usize) -> (usize, usize) {
    let within = tile % plan.tiles_per_sample();
    (tile / plan.tiles_per_sample(), within / plan.tile_cols)
}

/// `B^T d B` of every tile's input patch in the padded channels-last `input`, into
/// `transformed` (`[16, tiles, C]`): down the columns of a tile row's four padded rows at once
/// (into `partial`), then along the rows tile by tile.
#[inline(always)]
fn transform_input(
    plan: &Plan<'_>,
    input: &[f32],
    partial: &mut [f32],
    transformed: &mut [f32],
    tiles: usize,
) {
    let channels = plan.g.channels;
    let (rows, cols) = plan.padded();
    let row_len = cols * channels;
    let partial = &mut partial[..4 * row_len];
    let step = entry_stride(tiles * channels);
    for first_tile in (0..tiles).step_by(plan.tile_cols) {
        let (sample, tile_row) = tile_row_of(plan, first_tile);
        let top = (sample * rows + 2 * tile_row) * row_len;
        let offsets = [0, row_len, 2 * row_len, 3 * row_len];
        input_step(
            four(&input[top..], row_len),
            four_mut(partial, offsets, row_len),
        );
        for a in 0..4 {
            let row = &partial[a * row_len..][..row_len];
            for tile_col in 0..plan.tile_cols {
                let t = four(&row[2 * tile_col * channels..], channels);
                let at = 4 * a * step + (first_tile + tile_col) * channels;
                let offsets = [at, at + step, at + 2 * step, at + 3 * step];
                input_step(t, four_mut(transformed, offsets, channels));
            }
        }
    }
}

/// A buffer of a run's samples, split between runs: read, or written.
trait Samples: Sized {
    fn split(self, at: usize) -> (Self, Self);
}

impl Samples for &[f32] {
    fn split(self, at: usize) -> (Self, Self) {
        self.split_at(at)
    }
}

impl Samples for &mut [f32] {
    fn split(self, at: usize) -> (Self, Self) {
        self.split_at_mut(at)
    }
}

/// What a run has in hand: its samples of the input `x` and of `other` (the output, or the
/// output gradient: `out` channels of `OH x OW` a sample), and its scratch.
struct Share<'a, O> {
    x: &'a [f32],
    other: O,
    scratch: &'a mut [f32],
}

impl<O: Samples> Share<'_, O> {
    /// The first `samples` with the first `scratch` elements of the scratch, and the rest.
    fn split(self, plan: &Plan<'_>, samples: usize, scratch: usize) -> (Self, Self) {
        let (x_left, x_right) = self.x.split_at(samples * plan.input_len());
        let (other_left, other_right) = self.other.split(samples * plan.output_len());
        let (scratch_left, scratch_right) = self.scratch.split_at_mut(scratch);
        (
            Share {
                x: x_left,
                other: other_left,
                scratch: scratch_left,
            },
            Share {
                x: x_right,
                other: other_right,
                scratch: scratch_right,
            },
        )
    }
}

/// One thread's share of a pass: the plan, what the pass reads besides the samples (`pass`),
/// and the samples in hand. Each pass implements [`Vectorizable`] for its own `Job`.
struct Job<'a, P, O> {
    plan: Plan<'a>,
    pass: P,
    share: Share<'a, O>,
}

/// `job` in `parts` runs of whole chunks on the thread pool, each with `scratch_len` elements
/// of scratch.
fn in_parts<'a, P, O>(job: Job<'a, P, O>, parts: usize, scratch_len: usize)
where
    P: Copy + Send,
    O: Samples + Send,
    Job<'a, P, O>: Vectorizable<Output = ()>,
{
    let Job { plan, pass, share } = job;
    let chunks = (share.x.len() / plan.input_len()).div_ceil(plan.chunk);
    if parts < 2 || chunks < 2 {
        vectorized(Job { plan, pass, share });
        return;
    }
    let first = parts / 2;
    let samples = chunks * first / parts * plan.chunk;
    let (left, right) = share.split(&plan, samples, first * scratch_len);
    let part = |share| Job { plan, pass, share };
    let (left, right) = (part(left), part(right));
    join(
        || in_parts(left, first, scratch_len),
        || in_parts(right, parts - first, scratch_len),
    );
}

/// `x`'s samples (a chunk of them) padded channels-last into `input` (through `transformed`,
/// free until then), and `B^T d B` of their tiles into `transformed`: the first step of both
/// passes.
#[inline(always)]
fn transform_samples(
    plan: &Plan<'_>,
    x: &[f32],
    (input, partial, transformed): (&mut [f32], &mut [f32], &mut [f32]),
    tiles: usize,
) {
    let g = plan.g;
    let dims = (g.channels, g.height, g.width);
    channels_last(
        x,
        dims,
        (&mut *input, plan.padded(), g.padding),
        transformed,
    );
    transform_input(plan, input, partial, transformed, tiles);
}

#[cfg(test)]
mod tests {
    /// `(batch, channels, out, height, width, padding)` of the convolutions the tests check:
    /// odd and even planes, planes smaller than a tile, channel counts that are no multiple of
    /// anything, chunks of several samples with a short last one, enough work to share the
    /// threads, and enough filters to share the weight transform (an odd count of outputs).
    pub(super) const SHAPES: [(usize, usize, usize, usize, usize, usize); 8] = [
        (2, 3, 5, 5, 7, 1),
        (3, 4, 2, 6, 6, 0),
        (2, 2, 3, 4, 5, 2),
        (1, 3, 2, 3, 3, 1),
        (9, 5, 7, 4, 4, 1),
        (2, 1, 1, 1, 1, 1),
        (8, 32, 40, 16, 16, 1),
        (2, 64, 71, 4, 4, 1),
    ];

    /// `len` test values, `sin(i * scale)`.
    pub(super) fn values(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * scale).sin()).collect()
    }
}
