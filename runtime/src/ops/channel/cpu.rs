//! CPU kernels of the per-channel ops: one pass in memory order, each channel's contiguous
//! runs (`inner` elements per sample) handled together.

use super::{ChannelKernel, ChannelLayout};
use crate::backend::Cpu;
use crate::error::Result;

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
                None => run.iter().map(|&v| f64::from(v)).sum::<f64>(),
                Some((None, mean)) => {
                    let mean = f64::from(mean[c]);
                    run.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum()
                }
                Some((Some(a), mean)) => {
                    let mean = f64::from(mean[c]);
                    let a = &a[start..start + l.inner];
                    run.iter()
                        .zip(a)
                        .map(|(&v, &a)| f64::from(a) * (f64::from(v) - mean))
                        .sum()
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
