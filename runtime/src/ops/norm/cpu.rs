//! CPU kernels of layer normalisation, one row at a time, sums in `f64`.

use super::{NormKernel, Rows};
use crate::backend::Cpu;
use crate::error::Result;

impl NormKernel for Cpu {
    fn layer_norm(
        &self,
        r: &Rows,
        x: &Vec<f32>,
        weight: Option<&Vec<f32>>,
        bias: Option<&Vec<f32>>,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
    ) -> Result<()> {
        if r.len == 0 {
            return Ok(());
        }
        let rows = x.chunks_exact(r.len).zip(y.chunks_exact_mut(r.len));
        for (row, (x, y)) in rows.enumerate() {
            let n = r.len as f64;
            let mu = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = x.iter().map(|&v| (f64::from(v) - mu).powi(2)).sum::<f64>() / n;
            let inv = (1.0 / (var + f64::from(r.eps)).sqrt()) as f32;
            let mu = mu as f32;
            for (j, (y, &v)) in y.iter_mut().zip(x).enumerate() {
                let scale = weight.map_or(1.0, |w| w[j]);
                let shift = bias.map_or(0.0, |b| b[j]);
                *y = (v - mu) * inv * scale + shift;
            }
            mean[row] = mu;
            rstd[row] = inv;
        }
        Ok(())
    }

    fn layer_norm_backward(
        &self,
        r: &Rows,
        x: &Vec<f32>,
        grad: &Vec<f32>,
        weight: Option<&Vec<f32>>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        grad_x: &mut Vec<f32>,
    ) -> Result<()> {
        if r.len == 0 {
            return Ok(());
        }
        let n = r.len as f64;
        let rows = x
            .chunks_exact(r.len)
            .zip(grad.chunks_exact(r.len))
            .zip(grad_x.chunks_exact_mut(r.len));
        for (row, ((x, g), dx)) in rows.enumerate() {
            let (mu, inv) = (mean[row], rstd[row]);
            let gw = |j: usize| g[j] * weight.map_or(1.0, |w| w[j]);
            let xhat = |j: usize| (x[j] - mu) * inv;
            let (mut sum_gw, mut sum_gw_xhat) = (0.0f64, 0.0f64);
            for j in 0..r.len {
                sum_gw += f64::from(gw(j));
                sum_gw_xhat += f64::from(gw(j)) * f64::from(xhat(j));
            }
            let (mean_gw, mean_gw_xhat) = ((sum_gw / n) as f32, (sum_gw_xhat / n) as f32);
            for (j, dx) in dx.iter_mut().enumerate() {
                *dx = inv * (gw(j) - mean_gw - xhat(j) * mean_gw_xhat);
            }
        }
        Ok(())
    }
}
