//! Finite-difference checks of every op `network!` differentiates, and of whole networks:
//! the generated `backward` must agree with central differences of `forward`, for parameters
//! and inputs, and `backward_params` must give the same parameter gradients.
//!
//! The loss is `sum(output * r)` for a fixed random `r`, so the output gradient is `r`.

mod common;

use common::cuda_or_skip;
use declnet::prelude::*;

/// Central-difference step. The forward passes run in f32: a smaller step loses more to
/// rounding (~1e-7 * |loss| / step) than it gains in truncation error (~step^2).
const STEP: f32 = 1e-2;
/// Allowed `|analytic - numeric| / max(1, |numeric|)`: f32 rounding over 2*STEP plus the
/// truncation error of smooth ops at this step stay well below it.
const TOLERANCE: f32 = 1e-2;

fn loss<B: Backend>(output: &Tensor<B>, weights: &Tensor<B>) -> f32 {
    (output * weights).sum().item()
}

/// Replaces element `index` of `tensor` with `value`.
fn with_element<B: Backend>(tensor: &Tensor<B>, index: usize, value: f32) -> Tensor<B> {
    let mut data = tensor.to_vec();
    data[index] = value;
    Tensor::from_vec(data, tensor.shape().clone(), tensor.device())
}

fn assert_close(what: &str, analytic: f32, numeric: f32) {
    let error = (analytic - numeric).abs() / numeric.abs().max(1.0);
    assert!(
        error <= TOLERANCE,
        "{what}: analytic {analytic}, numeric {numeric}"
    );
}

/// Checks `net`'s generated gradients at `inputs` against central differences.
fn check<B: Backend, N: Module<B>>(
    name: &str,
    net: &mut N,
    inputs: &[Tensor<B>],
    forward: impl Fn(&N, &[Tensor<B>]) -> Tensor<B>,
    backward: impl Fn(&mut N, &[Tensor<B>], &Tensor<B>) -> Vec<Tensor<B>>,
    backward_params: impl Fn(&mut N, &[Tensor<B>], &Tensor<B>),
) {
    let output = forward(net, inputs);
    let weights = Tensor::randn(output.shape().clone(), output.device(), &mut seeded(99));
    net.zero_grad();
    let input_grads = backward(net, inputs, &weights);
    // A parameter the output does not depend on gets no gradient; its numeric one must be 0.
    let mut param_grads = Vec::new();
    net.visit_params(&mut |param_name, param| {
        let grad = param
            .grad()
            .map_or_else(|| vec![0.0; param.value().numel()], Tensor::to_vec);
        param_grads.push((param_name.to_owned(), grad, param.grad().is_some()));
    });

    // backward_params computes the same parameter gradients.
    net.zero_grad();
    backward_params(net, inputs, &weights);
    let mut index = 0;
    net.visit_params(&mut |param_name, param| {
        let (_, grad, present) = &param_grads[index];
        assert_eq!(param.grad().is_some(), *present, "{name}: {param_name}");
        if let Some(computed) = param.grad() {
            assert_eq!(&computed.to_vec(), grad, "{name}: {param_name}");
        }
        index += 1;
    });

    // Inputs.
    for (i, input) in inputs.iter().enumerate() {
        let analytic = input_grads[i].to_vec();
        assert_eq!(
            input_grads[i].shape(),
            input.shape(),
            "{name}: input {i} gradient shape"
        );
        for (j, &value) in input.to_vec().iter().enumerate() {
            let mut moved = inputs.to_vec();
            moved[i] = with_element(input, j, value + STEP);
            let up = loss(&forward(net, &moved), &weights);
            moved[i] = with_element(input, j, value - STEP);
            let down = loss(&forward(net, &moved), &weights);
            assert_close(
                &format!("{name}: input {i}[{j}]"),
                analytic[j],
                (up - down) / (2.0 * STEP),
            );
        }
    }

    // Parameters.
    for (param_name, analytic, _) in &param_grads {
        for (j, &grad) in analytic.iter().enumerate() {
            perturb(net, param_name, j, STEP);
            let up = loss(&forward(net, inputs), &weights);
            perturb(net, param_name, j, -2.0 * STEP);
            let down = loss(&forward(net, inputs), &weights);
            perturb(net, param_name, j, STEP);
            let numeric = (up - down) / (2.0 * STEP);
            assert_close(&format!("{name}: {param_name}[{j}]"), grad, numeric);
        }
    }
}

/// Adds `delta` to element `index` of parameter `name`.
fn perturb<B: Backend, N: Module<B>>(net: &mut N, name: &str, index: usize, delta: f32) {
    net.visit_params_mut(&mut |n, param| {
        if n == name {
            let value = param.value().to_vec()[index];
            param
                .set_value(with_element(param.value(), index, value + delta))
                .unwrap();
        }
    });
}

/// Runs [`check`] on a network type with one or two inputs, on the CPU and then on GPU 0
/// (skipped without one).
macro_rules! gradcheck {
    ($net:ident, $seed:expr, [$($dims:expr),+]) => {
        gradcheck!(@run $net, $seed, [$($dims),+], |net, i| net.forward(&i[0]).unwrap(),
            |net, i, g| {
                let (_, tape) = net.forward_train(&i[0]).unwrap();
                vec![net.backward(tape, g).unwrap()]
            },
            |net, i, g| {
                let (_, tape) = net.forward_train(&i[0]).unwrap();
                net.backward_params(tape, g).unwrap();
            })
    };
    ($net:ident, $seed:expr, [$($dims:expr),+], two_inputs) => {
        gradcheck!(@run $net, $seed, [$($dims),+], |net, i| net.forward(&i[0], &i[1]).unwrap(),
            |net, i, g| {
                let (_, tape) = net.forward_train(&i[0], &i[1]).unwrap();
                let (a, b) = net.backward(tape, g).unwrap();
                vec![a, b]
            },
            |net, i, g| {
                let (_, tape) = net.forward_train(&i[0], &i[1]).unwrap();
                net.backward_params(tape, g).unwrap();
            })
    };
    ($net:ident, $seed:expr, [$($dims:expr),+], extras = ($($extra:expr),+)) => {
        gradcheck!(@run $net, $seed, [$($dims),+], |net, i| net.forward(&i[0], $($extra),+).unwrap(),
            |net, i, g| {
                let (_, tape) = net.forward_train(&i[0], $($extra),+).unwrap();
                vec![net.backward(tape, g).unwrap()]
            },
            |net, i, g| {
                let (_, tape) = net.forward_train(&i[0], $($extra),+).unwrap();
                net.backward_params(tape, g).unwrap();
            })
    };
    (@run $net:ident, $seed:expr, [$($dims:expr),+], $forward:expr, $backward:expr, $backward_params:expr) => {{
        gradcheck!(@on &Cpu, $net, $seed, [$($dims),+], $forward, $backward, $backward_params);
        if let Some(cuda) = cuda_or_skip() {
            gradcheck!(@on &cuda, $net, $seed, [$($dims),+], $forward, $backward, $backward_params);
        }
    }};
    (@on $device:expr, $net:ident, $seed:expr, [$($dims:expr),+], $forward:expr, $backward:expr, $backward_params:expr) => {{
        let device = $device;
        let rng = &mut seeded($seed);
        let mut net = $net::new(device, rng);
        let inputs: Vec<Tensor<_>> = vec![$(Tensor::randn($dims, device, rng)),+];
        check(stringify!($net), &mut net, &inputs, $forward, $backward, $backward_params);
    }};
}

network! {
    struct LinearRelu {
        fc: Linear<4, 3>,
        out: Linear<3, 2, bias = false>,
    }
    fn forward(x: [B, 4]) -> [B, 2] {
        out(fc(x).relu())
    }
}

network! {
    struct Smooth {
        w: Param<[4, 4]>,
    }
    fn forward(x: [B, 4]) -> [B, 4] {
        let a = x.mm(w).sigmoid();
        let b = x.tanh();
        let c = x.gelu();
        a + b * c
    }
}

network! {
    struct ClampAndPow {
        w: Param<[3, 3]>,
    }
    fn forward(x: [B, 3]) -> [B, 3] {
        let h = x.mm(w);
        h.clamp_min(0.3) + h.pow(3.0) - h.pow(2.0)
    }
}

network! {
    struct Broadcasting {
        bias: Param<[3]>,
        scale: Param<[3]>,
        column: Param<[2, 1]>,
    }
    fn forward(x: [2, 3]) -> [2, 3] {
        (x + bias) * scale - column
    }
}

network! {
    struct Scalars {
        w: Param<[3, 3]>,
    }
    fn forward(x: [B, 3]) -> [B, 3] {
        let h = x.mm(w);
        3.0 - h * 2.0 + 1.5 * -h + (h + 1.0) * 0.5
    }
}

network! {
    struct Transposes {
        w: Param<[3, 4]>,
        v: Param<[2, 4]>,
    }
    fn forward(x: [2, 3]) -> [4, 4] {
        let a = x.mm(w);
        let b = a.t().mm(v);
        b + w.t().mm(x.t().mm(v))
    }
}

network! {
    struct MaterialisedTranspose {
        p: Param<[4, 3]>,
    }
    fn forward(x: [3, 4]) -> [4, 3] {
        x.t() * p
    }
}

network! {
    struct Reductions {
        w: Param<[3, 2]>,
    }
    fn forward(x: [B, 3]) -> [] {
        let h = x.mm(w);
        h.sum() * h.mean()
    }
}

network! {
    /// A value used three times: gradients add up.
    struct FanOut {
        w: Param<[3, 3]>,
    }
    fn forward(x: [B, 3]) -> [B, 3] {
        let h = x.mm(w);
        h * h + h
    }
}

network! {
    /// The same parameter and the same layer used twice (weight sharing).
    struct Shared {
        w: Param<[3, 3]>,
        middle: Linear<3, 3>,
    }
    fn forward(x: [B, 3]) -> [B, 3] {
        let mut h = x.mm(w).tanh();
        h = middle(h).tanh();
        h = middle(h).tanh();
        h.mm(w)
    }
}

network! {
    struct TwoInputs {
        w: Param<[3, 2]>,
    }
    fn forward(x: [B, 3], y: [B, 2]) -> [B, 2] {
        x.mm(w) * y + y
    }
}

network! {
    struct Sequential(x: [B, 5]) -> [B, 2] {
        Linear<5, 4>, Tanh, Linear<4, 4>, Sigmoid, Linear<4, 3>, GELU, Linear<3, 2>
    }
}

network! {
    /// A loop carrying two tensors, reusing a layer and a parameter, reading an outer value;
    /// its GELU and Mish keep their derivatives, one per iteration.
    struct Looped {
        shared: Linear<3, 3>,
        w: Param<[3, 3]>,
    }
    fn forward(x: [B, 3], repeats: usize) -> [B, 3] {
        let outer = x.tanh();
        let mut h = x.mm(w);
        let mut c = x * 0.5;
        for _ in 0..repeats {
            let t = shared(h).mish().tanh();
            h = t * c + outer.gelu();
            c = c.sigmoid().mm(w);
        }
        h + c
    }
}

/// `x^3` with a hand-written backward pass, as a custom function.
struct Cube;

impl<B: Backend> declnet::runtime::function::Function<B> for Cube {
    type Saved = Tensor<B>;
    fn forward(&self, input: &Tensor<B>) -> Result<(Tensor<B>, Tensor<B>)> {
        Ok((input.pow(3.0), input.try_clone()?))
    }
    fn backward(&self, input: &Tensor<B>, grad_output: &Tensor<B>) -> Result<Tensor<B>> {
        grad_output.pow_backward(input, 3.0)
    }
}

network! {
    /// A custom function used twice, once inside a loop.
    struct Custom {
        w: Param<[3, 3]>,
    }
    fn forward(x: [B, 3], repeats: usize) -> [B, 3] {
        let mut h = Cube.apply(x.mm(w));
        for _ in 0..repeats {
            h = Cube.apply(h.mm(w) * 0.5);
        }
        h
    }
}

network! {
    /// A residual block: `x + fc2(tanh(fc1(x)))`.
    pub struct Residual {
        fc1: Linear<4, 4>,
        fc2: Linear<4, 4>,
    }
    fn forward(x: [B, 4]) -> [B, 4] {
        x + fc2(fc1(x).tanh())
    }
}

network! {
    /// Nested networks: two residual blocks, one of them reused in a loop.
    struct Stacked {
        input: Linear<3, 4>,
        block1: Residual,
        block2: Residual,
        out: Linear<4, 2>,
    }
    fn forward(x: [B, 3], repeats: usize) -> [B, 2] {
        let mut h = block1(input(x));
        for _ in 0..repeats {
            h = block2(h);
        }
        out(h)
    }
}

network! {
    /// Nested networks as layers of a sequential network.
    struct SequentialNested(x: [B, 4]) -> [B, 4] {
        Residual, Tanh, Residual
    }
}

#[test]
fn nested_networks_and_a_residual_block_reused() {
    gradcheck!(Stacked, 17, [[2, 3]], extras = (3));
}

#[test]
fn nested_networks_in_a_sequential_network() {
    gradcheck!(SequentialNested, 18, [[2, 4]]);
}

#[test]
fn nested_parameters_have_dotted_names() {
    let net = Stacked::new(&Cpu, &mut seeded(0));
    let names: Vec<String> = net
        .params()
        .into_iter()
        .map(|(name, _)| name.into())
        .collect();
    assert_eq!(names, net.param_names());
    assert_eq!(
        names[2..6],
        [
            "block1.fc1.weight",
            "block1.fc1.bias",
            "block1.fc2.weight",
            "block1.fc2.bias"
        ]
    );
    assert_eq!(
        Stacked::<Cpu>::NUM_PARAMS,
        3 * 4 + 4 + 2 * (2 * (4 * 4 + 4)) + 4 * 2 + 2
    );
    assert_eq!(net.num_params(), Stacked::<Cpu>::NUM_PARAMS);
}

network! {
    /// `if` / `else if` / `else` on run-time arguments, each arm reassigning `h`.
    struct Branchy {
        a: Linear<3, 3>,
        b: Linear<3, 3>,
        w: Param<[3, 3]>,
    }
    fn forward(x: [B, 3], train: bool, mode: usize) -> [B, 3] {
        let mut h = x.mm(w);
        if train {
            h = a(h).tanh();
        } else if mode == 1 {
            h = b(h).sigmoid() * h;
        } else {
            h = h * 2.0;
        }
        h + x
    }
}

#[test]
fn branch_then_arm() {
    gradcheck!(Branchy, 19, [[2, 3]], extras = (true, 1));
}

#[test]
fn branch_else_if_arm() {
    gradcheck!(Branchy, 20, [[2, 3]], extras = (false, 1));
}

#[test]
fn branch_else_arm() {
    gradcheck!(Branchy, 21, [[2, 3]], extras = (false, 0));
}

#[test]
fn only_the_arm_that_ran_gets_gradients() {
    let rng = &mut seeded(22);
    let mut net = Branchy::new(&Cpu, rng);
    let x = Tensor::randn([2, 3], &Cpu, rng);
    let (y, tape) = net.forward_train(&x, false, 1).unwrap();
    net.backward_params(tape, &y).unwrap();
    assert!(net.a.weight.grad().is_none());
    assert!(net.b.weight.grad().is_some());
}

network! {
    /// Three outputs; the third is also an input of the other two.
    struct TwoHeads {
        trunk: Linear<3, 4>,
        head_a: Linear<4, 2>,
        head_b: Linear<4, 2>,
    }
    fn forward(x: [B, 3]) -> ([B, 2], [B, 2], [B, 4]) {
        let h = trunk(x).tanh();
        (head_a(h), head_b(h).sigmoid(), h)
    }
}

#[test]
fn multiple_outputs() {
    // The outputs combined linearly, `a + 3 b + h p`, so that one gradient check covers all
    // three: their gradients are `g`, `3 g` and `g p^T`.
    let rng = &mut seeded(23);
    let mut net = TwoHeads::new(&Cpu, rng);
    let inputs = vec![Tensor::randn([2, 3], &Cpu, rng)];
    let p = Tensor::randn([4, 2], &Cpu, rng);
    let combine = |(a, b, h): (Tensor, Tensor, Tensor)| &(&a + &(&b * 3.0)) + &h.mm(&p);
    let grads = |g: &Tensor| (g.clone(), g * 3.0, g.mm(p.t()));
    check(
        "TwoHeads",
        &mut net,
        &inputs,
        |net, i| combine(net.forward(&i[0]).unwrap()),
        |net, i, g| {
            let (_, tape) = net.forward_train(&i[0]).unwrap();
            let (ga, gb, gh) = grads(g);
            vec![net.backward(tape, (&ga, &gb, &gh)).unwrap()]
        },
        |net, i, g| {
            let (_, tape) = net.forward_train(&i[0]).unwrap();
            let (ga, gb, gh) = grads(g);
            net.backward_params(tape, (&ga, &gb, &gh)).unwrap();
        },
    );
}

#[test]
fn loop_with_zero_iterations() {
    gradcheck!(Looped, 13, [[2, 3]], extras = (0));
}

#[test]
fn loop_with_one_iteration() {
    gradcheck!(Looped, 14, [[2, 3]], extras = (1));
}

#[test]
fn loop_with_many_iterations() {
    gradcheck!(Looped, 15, [[2, 3]], extras = (4));
}

network! {
    /// Values whose one reader is an addition (or a subtraction, on its left) take their
    /// gradient from it without a copy: an elementwise output, a chain of sums, a product,
    /// the left side of a difference, and the last term of the output; `s` and `d`, read
    /// twice, keep adjoints of their own.
    struct SharedGradients {
        w: Param<[3, 3]>,
        v: Param<[3, 3]>,
    }
    fn forward(x: [B, 3]) -> [B, 3] {
        let h = x.mm(w);
        let s = h.tanh() + (h.mm(v).sigmoid() + x.mm(v));
        let d = s.mm(w).relu() - s;
        d + d.mm(v)
    }
}

#[test]
fn additions_share_their_gradient_with_their_operands() {
    gradcheck!(SharedGradients, 23, [[2, 3]]);
}

network! {
    /// Two residual steps, as in a transformer block: `x` and `h` are each read by a layer
    /// and by an addition, whose gradient their adjoints take after the layer's.
    struct Residuals {
        fc1: Linear<3, 3>,
        fc2: Linear<3, 3>,
    }
    fn forward(x: [B, 3]) -> [B, 3] {
        let h = x + fc1(x).tanh();
        h - fc2(h).sigmoid()
    }
}

#[test]
fn residual_additions_add_their_gradient_last() {
    gradcheck!(Residuals, 29, [[2, 3]]);
}

#[test]
fn custom_function_in_and_out_of_a_loop() {
    gradcheck!(Custom, 16, [[2, 3]], extras = (2));
}

network! {
    struct Softmaxes {
        w: Param<[3, 4]>,
    }
    fn forward(x: [B, 3]) -> [B, 4] {
        let h = x.mm(w);
        h.softmax(-1) * h + h.log_softmax(0)
    }
}

#[test]
fn softmax_and_log_softmax() {
    gradcheck!(Softmaxes, 24, [[2, 3]]);
}

network! {
    /// `nn.Sequential(nn.Linear(3, 4), nn.LogSoftmax(dim=-1))`.
    struct SequentialLogSoftmax(x: [B, 3]) -> [B, 4] {
        Linear<3, 4>,
        LogSoftmax<-1>,
    }
}

network! {
    struct SoftmaxLayer {
        fc: Linear<3, 4>,
        probs: Softmax<1>,
    }
    fn forward(x: [B, 3]) -> [B, 4] {
        probs(fc(x)) * fc(x)
    }
}

#[test]
fn softmax_layers() {
    gradcheck!(SequentialLogSoftmax, 25, [[2, 3]]);
    gradcheck!(SoftmaxLayer, 26, [[2, 3]]);
}

#[test]
fn summary_shows_softmax_layers_output() {
    let summary = SoftmaxLayer::<Cpu>::summary();
    let row = summary
        .lines()
        .find(|line| line.starts_with("probs"))
        .unwrap_or_else(|| panic!("no `probs` row in\n{summary}"));
    assert!(row.contains("[B, 4]") && !row.contains("unused"), "{row}");
}

network! {
    /// The newer activations as methods and in PyTorch's function form.
    struct Activations {
        w: Param<[3, 4]>,
    }
    fn forward(x: [B, 3]) -> [B, 4] {
        let h = x.mm(w);
        let a = h.silu() + mish(h) + h.leaky_relu(0.2) + elu(h, 0.7);
        let b = h.softplus() + h.softplus(2.0, 1.0) + h.hardtanh(-0.8, 0.9);
        relu(a) + tanh(b) * h.leaky_relu() + (h * 4.0).relu6()
    }
}

network! {
    /// Every elementwise layer, with and without arguments.
    struct ActivationLayers(x: [B, 3]) -> [B, 2] {
        Linear<3, 4>, LeakyReLU<0.2>, Linear<4, 4>, ELU, Linear<4, 4>, SiLU, Softplus<2.0, 5>,
        Linear<4, 4>, Mish, Hardtanh<-1.5, 1.5>, Identity, Linear<4, 4>, LeakyReLU, GELU,
        Linear<4, 4>, ReLU6, Linear<4, 2>
    }
}

network! {
    /// exp, log, sqrt, abs, sin, cos, neg, `/`, maximum, minimum and compound assignment.
    struct Arithmetic {
        w: Param<[3, 3]>,
        v: Param<[3]>,
    }
    fn forward(x: [B, 3]) -> [B, 3] {
        let h = x.mm(w);
        let positive = h.pow(2.0) + 0.5;
        let mut y = positive.log() + positive.sqrt() / positive + h.abs().neg();
        y += h.sin() * h.cos() - (h * 0.3).exp();
        y /= 2.0;
        y -= 1.0 / positive;
        y *= h.maximum(v) + h.minimum(v * 2.0);
        y / (v.abs() + 1.0)
    }
}

network! {
    /// A loop whose body reassigns an outer value (`h = z`), and one that shadows an outer
    /// name with `let`: the outer `t` stays the outer one.
    struct OuterValues {
        fc: Linear<3, 3>,
        w: Param<[3, 3]>,
    }
    fn forward(x: [B, 3], n: usize) -> [B, 3] {
        let z = fc(x);
        let t = x.tanh();
        let mut h = z;
        let mut g = x;
        for _ in 0..n {
            let t = g.mm(w).sigmoid();
            g = t * 2.0;
            h = z;
        }
        h + t + g
    }
}

network! {
    /// A parameter returned as it is: its gradient is the output's.
    struct ParamOutput {
        b: Param<[2, 3]>,
        fc: Linear<3, 3>,
    }
    fn forward(x: [2, 3]) -> ([2, 3], [2, 3]) {
        (b, fc(x))
    }
}

network! {
    /// A single output that is a parameter.
    struct BareParam {
        b: Param<[4]>,
    }
    fn forward(x: [B, 4]) -> [4] {
        b
    }
}

#[test]
fn loops_reading_outer_values() {
    gradcheck!(OuterValues, 16, [[2, 3]], extras = (2));
}

#[test]
fn parameters_returned_as_outputs() {
    let rng = &mut seeded(17);
    let mut net = ParamOutput::new(&Cpu, rng);
    let x = Tensor::randn([2, 3], &Cpu, rng);
    let ((b, y), tape) = net.forward_train(&x).unwrap();
    net.zero_grad();
    net.backward_params(tape, (&b, &y)).unwrap();
    assert_eq!(net.b.grad().unwrap().to_vec(), b.to_vec());
    gradcheck!(BareParam, 18, [[2, 4]]);
}

network! {
    /// `.flatten(1)`, `.reshape([..])` with a named dim, `.view([..])` with `-1`, on a
    /// `[B, C, H, W]` input.
    struct Reshapes {
        fc: Linear<48, 6>,
        w: Param<[2, 3]>,
    }
    fn forward(x: [B, 3, 4, 4]) -> [B, 2, 3] {
        let h = fc(x.flatten(1)).tanh();
        let r = h.reshape([B, 2, 3]) * w;
        r.view([B, -1]).sigmoid().view([B, 2, 3]) + r
    }
}

network! {
    /// A `Flatten` layer in the sequential form.
    struct FlattenThenLinear(x: [B, 2, 3, 2]) -> [B, 4] {
        Flatten, Linear<12, 4>, Tanh
    }
}

network! {
    /// Max pooling with padding and overlapping windows, average pooling, as methods and as
    /// layers.
    struct Pools {
        pool: MaxPool2d<2, 1>,
        fc: Linear<2, 3>,
    }
    fn forward(x: [B, 2, 5, 5]) -> [B, 3] {
        let a = x.max_pool2d(3, 2, 1);
        let b = pool(a.avg_pool2d(2, 1)) + a.avg_pool2d(3, 1).sigmoid();
        fc(b.flatten(1))
    }
}

network! {
    /// A small CNN: padded and grouped, strided and dilated convolutions, pooling, flatten.
    struct Cnn {
        conv1: Conv2d<2, 4, 3, padding = 1>,
        conv2: Conv2d<4, 4, 2, groups = 2, stride = 2, bias = false>,
        conv3: Conv2d<4, 3, 2, dilation = 2, padding = 1>,
        fc: Linear<12, 2>,
    }
    fn forward(x: [B, 2, 6, 6]) -> [B, 2] {
        let h = conv1(x).tanh().avg_pool2d(2, 1);
        let h = conv3(conv2(h).sigmoid());
        fc(h.flatten(1))
    }
}

#[test]
fn convolutions() {
    gradcheck!(Cnn, 25, [[2, 2, 6, 6]]);
}

/// Max pooling has kinks where two values of a window tie; with this seed no window holds two
/// values within the central difference's step (seeds 21 and 23 do, and fail by that alone).
#[test]
fn pooling() {
    gradcheck!(Pools, 22, [[2, 2, 5, 5]]);
}

#[test]
fn flatten_reshape_and_view() {
    gradcheck!(Reshapes, 19, [[2, 3, 4, 4]]);
    gradcheck!(FlattenThenLinear, 20, [[3, 2, 3, 2]]);
}

#[test]
fn newer_activation_methods() {
    gradcheck!(Activations, 13, [[3, 3]]);
}

#[test]
fn every_elementwise_layer() {
    gradcheck!(ActivationLayers, 14, [[3, 3]]);
}

#[test]
fn arithmetic_division_and_extrema() {
    gradcheck!(Arithmetic, 15, [[2, 3]]);
}

#[test]
fn linear_and_relu() {
    gradcheck!(LinearRelu, 1, [[3, 4]]);
}

#[test]
fn sigmoid_tanh_gelu() {
    gradcheck!(Smooth, 2, [[2, 4]]);
}

#[test]
fn clamp_min_and_pow() {
    gradcheck!(ClampAndPow, 3, [[2, 3]]);
}

#[test]
fn broadcast_add_sub_mul() {
    gradcheck!(Broadcasting, 4, [[2, 3]]);
}

#[test]
fn scalar_arithmetic_and_negation() {
    gradcheck!(Scalars, 5, [[2, 3]]);
}

#[test]
fn mm_with_transposed_operands() {
    gradcheck!(Transposes, 6, [[2, 3]]);
}

#[test]
fn materialised_transpose() {
    gradcheck!(MaterialisedTranspose, 7, [[3, 4]]);
}

#[test]
fn sum_and_mean() {
    gradcheck!(Reductions, 8, [[2, 3]]);
}

#[test]
fn value_used_several_times() {
    gradcheck!(FanOut, 9, [[2, 3]]);
}

#[test]
fn weight_sharing() {
    gradcheck!(Shared, 10, [[2, 3]]);
}

#[test]
fn two_inputs() {
    gradcheck!(TwoInputs, 11, [[2, 3], [2, 2]], two_inputs);
}

#[test]
fn sequential_network() {
    gradcheck!(Sequential, 12, [[3, 5]]);
}

network! {
    /// Attention written out by hand: `split`, `view`, `transpose`, a batched `matmul` that
    /// reads `k.transpose(-2, -1)` in place, a scale, `causal_mask`, `softmax` on the last dim.
    struct HandAttention {
        qkv: Linear<4, 12>,
        proj: Linear<4, 4>,
    }
    fn forward(x: [B, T, 4]) -> [B, T, 4] {
        let (q, k, v) = qkv(x).split(4, -1);
        let q = q.view([B, T, 2, 2]).transpose(1, 2);
        let k = k.view([B, T, 2, 2]).transpose(1, 2);
        let v = v.view([B, T, 2, 2]).transpose(1, 2);
        let att = (q.matmul(k.transpose(-2, -1)) / 2.0.sqrt()).causal_mask().softmax(-1);
        let y = att.matmul(v).transpose(1, 2).contiguous().view([B, T, 4]);
        proj(y)
    }
}

#[test]
fn hand_written_attention() {
    gradcheck!(HandAttention, 30, [[2, 3, 4]]);
}

network! {
    /// The other dim methods: `chunk` into unequal parts, `narrow` of a parameter, `permute`,
    /// products with the left operand transposed in place, and a mask in the middle.
    struct Layouts {
        w: Param<[3, 4, 5]>,
    }
    fn forward(x: [3, 5, 4]) -> [3, 4, 4] {
        let (a, b) = x.chunk(2, 1);
        let c = a.transpose(-2, -1).matmul(w.narrow(1, 0, 3));
        let d = b.permute([0, 2, 1]).matmul(w.narrow(1, 1, 2));
        let e = c.matmul(d.transpose(1, 2));
        e.causal_mask().softmax(-1) * 3.0 + e.permute(0, 2, 1)
    }
}

#[test]
fn dim_methods() {
    gradcheck!(Layouts, 31, [[3, 5, 4]]);
}
