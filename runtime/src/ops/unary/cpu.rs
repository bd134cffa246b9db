//! CPU kernels of the unary ops: one loop per kernel, compiled once per op with the op's own
//! function (see [`UnaryVisitor`]) and for the CPU's SIMD width (see [`vectorized`]).

use super::{UnaryKernel, UnaryOp};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;
use crate::ops::elementwise::{
    BinaryFn, BinaryVisitor, UnaryFn, UnaryVisitor, UnaryWithDerivativeFn,
    UnaryWithDerivativeVisitor,
};

/// `out[i] = f(x[i])`.
struct Map<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
}

impl UnaryVisitor for Map<'_> {
    type Output = ();
    fn visit(self, f: impl UnaryFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: UnaryFn> Vectorizable for (Map<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (Map { x, out }, f) = self;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f.call(v);
        }
    }
}

/// `x[i] = f(x[i])`.
struct MapInPlace<'a>(&'a mut [f32]);

impl UnaryVisitor for MapInPlace<'_> {
    type Output = ();
    fn visit(self, f: impl UnaryFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: UnaryFn> Vectorizable for (MapInPlace<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (MapInPlace(x), f) = self;
        for v in x.iter_mut() {
            *v = f.call(*v);
        }
    }
}

/// `out[i] = f(x[i])` and `derivative[i] = f'(x[i])`.
struct MapWithDerivative<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
    derivative: &'a mut [f32],
}

impl UnaryWithDerivativeVisitor for MapWithDerivative<'_> {
    type Output = ();
    fn visit(self, f: impl UnaryWithDerivativeFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: UnaryWithDerivativeFn> Vectorizable for (MapWithDerivative<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (MapWithDerivative { x, out, derivative }, f) = self;
        for ((o, d), &v) in out.iter_mut().zip(derivative.iter_mut()).zip(x) {
            (*o, *d) = f.call(v);
        }
    }
}

/// `x[i] = f(x[i])` and `derivative[i] = f'(x[i])`.
struct MapInPlaceWithDerivative<'a> {
    x: &'a mut [f32],
    derivative: &'a mut [f32],
}

impl UnaryWithDerivativeVisitor for MapInPlaceWithDerivative<'_> {
    type Output = ();
    fn visit(self, f: impl UnaryWithDerivativeFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: UnaryWithDerivativeFn> Vectorizable for (MapInPlaceWithDerivative<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (MapInPlaceWithDerivative { x, derivative }, f) = self;
        for (v, d) in x.iter_mut().zip(derivative.iter_mut()) {
            (*v, *d) = f.call(*v);
        }
    }
}

/// `out[i] = f(grad[i], saved[i])`.
struct Backward<'a> {
    grad: &'a [f32],
    saved: &'a [f32],
    out: &'a mut [f32],
}

impl BinaryVisitor for Backward<'_> {
    type Output = ();
    fn visit(self, f: impl BinaryFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: BinaryFn> Vectorizable for (Backward<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (Backward { grad, saved, out }, f) = self;
        for ((o, &g), &s) in out.iter_mut().zip(grad).zip(saved) {
            *o = f.call(g, s);
        }
    }
}

/// `grad[i] = f(grad[i], saved[i])`.
struct BackwardInPlace<'a> {
    grad: &'a mut [f32],
    saved: &'a [f32],
}

impl BinaryVisitor for BackwardInPlace<'_> {
    type Output = ();
    fn visit(self, f: impl BinaryFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: BinaryFn> Vectorizable for (BackwardInPlace<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (BackwardInPlace { grad, saved }, f) = self;
        for (g, &s) in grad.iter_mut().zip(saved) {
            *g = f.call(*g, s);
        }
    }
}

impl<F: UnaryFn> Divisible for (Map<'_>, F) {
    fn units(&self) -> usize {
        self.0.x.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (Map { x, out }, f) = self;
        let ((x_left, x_right), (out_left, out_right)) = (x.split_at(mid), out.split_at_mut(mid));
        let part = |x, out| (Map { x, out }, f);
        (part(x_left, out_left), part(x_right, out_right))
    }
}

impl<F: UnaryFn> Divisible for (MapInPlace<'_>, F) {
    fn units(&self) -> usize {
        self.0.0.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (MapInPlace(x), f) = self;
        let (left, right) = x.split_at_mut(mid);
        ((MapInPlace(left), f), (MapInPlace(right), f))
    }
}

impl<F: UnaryWithDerivativeFn> Divisible for (MapWithDerivative<'_>, F) {
    fn units(&self) -> usize {
        self.0.x.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (MapWithDerivative { x, out, derivative }, f) = self;
        let (x_left, x_right) = x.split_at(mid);
        let (out_left, out_right) = out.split_at_mut(mid);
        let (derivative_left, derivative_right) = derivative.split_at_mut(mid);
        let part = |x, out, derivative| (MapWithDerivative { x, out, derivative }, f);
        (
            part(x_left, out_left, derivative_left),
            part(x_right, out_right, derivative_right),
        )
    }
}

impl<F: UnaryWithDerivativeFn> Divisible for (MapInPlaceWithDerivative<'_>, F) {
    fn units(&self) -> usize {
        self.0.x.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (MapInPlaceWithDerivative { x, derivative }, f) = self;
        let (x_left, x_right) = x.split_at_mut(mid);
        let (derivative_left, derivative_right) = derivative.split_at_mut(mid);
        let part = |x, derivative| (MapInPlaceWithDerivative { x, derivative }, f);
        (
            part(x_left, derivative_left),
            part(x_right, derivative_right),
        )
    }
}

impl<F: BinaryFn> Divisible for (Backward<'_>, F) {
    fn units(&self) -> usize {
        self.0.grad.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (Backward { grad, saved, out }, f) = self;
        let (grad_left, grad_right) = grad.split_at(mid);
        let (saved_left, saved_right) = saved.split_at(mid);
        let (out_left, out_right) = out.split_at_mut(mid);
        let part = |grad, saved, out| (Backward { grad, saved, out }, f);
        (
            part(grad_left, saved_left, out_left),
            part(grad_right, saved_right, out_right),
        )
    }
}

impl<F: BinaryFn> Divisible for (BackwardInPlace<'_>, F) {
    fn units(&self) -> usize {
        self.0.grad.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (BackwardInPlace { grad, saved }, f) = self;
        let (grad_left, grad_right) = grad.split_at_mut(mid);
        let (saved_left, saved_right) = saved.split_at(mid);
        let part = |grad, saved| (BackwardInPlace { grad, saved }, f);
        (part(grad_left, saved_left), part(grad_right, saved_right))
    }
}

impl UnaryKernel for Cpu {
    fn unary(&self, op: UnaryOp, x: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        op.forward(Map { x, out });
        Ok(())
    }

    fn unary_assign(&self, op: UnaryOp, x: &mut Vec<f32>) -> Result<()> {
        op.forward(MapInPlace(x));
        Ok(())
    }

    fn unary_with_derivative(
        &self,
        op: UnaryOp,
        x: &Vec<f32>,
        out: &mut Vec<f32>,
        derivative: &mut Vec<f32>,
    ) -> Result<()> {
        op.with_derivative(MapWithDerivative { x, out, derivative });
        Ok(())
    }

    fn unary_assign_with_derivative(
        &self,
        op: UnaryOp,
        x: &mut Vec<f32>,
        derivative: &mut Vec<f32>,
    ) -> Result<()> {
        op.with_derivative(MapInPlaceWithDerivative { x, derivative });
        Ok(())
    }

    fn unary_backward(
        &self,
        op: UnaryOp,
        grad: &Vec<f32>,
        saved: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        op.backward(Backward { grad, saved, out });
        Ok(())
    }

    fn unary_backward_assign(
        &self,
        op: UnaryOp,
        grad: &mut Vec<f32>,
        saved: &Vec<f32>,
    ) -> Result<()> {
        op.backward(BackwardInPlace { grad, saved });
        Ok(())
    }
}
