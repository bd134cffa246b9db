//! CPU kernels of the per-channel ops: one pass in memory order, each channel's contiguous
//! runs (`inner` elements per sample) handled together.

use super::{ChannelKernel, ChannelLayout};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized, vectorized_in_parts};
use crate::error::Result;

/// The sum of `term(x[i], y[i])` in eight interleaved partial sums, which the compiler
/// vectorises (one running sum cannot be: its additions are ordered).
#[inline(always)]
fn lane_sum(x: &[f32], y: &[f32], term: impl Fn(f32, f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let (x_rest, y_rest) = (xs.remainder(), ys.remainder());
    for (x, y) in xs.zip(ys) {
        for ((sum, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *sum += term(x, y);
        }
    }
    for ((sum, &x), &y) in lanes.iter_mut().zip(x_rest).zip(y_rest) {
        *sum += term(x, y);
    }
    lanes.iter().sum()
}

/// Per-channel sums of a whole tensor, in one part (so the sums add in one fixed order), under
/// the CPU's widest vectors.
struct ChannelSum<'a> {
    l: &'a ChannelLayout,
    x: &'a [f32],
    centered: Option<(Option<&'a [f32]>, &'a [f32])>,
    out: &'a mut [f32],
}

impl Vectorizable for ChannelSum<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ChannelSum {
            l,
            x,
            centered,
            out,
        } = self;
        let mut sums = smallvec::SmallVec::<[f64; 256]>::from_elem(0.0, l.channels);
        let runs = x.chunks_exact(l.inner.max(1)).take(l.outer * l.channels);
        for (index, run) in runs.enumerate() {
            let c = index % l.channels;
            let start = index * l.inner;
            sums[c] += match centered {
                None => lane_sum(run, run, |v, _| f64::from(v)),
                Some((None, mean)) => {
                    let mean = f64::from(mean[c]);
                    lane_sum(run, run, |v, _| (f64::from(v) - mean).powi(2))
                }
                Some((Some(a), mean)) => {
                    let mean = f64::from(mean[c]);
                    let a = &a[start..start + run.len()];
                    lane_sum(run, a, |v, a| f64::from(a) * (f64::from(v) - mean))
                }
            };
        }
        for (out, sum) in out.iter_mut().zip(sums) {
            *out = sum as f32;
        }
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

impl ChannelKernel for Cpu {
    fn channel_sum(
        &self,
        l: &ChannelLayout,
        x: &Vec<f32>,
        centered: Option<(Option<&Vec<f32>>, &Vec<f32>)>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        vectorized(ChannelSum {
            l,
            x,
            centered: centered.map(|(a, mean)| (a.map(Vec::as_slice), mean.as_slice())),
            out,
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

    /// Large enough to run in parts on two threads: the parts give what one part gives, bit
    /// for bit, with and without the extra term.
    #[test]
    fn the_affine_map_in_parts_matches_one_part() {
        let l = ChannelLayout {
            outer: 64,
            channels: 32,
            inner: 16 * 16,
        };
        let len = l.outer * l.channels * l.inner;
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
            let mut parts = vec![f32::NAN; len];
            Cpu.channel_affine(&l, &x, &scale, &shift, extra, &mut parts)
                .unwrap();
            let mut one = vec![f32::NAN; len];
            ChannelAffine {
                l: &l,
                x: &x,
                scale: &scale,
                shift: &shift,
                extra: extra.map(|(y, c, k)| (y.as_slice(), c.as_slice(), k.as_slice())),
                out: &mut one,
            }
            .run();
            assert!(parts == one, "extra: {}", extra.is_some());
        }
    }
}
