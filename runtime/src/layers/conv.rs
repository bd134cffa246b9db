//! [`Conv2d`]: PyTorch's `nn.Conv2d` on `[N, C, H, W]`, computed as `im2col` and one matrix
//! product per sample (batched over the groups), or, for the 3x3 convolutions where the
//! backend prefers it, by Winograd's algorithm (the forward pass and both gradients; see
//! [`ConvKernel::winograd`](crate::ops::conv::ConvKernel::winograd)).

use rand::Rng;

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::network::{Layer, kept_input};
use crate::ops::conv::{ConvGeometry, FilterRead, Filters};
use crate::ops::matmul::{Gemm, GemmBatch, Strided};
use crate::param::Param;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The most elements of columns a batch unfolds at once (64 MiB of `f32`). A batch whose
/// columns take more unfolds them [`COLUMNS_PER_CHUNK`] at a time, forward and backward, and
/// keeps none for the backward pass, which unfolds them again: less memory for more time.
const COLUMNS_AT_ONCE: usize = 16 << 20;

/// How many elements of columns a chunk of samples unfolds, when a batch's take more than
/// [`COLUMNS_AT_ONCE`] (4 MiB of `f32`; chunks of 16 MiB measured slower and larger). The 7x7
/// stride-2 stem of a `ResNet` unfolds 1.8 M elements per 224x224 image, so a sample at a
/// time. With 3x3 blocks after it, a step on 16 images took 489 MB at its peak keeping the
/// whole batch's columns, 381 MB a sample at a time, and 3% longer (medians of 7 alternated
/// runs: 261 and 269 ms); on 32 images, 930 MB against 707 MB, 4% longer (508 and 529 ms).
const COLUMNS_PER_CHUNK: usize = 1 << 20;

/// How a [`Conv2d`] walks its input, with PyTorch's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// The step between windows (1).
    pub stride: usize,
    /// Zero padding on each side (0).
    pub padding: usize,
    /// The spacing of the kernel's taps (1).
    pub dilation: usize,
    /// Channel groups: each output channel sees `in / groups` input channels (1).
    pub groups: usize,
    /// Whether the layer has a bias (true).
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
}

/// A 2-D convolution with square kernels, PyTorch's layout and initialisation: `weight` is
/// `[out, in / groups, k, k]` and `bias` `[out]`, both uniform in `±1/sqrt(fan_in)` with
/// `fan_in = in / groups * k * k` (what `nn.Conv2d.reset_parameters` draws).
#[derive(Debug, Clone)]
pub struct Conv2d<B: Backend = Cpu> {
    /// `[out, in / groups, k, k]`.
    pub weight: Param<B>,
    /// `[out]`, or `None` for a layer declared without bias.
    pub bias: Option<Param<B>>,
    /// Stride, padding, dilation and groups.
    pub config: Conv2dConfig,
}

impl<B: Backend> Conv2d<B> {
    /// A layer with PyTorch's default initialisation, drawn from `rng`.
    ///
    /// # Panics
    /// When `groups` is 0 or does not divide both channel counts.
    pub fn new<R: Rng + ?Sized>(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        config: Conv2dConfig,
        device: &B,
        rng: &mut R,
    ) -> Self {
        let groups = config.groups;
        assert!(
            groups > 0 && in_channels.is_multiple_of(groups) && out_channels.is_multiple_of(groups),
            "Conv2d: groups {groups} must divide {in_channels} and {out_channels}"
        );
        let fan_in = in_channels / groups * kernel * kernel;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let shape = [out_channels, in_channels / groups, kernel, kernel];
        let weight = Tensor::uniform(shape, -bound, bound, device, rng);
        let bias = config
            .bias
            .then(|| Tensor::uniform([out_channels], -bound, bound, device, rng));
        Self {
            weight: Param::new(weight),
            bias: bias.map(Param::new),
            config,
        }
    }

    fn dims(&self) -> [usize; 3] {
        let w = self.weight.value().dims();
        [w[0], w[1] * self.config.groups, w[2]]
    }

    /// The windows over `x`, checked against the layer's input channels.
    fn geometry(&self, op: &'static str, x: &Tensor<B>) -> Result<ConvGeometry> {
        let [_, in_channels, kernel] = self.dims();
        let Conv2dConfig {
            stride,
            padding,
            dilation,
            ..
        } = self.config;
        let g = ConvGeometry::new(op, x.shape(), kernel, stride, padding, dilation)?;
        if g.channels != in_channels {
            let expected = Shape::from([g.batch, in_channels, g.height, g.width]);
            return Err(Error::Shape {
                op,
                expected,
                found: x.shape().clone(),
            });
        }
        Ok(g)
    }

    /// The product of one sample per group: `a` `[m, k]` by `b` `[k, n]` into `c`.
    fn per_group(m: usize, n: usize, k: usize, trans: (bool, bool)) -> Gemm {
        Gemm {
            m,
            n,
            k,
            trans_a: trans.0,
            trans_b: trans.1,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// The convolution of `x`, `[N, in, H, W]`, into `[N, out, OH, OW]`.
    ///
    /// # Errors
    /// [`Error::Rank`] or [`Error::Shape`] when `x` is not `[N, in, H, W]`, [`Error::Usage`]
    /// when the kernel does not fit it.
    pub fn forward(&self, x: &Tensor<B>) -> Result<Tensor<B>> {
        Ok(self.forward_train(x)?.0)
    }

    /// [`Conv2d::forward`], and the input unfolded into columns when
    /// [`Conv2d::backward_with_columns`] will read them instead of unfolding the input again:
    /// `None` where the backend computes the layer by Winograd's algorithm or depthwise, whose
    /// backward passes read the input itself, for a pointwise (1x1) convolution, whose input
    /// is its own columns, and for a batch whose columns take more than 64 MiB,
    /// which both passes unfold a chunk of samples at a time.
    ///
    /// # Errors
    /// As [`Conv2d::forward`].
    pub fn forward_train(&self, x: &Tensor<B>) -> Result<(Tensor<B>, Option<Tensor<B>>)> {
        let g = self.geometry("conv2d", x)?;
        if let Some(filters) = self.winograd_filters(&g, FilterRead::AsStored) {
            return Ok((self.winograd_forward(&g, filters, x)?, None));
        }
        if self.is_depthwise(&g) {
            return Ok((self.depthwise_forward(&g, x)?, None));
        }
        if g.is_pointwise() {
            return Ok((self.product_forward(&g, x, Some(x))?, None));
        }
        if Self::column_chunk(&g) < g.batch {
            return Ok((self.product_forward(&g, x, None)?, None));
        }
        let cols = Self::columns(&g, x, 0)?;
        Ok((self.product_forward(&g, x, Some(&cols))?, Some(cols)))
    }

    /// The filters for the convolution of windows `g` read as `read` (as stored: this layer's
    /// forward pass; transposed and flipped: its input gradient's), when the backend computes
    /// it by Winograd's algorithm.
    fn winograd_filters(&self, g: &ConvGeometry, read: FilterRead) -> Option<Filters> {
        let [out_channels, in_channels, _] = self.dims();
        let out_channels = match read {
            FilterRead::AsStored => out_channels,
            FilterRead::TransposedFlipped => in_channels,
        };
        let device = self.weight.value().device();
        (self.config.groups == 1 && device.prefers_winograd(g, out_channels))
            .then_some(Filters { out_channels, read })
    }

    /// Whether the backend convolves windows `g` with a depthwise kernel: one group per input
    /// and output channel.
    fn is_depthwise(&self, g: &ConvGeometry) -> bool {
        let device = self.weight.value().device();
        device.prefers_depthwise(g, self.config.groups, self.dims()[0])
    }

    /// The windows over `grad_out` and the filters of the convolution that gives the input
    /// gradient, when the backend computes it by Winograd's algorithm. With stride and
    /// dilation 1, that is the convolution of `grad_out`, padded by `k - 1 - padding`, with the
    /// filters transposed and flipped.
    fn winograd_input_gradient(
        &self,
        g: &ConvGeometry,
        grad_out: &Tensor<B>,
    ) -> Option<(ConvGeometry, Filters)> {
        if (g.stride, g.dilation) != (1, 1) {
            return None;
        }
        let padding = (g.kernel - 1).checked_sub(g.padding)?;
        let dy = ConvGeometry::new("conv2d backward", grad_out.shape(), g.kernel, 1, padding, 1);
        let dy = dy.ok()?;
        Some((
            dy,
            self.winograd_filters(&dy, FilterRead::TransposedFlipped)?,
        ))
    }

    /// The forward pass by Winograd's algorithm, bias included.
    fn winograd_forward(
        &self,
        g: &ConvGeometry,
        filters: Filters,
        x: &Tensor<B>,
    ) -> Result<Tensor<B>> {
        let shape = [g.batch, filters.out_channels, g.out_height, g.out_width];
        let mut y = Tensor::try_empty(shape, x.device())?;
        let bias = self.bias.as_ref().map(|bias| &bias.value().storage);
        let w = &self.weight.value().storage;
        x.device()
            .winograd(g, filters, w, bias, &x.storage, &mut y.storage)?;
        Ok(y)
    }

    /// The forward pass of a depthwise convolution, bias included.
    fn depthwise_forward(&self, g: &ConvGeometry, x: &Tensor<B>) -> Result<Tensor<B>> {
        let shape = [g.batch, g.channels, g.out_height, g.out_width];
        let mut y = Tensor::try_empty(shape, x.device())?;
        let bias = self.bias.as_ref().map(|bias| &bias.value().storage);
        let w = &self.weight.value().storage;
        x.device()
            .depthwise(g, w, bias, &x.storage, &mut y.storage)?;
        Ok(y)
    }

    /// The forward pass of `x` as a product per sample and group, from its columns: `cols`
    /// (the input itself, for a pointwise convolution), or without them unfolded a chunk of
    /// samples at a time.
    fn product_forward(
        &self,
        g: &ConvGeometry,
        x: &Tensor<B>,
        cols: Option<&Tensor<B>>,
    ) -> Result<Tensor<B>> {
        let layout = GroupLayout::new(g, self.dims()[0], self.config.groups);
        let device = x.device();
        // The products overwrite every element, unless there is nothing to sum.
        let mut y = if layout.rows > 0 {
            Tensor::try_empty(layout.output_shape(g), device)?
        } else {
            Tensor::try_zeros(layout.output_shape(g), device)?
        };
        // Y_g = W_g cols_g per sample.
        let gemm = Self::per_group(
            layout.out_per_group,
            layout.positions,
            layout.rows,
            (false, false),
        );
        let w = &self.weight.value().storage;
        let buffers = [Buffer::Weight, Buffer::Columns, Buffer::Output];
        let mut products = |(first, samples), cols: &Tensor<B>| {
            layout.each_call((first, samples), buffers, |batch| {
                device.gemm_batched(&gemm, &batch, w, &cols.storage, &mut y.storage)
            })
        };
        match cols {
            Some(cols) => products((0, g.batch), cols)?,
            None => {
                for (chunk, first) in Self::chunks(g) {
                    products((first, chunk.batch), &Self::columns(&chunk, x, first)?)?;
                }
            }
        }
        if let Some(bias) = &self.bias {
            let bias = bias
                .value()
                .try_clone()?
                .try_reshape([layout.out_channels, 1, 1])?;
            y.try_zip_(crate::ops::binary::BinaryOp::Add, "conv2d", &bias)?;
        }
        Ok(y)
    }

    /// Accumulates the parameters' gradients for the input `x` and the output gradient
    /// `grad_out`, and returns the input gradient when `input_grad` asks for it.
    ///
    /// # Errors
    /// [`Error::Shape`] when `grad_out` is not the output's shape for `x`.
    pub fn backward(
        &mut self,
        x: &Tensor<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        self.backward_with_columns(x, None, grad_out, input_grad)
    }

    /// [`Conv2d::backward`] with the columns [`Conv2d::forward_train`] made of `x`, if any
    /// (it unfolds `x` when it needs them and has none).
    ///
    /// # Errors
    /// [`Error::Shape`] when `grad_out` is not the output's shape for `x`, or `cols` not the
    /// columns' shape.
    pub fn backward_with_columns(
        &mut self,
        x: &Tensor<B>,
        cols: Option<Tensor<B>>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        const OP: &str = "conv2d backward";
        let g = self.geometry(OP, x)?;
        let layout = GroupLayout::new(&g, self.dims()[0], self.config.groups);
        let columns_shape = Self::columns_shape(&g);
        let checks = [
            Some((layout.output_shape(&g), grad_out.shape())),
            cols.as_ref()
                .map(|cols| (columns_shape.clone(), cols.shape())),
        ];
        for (expected, found) in checks.into_iter().flatten() {
            if found != &expected {
                return Err(Error::Shape {
                    op: OP,
                    expected,
                    found: found.clone(),
                });
            }
        }
        let device = x.device();
        // The weight gradient by Winograd's algorithm or the depthwise kernel where the backend
        // has one, else from the columns (the input's own, for a pointwise convolution).
        let winograd = self.winograd_filters(&g, FilterRead::AsStored).is_some();
        let depthwise = self.is_depthwise(&g);
        let direct = winograd || depthwise || g.is_pointwise();
        // Columns too large to unfold at once, which the forward pass did not keep: unfolded
        // (and folded back) a chunk of samples at a time.
        let chunked = !direct && cols.is_none() && Self::column_chunk(&g) < g.batch;
        let cols = match cols {
            _ if direct || chunked => None,
            Some(cols) => Some(cols),
            None => Some(Self::columns(&g, x, 0)?),
        };
        let out_channels = layout.out_channels;
        self.weight.try_accumulate_grad_with(|grad_w, beta| {
            let mut gemm = Self::per_group(
                layout.out_per_group,
                layout.rows,
                layout.positions,
                (false, true),
            );
            gemm.beta = beta;
            if g.batch == 0 {
                if beta == 0.0 {
                    device.fill(&mut grad_w.storage, 0.0)?; // no samples: a zero gradient
                }
                return Ok(());
            }
            if depthwise {
                let (x, dy, dw) = (&x.storage, &grad_out.storage, &mut grad_w.storage);
                return device.depthwise_weight_gradient(&g, x, dy, dw, beta);
            }
            // dW_g = sum over samples of dY_g cols_g^T, summed straight into the gradient:
            // per group, the samples' products summed (on the CPU, runs of samples or blocks
            // of the gradient share the threads).
            let mut sum_products = |(first, samples), cols: &Tensor<B>, beta| {
                let gemm = Gemm { beta, ..gemm };
                (0..layout.groups).try_for_each(|group| {
                    let batch = layout.summed_over_samples(group, (first, samples));
                    let (dy, cols) = (&grad_out.storage, &cols.storage);
                    device.gemm_summed(&gemm, &batch, dy, cols, &mut grad_w.storage)
                })
            };
            if chunked {
                for (chunk, first) in Self::chunks(&g) {
                    let cols = Self::columns(&chunk, x, first)?;
                    // The first chunk's sums start the gradient as asked, the rest add to it.
                    let beta = if first == 0 { beta } else { 1.0 };
                    sum_products((first, chunk.batch), &cols, beta)?;
                }
                return Ok(());
            }
            let columns = if g.is_pointwise() {
                Some(x)
            } else {
                cols.as_ref()
            };
            let Some(cols) = columns else {
                let (x, dy, dw) = (&x.storage, &grad_out.storage, &mut grad_w.storage);
                return device.winograd_weight_gradient(&g, out_channels, x, dy, dw, beta);
            };
            sum_products((0, g.batch), cols, beta)
        })?;
        if let Some(bias) = &mut self.bias {
            bias.try_accumulate_grad(&grad_out.try_channel_sum()?)?;
        }
        if !input_grad {
            return Ok(None);
        }
        if depthwise {
            let mut grad_x = Tensor::try_empty(x.shape().clone(), device)?;
            let w = &self.weight.value().storage;
            device.depthwise_input_gradient(&g, w, &grad_out.storage, &mut grad_x.storage)?;
            return Ok(Some(grad_x));
        }
        if let Some((dy, filters)) = self.winograd_input_gradient(&g, grad_out) {
            let mut grad_x = Tensor::try_empty(x.shape().clone(), device)?;
            let w = &self.weight.value().storage;
            device.winograd(
                &dy,
                filters,
                w,
                None,
                &grad_out.storage,
                &mut grad_x.storage,
            )?;
            return Ok(Some(grad_x));
        }
        // dcols_g = W_g^T dY_g per sample, folded back onto the input (the input's gradient
        // itself, for a pointwise convolution), a chunk of samples at a time if chunked.
        let gemm = Self::per_group(
            layout.rows,
            layout.positions,
            layout.out_per_group,
            (true, false),
        );
        let w = &self.weight.value().storage;
        let buffers = [Buffer::Weight, Buffer::Output, Buffer::Columns];
        let grad_columns = |(first, samples), grad_cols: &mut Tensor<B>| {
            layout.each_call((first, samples), buffers, |batch| {
                device.gemm_batched(&gemm, &batch, w, &grad_out.storage, &mut grad_cols.storage)
            })
        };
        if chunked {
            // col2im writes every element of each chunk's samples.
            let mut grad_x = Tensor::try_empty(x.shape().clone(), device)?;
            for (chunk, first) in Self::chunks(&g) {
                let mut grad_cols = Tensor::try_empty(Self::columns_shape(&chunk), device)?;
                grad_columns((first, chunk.batch), &mut grad_cols)?;
                device.col2im(&chunk, &mut grad_cols.storage, (&mut grad_x.storage, first))?;
            }
            return Ok(Some(grad_x));
        }
        let mut grad_cols = match cols {
            Some(cols) => cols,
            None if g.is_pointwise() => Tensor::try_empty(x.shape().clone(), device)?,
            None => Tensor::try_empty(columns_shape, device)?,
        };
        grad_columns((0, g.batch), &mut grad_cols)?;
        if g.is_pointwise() {
            return Ok(Some(grad_cols));
        }
        // col2im writes every element.
        let mut grad_x = Tensor::try_empty(x.shape().clone(), device)?;
        device.col2im(&g, &mut grad_cols.storage, (&mut grad_x.storage, 0))?;
        Ok(Some(grad_x))
    }

    /// The shape of the columns of an input with windows `g`.
    fn columns_shape(g: &ConvGeometry) -> Shape {
        Shape::from([g.columns_len()])
    }

    /// The `g.batch` samples of `x` from sample `first` unfolded into columns: sample by
    /// sample, `[in * k * k, OH * OW]`.
    fn columns(g: &ConvGeometry, x: &Tensor<B>, first: usize) -> Result<Tensor<B>> {
        // im2col writes every entry (padding included), so the buffer needs no zero fill.
        let mut cols = Tensor::try_empty(Self::columns_shape(g), x.device())?;
        x.device()
            .im2col(g, (&x.storage, first), &mut cols.storage)?;
        Ok(cols)
    }

    /// How many samples of windows `g` are unfolded at once: all of them, unless their
    /// columns take more than [`COLUMNS_AT_ONCE`] elements.
    fn column_chunk(g: &ConvGeometry) -> usize {
        let per_sample = g.rows() * g.positions();
        if per_sample.saturating_mul(g.batch) <= COLUMNS_AT_ONCE {
            return g.batch.max(1);
        }
        (COLUMNS_PER_CHUNK / per_sample.max(1)).clamp(1, g.batch)
    }

    /// The chunks of samples of windows `g` unfolded at once: each one's windows and first
    /// sample.
    fn chunks(g: &ConvGeometry) -> impl Iterator<Item = (ConvGeometry, usize)> {
        let chunk = Self::column_chunk(g);
        (0..g.batch).step_by(chunk).map(move |first| {
            let samples = chunk.min(g.batch - first);
            (
                ConvGeometry {
                    batch: samples,
                    ..*g
                },
                first,
            )
        })
    }
}

/// Where sample `n`'s per-group matrices lie in the buffers a convolution multiplies; offsets
/// and steps in elements.
#[derive(Debug, Clone, Copy)]
struct GroupLayout {
    groups: usize,
    out_channels: usize,
    out_per_group: usize,
    /// Column rows per group: `in / groups * k * k`.
    rows: usize,
    /// Output positions per channel: `OH * OW`.
    positions: usize,
}

impl GroupLayout {
    fn new(g: &ConvGeometry, out_channels: usize, groups: usize) -> Self {
        Self {
            groups,
            out_channels,
            out_per_group: out_channels / groups,
            rows: g.rows() / groups,
            positions: g.positions(),
        }
    }

    fn output_shape(&self, g: &ConvGeometry) -> Shape {
        Shape::from([g.batch, self.out_channels, g.out_height, g.out_width])
    }

    /// The elements between one sample's matrices of `buffer` and the next's (0 for the
    /// weight, which every sample shares).
    fn per_sample(&self, buffer: Buffer) -> usize {
        match buffer {
            Buffer::Weight => 0,
            Buffer::Columns => self.groups * self.rows * self.positions,
            Buffer::Output => self.out_channels * self.positions,
        }
    }

    /// The elements between one group's matrix of `buffer` and the next's: the weight's
    /// `[out / groups, rows]`, the columns' `[rows, positions]`, the output's (or its
    /// gradient's) `[out / groups, positions]`.
    fn per_group(&self, buffer: Buffer) -> usize {
        match buffer {
            Buffer::Weight => self.out_per_group * self.rows,
            Buffer::Columns => self.rows * self.positions,
            Buffer::Output => self.out_per_group * self.positions,
        }
    }

    /// Where sample `first`'s matrices of `buffer` start: the output holds every sample, the
    /// columns only those of the samples in hand (from `first` on), the weight none.
    fn start(&self, buffer: Buffer, first: usize) -> usize {
        match buffer {
            Buffer::Output => first * self.per_sample(buffer),
            Buffer::Weight | Buffer::Columns => 0,
        }
    }

    /// Group `group`'s matrices of `buffer`, sample after sample from sample `first`.
    fn samples_of(&self, buffer: Buffer, group: usize, first: usize) -> Strided {
        let start = self.start(buffer, first) + group * self.per_group(buffer);
        Strided::new(start, self.per_sample(buffer))
    }

    /// Every sample's matrices of `buffer` from sample `first`, group after group: in groups
    /// of `groups`, one per sample.
    fn groups_in_samples(&self, buffer: Buffer, first: usize) -> Strided {
        Strided {
            group_step: self.per_sample(buffer),
            ..Strided::new(self.start(buffer, first), self.per_group(buffer))
        }
    }

    /// Calls `call` with the products `c = op(a) op(b)` of samples `first..first + samples`,
    /// `[a, b, c]` the buffers they read and write (outputs apart), as one batch over the
    /// samples (in groups of the channel groups, when there are several), which the backend
    /// shares among its threads.
    fn each_call(
        &self,
        (first, samples): (usize, usize),
        [a, b, c]: [Buffer; 3],
        mut call: impl FnMut(GemmBatch) -> Result<()>,
    ) -> Result<()> {
        if samples == 0 {
            return Ok(());
        }
        if self.groups == 1 {
            let [a, b, c] = [a, b, c].map(|buffer| self.samples_of(buffer, 0, first));
            return call(GemmBatch::new(samples, a, b, c));
        }
        let [a, b, c] = [a, b, c].map(|buffer| self.groups_in_samples(buffer, first));
        call(GemmBatch {
            count: samples * self.groups,
            group: self.groups,
            a,
            b,
            c,
        })
    }

    /// Group `group`'s weight-gradient products `dY cols^T` of samples `first..first +
    /// samples`, to be summed into its weight matrix.
    fn summed_over_samples(&self, group: usize, (first, samples): (usize, usize)) -> GemmBatch {
        let [a, b, c] = [Buffer::Output, Buffer::Columns, Buffer::Weight]
            .map(|buffer| self.samples_of(buffer, group, first));
        GemmBatch::new(samples, a, b, c)
    }
}

/// The buffers a convolution's products read and write.
#[derive(Debug, Clone, Copy)]
enum Buffer {
    Weight,
    Columns,
    /// The output, or its gradient.
    Output,
}

weight_and_bias_params!(Conv2d);

/// The tape is the input's columns, if the backward pass reads them, so that it does not unfold
/// the input again.
impl<B: Backend> Layer<B> for Conv2d<B> {
    type Tape = Option<Tensor<B>>;

    fn layer_forward(&self, x: &Tensor<B>) -> Result<Tensor<B>> {
        self.forward(x)
    }

    fn layer_forward_train(&self, x: &Tensor<B>) -> Result<(Tensor<B>, Option<Tensor<B>>)> {
        self.forward_train(x)
    }

    fn layer_backward(
        &mut self,
        x: Option<&Tensor<B>>,
        cols: Option<Tensor<B>>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let x = kept_input("Conv2d", x)?;
        self.backward_with_columns(x, cols, grad_out, input_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::unary::UnaryOp;
    use crate::rng::seeded;

    /// Every gradient against central differences, for groups, stride, padding and dilation,
    /// and for 1x1 kernels: pointwise (the input its own columns), grouped, and strided.
    #[test]
    fn gradients_match_finite_differences() {
        let pointwise = |stride, groups| Conv2dConfig {
            stride,
            groups,
            ..Conv2dConfig::default()
        };
        let configs = [
            (4, 6, 1, pointwise(1, 1)),
            (4, 6, 1, pointwise(1, 2)),
            (4, 6, 1, pointwise(2, 1)),
            (4, 6, 3, Conv2dConfig::default()),
            (
                4,
                6,
                3,
                Conv2dConfig {
                    stride: 2,
                    padding: 1,
                    dilation: 1,
                    groups: 2,
                    bias: true,
                },
            ),
            (
                2,
                2,
                2,
                Conv2dConfig {
                    stride: 1,
                    padding: 1,
                    dilation: 2,
                    groups: 1,
                    bias: false,
                },
            ),
        ];
        for (seed, (inputs, outputs, kernel, config)) in configs.into_iter().enumerate() {
            let rng = &mut seeded(seed as u64);
            let mut conv = Conv2d::new(inputs, outputs, kernel, config, &Cpu, rng);
            let x = Tensor::randn([2, inputs, 5, 6], &Cpu, rng);
            let (y, r) = check_gradients(&mut conv, &x, (1, 1), rng);
            if let Some(bias) = &conv.bias {
                let sums: Vec<f32> = r
                    .try_clone()
                    .unwrap()
                    .reshape([2, outputs, y.dims()[2] * y.dims()[3]])
                    .sum_dim(2, false)
                    .sum_dim(0, false)
                    .to_vec();
                crate::ops::assert_close(&bias.grad().unwrap().to_vec(), &sums);
            }
        }
    }

    /// The input and weight gradients of `conv` at `x` (every `every.0`-th input element and
    /// `every.1`-th weight) against central differences of `sum(conv(x) * r)` for a random `r`;
    /// returns the output and `r`.
    fn check_gradients(
        conv: &mut Conv2d,
        x: &Tensor,
        every: (usize, usize),
        rng: &mut impl Rng,
    ) -> (Tensor, Tensor) {
        let y = conv.forward(x).unwrap();
        let r = Tensor::randn(y.shape().clone(), &Cpu, rng);
        let loss = |conv: &Conv2d, x: &Tensor| -> f64 {
            let y = conv.forward(x).unwrap().to_vec();
            y.iter()
                .zip(r.to_vec())
                .map(|(a, b)| f64::from(a * b))
                .sum()
        };
        let grad_x = conv.backward(x, &r, true).unwrap().unwrap().to_vec();
        let h = 1e-2f32;
        let config = conv.config;
        for i in (0..x.numel()).step_by(every.0) {
            let at = |delta: f32| {
                let mut data = x.to_vec();
                data[i] += delta;
                loss(conv, &Tensor::from_vec(data, x.shape().clone(), &Cpu))
            };
            let numeric = (at(h) - at(-h)) / (2.0 * f64::from(h));
            let analytic = f64::from(grad_x[i]);
            assert!(
                (analytic - numeric).abs() < 1e-2,
                "{config:?} x[{i}]: {analytic} vs {numeric}"
            );
        }
        let grad_w = conv.weight.grad().unwrap().to_vec();
        for i in (0..conv.weight.value().numel()).step_by(every.1) {
            let at = |delta: f32| {
                let mut moved = conv.clone();
                let mut data = moved.weight.value().to_vec();
                data[i] += delta;
                let shape = moved.weight.value().shape().clone();
                moved
                    .weight
                    .set_value(Tensor::from_vec(data, shape, &Cpu))
                    .unwrap();
                loss(&moved, x)
            };
            let numeric = (at(h) - at(-h)) / (2.0 * f64::from(h));
            let analytic = f64::from(grad_w[i]);
            assert!(
                (analytic - numeric).abs() < 1e-2,
                "{config:?} w[{i}]: {analytic} vs {numeric}"
            );
        }
        (y, r)
    }

    /// Channel counts at which the CPU computes the forward pass and both gradients by
    /// Winograd's algorithm: a sample of the gradients against finite differences.
    #[test]
    fn winograd_gradients_match_finite_differences() {
        let rng = &mut seeded(7);
        let config = Conv2dConfig {
            padding: 1,
            ..Conv2dConfig::default()
        };
        let mut conv = Conv2d::new(32, 32, 3, config, &Cpu, rng);
        let x = Tensor::randn([2, 32, 5, 4], &Cpu, rng);
        let g = conv.geometry("test", &x).unwrap();
        assert!(conv.winograd_filters(&g, FilterRead::AsStored).is_some());
        let grad_out = Tensor::zeros([2, 32, 5, 4], &Cpu);
        assert!(conv.winograd_input_gradient(&g, &grad_out).is_some());
        check_gradients(&mut conv, &x, (7, 97), rng);
    }

    /// A second backward adds to the gradients; an empty batch after `zero_grad` gives zeros.
    #[test]
    fn backward_accumulates_and_an_empty_batch_gives_zero_gradients() {
        let rng = &mut seeded(7);
        let config = Conv2dConfig {
            groups: 2,
            ..Conv2dConfig::default()
        };
        let mut conv = Conv2d::new(4, 6, 3, config, &Cpu, rng);
        let x = Tensor::randn([3, 4, 5, 5], &Cpu, rng);
        let r = Tensor::randn([3, 6, 3, 3], &Cpu, rng);
        let grads = |conv: &Conv2d| {
            let bias = conv.bias.as_ref().unwrap();
            [conv.weight.grad(), bias.grad()].map(|grad| grad.unwrap().to_vec())
        };
        conv.backward(&x, &r, false).unwrap();
        let once = grads(&conv);
        conv.backward(&x, &r, false).unwrap();
        for (twice, once) in grads(&conv).iter().zip(&once) {
            let doubled: Vec<f32> = once.iter().map(|v| 2.0 * v).collect();
            crate::ops::assert_close(twice, &doubled);
        }
        conv.weight.zero_grad();
        conv.bias.as_mut().unwrap().zero_grad();
        let empty = Tensor::zeros([0, 4, 5, 5], &Cpu);
        conv.backward(&empty, &Tensor::zeros([0, 6, 3, 3], &Cpu), false)
            .unwrap();
        for grad in grads(&conv) {
            assert!(grad.iter().all(|&v| v == 0.0), "{grad:?}");
        }
    }

    #[test]
    fn a_wrong_input_is_an_error_naming_both_shapes() {
        let conv = Conv2d::new(3, 4, 3, Conv2dConfig::default(), &Cpu, &mut seeded(0));
        let error = conv
            .forward(&Tensor::zeros([2, 2, 5, 5], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "conv2d: expected shape [2, 3, 5, 5], found [2, 2, 5, 5]"
        );
        assert!(conv.forward(&Tensor::zeros([2, 3, 2, 2], &Cpu)).is_err());
    }

    /// Depthwise convolutions (a group per channel) against their definition, and their
    /// gradients against central differences: kernels of 1, 3 and 5, strides, dilation,
    /// padding, and a plane so small that some taps read nothing.
    #[test]
    fn depthwise_convolutions_match_the_definition() {
        // (kernel, stride, padding, dilation, height, width)
        let configs = [
            (3, 1, 1, 1, 5, 6),
            (3, 2, 1, 1, 5, 6),
            (3, 1, 2, 2, 5, 6),
            (5, 2, 2, 1, 7, 4),
            (3, 1, 2, 2, 1, 2),
            (1, 1, 0, 1, 3, 3),
        ];
        for (seed, (kernel, stride, padding, dilation, height, width)) in
            configs.into_iter().enumerate()
        {
            let rng = &mut seeded(20 + seed as u64);
            let config = Conv2dConfig {
                stride,
                padding,
                dilation,
                groups: 3,
                bias: true,
            };
            let mut conv = Conv2d::new(3, 3, kernel, config, &Cpu, rng);
            let x = Tensor::randn([2, 3, height, width], &Cpu, rng);
            let g = conv.geometry("test", &x).unwrap();
            assert!(conv.is_depthwise(&g), "{config:?}");
            let (w, b, xs) = (
                conv.weight.value().to_vec(),
                conv.bias.as_ref().unwrap().value().to_vec(),
                x.to_vec(),
            );
            let (out_h, out_w) = (g.out_height, g.out_width);
            let mut expected = vec![0.0f32; 2 * 3 * out_h * out_w];
            for (i, out) in expected.iter_mut().enumerate() {
                let (plane, oy, ox) = (i / (out_h * out_w), i / out_w % out_h, i % out_w);
                let c = plane % 3;
                *out = b[c];
                for (tap, &tap_weight) in w[c * kernel * kernel..][..kernel * kernel]
                    .iter()
                    .enumerate()
                {
                    let (ky, kx) = (tap / kernel, tap % kernel);
                    let iy = (oy * stride + ky * dilation).checked_sub(padding);
                    let ix = (ox * stride + kx * dilation).checked_sub(padding);
                    if let (Some(iy), Some(ix)) = (iy, ix)
                        && iy < height
                        && ix < width
                    {
                        *out += tap_weight * xs[(plane * height + iy) * width + ix];
                    }
                }
            }
            crate::ops::assert_close(&conv.forward(&x).unwrap().to_vec(), &expected);
            check_gradients(&mut conv, &x, (1, 1), rng);
        }
    }

    /// A pointwise convolution is its definition, `y[n, o] = Σ_c w[o, c] x[n, c] + b[o]`, per
    /// group, and keeps no columns.
    #[test]
    fn a_pointwise_convolution_is_its_definition() {
        let rng = &mut seeded(4);
        let config = Conv2dConfig {
            groups: 2,
            ..Conv2dConfig::default()
        };
        let conv = Conv2d::new(4, 6, 1, config, &Cpu, rng);
        let x = Tensor::randn([2, 4, 3, 5], &Cpu, rng);
        let (y, cols) = conv.forward_train(&x).unwrap();
        assert!(cols.is_none(), "the input is the columns");
        let (w, b, x) = (
            conv.weight.value().to_vec(),
            conv.bias.as_ref().unwrap().value().to_vec(),
            x.to_vec(),
        );
        let mut expected = vec![0.0f32; 2 * 6 * 15];
        for (i, out) in expected.iter_mut().enumerate() {
            let (n, o, p) = (i / 90, i / 15 % 6, i % 15);
            let group = o / 3;
            *out = b[o]
                + (0..2)
                    .map(|c| w[o * 2 + c] * x[(n * 4 + group * 2 + c) * 15 + p])
                    .sum::<f32>();
        }
        crate::ops::assert_close(&y.to_vec(), &expected);
    }

    /// Batches whose columns take more than [`COLUMNS_AT_ONCE`] unfold a chunk of samples at a
    /// time (the last one short) and keep no columns: the output and the input gradient
    /// are those of each sample alone, the weight's and bias's gradients their sums, and a
    /// second backward pass adds to them. With a bias and one group (7x7, stride 2), and
    /// without, in two groups with dilation.
    #[test]
    fn large_columns_are_unfolded_a_chunk_of_samples_at_a_time() {
        let rng = &mut seeded(5);
        let strided = Conv2dConfig {
            stride: 2,
            padding: 3,
            ..Conv2dConfig::default()
        };
        let dilated = Conv2dConfig {
            padding: 4,
            dilation: 2,
            groups: 2,
            bias: false,
            ..Conv2dConfig::default()
        };
        for (config, (channels, out, kernel), size) in
            [(strided, (3, 4, 7), 112), (dilated, (4, 6, 5), 64)]
        {
            // Columns of 410-460 K elements a sample: over 64 MiB for 41 samples.
            let (conv, batch) = (Conv2d::new(channels, out, kernel, config, &Cpu, rng), 41);
            let x = Tensor::randn([batch, channels, size, size], &Cpu, rng);
            let g = conv.geometry("test", &x).unwrap();
            let chunk = Conv2d::<Cpu>::column_chunk(&g);
            assert!(chunk > 1 && chunk < batch && batch % chunk != 0, "{g:?}");
            let (y, cols) = conv.forward_train(&x).unwrap();
            assert!(cols.is_none(), "chunked columns are not kept");
            let grad_out = Tensor::randn(y.shape().clone(), &Cpu, rng);
            let (mut chunked, mut alone) = (conv.clone(), conv.clone());
            let grad_x = chunked.backward(&x, &grad_out, true).unwrap().unwrap();
            let sample = |t: &Tensor<Cpu>, n| t.try_narrow(0, n, 1).unwrap();
            for n in 0..batch {
                let x_n = sample(&x, n);
                close(&sample(&y, n), &conv.forward(&x_n).unwrap(), "output");
                let grad_n = alone.backward(&x_n, &sample(&grad_out, n), true).unwrap();
                close(&sample(&grad_x, n), &grad_n.unwrap(), "input gradient");
            }
            let gradients = |conv: &Conv2d<Cpu>| -> Vec<Tensor<Cpu>> {
                let params = [Some(&conv.weight), conv.bias.as_ref()];
                let grads = params
                    .into_iter()
                    .flatten()
                    .map(|param| param.grad().unwrap());
                grads.map(|grad| grad.try_clone().unwrap()).collect()
            };
            let summed = gradients(&alone);
            for (found, summed) in gradients(&chunked).iter().zip(&summed) {
                close(found, summed, "parameter gradient");
            }
            chunked.backward(&x, &grad_out, false).unwrap();
            for (found, summed) in gradients(&chunked).iter().zip(&summed) {
                let twice = summed.try_map(UnaryOp::MulScalar(2.0)).unwrap();
                close(found, &twice, "accumulated gradient");
            }
        }
    }

    /// That `found` is `expected` to `f32` rounding of sums in another order, naming the
    /// first element that is not.
    fn close(found: &Tensor<Cpu>, expected: &Tensor<Cpu>, what: &str) {
        assert_eq!(found.shape(), expected.shape(), "{what}");
        let (found, expected) = (found.to_vec(), expected.to_vec());
        let peak = expected.iter().fold(1.0f32, |peak, e| peak.max(e.abs()));
        if let Some(i) = (0..found.len()).find(|&i| (found[i] - expected[i]).abs() > 1e-5 * peak) {
            panic!(
                "{what}: element {i} is {}, expected {}",
                found[i], expected[i]
            );
        }
    }

    /// The columns kept by the training forward pass give the backward pass that unfolds the
    /// input itself, bit for bit; columns of another shape are an error naming both.
    #[test]
    fn the_kept_columns_give_the_same_backward_pass() {
        let rng = &mut seeded(3);
        let config = Conv2dConfig {
            padding: 1,
            groups: 2,
            ..Conv2dConfig::default()
        };
        let conv = Conv2d::new(4, 6, 3, config, &Cpu, rng);
        let x = Tensor::randn([3, 4, 5, 6], &Cpu, rng);
        let (y, cols) = conv.forward_train(&x).unwrap();
        assert_eq!(y.to_vec(), conv.forward(&x).unwrap().to_vec());
        let r = Tensor::randn(y.shape().clone(), &Cpu, rng);
        let (mut recomputed, mut kept) = (conv.clone(), conv.clone());
        let from_x = recomputed.backward(&x, &r, true).unwrap().unwrap();
        let from_tape = Layer::layer_backward(&mut kept, Some(&x), cols, &r, true)
            .unwrap()
            .unwrap();
        assert_eq!(from_x.to_vec(), from_tape.to_vec());
        for (a, b) in [
            (&recomputed.weight, &kept.weight),
            (
                recomputed.bias.as_ref().unwrap(),
                kept.bias.as_ref().unwrap(),
            ),
        ] {
            assert_eq!(a.grad().unwrap().to_vec(), b.grad().unwrap().to_vec());
        }
        let short = Tensor::zeros([7], &Cpu);
        let error = kept
            .backward_with_columns(&x, Some(short), &r, true)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "conv2d backward: expected shape [3240], found [7]"
        );
    }
}
