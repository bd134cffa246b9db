//! CPU kernels of the elementwise binary ops, walking broadcast strides row by row in as few
//! dims as the layout allows ([`Broadcast::coalesced`]); each loop is compiled once per op with
//! the op's own closure (see [`BinaryVisitor`]) and for the CPU's SIMD width (see
//! [`vectorized`]), and large ones run in parts along the outermost dim.

use super::{BinaryKernel, BinaryOp, Broadcast};
use crate::backend::Cpu;
use crate::backend::cpu::{Divisible, Vectorizable, vectorized_in_parts};
use crate::error::Result;
use crate::ops::elementwise::{BinaryFn, BinaryVisitor, Operand};
use crate::shape::{Dims, Shape};

/// One innermost row of a broadcast walk: where it starts in each buffer and the strides of the
/// two operands along it (the output is contiguous).
#[derive(Clone, Copy)]
struct Row {
    out: usize,
    lhs: usize,
    rhs: usize,
    len: usize,
    lhs_stride: usize,
    rhs_stride: usize,
}

/// The innermost rows of `layout.shape`, in row-major order. An iterator rather than a
/// function calling a closure per row: the closure was not inlined, so its loops ran as wide
/// as the baseline build (SSE, 4 floats) inside kernels compiled for AVX-512.
struct Rows<'a> {
    layout: &'a Broadcast,
    dims: &'a [usize],
    /// How many rows, and the next one's number.
    count: usize,
    next: usize,
    /// The next row's index over the outer dims, and the row itself.
    index: Dims,
    row: Row,
}

#[inline(always)]
fn rows(layout: &Broadcast) -> Rows<'_> {
    let dims = layout.shape.dims();
    // A scalar is one row of one element.
    let (len, count) = match dims.split_last() {
        Some((&len, outer)) if len > 0 => (len, outer.iter().product()),
        Some(_) => (0, 0),
        None => (1, 1),
    };
    let inner = |strides: &Dims| strides.last().copied().unwrap_or(0);
    Rows {
        layout,
        dims,
        count,
        next: 0,
        index: smallvec::smallvec![0; dims.len().saturating_sub(1)],
        row: Row {
            out: 0,
            lhs: 0,
            rhs: 0,
            len,
            lhs_stride: inner(&layout.lhs_strides),
            rhs_stride: inner(&layout.rhs_strides),
        },
    }
}

impl Iterator for Rows<'_> {
    type Item = Row;

    #[inline(always)]
    fn next(&mut self) -> Option<Row> {
        if self.next == self.count {
            return None;
        }
        let row = self.row;
        self.next += 1;
        self.row.out += row.len;
        // Advance the odometer over the outer dims, keeping both operand offsets in step.
        let (lhs_strides, rhs_strides) = (&self.layout.lhs_strides, &self.layout.rhs_strides);
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            self.row.lhs += lhs_strides[d];
            self.row.rhs += rhs_strides[d];
            if self.index[d] < self.dims[d] {
                break;
            }
            self.row.lhs -= lhs_strides[d] * self.dims[d];
            self.row.rhs -= rhs_strides[d] * self.dims[d];
            self.index[d] = 0;
        }
        Some(row)
    }
}

/// The number of outer indices of a walk of `layout`, and the elements under each.
fn outer_units(layout: &Broadcast) -> (usize, usize) {
    match layout.shape.dims().split_first() {
        Some((&outer, inner)) => (outer, inner.iter().product()),
        None => (1, 1),
    }
}

/// A walk of `layout` split at outer index `mid`: the layouts of the two parts, and where the
/// second starts in the left operand, the right operand and the output.
fn split_walk(layout: &Broadcast, mid: usize) -> ([Broadcast; 2], [usize; 3]) {
    let (outer, inner) = outer_units(layout);
    let part = |outer: usize| {
        let mut dims = Dims::from_slice(layout.shape.dims());
        dims[0] = outer;
        Broadcast {
            shape: Shape::from(dims),
            ..layout.clone()
        }
    };
    let starts = [
        mid * layout.lhs_strides[0],
        mid * layout.rhs_strides[0],
        mid * inner,
    ];
    ([part(mid), part(outer - mid)], starts)
}

/// `out = f(lhs, rhs)` over `layout`.
struct Zip<'a> {
    lhs: &'a [f32],
    rhs: &'a [f32],
    layout: Broadcast,
    out: &'a mut [f32],
}

impl BinaryVisitor for Zip<'_> {
    type Output = ();
    fn visit(self, f: impl BinaryFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: BinaryFn> Divisible for (Zip<'_>, F) {
    fn units(&self) -> usize {
        outer_units(&self.0.layout).0
    }
    fn unit_len(&self) -> usize {
        outer_units(&self.0.layout).1
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (
            Zip {
                lhs,
                rhs,
                layout,
                out,
            },
            f,
        ) = self;
        let ([left, right], [lhs_at, rhs_at, out_at]) = split_walk(&layout, mid);
        let (out_left, out_right) = out.split_at_mut(out_at);
        let left = Zip {
            lhs,
            rhs,
            layout: left,
            out: out_left,
        };
        let right = Zip {
            lhs: &lhs[lhs_at..],
            rhs: &rhs[rhs_at..],
            layout: right,
            out: out_right,
        };
        ((left, f), (right, f))
    }
}

impl<F: BinaryFn> Vectorizable for (Zip<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (
            Zip {
                lhs,
                rhs,
                layout,
                out,
            },
            f,
        ) = self;
        for row in rows(&layout) {
            let out = &mut out[row.out..row.out + row.len];
            match (row.lhs_stride, row.rhs_stride) {
                (1, 1) => {
                    let lhs = &lhs[row.lhs..row.lhs + row.len];
                    let rhs = &rhs[row.rhs..row.rhs + row.len];
                    for ((o, &a), &b) in out.iter_mut().zip(lhs).zip(rhs) {
                        *o = f.call(a, b);
                    }
                }
                (1, 0) => {
                    let lhs = &lhs[row.lhs..row.lhs + row.len];
                    let b = rhs[row.rhs];
                    for (o, &a) in out.iter_mut().zip(lhs) {
                        *o = f.call(a, b);
                    }
                }
                (ls, rs) => {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = f.call(lhs[row.lhs + j * ls], rhs[row.rhs + j * rs]);
                    }
                }
            }
        }
    }
}

/// `lhs = f(lhs, rhs)` over `layout`, whose shape is `lhs`'s own (so `lhs` is contiguous).
struct ZipInPlace<'a> {
    lhs: &'a mut [f32],
    rhs: &'a [f32],
    layout: Broadcast,
}

impl BinaryVisitor for ZipInPlace<'_> {
    type Output = ();
    fn visit(self, f: impl BinaryFn) {
        vectorized_in_parts((self, f));
    }
}

impl<F: BinaryFn> Divisible for (ZipInPlace<'_>, F) {
    fn units(&self) -> usize {
        outer_units(&self.0.layout).0
    }
    fn unit_len(&self) -> usize {
        outer_units(&self.0.layout).1
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (ZipInPlace { lhs, rhs, layout }, f) = self;
        let ([left, right], [_, rhs_at, out_at]) = split_walk(&layout, mid);
        let (lhs_left, lhs_right) = lhs.split_at_mut(out_at);
        let left = ZipInPlace {
            lhs: lhs_left,
            rhs,
            layout: left,
        };
        let right = ZipInPlace {
            lhs: lhs_right,
            rhs: &rhs[rhs_at..],
            layout: right,
        };
        ((left, f), (right, f))
    }
}

impl<F: BinaryFn> Vectorizable for (ZipInPlace<'_>, F) {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (ZipInPlace { lhs, rhs, layout }, f) = self;
        for row in rows(&layout) {
            let lhs = &mut lhs[row.out..row.out + row.len];
            match row.rhs_stride {
                1 => {
                    for (a, &b) in lhs.iter_mut().zip(&rhs[row.rhs..row.rhs + row.len]) {
                        *a = f.call(*a, b);
                    }
                }
                0 => {
                    let b = rhs[row.rhs];
                    for a in lhs.iter_mut() {
                        *a = f.call(*a, b);
                    }
                }
                rs => {
                    for (j, a) in lhs.iter_mut().enumerate() {
                        *a = f.call(*a, rhs[row.rhs + j * rs]);
                    }
                }
            }
        }
    }
}

impl BinaryKernel for Cpu {
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &Vec<f32>,
        rhs: &Vec<f32>,
        layout: &Broadcast,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        op.forward(Zip {
            lhs,
            rhs,
            layout: layout.coalesced(),
            out,
        });
        Ok(())
    }

    fn binary_partial(
        &self,
        op: BinaryOp,
        wrt: Operand,
        lhs: &Vec<f32>,
        rhs: &Vec<f32>,
        layout: &Broadcast,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        op.partial(
            wrt,
            Zip {
                lhs,
                rhs,
                layout: layout.coalesced(),
                out,
            },
        );
        Ok(())
    }

    fn binary_assign(
        &self,
        op: BinaryOp,
        lhs: &mut Vec<f32>,
        rhs: &Vec<f32>,
        layout: &Broadcast,
    ) -> Result<()> {
        op.forward(ZipInPlace {
            lhs,
            rhs,
            layout: layout.coalesced(),
        });
        Ok(())
    }
}
