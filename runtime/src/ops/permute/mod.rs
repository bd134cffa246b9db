//! Reordering dims: `permute` and `transpose`, copied into a new contiguous tensor (tensors
//! here are always contiguous). The gradient of a permutation is the inverse permutation.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use crate::backend::{Backend, Memory};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The most dims a permutation handles (the dims a [`Shape`] holds inline).
pub const MAX_RANK: usize = 6;

/// A permutation's copy: the output's dims, and for each output dim the source's stride
/// along the dim it came from. Entries past `rank` are unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permutation {
    /// The number of dims.
    pub rank: usize,
    /// The output's dims.
    pub dims: [usize; MAX_RANK],
    /// The source's stride for each output dim.
    pub strides: [usize; MAX_RANK],
}

impl Permutation {
    /// The copy of a tensor of `shape` whose output dim `i` is its dim `order[i]`.
    ///
    /// # Errors
    /// [`Error::Usage`] when `order` is not a permutation of `0..rank`, or the rank is above
    /// [`MAX_RANK`].
    pub fn new(op: &'static str, shape: &Shape, order: &[usize]) -> Result<Self> {
        let rank = shape.rank();
        let mut seen = [false; MAX_RANK];
        let valid = order.len() == rank
            && rank <= MAX_RANK
            && order
                .iter()
                .all(|&dim| dim < rank && !std::mem::replace(&mut seen[dim], true));
        if !valid {
            return Err(Error::Usage(format!(
                "{op}: {order:?} is not an order of the {rank} dims of {shape} (at most \
                 {MAX_RANK} dims)"
            )));
        }
        let source = shape.strides();
        let (mut dims, mut strides) = ([1; MAX_RANK], [0; MAX_RANK]);
        for (i, &dim) in order.iter().enumerate() {
            dims[i] = shape.dims()[dim];
            strides[i] = source[dim];
        }
        Ok(Self {
            rank,
            dims,
            strides,
        })
    }

    fn output_shape(&self) -> Shape {
        Shape::from(&self.dims[..self.rank])
    }
}

/// The permutation kernel.
pub trait PermuteKernel: Memory {
    /// Writes `src` reordered by `permutation` into `dst`, in `dst`'s order.
    ///
    /// # Errors
    /// When the kernel fails.
    fn permute(
        &self,
        permutation: &Permutation,
        src: &Self::Storage,
        dst: &mut Self::Storage,
    ) -> Result<()>;
}

impl<B: Backend> Tensor<B> {
    /// The tensor with its dims in `order` (output dim `i` is dim `order[i]`), copied, like
    /// `x.permute(order).contiguous()`. Its gradient is the permutation by the inverse order.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [1, 2, 3], &Cpu);
    /// let y = x.try_permute(&[2, 0, 1])?;
    /// assert_eq!(y.dims(), &[3, 1, 2]);
    /// assert_eq!(y.to_vec(), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Usage`] when `order` is not a permutation of the dims.
    pub fn try_permute(&self, order: &[usize]) -> Result<Self> {
        let permutation = Permutation::new("permute", &self.shape, order)?;
        let mut out = Self::try_empty(permutation.output_shape(), &self.device)?;
        self.device
            .permute(&permutation, &self.storage, &mut out.storage)?;
        Ok(out)
    }

    /// The tensor with dims `a` and `b` swapped, copied, like `x.transpose(a, b)`:
    /// `[B, T, H, D]` to `[B, H, T, D]` with `(1, 2)`. Its own gradient's transpose.
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] when `a` or `b` is not below the rank.
    pub fn try_transpose(&self, a: usize, b: usize) -> Result<Self> {
        for dim in [a, b] {
            if dim >= self.rank() {
                return Err(Error::DimOutOfRange {
                    op: "transpose",
                    dim,
                    shape: self.shape.clone(),
                });
            }
        }
        let mut order: Vec<usize> = (0..self.rank()).collect();
        order.swap(a, b);
        self.try_permute(&order)
    }
}

#[cfg(not(feature = "cuda"))]
impl PermuteKernel for crate::Cuda {
    fn permute(&self, _: &Permutation, _: &Self::Storage, _: &mut Self::Storage) -> Result<()> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    #[test]
    fn permutations_move_every_element_and_invert() {
        let x = Tensor::randn([2, 3, 4, 5], &Cpu, &mut crate::rng::seeded(0));
        let order = [2, 0, 3, 1];
        let y = x.try_permute(&order).unwrap();
        assert_eq!(y.dims(), &[4, 2, 5, 3]);
        let (xs, ys) = (x.to_vec(), y.to_vec());
        // y[i, j, k, l] = x[j, l, i, k], here at (i, j, k, l) = (1, 1, 3, 2).
        let flat =
            |dims: &[usize], at: &[usize]| at.iter().zip(dims).fold(0, |acc, (i, d)| acc * d + i);
        assert_eq!(
            ys[flat(&[4, 2, 5, 3], &[1, 1, 3, 2])],
            xs[flat(&[2, 3, 4, 5], &[1, 2, 1, 3])]
        );
        let mut inverse = [0; 4];
        for (i, &dim) in order.iter().enumerate() {
            inverse[dim] = i;
        }
        assert_eq!(y.try_permute(&inverse).unwrap().to_vec(), xs);
        let t = x.try_transpose(1, 2).unwrap();
        assert_eq!(t.dims(), &[2, 4, 3, 5]);
        assert_eq!(t.try_transpose(2, 1).unwrap().to_vec(), xs);
    }

    /// Large enough to run in parts on two threads, with a contiguous and a strided innermost
    /// dim: every element where the definition puts it.
    #[test]
    fn permutations_in_parts_move_every_element() {
        let dims = [16, 64, 8, 32];
        let x = Tensor::from_vec(
            (0..16 * 64 * 8 * 32).map(|i| i as f32).collect(),
            dims,
            &Cpu,
        );
        for order in [[0, 2, 1, 3], [3, 1, 2, 0]] {
            let y = x.try_permute(&order).unwrap().to_vec();
            let out_dims = order.map(|dim| dims[dim]);
            for (flat, &value) in y.iter().enumerate() {
                let mut rest = flat;
                let mut at = [0; 4];
                for i in (0..4).rev() {
                    at[order[i]] = rest % out_dims[i];
                    rest /= out_dims[i];
                }
                let source = at.iter().zip(dims).fold(0, |acc, (i, d)| acc * d + i);
                assert_eq!(value, source as f32, "{order:?} at {flat}");
            }
        }
    }

    #[test]
    fn bad_orders_are_errors() {
        let x = Tensor::zeros([2, 3], &Cpu);
        let error = x.try_permute(&[0, 0]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: permute: [0, 0] is not an order of the 2 dims of [2, 3] (at most 6 dims)"
        );
        assert!(x.try_permute(&[1]).is_err());
        assert!(x.try_transpose(0, 2).is_err());
    }
}
