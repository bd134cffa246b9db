//! CPU kernels of the elementwise unary ops.

use super::UnaryOp;

/// Expands `$body` once per op with `$f` bound to that op's scalar function, so every loop is
/// compiled (and vectorised) for a concrete closure instead of calling through a pointer.
macro_rules! with_unary_fn {
    ($op:expr, |$f:ident| $body:expr) => {
        match $op {
            UnaryOp::Neg => {
                let $f = |v: f32| -v;
                $body
            }
            UnaryOp::AddScalar(s) => {
                let $f = |v: f32| v + s;
                $body
            }
            UnaryOp::MulScalar(s) => {
                let $f = |v: f32| v * s;
                $body
            }
            UnaryOp::ClampMin(min) => {
                // `v < min` is false for NaN, so NaN passes through like in PyTorch.
                let $f = |v: f32| if v < min { min } else { v };
                $body
            }
            UnaryOp::Pow(p) if p == 2.0 => {
                let $f = |v: f32| v * v;
                $body
            }
            UnaryOp::Pow(p) => {
                let $f = |v: f32| v.powf(p);
                $body
            }
            UnaryOp::Exp => {
                let $f = f32::exp;
                $body
            }
            UnaryOp::Log => {
                let $f = f32::ln;
                $body
            }
            UnaryOp::Sigmoid => {
                let $f = sigmoid;
                $body
            }
            UnaryOp::Tanh => {
                let $f = f32::tanh;
                $body
            }
            UnaryOp::Gelu => {
                let $f = gelu;
                $body
            }
            UnaryOp::LtScalar(s) => {
                let $f = |v: f32| f32::from(u8::from(v < s));
                $body
            }
            UnaryOp::GtScalar(s) => {
                let $f = |v: f32| f32::from(u8::from(v > s));
                $body
            }
        }
    };
}

/// `out[i] = op(x[i])`.
pub(crate) fn unary(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    with_unary_fn!(op, |f| {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f(v);
        }
    });
}

/// `x[i] = op(x[i])`.
pub(crate) fn unary_assign(op: UnaryOp, x: &mut [f32]) {
    with_unary_fn!(op, |f| {
        for v in x.iter_mut() {
            *v = f(*v);
        }
    });
}

/// The logistic function, without overflow for large `|v|`.
fn sigmoid(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// `x * Φ(x)`, Φ the standard normal CDF.
pub(crate) fn gelu(v: f32) -> f32 {
    0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// The derivative of [`gelu`]: `Φ(x) + x φ(x)`.
pub(crate) fn gelu_derivative(v: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2));
    cdf + v * FRAC_1_SQRT_2PI * (-0.5 * v * v).exp()
}
