//! One training step of `09_char_gpt`'s model (4 blocks of width 128 and 4 heads, context 64,
//! vocabulary 76) at batch 16 with `AdamW`, against the time of the same step's matrix
//! products alone, and the tokens per second it trains.
//!
//! Run: `cargo bench --bench gpt_step`. Prints the step's median time, its GEMMs' median
//! time, their ratio, and tokens per second. For scale (issue 15): PyTorch about 48 ms per
//! step on this machine's 2 threads; declnet's goal is under 35 ms.

#[path = "../examples/09_char_gpt.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod example;
mod timing;

use std::hint::black_box;

use declnet::distributed::{DataParallel, Local};
use declnet::prelude::*;
use declnet::runtime::ops::matmul::{Gemm, GemmBatch, MatmulKernel, Strided};
use timing::median_call_time;

const SAMPLES: usize = 7;
const CALLS_PER_SAMPLE: usize = 2;

const WIDTH: usize = 128;
const HEADS: usize = 4;
const LAYERS: usize = 4;

/// `op(a) [m, k]` by `op(b) [k, n]`, `count` times over consecutive matrices.
struct Product {
    gemm: Gemm,
    count: usize,
}

fn product(m: usize, n: usize, k: usize, transposed: (bool, bool), count: usize) -> Product {
    Product {
        gemm: Gemm {
            m,
            n,
            k,
            trans_a: transposed.0,
            trans_b: transposed.1,
            alpha: 1.0,
            beta: 0.0,
        },
        count,
    }
}

/// Forward `x [rows, k] W^T` and its two gradient products, for a `Linear(k, n)` on `rows`.
fn linear(rows: usize, k: usize, n: usize) -> [Product; 3] {
    [
        product(rows, n, k, (false, true), 1),
        product(n, k, rows, (true, false), 1),
        product(rows, k, n, (false, false), 1),
    ]
}

/// The median time of every product of one step: per block the q/k/v, output and MLP
/// projections and the attention's two batched products, each with its gradients, and the
/// head's three.
fn gemms_only() -> std::time::Duration {
    let (rows, time, head) = (
        example::BATCH * example::CONTEXT,
        example::CONTEXT,
        WIDTH / HEADS,
    );
    let pairs = example::BATCH * HEADS;
    let mut products = Vec::new();
    for _ in 0..LAYERS {
        products.extend(linear(rows, WIDTH, 3 * WIDTH));
        products.extend(linear(rows, WIDTH, WIDTH));
        products.extend(linear(rows, WIDTH, 4 * WIDTH));
        products.extend(linear(rows, 4 * WIDTH, WIDTH));
        // scores = q k^T and out = A v, forward and both gradients each.
        products.push(product(time, time, head, (false, true), pairs));
        products.push(product(time, head, time, (false, false), pairs));
        products.push(product(time, head, time, (false, false), pairs));
        products.push(product(time, head, time, (true, false), pairs));
        products.push(product(time, time, head, (false, true), pairs));
        products.push(product(time, head, time, (true, false), pairs));
    }
    products.extend(linear(rows, WIDTH, example::VOCAB));
    let largest = rows * 4 * WIDTH;
    let (a, b) = (vec![0.5f32; largest], vec![0.5f32; largest]);
    let mut c = vec![0.0f32; largest];
    median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        for Product { gemm, count } in &products {
            let step = |size| Strided::new(0, size);
            let batch = GemmBatch::new(
                *count,
                step(gemm.m * gemm.k),
                step(gemm.k * gemm.n),
                step(gemm.m * gemm.n),
            );
            Cpu.gemm_batched(gemm, &batch, &a, &b, &mut c).unwrap();
        }
        black_box(&c);
    })
}

fn main() {
    let (_, train, _) = example::load_text().unwrap();
    let rng = &mut seeded(0);
    // One process: `Local` makes `sync_gradients` a no-op.
    let net = example::CharGpt::new(&Cpu, rng);
    let mut net = DataParallel::new(net, Local).unwrap();
    let mut optimizer = AdamW::new(AdamWConfig {
        lr: 1e-9,
        betas: (0.9, 0.95),
        weight_decay: 0.1,
        ..AdamWConfig::default()
    });
    let step = median_call_time(SAMPLES, CALLS_PER_SAMPLE, || {
        black_box(example::train_step(&mut net, &mut optimizer, &train, &Cpu, rng).unwrap());
    });
    let gemms = gemms_only();
    let tokens = (example::BATCH * example::CONTEXT) as f64;
    println!("cpu gpt step (median of {SAMPLES}x{CALLS_PER_SAMPLE}): {step:?}");
    println!("cpu gpt GEMMs only:                   {gemms:?}");
    println!(
        "cpu gpt step / GEMMs only: {:.2} (goal: under 35 ms per step)",
        step.as_secs_f64() / gemms.as_secs_f64()
    );
    println!(
        "cpu gpt tokens per second: {:.0}",
        tokens / step.as_secs_f64()
    );
}
