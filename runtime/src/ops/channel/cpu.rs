//! CPU kernels of the per-channel ops: one pass in memory order, each channel's contiguous
//! runs (`inner` elements per sample) handled together.

use super::{ChannelKernel, ChannelLayout};
use crate::backend::Cpu;
use crate::error::Result;

/// The sum of `term(x[i], y[i])` in eight interleaved partial sums, which the compiler
/// vectorises (one running sum cannot be: its additions are ordered).
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

impl ChannelKernel for Cpu {
    fn channel_sum(
        &self,
        l: &ChannelLayout,
        x: &Vec<f32>,
        centered: Option<(Option<&Vec<f32>>, &Vec<f32>)>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let mut sums = vec![0.0f64; l.channels];
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
        Ok(())
    }
}
