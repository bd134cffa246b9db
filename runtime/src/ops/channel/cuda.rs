//! Launch glue of the per-channel kernels in `channel.cu`.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use super::{ChannelKernel, ChannelLayout};
use crate::backend::cuda::{
    BLOCK, CValue, Cuda, CudaBuffer, cuda_error, expect_len, launch_config,
};
use crate::error::Result;

/// The kernels' source, compiled by the backend.
pub(crate) fn source() -> &'static str {
    include_str!("channel.cu")
}

/// `channel.cu`'s `Layout`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    outer: u64,
    channels: u64,
    inner: u64,
}

// SAFETY: `Layout` is `repr(C)` plain data without padding, with the field order and types of
// `Layout` in `channel.cu`.
unsafe impl DeviceRepr for Layout {}

// SAFETY: as above.
unsafe impl CValue for Layout {
    const C_TYPE: &'static str = "Layout";
}

impl From<&ChannelLayout> for Layout {
    fn from(l: &ChannelLayout) -> Self {
        Self {
            outer: l.outer as u64,
            channels: l.channels as u64,
            inner: l.inner as u64,
        }
    }
}

impl ChannelKernel for Cuda {
    fn channel_sum(
        &self,
        layout: &ChannelLayout,
        x: &CudaBuffer,
        centered: Option<(Option<&CudaBuffer>, &CudaBuffer)>,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "channel_sum";
        let (a, mean) = match centered {
            Some((a, mean)) => (a, Some(mean)),
            None => (None, None),
        };
        let buffers = [x, &*out].into_iter().chain(a).chain(mean);
        self.recorder()
            .record(buffers, || format!("channel_sum {layout:?}"));
        expect_len(OP, "input", x.len(), layout.len())?;
        expect_len(OP, "output", out.len(), layout.channels)?;
        if let Some(a) = a {
            expect_len(OP, "weights", a.len(), layout.len())?;
        }
        if let Some(mean) = mean {
            expect_len(OP, "mean", mean.len(), layout.channels)?;
        }
        if layout.channels == 0 {
            return Ok(());
        }
        let config = LaunchConfig {
            grid_dim: (layout.channels.min(65_535) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let kernels = self.kernels()?;
        let (a, mean) = (a.map(|a| &**a), mean.map(|mean| &**mean));
        // SAFETY: `x` and `a` hold the layout's elements and `out` and `mean` one per channel,
        // as checked; the block has the `BLOCK` threads the kernel's shared array is sized for.
        unsafe {
            kernels.channel_sum(
                self.stream(),
                config,
                out.slice_mut(),
                x,
                a,
                mean,
                &Layout::from(layout),
            )
        }
        .map_err(cuda_error(OP))
    }

    fn channel_affine(
        &self,
        layout: &ChannelLayout,
        x: &CudaBuffer,
        scale: &CudaBuffer,
        shift: &CudaBuffer,
        extra: Option<(&CudaBuffer, &CudaBuffer, &CudaBuffer)>,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "channel_affine";
        let y = extra.map(|(y, _, _)| y);
        let vectors = extra.map(|(_, center, coef)| [center, coef]);
        let buffers = [x, scale, shift, &*out]
            .into_iter()
            .chain(y)
            .chain(vectors.into_iter().flatten());
        self.recorder()
            .record(buffers, || format!("channel_affine {layout:?}"));
        let n = layout.len();
        expect_len(OP, "input", x.len(), n)?;
        expect_len(OP, "output", out.len(), n)?;
        for vector in [scale, shift]
            .into_iter()
            .chain(vectors.into_iter().flatten())
        {
            expect_len(OP, "channel vector", vector.len(), layout.channels)?;
        }
        if let Some(y) = y {
            expect_len(OP, "second input", y.len(), n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let kernels = self.kernels()?;
        let y = y.map(|y| &**y);
        let (center, coef) = match vectors {
            Some([center, coef]) => (Some(&**center), Some(&**coef)),
            None => (None, None),
        };
        // SAFETY: `out`, `x` and `y` hold the layout's `n` elements and the channel vectors
        // one per channel, as checked.
        unsafe {
            kernels.channel_affine(
                self.stream(),
                launch_config(n),
                out.slice_mut(),
                x,
                scale,
                shift,
                y,
                center,
                coef,
                &Layout::from(layout),
            )
        }
        .map_err(cuda_error(OP))
    }
}
