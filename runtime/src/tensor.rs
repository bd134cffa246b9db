//! [`Tensor`]: a row-major `f32` array with a dynamic shape, stored on a [`Backend`].
//!
//! This file holds the type, its constructors and transfers; the ops live in `ops/`.

use std::fmt;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal, StandardUniform};

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result, or_panic};
use crate::shape::Shape;

/// A row-major `f32` tensor on device `B`.
///
/// Methods follow PyTorch's names (`mm`, `t`, `clamp_min`, `pow`, `sum`, `item`). Each op that can
/// be given mismatched shapes has a `try_` form returning [`Error`]; the plain form panics with
/// the same message, pointing at the caller. `clone` copies the data, like `torch.clone`.
pub struct Tensor<B: Backend = Cpu> {
    pub(crate) device: B,
    pub(crate) shape: Shape,
    pub(crate) storage: B::Storage,
}

impl<B: Backend> Drop for Tensor<B> {
    fn drop(&mut self) {
        self.device.recycle(&mut self.storage);
    }
}

impl<B: Backend> Tensor<B> {
    /// Wraps a buffer that already holds `shape.numel()` elements.
    pub(crate) fn from_parts(device: B, shape: Shape, storage: B::Storage) -> Self {
        Self {
            device,
            shape,
            storage,
        }
    }

    /// A tensor of zeros.
    #[track_caller]
    pub fn zeros(shape: impl Into<Shape>, device: &B) -> Self {
        or_panic(Self::try_zeros(shape, device))
    }

    /// A tensor of zeros.
    ///
    /// # Errors
    /// When the shape overflows or the device cannot allocate.
    pub fn try_zeros(shape: impl Into<Shape>, device: &B) -> Result<Self> {
        let shape = shape.into();
        let storage = device.zeros(shape.numel_for("zeros")?)?;
        Ok(Self::from_parts(device.clone(), shape, storage))
    }

    /// A tensor for a kernel that writes every element: its values are unspecified until then.
    ///
    /// # Errors
    /// When the shape overflows or the device cannot allocate.
    pub(crate) fn try_empty(shape: impl Into<Shape>, device: &B) -> Result<Self> {
        let shape = shape.into();
        let storage = device.empty(shape.numel_for("empty")?)?;
        Ok(Self::from_parts(device.clone(), shape, storage))
    }

    /// A tensor filled with `value`.
    #[track_caller]
    pub fn full(shape: impl Into<Shape>, value: f32, device: &B) -> Self {
        or_panic(Self::try_full(shape, value, device))
    }

    /// A tensor filled with `value`.
    ///
    /// # Errors
    /// When the shape overflows or the device cannot allocate.
    pub fn try_full(shape: impl Into<Shape>, value: f32, device: &B) -> Result<Self> {
        let mut tensor = Self::try_empty(shape, device)?;
        device.fill(&mut tensor.storage, value)?;
        Ok(tensor)
    }

    /// A tensor of ones.
    #[track_caller]
    pub fn ones(shape: impl Into<Shape>, device: &B) -> Self {
        Self::full(shape, 1.0, device)
    }

    /// A tensor of zeros with `self`'s shape and device, like `torch.zeros_like`.
    #[must_use]
    pub fn zeros_like(&self) -> Self {
        Self::zeros(self.shape.clone(), &self.device)
    }

    /// A tensor holding `data` in row-major order.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &Cpu);
    /// assert_eq!(t.dims(), &[2, 3]);
    /// assert_eq!(t.to_vec(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    /// ```
    #[track_caller]
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>, device: &B) -> Self {
        or_panic(Self::try_from_vec(data, shape, device))
    }

    /// A tensor holding `data` in row-major order.
    ///
    /// # Errors
    /// [`Error::Length`] when `data` does not have `shape.numel()` elements.
    pub fn try_from_vec(data: Vec<f32>, shape: impl Into<Shape>, device: &B) -> Result<Self> {
        let shape = shape.into();
        check_length("from_vec", &shape, data.len())?;
        let storage = device.upload_vec(data)?;
        Ok(Self::from_parts(device.clone(), shape, storage))
    }

    /// A tensor holding a copy of `data` in row-major order.
    #[track_caller]
    pub fn from_slice(data: &[f32], shape: impl Into<Shape>, device: &B) -> Self {
        or_panic(Self::try_from_slice(data, shape, device))
    }

    /// A tensor holding a copy of `data` in row-major order.
    ///
    /// # Errors
    /// [`Error::Length`] when `data` does not have `shape.numel()` elements.
    pub fn try_from_slice(data: &[f32], shape: impl Into<Shape>, device: &B) -> Result<Self> {
        let shape = shape.into();
        check_length("from_slice", &shape, data.len())?;
        let storage = device.upload(data)?;
        Ok(Self::from_parts(device.clone(), shape, storage))
    }

    /// Samples from the standard normal distribution N(0, 1), like `torch.randn`.
    ///
    /// Numbers are drawn on the host from `rng`, so a seeded rng gives the same tensor on
    /// every device (not the numbers PyTorch's generator gives).
    #[track_caller]
    pub fn randn<R: Rng + ?Sized>(shape: impl Into<Shape>, device: &B, rng: &mut R) -> Self {
        Self::sample(shape, device, rng, &StandardNormal)
    }

    /// Samples uniformly from `[0, 1)`, like `torch.rand`.
    #[track_caller]
    pub fn rand<R: Rng + ?Sized>(shape: impl Into<Shape>, device: &B, rng: &mut R) -> Self {
        Self::sample(shape, device, rng, &StandardUniform)
    }

    /// Samples uniformly from `[low, high)`, like `torch.empty(..).uniform_(low, high)`.
    #[track_caller]
    pub fn uniform<R: Rng + ?Sized>(
        shape: impl Into<Shape>,
        low: f32,
        high: f32,
        device: &B,
        rng: &mut R,
    ) -> Self {
        // In place: a model's initialisation leaves no temporaries in the buffer pool.
        Self::rand(shape, device, rng) * (high - low) + low
    }

    #[track_caller]
    fn sample<R: Rng + ?Sized>(
        shape: impl Into<Shape>,
        device: &B,
        rng: &mut R,
        distribution: &impl Distribution<f32>,
    ) -> Self {
        let shape = shape.into();
        let numel = or_panic(shape.numel_for("sample"));
        let data = distribution.sample_iter(rng).take(numel).collect();
        Self::from_vec(data, shape, device)
    }

    /// The shape.
    #[must_use]
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions, outermost first.
    #[must_use]
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// The number of dimensions.
    #[must_use]
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    /// The number of elements.
    #[must_use]
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// The device the data lives on.
    #[must_use]
    pub fn device(&self) -> &B {
        &self.device
    }

    /// The elements in row-major order, copied to the host.
    #[track_caller]
    #[must_use]
    pub fn to_vec(&self) -> Vec<f32> {
        or_panic(self.try_to_vec())
    }

    /// The elements in row-major order, copied to the host.
    ///
    /// # Errors
    /// When the device cannot copy.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        self.device.download(&self.storage)
    }

    /// A copy on `device`, like `torch.Tensor.to(device)`; the data passes through the host.
    #[track_caller]
    #[must_use]
    pub fn to_device<C: Backend>(&self, device: &C) -> Tensor<C> {
        or_panic(self.try_to_device(device))
    }

    /// A copy on `device`; the data passes through the host.
    ///
    /// # Errors
    /// When either device cannot copy or allocate.
    pub fn try_to_device<C: Backend>(&self, device: &C) -> Result<Tensor<C>> {
        let storage = device.upload_vec(self.try_to_vec()?)?;
        Ok(Tensor::from_parts(
            device.clone(),
            self.shape.clone(),
            storage,
        ))
    }

    /// Overwrites the elements with `data` from the host, in place (the buffer stays where it
    /// is, so a captured [`StepGraph`](crate::StepGraph) sees the new values).
    ///
    /// # Errors
    /// [`Error::Length`] when `data` does not hold exactly as many elements.
    pub fn try_copy_from_slice(&mut self, data: &[f32]) -> Result<()> {
        check_length("copy_from_slice", &self.shape, data.len())?;
        self.device.upload_into_at(data, &mut self.storage, 0)
    }

    /// The value of a one-element tensor, like `torch.Tensor.item`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let t = Tensor::from_vec(vec![1.5, 2.5], [2], &Cpu);
    /// assert_eq!(t.sum().item(), 4.0);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn item(&self) -> f32 {
        or_panic(self.try_item())
    }

    /// The value of a one-element tensor.
    ///
    /// # Errors
    /// [`Error::NotScalar`] when the tensor does not hold exactly one element.
    pub fn try_item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::NotScalar {
                op: "item",
                shape: self.shape.clone(),
            });
        }
        let mut value = [0.0];
        self.device.download_into(&self.storage, &mut value)?;
        Ok(value[0])
    }

    /// The same data under another shape with as many elements; no copy.
    #[track_caller]
    #[must_use]
    pub fn reshape(self, shape: impl Into<Shape>) -> Self {
        or_panic(self.try_reshape(shape))
    }

    /// The same data under another shape with as many elements; no copy.
    ///
    /// # Errors
    /// [`Error::Reshape`] when the element counts differ.
    pub fn try_reshape(mut self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.checked_numel() != Some(self.numel()) {
            return Err(Error::Reshape {
                op: "reshape",
                from: self.shape.clone(),
                to: shape,
            });
        }
        self.shape = shape;
        Ok(self)
    }

    /// A copy of the tensor, like `torch.clone`.
    ///
    /// # Errors
    /// When the device cannot allocate or copy.
    pub fn try_clone(&self) -> Result<Self> {
        let storage = self.device.copy(&self.storage)?;
        Ok(Self::from_parts(
            self.device.clone(),
            self.shape.clone(),
            storage,
        ))
    }

    /// Copies `src`'s elements into `self`, like `Tensor.copy_` (same shape, no broadcasting).
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes differ.
    pub fn try_copy_(&mut self, src: &Self) -> Result<()> {
        self.check_same_device("copy_", src)?;
        if self.shape != src.shape {
            return Err(Error::Shape {
                op: "copy_",
                expected: self.shape.clone(),
                found: src.shape.clone(),
            });
        }
        self.device.copy_into(&src.storage, &mut self.storage)
    }

    /// Sets every element to `value`, like `Tensor.fill_`.
    #[track_caller]
    pub fn fill_(&mut self, value: f32) {
        or_panic(self.device.fill(&mut self.storage, value));
    }

    /// Sets every element to zero, like `Tensor.zero_`.
    #[track_caller]
    pub fn zero_(&mut self) {
        self.fill_(0.0);
    }

    /// Checks that `other` lives on the same device, for an op named `op`.
    pub(crate) fn check_same_device(&self, op: &'static str, other: &Self) -> Result<()> {
        if self.device == other.device {
            Ok(())
        } else {
            Err(Error::DeviceMismatch {
                op,
                lhs: self.device.name(),
                rhs: other.device.name(),
            })
        }
    }
}

fn check_length(op: &'static str, shape: &Shape, len: usize) -> Result<()> {
    if shape.checked_numel() == Some(len) {
        Ok(())
    } else {
        Err(Error::Length {
            op,
            shape: shape.clone(),
            len,
        })
    }
}

/// Requires `vector` to be `[len]` and on `like`'s device: a per-channel or per-column
/// parameter of an op on `like`.
pub(crate) fn check_vector<B: Backend>(
    op: &'static str,
    vector: &Tensor<B>,
    len: usize,
    like: &Tensor<B>,
) -> Result<()> {
    like.check_same_device(op, vector)?;
    if vector.dims() == [len] {
        Ok(())
    } else {
        Err(Error::Shape {
            op,
            expected: Shape::from([len]),
            found: vector.shape.clone(),
        })
    }
}

impl<B: Backend> Clone for Tensor<B> {
    #[track_caller]
    fn clone(&self) -> Self {
        or_panic(self.try_clone())
    }
}

impl<B: Backend> fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("device", &self.device.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    /// Ops whose outputs start as reused buffers (with the values of a dropped tensor) write
    /// every element: with NaN-filled buffers waiting in the pool, no NaN comes out.
    #[test]
    fn outputs_in_reused_buffers_are_overwritten() {
        use crate::ops::unary::UnaryOp;
        let shape = [32, 16, 64];
        let x = Tensor::randn(shape, &Cpu, &mut seeded(0));
        let y = Tensor::randn(shape, &Cpu, &mut seeded(1));
        let results: Vec<Tensor> = (0..9)
            .map(|op| {
                // Each op finds a NaN buffer of its output's length waiting.
                drop(Tensor::from_vec(vec![f32::NAN; 32 * 16 * 64], shape, &Cpu));
                match op {
                    0 => x.try_map(UnaryOp::Gelu),
                    1 => x.try_map_backward(UnaryOp::Gelu, &y),
                    2 => x.try_zip(crate::ops::binary::BinaryOp::Add, "add", &y),
                    3 => x.try_softmax(2),
                    4 => x.try_permute(&[2, 0, 1]),
                    // [16, 64, 8] by its transpose: [16, 64, 64], as many elements.
                    5 => {
                        let a = Tensor::randn([16, 64, 8], &Cpu, &mut seeded(2));
                        a.try_matmul_with(&a, (false, true))
                    }
                    6 => x.try_layer_norm(None, None, 1e-5).map(|(y, _)| y),
                    7 => Tensor::try_full(shape, 2.0, &Cpu),
                    _ => x.try_log_softmax(2),
                }
                .unwrap()
            })
            .collect();
        for (op, result) in results.iter().enumerate() {
            assert!(
                result.to_vec().iter().all(|v| !v.is_nan()),
                "op {op} left stale values"
            );
        }
    }

    #[test]
    fn constructors_fill_as_named() {
        assert_eq!(Tensor::zeros([2, 2], &Cpu).to_vec(), [0.0; 4]);
        assert_eq!(Tensor::ones([3], &Cpu).to_vec(), [1.0; 3]);
        assert_eq!(Tensor::full([2], 7.5, &Cpu).to_vec(), [7.5; 2]);
        let t = Tensor::from_slice(&[1.0, 2.0], [2], &Cpu);
        assert_eq!(t.zeros_like().to_vec(), [0.0; 2]);
    }

    #[test]
    fn from_vec_rejects_wrong_length_naming_shape_and_length() {
        let error = Tensor::<Cpu>::try_from_vec(vec![1.0; 5], [2, 3], &Cpu).unwrap_err();
        assert_eq!(
            error.to_string(),
            "from_vec: shape [2, 3] holds 6 elements, but 5 were given"
        );
    }

    #[test]
    #[should_panic(expected = "from_slice: shape [4] holds 4 elements, but 3 were given")]
    fn from_slice_panics_with_the_same_message() {
        let _ = Tensor::from_slice(&[1.0; 3], [4], &Cpu);
    }

    #[test]
    fn zeros_of_overflowing_shape_is_an_error_not_an_abort() {
        let error = Tensor::<Cpu>::try_zeros([usize::MAX, 4], &Cpu).unwrap_err();
        assert!(matches!(error, Error::TooLarge { op: "zeros", .. }));
    }

    #[test]
    fn randn_is_seeded_and_roughly_standard() {
        let a = Tensor::randn([100, 100], &Cpu, &mut seeded(3));
        let b = Tensor::randn([100, 100], &Cpu, &mut seeded(3));
        assert_eq!(a.to_vec(), b.to_vec());
        let values = a.to_vec();
        let mean = values.iter().sum::<f32>() / 1e4;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 1e4;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn uniform_stays_in_range() {
        let t = Tensor::uniform([1000], -0.5, 0.25, &Cpu, &mut seeded(4));
        assert!(t.to_vec().iter().all(|&v| (-0.5..0.25).contains(&v)));
        let r = Tensor::rand([1000], &Cpu, &mut seeded(5));
        assert!(r.to_vec().iter().all(|&v| (0.0..1.0).contains(&v)));
    }

    #[test]
    fn item_needs_exactly_one_element() {
        assert_eq!(Tensor::full([1, 1], 2.0, &Cpu).item(), 2.0);
        let error = Tensor::zeros([2, 3], &Cpu).try_item().unwrap_err();
        assert_eq!(
            error.to_string(),
            "item: expected a tensor with one element, found shape [2, 3]"
        );
    }

    #[test]
    fn reshape_keeps_data_and_checks_count() {
        let t = Tensor::from_vec((0..6).map(|i| i as f32).collect(), [2, 3], &Cpu);
        let r = t.clone().reshape([3, 2]);
        assert_eq!(r.dims(), &[3, 2]);
        assert_eq!(r.to_vec(), t.to_vec());
        let error = t.try_reshape([4]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "reshape: cannot reshape [2, 3] (6 elements) into [4] (4 elements)"
        );
    }

    #[test]
    fn copy_checks_shapes() {
        let mut a = Tensor::zeros([2], &Cpu);
        a.try_copy_(&Tensor::ones([2], &Cpu)).unwrap();
        assert_eq!(a.to_vec(), [1.0; 2]);
        let error = a.try_copy_(&Tensor::ones([3], &Cpu)).unwrap_err();
        assert_eq!(error.to_string(), "copy_: expected shape [2], found [3]");
    }

    #[test]
    fn copy_from_slice_writes_in_place_and_checks_length() {
        let mut a = Tensor::zeros([2, 2], &Cpu);
        a.try_copy_from_slice(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(a.to_vec(), [1.0, 2.0, 3.0, 4.0]);
        let error = a.try_copy_from_slice(&[1.0]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "copy_from_slice: shape [2, 2] holds 4 elements, but 1 were given"
        );
        let moved = a.to_device(&Cpu);
        assert_eq!((moved.dims(), moved.to_vec()), (a.dims(), a.to_vec()));
    }

    #[test]
    fn clone_is_deep_and_fill_changes_only_the_target() {
        let a = Tensor::ones([3], &Cpu);
        let mut b = a.clone();
        b.zero_();
        assert_eq!(a.to_vec(), [1.0; 3]);
        assert_eq!(b.to_vec(), [0.0; 3]);
    }
}
