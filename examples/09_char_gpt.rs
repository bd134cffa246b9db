//! A character-level GPT trained on Shakespeare (`examples/data/shakespeare.txt`): context 64,
//! 4 pre-`LayerNorm` blocks of 4 heads, width 128, trained with `AdamW` on a warm-up and cosine
//! schedule on random windows of the first 90% of the text, and validated on the last 10%.
//! Every shape below is checked when this file compiles.
//!
//! Run: `cargo run --release --example 09_char_gpt` (add `--features cuda -- --device cuda`
//! for the GPU). Options: `--steps N` (2000), `--eval-every N` (250), `--lr` (5e-3, the peak of
//! the schedule), `--plot losses.png`, `--save gpt.safetensors`, `--load gpt.safetensors` (skip
//! training), and sampling: `--generate 500 --temperature 0.8 --prompt "ROMEO."`. `--help`
//! lists them; an unknown flag is an error.
//!
//! Prints the validation loss every `--eval-every` steps (a progress bar with tokens per
//! second on a terminal), the validation loss on 40 fixed batches after training, then the
//! sample. Measured on 2 cores: 2000 steps in 76 s (38 ms per step), validation loss 1.79 (10
//! batches) and 1.81 (40 batches) nats per character; 750 steps take 31 s and reach 1.96.
//! `tests/char_gpt.rs` trains a shortened run.
//!
//! Data-parallel on several processes (`--features mpi`, Open MPI installed): `mpirun -n 2
//! target/release/examples/09_char_gpt --data-parallel` after `cargo build --release
//! --features mpi --example 09_char_gpt`. Each rank draws `16 / ranks` windows per step, so
//! the global batch stays 16; gradients are averaged while the backward pass runs, and only
//! rank 0 prints, evaluates, saves and samples. Measured on the same 2 cores: 2000 steps in
//! 77 s (39 ms per step, 48% of the all-reduce time hidden behind the backward pass),
//! validation loss 1.80 (40 batches).
//! On GPUs, one process each, built with `--features mpi,nccl`, NCCL averages the gradients in
//! GPU memory instead ([`declnet::distributed::Nccl`]): `mpirun -n 2
//! target/release/examples/09_char_gpt --device cuda --data-parallel` gives the ranks on a machine
//! one GPU each.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/plot.rs"]
pub mod plot;
#[path = "support/ranks.rs"]
mod ranks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use declnet::distributed::{Collective, DataParallel, SyncTiming};
use declnet::prelude::*;
use declnet::runtime::rand::{Rng, RngExt as _};
use indicatif::{ProgressBar, ProgressStyle};
use plot::{Curve, plot_curves};
use ranks::{nccl_from_args, ranks_from_args};

/// Characters in the text: every one it holds (the `76` in `CharGpt`).
pub const VOCAB: usize = 76;
/// Positions the model sees at once (the `64` in `CharGpt`).
pub const CONTEXT: usize = 64;
/// Sequences per training step.
pub const BATCH: usize = 16;

network! {
    /// A pre-LayerNorm transformer block: causal self-attention, then a GELU MLP, each added
    /// to its input.
    pub struct Block {
        ln_1: LayerNorm<128>,
        attn: CausalSelfAttention<128, 4>,
        ln_2: LayerNorm<128>,
        mlp_fc: Linear<128, 512>,
        mlp_proj: Linear<512, 128>,
    }
    fn forward(x: [B, T, 128]) -> [B, T, 128] {
        let h = x + attn(ln_1(x));
        h + mlp_proj(mlp_fc(ln_2(h)).gelu())
    }
}

network! {
    /// The GPT: token and position embeddings, four blocks, a final `LayerNorm` and the head.
    pub struct CharGpt {
        wte: Embedding<76, 128>,
        wpe: Embedding<64, 128>,
        blocks: [Block; 4],
        ln_f: LayerNorm<128>,
        lm_head: Linear<128, 76, bias = false>,
    }
    fn forward(idx: Indices<[B, T]>, pos: Indices<[T]>) -> [B, T, 76] {
        let mut x = wte(idx) + wpe(pos);
        for block in blocks {
            x = block(x);
        }
        lm_head(ln_f(x))
    }
}

/// The characters of a text and their ids.
#[derive(Debug, Clone)]
pub struct Vocab {
    chars: Vec<char>,
    ids: HashMap<char, usize>,
}

impl Vocab {
    /// The distinct characters of `text`, sorted.
    ///
    /// # Errors
    /// When the text does not have [`VOCAB`] distinct characters (the model's width).
    pub fn of(text: &str) -> Result<Self> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.len() != VOCAB {
            return Err(Error::Usage(format!(
                "the text has {} distinct characters; the model is built for {VOCAB}",
                chars.len()
            )));
        }
        let ids = chars.iter().enumerate().map(|(id, &c)| (c, id)).collect();
        Ok(Self { chars, ids })
    }

    /// The ids of `text`'s characters.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the first character the vocabulary lacks.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .map(|c| {
                self.ids.get(&c).copied().ok_or_else(|| {
                    Error::Usage(format!("the character {c:?} is not in the vocabulary"))
                })
            })
            .collect()
    }

    /// The characters of `ids`.
    #[must_use]
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter().filter_map(|&id| self.chars.get(id)).collect()
    }
}

/// Where the text is, from the crate's root.
#[must_use]
pub fn data_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/shakespeare.txt")
}

/// The text's vocabulary and its ids, split 90/10 into training and validation.
///
/// # Errors
/// When the file cannot be read or its characters are not the model's.
pub fn load_text() -> Result<(Vocab, Vec<usize>, Vec<usize>)> {
    let path = data_path();
    let text = std::fs::read_to_string(&path).map_err(|error| Error::Io {
        op: "load_text",
        action: "read",
        path: path.clone(),
        kind: error.kind(),
        message: error.to_string(),
    })?;
    let vocab = Vocab::of(&text)?;
    let mut ids = vocab.encode(&text)?;
    let validation = ids.split_off(ids.len() * 9 / 10);
    Ok((vocab, ids, validation))
}

/// A batch of `rows` random windows of `tokens`: the inputs `[rows, CONTEXT]` and the next
/// character at each position, flattened.
///
/// # Errors
/// When the device fails.
pub fn batch<B: Backend, R: Rng + ?Sized>(
    tokens: &[usize],
    rows: usize,
    device: &B,
    rng: &mut R,
) -> Result<(Indices<B>, Labels<B>)> {
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for _ in 0..rows {
        let start = rng.random_range(0..tokens.len() - CONTEXT - 1);
        inputs.extend_from_slice(&tokens[start..start + CONTEXT]);
        targets.extend_from_slice(&tokens[start + 1..=start + CONTEXT]);
    }
    Ok((
        Indices::with_shape(&inputs, [rows, CONTEXT], device)?,
        Labels::try_new(&targets, device)?,
    ))
}

/// The positions `0..len`.
///
/// # Errors
/// When the device fails.
pub fn positions<B: Backend>(len: usize, device: &B) -> Result<Indices<B>> {
    Indices::new(&(0..len).collect::<Vec<_>>(), device)
}

/// One training step on a random batch of `tokens`, [`BATCH`] windows divided among the
/// ranks; returns this rank's loss.
///
/// # Errors
/// When the device or the collective fails.
pub fn train_step<B: Backend, C: Collective>(
    net: &mut DataParallel<CharGpt<B>, C, B>,
    optimizer: &mut AdamW<B>,
    tokens: &[usize],
    device: &B,
    rng: &mut SeededRng,
) -> Result<f32> {
    let rows = (BATCH / net.world_size()).max(1);
    let (idx, labels) = batch(tokens, rows, device, rng)?;
    let positions = positions(CONTEXT, device)?;
    let (logits, tape) = net.forward_train(&idx, &positions)?;
    let flat = logits.try_reshape([rows * CONTEXT, VOCAB])?;
    let (loss, grad) = CrossEntropyLoss::default().try_value_and_grad(&flat, &labels)?;
    net.zero_grad();
    let grad = grad.try_reshape([rows, CONTEXT, VOCAB])?;
    // The gradients' mean over the ranks, all-reduced as the backward pass finishes them.
    net.backward_synced(|net, ready| net.backward_params_notify(tape, &grad, ready))?;
    optimizer.try_step(net)?;
    loss.try_item()
}

/// The mean loss over `batches` random batches of `tokens` (seeded, so every evaluation sees
/// the same windows).
///
/// # Errors
/// When the device fails.
pub fn evaluate<B: Backend>(
    net: &CharGpt<B>,
    tokens: &[usize],
    batches: usize,
    device: &B,
) -> Result<f32> {
    let rng = &mut seeded(1234);
    let positions = positions(CONTEXT, device)?;
    let mut total = 0.0;
    for _ in 0..batches {
        let (idx, labels) = batch(tokens, BATCH, device, rng)?;
        let logits = net.forward(&idx, &positions)?;
        let flat = logits.try_reshape([BATCH * CONTEXT, VOCAB])?;
        total += CrossEntropyLoss::default()
            .forward(&flat, &labels)
            .try_item()?;
    }
    Ok(total / batches.max(1) as f32)
}

/// `length` characters after `prompt`, each drawn from the model's distribution at
/// `temperature` (its last `CONTEXT` characters as context).
///
/// # Errors
/// When the prompt has a character the vocabulary lacks, the temperature is not positive, or
/// the device fails.
pub fn generate<B: Backend>(
    net: &CharGpt<B>,
    vocab: &Vocab,
    prompt: &str,
    length: usize,
    temperature: f32,
    device: &B,
    rng: &mut SeededRng,
) -> Result<String> {
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(Error::Usage(format!(
            "`--temperature` must be positive, found {temperature}"
        )));
    }
    let mut ids = vocab.encode(prompt)?;
    if ids.is_empty() {
        ids.push(vocab.encode("\n")?[0]);
    }
    for _ in 0..length {
        let context = &ids[ids.len().saturating_sub(CONTEXT)..];
        let idx = Indices::with_shape(context, [1, context.len()], device)?;
        let logits = net
            .forward(&idx, &positions(context.len(), device)?)?
            .try_to_vec()?;
        let last = &logits[(context.len() - 1) * VOCAB..];
        let top = last.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = last
            .iter()
            .map(|&l| ((l - top) / temperature).exp())
            .collect();
        let mut draw = rng.random::<f32>() * weights.iter().sum::<f32>();
        let next = weights
            .iter()
            .position(|&w| {
                draw -= w;
                draw <= 0.0
            })
            .unwrap_or(VOCAB - 1);
        ids.push(next);
    }
    Ok(vocab.decode(&ids))
}

/// The value of option `flag` on the command line, parsed, or `default`.
fn arg<T: std::str::FromStr>(flag: &str, default: T) -> Result<T> {
    cli::value_of(flag).map_or(Ok(default), |text| {
        text.parse()
            .map_err(|_| Error::Usage(format!("`{flag}` cannot take `{text}`")))
    })
}

/// What `--help` prints.
const USAGE: &str =
    "usage: 09_char_gpt [--device cpu|cuda[:N]] [--steps N] [--eval-every N] [--lr LR]
                   [--plot losses.png] [--save gpt.safetensors | --load gpt.safetensors]
                   [--generate CHARS] [--temperature T] [--prompt TEXT] [--data-parallel]";

fn main() -> Result<()> {
    let options = [
        "--device",
        "--steps",
        "--eval-every",
        "--lr",
        "--plot",
        "--save",
        "--load",
        "--generate",
        "--temperature",
        "--prompt",
    ];
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

fn run<B: Backend>(device: &B, ranks: &dyn Collective) -> Result<()> {
    let (vocab, train, validation) = load_text()?;
    // Each rank draws its own windows; rank 0's initial weights go to every rank.
    let rng = &mut seeded(ranks.rank() as u64);
    let net = match cli::value_of("--load") {
        Some(path) => CharGpt::load(device, &path)?,
        None => {
            let net = train_net(device, &train, &validation, rng, ranks)?;
            if ranks.rank() > 0 {
                return Ok(()); // only rank 0 evaluates, saves and samples
            }
            if let Some(path) = cli::value_of("--save") {
                net.save(&path)?;
                println!("saved to {path}");
            }
            net
        }
    };
    println!(
        "validation loss: {:.4}",
        evaluate(&net, &validation, 40, device)?
    );
    let length: usize = arg("--generate", 0)?;
    if length > 0 {
        let prompt = cli::value_of("--prompt").unwrap_or_default();
        let temperature: f32 = arg("--temperature", 0.8)?;
        println!(
            "{}",
            generate(&net, &vocab, &prompt, length, temperature, device, rng)?
        );
    }
    Ok(())
}

fn train_net<B: Backend>(
    device: &B,
    train: &[usize],
    validation: &[usize],
    rng: &mut SeededRng,
    ranks: &dyn Collective,
) -> Result<CharGpt<B>> {
    let main_rank = ranks.rank() == 0;
    let steps: usize = arg("--steps", 2000)?;
    let every: usize = arg("--eval-every", 250)?.max(1);
    let lr: f64 = arg("--lr", 5e-3)?;
    let mut net = DataParallel::new(CharGpt::new(device, rng), ranks)?;
    if main_rank {
        println!("{} parameters", CharGpt::<B>::NUM_PARAMS);
    }
    let mut optimizer = AdamW::new(AdamWConfig {
        lr,
        betas: (0.9, 0.95),
        weight_decay: 0.1,
        ..AdamWConfig::default()
    });
    let schedule = WarmupCosineLr {
        warmup: steps / 20,
        total: steps,
        min_lr: lr / 10.0,
    };
    let mut scheduler = LrScheduler::try_new(schedule, &mut optimizer)?;
    let progress = if main_rank {
        ProgressBar::new(steps as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} steps {msg}") {
        progress.set_style(style);
    }
    let (mut train_losses, mut validation_losses) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut sync = SyncTiming::default();
    for step in 1..=steps {
        let loss = train_step(&mut net, &mut optimizer, train, device, rng)?;
        sync += net.last_sync();
        scheduler.try_step(&mut optimizer)?;
        train_losses.push(loss);
        let tokens_per_second = (step * BATCH * CONTEXT) as f64 / start.elapsed().as_secs_f64();
        progress.set_message(format!("loss {loss:.3}, {tokens_per_second:.0} tokens/s"));
        progress.inc(1);
        if main_rank && (step % every == 0 || step == steps) {
            let validation_loss = evaluate(&net, validation, 10, device)?;
            validation_losses.push(validation_loss);
            let line = format!(
                "step {step}: train loss {loss:.4}, validation loss {validation_loss:.4}, {:.0} s",
                start.elapsed().as_secs_f64()
            );
            // A hidden bar (output not a terminal) prints nothing, not even this.
            if progress.is_hidden() {
                println!("{line}");
            } else {
                progress.println(line);
            }
        }
    }
    progress.finish_and_clear();
    if !main_rank {
        return Ok(net.into_inner());
    }
    let elapsed = start.elapsed();
    let seconds = elapsed.as_secs_f64();
    println!(
        "trained {steps} steps in {seconds:.1} s ({:.1} ms per step, {} rank(s); {})",
        1e3 * seconds / steps.max(1) as f64,
        ranks.world_size(),
        sync.describe(elapsed)
    );
    if let Some(path) = cli::value_of("--plot") {
        let curves = [
            Curve {
                name: "training loss (per step)",
                values: &train_losses,
            },
            Curve {
                name: "validation loss (per evaluation)",
                values: &validation_losses,
            },
        ];
        plot_curves(Path::new(&path), "step / evaluation", &curves)?;
        println!("plotted to {path}");
    }
    Ok(net.into_inner())
}
