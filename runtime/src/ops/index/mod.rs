//! Indexing along a dim: `max`/`min` with their indices (`argmax`), `narrow`, `cat`,
//! `stack`, `index_select` and its gradient `index_add_`, each viewing a tensor along `dim` as
//! `[outer, len, inner]`; and the causal mask, which fills square matrices above their
//! diagonal (column index past row index) without a mask tensor.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod indices;

pub use indices::{Indices, MAX_INDEX};

use crate::backend::{Backend, Memory};
use crate::error::{Error, Result};
use crate::shape::{Dims, Shape};
use crate::tensor::Tensor;

/// A tensor along one dim: the dims before it (`outer`), its length, and the dims after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    /// The product of the dims before `dim`.
    pub outer: usize,
    /// The size of `dim`.
    pub len: usize,
    /// The product of the dims after `dim`.
    pub inner: usize,
}

impl Axis {
    /// `shape` along `dim`.
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] when `dim` is not below the rank.
    pub fn of(op: &'static str, shape: &Shape, dim: usize) -> Result<Self> {
        let dims = shape.dims();
        if dim >= dims.len() {
            return Err(Error::DimOutOfRange {
                op,
                dim,
                shape: shape.clone(),
            });
        }
        Ok(Self {
            outer: dims[..dim].iter().product(),
            len: dims[dim],
            inner: dims[dim + 1..].iter().product(),
        })
    }
}

/// A copy of `count` slices along a dim between two tensors that agree on every other dim:
/// `dst[o, dst_offset + j, i] = src[o, src_offset + j, i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// The product of the dims before the dim.
    pub outer: usize,
    /// The product of the dims after it.
    pub inner: usize,
    /// The dim's size in the source.
    pub src_len: usize,
    /// The first slice copied from the source.
    pub src_offset: usize,
    /// The dim's size in the destination.
    pub dst_len: usize,
    /// Where the first slice lands in the destination.
    pub dst_offset: usize,
    /// How many slices are copied.
    pub count: usize,
}

/// The kernels of indexing. Index buffers hold `f32` whole numbers, checked by the caller to
/// be in range.
pub trait IndexKernel: Memory {
    /// The largest (`max`) or smallest element of each `[o, :, i]` line of `x`, and its index:
    /// NaN counts as the extreme, and the first of equal extremes wins.
    ///
    /// # Errors
    /// When the kernel fails.
    fn extremum(
        &self,
        axis: &Axis,
        max: bool,
        x: &Self::Storage,
        values: &mut Self::Storage,
        indices: &mut Self::Storage,
    ) -> Result<()>;

    /// Copies `block` from `src` into `dst`, leaving the rest of `dst` as it is.
    ///
    /// # Errors
    /// When the kernel fails.
    fn copy_block(&self, block: &Block, src: &Self::Storage, dst: &mut Self::Storage)
    -> Result<()>;

    /// `out[o, j, i] = x[o, indices[j], i]` for the `count` indices, `x` along `axis`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn gather(
        &self,
        axis: &Axis,
        x: &Self::Storage,
        indices: &Self::Storage,
        count: usize,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// Sets `x[m, i, j] = value` where `j > i`, in each of `matrices` square matrices of
    /// `size`.
    ///
    /// # Errors
    /// When the kernel fails.
    fn fill_above_diagonal(
        &self,
        matrices: usize,
        size: usize,
        value: f32,
        x: &mut Self::Storage,
    ) -> Result<()>;

    /// `out[o, indices[j], i] += src[o, j, i]` for the `count` indices, `out` along `axis`;
    /// repeated indices add up.
    ///
    /// # Errors
    /// When the kernel fails.
    fn scatter_add(
        &self,
        axis: &Axis,
        src: &Self::Storage,
        indices: &Self::Storage,
        count: usize,
        out: &mut Self::Storage,
    ) -> Result<()>;
}

impl<B: Backend> Tensor<B> {
    /// The largest element along `dim` and its index, like `torch.max(x, dim)` (`dim`
    /// removed; NaN wins; the first of equal maxima).
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec(vec![1.0, 9.0, 3.0, 4.0, 2.0, 8.0], [2, 3], &Cpu);
    /// let (values, indices) = x.try_max_dim(1)?;
    /// assert_eq!(values.to_vec(), [9.0, 8.0]);
    /// assert_eq!(indices.to_vec()?, [1, 2]);
    /// assert_eq!(x.try_min_dim(0)?.1.to_vec()?, [0, 1, 0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] when `dim` is not below the rank, [`Error::Usage`] when it is
    /// empty.
    pub fn try_max_dim(&self, dim: usize) -> Result<(Self, Indices<B>)> {
        self.extremum("max", dim, true)
    }

    /// The smallest element along `dim` and its index, like `torch.min(x, dim)`.
    ///
    /// # Errors
    /// As [`Tensor::try_max_dim`].
    pub fn try_min_dim(&self, dim: usize) -> Result<(Self, Indices<B>)> {
        self.extremum("min", dim, false)
    }

    /// The index of the largest element along `dim`, like `torch.argmax(x, dim)`: a
    /// classifier's predictions are `logits.try_argmax(1)`.
    ///
    /// # Errors
    /// As [`Tensor::try_max_dim`].
    pub fn try_argmax(&self, dim: usize) -> Result<Indices<B>> {
        Ok(self.extremum("argmax", dim, true)?.1)
    }

    /// The index of the smallest element along `dim`, like `torch.argmin(x, dim)`.
    ///
    /// # Errors
    /// As [`Tensor::try_max_dim`].
    pub fn try_argmin(&self, dim: usize) -> Result<Indices<B>> {
        Ok(self.extremum("argmin", dim, false)?.1)
    }

    fn extremum(&self, op: &'static str, dim: usize, max: bool) -> Result<(Self, Indices<B>)> {
        let axis = Axis::of(op, &self.shape, dim)?;
        if axis.len == 0 {
            return Err(Error::Usage(format!(
                "{op}: dim {dim} of {} is empty, so it has no extreme",
                self.shape
            )));
        }
        let mut dims = Dims::from_slice(self.shape.dims());
        dims.remove(dim);
        let mut values = Self::try_zeros(dims.clone(), &self.device)?;
        let mut indices = Self::try_zeros(dims, &self.device)?;
        self.device.extremum(
            &axis,
            max,
            &self.storage,
            &mut values.storage,
            &mut indices.storage,
        )?;
        Ok((values, Indices::from_kernel(indices, axis.len)))
    }

    /// `length` slices of `dim` from `start`, copied, like `x.narrow(dim, start, length)` (or
    /// `x[:, start:start + length]` for dim 1).
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [2, 3], &Cpu);
    /// assert_eq!(x.try_narrow(1, 1, 2)?.to_vec(), [1.0, 2.0, 4.0, 5.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] for a `dim` not below the rank, [`Error::Usage`] when the
    /// slices run past the end of `dim`.
    pub fn try_narrow(&self, dim: usize, start: usize, length: usize) -> Result<Self> {
        const OP: &str = "narrow";
        let axis = Axis::of(OP, &self.shape, dim)?;
        check_range(OP, &self.shape, dim, start, length)?;
        let mut dims = Dims::from_slice(self.shape.dims());
        dims[dim] = length;
        let mut out = Self::try_zeros(dims, &self.device)?;
        let block = Block {
            outer: axis.outer,
            inner: axis.inner,
            src_len: axis.len,
            src_offset: start,
            dst_len: length,
            dst_offset: 0,
            count: length,
        };
        self.device
            .copy_block(&block, &self.storage, &mut out.storage)?;
        Ok(out)
    }

    /// The gradient of [`Tensor::try_narrow`] for an input of `input_shape`: this gradient
    /// placed at `start` along `dim`, zeros elsewhere.
    ///
    /// # Errors
    /// [`Error::Shape`] when this gradient does not have the narrowed shape; as
    /// [`Tensor::try_narrow`].
    pub fn try_narrow_backward(
        &self,
        input_shape: &Shape,
        dim: usize,
        start: usize,
    ) -> Result<Self> {
        const OP: &str = "narrow backward";
        let axis = Axis::of(OP, input_shape, dim)?;
        let length = self.shape.dims().get(dim).copied().unwrap_or(0);
        check_range(OP, input_shape, dim, start, length)?;
        let mut expected = Dims::from_slice(input_shape.dims());
        expected[dim] = length;
        if self.shape.dims() != expected.as_slice() {
            return Err(Error::Shape {
                op: OP,
                expected: Shape::from(expected),
                found: self.shape.clone(),
            });
        }
        let mut grad = Self::try_zeros(input_shape.clone(), &self.device)?;
        let block = Block {
            outer: axis.outer,
            inner: axis.inner,
            src_len: length,
            src_offset: 0,
            dst_len: axis.len,
            dst_offset: start,
            count: length,
        };
        self.device
            .copy_block(&block, &self.storage, &mut grad.storage)?;
        Ok(grad)
    }

    /// `tensors` joined along `dim`, like `torch.cat(tensors, dim)`; every other dim must
    /// agree. The gradient of each part is [`Tensor::try_narrow`] of the output's gradient.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 2.0], [2, 1], &Cpu);
    /// let b = Tensor::from_vec(vec![3.0, 4.0, 5.0, 6.0], [2, 2], &Cpu);
    /// assert_eq!(Tensor::try_cat(&[&a, &b], 1)?.to_vec(), [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Usage`] for no tensors, [`Error::DimOutOfRange`] for a `dim` not below their
    /// rank, [`Error::Shape`] naming the first tensor that differs from the first elsewhere.
    pub fn try_cat(tensors: &[&Self], dim: usize) -> Result<Self> {
        const OP: &str = "cat";
        let Some(first) = tensors.first() else {
            return Err(Error::Usage(format!("{OP}: needs at least one tensor")));
        };
        Axis::of(OP, &first.shape, dim)?;
        let mut total = 0;
        for tensor in tensors {
            let mut expected = Dims::from_slice(first.shape.dims());
            let fits = tensor.rank() == first.rank() && {
                expected[dim] = tensor.shape.dims()[dim];
                tensor.shape.dims() == expected.as_slice()
            };
            if !fits {
                return Err(Error::Shape {
                    op: OP,
                    expected: Shape::from(expected),
                    found: tensor.shape.clone(),
                });
            }
            total += tensor.shape.dims()[dim];
        }
        let mut dims = Dims::from_slice(first.shape.dims());
        dims[dim] = total;
        Self::join_along(OP, dims, dim, tensors, |tensor| tensor.shape.dims()[dim])
    }

    /// A tensor of `dims` made of `tensors` one after another along `dim`, each a slab of
    /// `len(tensor)` along it (the slabs fill it). The callers check the shapes; this checks
    /// the devices.
    fn join_along(
        op: &'static str,
        dims: Dims,
        dim: usize,
        tensors: &[&Self],
        len: impl Fn(&Self) -> usize,
    ) -> Result<Self> {
        let device = &tensors[0].device;
        for tensor in tensors {
            tensors[0].check_same_device(op, tensor)?;
        }
        let total = dims[dim];
        let out_axis = Axis::of(op, &Shape::from(dims.clone()), dim)?;
        // The slabs cover every element.
        let mut out = Self::try_empty(dims, device)?;
        let mut offset = 0;
        for tensor in tensors {
            let len = len(tensor);
            let block = Block {
                outer: out_axis.outer,
                inner: out_axis.inner,
                src_len: len,
                src_offset: 0,
                dst_len: total,
                dst_offset: offset,
                count: len,
            };
            device.copy_block(&block, &tensor.storage, &mut out.storage)?;
            offset += len;
        }
        Ok(out)
    }

    /// `tensors`, all of one shape, stacked along a new dim `dim`, like
    /// `torch.stack(tensors, dim)`.
    ///
    /// # Errors
    /// As [`Tensor::try_cat`]; [`Error::DimOutOfRange`] when `dim` is above their rank.
    pub fn try_stack(tensors: &[&Self], dim: usize) -> Result<Self> {
        const OP: &str = "stack";
        let Some(first) = tensors.first() else {
            return Err(Error::Usage(format!("{OP}: needs at least one tensor")));
        };
        if dim > first.rank() {
            return Err(Error::DimOutOfRange {
                op: OP,
                dim,
                shape: first.shape.clone(),
            });
        }
        for tensor in tensors {
            if tensor.shape != first.shape {
                return Err(Error::Shape {
                    op: OP,
                    expected: first.shape.clone(),
                    found: tensor.shape.clone(),
                });
            }
        }
        // Each tensor is a slab of 1 along the new dim: no copies but into the output.
        let mut dims = Dims::from_slice(first.shape.dims());
        dims.insert(dim, tensors.len());
        Self::join_along(OP, dims, dim, tensors, |_| 1)
    }

    /// The slices of `dim` that `indices` name, in their order, like
    /// `torch.index_select(x, dim, indices)`: the rows of a mini-batch, an embedding lookup.
    /// Its gradient is [`Tensor::try_index_add_`] into zeros.
    ///
    /// # Errors
    /// [`Error::DimOutOfRange`] for a `dim` not below the rank; [`Error::Usage`] when an index
    /// is not below the size of `dim`.
    pub fn try_index_select(&self, dim: usize, indices: &Indices<B>) -> Result<Self> {
        const OP: &str = "index_select";
        let axis = Axis::of(OP, &self.shape, dim)?;
        check_indices(OP, &self.shape, dim, indices)?;
        self.check_same_device(OP, &indices.values)?;
        let mut dims = Dims::from_slice(self.shape.dims());
        dims[dim] = indices.len();
        let mut out = Self::try_zeros(dims, &self.device)?;
        self.device.gather(
            &axis,
            &self.storage,
            &indices.values.storage,
            indices.len(),
            &mut out.storage,
        )?;
        Ok(out)
    }

    /// A causal mask in place: every element of the last two dims, `[.., T, T]`, whose column
    /// is past its row is set to `value` (`-inf` before a softmax, so position `t` attends to
    /// positions up to `t`), like `x.masked_fill_(torch.ones(T, T).triu(1).bool(), value)`
    /// without the mask.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let mut scores = Tensor::ones([2, 2], &Cpu);
    /// scores.try_causal_fill_(0.0)?;
    /// assert_eq!(scores.to_vec(), [1.0, 0.0, 1.0, 1.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Usage`] when the last two dims are not one square size.
    pub fn try_causal_fill_(&mut self, value: f32) -> Result<()> {
        let size = self.square_size("causal_fill_")?;
        let matrices = self.numel() / (size * size).max(1);
        self.device
            .fill_above_diagonal(matrices, size, value, &mut self.storage)
    }

    /// The size of the square matrices of the last two dims (`T` of `[.., T, T]` scores).
    pub(crate) fn square_size(&self, op: &'static str) -> Result<usize> {
        match *self.dims() {
            [.., rows, cols] if rows == cols => Ok(rows),
            _ => Err(Error::Usage(format!(
                "{op}: {} has no square last two dims",
                self.shape
            ))),
        }
    }

    /// Adds the slices of `source` along `dim` into the slices of this tensor that `indices`
    /// name, like `x.index_add_(dim, indices, source)`; repeated indices add up.
    ///
    /// # Errors
    /// As [`Tensor::try_index_select`]; [`Error::Shape`] when `source` is not this tensor's
    /// shape with `indices.len()` slices along `dim`.
    pub fn try_index_add_(
        &mut self,
        dim: usize,
        indices: &Indices<B>,
        source: &Self,
    ) -> Result<()> {
        let mut expected = Dims::from_slice(self.shape.dims());
        // A `dim` out of range is an error in `index_add_shaped`.
        if let Some(slices) = expected.get_mut(dim) {
            *slices = indices.len();
        }
        self.index_add_shaped(dim, indices, source, expected.into())
    }

    /// [`Tensor::try_index_add_`] along dim 0 with indices of any shape, `source` holding a
    /// row for each index: `[indices' dims.., this tensor's dims after the first]` (an
    /// embedding's output gradient), read as it is instead of reshaped.
    pub(crate) fn try_index_add_rows_(
        &mut self,
        indices: &Indices<B>,
        source: &Self,
    ) -> Result<()> {
        let mut expected = Dims::from_slice(indices.shape().dims());
        // A tensor without dims is an error in `index_add_shaped`.
        expected.extend_from_slice(self.dims().get(1..).unwrap_or_default());
        self.index_add_shaped(0, indices, source, expected.into())
    }

    /// Adds the slices of `source`, checked to be `expected`, along `dim` into those that
    /// `indices` name.
    fn index_add_shaped(
        &mut self,
        dim: usize,
        indices: &Indices<B>,
        source: &Self,
        expected: Shape,
    ) -> Result<()> {
        let op = "index_add_";
        let axis = Axis::of(op, &self.shape, dim)?;
        check_indices(op, &self.shape, dim, indices)?;
        self.check_same_device(op, &indices.values)?;
        self.check_same_device(op, source)?;
        if source.shape != expected {
            return Err(Error::Shape {
                op,
                expected,
                found: source.shape.clone(),
            });
        }
        self.device.scatter_add(
            &axis,
            &source.storage,
            &indices.values.storage,
            indices.len(),
            &mut self.storage,
        )
    }
}

/// Requires `start..start + length` to lie within `dim` of `shape`.
fn check_range(
    op: &'static str,
    shape: &Shape,
    dim: usize,
    start: usize,
    length: usize,
) -> Result<()> {
    let size = shape.dims()[dim];
    if start.checked_add(length).is_some_and(|end| end <= size) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{op}: slices {start}..{} of dim {dim} run past its size {size} in {shape}",
            start.saturating_add(length)
        )))
    }
}

/// Requires every index to be below the size of `dim`.
fn check_indices<B: Backend>(
    op: &'static str,
    shape: &Shape,
    dim: usize,
    indices: &Indices<B>,
) -> Result<()> {
    let size = shape.dims()[dim];
    if indices.bound() <= size {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{op}: index {} is out of range for dim {dim} of size {size} in {shape}",
            indices.bound() - 1
        )))
    }
}

#[cfg(not(feature = "cuda"))]
impl IndexKernel for crate::Cuda {
    fn extremum(
        &self,
        _: &Axis,
        _: bool,
        _: &Self::Storage,
        _: &mut Self::Storage,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn copy_block(&self, _: &Block, _: &Self::Storage, _: &mut Self::Storage) -> Result<()> {
        self.unreachable()
    }

    fn gather(
        &self,
        _: &Axis,
        _: &Self::Storage,
        _: &Self::Storage,
        _: usize,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn fill_above_diagonal(&self, _: usize, _: usize, _: f32, _: &mut Self::Storage) -> Result<()> {
        self.unreachable()
    }

    fn scatter_add(
        &self,
        _: &Axis,
        _: &Self::Storage,
        _: &Self::Storage,
        _: usize,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    fn t(data: &[f32], dims: &[usize]) -> Tensor {
        Tensor::from_slice(data, dims, &Cpu)
    }

    fn dot(a: &Tensor, b: &Tensor) -> f32 {
        a.to_vec().iter().zip(b.to_vec()).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn extremes_along_every_dim_with_ties_and_nan() {
        let x = t(
            &[
                3.0, 1.0, 3.0, -2.0, 5.0, 0.0, 4.0, 4.0, -1.0, 2.0, 6.0, -3.0,
            ],
            &[2, 3, 2],
        );
        let (values, indices) = x.try_max_dim(1).unwrap();
        assert_eq!(values.dims(), &[2, 2]);
        assert_eq!(values.to_vec(), [5.0, 1.0, 6.0, 4.0]);
        assert_eq!(indices.to_vec().unwrap(), [2, 0, 2, 0]);
        // A tie (4, 4) keeps the first.
        assert_eq!(
            x.try_argmin(2).unwrap().to_vec().unwrap(),
            [1, 1, 1, 0, 0, 1]
        );
        assert_eq!(
            x.try_argmax(0).unwrap().to_vec().unwrap(),
            [1, 1, 0, 1, 1, 0]
        );
        let (min, at) = x.try_min_dim(0).unwrap();
        assert_eq!(min.to_vec(), [3.0, 1.0, -1.0, -2.0, 5.0, -3.0]);
        assert_eq!(at.bound(), 2);
        let nan = t(&[1.0, f32::NAN, 7.0], &[3]);
        let (value, index) = nan.try_max_dim(0).unwrap();
        assert!(value.item().is_nan());
        assert_eq!(index.to_vec().unwrap(), [1]);
        assert!(nan.try_min_dim(0).unwrap().0.item().is_nan());
        let error = Tensor::zeros([2, 0], &Cpu).try_argmax(1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: argmax: dim 1 of [2, 0] is empty, so it has no extreme"
        );
        assert!(x.try_argmax(3).is_err());
    }

    /// `narrow` and its gradient are adjoint: `<narrow(x), g> = <x, narrow_backward(g)>`.
    #[test]
    fn narrow_and_its_gradient() {
        let x = t(&(0..24).map(|v| v as f32).collect::<Vec<_>>(), &[2, 3, 4]);
        let y = x.try_narrow(2, 1, 2).unwrap();
        assert_eq!(y.dims(), &[2, 3, 2]);
        assert_eq!(y.to_vec()[..4], [1.0, 2.0, 5.0, 6.0]);
        let g = Tensor::randn([2, 3, 2], &Cpu, &mut crate::rng::seeded(1));
        let back = g.try_narrow_backward(x.shape(), 2, 1).unwrap();
        assert!((dot(&y, &g) - dot(&x, &back)).abs() < 1e-4);
        assert_eq!(back.to_vec()[..4], [0.0, g.to_vec()[0], g.to_vec()[1], 0.0]);
        let error = x.try_narrow(1, 2, 2).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: narrow: slices 2..4 of dim 1 run past its size 3 in [2, 3, 4]"
        );
        assert!(g.try_narrow_backward(x.shape(), 1, 0).is_err());
    }

    #[test]
    fn cat_and_stack() {
        let a = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let b = t(&[5.0, 6.0], &[1, 2]);
        let rows = Tensor::try_cat(&[&a, &b], 0).unwrap();
        assert_eq!(rows.dims(), &[3, 2]);
        assert_eq!(rows.to_vec(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // Each part's gradient is a narrow of the output's.
        assert_eq!(rows.try_narrow(0, 2, 1).unwrap().to_vec(), b.to_vec());
        let error = Tensor::try_cat(&[&a, &b], 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cat: expected shape [2, 2], found [1, 2]"
        );
        let c = t(&[10.0, 20.0, 30.0, 40.0], &[2, 2]);
        let stacked = Tensor::try_stack(&[&a, &c], 1).unwrap();
        assert_eq!(stacked.dims(), &[2, 2, 2]);
        assert_eq!(
            stacked.to_vec(),
            [1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0]
        );
        let first = Tensor::try_stack(&[&a, &c], 0).unwrap();
        assert_eq!(first.dims(), &[2, 2, 2]);
        assert_eq!(first.to_vec(), [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]);
        let last = Tensor::try_stack(&[&a, &c], 2).unwrap();
        assert_eq!(last.to_vec(), [1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
        assert_eq!(Tensor::try_stack(&[&a], 2).unwrap().dims(), &[2, 2, 1]);
        assert!(Tensor::try_stack(&[&a], 3).is_err());
        assert!(Tensor::<Cpu>::try_cat(&[], 0).is_err());
    }

    /// `index_select` and `index_add_` are adjoint, with repeated indices adding up.
    #[test]
    fn index_select_and_index_add() {
        let x = Tensor::randn([4, 3, 2], &Cpu, &mut crate::rng::seeded(2));
        let rows = Indices::new(&[2, 0, 2], &Cpu).unwrap();
        let y = x
            .try_index_select(1, &Indices::new(&[2, 0], &Cpu).unwrap())
            .unwrap();
        assert_eq!(y.dims(), &[4, 2, 2]);
        assert_eq!(y.to_vec()[..2], x.to_vec()[4..6]);
        let picked = x.try_index_select(0, &rows).unwrap();
        assert_eq!(picked.to_vec()[..6], x.to_vec()[12..18]);
        let g = Tensor::randn([3, 3, 2], &Cpu, &mut crate::rng::seeded(3));
        let mut grad = Tensor::zeros([4, 3, 2], &Cpu);
        grad.try_index_add_(0, &rows, &g).unwrap();
        assert!((dot(&picked, &g) - dot(&x, &grad)).abs() < 1e-4);
        assert_eq!(grad.to_vec()[6..12], [0.0; 6], "row 1 is never picked");

        let beyond = Indices::new(&[0, 3], &Cpu).unwrap();
        let error = x.try_index_select(1, &beyond).unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: index_select: index 3 is out of range for dim 1 of size 3 in [4, 3, 2]"
        );
        let error = grad.try_index_add_(0, &rows, &x).unwrap_err();
        assert_eq!(
            error.to_string(),
            "index_add_: expected shape [3, 3, 2], found [4, 3, 2]"
        );
        assert!(Indices::new(&[MAX_INDEX], &Cpu).is_err());
    }

    #[test]
    fn causal_fill_masks_above_each_diagonal() {
        let mut x = Tensor::ones([2, 3, 3], &Cpu);
        x.try_causal_fill_(f32::NEG_INFINITY).unwrap();
        let row = |m: usize, i: usize| x.to_vec()[(m * 3 + i) * 3..(m * 3 + i + 1) * 3].to_vec();
        let inf = f32::NEG_INFINITY;
        for m in 0..2 {
            assert_eq!(row(m, 0), [1.0, inf, inf]);
            assert_eq!(row(m, 1), [1.0, 1.0, inf]);
            assert_eq!(row(m, 2), [1.0, 1.0, 1.0]);
        }
        let error = Tensor::zeros([2, 3], &Cpu)
            .try_causal_fill_(0.0)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: causal_fill_: [2, 3] has no square last two dims"
        );
        assert!(Tensor::zeros([3], &Cpu).try_causal_fill_(0.0).is_err());
    }
}
