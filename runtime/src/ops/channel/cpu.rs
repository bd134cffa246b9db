//! CPU kernels of the per-channel ops: one pass in memory order, each channel's contiguous
//! runs (`inner` elements per sample) handled together.

use std::cell::RefCell;

use super::{ChannelKernel, ChannelLayout};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;
use crate::ops::math;

/// The sum of `term(x[i], y[i])`, the values widened to `f64`, in the [`math::lane_partials`]
/// (one running sum would not vectorise: its additions are ordered), the last partial chunk
/// added into the lanes too.
#[inline(always)]
fn lane_sum(x: &[f32], y: &[f32], term: impl Fn(f64, f64) -> f64) -> f64 {
    let mut lanes = math::lane_partials(x, y, &term);
    let whole = math::whole_lanes(x, y);
    for ((sum, &x), &y) in lanes.iter_mut().zip(&x[whole..]).zip(&y[whole..]) {
        *sum += term(f64::from(x), f64::from(y));
    }
    lanes.iter().sum()
}

/// The sum of each run (one channel of one sample: `inner` elements), from run `first` on;
/// runs split into parts on the thread pool. Each run's sum is one [`lane_sum`], so the
/// channels' totals, added run by run in order, do not depend on the parts.
struct RunSums<'a> {
    l: &'a ChannelLayout,
    x: &'a [f32],
    /// `Σ (x - mean[c])²`, or with `a` `Σ a (x - mean[c])`, instead of `Σ x`.
    centered: Option<(Option<&'a [f32]>, &'a [f32])>,
    sums: &'a mut [f64],
    first: usize,
}

impl Divisible for RunSums<'_> {
    fn units(&self) -> usize {
        self.sums.len()
    }
    fn unit_len(&self) -> usize {
        self.l.inner
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let RunSums {
            l,
            x,
            centered,
            sums,
            first,
        } = self;
        let at = (mid * l.inner).min(x.len());
        let (x_left, x_right) = x.split_at(at);
        let (sums_left, sums_right) = sums.split_at_mut(mid);
        let (centered_left, centered_right) = match centered {
            Some((Some(a), mean)) => {
                let (a_left, a_right) = a.split_at(at);
                (Some((Some(a_left), mean)), Some((Some(a_right), mean)))
            }
            other => (other, other),
        };
        let part = |x, centered, sums, first| RunSums {
            l,
            x,
            centered,
            sums,
            first,
        };
        (
            part(x_left, centered_left, sums_left, first),
            part(x_right, centered_right, sums_right, first + mid),
        )
    }
}

impl Vectorizable for RunSums<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let RunSums {
            l,
            x,
            centered,
            sums,
            first,
        } = self;
        let runs = x.chunks_exact(l.inner.max(1)).zip(sums.iter_mut());
        for (i, (run, sum)) in runs.enumerate() {
            let c = (first + i) % l.channels;
            *sum = match centered {
                None => lane_sum(run, run, |v, _| v),
                Some((None, mean)) => {
                    let mean = f64::from(mean[c]);
                    lane_sum(run, run, |v, _| (v - mean).powi(2))
                }
                Some((Some(a), mean)) => {
                    let mean = f64::from(mean[c]);
                    let a = &a[i * l.inner..][..run.len()];
                    lane_sum(run, a, |v, a| a * (v - mean))
                }
            };
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

thread_local! {
    /// The run sums of this thread's last `channel_sum`, kept so the next allocates nothing.
    static RUN_SUMS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// `f` of `len` zeros in this thread's kept buffer (a fresh one for a call nested in another,
/// as a thread waiting for its parts may run another task).
fn with_run_sums<T>(len: usize, f: impl FnOnce(&mut [f64]) -> T) -> T {
    RUN_SUMS.with(|kept| match kept.try_borrow_mut() {
        Ok(mut sums) => {
            sums.clear();
            sums.resize(len, 0.0);
            f(&mut sums)
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

impl ChannelKernel for Cpu {
    fn channel_sum(
        &self,
        l: &ChannelLayout,
        x: &Vec<f32>,
        centered: Option<(Option<&Vec<f32>>, &Vec<f32>)>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let mut totals = smallvec::SmallVec::<[f64; 256]>::from_elem(0.0, l.channels);
        with_run_sums(l.outer * l.channels, |sums| {
            vectorized_in_parts(RunSums {
                l,
                x,
                centered: centered.map(|(a, mean)| (a.map(Vec::as_slice), mean.as_slice())),
                sums,
                first: 0,
            });
            // Each channel's runs added in sample order, whatever the parts were.
            for (run, sum) in sums.iter().enumerate() {
                totals[run % l.channels] += sum;
            }
        });
        for (out, total) in out.iter_mut().zip(totals) {
            *out = total as f32;
        }
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

    /// Large enough to run in parts: each channel's sums (plain, squares about a mean, and a
    /// product about a mean) match one part bit for bit, and a plain `f64` sum closely.
    #[test]
    fn channel_sums_in_parts_match_one_part() {
        let l = ChannelLayout {
            outer: 64,
            channels: 32,
            inner: 16 * 16,
        };
        let len = l.outer * l.channels * l.inner;
        let x: Vec<f32> = (0..len).map(|v| ((v * 7919) % 997) as f32 * 0.01).collect();
        let a: Vec<f32> = (0..len).map(|v| ((v * 31) % 101) as f32 * 0.1).collect();
        let mean: Vec<f32> = (0..l.channels).map(|c| c as f32 * 0.25).collect();
        for centered in [None, Some((None, &mean)), Some((Some(&a), &mean))] {
            let mut parts = vec![f32::NAN; l.channels];
            Cpu.channel_sum(&l, &x, centered, &mut parts).unwrap();
            let mut sums = vec![0.0; l.outer * l.channels];
            RunSums {
                l: &l,
                x: &x,
                centered: centered.map(|(a, mean)| (a.map(Vec::as_slice), mean.as_slice())),
                sums: &mut sums,
                first: 0,
            }
            .run();
            let mut one = vec![0.0f64; l.channels];
            for (run, sum) in sums.iter().enumerate() {
                one[run % l.channels] += sum;
            }
            let one: Vec<f32> = one.iter().map(|&sum| sum as f32).collect();
            assert_eq!(parts, one, "centered: {centered:?}");
            for (c, &found) in parts.iter().enumerate() {
                let expected: f64 = (0..l.outer * l.inner)
                    .map(|i| {
                        let at = (i / l.inner * l.channels + c) * l.inner + i % l.inner;
                        let v = f64::from(x[at]);
                        match centered {
                            None => v,
                            Some((None, mean)) => (v - f64::from(mean[c])).powi(2),
                            Some((Some(a), mean)) => f64::from(a[at]) * (v - f64::from(mean[c])),
                        }
                    })
                    .sum();
                assert!(
                    (f64::from(found) - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                    "channel {c}: {found} vs {expected}"
                );
            }
        }
    }
}
