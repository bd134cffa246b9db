//! [`Indices`]: whole numbers on a device, what `argmax` returns and `index_select` takes.

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The largest index a device holds exactly: indices travel as `f32`, exact below 2^24.
pub const MAX_INDEX: usize = 1 << 24;

/// Indices on a device, like PyTorch's `int64` index tensors: the result of
/// [`Tensor::try_argmax`] and the rows [`Tensor::try_index_select`] gathers. They are kept as
/// `f32` whole numbers below [`MAX_INDEX`] (so kernels read them like any tensor), with an
/// upper bound known on the host, so an index out of range is an error before a kernel runs.
///
/// ```
/// use declnet_runtime::ops::index::Indices;
/// use declnet_runtime::{Cpu, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 5.0, 2.0, 7.0, 0.0, 3.0], [2, 3], &Cpu);
/// let rows = Indices::new(&[1, 1, 0], &Cpu)?;
/// assert_eq!(x.try_index_select(0, &rows)?.dims(), &[3, 3]);
/// assert_eq!(x.try_argmax(1)?.to_vec()?, [1, 0]);
/// # Ok::<(), declnet_runtime::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Indices<B: Backend = Cpu> {
    pub(crate) values: Tensor<B>,
    /// Every index is below this.
    pub(crate) bound: usize,
}

impl<B: Backend> Indices<B> {
    /// `indices` as a 1-D tensor on `device`.
    ///
    /// # Errors
    /// [`Error::Usage`] for an index of [`MAX_INDEX`] or more; a device error.
    pub fn new(indices: &[usize], device: &B) -> Result<Self> {
        Self::with_shape(indices, [indices.len()], device)
    }

    /// `indices` in `shape` on `device` (token ids `[B, T]`, say).
    ///
    /// # Errors
    /// [`Error::Length`] when `shape` does not hold `indices.len()` elements; as
    /// [`Indices::new`].
    pub fn with_shape(indices: &[usize], shape: impl Into<Shape>, device: &B) -> Result<Self> {
        let shape = shape.into();
        if let Some(&index) = indices.iter().find(|&&index| index >= MAX_INDEX) {
            return Err(Error::Usage(format!(
                "Indices::new: index {index} is not below {MAX_INDEX}, the largest a device \
                 holds exactly"
            )));
        }
        let encoded = indices.iter().map(|&index| index as f32).collect();
        Ok(Self {
            values: Tensor::try_from_vec(encoded, shape, device)?,
            bound: indices.iter().max().map_or(0, |max| max + 1),
        })
    }

    /// Indices a kernel wrote, each below `bound`.
    pub(crate) fn from_kernel(values: Tensor<B>, bound: usize) -> Self {
        Self { values, bound }
    }

    /// The indices' shape.
    #[must_use]
    pub fn shape(&self) -> &Shape {
        self.values.shape()
    }

    /// The number of indices.
    #[must_use]
    pub fn len(&self) -> usize {
        self.values.numel()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A bound every index is below (known on the host).
    #[must_use]
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// The indices as `f32` whole numbers, to compare with other tensors (`eq`) or sum.
    #[must_use]
    pub fn as_tensor(&self) -> &Tensor<B> {
        &self.values
    }

    /// The indices, copied to the host, in row-major order.
    ///
    /// # Errors
    /// When the device cannot copy.
    pub fn to_vec(&self) -> Result<Vec<usize>> {
        // Whole numbers in [0, 2^24), as made by `with_shape` or a kernel.
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        Ok(self
            .values
            .try_to_vec()?
            .iter()
            .map(|&v| v as usize)
            .collect())
    }
}
