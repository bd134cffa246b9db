//! CPU unfolding, one kernel tap and one output row at a time: the window positions a tap reads
//! inside the input form one run, copied (stride 1) or gathered, and the padding around it is
//! zeros. With stride 1 and "same" padding a tap's whole plane is one shifted copy. `col2im`
//! adds each tap's run back in kernel-tap order, so every input element sums its entries in
//! the order `conv.cu` does. Input planes (each sample's channels) run in parts on the thread
//! pool: a plane's columns are its own rows.

use super::{ConvGeometry, ConvKernel, Filters};
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::backend::{Cpu, expect_len};
use crate::error::Result;

/// Convolutions with fewer input or output channels run as im2col and products: their
/// Winograd products are too thin to pay for the transforms. Measured (`cnn_step`): the digits
/// CNN's step takes 0.80-0.84 ms with its 16-to-32-channel layer by Winograd, 0.89-0.91 ms
/// without; with its 1-to-16 layer too, 1.16-1.21 ms (and the larger CNN's 3-to-32 layer
/// 1.5 ms more).
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Where tap `tap` of one dim reads for the outputs of one row: input position
/// `o * stride + offset` for `o` in `valid` (the outputs that read inside the input).
pub(super) struct TapRun {
    offset: isize,
    pub(super) valid: std::ops::Range<usize>,
}

impl TapRun {
    /// The run of tap `tap` along a dim of `size` inputs and `outputs` outputs.
    pub(super) fn new(g: &ConvGeometry, tap: usize, size: usize, outputs: usize) -> Self {
        #[allow(clippy::cast_possible_wrap, reason = "tensor dims fit in isize")]
        let offset = (tap * g.dilation) as isize - g.padding as isize;
        let stride = g.stride;
        // The first output at or past input position 0, and the first past the input's end.
        let first = |bound: isize| -> usize {
            let distance = bound - offset;
            if distance <= 0 {
                0
            } else {
                distance.unsigned_abs().div_ceil(stride)
            }
        };
        #[allow(clippy::cast_possible_wrap, reason = "tensor dims fit in isize")]
        let end = first(size as isize).min(outputs);
        let start = first(0).min(end);
        Self {
            offset,
            valid: start..end,
        }
    }

    /// The input position output `o` of the run reads.
    pub(super) fn input(&self, o: usize, stride: usize) -> usize {
        (o * stride).wrapping_add_signed(self.offset)
    }
}

/// The elements of one input plane in `x` (`[H, W]`) and of its rows in `cols` (`[K K, OH
/// OW]`): sample `n`'s channel `c` is plane `n C + c` of both.
fn plane_lens(g: &ConvGeometry) -> (usize, usize) {
    (g.height * g.width, g.kernel * g.kernel * g.positions())
}

/// `im2col` over the samples in hand.
struct Im2col<'a> {
    g: &'a ConvGeometry,
    x: &'a [f32],
    cols: &'a mut [f32],
}

/// `col2im` over the samples in hand.
struct Col2im<'a> {
    g: &'a ConvGeometry,
    cols: &'a mut [f32],
    x: &'a mut [f32],
}

impl Divisible for Im2col<'_> {
    fn units(&self) -> usize {
        self.x.len().checked_div(plane_lens(self.g).0).unwrap_or(0)
    }
    fn unit_len(&self) -> usize {
        plane_lens(self.g).1
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Im2col { g, x, cols } = self;
        let (x_len, cols_len) = plane_lens(g);
        let (x_left, x_right) = x.split_at(mid * x_len);
        let (cols_left, cols_right) = cols.split_at_mut(mid * cols_len);
        let part = |x, cols| Im2col { g, x, cols };
        (part(x_left, cols_left), part(x_right, cols_right))
    }
}

impl Divisible for Col2im<'_> {
    fn units(&self) -> usize {
        self.x.len().checked_div(plane_lens(self.g).0).unwrap_or(0)
    }
    fn unit_len(&self) -> usize {
        plane_lens(self.g).1
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Col2im { g, cols, x } = self;
        let (x_len, cols_len) = plane_lens(g);
        let (x_left, x_right) = x.split_at_mut(mid * x_len);
        let (cols_left, cols_right) = cols.split_at_mut(mid * cols_len);
        let part = |cols, x| Col2im { g, cols, x };
        (part(cols_left, x_left), part(cols_right, x_right))
    }
}

impl Vectorizable for Im2col<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        im2col(self.g, self.x, self.cols);
    }
}

impl Vectorizable for Col2im<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        col2im(self.g, self.cols, self.x);
    }
}

/// `cols[n, (c K + ky) K + kx, oy OW + ox] = x[n, c, oy s - p + ky d, ox s - p + kx d]`, 0 in
/// the padding.
#[inline(always)]
fn im2col(g: &ConvGeometry, x: &[f32], cols: &mut [f32]) {
    let (k, stride) = (g.kernel, g.stride);
    let (plane, plane_rows) = plane_lens(g);
    for (input, rows) in x.chunks_exact(plane).zip(cols.chunks_exact_mut(plane_rows)) {
        let mut rows = rows.chunks_exact_mut(g.positions());
        for ky in 0..k {
            let down = TapRun::new(g, ky, g.height, g.out_height);
            for kx in 0..k {
                let across = TapRun::new(g, kx, g.width, g.out_width);
                let Some(out) = rows.next() else {
                    return;
                };
                if stride == 1 && g.out_width == g.width {
                    copy_shifted(input, &ShiftedTap::new(&down, &across, g.width), out);
                    continue;
                }
                for (oy, out) in out.chunks_exact_mut(g.out_width).enumerate() {
                    if !down.valid.contains(&oy) {
                        out.fill(0.0);
                        continue;
                    }
                    let row = &input[down.input(oy, stride) * g.width..][..g.width];
                    let valid = across.valid.clone();
                    out[..valid.start].fill(0.0);
                    out[valid.end..].fill(0.0);
                    if stride == 1 {
                        let from = across.input(valid.start, 1);
                        out[valid.clone()].copy_from_slice(&row[from..from + valid.len()]);
                    } else {
                        for ox in valid {
                            out[ox] = row[across.input(ox, stride)];
                        }
                    }
                }
            }
        }
    }
}

/// One tap's row of `im2col` when the stride is 1 and the output as wide as the input: every
/// valid entry is the input plane shifted by one offset, so the valid rows are one copy, and
/// only the padding columns are zeroed afterwards (instead of a copy and fills per row).
#[inline(always)]
fn copy_shifted(input: &[f32], tap: &ShiftedTap, out: &mut [f32]) {
    out[..tap.block.start].fill(0.0);
    out[tap.block.end..].fill(0.0);
    // `out[j] = input[j + shift]` wherever row and column are valid; the entries this copies
    // outside the valid columns are zeroed below.
    if let Some((outputs, from)) = tap.overlap(input.len()) {
        out[outputs.clone()].copy_from_slice(&input[from..from + outputs.len()]);
    }
    tap.zero_padding_columns(out);
}

/// One tap's valid rows when the stride is 1 and the output as wide as the input: the output
/// positions they cover, each reading the input position `shift` further on.
struct ShiftedTap {
    block: std::ops::Range<usize>,
    shift: isize,
    valid_columns: std::ops::Range<usize>,
    width: usize,
}

impl ShiftedTap {
    /// The tap whose runs are `down` and `across` over rows of `width`.
    fn new(down: &TapRun, across: &TapRun, width: usize) -> Self {
        #[allow(clippy::cast_possible_wrap, reason = "tensor dims fit in isize")]
        let shift = down.offset * width as isize + across.offset;
        Self {
            block: down.valid.start * width..down.valid.end * width,
            shift,
            valid_columns: across.valid.clone(),
            width,
        }
    }

    /// The block's output positions whose input lies in a plane of `len`, and the first one's
    /// input; `None` when there are none. Only entries of padding columns fall outside.
    fn overlap(&self, len: usize) -> Option<(std::ops::Range<usize>, usize)> {
        #[allow(clippy::cast_possible_wrap, reason = "tensor dims fit in isize")]
        let (start, end) = (
            (self.block.start as isize).max(-self.shift),
            (self.block.end as isize).min(len as isize - self.shift),
        );
        (start < end).then(|| {
            let (start, end) = (start.unsigned_abs(), end.unsigned_abs());
            (start..end, start.wrapping_add_signed(self.shift))
        })
    }

    /// Zeroes the block's entries of `values` in padding columns, column by column: a padding
    /// column is a few entries per row, too short for a fill call.
    fn zero_padding_columns(&self, values: &mut [f32]) {
        let padding = (0..self.valid_columns.start).chain(self.valid_columns.end..self.width);
        for column in padding {
            let block = values[self.block.clone()].iter_mut();
            for entry in block.skip(column).step_by(self.width) {
                *entry = 0.0;
            }
        }
    }
}

/// The gradient of [`im2col`]: each element of `x` the sum of the entries of `cols` it was
/// copied to, added in kernel-tap order. Entries of `cols` in the padding may be zeroed.
#[inline(always)]
fn col2im(g: &ConvGeometry, cols: &mut [f32], x: &mut [f32]) {
    let (k, stride) = (g.kernel, g.stride);
    let (plane, plane_rows) = plane_lens(g);
    x.fill(0.0);
    for (input, rows) in x
        .chunks_exact_mut(plane)
        .zip(cols.chunks_exact_mut(plane_rows))
    {
        let mut rows = rows.chunks_exact_mut(g.positions());
        for ky in 0..k {
            let down = TapRun::new(g, ky, g.height, g.out_height);
            for kx in 0..k {
                let across = TapRun::new(g, kx, g.width, g.out_width);
                let Some(col) = rows.next() else {
                    return;
                };
                if stride == 1 && g.out_width == g.width {
                    add_shifted(col, &ShiftedTap::new(&down, &across, g.width), input);
                    continue;
                }
                for oy in down.valid.clone() {
                    let col = &col[oy * g.out_width..][..g.out_width];
                    let row = &mut input[down.input(oy, stride) * g.width..][..g.width];
                    let valid = across.valid.clone();
                    if stride == 1 {
                        let from = across.input(valid.start, 1);
                        let targets = &mut row[from..from + valid.len()];
                        for (target, &v) in targets.iter_mut().zip(&col[valid]) {
                            *target += v;
                        }
                    } else {
                        for ox in valid {
                            row[across.input(ox, stride)] += col[ox];
                        }
                    }
                }
            }
        }
    }
}

/// One tap's [`col2im`] when the stride is 1 and the output as wide as the input: the valid
/// rows are one shifted add, `input[j + shift] += col[j]`, after the padding columns' entries
/// in them are zeroed (each then adds 0 to the edge of a neighbouring row, which leaves it as it
/// is: no sum here is -0), instead of an add per row.
#[inline(always)]
fn add_shifted(col: &mut [f32], tap: &ShiftedTap, input: &mut [f32]) {
    tap.zero_padding_columns(col);
    if let Some((outputs, from)) = tap.overlap(input.len()) {
        let targets = &mut input[from..from + outputs.len()];
        for (target, &v) in targets.iter_mut().zip(&col[outputs]) {
            *target += v;
        }
    }
}

impl ConvKernel for Cpu {
    fn im2col(
        &self,
        g: &ConvGeometry,
        (x, first): (&Vec<f32>, usize),
        cols: &mut Vec<f32>,
    ) -> Result<()> {
        let x = &x[g.samples("im2col", first, x.len())?];
        expect_len("im2col", "columns", cols.len(), g.columns_len())?;
        vectorized_in_parts(Im2col { g, x, cols });
        Ok(())
    }

    fn col2im(
        &self,
        g: &ConvGeometry,
        cols: &mut Vec<f32>,
        (x, first): (&mut Vec<f32>, usize),
    ) -> Result<()> {
        let samples = g.samples("col2im", first, x.len())?;
        let x = &mut x[samples];
        expect_len("col2im", "columns", cols.len(), g.columns_len())?;
        vectorized_in_parts(Col2im { g, cols, x });
        Ok(())
    }

    fn prefers_winograd(&self, g: &ConvGeometry, out_channels: usize) -> bool {
        (g.kernel, g.stride, g.dilation) == (3, 1, 1)
            && g.channels.min(out_channels) >= WINOGRAD_MIN_CHANNELS
    }

    fn winograd(
        &self,
        g: &ConvGeometry,
        filters: Filters,
        weight: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        super::winograd::convolve(g, filters, weight, bias.map(Vec::as_slice), x, y)
    }

    fn winograd_weight_gradient(
        &self,
        g: &ConvGeometry,
        out_channels: usize,
        x: &Vec<f32>,
        grad_out: &Vec<f32>,
        grad_w: &mut Vec<f32>,
        beta: f32,
    ) -> Result<()> {
        super::winograd::weight_gradient(g, out_channels, x, grad_out, grad_w, beta)
    }

    fn prefers_depthwise(&self, g: &ConvGeometry, groups: usize, out_channels: usize) -> bool {
        groups > 1 && groups == g.channels && out_channels == g.channels
    }

    fn depthwise(
        &self,
        g: &ConvGeometry,
        weight: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        check_depthwise(g, weight, [x.len(), y.len()])?;
        if bias.is_some_and(|bias| bias.len() != g.channels) {
            return Err(depthwise_mismatch(g, "bias"));
        }
        super::depthwise::forward(g, weight, bias.map(Vec::as_slice), x, y);
        Ok(())
    }

    fn depthwise_input_gradient(
        &self,
        g: &ConvGeometry,
        weight: &Vec<f32>,
        grad_out: &Vec<f32>,
        grad_x: &mut Vec<f32>,
    ) -> Result<()> {
        check_depthwise(g, weight, [grad_x.len(), grad_out.len()])?;
        super::depthwise::input_gradient(g, weight, grad_out, grad_x);
        Ok(())
    }

    fn depthwise_weight_gradient(
        &self,
        g: &ConvGeometry,
        x: &Vec<f32>,
        grad_out: &Vec<f32>,
        grad_w: &mut Vec<f32>,
        beta: f32,
    ) -> Result<()> {
        check_depthwise(g, grad_w, [x.len(), grad_out.len()])?;
        super::depthwise::weight_gradient(g, x, grad_out, grad_w, beta);
        Ok(())
    }
}

/// Checks a depthwise convolution's filters (`[C, 1, K, K]`), input and output lengths
/// against its windows `g`.
fn check_depthwise(g: &ConvGeometry, filters: &[f32], [input, output]: [usize; 2]) -> Result<()> {
    let lens = [
        ("filters", filters.len(), g.channels * g.kernel * g.kernel),
        ("input", input, g.batch * g.sample_len()),
        ("output", output, g.batch * g.channels * g.positions()),
    ];
    match lens.iter().find(|(_, found, expected)| found != expected) {
        Some((name, ..)) => Err(depthwise_mismatch(g, name)),
        None => Ok(()),
    }
}

fn depthwise_mismatch(g: &ConvGeometry, what: &str) -> crate::Error {
    crate::Error::Usage(format!("depthwise {g:?}: the {what} does not match"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;

    /// Element by element: `cols` from the definition, and each `x` element gathering its
    /// entries in kernel-tap order.
    fn reference(g: &ConvGeometry, x: &[f32], cols_grad: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (plane, positions, k) = (g.height * g.width, g.positions(), g.kernel);
        let at = |o: usize, tap: usize| (o * g.stride + tap * g.dilation).checked_sub(g.padding);
        let mut cols = vec![0.0; g.batch * g.rows() * positions];
        let mut grad = vec![0.0; x.len()];
        for n in 0..g.batch {
            for c in 0..g.channels {
                for ky in 0..k {
                    for kx in 0..k {
                        let row = (c * k + ky) * k + kx;
                        for oy in 0..g.out_height {
                            for ox in 0..g.out_width {
                                let entry =
                                    (n * g.rows() + row) * positions + oy * g.out_width + ox;
                                if let (Some(y), Some(xx)) = (at(oy, ky), at(ox, kx))
                                    && y < g.height
                                    && xx < g.width
                                {
                                    let element = (n * g.channels + c) * plane + y * g.width + xx;
                                    cols[entry] = x[element];
                                    grad[element] += cols_grad[entry];
                                }
                            }
                        }
                    }
                }
            }
        }
        (cols, grad)
    }

    /// Small planes, in one part; and one sample of 8 large planes, in parts of planes. Each
    /// unfolds the samples of a buffer holding one more sample before them.
    #[test]
    fn unfolding_matches_the_definition_bit_for_bit() {
        let small = [
            ((5, 7), 3, 1, 1, 1),
            ((6, 6), 3, 2, 1, 1),
            ((7, 5), 2, 3, 0, 1),
            ((9, 8), 3, 1, 2, 2),
            ((8, 8), 5, 2, 2, 1),
            ((4, 4), 1, 1, 0, 1),
            ((6, 5), 3, 1, 0, 1),
            ((5, 4), 3, 1, 2, 1),
        ]
        .map(|case| ([2, 3], case));
        for ([batch, channels], (size, kernel, stride, padding, dilation)) in
            small.into_iter().chain([([1, 8], ((64, 64), 7, 2, 3, 1))])
        {
            let shape = Shape::from([batch, channels, size.0, size.1]);
            let g = ConvGeometry::new("test", &shape, kernel, stride, padding, dilation).unwrap();
            let x: Vec<f32> = (0..shape.numel())
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let len = g.columns_len();
            let cols_grad: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let (expected_cols, expected_grad) = reference(&g, &x, &cols_grad);
            // Sample 0 of the buffers the kernels read and write is another's.
            let mut x_after = vec![f32::NAN; g.sample_len()];
            x_after.extend_from_slice(&x);
            let mut cols = vec![f32::NAN; len];
            Cpu.im2col(&g, (&x_after, 1), &mut cols).unwrap();
            let mut grad = vec![f32::NAN; x_after.len()];
            Cpu.col2im(&g, &mut cols_grad.clone(), (&mut grad, 1))
                .unwrap();
            assert!(grad[..g.sample_len()].iter().all(|v| v.is_nan()));
            let grad = grad.split_off(g.sample_len());
            let case = format!("{size:?} k{kernel} s{stride} p{padding} d{dilation}");
            for (op, found, expected) in [
                ("im2col", &cols, &expected_cols),
                ("col2im", &grad, &expected_grad),
            ] {
                assert_eq!(found.len(), expected.len(), "{op} {case}");
                let differs = |(a, b): (&f32, &f32)| a.to_bits() != b.to_bits();
                if let Some(i) = found.iter().zip(expected).position(differs) {
                    panic!(
                        "{op} {case}: entry {i} is {}, expected {}",
                        found[i], expected[i]
                    );
                }
            }
        }
    }
}
