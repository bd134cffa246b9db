//! What the CPU kernels compute per element and per row, written so that LLVM vectorises the
//! loops they are inlined into: `exp` and the standard normal CDF and density without calls or
//! branches (libm's `expf` is a call per element), and sums in `f64` split over interleaved
//! partial sums (one running sum is a chain of dependent additions, which LLVM may not
//! reorder). Polynomials use `mul_add`: one FMA instruction in kernels that `vectorized`
//! compiles for AVX2 or AVX-512 (every x86-64 CPU since 2013), which is where these are
//! called; only the baseline build for older CPUs makes it a call per term.

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

/// `e^x` to within 1 ulp; overflows to infinity past 88.72, underflows
/// through the subnormals to 0, and keeps NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer, held in the low bits of the sum.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 in two parts (Cody and Waite), the high one short enough that `n * LN_2_HIGH` is
    // exact for the `n` that occur, the low one the rest to f32 precision.
    const LN_2_HIGH: f32 = 0.693_359_4;
    const LN_2_LOW: f32 = -2.121_944_4e-4;
    // `e^r - 1 - r` over r² on [-ln 2 / 2, ln 2 / 2] (Cephes's `expf`).
    const POLY: [f32; 6] = [
        1.987_569_2e-4,
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    // Comparisons keep NaN; beyond these bounds the result is infinite or 0 anyway.
    let x = if x > 89.0 { 89.0 } else { x };
    let x = if x < -104.0 { -104.0 } else { x };
    let rounded = x * LOG2_E + ROUND;
    let n = rounded - ROUND;
    #[allow(
        clippy::cast_possible_wrap,
        reason = "the bit patterns of two nearby floats"
    )]
    let whole = rounded.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = (x - n * LN_2_HIGH) - n * LN_2_LOW;
    let poly = POLY.iter().fold(0.0f32, |acc, &c| acc.mul_add(r, c));
    let e_r = poly * r * r + r + 1.0;
    // 2^n in two factors, each a normal float, so that subnormal results come out right.
    let half = whole >> 1;
    e_r * power_of_two(half) * power_of_two(whole - half)
}

/// `2^n` for `n` in [-126, 127].
#[inline(always)]
fn power_of_two(n: i32) -> f32 {
    #[allow(
        clippy::cast_sign_loss,
        reason = "a biased exponent, positive in range"
    )]
    f32::from_bits(((n + 127) as u32) << 23)
}

/// `x` with the low 12 bits of its significand cleared: `x²` of it is exact in `f32`.
#[inline(always)]
fn high_part(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0xffff_f000)
}

/// `-x²/2` as `-h²/2 + s`: `h²/2` exact, `s` small; summing them once is the only rounding.
#[inline(always)]
fn minus_half_square(x: f32) -> (f32, f32) {
    let high = high_part(x);
    (-0.5 * high * high, -0.5 * (x - high) * (x + high))
}

/// `G(t) = erfc(z) e^(z²) / t` for `z = |x| / sqrt 2` and `t = 1 / (1 + z / 2)`, so that
/// `P(X > |x|) = t/2 e^(-x²/2) G(t)`: a degree-9 Chebyshev fit in `t` on [0.15, 1] (made
/// with `mpmath.chebyfit` at 40 digits; `|x|` up to 15.8, beyond which `e^(-x²/2)` is 0 in
/// `f32`), off by at most 1.1e-7 relative when evaluated in `f32`. (The fit of `ln G` in
/// Numerical Recipes is as accurate, but needs an `exp` of its own.)
#[inline(always)]
fn scaled_erfc(t: f32) -> f32 {
    const POLY: [f32; 10] = [
        0.015_446_424_5,
        -0.138_722_61,
        0.461_040_8,
        -0.706_877_2,
        0.446_779_58,
        -0.109_197_15,
        0.228_339_1,
        0.238_243_39,
        0.282_883_52,
        0.282_064_1,
    ];
    POLY.iter().fold(0.0f32, |acc, &c| acc.mul_add(t, c))
}

/// `t` of [`scaled_erfc`] for `x`.
#[inline(always)]
fn erfc_t(x: f32) -> f32 {
    1.0 / (0.5 * FRAC_1_SQRT_2 * x.abs() + 1.0)
}

/// `e^(-x²/2)`, with `-x²/2` rounded once.
#[inline(always)]
fn exp_minus_half_square(x: f32) -> f32 {
    let (square, small) = minus_half_square(x);
    exp(square + small)
}

/// Φ(x), the standard normal CDF, to 1e-6 relative for `|x| <= 4` and 5e-6 beyond (both
/// tails, where `1 + erf` would lose it): one `exp`, the one [`normal_density`] computes
/// (so that a kernel computing both computes it once).
#[inline(always)]
pub(crate) fn normal_cdf(x: f32) -> f32 {
    let t = erfc_t(x);
    let upper = 0.5 * t * scaled_erfc(t) * exp_minus_half_square(x);
    if x >= 0.0 { 1.0 - upper } else { upper }
}

/// φ(x), the standard normal density, to the accuracy of [`normal_cdf`].
#[inline(always)]
pub(crate) fn normal_density(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    exp_minus_half_square(x) * FRAC_1_SQRT_2PI
}

/// Partial sums a row is split over: two AVX2 registers of `f64`.
const LANES: usize = 8;

/// [`LANES`] values widened to `f64`: what [`lane_partials`] computes on.
type Lanes = [f64; LANES];

/// `f` of `a` and `b` lane by lane.
#[inline(always)]
fn zip_lanes(a: Lanes, b: Lanes, f: impl Fn(f64, f64) -> f64) -> Lanes {
    std::array::from_fn(|lane| f(a[lane], b[lane]))
}

/// The [`lane_partials`] of `S` terms.
struct LaneSums<const S: usize> {
    /// Each term's partial sums over the whole chunks: lane `j` adds elements `j`, `j + LANES`,
    /// ... in order.
    partial: [Lanes; S],
    /// Each term of the elements after the last whole chunk, in its first `rest_len` lanes.
    rest: [Lanes; S],
    rest_len: usize,
}

/// The sums of `S` terms of `a[i]` and `b[i]`, the values widened to `f64`, in partial sums of
/// [`LANES`] interleaved elements (one running sum would not vectorise: its additions are
/// ordered). `f` maps a chunk of each input to the chunk's terms; it sees whole chunks (the
/// last one padded with zeros), as it left the loop scalar when it saw one element at a time.
#[inline(always)]
fn lane_partials<const S: usize>(
    a: &[f32],
    b: &[f32],
    f: impl Fn(Lanes, Lanes) -> [Lanes; S],
) -> LaneSums<S> {
    let widen = |chunk: &[f32; LANES]| chunk.map(f64::from);
    let len = a.len().min(b.len());
    let (a_chunks, a_rest) = a[..len].as_chunks::<LANES>();
    let (b_chunks, b_rest) = b[..len].as_chunks::<LANES>();
    let mut partial = [[0.0f64; LANES]; S];
    for (a, b) in a_chunks.iter().zip(b_chunks) {
        for (sums, terms) in partial.iter_mut().zip(f(widen(a), widen(b))) {
            for (sum, term) in sums.iter_mut().zip(terms) {
                *sum += term;
            }
        }
    }
    let padded = |rest: &[f32]| {
        let mut chunk = [0.0; LANES];
        chunk[..rest.len()].copy_from_slice(rest);
        widen(&chunk)
    };
    LaneSums {
        partial,
        rest: f(padded(a_rest), padded(b_rest)),
        rest_len: a_rest.len(),
    }
}

/// `Σ f(a[i], b[i])` in `f64`: the [`lane_partials`] added up, then the rest.
#[inline(always)]
fn interleaved_sum(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64 + Copy) -> f64 {
    let LaneSums {
        partial: [partial],
        rest: [rest],
        rest_len,
    } = lane_partials(a, b, |a, b| [zip_lanes(a, b, f)]);
    partial.iter().sum::<f64>() + rest[..rest_len].iter().sum::<f64>()
}

/// `Σ values[i]`, in `f64`.
#[inline(always)]
pub(crate) fn sum(values: &[f32]) -> f64 {
    interleaved_sum(values, values, |v, _| v)
}

/// `Σ a[i] b[i]`, in `f64`.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    interleaved_sum(a, b, |a, b| a * b)
}

/// `Σ (values[i] - center)²`, in `f64`.
#[inline(always)]
pub(crate) fn sum_squares_about(values: &[f32], center: f64) -> f64 {
    interleaved_sum(values, values, |v, _| (v - center).powi(2))
}

/// The largest of `values` (`-inf` for none; NaN is passed over, as by `f32::max`).
#[inline(always)]
pub(crate) fn max(values: &[f32]) -> f32 {
    let mut partial = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            partial[lane] = partial[lane].max(chunk[lane]);
        }
    }
    rest.iter()
        .chain(&partial)
        .fold(f32::NEG_INFINITY, |max, &v| max.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The difference in units in the last place of `expected`.
    fn ulps(found: f32, expected: f64) -> f64 {
        let expected_f32 = expected as f32;
        let ulp = f64::from(f32::from_bits(expected_f32.abs().to_bits() + 1) - expected_f32.abs());
        (f64::from(found) - expected).abs() / ulp
    }

    #[test]
    fn exp_is_within_one_ulp_and_handles_the_edges() {
        let mut worst = 0.0f64;
        for step in -87_000..=88_000 {
            let x = step as f32 / 1000.0 + 0.000_37;
            worst = worst.max(ulps(exp(x), f64::from(x).exp()));
        }
        assert!(worst <= 1.0, "exp is off by {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        // Subnormal results, to within their coarser spacing.
        for x in [-88.0f32, -95.5, -100.0, -103.0] {
            let expected = f64::from(x).exp();
            let found = f64::from(exp(x));
            assert!(
                (found - expected).abs() <= 1.5e-45,
                "exp({x}) = {found}, not {expected}"
            );
        }
    }

    #[test]
    fn normal_cdf_and_density_are_accurate_in_both_tails() {
        // The worst relative errors, for |x| <= 4 and beyond.
        let mut worst = [[0.0f64; 2]; 2];
        for step in -1200..=1200 {
            let x = step as f32 / 100.0;
            let exact_cdf = 0.5 * libm::erfc(-f64::from(x) * std::f64::consts::FRAC_1_SQRT_2);
            let exact_density =
                (-0.5 * f64::from(x).powi(2)).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let relative = |found: f32, exact: f64| (f64::from(found) - exact).abs() / exact;
            let far = usize::from(x.abs() > 4.0);
            for (worst, error) in worst.iter_mut().zip([
                relative(normal_cdf(x), exact_cdf),
                relative(normal_density(x), exact_density),
            ]) {
                worst[far] = worst[far].max(error);
            }
        }
        for (what, [near, far]) in ["Φ", "φ"].iter().zip(worst) {
            assert!(
                near <= 1e-6,
                "{what} is off by {near:e} relative for |x| <= 4"
            );
            assert!(far <= 5e-6, "{what} is off by {far:e} relative for |x| > 4");
        }
    }

    #[test]
    fn row_reductions_match_plain_sums() {
        let values: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let other: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f64 = values.iter().map(|&v| f64::from(v)).sum();
        assert!((sum(&values) - plain).abs() < 1e-12);
        let plain_dot: f64 = values
            .iter()
            .zip(&other)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        assert!((dot(&values, &other) - plain_dot).abs() < 1e-12);
        let squares: f64 = values.iter().map(|&v| (f64::from(v) - 0.5).powi(2)).sum();
        assert!((sum_squares_about(&values, 0.5) - squares).abs() < 1e-11);
        let largest = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        assert_eq!(max(&values), largest);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(max(&[f32::NAN, 1.0]), 1.0);
        assert_eq!(sum(&[]), 0.0);
    }
}
