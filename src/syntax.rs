//! The syntax of [`network!`](crate::network), construct by construct, each with an example
//! that compiles (and the rules, each with one that does not).
//!
//! # Two forms
//! **Sequential**, like `nn.Sequential`: the input shape, the output shape, and the layers in
//! order. Unnamed layers become fields `layer0`, `layer2`, ... (only layers with parameters
//! are fields) with PyTorch's `state_dict` names `0.weight`, `2.weight`, ...; a layer can be
//! named, `fc1: Linear<784, 128>`, and is then field `fc1` with names `fc1.weight`, ...
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct Mlp(x: [N, 784]) -> [N, 10] {
//!         Linear<784, 128>, ReLU, Linear<128, 10>
//!     }
//! }
//! network! {
//!     pub struct Named(x: [N, 784]) -> [N, 10] {
//!         hidden: Linear<784, 128>, ReLU, out: Linear<128, 10>
//!     }
//! }
//!
//! let net = Mlp::new(&Cpu, &mut seeded(0));
//! assert_eq!(net.param_names(), ["0.weight", "0.bias", "2.weight", "2.bias"]);
//! assert_eq!(net.layer2.out_features(), 10);
//! let named = Named::new(&Cpu, &mut seeded(0));
//! assert_eq!(named.param_names()[0], "hidden.weight");
//! ```
//! **Module**, like a custom `nn.Module`: named fields, then `fn forward` with the inputs'
//! shapes, the output's shape, and a body.
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct TwoLayerNet {
//!         linear1: Linear<1000, 100>,
//!         linear2: Linear<100, 10>,
//!     }
//!     fn forward(x: [N, 1000]) -> [N, 10] {
//!         let h = linear1(x).clamp_min(0.0);
//!         linear2(h)
//!     }
//! }
//! # let _ = TwoLayerNet::new(&Cpu, &mut seeded(0));
//! ```
//!
//! # Dims
//! A dim is a number, a const generic of the struct, or a name bound at run time from the
//! inputs (the batch, `N`): every input is checked once at entry and all `N`s must agree.
//! Layer and parameter dims must be known at compile time.
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct Mlp<const H: usize>(x: [N, 784]) -> [N, 10] {
//!         Linear<784, H>, ReLU, Linear<H, 10>
//!     }
//! }
//!
//! let net = Mlp::<64>::new(&Cpu, &mut seeded(0));
//! let error = net.forward(&Tensor::zeros([8, 783], &Cpu)).unwrap_err();
//! assert!(error.to_string().contains("input `x` must have shape [N, 784], found [8, 783]"));
//! ```
//!
//! # Layers
//! - `Linear<in, out>`, `Linear<in, out, bias = false>`: `nn.Linear`, on the last dim
//!   (`[N, in]`, `[B, T, in]`).
//! - `Conv2d<in, out, kernel>` with the named options `stride`, `padding`, `dilation`,
//!   `groups` and `bias = false` (PyTorch's defaults otherwise): `nn.Conv2d` on
//!   `[N, in, H, W]`; with numbers for `H` and `W` the output's are computed when the crate
//!   compiles, and a channel count, a kernel that does not fit, or groups that do not divide
//!   the channels are compile errors.
//! - `BatchNorm1d<features>` (`[N, C]` or `[N, C, L]`) and `BatchNorm2d<features>`
//!   (`[N, C, H, W]`), with the named options `eps`, `momentum` and `affine = false`:
//!   `nn.BatchNorm1d` / `nn.BatchNorm2d`, with the running statistics and
//!   `num_batches_tracked` as buffers (saved and loaded with the weights).
//! - `LayerNorm<len>`, with the named options `eps`, `elementwise_affine = false` and
//!   `bias = false`: `nn.LayerNorm(len)` over the last dim, which must be `len`.
//! - `Embedding<num, dim>`: `nn.Embedding`, called with an index input of `fn forward`
//!   declared `idx: Indices<[B, T]>` (after the tensor inputs; the caller passes
//!   `&Indices<B>`), giving `[B, T, dim]`; anything else given to it, or indices used as a
//!   tensor, is a compile error.
//! - `CausalSelfAttention<embed, heads>`: causal multi-head self-attention on
//!   `[B, T, embed]`, with `nn.MultiheadAttention`'s parameters (`in_proj_weight`,
//!   `in_proj_bias`, `out_proj.weight`, `out_proj.bias`); a head count that does not divide
//!   the width is a compile error.
//! - `Dropout`, `Dropout<p>` (0.5 by default): `nn.Dropout`, with masks from a generator seeded
//!   by the network's `rng`; backward uses the forward pass's mask.
//! - Both follow the network's mode: `net.train()` (the initial mode) and `net.eval()`
//!   (`Module`), which reach every nested network.
//! - `Param<[dims]>`: a raw trainable tensor, drawn from N(0, 1) like `torch.randn`, used by
//!   name in a forward body (module form only).
//! - Elementwise layers, with numbers for their parameters (those left out take PyTorch's
//!   defaults): `ReLU`, `Sigmoid`, `Tanh`, `GELU` (exact erf form), `SiLU`, `Mish`, `ReLU6`,
//!   `LeakyReLU<negative_slope = 0.01>`, `ELU<alpha = 1.0>`,
//!   `Softplus<beta = 1.0, threshold = 20.0>`, `Hardtanh<min_val = -1.0, max_val = 1.0>`,
//!   `Identity`.
//! - `Softmax<dim>`, `LogSoftmax<dim>`: a literal dim, negative counting from the end.
//! - `Flatten`, `Flatten<start>`, `Flatten<start, end>`: `nn.Flatten` (from dim 1 by default);
//!   the merged dims must be numbers, so the output shape is known when the crate compiles.
//! - `MaxPool2d<kernel>`, `MaxPool2d<kernel, stride, padding>` (also `stride = s`,
//!   `padding = p`), and the same for `AvgPool2d`: `nn.MaxPool2d` / `nn.AvgPool2d` over
//!   `[N, C, H, W]` with numbers for `H` and `W`; the stride is the kernel unless given.
//! - `AdaptiveAvgPool2d<size>`, `AdaptiveAvgPool2d<height, width>`: `nn.AdaptiveAvgPool2d`,
//!   for spatial sizes that are multiples of the output's by one factor (so its windows are
//!   uniform and square, like `AdaptiveAvgPool2d<1, 1>` after a square feature map).
//! - Another network declared with `network!`, by its type name (`block: ResBlock`): it must
//!   have one `[N, in]` input and one `[N, out]` output (or `[B, T, in]` to `[B, T, out]`);
//!   rustc checks the rank and the widths.
//! - A list of layers of one type, each with its own weights (`nn.ModuleList`):
//!   `blocks: [Block; 4]` is one array field, `net.blocks[2]`, named `blocks.0` to `blocks.3`
//!   in the `state_dict`. `forward` applies an element by index, `blocks[0](x)`, or each in
//!   turn with `for block in blocks { x = block(x); }` (unrolled when the crate compiles, so
//!   the list's length is the loop's).
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct Block(x: [N, 16]) -> [N, 16] {
//!         Linear<16, 16>, LeakyReLU<0.2>, Linear<16, 16>, Softplus, Hardtanh<-2.0, 2.0>
//!     }
//! }
//! network! {
//!     pub struct Net {
//!         w: Param<[8, 16]>,
//!         block: Block,
//!         act: ELU,
//!         out: Linear<16, 3, bias = false>,
//!         probs: LogSoftmax<-1>,
//!     }
//!     fn forward(x: [N, 8]) -> [N, 3] {
//!         let h = act(x.mm(w));
//!         probs(out(block(h) + h))
//!     }
//! }
//!
//! let net = Net::new(&Cpu, &mut seeded(0));
//! assert_eq!(net.param_names()[1], "block.0.weight");
//! assert!(Block::<Cpu>::summary().contains("LeakyReLU<0.2>"));
//! ```
//!
//! # Expressions in `forward`
//! - `let` bindings, reassignment, `h += e` (also `-=`, `*=`, `/=`).
//! - Layer calls `fc(h)`; `Param` fields by name; `MyFunction.apply(h)` for a custom
//!   function (below).
//! - `+ - * /` of tensors (broadcasting like PyTorch) and numbers, unary `-`.
//! - Methods: every elementwise layer as a method (`.relu()`, `.leaky_relu(0.2)`,
//!   `.softplus()`, ...), `.exp()`, `.log()`, `.sqrt()`, `.abs()`, `.sin()`, `.cos()`,
//!   `.neg()`, `.clamp_min(c)`, `.pow(p)`, `.maximum(t)`, `.minimum(t)`, `.softmax(dim)`,
//!   `.log_softmax(dim)`, `.mm(m)`, `.t()` (read in place by `.mm`), `.sum()`, `.mean()`,
//!   `.flatten()` / `.flatten(start)` / `.flatten(start, end)` (`torch.flatten`: from dim 0 by
//!   default), and `.reshape([..])` / `.view([..])` with numbers, the inputs' named dims, const
//!   generics and one `-1`, the element counts checked when the crate compiles;
//!   `.max_pool2d(k)`, `.max_pool2d(k, s, p)`, `.avg_pool2d(..)`.
//! - Methods that reorder, select or mask dims (next section): `.matmul(m)`,
//!   `.transpose(a, b)`, `.permute([..])`, `.contiguous()`, `.narrow(dim, start, len)`,
//!   `let (a, b, ..) = x.split(size, dim)` / `x.chunk(count, dim)`, `.causal_mask()`.
//! - A number's square root, for scales: `att / 8.0.sqrt()`.
//! - PyTorch's function form of the elementwise methods: `relu(h)`, `leaky_relu(h, 0.2)`.
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct Shapes(x: [N, 2, 6, 8]) -> [N, 5] {
//!         Conv2d<2, 4, 3, padding = 1>, BatchNorm2d<4>, ReLU, MaxPool2d<2>,
//!         AvgPool2d<3, 1, 1>, Flatten, Dropout<0.25>, Linear<48, 5>
//!     }
//! }
//! network! {
//!     pub struct Reshapes {
//!         fc: Linear<24, 6>,
//!     }
//!     fn forward(x: [N, 2, 3, 4]) -> [N, 2, 3] {
//!         fc(x.flatten(1)).reshape([N, 2, -1]).view([N, 2, 3])
//!     }
//! }
//! network! {
//!     pub struct Expressions {
//!         w: Param<[4, 4]>,
//!         scale: Param<[4]>,
//!     }
//!     fn forward(x: [N, 4]) -> [N, 4] {
//!         let h = x.mm(w.t());
//!         let mut y = relu(h) * scale + 1.0;
//!         y -= h.abs().sqrt() / 2.0;
//!         y *= -h.tanh();
//!         y.maximum(h).leaky_relu(0.1).softmax(-1)
//!     }
//! }
//! # let _ = Expressions::new(&Cpu, &mut seeded(0));
//! let y = Reshapes::new(&Cpu, &mut seeded(0)).forward(&Tensor::ones([5, 2, 3, 4], &Cpu))?;
//! assert_eq!(y.dims(), &[5, 2, 3]);
//! # let _ = Shapes::new(&Cpu, &mut seeded(0));
//! # Ok::<(), declnet::Error>(())
//! ```
//!
//! # Attention by hand
//! `CausalSelfAttention` is built in; the same computation can be written out, as in
//! nanoGPT, from these methods (dims are integer literals, negative ones counted from the end):
//! - `a.matmul(b)`: batched `torch.matmul` of tensors of one rank whose leading dims agree,
//!   `[.., T, D] x [.., D, S]`. `b.transpose(-2, -1)` (or `.t()` of a matrix) is read in place,
//!   not copied.
//! - `.transpose(a, b)`, `.permute([..])` (or `.permute(..)`): the dims reordered (copied, so
//!   `.contiguous()` only marks where PyTorch needs it); `.view([..])` / `.reshape([..])` split
//!   or merge dims, with the inputs' named dims (`[B, T, 4, 8]`).
//! - `.narrow(dim, start, len)`, and `let (q, k, v) = x.split(32, -1)` (parts of 32, the last
//!   maybe shorter) or `x.chunk(3, -1)` (3 parts): the dim's size must be a number, and the
//!   pattern must name every part (`_` drops one).
//! - `.causal_mask()`: `[.., T, T]` scores with the entries above the diagonal (a query's
//!   future) set to `-inf`, like `masked_fill` with a lower-triangular mask, without the mask.
//!
//! Their backward passes are generated like every other op's, and a mismatch (scores as
//! `q.matmul(k)`, a split into the wrong number of parts) is a compile error naming the shapes.
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct Attention {
//!         c_attn: Linear<32, 96>,
//!         c_proj: Linear<32, 32>,
//!     }
//!     fn forward(x: [B, T, 32]) -> [B, T, 32] {
//!         let (q, k, v) = c_attn(x).split(32, -1);
//!         let q = q.view([B, T, 4, 8]).transpose(1, 2); // [B, 4, T, 8]
//!         let k = k.view([B, T, 4, 8]).transpose(1, 2);
//!         let v = v.view([B, T, 4, 8]).transpose(1, 2);
//!         let att = (q.matmul(k.transpose(-2, -1)) / 8.0.sqrt()).causal_mask().softmax(-1);
//!         let y = att.matmul(v).transpose(1, 2).contiguous().view([B, T, 32]);
//!         c_proj(y)
//!     }
//! }
//!
//! let attention = Attention::new(&Cpu, &mut seeded(0));
//! let y = attention.forward(&Tensor::ones([2, 5, 32], &Cpu))?;
//! assert_eq!(y.dims(), &[2, 5, 32]);
//! # Ok::<(), declnet::Error>(())
//! ```
//!
//! # Control flow
//! `for _ in 0..n` loops and `if`/`else` statements on non-tensor arguments of `forward`
//! (declared after the tensors). A tensor reassigned inside must keep its shape; the backward
//! pass replays exactly the iterations and the arm that ran, and a layer used several times
//! gets the sum of its gradients (weight sharing).
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct DynamicNet {
//!         input_linear: Linear<10, 8>,
//!         middle_linear: Linear<8, 8>,
//!         output_linear: Linear<8, 2>,
//!     }
//!     fn forward(x: [N, 10], repeats: usize, skip: bool) -> [N, 2] {
//!         let mut h = input_linear(x).relu();
//!         for _ in 0..repeats {
//!             h = middle_linear(h).relu();
//!         }
//!         if skip {
//!             h = h * 0.5;
//!         } else {
//!             h += middle_linear(h);
//!         }
//!         output_linear(h)
//!     }
//! }
//!
//! let net = DynamicNet::new(&Cpu, &mut seeded(0));
//! let y = net.forward(&Tensor::ones([3, 10], &Cpu), 2, false)?;
//! assert_eq!(y.dims(), &[3, 2]);
//! # Ok::<(), declnet::Error>(())
//! ```
//!
//! # Custom functions
//! A unit struct implementing [`Function`](crate::runtime::function::Function), with its own
//! forward and backward, like a `torch.autograd.Function`; it keeps its input's shape.
//! ```
//! use declnet::prelude::*;
//!
//! struct MyReLU;
//!
//! impl<B: Backend> Function<B> for MyReLU {
//!     type Saved = Tensor<B>;
//!     fn forward(&self, input: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
//!         Ok((input.clamp_min(0.0), input.try_clone()?))
//!     }
//!     fn backward(&self, input: &Tensor<B>, grad_output: &Tensor<B>) -> Result<Tensor<B>> {
//!         grad_output.clamp_min_backward(input, 0.0)
//!     }
//! }
//!
//! network! {
//!     pub struct RawNet {
//!         w1: Param<[6, 4]>,
//!         w2: Param<[4, 2]>,
//!     }
//!     fn forward(x: [N, 6]) -> [N, 2] {
//!         MyReLU.apply(x.mm(w1)).mm(w2)
//!     }
//! }
//! # let _ = RawNet::new(&Cpu, &mut seeded(0));
//! ```
//!
//! # Several inputs and outputs
//! Inputs are listed like arguments; several outputs are a tuple of shapes, returned as a
//! tuple, and `backward` takes one gradient per output and returns one per input.
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct TwoHeads {
//!         shared: Linear<5, 8>,
//!         left: Linear<8, 2>,
//!         right: Linear<8, 3>,
//!     }
//!     fn forward(a: [N, 5], b: [N, 8]) -> ([N, 2], [N, 3]) {
//!         let h = shared(a).tanh() + b;
//!         (left(h), right(h))
//!     }
//! }
//!
//! let mut net = TwoHeads::new(&Cpu, &mut seeded(0));
//! let (a, b) = (Tensor::ones([4, 5], &Cpu), Tensor::ones([4, 8], &Cpu));
//! let ((l, r), tape) = net.forward_train(&a, &b)?;
//! let (grad_a, grad_b) = net.backward(tape, (&l, &r))?;
//! assert_eq!((grad_a.dims(), grad_b.dims()), (&[4, 5][..], &[4, 8][..]));
//! # Ok::<(), declnet::Error>(())
//! ```
//!
//! # What is generated
//! The struct (generic over the backend, `B: Backend = Cpu`, fields public); `new(&device,
//! &mut rng)` with PyTorch's initialisation; `forward` (inference, saves nothing);
//! `forward_train` (the output and a tape of what backward reads); `backward` (parameters'
//! gradients accumulate, input gradients returned) and `backward_params` (no input gradients);
//! `train_step(inputs, target, &loss_fn, &mut optimizer)` for one output; `NUM_PARAMS`;
//! `summary()`; `load(&device, path)`, a new network with a file's weights; and the
//! [`Module`](crate::runtime::Module) impl (`params()`, `params_mut()`, `zero_grad()`, and
//! through [`ModuleIo`](crate::io::ModuleIo) `save` and the in-place `load`).
//! ```
//! use declnet::prelude::*;
//!
//! network! {
//!     pub struct Tiny(x: [N, 3]) -> [N, 1] { Linear<3, 1> }
//! }
//!
//! let mut net = Tiny::new(&Cpu, &mut seeded(0));
//! let mut sgd: Sgd = Sgd::new(SgdConfig { lr: 0.1, ..SgdConfig::default() });
//! let (x, y) = (Tensor::ones([2, 3], &Cpu), Tensor::zeros([2, 1], &Cpu));
//! let first = net.train_step(&x, &y, &MseLoss::default(), &mut sgd)?.item();
//! let second = net.train_step(&x, &y, &MseLoss::default(), &mut sgd)?.item();
//! assert!(second < first);
//! assert_eq!(Tiny::<Cpu>::NUM_PARAMS, 4);
//! # Ok::<(), declnet::Error>(())
//! ```
//!
//! # Rules
//! A wrongly wired network does not compile. The error points at the layer to fix:
//! ```compile_fail
//! use declnet::prelude::*;
//! network! {
//!     // error: `Linear<50, 10>` (layer 2) expects input `[N, 50]`, found `[N, 100]`
//!     pub struct Net(x: [N, 784]) -> [N, 10] { Linear<784, 100>, ReLU, Linear<50, 10> }
//! }
//! ```
//! Every declared layer must be used, and must matter to the output: one that is not would
//! never get a gradient.
//! ```compile_fail
//! use declnet::prelude::*;
//! network! {
//!     pub struct Net { used: Linear<4, 4>, unused: Linear<4, 4> }
//!     // error: `unused` is declared but `forward` never uses it; remove it or use it
//!     fn forward(x: [N, 4]) -> [N, 4] { used(x) }
//! }
//! ```
//! A tensor reassigned in a loop or an `if` arm must keep its shape:
//! ```compile_fail
//! use declnet::prelude::*;
//! network! {
//!     pub struct Net { grow: Linear<4, 8> }
//!     fn forward(x: [N, 4], n: usize) -> [N, 4] {
//!         let mut h = x;
//!         // error: `h` changes shape in the loop: `[N, 4]` before it, `[N, 8]` after
//!         for _ in 0..n { h = grow(h); }
//!         h
//!     }
//! }
//! ```
//! A broadcast between widths that differ (neither 1) names both sides:
//! ```compile_fail
//! use declnet::prelude::*;
//! network! {
//!     pub struct Net { block: Linear<64, 32> }
//!     // error: cannot add `[N, 64]` (input `x`) and `[N, 32]` (`.relu()` of `block`)
//!     fn forward(x: [N, 64]) -> [N, 64] { x + block(x).relu() }
//! }
//! ```
//! A method the forward body does not know is an error, with a suggestion when one is close:
//! ```compile_fail
//! use declnet::prelude::*;
//! network! {
//!     pub struct Net { fc: Linear<4, 4> }
//!     // error: unknown method `.rleu()` in `forward`; did you mean `.relu()`?
//!     fn forward(x: [N, 4]) -> [N, 4] { fc(x).rleu() }
//! }
//! ```
