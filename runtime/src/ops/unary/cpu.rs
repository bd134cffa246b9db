//! CPU kernels of the unary ops: one loop per kernel, compiled once per op with the op's own
//! closure (see [`UnaryVisitor`]).

use super::{UnaryKernel, UnaryOp};
use crate::backend::Cpu;
use crate::error::Result;
use crate::ops::elementwise::{BinaryVisitor, UnaryVisitor};

/// `out[i] = f(x[i])`.
struct Map<'a> {
    x: &'a [f32],
    out: &'a mut [f32],
}

impl UnaryVisitor for Map<'_> {
    type Output = ();
    fn visit(self, f: impl Fn(f32) -> f32 + Copy) {
        for (o, &v) in self.out.iter_mut().zip(self.x) {
            *o = f(v);
        }
    }
}

/// `x[i] = f(x[i])`.
struct MapInPlace<'a>(&'a mut [f32]);

impl UnaryVisitor for MapInPlace<'_> {
    type Output = ();
    fn visit(self, f: impl Fn(f32) -> f32 + Copy) {
        for v in self.0.iter_mut() {
            *v = f(*v);
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
    fn visit(self, f: impl Fn(f32, f32) -> f32 + Copy) {
        for ((o, &g), &s) in self.out.iter_mut().zip(self.grad).zip(self.saved) {
            *o = f(g, s);
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
    fn visit(self, f: impl Fn(f32, f32) -> f32 + Copy) {
        for (g, &s) in self.grad.iter_mut().zip(self.saved) {
            *g = f(*g, s);
        }
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
