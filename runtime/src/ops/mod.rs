//! Tensor operations, one folder per op family (see `README.md` beside this file).

pub mod binary;
pub mod channel;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod index;
pub mod loss;
pub(crate) mod math;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod permute;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;

/// Checks that `actual` matches `expected` to 1e-6, relative to values above 1.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= 1e-6 * e.abs().max(1.0),
            "{actual:?} vs {expected:?}"
        );
    }
}
