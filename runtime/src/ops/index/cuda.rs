//! Launch glue of the indexing kernels in `index.cu`.

use cudarc::driver::DeviceRepr;

use super::{Axis, Block, IndexKernel};
use crate::backend::cuda::{CValue, Cuda, CudaBuffer, cuda_error, expect_len, launch_config};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("index.cu")
}

/// `index.cu`'s `Line`: an [`Axis`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    outer: u64,
    len: u64,
    inner: u64,
}

/// `index.cu`'s `Block`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyBlock {
    outer: u64,
    inner: u64,
    src_len: u64,
    src_offset: u64,
    dst_len: u64,
    dst_offset: u64,
    count: u64,
}

// SAFETY: both are `repr(C)` plain `u64`s without padding, in the field order and types of
// their twins in `index.cu`.
unsafe impl DeviceRepr for Line {}
// SAFETY: as above.
unsafe impl CValue for Line {
    const C_TYPE: &'static str = "Line";
}
// SAFETY: as above.
unsafe impl DeviceRepr for CopyBlock {}
// SAFETY: as above.
unsafe impl CValue for CopyBlock {
    const C_TYPE: &'static str = "Block";
}

impl From<&Axis> for Line {
    fn from(axis: &Axis) -> Self {
        Self {
            outer: axis.outer as u64,
            len: axis.len as u64,
            inner: axis.inner as u64,
        }
    }
}

impl From<&Block> for CopyBlock {
    fn from(b: &Block) -> Self {
        Self {
            outer: b.outer as u64,
            inner: b.inner as u64,
            src_len: b.src_len as u64,
            src_offset: b.src_offset as u64,
            dst_len: b.dst_len as u64,
            dst_offset: b.dst_offset as u64,
            count: b.count as u64,
        }
    }
}

impl IndexKernel for Cuda {
    fn extremum(
        &self,
        axis: &Axis,
        max: bool,
        x: &CudaBuffer,
        values: &mut CudaBuffer,
        indices: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "extremum";
        self.recorder()
            .record([x, &*values, &*indices], || format!("extremum {axis:?}"));
        let n = axis.outer * axis.inner;
        expect_len(OP, "input", x.len(), n * axis.len)?;
        expect_len(OP, "values", values.len(), n)?;
        expect_len(OP, "indices", indices.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: `x` holds the `n` lines of `axis.len` read, `values` and `indices` the `n`
        // results written, as checked.
        unsafe {
            kernels.extremum(
                self.stream(),
                launch_config(n),
                values.slice_mut(),
                indices.slice_mut(),
                x,
                &Line::from(axis),
                &i32::from(max),
            )
        }
        .map_err(cuda_error(OP))
    }

    fn copy_block(&self, block: &Block, src: &CudaBuffer, dst: &mut CudaBuffer) -> Result<()> {
        const OP: &str = "copy_block";
        self.recorder()
            .record([src, &*dst], || format!("copy_block {block:?}"));
        expect_len(
            OP,
            "source",
            src.len(),
            block.outer * block.src_len * block.inner,
        )?;
        expect_len(
            OP,
            "destination",
            dst.len(),
            block.outer * block.dst_len * block.inner,
        )?;
        let n = block.outer * block.count * block.inner;
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: the caller's block lies within both buffers, whose lengths were checked.
        unsafe {
            kernels.copy_block(
                self.stream(),
                launch_config(n),
                dst.slice_mut(),
                src,
                &CopyBlock::from(block),
            )
        }
        .map_err(cuda_error(OP))
    }

    fn gather(
        &self,
        axis: &Axis,
        x: &CudaBuffer,
        indices: &CudaBuffer,
        count: usize,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "gather";
        self.recorder().record([x, indices, &*out], || {
            format!("gather {count} of {axis:?}")
        });
        expect_len(OP, "input", x.len(), axis.outer * axis.len * axis.inner)?;
        expect_len(OP, "indices", indices.len(), count)?;
        let n = axis.outer * count * axis.inner;
        expect_len(OP, "output", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: the lengths were checked, and the caller checked every index is below
        // `axis.len`.
        unsafe {
            kernels.gather(
                self.stream(),
                launch_config(n),
                out.slice_mut(),
                x,
                indices,
                &(count as u64),
                &Line::from(axis),
            )
        }
        .map_err(cuda_error(OP))
    }

    fn fill_above_diagonal(
        &self,
        matrices: usize,
        size: usize,
        value: f32,
        x: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "fill_above_diagonal";
        self.recorder()
            .record([&*x], || format!("{OP} {matrices}x{size}x{size}"));
        let n = matrices * size * size;
        expect_len(OP, "matrices", x.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: `x` holds the `n` elements of the matrices, as checked.
        unsafe {
            kernels.fill_above_diagonal(
                self.stream(),
                launch_config(n),
                x.slice_mut(),
                &(matrices as u64),
                &(size as u64),
                &value,
            )
        }
        .map_err(cuda_error(OP))
    }

    fn scatter_add(
        &self,
        axis: &Axis,
        src: &CudaBuffer,
        indices: &CudaBuffer,
        count: usize,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "scatter_add";
        self.recorder().record([src, indices, &*out], || {
            format!("scatter_add {count} into {axis:?}")
        });
        expect_len(OP, "output", out.len(), axis.outer * axis.len * axis.inner)?;
        expect_len(OP, "indices", indices.len(), count)?;
        let n = axis.outer * count * axis.inner;
        expect_len(OP, "source", src.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        // SAFETY: the lengths were checked, and the caller checked every index is below
        // `axis.len`.
        unsafe {
            kernels.scatter_add(
                self.stream(),
                launch_config(n),
                out.slice_mut(),
                src,
                indices,
                &(count as u64),
                &Line::from(axis),
            )
        }
        .map_err(cuda_error(OP))
    }
}
