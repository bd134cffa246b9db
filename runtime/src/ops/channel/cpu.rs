//! CPU kernels of the per-channel ops: sums channel by channel (long runs one after another,
//! short ones position by position over the batch, so that they cost no more per element), and
//! the affine map in memory order.

use super::{ChannelKernel, ChannelLayout};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;

/// Positions (of whole channels) whose sums over the batch [`ChannelSums`] keeps at once:
/// 2 KiB of `f64` per term, in L1 beside the inputs.
const BLOCK: usize = 256;

/// Channels with runs (elements per sample) at least this long are summed (in partial sums
/// that stay in registers) and mapped run by run; shorter ones a block of positions at a
/// time.
const LONG_RUN: usize = 64;

const _: () = assert!(
    LONG_RUN <= BLOCK,
    "a block holds a short run's channel whole"
);

/// What each channel's elements are summed about.
#[derive(Clone, Copy)]
enum Center<'a> {
    /// Zero: plain sums.
    Zero,
    /// The channel's entry of a given vector (its mean).
    Given(&'a [f32]),
    /// The channel's first element, so that sums of squares keep their precision when the
    /// mean is large against the spread (the shifted-data algorithm).
    FirstValue,
}

impl Center<'_> {
    fn of(self, l: &ChannelLayout, x: &[f32], channel: usize) -> f32 {
        match self {
            Self::Zero => 0.0,
            Self::Given(centers) => centers[channel],
            Self::FirstValue => x.get(channel * l.inner).copied().unwrap_or(0.0),
        }
    }
}

/// The second term of a single sum: adding `-0.0` leaves every value as it is, so the
/// compiler drops the additions.
const NO_TERM: f64 = -0.0;

/// Two terms of an element's deviation `d = x - center` and its weight `a`.
trait Terms: Fn(f64, f64) -> [f64; 2] + Copy + Send {}

impl<T: Fn(f64, f64) -> [f64; 2] + Copy + Send> Terms for T {}

/// Each channel's totals of two [`Terms`], in `f64`, for the channels from `first` on; the
/// channels split into parts on the thread pool. A channel's totals are added up in one order
/// whatever the parts: each position's terms over the batch, then the positions in order.
struct ChannelSums<'a, T> {
    l: &'a ChannelLayout,
    x: &'a [f32],
    /// The weights, `x` itself where the terms ignore them.
    a: &'a [f32],
    center: Center<'a>,
    terms: T,
    first: usize,
    totals: &'a mut [[f64; 2]],
}

impl<T: Terms> Divisible for ChannelSums<'_, T> {
    fn units(&self) -> usize {
        self.totals.len()
    }
    fn unit_len(&self) -> usize {
        self.l.per_channel()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (left, right) = self.totals.split_at_mut(mid);
        let first = self.first;
        (
            Self {
                totals: left,
                ..self
            },
            Self {
                totals: right,
                first: first + mid,
                ..self
            },
        )
    }
}

impl<T: Terms> Vectorizable for ChannelSums<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ChannelSums {
            l,
            x,
            a,
            center,
            terms,
            first,
            totals,
        } = self;
        let inner = l.inner.max(1);
        if inner >= LONG_RUN {
            for (c, total) in totals.iter_mut().enumerate() {
                let c = first + c;
                let runs = x.chunks_exact(inner).zip(a.chunks_exact(inner));
                let runs = runs.skip(c).step_by(l.channels);
                *total = run_totals(runs, center.of(l, x, c), terms);
            }
            return;
        }
        // Shorter runs: the positions of as many whole channels as a block holds.
        let sample_len = l.channels * inner;
        let group = BLOCK / inner;
        let mut sums = [[0.0; BLOCK]; 2];
        let mut centers = [0.0; BLOCK];
        for (index, totals) in totals.chunks_mut(group).enumerate() {
            let first = first + index * group;
            let len = totals.len() * inner;
            for (c, centers) in centers[..len].chunks_exact_mut(inner).enumerate() {
                centers.fill(f64::from(center.of(l, x, first + c)));
            }
            let [first_sums, second_sums] = &mut sums;
            let sums = (&mut first_sums[..len], &mut second_sums[..len]);
            sums.0.fill(0.0);
            sums.1.fill(0.0);
            for sample in 0..l.outer {
                let at = sample * sample_len + first * inner;
                let inputs = (&x[at..][..len], &a[at..][..len], &centers[..len]);
                add_terms((&mut *sums.0, &mut *sums.1), inputs, terms);
            }
            let channel_sums = sums.0.chunks_exact(inner).zip(sums.1.chunks_exact(inner));
            for (total, (first_sums, second_sums)) in totals.iter_mut().zip(channel_sums) {
                *total = [
                    interleaved_total(first_sums),
                    interleaved_total(second_sums),
                ];
            }
        }
    }
}

/// The totals of `terms` over one channel's runs (of `x` and `a`) about `center`, in lanes of
/// partial sums carried from run to run (each lane's additions in order), then added up.
#[inline(always)]
fn run_totals<'a>(
    runs: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    center: f32,
    terms: impl Terms,
) -> [f64; 2] {
    const LANES: usize = 8;
    // Two sets of partial sums, for alternate chunks: their additions overlap.
    let mut partial = [[[0.0f64; LANES]; 2]; 2];
    let wide_center = f64::from(center);
    let mut add = |set: usize, x: &[f32; LANES], a: &[f32; LANES]| {
        for lane in 0..LANES {
            let d = f64::from(x[lane]) - wide_center;
            let [first, second] = terms(d, f64::from(a[lane]));
            partial[set][0][lane] += first;
            partial[set][1][lane] += second;
        }
    };
    // A pair of chunks as its two halves (which always fit).
    let halves = |pair: &'a [f32; 2 * LANES]| {
        let (first, second) = pair.split_at(LANES);
        let half = |half: &'a [f32]| half.try_into().unwrap_or(&[0.0; LANES]);
        (half(first), half(second))
    };
    for (x, a) in runs {
        let ((x_pairs, x_rest), (a_pairs, a_rest)) = (x.as_chunks(), a.as_chunks());
        for (x, a) in x_pairs.iter().zip(a_pairs) {
            let ((x0, x1), (a0, a1)) = (halves(x), halves(a));
            add(0, x0, a0);
            add(1, x1, a1);
        }
        // The rest padded with the center (and weight 0), whose terms are zero.
        for (set, (x, a)) in x_rest.chunks(LANES).zip(a_rest.chunks(LANES)).enumerate() {
            let (mut x_chunk, mut a_chunk) = ([center; LANES], [0.0; LANES]);
            x_chunk[..x.len()].copy_from_slice(x);
            a_chunk[..a.len()].copy_from_slice(a);
            add(set, &x_chunk, &a_chunk);
        }
    }
    std::array::from_fn(|k| partial.iter().flat_map(|set| set[k]).sum())
}

/// `sums.k[i] += terms(x[i] - centers[i], a[i])[k]`.
#[inline(always)]
fn add_terms(
    (first, second): (&mut [f64], &mut [f64]),
    (x, a, centers): (&[f32], &[f32], &[f64]),
    terms: impl Terms,
) {
    let sums = first.iter_mut().zip(second.iter_mut());
    let inputs = x.iter().zip(a).zip(centers);
    for ((first, second), ((&x, &a), &center)) in sums.zip(inputs) {
        let [first_term, second_term] = terms(f64::from(x) - center, f64::from(a));
        *first += first_term;
        *second += second_term;
    }
}

/// `Σ values`, in partial sums of interleaved values (an ordered sum's additions wait for each
/// other), then the rest.
#[inline(always)]
fn interleaved_total(values: &[f64]) -> f64 {
    let (chunks, rest) = values.as_chunks::<8>();
    let mut partial = [0.0; 8];
    for chunk in chunks {
        for (partial, value) in partial.iter_mut().zip(chunk) {
            *partial += value;
        }
    }
    partial.iter().sum::<f64>() + rest.iter().sum::<f64>()
}

/// Each channel's totals of `terms` over `x` (and the weights `a`) about `center`.
fn channel_totals(
    l: &ChannelLayout,
    (x, a): (&[f32], &[f32]),
    center: Center<'_>,
    terms: impl Terms,
) -> smallvec::SmallVec<[[f64; 2]; 256]> {
    let mut totals = smallvec::SmallVec::from_elem([0.0; 2], l.channels);
    if l.is_empty() {
        return totals;
    }
    vectorized_in_parts(ChannelSums {
        l,
        x,
        a,
        center,
        terms,
        first: 0,
        totals: &mut totals,
    });
    totals
}

/// Writes `value(channel, totals)` of each channel's totals to `out`.
fn write(out: &mut [f32], totals: &[[f64; 2]], value: impl Fn(usize, [f64; 2]) -> f64) {
    for (c, (out, &total)) in out.iter_mut().zip(totals).enumerate() {
        *out = value(c, total) as f32;
    }
}

/// `out = x * scale[c] + shift[c]` (plus `(y - center[c]) * coef[c]`), sample by sample, so
/// that it runs in parts.
struct ChannelAffine<'a> {
    l: &'a ChannelLayout,
    x: &'a [f32],
    scale: &'a [f32],
    shift: &'a [f32],
    extra: Option<(&'a [f32], &'a [f32], &'a [f32])>,
    out: &'a mut [f32],
}

impl Divisible for ChannelAffine<'_> {
    fn units(&self) -> usize {
        self.out.len() / (self.l.channels * self.l.inner).max(1)
    }
    fn unit_len(&self) -> usize {
        self.l.channels * self.l.inner
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let ChannelAffine {
            l,
            x,
            scale,
            shift,
            extra,
            out,
        } = self;
        let at = mid * l.channels * l.inner;
        let (x_left, x_right) = x.split_at(at);
        let (out_left, out_right) = out.split_at_mut(at);
        let (extra_left, extra_right) = extra
            .map(|(y, center, coef)| {
                let (left, right) = y.split_at(at);
                ((left, center, coef), (right, center, coef))
            })
            .unzip();
        let part = |x, extra, out| ChannelAffine {
            l,
            x,
            scale,
            shift,
            extra,
            out,
        };
        (
            part(x_left, extra_left, out_left),
            part(x_right, extra_right, out_right),
        )
    }
}

impl Vectorizable for ChannelAffine<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ChannelAffine {
            l,
            x,
            scale,
            shift,
            extra,
            out,
        } = self;
        if l.inner < LONG_RUN {
            return affine_short_runs(l, x, (scale, shift), extra, out);
        }
        let runs = out.chunks_exact_mut(l.inner).zip(x.chunks_exact(l.inner));
        for (index, (out, x)) in runs.enumerate() {
            let c = index % l.channels;
            let (scale, shift) = (scale[c], shift[c]);
            match extra {
                None => {
                    for (out, &x) in out.iter_mut().zip(x) {
                        *out = x * scale + shift;
                    }
                }
                Some((y, center, coef)) => {
                    let y = &y[index * l.inner..(index + 1) * l.inner];
                    let (center, coef) = (center[c], coef[c]);
                    for ((out, &x), &y) in out.iter_mut().zip(x).zip(y) {
                        *out = x * scale + shift + (y - center) * coef;
                    }
                }
            }
        }
    }
}

/// [`ChannelAffine`] of runs shorter than [`LONG_RUN`]: each channel's coefficients spread
/// over its positions, for as many whole channels as a block holds, then one loop over those
/// positions per sample.
#[inline(always)]
fn affine_short_runs(
    l: &ChannelLayout,
    x: &[f32],
    (scale, shift): (&[f32], &[f32]),
    extra: Option<(&[f32], &[f32], &[f32])>,
    out: &mut [f32],
) {
    let inner = l.inner.max(1);
    let sample_len = l.channels * inner;
    let samples = out.len() / sample_len.max(1);
    let group = BLOCK / inner;
    let mut spread = [[0.0; BLOCK]; 4];
    for start in (0..l.channels).step_by(group) {
        let len = group.min(l.channels - start) * inner;
        let [scale_at, shift_at, center_at, coef_at] = &mut spread;
        let spread_out = |positions: &mut [f32; BLOCK], values: &[f32]| {
            let runs = positions[..len].chunks_exact_mut(inner);
            for (run, &value) in runs.zip(&values[start..]) {
                run.fill(value);
            }
        };
        spread_out(scale_at, scale);
        spread_out(shift_at, shift);
        if let Some((_, center, coef)) = extra {
            spread_out(center_at, center);
            spread_out(coef_at, coef);
        }
        let coefficients = scale_at[..len].iter().zip(&shift_at[..len]);
        let centered = center_at[..len].iter().zip(&coef_at[..len]);
        for sample in 0..samples {
            let at = sample * sample_len + start * inner;
            let (out, x) = (&mut out[at..at + len], &x[at..at + len]);
            let maps = out.iter_mut().zip(x).zip(coefficients.clone());
            match extra {
                None => {
                    for ((out, &x), (&scale, &shift)) in maps {
                        *out = x * scale + shift;
                    }
                }
                Some((y, ..)) => {
                    let extra = y[at..at + len].iter().zip(centered.clone());
                    for (((out, &x), (&scale, &shift)), (&y, (&center, &coef))) in maps.zip(extra) {
                        *out = x * scale + shift + (y - center) * coef;
                    }
                }
            }
        }
    }
}

impl ChannelKernel for Cpu {
    fn channel_sum(
        &self,
        l: &ChannelLayout,
        x: &Vec<f32>,
        centered: Option<(Option<&Vec<f32>>, &Vec<f32>)>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let totals = match centered {
            None => channel_totals(l, (x, x), Center::Zero, |d, _| [d, NO_TERM]),
            Some((None, mean)) => {
                channel_totals(l, (x, x), Center::Given(mean), |d, _| [d * d, NO_TERM])
            }
            Some((Some(a), mean)) => {
                channel_totals(l, (x, a), Center::Given(mean), |d, a| [a * d, NO_TERM])
            }
        };
        write(out, &totals, |_, [total, _]| total);
        Ok(())
    }

    fn channel_sum_and_covariance(
        &self,
        l: &ChannelLayout,
        x: &Vec<f32>,
        a: &Vec<f32>,
        mean: &Vec<f32>,
        sum: &mut Vec<f32>,
        covariance: &mut Vec<f32>,
    ) -> Result<()> {
        let totals = channel_totals(l, (x, a), Center::Given(mean), |d, a| [a * d, a]);
        write(covariance, &totals, |_, [covariance, _]| covariance);
        write(sum, &totals, |_, [_, sum]| sum);
        Ok(())
    }

    fn channel_mean_and_variance(
        &self,
        l: &ChannelLayout,
        x: &Vec<f32>,
        mean: &mut Vec<f32>,
        variance: &mut Vec<f32>,
    ) -> Result<()> {
        let totals = channel_totals(l, (x, x), Center::FirstValue, |d, _| [d, d * d]);
        #[allow(clippy::cast_precision_loss, reason = "a count, exact below 2^53")]
        let count = l.per_channel() as f64;
        let first = |c| f64::from(Center::FirstValue.of(l, x, c));
        write(mean, &totals, |c, [shifted, _]| first(c) + shifted / count);
        // The mean squared deviation from the channel's first value, less the squared
        // deviation of the mean from it: never below zero but for rounding.
        write(variance, &totals, |_, [shifted, squares]| {
            ((squares - shifted * shifted / count) / count).max(0.0)
        });
        Ok(())
    }

    fn channel_affine(
        &self,
        l: &ChannelLayout,
        x: &Vec<f32>,
        scale: &Vec<f32>,
        shift: &Vec<f32>,
        extra: Option<(&Vec<f32>, &Vec<f32>, &Vec<f32>)>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if l.is_empty() {
            return Ok(());
        }
        vectorized_in_parts(ChannelAffine {
            l,
            x,
            scale,
            shift,
            extra: extra
                .map(|(y, center, coef)| (y.as_slice(), center.as_slice(), coef.as_slice())),
            out,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large enough to run in parts on two threads, with runs mapped position by position
    /// (1 to 50 elements) and run by run: every element is its formula, bit for bit, with
    /// and without the extra term.
    #[test]
    fn the_affine_map_in_parts_is_its_formula() {
        for inner in [1, 3, 16, 50, 16 * 16] {
            let l = ChannelLayout {
                outer: (1 << 18) / (32 * inner),
                channels: 32,
                inner,
            };
            let len = l.len();
            let values = |seed: usize| -> Vec<f32> {
                (0..len)
                    .map(|v| ((v * seed) % 997) as f32 * 0.01 - 5.0)
                    .collect()
            };
            let (x, y) = (values(7919), values(104_729));
            let vector = |seed: usize| -> Vec<f32> {
                (0..l.channels)
                    .map(|c| ((c * seed) % 11) as f32 * 0.3 - 1.5)
                    .collect()
            };
            let (scale, shift, center, coef) = (vector(3), vector(5), vector(7), vector(13));
            for extra in [None, Some((&y, &center, &coef))] {
                let mut out = vec![f32::NAN; len];
                Cpu.channel_affine(&l, &x, &scale, &shift, extra, &mut out)
                    .unwrap();
                for (i, &found) in out.iter().enumerate() {
                    let c = i / inner % l.channels;
                    let mut expected = x[i] * scale[c] + shift[c];
                    if let Some((y, center, coef)) = extra {
                        expected = x[i] * scale[c] + shift[c] + (y[i] - center[c]) * coef[c];
                    }
                    assert_eq!(
                        found,
                        expected,
                        "inner {inner}, element {i}, extra {}",
                        extra.is_some()
                    );
                }
            }
        }
    }

    /// Channel `c` of `x` alone: a `[outer, 1, inner]` tensor.
    fn one_channel(l: &ChannelLayout, x: &[f32], c: usize) -> Vec<f32> {
        let runs = x.chunks_exact(l.inner).skip(c).step_by(l.channels);
        runs.flatten().copied().collect()
    }

    /// Each channel's sums (plain, squares about a mean, and a product about a mean) in
    /// tensors large enough to run in parts: bit for bit what the channel alone gives (so
    /// whatever the parts), and close to a plain `f64` sum. Runs summed position by position
    /// (1 to 50 elements, the last filling a block partly) and run by run (with a partial
    /// chunk of lanes).
    #[test]
    fn channel_sums_do_not_depend_on_the_parts() {
        for inner in [1, 3, 16, 50, 13 * 13, 300] {
            let l = ChannelLayout {
                outer: (1 << 18) / (32 * inner),
                channels: 32,
                inner,
            };
            let len = l.len();
            let x: Vec<f32> = (0..len).map(|v| ((v * 7919) % 997) as f32 * 0.01).collect();
            let a: Vec<f32> = (0..len).map(|v| ((v * 31) % 101) as f32 * 0.1).collect();
            let mean: Vec<f32> = (0..l.channels).map(|c| c as f32 * 0.25).collect();
            for centered in [None, Some((None, &mean)), Some((Some(&a), &mean))] {
                let mut parts = vec![f32::NAN; l.channels];
                Cpu.channel_sum(&l, &x, centered, &mut parts).unwrap();
                for (c, &found) in parts.iter().enumerate() {
                    let alone_layout = ChannelLayout { channels: 1, ..l };
                    let (alone_x, alone_a) = (one_channel(&l, &x, c), one_channel(&l, &a, c));
                    let alone_mean = vec![mean[c]];
                    let alone_centered = centered.map(|(a, _)| (a.map(|_| &alone_a), &alone_mean));
                    let mut alone = vec![f32::NAN];
                    Cpu.channel_sum(&alone_layout, &alone_x, alone_centered, &mut alone)
                        .unwrap();
                    assert_eq!(found, alone[0], "inner {inner}, channel {c}: {centered:?}");
                    let expected: f64 = (0..l.per_channel())
                        .map(|i| {
                            let v = f64::from(alone_x[i]);
                            match centered {
                                None => v,
                                Some((None, mean)) => (v - f64::from(mean[c])).powi(2),
                                Some((Some(_), mean)) => {
                                    f64::from(alone_a[i]) * (v - f64::from(mean[c]))
                                }
                            }
                        })
                        .sum();
                    assert!(
                        (f64::from(found) - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                        "inner {inner}, channel {c}: {found} vs {expected}"
                    );
                }
            }
        }
    }

    /// The one-pass mean and variance match two `f64` passes to `f32` rounding, with a mean
    /// far larger than the spread, and on constant channels (variance 0, not below).
    #[test]
    fn the_one_pass_variance_keeps_its_precision() {
        let l = ChannelLayout {
            outer: 32,
            channels: 3,
            inner: 7 * 7,
        };
        let x: Vec<f32> = (0..l.len())
            .map(|v| match v / l.inner % l.channels {
                0 => ((v * 7919) % 997) as f32 * 0.01 - 5.0,
                1 => 1.0e4 + ((v * 31) % 101) as f32 * 0.01,
                _ => 3.7,
            })
            .collect();
        let (mut mean, mut variance) = (vec![f32::NAN; 3], vec![f32::NAN; 3]);
        Cpu.channel_mean_and_variance(&l, &x, &mut mean, &mut variance)
            .unwrap();
        for c in 0..l.channels {
            let values: Vec<f64> = one_channel(&l, &x, c).into_iter().map(f64::from).collect();
            let count = values.len() as f64;
            let expected_mean = values.iter().sum::<f64>() / count;
            let expected_variance = values
                .iter()
                .map(|v| (v - expected_mean).powi(2))
                .sum::<f64>()
                / count;
            assert_eq!(mean[c], expected_mean as f32, "channel {c}");
            let error = (f64::from(variance[c]) - expected_variance).abs();
            assert!(
                error <= 1e-6 * expected_variance,
                "channel {c}: {variance:?}"
            );
        }
        assert_eq!(variance[2], 0.0);
    }

    /// The one-pass sum and covariance of batch normalisation's backward are the two separate
    /// sums, bit for bit (a run length that leaves a partial chunk of lanes, in parts).
    #[test]
    fn sum_and_covariance_are_the_separate_sums() {
        let l = ChannelLayout {
            outer: 64,
            channels: 24,
            inner: 13 * 13,
        };
        let len = l.outer * l.channels * l.inner;
        let x: Vec<f32> = (0..len).map(|v| ((v * 7919) % 997) as f32 * 0.01).collect();
        let a: Vec<f32> = (0..len)
            .map(|v| ((v * 31) % 101) as f32 * 0.1 - 5.0)
            .collect();
        let mean: Vec<f32> = (0..l.channels).map(|c| c as f32 * 0.25).collect();
        let (mut sum, mut covariance) = (vec![f32::NAN; l.channels], vec![f32::NAN; l.channels]);
        Cpu.channel_sum_and_covariance(&l, &x, &a, &mean, &mut sum, &mut covariance)
            .unwrap();
        let mut expected = vec![f32::NAN; l.channels];
        Cpu.channel_sum(&l, &a, None, &mut expected).unwrap();
        assert_eq!(sum, expected);
        Cpu.channel_sum(&l, &x, Some((Some(&a), &mean)), &mut expected)
            .unwrap();
        assert_eq!(covariance, expected);
    }
}
