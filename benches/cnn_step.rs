//! A training step of two CNNs against the time of their matrix products alone: the digits
//! example's network at batch 64, and a larger one (batch 32 of 3x32x32, three 3x3 conv blocks
//! of 32, 64 and 128 channels with `BatchNorm2d`, `ReLU` and 2x2 max pooling, then a
//! `Linear`), both in training mode with cross-entropy and SGD with momentum. Then one
//! ImageNet-sized layer alone: a 64-to-64-channel 3x3 convolution over 224x224 images, batch
//! 2, forward and weight gradient (the backward pass of a first layer). Last, a depthwise 3x3
//! layer (32 channels, 112x112, batch 8), forward and both gradients, which has no products.
//!
//! The products are the step's own: im2col's, one per sample, and Winograd's 16 per pass
//! (timed over all tiles at once) for the passes the CPU computes by Winograd's algorithm.
//!
//! Run: `cargo bench --bench cnn_step`. Prints each step's median time, its GEMMs' median time,
//! their ratio (target <= 1.3), and what the GEMMs would take were every layer im2col's (the
//! products of the step the issue measured), with the step's ratio to those.

#[path = "../examples/08_digits_cnn.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;
mod timing;

use std::hint::black_box;

use declnet::prelude::*;
use declnet::runtime::Shape;
use declnet::runtime::ops::conv::{ConvGeometry, ConvKernel};
use declnet::runtime::ops::matmul::{Gemm, GemmBatch, MatmulKernel, Strided};
use timing::median_call_time;

const SAMPLES: usize = 15;
const CALLS_PER_SAMPLE: usize = 5;

/// Samples of one call each for the ImageNet-sized layer, whose pass takes tens of ms.
const LARGE_SAMPLES: usize = 7;

network! {
    /// The ImageNet-sized layer.
    pub struct ImageNetLayer(x: [N, 64, 224, 224]) -> [N, 64, 224, 224] {
        Conv2d<64, 64, 3, padding = 1>
    }
}

network! {
    /// The depthwise layer.
    pub struct DepthwiseLayer(x: [N, 32, 112, 112]) -> [N, 32, 112, 112] {
        Conv2d<32, 32, 3, padding = 1, groups = 32>
    }
}

network! {
    /// The larger CNN.
    pub struct LargerCnn(x: [N, 3, 32, 32]) -> [N, 10] {
        Conv2d<3, 32, 3, padding = 1>, BatchNorm2d<32>, ReLU, MaxPool2d<2>,
        Conv2d<32, 64, 3, padding = 1>, BatchNorm2d<64>, ReLU, MaxPool2d<2>,
        Conv2d<64, 128, 3, padding = 1>, BatchNorm2d<128>, ReLU, MaxPool2d<2>,
        Flatten, Linear<2048, 10>
    }
}

/// A 3x3, padding 1, stride 1 convolution of `input` to `output` channels over `size x size`.
struct Conv {
    input: usize,
    output: usize,
    size: usize,
}

/// `op(a) [m, k]` by `op(b) [k, n]`.
fn gemm(m: usize, n: usize, k: usize, (trans_a, trans_b): (bool, bool)) -> Gemm {
    Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha: 1.0,
        beta: 0.0,
    }
}

/// How a product runs: as a batch of products with outputs apart, or summed into one output.
#[derive(Clone, Copy)]
enum Products {
    Apart,
    Summed,
}

/// One product per sample, as `Conv2d` computes them (groups of 1): each operand's matrix at
/// `offset + sample * per_sample`, for `(offset, per_sample)` of `a`, `b` and `c`. The forward
/// and input-gradient products have outputs apart; the weight gradient's (`c` step 0) sum.
fn samples(gemm: Gemm, placements: [(usize, usize); 3], count: usize) -> (Gemm, GemmBatch) {
    let [a, b, c] = placements.map(|(offset, step)| Strided::new(offset, step));
    (gemm, GemmBatch::new(count, a, b, c))
}

/// How the bench times a convolution's products.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    /// As im2col computes them, one product per sample, for every layer.
    Im2col,
    /// As the step computes them: Winograd's 16 products (over all tiles at once) for the
    /// layers and passes the backend computes by Winograd's algorithm, im2col's for the rest.
    Step,
}

/// A buffer of `len` elements.
fn buffer(len: usize) -> Vec<f32> {
    vec![0.5f32; len]
}

/// A product to time: its shape and batch, how it runs, and its `a`, `b` and `c` buffers.
type Work = ((Gemm, GemmBatch), Products, Vec<f32>, Vec<f32>, Vec<f32>);

/// Winograd's 16 products of one pass over `tiles` tiles, `[m, k]` by `[k, n]` (`trans` as
/// the step reads its operands), outputs apart.
fn winograd_products(m: usize, n: usize, k: usize, trans: (bool, bool)) -> Work {
    const ENTRIES: usize = 16;
    let at = |len: usize| (0, len);
    let batch = samples(
        gemm(m, n, k, trans),
        [at(m * k), at(k * n), at(m * n)],
        ENTRIES,
    );
    let (a, b, c) = (
        buffer(ENTRIES * m * k),
        buffer(ENTRIES * k * n),
        buffer(ENTRIES * m * n),
    );
    (batch, Products::Apart, a, b, c)
}

/// Whether the step computes `conv`'s pass from `input` to `output` channels over `size x
/// size` by Winograd's algorithm.
fn by_winograd(batch: usize, input: usize, output: usize, size: usize) -> bool {
    let shape = Shape::from([batch, input, size, size]);
    let g = ConvGeometry::new("cnn_step", &shape, 3, 1, 1, 1).expect("a 3x3 convolution");
    Cpu.prefers_winograd(&g, output)
}

/// The median time, over `samples` of `calls` calls, of every product of one training step:
/// each convolution's forward, weight-gradient and (but the first's) input-gradient products,
/// and the classifier's three, if any.
fn gemms_only(
    (batch, convs, linear): (usize, &[Conv], Option<(usize, usize)>),
    algorithm: Algorithm,
    (timing_samples, calls): (usize, usize),
) -> std::time::Duration {
    let mut work = Vec::new();
    for (i, conv) in convs.iter().enumerate() {
        let (o, c, size) = (conv.output, conv.input, conv.size);
        let tiles = batch * size.div_ceil(2) * size.div_ceil(2);
        let step = algorithm == Algorithm::Step;
        if step && by_winograd(batch, c, o, size) {
            // v [tiles, C] by u^T, and the weight gradient dy^T [out, tiles] by v.
            work.push(winograd_products(tiles, o, c, (false, true)));
            work.push(winograd_products(o, c, tiles, (true, false)));
            if i > 0 && by_winograd(batch, o, c, size) {
                work.push(winograd_products(tiles, c, o, (false, true)));
            }
            continue;
        }
        let (rows, l) = (c * 9, size * size);
        let (w, cols, y) = (
            buffer(o * rows),
            buffer(batch * rows * l),
            buffer(batch * o * l),
        );
        let (at_w, at_cols, at_y) = ((0, 0), (0, rows * l), (0, o * l));
        // y_n = W cols_n; dW += dy_n cols_n^T; dcols_n = W^T dy_n.
        let forward = gemm(o, l, rows, (false, false));
        let weight = gemm(o, rows, l, (false, true));
        let input = gemm(rows, l, o, (true, false));
        let forward = samples(forward, [at_w, at_cols, at_y], batch);
        let weight = samples(weight, [at_y, at_cols, at_w], batch);
        let input = samples(input, [at_w, at_y, at_cols], batch);
        work.push((forward, Products::Apart, w.clone(), cols.clone(), y.clone()));
        work.push((weight, Products::Summed, y.clone(), cols.clone(), w.clone()));
        // The first layer's input needs no gradient: the network skips that product.
        if i > 0 {
            work.push((input, Products::Apart, w, y, cols));
        }
    }
    if let Some((inputs, outputs)) = linear {
        let (x, w, y) = (
            buffer(batch * inputs),
            buffer(outputs * inputs),
            buffer(batch * outputs),
        );
        let once = [(0, 0); 3];
        let forward = samples(gemm(batch, outputs, inputs, (false, true)), once, 1);
        let weight = samples(gemm(outputs, inputs, batch, (true, false)), once, 1);
        let input = samples(gemm(batch, inputs, outputs, (false, false)), once, 1);
        work.push((forward, Products::Apart, x.clone(), w.clone(), y.clone()));
        work.push((weight, Products::Apart, y.clone(), x.clone(), w.clone()));
        work.push((input, Products::Apart, y, w, x));
    }
    median_call_time(timing_samples, calls, || {
        for ((gemm, batch), products, a, b, c) in &mut work {
            match products {
                Products::Apart => Cpu.gemm_batched(gemm, batch, a, b, c).unwrap(),
                Products::Summed => Cpu.gemm_summed(gemm, batch, a, b, c).unwrap(),
            }
        }
        black_box(&work);
    })
}

/// Prints the step's time (the median over `timing`'s samples of calls) next to its
/// products' (`convs` and the classifier `linear`), and the products im2col would compute.
fn report(
    name: &str,
    step: std::time::Duration,
    network: (usize, &[Conv], Option<(usize, usize)>),
    timing: (usize, usize),
) {
    let gemms = gemms_only(network, Algorithm::Step, timing);
    let im2col = gemms_only(network, Algorithm::Im2col, timing);
    let (samples, calls) = timing;
    println!("cpu {name} step (median of {samples}x{calls}): {step:?}");
    println!("cpu {name} GEMMs only:                   {gemms:?}");
    println!(
        "cpu {name} step / GEMMs only: {:.3} (target <= 1.3)",
        step.as_secs_f64() / gemms.as_secs_f64()
    );
    println!(
        "cpu {name} GEMMs if all were im2col's:   {im2col:?} (step / those: {:.3})",
        step.as_secs_f64() / im2col.as_secs_f64()
    );
}

fn main() {
    let rng = &mut seeded(0);
    let loss_fn = CrossEntropyLoss::default();
    let config = SgdConfig {
        lr: 1e-9,
        momentum: 0.9,
        ..SgdConfig::default()
    };

    let mut digits = example::DigitsCnn::new(&Cpu, rng);
    let x = Tensor::randn([64, 1, 8, 8], &Cpu, rng);
    let labels = Labels::new(&(0..64).map(|i| i % 10).collect::<Vec<_>>(), &Cpu);
    let mut sgd: Sgd = Sgd::new(config);
    let step = median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        black_box(digits.train_step(&x, &labels, &loss_fn, &mut sgd).unwrap());
    });
    let convs = [
        Conv {
            input: 1,
            output: 16,
            size: 8,
        },
        Conv {
            input: 16,
            output: 32,
            size: 4,
        },
    ];
    let timing = (SAMPLES, CALLS_PER_SAMPLE);
    report("digits cnn", step, (64, &convs, Some((128, 10))), timing);

    let mut larger = LargerCnn::new(&Cpu, rng);
    let x = Tensor::randn([32, 3, 32, 32], &Cpu, rng);
    let labels = Labels::new(&(0..32).map(|i| i % 10).collect::<Vec<_>>(), &Cpu);
    let mut sgd: Sgd = Sgd::new(config);
    let step = median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        black_box(larger.train_step(&x, &labels, &loss_fn, &mut sgd).unwrap());
    });
    let convs = [
        Conv {
            input: 3,
            output: 32,
            size: 32,
        },
        Conv {
            input: 32,
            output: 64,
            size: 16,
        },
        Conv {
            input: 64,
            output: 128,
            size: 8,
        },
    ];
    report("larger cnn", step, (32, &convs, Some((2048, 10))), timing);

    let mut layer = ImageNetLayer::new(&Cpu, rng);
    let x = Tensor::randn([2, 64, 224, 224], &Cpu, rng);
    let grad_y = Tensor::randn([2, 64, 224, 224], &Cpu, rng);
    let pass = median_call_time(LARGE_SAMPLES, 1, || {
        let (y, tape) = layer.forward_train(&x).unwrap();
        drop(y);
        layer.backward_params(tape, &grad_y).unwrap();
        black_box(&layer);
    });
    let conv = Conv {
        input: 64,
        output: 64,
        size: 224,
    };
    let network = (2, std::slice::from_ref(&conv), None);
    report("224x224 conv layer", pass, network, (LARGE_SAMPLES, 1));

    let mut layer = DepthwiseLayer::new(&Cpu, rng);
    let x = Tensor::randn([8, 32, 112, 112], &Cpu, rng);
    let grad_y = Tensor::randn([8, 32, 112, 112], &Cpu, rng);
    let pass = median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        let (y, tape) = layer.forward_train(&x).unwrap();
        drop(y);
        black_box(layer.backward(tape, &grad_y).unwrap());
    });
    println!(
        "cpu depthwise 3x3 layer, [8, 32, 112, 112], forward and both gradients (median of \
         {SAMPLES}x{CALLS_PER_SAMPLE}): {pass:?}"
    );
}
