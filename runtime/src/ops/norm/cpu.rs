//! CPU kernels of layer normalisation, one row at a time, sums in `f64`, vectorised.

use super::{NormKernel, Rows};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;
use crate::ops::math;

/// `y = (x - mean) / sqrt(var + eps) * weight + bias` per row, with each row's mean and
/// reciprocal standard deviation.
struct Forward<'a> {
    r: &'a Rows,
    x: &'a [f32],
    weight: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    y: &'a mut [f32],
    mean: &'a mut [f32],
    rstd: &'a mut [f32],
}

impl Vectorizable for Forward<'_> {
    type Output = ();
    #[inline(always)]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "row statistics back in f32"
    )]
    fn run(self) {
        let Forward {
            r,
            x,
            weight,
            bias,
            y,
            mean,
            rstd,
        } = self;
        let n = r.len as f64;
        let rows = x.chunks_exact(r.len).zip(y.chunks_exact_mut(r.len));
        for ((x, y), (mean, rstd)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
            let mu = math::sum(x) / n;
            let var = math::sum_squares_about(x, mu) / n;
            let inv = (1.0 / (var + f64::from(r.eps)).sqrt()) as f32;
            let mu = mu as f32;
            for (y, &v) in y.iter_mut().zip(x) {
                *y = (v - mu) * inv;
            }
            if let Some(weight) = weight {
                for (y, &w) in y.iter_mut().zip(weight) {
                    *y *= w;
                }
            }
            if let Some(bias) = bias {
                for (y, &b) in y.iter_mut().zip(bias) {
                    *y += b;
                }
            }
            (*mean, *rstd) = (mu, inv);
        }
    }
}

/// The input's gradient per row: `rstd (gw - mean(gw) - x̂ mean(gw x̂))` with `gw = g weight`
/// and `x̂ = (x - mean) rstd`; `Σ gw x̂` is `rstd (Σ gw x - mean Σ gw)`.
struct Backward<'a> {
    r: &'a Rows,
    x: &'a [f32],
    grad: &'a [f32],
    weight: Option<&'a [f32]>,
    mean: &'a [f32],
    rstd: &'a [f32],
    grad_x: &'a mut [f32],
}

impl Vectorizable for Backward<'_> {
    type Output = ();
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation, reason = "row sums back in f32")]
    fn run(self) {
        let Backward {
            r,
            x,
            grad,
            weight,
            mean,
            rstd,
            grad_x,
        } = self;
        let n = r.len as f64;
        let rows = x
            .chunks_exact(r.len)
            .zip(grad.chunks_exact(r.len))
            .zip(grad_x.chunks_exact_mut(r.len));
        for (((x, g), dx), (&mu, &inv)) in rows.zip(mean.iter().zip(rstd)) {
            // `dx` holds `gw` until the last loop.
            dx.copy_from_slice(g);
            if let Some(weight) = weight {
                for (dx, &w) in dx.iter_mut().zip(weight) {
                    *dx *= w;
                }
            }
            let sum_gw = math::sum(dx);
            let sum_gw_xhat = f64::from(inv) * (math::dot(dx, x) - f64::from(mu) * sum_gw);
            let (mean_gw, mean_gw_xhat) = ((sum_gw / n) as f32, (sum_gw_xhat / n) as f32);
            for (dx, &v) in dx.iter_mut().zip(x) {
                let xhat = (v - mu) * inv;
                *dx = inv * (*dx - mean_gw - xhat * mean_gw_xhat);
            }
        }
    }
}

/// The affine parameters' gradients of the columns `grad_weight` and `grad_bias` cover (the
/// first of `x`'s and `grad`'s rows; rows of `r.len`): over every row in order, the sums of
/// `grad * x̂` and of `grad`, blocks of columns at a time in registers.
struct ParamGrads<'a> {
    r: &'a Rows,
    x: &'a [f32],
    grad: &'a [f32],
    mean: &'a [f32],
    rstd: &'a [f32],
    grad_weight: &'a mut [f32],
    grad_bias: &'a mut [f32],
}

/// Columns [`ParamGrads`] sums at once: two sums of two AVX-512 registers each.
const COLUMN_BLOCK: usize = 32;

impl Vectorizable for ParamGrads<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let ParamGrads {
            r,
            x,
            grad,
            mean,
            rstd,
            grad_weight,
            grad_bias,
        } = self;
        let rows = || {
            let values = x.chunks(r.len).zip(grad.chunks(r.len));
            values.zip(mean.iter().zip(rstd))
        };
        for start in (0..grad_weight.len()).step_by(COLUMN_BLOCK) {
            let end = (start + COLUMN_BLOCK).min(grad_weight.len());
            let (weight_out, bias_out) = (&mut grad_weight[start..end], &mut grad_bias[start..end]);
            if let (Ok(weight_out), Ok(bias_out)) = (
                <&mut [f32; COLUMN_BLOCK]>::try_from(&mut *weight_out),
                <&mut [f32; COLUMN_BLOCK]>::try_from(&mut *bias_out),
            ) {
                // A whole block: its sums stay in registers down the rows.
                let mut sums = ([0.0f32; COLUMN_BLOCK], [0.0f32; COLUMN_BLOCK]);
                for ((x, g), (&mu, &inv)) in rows() {
                    let (Ok(x), Ok(g)) = (
                        <&[f32; COLUMN_BLOCK]>::try_from(&x[start..end]),
                        <&[f32; COLUMN_BLOCK]>::try_from(&g[start..end]),
                    ) else {
                        unreachable!("a block of {COLUMN_BLOCK} columns");
                    };
                    add_row(&mut sums.0, &mut sums.1, (x, g), (mu, inv));
                }
                (*weight_out, *bias_out) = sums;
            } else {
                weight_out.fill(0.0);
                bias_out.fill(0.0);
                for ((x, g), (&mu, &inv)) in rows() {
                    let row = (&x[start..end], &g[start..end]);
                    add_row(weight_out, bias_out, row, (mu, inv));
                }
            }
        }
    }
}

/// Adds one row's `g * x̂` and `g` to the weight's and the bias's column sums.
#[inline(always)]
fn add_row(
    weight_sums: &mut [f32],
    bias_sums: &mut [f32],
    (x, g): (&[f32], &[f32]),
    (mu, inv): (f32, f32),
) {
    let sums = weight_sums.iter_mut().zip(bias_sums.iter_mut());
    for ((weight_sum, bias_sum), (&v, &g)) in sums.zip(x.iter().zip(g)) {
        *weight_sum += (v - mu) * inv * g;
        *bias_sum += g;
    }
}

impl Divisible for ParamGrads<'_> {
    fn units(&self) -> usize {
        self.grad_weight.len()
    }
    fn unit_len(&self) -> usize {
        self.mean.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let ParamGrads {
            r,
            x,
            grad,
            mean,
            rstd,
            grad_weight,
            grad_bias,
        } = self;
        let (weight_left, weight_right) = grad_weight.split_at_mut(mid);
        let (bias_left, bias_right) = grad_bias.split_at_mut(mid);
        let part = |x, grad, grad_weight, grad_bias| ParamGrads {
            r,
            x,
            grad,
            mean,
            rstd,
            grad_weight,
            grad_bias,
        };
        (
            part(x, grad, weight_left, bias_left),
            part(&x[mid..], &grad[mid..], weight_right, bias_right),
        )
    }
}

impl Divisible for Forward<'_> {
    fn units(&self) -> usize {
        self.mean.len()
    }
    fn unit_len(&self) -> usize {
        self.r.len
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Forward {
            r,
            x,
            weight,
            bias,
            y,
            mean,
            rstd,
        } = self;
        let at = mid * r.len;
        let ((x_left, x_right), (y_left, y_right)) = (x.split_at(at), y.split_at_mut(at));
        let ((mean_left, mean_right), (rstd_left, rstd_right)) =
            (mean.split_at_mut(mid), rstd.split_at_mut(mid));
        let part = |x, y, mean, rstd| Forward {
            r,
            x,
            weight,
            bias,
            y,
            mean,
            rstd,
        };
        (
            part(x_left, y_left, mean_left, rstd_left),
            part(x_right, y_right, mean_right, rstd_right),
        )
    }
}

impl Divisible for Backward<'_> {
    fn units(&self) -> usize {
        self.mean.len()
    }
    fn unit_len(&self) -> usize {
        self.r.len
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let Backward {
            r,
            x,
            grad,
            weight,
            mean,
            rstd,
            grad_x,
        } = self;
        let at = mid * r.len;
        let ((x_left, x_right), (grad_left, grad_right)) = (x.split_at(at), grad.split_at(at));
        let (grad_x_left, grad_x_right) = grad_x.split_at_mut(at);
        let ((mean_left, mean_right), (rstd_left, rstd_right)) =
            (mean.split_at(mid), rstd.split_at(mid));
        let part = |x, grad, grad_x, mean, rstd| Backward {
            r,
            x,
            grad,
            weight,
            mean,
            rstd,
            grad_x,
        };
        (
            part(x_left, grad_left, grad_x_left, mean_left, rstd_left),
            part(x_right, grad_right, grad_x_right, mean_right, rstd_right),
        )
    }
}

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
        if r.len > 0 {
            vectorized_in_parts(Forward {
                r,
                x,
                weight: weight.map(Vec::as_slice),
                bias: bias.map(Vec::as_slice),
                y,
                mean,
                rstd,
            });
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
        if r.len > 0 {
            vectorized_in_parts(Backward {
                r,
                x,
                grad,
                weight: weight.map(Vec::as_slice),
                mean,
                rstd,
                grad_x,
            });
        }
        Ok(())
    }

    fn layer_norm_param_grads(
        &self,
        r: &Rows,
        x: &Vec<f32>,
        grad: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        grad_weight: &mut Vec<f32>,
        grad_bias: &mut Vec<f32>,
    ) -> Result<()> {
        if r.rows == 0 {
            grad_weight.fill(0.0);
            grad_bias.fill(0.0);
        } else if r.len > 0 {
            vectorized_in_parts(ParamGrads {
                r,
                x,
                grad,
                mean,
                rstd,
                grad_weight,
                grad_bias,
            });
        }
        Ok(())
    }
}
