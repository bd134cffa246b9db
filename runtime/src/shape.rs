//! [`Shape`]: the dimensions of a row-major tensor.

use std::fmt;

use smallvec::SmallVec;

use crate::error::{Error, Result};

/// Dims or strides, stored inline up to rank 6 so that shape bookkeeping in a training step
/// does not allocate.
pub type Dims = SmallVec<[usize; 6]>;

/// The dimensions of a tensor, outermost first; the empty shape `[]` is a scalar.
///
/// Displays like PyTorch's `torch.Size`, as `[64, 1000]`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Dims);

impl Shape {
    /// The dimensions as a slice.
    #[must_use]
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// The number of dimensions.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The number of elements (1 for a scalar). Saturates at `usize::MAX`; use
    /// [`Shape::checked_numel`] where overflow matters.
    #[must_use]
    pub fn numel(&self) -> usize {
        self.checked_numel().unwrap_or(usize::MAX)
    }

    /// The number of elements, or `None` if it overflows `usize`.
    #[must_use]
    pub fn checked_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// The number of elements, or [`Error::TooLarge`] naming `op` if it overflows.
    pub(crate) fn numel_for(&self, op: &'static str) -> Result<usize> {
        self.checked_numel().ok_or_else(|| Error::TooLarge {
            op,
            shape: self.clone(),
        })
    }

    /// Row-major strides, in elements.
    #[must_use]
    pub fn strides(&self) -> Dims {
        let mut strides: Dims = smallvec::smallvec![1; self.rank()];
        for i in (0..self.rank().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1];
        }
        strides
    }

    /// `(outer, len, inner)`: the element counts before, at and after `dim`.
    pub(crate) fn split_at_dim(&self, dim: usize) -> (usize, usize, usize) {
        let outer = self.0[..dim].iter().product();
        let inner = self.0[dim + 1..].iter().product();
        (outer, self.0[dim], inner)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl From<Dims> for Shape {
    fn from(dims: Dims) -> Self {
        Self(dims)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(dims: Vec<usize>) -> Self {
        Self(Dims::from_vec(dims))
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Self {
        Self(Dims::from_slice(dims))
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Self {
        Self(Dims::from_slice(&dims))
    }
}

impl From<&Shape> for Shape {
    fn from(shape: &Shape) -> Self {
        shape.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_torch_size() {
        assert_eq!(Shape::from([64, 1000]).to_string(), "[64, 1000]");
        assert_eq!(Shape::from([]).to_string(), "[]");
    }

    #[test]
    fn numel_of_scalar_is_one_and_overflow_is_caught() {
        assert_eq!(Shape::from([]).numel(), 1);
        assert_eq!(Shape::from([2, 0, 3]).numel(), 0);
        assert_eq!(Shape::from([usize::MAX, 2]).checked_numel(), None);
        assert!(matches!(
            Shape::from([usize::MAX, 2]).numel_for("zeros"),
            Err(Error::TooLarge { op: "zeros", .. })
        ));
    }

    #[test]
    fn row_major_strides_and_split() {
        let shape = Shape::from([2, 3, 4]);
        assert_eq!(shape.strides().as_slice(), [12, 4, 1]);
        assert_eq!(shape.split_at_dim(1), (2, 3, 4));
        assert!(Shape::from([]).strides().is_empty());
    }
}
