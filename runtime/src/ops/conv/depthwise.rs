//! Depthwise convolutions on the CPU (as many groups as input and output channels, weight
//! `[C, 1, K, K]`): each plane convolved with its channel's filter directly, tap by tap and
//! row by row, where im2col would copy the input `K * K` times and the products multiply
//! one-row matrices. With stride 1 a tap's row is a contiguous run, and its sums vectorise.
//! Planes (forward and input gradient) or channels (weight gradient) run in parts on the
//! thread pool; each output sums its terms in kernel-tap order.

use super::ConvGeometry;
use super::cpu::TapRun;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::ops::math;

/// Plane `plane`'s filter in `weight` (`[C, 1, K, K]`): its channel's.
fn filter<'a>(g: &ConvGeometry, weight: &'a [f32], plane: usize) -> &'a [f32] {
    let taps = g.kernel * g.kernel;
    &weight[plane % g.channels * taps..][..taps]
}

/// Each tap that reads inside the input, with its runs down and across:
/// `(ky * K + kx, down, across)`.
fn taps(g: &ConvGeometry) -> impl Iterator<Item = (usize, TapRun, TapRun)> + '_ {
    (0..g.kernel * g.kernel).filter_map(|tap| {
        let (ky, kx) = (tap / g.kernel, tap % g.kernel);
        let down = TapRun::new(g, ky, g.height, g.out_height);
        let across = TapRun::new(g, kx, g.width, g.out_width);
        (!down.valid.is_empty() && !across.valid.is_empty()).then_some((tap, down, across))
    })
}

/// A pass over whole planes: the planes of `input` (`[planes, ..]`) and of `output` in hand,
/// the first of them plane `first` of the batch.
struct Planes<'a, P> {
    g: &'a ConvGeometry,
    pass: P,
    input: &'a [f32],
    output: &'a mut [f32],
    first: usize,
}

/// What a pass over planes computes from one plane of its input into one of its output.
trait PlanePass: Copy + Send {
    /// The input's and the output's plane lengths.
    fn lens(g: &ConvGeometry) -> (usize, usize);
    fn plane(self, g: &ConvGeometry, plane: usize, input: &[f32], output: &mut [f32]);
}

impl<P: PlanePass> Divisible for Planes<'_, P> {
    fn units(&self) -> usize {
        self.output.len() / P::lens(self.g).1.max(1)
    }
    fn unit_len(&self) -> usize {
        let (input, output) = P::lens(self.g);
        input.max(output) * self.g.kernel * self.g.kernel
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Planes {
            g,
            pass,
            input,
            output,
            first,
        } = self;
        let (input_len, output_len) = P::lens(g);
        let (input_left, input_right) = input.split_at(mid * input_len);
        let (output_left, output_right) = output.split_at_mut(mid * output_len);
        let part = |input, output, first| Planes {
            g,
            pass,
            input,
            output,
            first,
        };
        (
            part(input_left, output_left, first),
            part(input_right, output_right, first + mid),
        )
    }
}

impl<P: PlanePass> Vectorizable for Planes<'_, P> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (input_len, output_len) = P::lens(self.g);
        let planes = self.input.chunks_exact(input_len.max(1));
        let planes = planes.zip(self.output.chunks_exact_mut(output_len.max(1)));
        for (index, (input, output)) in planes.enumerate() {
            self.pass.plane(self.g, self.first + index, input, output);
        }
    }
}

/// The forward pass: `y = bias + Σ_taps w[tap] x[shifted]`, from `x`'s planes into `y`'s.
#[derive(Clone, Copy)]
struct Forward<'a> {
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl PlanePass for Forward<'_> {
    fn lens(g: &ConvGeometry) -> (usize, usize) {
        (g.height * g.width, g.positions())
    }

    #[inline(always)]
    fn plane(self, g: &ConvGeometry, plane: usize, x: &[f32], y: &mut [f32]) {
        y.fill(self.bias.map_or(0.0, |bias| bias[plane % g.channels]));
        let filter = filter(g, self.weight, plane);
        for (tap, down, across) in taps(g) {
            let w = filter[tap];
            for oy in down.valid.clone() {
                let x = &x[down.input(oy, g.stride) * g.width..][..g.width];
                let y = &mut y[oy * g.out_width..][across.valid.clone()];
                if g.stride == 1 {
                    let x = &x[across.input(across.valid.start, 1)..];
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y += w * x;
                    }
                } else {
                    for (y, ox) in y.iter_mut().zip(across.valid.clone()) {
                        *y += w * x[across.input(ox, g.stride)];
                    }
                }
            }
        }
    }
}

/// The input gradient: each output gradient times its tap's weight, added to the input it
/// read, from `grad_out`'s planes into `grad_x`'s.
#[derive(Clone, Copy)]
struct InputGradient<'a> {
    weight: &'a [f32],
}

impl PlanePass for InputGradient<'_> {
    fn lens(g: &ConvGeometry) -> (usize, usize) {
        (g.positions(), g.height * g.width)
    }

    #[inline(always)]
    fn plane(self, g: &ConvGeometry, plane: usize, dy: &[f32], dx: &mut [f32]) {
        dx.fill(0.0);
        let filter = filter(g, self.weight, plane);
        for (tap, down, across) in taps(g) {
            let w = filter[tap];
            for oy in down.valid.clone() {
                let dy = &dy[oy * g.out_width..][across.valid.clone()];
                let dx = &mut dx[down.input(oy, g.stride) * g.width..][..g.width];
                if g.stride == 1 {
                    let dx = &mut dx[across.input(across.valid.start, 1)..];
                    for (dx, &dy) in dx.iter_mut().zip(dy) {
                        *dx += w * dy;
                    }
                } else {
                    for (&dy, ox) in dy.iter().zip(across.valid.clone()) {
                        dx[across.input(ox, g.stride)] += w * dy;
                    }
                }
            }
        }
    }
}

/// The weight gradient of channels `first..` (as many as `grad_w` holds filters):
/// `dw[c, tap] = Σ_n Σ_positions dy[n, c] x[n, c, shifted]` (in `f64`), `+ beta dw[c, tap]`.
struct WeightGradient<'a> {
    g: &'a ConvGeometry,
    x: &'a [f32],
    dy: &'a [f32],
    grad_w: &'a mut [f32],
    beta: f32,
    first: usize,
}

impl Divisible for WeightGradient<'_> {
    fn units(&self) -> usize {
        self.grad_w.len() / (self.g.kernel * self.g.kernel).max(1)
    }
    fn unit_len(&self) -> usize {
        self.g.batch * self.g.positions() * self.g.kernel * self.g.kernel
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (left, right) = self
            .grad_w
            .split_at_mut(mid * self.g.kernel * self.g.kernel);
        let first = self.first;
        (
            Self {
                grad_w: left,
                ..self
            },
            Self {
                grad_w: right,
                first: first + mid,
                ..self
            },
        )
    }
}

impl Vectorizable for WeightGradient<'_> {
    type Output = ();
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation, reason = "the sums back in f32")]
    fn run(self) {
        let WeightGradient {
            g,
            x,
            dy,
            grad_w,
            beta,
            first,
        } = self;
        let (plane, positions) = (g.height * g.width, g.positions());
        let taps_len = g.kernel * g.kernel;
        for (index, filter) in grad_w.chunks_exact_mut(taps_len.max(1)).enumerate() {
            let c = first + index;
            for value in filter.iter_mut() {
                *value = if beta == 0.0 { 0.0 } else { beta * *value };
            }
            for (tap, down, across) in taps(g) {
                let mut total = 0.0;
                for n in 0..g.batch {
                    let x = &x[(n * g.channels + c) * plane..][..plane];
                    let dy = &dy[(n * g.channels + c) * positions..][..positions];
                    for oy in down.valid.clone() {
                        let x = &x[down.input(oy, g.stride) * g.width..][..g.width];
                        let dy = &dy[oy * g.out_width..][across.valid.clone()];
                        total += if g.stride == 1 {
                            let from = across.input(across.valid.start, 1);
                            math::dot(dy, &x[from..from + dy.len()])
                        } else {
                            let pairs = dy.iter().zip(across.valid.clone());
                            pairs
                                .map(|(&dy, ox)| {
                                    f64::from(dy) * f64::from(x[across.input(ox, g.stride)])
                                })
                                .sum()
                        };
                    }
                }
                filter[tap] += total as f32;
            }
        }
    }
}

/// `y = conv(x) + bias` of the depthwise convolution of windows `g` (`y` `[N, C, OH, OW]`).
pub(super) fn forward(
    g: &ConvGeometry,
    weight: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
) {
    vectorized_in_parts(Planes {
        g,
        pass: Forward { weight, bias },
        input: x,
        output: y,
        first: 0,
    });
}

/// The input gradient `grad_x` (`[N, C, H, W]`, every element written) of the depthwise
/// convolution of windows `g` for the output gradient `grad_out`.
pub(super) fn input_gradient(
    g: &ConvGeometry,
    weight: &[f32],
    grad_out: &[f32],
    grad_x: &mut [f32],
) {
    vectorized_in_parts(Planes {
        g,
        pass: InputGradient { weight },
        input: grad_out,
        output: grad_x,
        first: 0,
    });
}

/// `grad_w = Σ_n dY[n] ⋆ x[n] + beta grad_w` (`[C, 1, K, K]`) of the depthwise convolution of
/// windows `g`.
pub(super) fn weight_gradient(
    g: &ConvGeometry,
    x: &[f32],
    grad_out: &[f32],
    grad_w: &mut [f32],
    beta: f32,
) {
    vectorized_in_parts(WeightGradient {
        g,
        x,
        dy: grad_out,
        grad_w,
        beta,
        first: 0,
    });
}
