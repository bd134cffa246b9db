//! Training steps in steady state make no heap allocations: tensor buffers come back from the
//! CPU backend's pool, and everything else a step builds lives on the stack. Checked with a
//! counting global allocator, for every tutorial stage's step (stage 1's raw tensor code, the
//! generated backward passes of stages 2 to 4 with their update loops by hand, the optimizers
//! of stages 5 and 6, `DynamicNet` with a trip count that changes from step to step), the
//! tutorial network with SGD, a 784-512-512-10 MLP with cross-entropy and Adam whose products
//! use both threads (its loss read back every step), raw tensor code on tensors that take more
//! memory at once than the pool's least bound, CNNs (the digits example's, and one whose
//! convolutions take every other CPU path: strided by im2col, depthwise, pointwise, and
//! Winograd's in bands of a large image; and a stem whose columns unfold a chunk of samples
//! at a time), trained and then in eval mode, and the char GPT's
//! transformer with `AdamW`. Its own `main` (no test harness): the steps run on the program's
//! main thread, as a program's do, so that nothing else runs in this process while it counts
//! and the kernels' parts go to that thread's own queue in the pool. (Work handed to rayon's
//! pool from a thread outside it goes through a queue that allocates a block per 63 jobs,
//! crossbeam's `Injector`: none of declnet's allocations.)

#[path = "../examples/09_char_gpt.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
#[allow(
    clippy::duplicate_mod,
    reason = "each example brings the support modules it shares with the other"
)]
mod char_gpt;
#[path = "../examples/08_digits_cnn.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod digits_cnn;
#[path = "../examples/07_dynamic_net.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod dynamic_net;
#[path = "../examples/01_tensors.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod raw_tensors;
#[path = "../examples/02_autograd.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod stage2;
#[path = "../examples/03_custom_function.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod stage3;
#[path = "../examples/04_nn.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod stage4;
#[path = "../examples/05_optim.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod stage5;
#[path = "../examples/06_custom_module.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod stage6;
#[path = "shared/two_layer_net.rs"]
mod two_layer_net;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use declnet::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Sgd, SgdConfig};
use declnet::prelude::*;
use two_layer_net::TwoLayerNet;

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`; `ptr` and `layout` come from an earlier allocation.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations `steps` calls of `step` make, after four calls to warm up (every trip count
/// of `DynamicNet` once: the first deepest step needs more buffers than the pool has yet).
fn allocations(steps: usize, mut step: impl FnMut(usize)) -> usize {
    for i in 0..4 {
        step(i);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..steps {
        step(i);
    }
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// That `steps` calls of `train` on `net`, then as many of `forward` in eval mode, allocate
/// nothing; each call's result must be `Ok`.
fn trains_then_evaluates_allocating_nothing<N: Module<Cpu>, T, Y>(
    (name, steps): (&str, usize),
    net: &mut N,
    mut train: impl FnMut(&mut N) -> declnet::Result<T>,
    mut forward: impl FnMut(&N) -> declnet::Result<Y>,
) {
    let count = allocations(steps, |_| drop(train(net).unwrap()));
    assert_eq!(count, 0, "allocations in {steps} steps of the {name}");
    net.eval();
    let count = allocations(steps, |_| drop(forward(net).unwrap()));
    assert_eq!(
        count, 0,
        "allocations in {steps} eval-mode passes of the {name}"
    );
}

network! {
    /// A convolution of stride 2 (by im2col), a depthwise and a pointwise one, and a 3x3 one
    /// over 48x48 maps (by Winograd's algorithm, in bands: more than 256 tiles a sample).
    struct MobileCnn(x: [N, 3, 96, 96]) -> [N, 10] {
        Conv2d<3, 16, 3, stride = 2, padding = 1>, BatchNorm2d<16>, ReLU,
        Conv2d<16, 16, 3, padding = 1, groups = 16>, Conv2d<16, 32, 1>, ReLU,
        Conv2d<32, 32, 3, padding = 1>, AvgPool2d<2>, ReLU,
        AdaptiveAvgPool2d<1, 1>, Flatten, Linear<32, 10>
    }
}

network! {
    /// A 7x7 convolution of stride 2 whose columns, for 37 images, take more than a batch
    /// unfolds at once (17 M elements): unfolded a chunk of samples at a time.
    struct StemCnn(x: [N, 3, 112, 112]) -> [N, 4] {
        Conv2d<3, 4, 7, stride = 2, padding = 3>, AdaptiveAvgPool2d<1, 1>, Flatten
    }
}

network! {
    struct Mlp(x: [N, 784]) -> [N, 10] {
        Linear<784, 512>, ReLU, Linear<512, 512>, ReLU, Linear<512, 10>
    }
}

fn main() {
    steady_state_steps_allocate_nothing();
    println!("allocations: steady-state steps allocate nothing (1 passed)");
}

fn steady_state_steps_allocate_nothing() {
    // The thread pool starts on first use, and its threads allocate as they start: a product
    // large enough to run on all of them first, so that none starts while this test counts.
    let warm = Tensor::ones([512, 512], &Cpu);
    assert_eq!(warm.mm(&warm).to_vec()[0], 512.0);
    let rng = &mut seeded(0);
    let x = Tensor::randn([64, 1000], &Cpu, rng);
    let y = Tensor::randn([64, 10], &Cpu, rng);

    // Stage 1's raw tensor code: every op returns a new tensor, from the pool.
    let (mut w1, mut w2) = (
        Tensor::randn([1000, 100], &Cpu, rng),
        Tensor::randn([100, 10], &Cpu, rng),
    );
    let count = allocations(10, |_| {
        raw_tensors::train_step(&x, &y, &mut w1, &mut w2, 1e-6);
    });
    assert_eq!(count, 0, "allocations in 10 steps of stage 1's tensor code");

    // Stages 2 to 4: generated backward passes, parameters updated by hand (over
    // `params_mut()` in stages 3 and 4).
    let mut stage2 = stage2::RawNet::new(&Cpu, rng);
    let count = allocations(5, |_| {
        stage2::train_step(&mut stage2, &x, &y, 1e-6).unwrap();
    });
    assert_eq!(count, 0, "allocations in 5 steps of stage 2");
    let mut stage3 = stage3::CustomReluNet::new(&Cpu, rng);
    let count = allocations(5, |_| {
        stage3::train_step(&mut stage3, &x, &y, 1e-6).unwrap();
    });
    assert_eq!(count, 0, "allocations in 5 steps of stage 3");
    let mut stage4 = stage4::TwoLayerNet::new(&Cpu, rng);
    let count = allocations(5, |_| {
        stage4::train_step(&mut stage4, &x, &y, 1e-4).unwrap();
    });
    assert_eq!(count, 0, "allocations in 5 steps of stage 4");
    // Stages 5 and 6: optimizers.
    let (mut stage5, mut adam) = (stage5::TwoLayerNet::new(&Cpu, rng), stage5::optimizer());
    let count = allocations(5, |_| {
        stage5::train_step(&mut stage5, &mut adam, &x, &y).unwrap();
    });
    assert_eq!(count, 0, "allocations in 5 steps of stage 5");
    let (mut stage6, mut sgd) = (stage6::TwoLayerNet::new(&Cpu, rng), stage6::optimizer());
    let count = allocations(5, |_| {
        stage6::train_step(&mut stage6, &mut sgd, &x, &y).unwrap();
    });
    assert_eq!(count, 0, "allocations in 5 steps of stage 6");

    let mut tutorial = TwoLayerNet::new(&Cpu, rng);
    let mut sgd = Sgd::new(SgdConfig {
        lr: 1e-6,
        ..SgdConfig::default()
    });
    let mse = MseLoss::new(Reduction::Sum);
    let count = allocations(10, |_| {
        tutorial.train_step(&x, &y, &mse, &mut sgd).unwrap();
    });
    assert_eq!(count, 0, "allocations in 10 steps of the tutorial network");

    let mut dynamic = dynamic_net::DynamicNet::new(&Cpu, rng);
    let mut momentum = dynamic_net::optimizer();
    // Trip counts 0 to 3 in turn, as the tutorial's random depth.
    let count = allocations(12, |i| {
        dynamic_net::train_step(&mut dynamic, &mut momentum, &x, &y, i % 4).unwrap();
    });
    assert_eq!(count, 0, "allocations in 12 steps of DynamicNet");

    let images = Tensor::randn([256, 784], &Cpu, rng);
    let labels: Vec<usize> = (0..256).map(|i| i % 10).collect();
    let labels = Labels::new(&labels, &Cpu);
    let mut mlp = Mlp::new(&Cpu, rng);
    let mut adam = Adam::new(AdamConfig::default());
    // Reading each step's loss back, as a training loop that logs it does.
    let count = allocations(20, |_| {
        let loss = mlp
            .train_step(&images, &labels, &CrossEntropyLoss::default(), &mut adam)
            .unwrap();
        assert!(loss.item().is_finite());
    });
    assert_eq!(count, 0, "allocations in 20 steps of the MLP");

    let cross_entropy = CrossEntropyLoss::default();
    let digits = Tensor::randn([64, 1, 8, 8], &Cpu, rng);
    let labels = Labels::new(&labels.as_slice()[..64], &Cpu);
    let mut cnn = digits_cnn::DigitsCnn::new(&Cpu, rng);
    let mut adam = digits_cnn::optimizer();
    trains_then_evaluates_allocating_nothing(
        ("digits CNN", 10),
        &mut cnn,
        |cnn| cnn.train_step(&digits, &labels, &cross_entropy, &mut adam),
        |cnn| cnn.forward(&digits),
    );

    let images = Tensor::randn([4, 3, 96, 96], &Cpu, rng);
    let labels = Labels::new(&labels.as_slice()[..4], &Cpu);
    let mut mobile = MobileCnn::new(&Cpu, rng);
    let mut momentum = Sgd::new(SgdConfig {
        lr: 1e-3,
        momentum: 0.9,
        ..SgdConfig::default()
    });
    trains_then_evaluates_allocating_nothing(
        ("mobile CNN", 5),
        &mut mobile,
        |mobile| mobile.train_step(&images, &labels, &cross_entropy, &mut momentum),
        |mobile| mobile.forward(&images),
    );

    let images = Tensor::randn([37, 3, 112, 112], &Cpu, rng);
    let labels = Labels::new(&(0..37).map(|i| i % 4).collect::<Vec<_>>(), &Cpu);
    let (mut stem, mut sgd) = (StemCnn::new(&Cpu, rng), Sgd::new(SgdConfig::default()));
    trains_then_evaluates_allocating_nothing(
        ("stem", 3),
        &mut stem,
        |stem| stem.train_step(&images, &labels, &cross_entropy, &mut sgd),
        |stem| stem.forward(&images),
    );

    // The transformer on a fixed batch (`char_gpt::batch` builds each on the host).
    let tokens: Vec<usize> = (0..4096).map(|i| (i * 7919) % char_gpt::VOCAB).collect();
    let (ids, targets) = char_gpt::batch(&tokens, char_gpt::BATCH, &Cpu, rng).unwrap();
    let positions = char_gpt::positions(char_gpt::CONTEXT, &Cpu).unwrap();
    let logits_shape = [char_gpt::BATCH, char_gpt::CONTEXT, char_gpt::VOCAB];
    let mut gpt = char_gpt::CharGpt::new(&Cpu, rng);
    let mut adamw = AdamW::new(AdamWConfig::default());
    let count = allocations(3, |_| {
        let (logits, tape) = gpt.forward_train(&ids, &positions).unwrap();
        let rows = logits
            .try_reshape([targets.len(), char_gpt::VOCAB])
            .unwrap();
        let (_, grad) = cross_entropy.try_value_and_grad(&rows, &targets).unwrap();
        gpt.zero_grad();
        let grad = grad.try_reshape(logits_shape).unwrap();
        gpt.backward_params(tape, &grad).unwrap();
        adamw.try_step(&mut gpt).unwrap();
    });
    assert_eq!(count, 0, "allocations in 3 steps of the char GPT");

    // Tensors that take more than the pool's least bound (256 MiB) at once: 400 MiB, whose
    // 300 MiB of results all wait in the pool for the next step; and kernels whose parts take
    // longer than the window in which the pool's threads wait for more (whose restart
    // allocates).
    let large = Tensor::randn([25 << 20], &Cpu, rng);
    let count = allocations(3, |_| {
        let exp = large.exp();
        let relu = exp.relu();
        let sum = &exp + &relu;
        assert!(sum.shape() == large.shape());
    });
    assert_eq!(count, 0, "allocations in 3 steps on 100 MiB tensors");
}
