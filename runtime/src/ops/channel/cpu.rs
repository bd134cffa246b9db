//! CPU kernels of the per-channel ops: one pass in memory order, each channel's contiguous
//! runs (`inner` elements per sample) handled together.

use std::cell::RefCell;

use super::{ChannelKernel, ChannelLayout};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;
use crate::ops::math::{self, LaneSums, Lanes, zip_lanes};

/// The sums of the `S` terms of [`math::lane_partials`], the elements after the last whole
/// chunk added into its lanes.
#[inline(always)]
fn lane_sums<const S: usize>(
    x: &[f32],
    y: &[f32],
    terms: impl Fn(Lanes, Lanes) -> [Lanes; S],
) -> [f64; S] {
    let LaneSums {
        mut partial,
        rest,
        rest_len,
    } = math::lane_partials(x, y, terms);
    for (sums, rest) in partial.iter_mut().zip(rest) {
        for (sum, term) in sums.iter_mut().zip(&rest[..rest_len]) {
            *sum += term;
        }
    }
    partial.map(|lanes| lanes.iter().sum())
}

/// What [`RunSums`] adds up over each run of `x`.
#[derive(Clone, Copy)]
enum Summand<'a> {
    /// `Σ x`.
    Values,
    /// `Σ (x - mean[c])²`.
    Squares { mean: &'a [f32] },
    /// `Σ a (x - mean[c])`, and with `and_weights` also `Σ a` (batch normalisation's two
    /// backward sums, in one pass over `a`).
    Covariance {
        a: &'a [f32],
        mean: &'a [f32],
        and_weights: bool,
    },
}

impl<'a> Summand<'a> {
    /// The summand of [`ChannelKernel::channel_sum`]'s `centered`.
    fn of(centered: Option<(Option<&'a Vec<f32>>, &'a Vec<f32>)>) -> Self {
        match centered {
            None => Self::Values,
            Some((None, mean)) => Self::Squares { mean },
            Some((Some(a), mean)) => Self::Covariance {
                a,
                mean,
                and_weights: false,
            },
        }
    }

    /// The sums each run gives.
    fn per_run(self) -> usize {
        match self {
            Self::Covariance {
                and_weights: true, ..
            } => 2,
            _ => 1,
        }
    }
}

/// The sums of each run (one channel of one sample: `inner` elements), from run `first` on;
/// runs split into parts on the thread pool. Each run's sums are one [`lane_sums`], so the
/// channels' totals, added run by run in order, do not depend on the parts.
struct RunSums<'a> {
    l: &'a ChannelLayout,
    x: &'a [f32],
    summand: Summand<'a>,
    /// [`Summand::per_run`] sums for each run, one run after another.
    sums: &'a mut [f64],
    first: usize,
}

impl Divisible for RunSums<'_> {
    fn units(&self) -> usize {
        self.sums.len() / self.summand.per_run()
    }
    fn unit_len(&self) -> usize {
        self.l.inner
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let RunSums {
            l,
            x,
            summand,
            sums,
            first,
        } = self;
        let at = (mid * l.inner).min(x.len());
        let (x_left, x_right) = x.split_at(at);
        let (sums_left, sums_right) = sums.split_at_mut(mid * summand.per_run());
        let (summand_left, summand_right) = match summand {
            Summand::Covariance {
                a,
                mean,
                and_weights,
            } => {
                let (a_left, a_right) = a.split_at(at);
                let part = |a| Summand::Covariance {
                    a,
                    mean,
                    and_weights,
                };
                (part(a_left), part(a_right))
            }
            other => (other, other),
        };
        let part = |x, summand, sums, first| RunSums {
            l,
            x,
            summand,
            sums,
            first,
        };
        (
            part(x_left, summand_left, sums_left, first),
            part(x_right, summand_right, sums_right, first + mid),
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
            summand,
            sums,
            first,
        } = self;
        let runs = x
            .chunks_exact(l.inner.max(1))
            .zip(sums.chunks_exact_mut(summand.per_run()));
        for (i, (run, sums)) in runs.enumerate() {
            let c = (first + i) % l.channels;
            match summand {
                Summand::Values => sums[0] = lane_sums(run, run, |v, _| [v])[0],
                Summand::Squares { mean } => {
                    let mean = f64::from(mean[c]);
                    let square = |v: f64, _| (v - mean).powi(2);
                    sums[0] = lane_sums(run, run, |v, _| [zip_lanes(v, v, square)])[0];
                }
                Summand::Covariance {
                    a,
                    mean,
                    and_weights,
                } => {
                    let mean = f64::from(mean[c]);
                    let a = &a[i * l.inner..][..run.len()];
                    let product = |v: f64, a: f64| a * (v - mean);
                    if and_weights {
                        let pair = lane_sums(run, a, |v, a| [zip_lanes(v, a, product), a]);
                        sums.copy_from_slice(&pair);
                    } else {
                        sums[0] = lane_sums(run, a, |v, a| [zip_lanes(v, a, product)])[0];
                    }
                }
            }
        }
    }
}

/// Each channel's totals of `summand` over `x`, one output per sum of a run, added run by run
/// in sample order (whatever the parts were).
fn channel_totals(l: &ChannelLayout, x: &[f32], summand: Summand<'_>, outs: &mut [&mut Vec<f32>]) {
    let per_run = summand.per_run();
    let mut totals = smallvec::SmallVec::<[f64; 256]>::from_elem(0.0, l.channels * per_run);
    with_run_sums(l.outer * l.channels * per_run, |sums| {
        vectorized_in_parts(RunSums {
            l,
            x,
            summand,
            sums,
            first: 0,
        });
        for (run, sums) in sums.chunks_exact(per_run).enumerate() {
            let channel = &mut totals[run % l.channels * per_run..][..per_run];
            for (total, sum) in channel.iter_mut().zip(sums) {
                *total += sum;
            }
        }
    });
    for (k, out) in outs.iter_mut().enumerate() {
        let channels = totals.iter().skip(k).step_by(per_run);
        for (out, total) in out.iter_mut().zip(channels) {
            *out = *total as f32;
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
        channel_totals(l, x, Summand::of(centered), &mut [out]);
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
        let summand = Summand::Covariance {
            a,
            mean,
            and_weights: true,
        };
        channel_totals(l, x, summand, &mut [covariance, sum]);
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
                summand: Summand::of(centered),
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
