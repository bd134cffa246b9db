//! Elementwise ops of two tensors with PyTorch's broadcasting, their operators (`+ - * /`), and
//! the in-place updates built on them (`add_scaled_`, `masked_fill_`).

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;

use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use super::elementwise::{Operand, binary_ops};
use super::unary::UnaryOp;
use crate::backend::{Backend, Memory};
use crate::error::{Error, Result, or_panic};
use crate::shape::{Dims, Shape};
use crate::tensor::Tensor;

binary_ops! {
    /// `a + b`.
    Add {
        forward: |a, b| a + b => "a + b",
        d_lhs: 1.0 => "1.0f",
        d_rhs: 1.0 => "1.0f",
    }
    /// `a - b`.
    Sub {
        forward: |a, b| a - b => "a - b",
        d_lhs: 1.0 => "1.0f",
        d_rhs: -1.0 => "-1.0f",
    }
    /// `a * b`.
    Mul {
        forward: |a, b| a * b => "a * b",
        d_lhs: b => "b",
        d_rhs: a => "a",
    }
    /// `a / b`.
    Div {
        forward: |a, b| a / b => "a / b",
        d_lhs: 1.0 / b => "1.0f / b",
        d_rhs: -a / (b * b) => "-a / (b * b)",
    }
    /// The larger of `a` and `b`, NaN if either is, like `torch.maximum`; at a tie the
    /// gradient is split evenly, as PyTorch's is.
    Maximum {
        forward: |a, b| if a > b || a.is_nan() { a } else { b }
            => "a > b || isnan(a) ? a : b",
        d_lhs: tie_split(a, b) => "a > b ? 1.0f : (a == b ? 0.5f : 0.0f)",
        d_rhs: tie_split(b, a) => "b > a ? 1.0f : (a == b ? 0.5f : 0.0f)",
    }
    /// The smaller of `a` and `b`, NaN if either is, like `torch.minimum`; at a tie the
    /// gradient is split evenly, as PyTorch's is.
    Minimum {
        forward: |a, b| if a < b || a.is_nan() { a } else { b }
            => "a < b || isnan(a) ? a : b",
        d_lhs: tie_split(b, a) => "a < b ? 1.0f : (a == b ? 0.5f : 0.0f)",
        d_rhs: tie_split(a, b) => "b < a ? 1.0f : (a == b ? 0.5f : 0.0f)",
    }
    /// 1 where `a == b`, else 0, like `torch.eq` (as floats): `preds.eq(labels).mean()` is an
    /// accuracy. A comparison has no gradient.
    Eq {
        forward: |a, b| f32::from(u8::from(a == b)) => "a == b ? 1.0f : 0.0f",
        d_lhs: 0.0 => "0.0f",
        d_rhs: 0.0 => "0.0f",
    }
    /// `a + alpha * b`: a scaled update such as `w -= lr * grad`.
    AddScaled(alpha = -0.1) {
        forward: |a, b| a + alpha * b => "a + alpha * b",
        d_lhs: 1.0 => "1.0f",
        d_rhs: alpha => "alpha",
    }
    /// `value` where `b != 0`, else `a`: fills `a` where the mask `b` is set.
    MaskedFill(value = 7.0) {
        forward: |a, b| if b == 0.0 { a } else { value } => "b == 0.0f ? a : value",
        d_lhs: f32::from(u8::from(b == 0.0)) => "b == 0.0f ? 1.0f : 0.0f",
        d_rhs: 0.0 => "0.0f",
    }
}

/// `d max(a, b) / da`: 1 where `a` wins, 0 where it loses, and half at a tie.
fn tie_split(a: f32, b: f32) -> f32 {
    if a > b {
        1.0
    } else if a == b {
        0.5
    } else {
        0.0
    }
}

/// The kernels of the binary ops, over operands broadcast to one shape.
pub trait BinaryKernel: Memory {
    /// `out = op(lhs, rhs)` elementwise, with both operands read through `layout`'s
    /// broadcast strides.
    ///
    /// # Errors
    /// When the kernel fails.
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &Self::Storage,
        rhs: &Self::Storage,
        layout: &Broadcast,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `out = d op(lhs, rhs) / d wrt` elementwise, read like [`Self::binary`]: the partial
    /// derivative a backward pass multiplies the output's gradient by.
    ///
    /// # Errors
    /// When the kernel fails.
    fn binary_partial(
        &self,
        op: BinaryOp,
        wrt: Operand,
        lhs: &Self::Storage,
        rhs: &Self::Storage,
        layout: &Broadcast,
        out: &mut Self::Storage,
    ) -> Result<()>;

    /// `lhs = op(lhs, rhs)` elementwise in place; `lhs` has `layout`'s full shape.
    ///
    /// # Errors
    /// When the kernel fails.
    fn binary_assign(
        &self,
        op: BinaryOp,
        lhs: &mut Self::Storage,
        rhs: &Self::Storage,
        layout: &Broadcast,
    ) -> Result<()>;
}

#[cfg(not(feature = "cuda"))]
impl BinaryKernel for crate::Cuda {
    fn binary(
        &self,
        _: BinaryOp,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &Broadcast,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn binary_partial(
        &self,
        _: BinaryOp,
        _: Operand,
        _: &Self::Storage,
        _: &Self::Storage,
        _: &Broadcast,
        _: &mut Self::Storage,
    ) -> Result<()> {
        self.unreachable()
    }

    fn binary_assign(
        &self,
        _: BinaryOp,
        _: &mut Self::Storage,
        _: &Self::Storage,
        _: &Broadcast,
    ) -> Result<()> {
        self.unreachable()
    }
}

/// How two operands map onto the output of a binary op under PyTorch's broadcasting rules.
///
/// Strides are in elements, row-major, and 0 along dims an operand repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    /// The shape of the result.
    pub shape: Shape,
    /// The left operand's strides, one per dim of `shape`.
    pub lhs_strides: Dims,
    /// The right operand's strides, one per dim of `shape`.
    pub rhs_strides: Dims,
}

impl Broadcast {
    /// Aligns `lhs` and `rhs` from the right; each pair of sizes must be equal or contain a 1.
    ///
    /// # Errors
    /// [`Error::Broadcast`] naming `op`, both shapes and the first dim where they disagree.
    pub fn new(op: &'static str, lhs: &Shape, rhs: &Shape) -> Result<Self> {
        let rank = lhs.rank().max(rhs.rank());
        let size_at = |shape: &Shape, dim: usize| {
            let offset = rank - shape.rank();
            if dim < offset {
                1
            } else {
                shape.dims()[dim - offset]
            }
        };
        let mut dims = Dims::with_capacity(rank);
        for dim in 0..rank {
            let (l, r) = (size_at(lhs, dim), size_at(rhs, dim));
            dims.push(match (l, r) {
                _ if l == r => l,
                (1, _) => r,
                (_, 1) => l,
                _ => {
                    return Err(Error::Broadcast {
                        op,
                        lhs: lhs.clone(),
                        rhs: rhs.clone(),
                        dim,
                        lhs_size: l,
                        rhs_size: r,
                    });
                }
            });
        }
        Ok(Self {
            lhs_strides: broadcast_strides(lhs, rank),
            rhs_strides: broadcast_strides(rhs, rank),
            shape: Shape::from(dims),
        })
    }

    /// The same mapping in as few dims as it takes: dims of size 1 dropped, and each dim merged
    /// into the one outside it wherever both operands step through the two as one run
    /// (contiguous, or both repeated). A bias of `[C, 1, 1]` added to `[N, C, H, W]` walks
    /// rows of `H * W` instead of `W`.
    #[must_use]
    pub fn coalesced(&self) -> Self {
        let (mut dims, mut lhs, mut rhs) = (Dims::new(), Dims::new(), Dims::new());
        let walk = self
            .shape
            .dims()
            .iter()
            .zip(&self.lhs_strides)
            .zip(&self.rhs_strides);
        for ((&size, &lhs_stride), &rhs_stride) in walk.filter(|((size, _), _)| **size != 1) {
            if let (Some(outer), Some(outer_lhs), Some(outer_rhs)) =
                (dims.last_mut(), lhs.last_mut(), rhs.last_mut())
                && *outer_lhs == lhs_stride * size
                && *outer_rhs == rhs_stride * size
            {
                *outer *= size;
                (*outer_lhs, *outer_rhs) = (lhs_stride, rhs_stride);
                continue;
            }
            dims.push(size);
            lhs.push(lhs_stride);
            rhs.push(rhs_stride);
        }
        Self {
            shape: Shape::from(dims),
            lhs_strides: lhs,
            rhs_strides: rhs,
        }
    }
}

/// `shape`'s row-major strides, left-padded to `rank`, with 0 wherever a size of 1 repeats.
fn broadcast_strides(shape: &Shape, rank: usize) -> Dims {
    let own = shape.strides();
    let mut strides: Dims = smallvec::smallvec![0; rank - shape.rank()];
    strides.extend(
        shape
            .dims()
            .iter()
            .zip(own)
            .map(|(&size, stride)| if size == 1 { 0 } else { stride }),
    );
    strides
}

impl<B: Backend> Tensor<B> {
    /// `op(self, other)` elementwise with broadcasting, into a new tensor.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes cannot be broadcast together.
    pub fn try_zip(&self, op: BinaryOp, name: &'static str, other: &Self) -> Result<Self> {
        self.check_same_device(name, other)?;
        let layout = Broadcast::new(name, &self.shape, &other.shape)?;
        let mut out = Self::try_empty(layout.shape.clone(), &self.device)?;
        self.device
            .binary(op, &self.storage, &other.storage, &layout, &mut out.storage)?;
        Ok(out)
    }

    /// `self = op(self, other)` elementwise in place; `other` may broadcast, `self` may not.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes cannot be broadcast together,
    /// [`Error::InPlaceShape`] when the result would not have `self`'s shape.
    pub fn try_zip_(&mut self, op: BinaryOp, name: &'static str, other: &Self) -> Result<()> {
        self.check_same_device(name, other)?;
        let layout = Broadcast::new(name, &self.shape, &other.shape)?;
        if layout.shape != self.shape {
            return Err(Error::InPlaceShape {
                op: name,
                target: self.shape.clone(),
                result: layout.shape,
            });
        }
        self.device
            .binary_assign(op, &mut self.storage, &other.storage, &layout)
    }

    /// `self + other` with broadcasting, like `torch.add`.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes cannot be broadcast together.
    pub fn try_add(&self, other: &Self) -> Result<Self> {
        self.try_zip(BinaryOp::Add, "add", other)
    }

    /// `self - other` with broadcasting, like `torch.sub`.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes cannot be broadcast together.
    pub fn try_sub(&self, other: &Self) -> Result<Self> {
        self.try_zip(BinaryOp::Sub, "sub", other)
    }

    /// `self * other` with broadcasting, like `torch.mul`.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes cannot be broadcast together.
    pub fn try_mul(&self, other: &Self) -> Result<Self> {
        self.try_zip(BinaryOp::Mul, "mul", other)
    }

    /// `self / other` with broadcasting, like `torch.div`.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes cannot be broadcast together.
    pub fn try_div(&self, other: &Self) -> Result<Self> {
        self.try_zip(BinaryOp::Div, "div", other)
    }

    /// 1 where the elements are equal, else 0, with broadcasting, like `torch.eq` (as
    /// floats, so the result sums and averages).
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let predictions = Tensor::from_vec(vec![1.0, 2.0, 0.0], [3], &Cpu);
    /// let labels = Tensor::from_vec(vec![1.0, 0.0, 0.0], [3], &Cpu);
    /// assert_eq!(predictions.try_eq(&labels)?.to_vec(), [1.0, 0.0, 1.0]);
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the shapes cannot be broadcast together.
    pub fn try_eq(&self, other: &Self) -> Result<Self> {
        self.try_zip(BinaryOp::Eq, "eq", other)
    }

    /// `self += alpha * other` in place, without a temporary: the update `w -= lr * grad` is
    /// `w.add_scaled_(-lr, &grad)`, like `w.add_(grad, alpha=-lr)` in PyTorch.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let mut w = Tensor::from_vec(vec![1.0, 2.0], [2], &Cpu);
    /// let grad = Tensor::from_vec(vec![10.0, -10.0], [2], &Cpu);
    /// w.add_scaled_(-0.1, &grad);
    /// assert_eq!(w.to_vec(), [0.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn add_scaled_(&mut self, alpha: f32, other: &Self) {
        or_panic(self.try_add_scaled_(alpha, other));
    }

    /// `self += alpha * other` in place.
    ///
    /// # Errors
    /// As [`Tensor::try_zip_`].
    pub fn try_add_scaled_(&mut self, alpha: f32, other: &Self) -> Result<()> {
        self.try_zip_(BinaryOp::AddScaled(alpha), "add_scaled_", other)
    }

    /// Sets `self` to `value` wherever `mask` is non-zero, like `t[mask] = value` or
    /// `masked_fill_` in PyTorch; `mask` may broadcast. Masks come from [`Tensor::lt`] and
    /// [`Tensor::gt`].
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let h = Tensor::from_vec(vec![-1.0, 2.0, -3.0], [3], &Cpu);
    /// let mut grad = Tensor::from_vec(vec![5.0, 6.0, 7.0], [3], &Cpu);
    /// grad.masked_fill_(&h.lt(0.0), 0.0); // grad[h < 0] = 0
    /// assert_eq!(grad.to_vec(), [0.0, 6.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn masked_fill_(&mut self, mask: &Self, value: f32) {
        or_panic(self.try_masked_fill_(mask, value));
    }

    /// Sets `self` to `value` wherever `mask` is non-zero.
    ///
    /// # Errors
    /// As [`Tensor::try_zip_`].
    pub fn try_masked_fill_(&mut self, mask: &Self, value: f32) -> Result<()> {
        self.try_zip_(BinaryOp::MaskedFill(value), "masked_fill_", mask)
    }
}

impl<B: Backend> Tensor<B> {
    /// Checks that `other` has `self`'s shape, for ops that do not broadcast.
    pub(crate) fn check_same_shape(&self, op: &'static str, other: &Self) -> Result<()> {
        if other.shape == self.shape {
            Ok(())
        } else {
            Err(Error::Shape {
                op,
                expected: self.shape.clone(),
                found: other.shape.clone(),
            })
        }
    }

    /// The gradient through `op(a, b)` with respect to one operand: `self` (the gradient of
    /// the output) times the partial derivative at `(a, b)`, summed back to that operand's
    /// shape where it was broadcast.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when `a` and `b` do not broadcast together,
    /// [`Error::Shape`] when `self` does not have their broadcast shape.
    pub fn try_zip_backward(&self, op: BinaryOp, wrt: Operand, a: &Self, b: &Self) -> Result<Self> {
        const OP: &str = "zip_backward";
        a.check_same_device(OP, b)?;
        self.check_same_device(OP, a)?;
        let layout = Broadcast::new(OP, &a.shape, &b.shape)?;
        if layout.shape != self.shape {
            return Err(Error::Shape {
                op: OP,
                expected: layout.shape,
                found: self.shape.clone(),
            });
        }
        let mut grad = Self::try_empty(layout.shape.clone(), &self.device)?;
        self.device
            .binary_partial(op, wrt, &a.storage, &b.storage, &layout, &mut grad.storage)?;
        grad.try_zip_(BinaryOp::Mul, OP, self)?;
        let operand = match wrt {
            Operand::Lhs => a,
            Operand::Rhs => b,
        };
        if operand.shape == grad.shape {
            Ok(grad)
        } else {
            grad.try_sum_to_shape(&operand.shape)
        }
    }

    /// The larger of each pair of elements, with broadcasting, like `torch.maximum`.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::{Cpu, Tensor};
    /// let a = Tensor::from_vec(vec![1.0, 5.0], [2], &Cpu);
    /// let b = Tensor::from_vec(vec![3.0], [1], &Cpu);
    /// assert_eq!(a.maximum(&b).to_vec(), [3.0, 5.0]);
    /// ```
    #[track_caller]
    #[must_use]
    pub fn maximum(&self, other: &Self) -> Self {
        or_panic(self.try_zip(BinaryOp::Maximum, "maximum", other))
    }

    /// The smaller of each pair of elements, with broadcasting, like `torch.minimum`.
    #[track_caller]
    #[must_use]
    pub fn minimum(&self, other: &Self) -> Self {
        or_panic(self.try_zip(BinaryOp::Minimum, "minimum", other))
    }

    /// Sums `self` down to `shape`, undoing a broadcast: the gradient of an operand that was
    /// broadcast to `self`'s shape (a `[D]` bias added to `[B, D]` gets the sum over `B`).
    ///
    /// # Errors
    /// [`Error::Broadcast`] when `shape` does not broadcast to `self`'s shape.
    pub fn try_sum_to_shape(&self, shape: &Shape) -> Result<Self> {
        let layout = Broadcast::new("sum_to_shape", shape, &self.shape)?;
        if layout.shape != self.shape {
            return Err(Error::InPlaceShape {
                op: "sum_to_shape",
                target: self.shape.clone(),
                result: layout.shape,
            });
        }
        let extra = self.rank() - shape.rank();
        // The sums so far; `self` itself until the first.
        let mut out: Option<Self> = None;
        for _ in 0..extra {
            out = Some(out.as_ref().unwrap_or(self).try_sum_dim(0, false)?);
        }
        for (dim, &size) in shape.dims().iter().enumerate() {
            let current = out.as_ref().unwrap_or(self);
            if size == 1 && current.dims()[dim] != 1 {
                out = Some(current.try_sum_dim(dim, true)?);
            }
        }
        out.map_or_else(|| self.try_clone(), Ok)
    }

    /// `self` repeated to `shape` under broadcasting, like `torch.Tensor.expand(..).clone()`.
    ///
    /// # Errors
    /// [`Error::Broadcast`] or [`Error::InPlaceShape`] when `self` does not broadcast to `shape`.
    pub fn try_broadcast_to(&self, shape: &Shape) -> Result<Self> {
        let mut out = Self::try_zeros(shape.clone(), &self.device)?;
        out.try_zip_(BinaryOp::Add, "broadcast_to", self)?;
        Ok(out)
    }
}

/// `Tensor op Tensor` operators by reference (new tensor) and by value (reusing the left
/// buffer when the result has its shape), plus the in-place `op=` form.
macro_rules! tensor_operator {
    ($trait:ident, $method:ident, $assign_trait:ident, $assign_method:ident, $op:expr, $name:literal) => {
        impl<B: Backend> $trait<&Tensor<B>> for &Tensor<B> {
            type Output = Tensor<B>;
            #[track_caller]
            fn $method(self, rhs: &Tensor<B>) -> Tensor<B> {
                or_panic(self.try_zip($op, $name, rhs))
            }
        }

        impl<B: Backend> $trait<&Tensor<B>> for Tensor<B> {
            type Output = Tensor<B>;
            #[track_caller]
            fn $method(mut self, rhs: &Tensor<B>) -> Tensor<B> {
                let fits = Broadcast::new($name, &self.shape, &rhs.shape)
                    .is_ok_and(|layout| layout.shape == self.shape);
                if fits {
                    or_panic(self.try_zip_($op, $name, rhs));
                    self
                } else {
                    or_panic(self.try_zip($op, $name, rhs))
                }
            }
        }

        impl<B: Backend> $assign_trait<&Tensor<B>> for Tensor<B> {
            #[track_caller]
            fn $assign_method(&mut self, rhs: &Tensor<B>) {
                or_panic(self.try_zip_($op, $name, rhs));
            }
        }
    };
}

tensor_operator!(Add, add, AddAssign, add_assign, BinaryOp::Add, "add");
tensor_operator!(Sub, sub, SubAssign, sub_assign, BinaryOp::Sub, "sub");
tensor_operator!(Mul, mul, MulAssign, mul_assign, BinaryOp::Mul, "mul");
tensor_operator!(Div, div, DivAssign, div_assign, BinaryOp::Div, "div");

/// `Tensor op f32` (and `f32 op Tensor` where the op commutes) as a unary map.
macro_rules! scalar_operator {
    ($trait:ident, $method:ident, |$s:ident| $unary:expr) => {
        impl<B: Backend> $trait<f32> for &Tensor<B> {
            type Output = Tensor<B>;
            fn $method(self, $s: f32) -> Tensor<B> {
                self.map($unary)
            }
        }

        impl<B: Backend> $trait<f32> for Tensor<B> {
            type Output = Tensor<B>;
            fn $method(self, $s: f32) -> Tensor<B> {
                self.map_owned($unary)
            }
        }
    };
}

scalar_operator!(Add, add, |s| UnaryOp::AddScalar(s));
scalar_operator!(Sub, sub, |s| UnaryOp::AddScalar(-s));
scalar_operator!(Mul, mul, |s| UnaryOp::MulScalar(s));
scalar_operator!(Div, div, |s| UnaryOp::MulScalar(1.0 / s));

impl<B: Backend> Mul<&Tensor<B>> for f32 {
    type Output = Tensor<B>;
    fn mul(self, rhs: &Tensor<B>) -> Tensor<B> {
        rhs * self
    }
}

impl<B: Backend> Mul<Tensor<B>> for f32 {
    type Output = Tensor<B>;
    fn mul(self, rhs: Tensor<B>) -> Tensor<B> {
        rhs * self
    }
}

impl<B: Backend> Add<&Tensor<B>> for f32 {
    type Output = Tensor<B>;
    fn add(self, rhs: &Tensor<B>) -> Tensor<B> {
        rhs + self
    }
}

impl<B: Backend> MulAssign<f32> for Tensor<B> {
    fn mul_assign(&mut self, rhs: f32) {
        self.map_(UnaryOp::MulScalar(rhs));
    }
}

impl<B: Backend> Neg for &Tensor<B> {
    type Output = Tensor<B>;
    fn neg(self) -> Tensor<B> {
        self.map(UnaryOp::Neg)
    }
}

impl<B: Backend> Neg for Tensor<B> {
    type Output = Tensor<B>;
    fn neg(self) -> Tensor<B> {
        self.map_owned(UnaryOp::Neg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;

    fn t(data: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(data, shape, &Cpu)
    }

    #[test]
    fn same_shape_arithmetic() {
        let a = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let b = t(&[0.5, -1.0, 2.0, 8.0], &[2, 2]);
        assert_eq!((&a + &b).to_vec(), [1.5, 1.0, 5.0, 12.0]);
        assert_eq!((&a - &b).to_vec(), [0.5, 3.0, 1.0, -4.0]);
        assert_eq!((&a * &b).to_vec(), [0.5, -2.0, 6.0, 32.0]);
        assert_eq!((&a / &b).to_vec(), [2.0, -2.0, 1.5, 0.5]);
    }

    #[test]
    fn bias_broadcasts_over_rows_like_pytorch() {
        let x = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        let bias = t(&[10.0, 20.0, 30.0], &[3]);
        assert_eq!((&x + &bias).to_vec(), [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        assert_eq!((&bias + &x).to_vec(), [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let column = t(&[1.0, -1.0], &[2, 1]);
        assert_eq!((&x * &column).to_vec(), [1.0, 2.0, 3.0, -4.0, -5.0, -6.0]);
    }

    #[test]
    fn coalescing_merges_the_dims_both_operands_walk_as_one() {
        let layout = |lhs: &[usize], rhs: &[usize]| {
            let layout = Broadcast::new("add", &Shape::from(lhs), &Shape::from(rhs)).unwrap();
            let merged = layout.coalesced();
            assert_eq!(merged.shape.numel(), layout.shape.numel());
            (
                merged.shape.dims().to_vec(),
                merged.lhs_strides,
                merged.rhs_strides,
            )
        };
        let (dims, lhs, rhs) = layout(&[2, 3, 4, 5], &[3, 1, 1]);
        assert_eq!(
            (dims, &lhs[..], &rhs[..]),
            (vec![2, 3, 20], &[60, 20, 1][..], &[0, 1, 0][..])
        );
        let (dims, lhs, rhs) = layout(&[4, 1, 5], &[4, 1, 5]);
        assert_eq!((dims, &lhs[..], &rhs[..]), (vec![20], &[1][..], &[1][..]));
        let (dims, lhs, rhs) = layout(&[2, 3], &[2, 1]);
        assert_eq!(
            (dims, &lhs[..], &rhs[..]),
            (vec![2, 3], &[3, 1][..], &[1, 0][..])
        );
        let (dims, _, _) = layout(&[1, 1], &[1]);
        assert!(dims.is_empty(), "one element: a scalar walk");
    }

    /// Shapes whose coalesced walk merges, drops or keeps dims, small and large enough to run in
    /// parts, give what the plain walk would: every element against the definition.
    #[test]
    fn coalesced_walks_give_every_element() {
        let cases: [(&[usize], &[usize]); 8] = [
            (&[2, 3, 4, 5], &[3, 1, 1]),
            (&[2, 1, 4], &[3, 1]),
            (&[3, 1, 2], &[1, 4, 1]),
            (&[5], &[1]),
            (&[2, 0, 3], &[3]),
            (&[64, 3, 40, 40], &[3, 1, 1]),
            (&[1, 3000], &[100, 3000]),
            (&[301, 1, 500], &[7, 500]),
        ];
        for (lhs_dims, rhs_dims) in cases {
            let numel = |dims: &[usize]| dims.iter().product::<usize>();
            let values =
                |len: usize, scale: f32| (0..len).map(|v| v as f32 * scale).collect::<Vec<_>>();
            let lhs = t(&values(numel(lhs_dims), 1.0), lhs_dims);
            let rhs = t(&values(numel(rhs_dims), 100.0), rhs_dims);
            let layout = Broadcast::new("add", lhs.shape(), rhs.shape()).unwrap();
            let sum = (&lhs + &rhs).to_vec();
            let (a, b) = (lhs.to_vec(), rhs.to_vec());
            let mut expected = Vec::new();
            let dims = layout.shape.dims();
            for index in 0..layout.shape.numel() {
                let (mut rest, mut at_lhs, mut at_rhs) = (index, 0, 0);
                for d in (0..dims.len()).rev() {
                    let i = rest % dims[d];
                    rest /= dims[d];
                    at_lhs += i * layout.lhs_strides[d];
                    at_rhs += i * layout.rhs_strides[d];
                }
                expected.push(a[at_lhs] + b[at_rhs]);
            }
            assert_eq!(sum, expected, "{lhs_dims:?} + {rhs_dims:?}");
            let mut in_place = lhs.clone();
            if in_place.shape() == &layout.shape {
                in_place += &rhs;
                assert_eq!(in_place.to_vec(), expected, "{lhs_dims:?} += {rhs_dims:?}");
            }
        }
    }

    #[test]
    fn both_operands_broadcast() {
        let column = t(&[1.0, 2.0], &[2, 1]);
        let row = t(&[10.0, 20.0, 30.0], &[1, 3]);
        let sum = &column + &row;
        assert_eq!(sum.dims(), &[2, 3]);
        assert_eq!(sum.to_vec(), [11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
        let scalar = t(&[2.0], &[]);
        assert_eq!((&row * &scalar).to_vec(), [20.0, 40.0, 60.0]);
        // Rank 0 throughout: one row of one element.
        let mut product = &scalar * &scalar;
        assert_eq!((product.dims(), product.to_vec()), (&[][..], vec![4.0]));
        product += &scalar;
        assert_eq!(product.to_vec(), [6.0]);
    }

    #[test]
    fn incompatible_shapes_are_rejected_naming_both() {
        let error = t(&[0.0; 6], &[2, 3])
            .try_add(&t(&[0.0; 4], &[4]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "add: cannot broadcast [2, 3] with [4]: sizes 3 and 4 differ at dim 1"
        );
        let error = t(&[0.0; 6], &[2, 3])
            .try_mul(&t(&[0.0; 6], &[3, 2]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "mul: cannot broadcast [2, 3] with [3, 2]: sizes 2 and 3 differ at dim 0"
        );
    }

    #[test]
    #[should_panic(expected = "sub: cannot broadcast [2] with [3]")]
    fn operator_panics_with_the_checked_message() {
        let _ = &t(&[0.0; 2], &[2]) - &t(&[0.0; 3], &[3]);
    }

    #[test]
    fn owned_operator_reuses_or_allocates_as_the_shape_needs() {
        let a = t(&[1.0, 2.0], &[2]);
        assert_eq!((a.clone() - &t(&[1.0], &[1])).to_vec(), [0.0, 1.0]);
        let grown = a - &t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        assert_eq!(grown.dims(), &[2, 2]);
        assert_eq!(grown.to_vec(), [0.0, 0.0, -2.0, -2.0]);
    }

    #[test]
    fn scalar_operators() {
        let a = t(&[1.0, -2.0], &[2]);
        assert_eq!((&a * 2.0).to_vec(), [2.0, -4.0]);
        assert_eq!((2.0 * &a).to_vec(), [2.0, -4.0]);
        assert_eq!((2.0 * a.clone()).to_vec(), [2.0, -4.0]);
        assert_eq!((&a + 1.0).to_vec(), [2.0, -1.0]);
        assert_eq!((1.0 + &a).to_vec(), [2.0, -1.0]);
        assert_eq!((&a - 1.0).to_vec(), [0.0, -3.0]);
        assert_eq!((-&a).to_vec(), [-1.0, 2.0]);
        assert_eq!((-a.clone()).to_vec(), [-1.0, 2.0]);
        let mut b = a;
        b *= 3.0;
        assert_eq!(b.to_vec(), [3.0, -6.0]);
    }

    #[test]
    fn in_place_updates() {
        let mut w = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        w -= &t(&[1.0, 1.0], &[2]);
        assert_eq!(w.to_vec(), [0.0, 1.0, 2.0, 3.0]);
        w += &t(&[1.0; 4], &[2, 2]);
        assert_eq!(w.to_vec(), [1.0, 2.0, 3.0, 4.0]);
        w.add_scaled_(-0.5, &t(&[2.0, 4.0, 6.0, 8.0], &[2, 2]));
        assert_eq!(w.to_vec(), [0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn in_place_cannot_grow_the_target() {
        let mut w = t(&[1.0, 2.0], &[2]);
        let error = w.try_add_scaled_(1.0, &t(&[0.0; 4], &[2, 2])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "add_scaled_: cannot write a result of shape [2, 2] into a tensor of shape [2]"
        );
        assert_eq!(
            w.to_vec(),
            [1.0, 2.0],
            "a failed op leaves the tensor as it was"
        );
    }

    #[test]
    fn masked_fill_sets_where_mask_is_set_and_checks_shapes() {
        let h = t(&[-1.0, 0.0, 2.0, -3.0], &[2, 2]);
        let mut grad = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        grad.masked_fill_(&h.lt(0.0), 0.0);
        assert_eq!(grad.to_vec(), [0.0, 2.0, 3.0, 0.0]);
        let error = grad.try_masked_fill_(&t(&[1.0; 3], &[3]), 0.0).unwrap_err();
        assert_eq!(
            error.to_string(),
            "masked_fill_: cannot broadcast [2, 2] with [3]: sizes 2 and 3 differ at dim 1"
        );
    }

    #[test]
    fn maximum_and_minimum_propagate_nan_and_split_ties() {
        let a = t(&[1.0, 4.0, 2.0, f32::NAN], &[4]);
        let b = t(&[3.0, 2.0, 2.0, 0.0], &[4]);
        assert_eq!(a.maximum(&b).to_vec()[..3], [3.0, 4.0, 2.0]);
        assert!(a.maximum(&b).to_vec()[3].is_nan());
        assert!(b.minimum(&a).to_vec()[3].is_nan());
        assert_eq!(a.minimum(&b).to_vec()[..3], [1.0, 2.0, 2.0]);
        let g = t(&[1.0; 4], &[4]);
        let da = g
            .try_zip_backward(BinaryOp::Maximum, Operand::Lhs, &a, &b)
            .unwrap();
        let db = g
            .try_zip_backward(BinaryOp::Maximum, Operand::Rhs, &a, &b)
            .unwrap();
        assert_eq!(da.to_vec()[..3], [0.0, 1.0, 0.5]);
        assert_eq!(db.to_vec()[..3], [1.0, 0.0, 0.5]);
    }

    /// Every binary op's partial derivatives against central differences, with the right
    /// operand broadcast, so the gradients are summed back to its shape.
    #[test]
    fn every_partial_matches_a_finite_difference() {
        let a = t(&[0.7, -1.3, 2.1, 0.4, -0.6, 1.9], &[2, 3]);
        let b = t(&[1.1, -0.8, 0.5], &[3]);
        let g = t(&[0.5, -1.0, 2.0, 1.5, -0.25, 1.0], &[2, 3]);
        let loss = |op: BinaryOp, a: &Tensor, b: &Tensor| -> f64 {
            let y = a.try_zip(op, "test", b).unwrap().to_vec();
            y.iter()
                .zip(g.to_vec())
                .map(|(&y, g)| f64::from(y) * f64::from(g))
                .sum()
        };
        for &op in BinaryOp::EXAMPLES {
            for (wrt, operand) in [(Operand::Lhs, &a), (Operand::Rhs, &b)] {
                let analytic = g.try_zip_backward(op, wrt, &a, &b).unwrap();
                assert_eq!(analytic.shape(), operand.shape(), "{op:?} {wrt:?}");
                for i in 0..operand.numel() {
                    let h = 1e-2f32;
                    let nudged = |delta: f32| {
                        let mut data = operand.to_vec();
                        data[i] += delta;
                        let moved = Tensor::from_vec(data, operand.shape().clone(), &Cpu);
                        match wrt {
                            Operand::Lhs => loss(op, &moved, &b),
                            Operand::Rhs => loss(op, &a, &moved),
                        }
                    };
                    let numeric = (nudged(h) - nudged(-h)) / (2.0 * f64::from(h));
                    let value = f64::from(analytic.to_vec()[i]);
                    assert!(
                        (value - numeric).abs() <= 1e-2 * numeric.abs().max(1.0),
                        "{op:?} {wrt:?} at {i}: analytic {value} vs numeric {numeric}"
                    );
                }
            }
        }
    }

    #[test]
    fn sum_to_shape_undoes_broadcasting() {
        let grad = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        assert_eq!(
            grad.try_sum_to_shape(&Shape::from([3])).unwrap().to_vec(),
            [5.0, 7.0, 9.0]
        );
        let column = grad.try_sum_to_shape(&Shape::from([2, 1])).unwrap();
        assert_eq!(column.dims(), &[2, 1]);
        assert_eq!(column.to_vec(), [6.0, 15.0]);
        assert_eq!(
            grad.try_sum_to_shape(&Shape::from([])).unwrap().item(),
            21.0
        );
        assert_eq!(
            grad.try_sum_to_shape(grad.shape()).unwrap().to_vec(),
            grad.to_vec()
        );
        assert!(grad.try_sum_to_shape(&Shape::from([2])).is_err());
    }

    #[test]
    fn broadcast_to_repeats() {
        let row = t(&[1.0, 2.0], &[2]);
        let out = row.try_broadcast_to(&Shape::from([2, 2])).unwrap();
        assert_eq!(out.to_vec(), [1.0, 2.0, 1.0, 2.0]);
        assert!(row.try_broadcast_to(&Shape::from([3])).is_err());
    }

    #[test]
    fn zero_sized_dims_broadcast_like_pytorch() {
        let empty = Tensor::zeros([0, 3], &Cpu);
        let out = &empty + &t(&[1.0, 2.0, 3.0], &[3]);
        assert_eq!(out.dims(), &[0, 3]);
        assert!(out.to_vec().is_empty());
    }
}
