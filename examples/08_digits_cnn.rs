//! A CNN on real data: the UCI handwritten digits (1797 8x8 images, `examples/data/`), split
//! 80/20 with a seed, trained with Adam on shuffled mini-batches of 64 in training mode
//! (batch statistics, dropout), and evaluated on the held-out fifth in eval mode after each
//! epoch. Every shape below is checked when this file compiles.
//!
//! Run: `cargo run --release --example 08_digits_cnn` (add `--features cuda -- --device cuda`
//! for the GPU; `--epochs N`; `--plot curves.png` to draw the training loss and test accuracy
//! per epoch; `--save model.safetensors` to keep the trained weights, and
//! `--load model.safetensors` to evaluate saved weights without training; `--help` lists the
//! options, and an unknown flag is an error).
//!
//! Prints `EPOCH TRAIN_LOSS TEST_ACCURACY` per epoch (with a progress bar on a terminal) and
//! the time taken; the last line is `test accuracy: ..` (about 0.98). `tests/digits_cnn.rs`
//! trains a shortened run.
//!
//! Data-parallel on several processes (`--features mpi`, Open MPI installed):
//! `mpirun -n 2 target/release/examples/08_digits_cnn --data-parallel` after `cargo build
//! --release --features mpi --example 08_digits_cnn`. Each rank trains on its shard of the
//! training set with batches of `64 / ranks`, so the global batch and the number of steps stay
//! those of one process; gradients are averaged while the backward pass runs. Only rank 0
//! prints, plots and saves, and it prints the time per step (evaluation included), the share
//! of it spent averaging gradients and how much of that the backward pass hid.
//! On GPUs, one process each, built with `--features mpi,nccl`, NCCL averages the gradients in
//! GPU memory instead ([`declnet::distributed::Nccl`]): `mpirun -n 2
//! target/release/examples/08_digits_cnn --device cuda --data-parallel` gives the ranks on a machine
//! one GPU each.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/plot.rs"]
pub mod plot;
#[path = "support/ranks.rs"]
mod ranks;

use std::path::{Path, PathBuf};
use std::time::Instant;

use declnet::data::{Dataset, accuracy};
use declnet::distributed::{Collective, DataParallel, SyncTiming};
use declnet::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use plot::{Curve, plot_curves};
use ranks::{nccl_from_args, ranks_from_args};

network! {
    /// Two convolution blocks and a linear classifier, PyTorch's `nn.Sequential` of
    /// `Conv2d(1, 16, 3, padding=1), BatchNorm2d(16), ReLU, MaxPool2d(2), Conv2d(16, 32, 3,
    /// padding=1), BatchNorm2d(32), ReLU, MaxPool2d(2), Flatten, Dropout(0.25), Linear(128, 10)`.
    pub struct DigitsCnn(x: [N, 1, 8, 8]) -> [N, 10] {
        conv1: Conv2d<1, 16, 3, padding = 1>, bn1: BatchNorm2d<16>, ReLU, MaxPool2d<2>,
        conv2: Conv2d<16, 32, 3, padding = 1>, bn2: BatchNorm2d<32>, ReLU, MaxPool2d<2>,
        Flatten, drop: Dropout<0.25>, fc: Linear<128, 10>
    }
}

/// Where the data set is, from the crate's root.
#[must_use]
pub fn data_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.safetensors")
}

/// The digits, pixels scaled to `[0, 1]` like the reference script (`images / 16`), as
/// `[1, 8, 8]` samples.
///
/// # Errors
/// When the file is missing or malformed.
pub fn load_digits() -> Result<Dataset> {
    let path = data_path();
    let images = declnet::io::load_tensor(&path, "images", &Cpu)?;
    let (labels, _) = declnet::io::load_indices(&path, "labels")?;
    let pixels: Vec<f32> = images.to_vec().iter().map(|v| v / 16.0).collect();
    Dataset::new(pixels, [1, 8, 8], labels)
}

/// Adam with a learning rate that trains this network in a few epochs.
#[must_use]
pub fn optimizer<B: Backend>() -> Adam<B> {
    Adam::new(AdamConfig {
        lr: 3e-3,
        ..AdamConfig::default()
    })
}

/// The batch size of training: over all ranks together, when data-parallel.
pub const BATCH: usize = 64;

/// What an epoch of training measured.
#[derive(Debug, Clone, Copy)]
pub struct Epoch {
    /// The mean training loss, over every rank's batches.
    pub loss: f32,
    /// The optimizer steps taken.
    pub steps: usize,
    /// How averaging gradients over the ranks went, over the epoch.
    pub sync: SyncTiming,
}

/// One epoch over `train` (this rank's shard) in shuffled batches of [`BATCH`] divided among
/// the ranks, in training mode, advancing `progress` by one per batch.
///
/// # Errors
/// When the device or the collective fails.
pub fn train_epoch<B: Backend, C: Collective>(
    net: &mut DataParallel<DigitsCnn<B>, C, B>,
    optimizer: &mut Adam<B>,
    train: &Dataset,
    device: &B,
    rng: &mut SeededRng,
    progress: &ProgressBar,
) -> Result<Epoch> {
    let loss_fn = CrossEntropyLoss::default();
    net.train();
    let batch = (BATCH / net.world_size()).max(1);
    let (mut total, mut steps, mut sync) = (0.0, 0, SyncTiming::default());
    for shard in train.batches(batch, device, Some(rng), false) {
        let (x, labels) = shard?;
        let (logits, tape) = net.forward_train(&x)?;
        let (loss, grad) = loss_fn.try_value_and_grad(&logits, &labels)?;
        net.zero_grad();
        // The gradients' mean over the ranks, all-reduced as the backward pass finishes them.
        net.backward_synced(|net, ready| net.backward_params_notify(tape, &grad, ready))?;
        sync += net.last_sync();
        optimizer.try_step(net)?;
        total += loss.try_item()?;
        steps += 1;
        progress.inc(1);
    }
    let mut loss = [total / steps.max(1) as f32];
    net.collective().all_reduce_mean(&mut loss)?;
    Ok(Epoch {
        loss: loss[0],
        steps,
        sync,
    })
}

/// The fraction of `test` the network classifies right; call it in eval mode (`net.eval()`),
/// as PyTorch's `model.eval()` before testing.
///
/// # Errors
/// When the device fails.
pub fn evaluate<B: Backend>(net: &DigitsCnn<B>, test: &Dataset, device: &B) -> Result<f32> {
    let (mut correct, mut seen) = (0.0, 0);
    for batch in test.batches::<B, SeededRng>(256, device, None, false) {
        let (x, labels) = batch?;
        let rows = labels.len();
        correct += accuracy(&net.forward(&x)?, labels.as_slice())? * rows as f32;
        seen += rows;
    }
    Ok(correct / seen.max(1) as f32)
}

/// What `--help` prints.
const USAGE: &str = "usage: 08_digits_cnn [--device cpu|cuda[:N]] [--epochs N] [--plot curves.png]
                     [--save model.safetensors | --load model.safetensors] [--data-parallel]";

fn main() -> Result<()> {
    let options = ["--device", "--epochs", "--plot", "--save", "--load"];
    if !cli::check_args(USAGE, &options, &["--data-parallel"])? {
        return Ok(());
    }
    let ranks = ranks_from_args()?;
    match DeviceArg::from_args()? {
        DeviceArg::Cpu => run(&Cpu, &*ranks),
        DeviceArg::Cuda(ordinal) => {
            // With `--data-parallel`, the ranks on a machine take one GPU each from `ordinal` on.
            let device = Cuda::new(ordinal + ranks.local_rank())?;
            match nccl_from_args(&device, &*ranks)? {
                Some(nccl) => run(&device, &nccl),
                None => run(&device, &*ranks),
            }
        }
    }
}

/// A bar over one epoch's batches, drawn on stderr only when it is a terminal, and only
/// when `shown` (rank 0).
fn epoch_bar(epoch: usize, batches: usize, shown: bool) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(batches as u64).with_message(format!("epoch {epoch}"));
    if let Ok(style) = ProgressStyle::with_template("{msg:>9} {bar:40} {pos}/{len} batches") {
        bar.set_style(style);
    }
    bar
}

fn run<B: Backend>(device: &B, ranks: &dyn Collective) -> Result<()> {
    let (train, test) = load_digits()?.split(0.2, &mut seeded(0));
    let main_rank = ranks.rank() == 0;
    if let Some(path) = cli::value_of("--load") {
        let mut net = DigitsCnn::load(device, &path)?;
        net.eval();
        println!("test accuracy: {:.4}", evaluate(&net, &test, device)?);
        return Ok(());
    }
    let epochs: usize = match cli::value_of("--epochs") {
        Some(text) => text
            .parse()
            .map_err(|_| Error::Usage(format!("`--epochs` takes a number, found `{text}`")))?,
        None => 10,
    };
    if main_rank {
        print!("{}", DigitsCnn::<B>::summary());
    }
    let train = train.shard(ranks.rank(), ranks.world_size())?;
    let rng = &mut seeded(1 + ranks.rank() as u64);
    let mut net = DataParallel::new(DigitsCnn::new(device, rng), ranks)?;
    let mut optimizer = optimizer();
    let start = Instant::now();
    let (mut losses, mut accuracies) = (Vec::new(), Vec::new());
    let (mut steps, mut sync) = (0, SyncTiming::default());
    for epoch in 1..=epochs {
        let batches = train.len().div_ceil((BATCH / ranks.world_size()).max(1));
        let progress = epoch_bar(epoch, batches, main_rank);
        let trained = train_epoch(&mut net, &mut optimizer, &train, device, rng, &progress)?;
        progress.finish_and_clear();
        steps += trained.steps;
        sync += trained.sync;
        if main_rank {
            net.eval();
            let test_accuracy = evaluate(&net, &test, device)?;
            println!("{epoch} {:.4} {test_accuracy:.4}", trained.loss);
            losses.push(trained.loss);
            accuracies.push(test_accuracy);
        }
    }
    if !main_rank {
        return Ok(());
    }
    let elapsed = start.elapsed();
    let seconds = elapsed.as_secs_f64();
    println!("trained {epochs} epochs in {seconds:.2} s");
    println!(
        "{} rank(s): {:.2} ms per step; {}",
        ranks.world_size(),
        1e3 * seconds / steps.max(1) as f64,
        sync.describe(elapsed)
    );
    if let Some(path) = cli::value_of("--plot") {
        let curves = [
            Curve {
                name: "training loss",
                values: &losses,
            },
            Curve {
                name: "test accuracy",
                values: &accuracies,
            },
        ];
        plot_curves(Path::new(&path), "epoch", &curves)?;
        println!("plotted to {path}");
    }
    if let Some(path) = cli::value_of("--save") {
        net.save(&path)?;
        println!("saved to {path}");
    }
    println!("test accuracy: {:.4}", evaluate(&net, &test, device)?);
    Ok(())
}
