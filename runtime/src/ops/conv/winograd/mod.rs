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
//! run on one thread, in buffers that stay in its cache. A chunk is whole samples, or a band
//! of a large sample's tile rows. The buffers are channels-last, so that the transforms run
//! along the channels.

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

/// Tiles per chunk: as many whole samples as fit (at least one), or a band of tile rows about
/// this large of a sample larger than [`BAND_MIN_TILES`]. Measured on the larger CNN's
/// convolutions (see `benches/cnn_step.rs`).
const CHUNK_TILES: usize = 128;

/// Samples with more tiles than this run in bands of about [`CHUNK_TILES`] tiles (whole tile
/// rows, at least one), so that a chunk's buffers stay in the cache however large the image.
/// Whole 224x224 samples of 64 channels took 130 MB of buffers a thread, and a pass over a
/// batch of 2 (forward and weight gradient) 192 ms; in bands, 54-65 ms. The larger CNN's
/// 32x32 samples (256 tiles) measured no faster in two bands.
const BAND_MIN_TILES: usize = 2 * CHUNK_TILES;

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
    /// Samples per chunk: one when samples run in bands.
    chunk: usize,
    /// Tile rows per band of a sample: `tile_rows` when samples run whole.
    band_rows: usize,
}

/// A chunk of the samples' tiles: tile rows `first_row..first_row + rows` of each of
/// `samples` samples (all their rows, or one sample's band). Each sample's part of a chunk is
/// a slot of its buffers.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    samples: usize,
    first_row: usize,
    rows: usize,
}

impl Chunk {
    /// The chunk's tiles.
    fn tiles(self, plan: &Plan<'_>) -> usize {
        self.samples * self.rows * plan.tile_cols
    }

    /// A slot's rows of the output plane: two per tile row, short where the plane ends.
    fn out_rows(self, plan: &Plan<'_>) -> usize {
        let out_height = plan.g.out_height;
        (2 * (self.first_row + self.rows)).min(out_height) - 2 * self.first_row
    }

    /// Each tile row of the chunk: its slot, its row in the slot, and its first tile.
    fn tile_rows(self, plan: &Plan<'_>) -> impl Iterator<Item = (usize, usize, usize)> {
        let (rows, cols) = (self.rows, plan.tile_cols);
        (0..self.samples * rows).map(move |at| (at / rows, at % rows, at * cols))
    }
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
        let tiles = tile_rows * tile_cols;
        let (chunk, band_rows) = if tiles > BAND_MIN_TILES {
            (1, (CHUNK_TILES / tile_cols).clamp(1, tile_rows))
        } else {
            ((CHUNK_TILES / tiles.max(1)).max(1), tile_rows)
        };
        Ok(Self {
            g,
            out_channels,
            tile_rows,
            tile_cols,
            chunk,
            band_rows,
        })
    }

    /// The chunks of `samples` samples, in order: `chunk` samples at a time, or band by band.
    fn chunks(&self, samples: usize) -> impl Iterator<Item = (usize, Chunk)> {
        let (per_chunk, band_rows, tile_rows) = (self.chunk, self.band_rows, self.tile_rows);
        let bands = tile_rows.div_ceil(band_rows.max(1)).max(1);
        (0..samples.div_ceil(per_chunk) * bands).map(move |index| {
            let (first_sample, band) = (index / bands * per_chunk, index % bands);
            let first_row = band * band_rows;
            let chunk = Chunk {
                samples: per_chunk.min(samples - first_sample),
                first_row,
                rows: band_rows.min(tile_rows - first_row),
            };
            (first_sample, chunk)
        })
    }

    /// The most tiles a chunk holds.
    fn chunk_tiles(&self) -> usize {
        self.chunk * self.band_rows * self.tile_cols
    }

    /// The length of the zero-padded input rows the tiles read: `2 * tile_cols + 2`. A
    /// chunk's slot holds `2 rows + 2` of them, from the padded plane's row `2 first_row`.
    fn padded_cols(&self) -> usize {
        2 * self.tile_cols + 2
    }

    fn input_len(&self) -> usize {
        self.g.channels * self.g.height * self.g.width
    }

    fn output_len(&self) -> usize {
        self.out_channels * self.g.out_height * self.g.out_width
    }

    /// A chunk's padded channels-last input, `[slots, rows, cols, C]`.
    fn padded_input_len(&self) -> usize {
        self.chunk * (2 * self.band_rows + 2) * self.padded_cols() * self.g.channels
    }

    /// A slot's rows of the input plane, channels-last: the most a slot's padded rows read.
    fn input_rows_len(&self) -> usize {
        let g = self.g;
        (2 * self.band_rows + 2).min(g.height) * g.width * g.channels
    }

    /// A slot's rows of the output plane, channels-last.
    fn output_rows_len(&self) -> usize {
        let g = self.g;
        (2 * self.band_rows).min(g.out_height) * g.out_width * self.out_channels
    }

    /// A chunk's transformed input, `[16, tiles, C]`, or products, `[16, tiles, out]`, or
    /// `before` if longer: what the buffer holds before the transform.
    fn transformed_len(&self, channels: usize, before: usize) -> usize {
        let transformed = ENTRIES * entry_stride(self.chunk_tiles() * channels);
        transformed.max(before)
    }

    /// A tile row's partial transform: the input's four padded rows `[4, cols, C]`, or the
    /// output's `[4, 2 tile_cols, out]`.
    fn partial_len(&self) -> usize {
        (4 * self.padded_cols() * self.g.channels).max(4 * self.row_len())
    }

    /// A tile row's row of outputs: `2 tile_cols` positions of `out` channels.
    fn row_len(&self) -> usize {
        2 * self.tile_cols * self.out_channels
    }

    /// The flops of a pass's 16 products over every tile.
    fn products_flops(&self) -> usize {
        let tiles = self.g.batch * self.tile_rows * self.tile_cols;
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

/// Rows `first..first + rows` of planes `x` (`[samples, C, height, width]`), each placed
/// `pad` rows and columns in from the top left with zeros around, into `out` as
/// `[samples, rows, cols, C]`; each sample's rows that land there through `temp` as
/// `[positions, C]`.
#[inline(always)]
fn channels_last(
    x: &[f32],
    (channels, height, width): (usize, usize, usize),
    (out, (first, rows, cols), pad): (&mut [f32], (usize, usize, usize), usize),
    temp: &mut [f32],
) {
    let plane = height * width;
    let first_y = first.saturating_sub(pad).min(height);
    let positions = ((first + rows).saturating_sub(pad).min(height) - first_y) * width;
    let temp = &mut temp[..positions * channels];
    let (row_len, pitch) = (width * channels, cols * channels);
    for (x, out) in x
        .chunks_exact(channels * plane)
        .zip(out.chunks_exact_mut(rows * pitch))
    {
        let x = &x[first_y * width..];
        transpose(
            x,
            |c| c * plane,
            temp,
            |p| p * channels,
            (channels, positions),
        );
        for (r, out) in out.chunks_exact_mut(pitch).enumerate() {
            match (first + r).checked_sub(pad).filter(|&y| y < height) {
                Some(y) => {
                    let (left, rest) = out.split_at_mut(pad * channels);
                    let (row, right) = rest.split_at_mut(row_len);
                    left.fill(0.0);
                    row.copy_from_slice(&temp[(y - first_y) * row_len..][..row_len]);
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

/// `B^T d B` of every tile's input patch in the padded channels-last `input` of `chunk`, into
/// `transformed` (`[16, tiles, C]`): down the columns of a tile row's four padded rows at once
/// (into `partial`), then along the rows tile by tile.
#[inline(always)]
fn transform_input(
    plan: &Plan<'_>,
    chunk: Chunk,
    input: &[f32],
    partial: &mut [f32],
    transformed: &mut [f32],
) {
    let channels = plan.g.channels;
    let rows = 2 * chunk.rows + 2;
    let row_len = plan.padded_cols() * channels;
    let partial = &mut partial[..4 * row_len];
    let step = entry_stride(chunk.tiles(plan) * channels);
    for (slot, tile_row, first_tile) in chunk.tile_rows(plan) {
        let top = (slot * rows + 2 * tile_row) * row_len;
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

/// `chunk`'s padded input rows of `x` (the chunk's samples) channels-last into `input`
/// (through `transformed`, free until then), and `B^T d B` of its tiles into `transformed`:
/// the first step of both passes.
#[inline(always)]
fn transform_samples(
    plan: &Plan<'_>,
    chunk: Chunk,
    x: &[f32],
    (input, partial, transformed): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let g = plan.g;
    let dims = (g.channels, g.height, g.width);
    let rows = (2 * chunk.first_row, 2 * chunk.rows + 2, plan.padded_cols());
    channels_last(x, dims, (&mut *input, rows, g.padding), transformed);
    transform_input(plan, chunk, input, partial, transformed);
}

#[cfg(test)]
mod tests {
    /// `(batch, channels, out, height, width, padding)` of the convolutions the tests check:
    /// odd and even planes, planes smaller than a tile, channel counts that are no multiple of
    /// anything, chunks of several samples with a short last one, enough work to share the
    /// threads, and enough filters to share the weight transform (an odd count of outputs);
    /// and samples large enough to run in bands, the last one short, on odd and even planes,
    /// on the threads.
    pub(super) const SHAPES: [(usize, usize, usize, usize, usize, usize); 11] = [
        (2, 3, 5, 5, 7, 1),
        (3, 4, 2, 6, 6, 0),
        (2, 2, 3, 4, 5, 2),
        (1, 3, 2, 3, 3, 1),
        (9, 5, 7, 4, 4, 1),
        (2, 1, 1, 1, 1, 1),
        (8, 32, 40, 16, 16, 1),
        (2, 64, 71, 4, 4, 1),
        (1, 3, 4, 40, 37, 1),
        (2, 2, 3, 47, 35, 0),
        (3, 8, 8, 36, 36, 2),
    ];

    /// `len` test values, `sin(i * scale)`.
    pub(super) fn values(len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * scale).sin()).collect()
    }

    /// Chunks take every tile row of every sample once, in order, and no more tiles than the
    /// buffers hold; small samples go whole, several to a chunk, and large ones in bands.
    #[test]
    fn chunks_cover_each_tile_row_once() {
        use super::{BAND_MIN_TILES, CHUNK_TILES, Plan};
        use crate::Shape;
        for (batch, size, banded) in [(5, 8, false), (3, 32, false), (3, 33, true), (2, 224, true)]
        {
            let shape = Shape::from([batch, 2, size, size]);
            let g = crate::ops::conv::ConvGeometry::new("test", &shape, 3, 1, 1, 1).unwrap();
            let plan = Plan::new("test", &g, 4, &[]).unwrap();
            assert_eq!(plan.band_rows < plan.tile_rows, banded, "{shape}");
            assert_eq!(plan.tile_rows * plan.tile_cols > BAND_MIN_TILES, banded);
            let mut next = (0, 0);
            for (first, chunk) in plan.chunks(batch) {
                assert_eq!((first, chunk.first_row), next, "{shape}: {chunk:?}");
                assert!(chunk.rows > 0 && chunk.tiles(&plan) <= plan.chunk_tiles());
                assert!(chunk.tiles(&plan) <= CHUNK_TILES.max(plan.tile_cols) || !banded);
                next = if chunk.first_row + chunk.rows == plan.tile_rows {
                    (first + chunk.samples, 0)
                } else {
                    assert_eq!(chunk.samples, 1, "a band is of one sample");
                    (first, chunk.first_row + chunk.rows)
                };
            }
            assert_eq!(next, (batch, 0), "{shape}: not every tile row");
        }
    }
}
