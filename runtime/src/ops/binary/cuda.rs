//! Launch glue of the broadcasting binary kernels in `binary.cu`, whose op `switch` comes
//! from the table in `mod.rs`.

use std::sync::LazyLock;

use cudarc::driver::{CudaSlice, DeviceRepr};

use super::{BinaryKernel, BinaryOp, Broadcast};
use crate::backend::cuda::{CValue, Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::{Error, Result};
use crate::ops::elementwise::{Operand, cuda_switch};

/// `binary.cu` with the table's functions (each op's value and partial derivatives) in place
/// of its marker line.
static SOURCE: LazyLock<String> = LazyLock::new(|| {
    let functions = cuda_switch("binary_apply", &BinaryOp::cuda_rows(), 0);
    include_str!("binary.cu").replace("// @table@\n", &functions)
});

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    &SOURCE
}

/// The most dims the kernels walk, after merging the dims both operands traverse contiguously.
const MAX_RANK: usize = 6;

/// `binary.cu`'s `Layout`: the output shape and both operands' strides, outermost dim first.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    rank: u32,
    pad: u32,
    shape: [u64; MAX_RANK],
    lhs_strides: [u64; MAX_RANK],
    rhs_strides: [u64; MAX_RANK],
}

// SAFETY: `Layout` is `repr(C)` plain data with no padding bytes (the `pad` field fills the
// gap) and the same field order and types as the `Layout` struct in `binary.cu`.
unsafe impl DeviceRepr for Layout {}

// SAFETY: as above.
unsafe impl CValue for Layout {
    const C_TYPE: &'static str = "Layout";
}

impl Layout {
    /// `layout` without size-1 dims and with neighbouring dims merged where both operands
    /// step through them as one (so a contiguous `[64, 100] + [64, 100]` is one dim of 6400).
    fn new(op: &'static str, layout: &Broadcast) -> Result<Self> {
        let mut dims: Vec<(u64, u64, u64)> = Vec::with_capacity(layout.shape.rank());
        for ((&size, &lhs), &rhs) in layout
            .shape
            .dims()
            .iter()
            .zip(&layout.lhs_strides)
            .zip(&layout.rhs_strides)
        {
            if size == 1 {
                continue;
            }
            let (size, lhs, rhs) = (size as u64, lhs as u64, rhs as u64);
            match dims.last_mut() {
                Some(outer) if outer.1 == lhs * size && outer.2 == rhs * size => {
                    *outer = (outer.0 * size, lhs, rhs);
                }
                _ => dims.push((size, lhs, rhs)),
            }
        }
        if dims.len() > MAX_RANK {
            return Err(Error::Backend {
                op,
                message: format!(
                    "the CUDA kernels broadcast over at most {MAX_RANK} dims, found {} in {}",
                    dims.len(),
                    layout.shape
                ),
            });
        }
        let mut kernel = Self {
            rank: dims.len() as u32,
            pad: 0,
            shape: [1; MAX_RANK],
            lhs_strides: [0; MAX_RANK],
            rhs_strides: [0; MAX_RANK],
        };
        for (d, (size, lhs, rhs)) in dims.into_iter().enumerate() {
            kernel.shape[d] = size;
            kernel.lhs_strides[d] = lhs;
            kernel.rhs_strides[d] = rhs;
        }
        Ok(kernel)
    }
}

/// The number of elements each operand must hold for the kernel to read it at every offset
/// `layout` produces: one past the largest offset.
fn span(layout: &Broadcast, strides: &[usize]) -> usize {
    let dims = layout.shape.dims();
    1 + dims
        .iter()
        .zip(strides)
        .map(|(&size, &stride)| (size - 1) * stride)
        .sum::<usize>()
}

/// Checks `lhs`/`rhs` cover `layout` and returns the output's element count.
fn check(
    op: &'static str,
    layout: &Broadcast,
    lhs: usize,
    rhs: usize,
    out: usize,
) -> Result<usize> {
    let n = layout.shape.numel();
    expect_len(op, "output", out, n)?;
    if n > 0 {
        for (what, len, strides) in [
            ("left operand", lhs, &layout.lhs_strides),
            ("right operand", rhs, &layout.rhs_strides),
        ] {
            let needed = span(layout, strides);
            if len < needed {
                return Err(Error::Backend {
                    op,
                    message: format!(
                        "{what} holds {len} elements, but {} reads {needed}",
                        layout.shape
                    ),
                });
            }
        }
    }
    Ok(n)
}

/// `out = f(lhs, rhs)` over `layout`, `f` the function of `binary.cu`'s op code `code`
/// (see [`BinaryOp::encode`]) with parameter `s`.
fn binary(
    dev: &Cuda,
    (code, s): (i32, f32),
    lhs: &CudaSlice<f32>,
    rhs: &CudaSlice<f32>,
    layout: &Broadcast,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    let n = check("binary", layout, lhs.len(), rhs.len(), out.len())?;
    if n == 0 {
        return Ok(());
    }
    let kernel_layout = Layout::new("binary", layout)?;
    let count = n as u64;
    let kernels = dev.kernels()?;
    let config = launch_config(n);
    // SAFETY: `out` holds the `n` elements written and `check` verified both operands cover
    // every offset read.
    unsafe {
        kernels.binary(
            dev.stream(),
            config,
            out,
            lhs,
            rhs,
            &count,
            &code,
            &s,
            &kernel_layout,
        )
    }
    .map_err(cuda_error("binary"))
}

/// `lhs = op(lhs, rhs)` over `layout`, whose shape is `lhs`'s.
fn binary_assign(
    dev: &Cuda,
    op: BinaryOp,
    lhs: &mut CudaSlice<f32>,
    rhs: &CudaSlice<f32>,
    layout: &Broadcast,
) -> Result<()> {
    let n = check("binary_assign", layout, lhs.len(), rhs.len(), lhs.len())?;
    if n == 0 {
        return Ok(());
    }
    let kernel_layout = Layout::new("binary_assign", layout)?;
    let (code, s) = op.encode(0);
    let count = n as u64;
    let kernels = dev.kernels()?;
    let config = launch_config(n);
    // SAFETY: `lhs` holds the `n` elements it is read and written at, and `check` verified
    // `rhs` covers every offset read.
    unsafe {
        kernels.binary_assign(
            dev.stream(),
            config,
            lhs,
            rhs,
            &count,
            &code,
            &s,
            &kernel_layout,
        )
    }
    .map_err(cuda_error("binary_assign"))
}

impl BinaryKernel for Cuda {
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &CudaBuffer,
        rhs: &CudaBuffer,
        layout: &Broadcast,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder()
            .record([lhs, rhs, &*out], || format!("{op:?} {layout:?}"));
        binary(self, op.encode(0), lhs, rhs, layout, out.slice_mut())
    }

    fn binary_partial(
        &self,
        op: BinaryOp,
        wrt: Operand,
        lhs: &CudaBuffer,
        rhs: &CudaBuffer,
        layout: &Broadcast,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        self.recorder().record([lhs, rhs, &*out], || {
            format!("{op:?} partial {wrt:?} {layout:?}")
        });
        let part = match wrt {
            Operand::Lhs => 1,
            Operand::Rhs => 2,
        };
        binary(self, op.encode(part), lhs, rhs, layout, out.slice_mut())
    }

    fn binary_assign(
        &self,
        op: BinaryOp,
        lhs: &mut CudaBuffer,
        rhs: &CudaBuffer,
        layout: &Broadcast,
    ) -> Result<()> {
        self.recorder()
            .record([&*lhs, rhs], || format!("{op:?} in place {layout:?}"));
        binary_assign(self, op, lhs.slice_mut(), rhs, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Shape;

    #[test]
    fn layout_merges_contiguous_dims_and_drops_ones() {
        let same = Broadcast::new("add", &Shape::from([4, 1, 5]), &Shape::from([4, 1, 5])).unwrap();
        let layout = Layout::new("add", &same).unwrap();
        assert_eq!(layout.rank, 1);
        assert_eq!(
            (
                layout.shape[0],
                layout.lhs_strides[0],
                layout.rhs_strides[0]
            ),
            (20, 1, 1)
        );

        let bias = Broadcast::new("add", &Shape::from([2, 3, 4]), &Shape::from([4])).unwrap();
        let layout = Layout::new("add", &bias).unwrap();
        assert_eq!(layout.rank, 2);
        assert_eq!(&layout.shape[..2], &[6, 4]);
        assert_eq!(&layout.lhs_strides[..2], &[4, 1]);
        assert_eq!(&layout.rhs_strides[..2], &[0, 1]);
    }

    #[test]
    fn layout_rejects_more_dims_than_the_kernel_walks() {
        let lhs = Shape::from([2, 1, 2, 1, 2, 1, 2, 1]);
        let rhs = Shape::from([1, 2, 1, 2, 1, 2, 1, 2]);
        let layout = Broadcast::new("add", &lhs, &rhs).unwrap();
        let error = Layout::new("add", &layout).unwrap_err();
        assert!(error.to_string().contains("at most 6 dims"), "{error}");
    }

    #[test]
    fn short_operands_are_rejected_before_launch() {
        let layout = Broadcast::new("add", &Shape::from([3, 4]), &Shape::from([4])).unwrap();
        assert_eq!(check("add", &layout, 12, 4, 12).unwrap(), 12);
        assert!(check("add", &layout, 12, 3, 12).is_err());
        assert!(check("add", &layout, 11, 4, 12).is_err());
        assert!(check("add", &layout, 12, 4, 13).is_err());
    }
}
