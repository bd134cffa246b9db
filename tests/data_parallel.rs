//! Data-parallel training over MPI (`--features mpi`). Run by `cargo test`, this binary
//! launches itself under `mpirun` with 1, 2 and 3 ranks, one scenario per launch, and checks
//! each job's exit status and output. Every scenario holds for any number of ranks:
//! - `agree`: N ranks, each on 1/N of a batch, end with the gradients and the parameters of one
//!   process averaging the same shards (the tutorial net also against the whole batch, in one
//!   pass), for the tutorial net, `DynamicNet` with a different loop count on each rank, and a
//!   CNN with `BatchNorm`; rank 0's initial weights win; every rank ends with the same
//!   parameters and buffers;
//! - `mismatch`: a rank that declared another network fails on every rank, without a hang;
//! - `early_return`, `panic`, `exit`: a rank that stops early makes the job fail in bounded time.

#[path = "shared/two_layer_net.rs"]
mod two_layer_net;

#[path = "../examples/07_dynamic_net.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod dynamic_net;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use declnet::distributed::{Collective, DataParallel, Mpi};
use declnet::prelude::*;
use dynamic_net::DynamicNet;
use two_layer_net::TwoLayerNet;

network! {
    /// A small CNN with `BatchNorm`, whose batch statistics differ from shard to shard. The
    /// convolution has no bias: `BatchNorm` cancels it, so its gradient would be rounding
    /// noise, which Adam would scale up to full steps.
    pub struct SmallCnn(x: [N, 1, 8, 8]) -> [N, 10] {
        conv: Conv2d<1, 4, 3, padding = 1, bias = false>, bn: BatchNorm2d<4>, ReLU, MaxPool2d<2>,
        Flatten, fc: Linear<64, 10>
    }
}

network! {
    /// The tutorial net with another output width: what a rank with the wrong code declares.
    pub struct WiderNet {
        linear1: Linear<1000, 100>,
        linear2: Linear<100, 12>,
    }
    fn forward(x: [N, 1000]) -> [N, 12] {
        linear2(linear1(x).clamp_min(0.0))
    }
}

/// Samples in the whole batch: divisible by 1, 2 and 3 ranks.
const BATCH: usize = 12;
/// Optimizer steps each equivalence check takes: even ones average gradients after the
/// backward pass, odd ones during it.
const STEPS: usize = 4;

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next() {
        Some(scenario) if scenario.starts_with("--") => launch_all(),
        Some(scenario) => std::process::exit(run_rank(&scenario)),
        None => launch_all(),
    }
}

// ---- the launcher: `cargo test` runs this ----

/// What one `mpirun` launch must show.
struct Launch {
    scenario: &'static str,
    ranks: usize,
    succeeds: bool,
    /// Text every such job prints (on stdout or stderr).
    prints: &'static [&'static str],
}

const LAUNCHES: &[Launch] = &[
    Launch {
        scenario: "agree",
        ranks: 1,
        succeeds: true,
        prints: &["rank 0 of 1 agrees"],
    },
    Launch {
        scenario: "agree",
        ranks: 2,
        succeeds: true,
        prints: &["rank 1 of 2 agrees"],
    },
    Launch {
        scenario: "agree",
        ranks: 3,
        succeeds: true,
        prints: &["rank 2 of 3 agrees"],
    },
    Launch {
        scenario: "mismatch",
        ranks: 2,
        succeeds: true,
        prints: &[
            "rank 0 refused: DataParallel::new: rank(s) [1] declared another network than rank 0",
            "rank 1 refused: DataParallel::new: rank 1 declared another network than rank 0: it \
             has parameter `linear2.weight` [12, 100] where rank 0 has parameter \
             `linear2.weight` [10, 100]",
        ],
    },
    Launch {
        scenario: "early_return",
        ranks: 2,
        succeeds: false,
        prints: &["MPI rank 1 is done, but other ranks did not finish within 2s"],
    },
    Launch {
        scenario: "panic",
        ranks: 2,
        succeeds: false,
        prints: &["MPI rank 1 panicked, so the whole job is aborted"],
    },
    Launch {
        scenario: "exit",
        ranks: 3,
        succeeds: false,
        prints: &[],
    },
];

/// The longest a launch may take before it counts as hung.
const HANG: Duration = Duration::from_mins(2);

fn launch_all() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut failures = Vec::new();
    for launch in LAUNCHES {
        let name = format!("{} on {} rank(s)", launch.scenario, launch.ranks);
        match run_launch(&exe, launch) {
            Ok(seconds) => println!("ok: {name} ({seconds:.1} s)"),
            Err(why) => {
                println!("FAILED: {name}: {why}");
                failures.push(name);
            }
        }
    }
    println!(
        "{} passed, {} failed",
        LAUNCHES.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed launches: {failures:?}");
}

/// Runs one launch; the seconds it took, or what was wrong.
fn run_launch(exe: &std::path::Path, launch: &Launch) -> Result<f64, String> {
    let start = Instant::now();
    let mut child = Command::new("mpirun")
        .args([
            "-n",
            &launch.ranks.to_string(),
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .arg(exe)
        .arg(launch.scenario)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start `mpirun` (install openmpi-bin): {error}"))?;
    // Drain both pipes on threads, so a chatty job cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            return Err(format!("still running after {HANG:?}: a hang"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = out.join().unwrap_or_default() + &err.join().unwrap_or_default();
    if status.success() != launch.succeeds {
        return Err(format!("exit status {status}, output:\n{output}"));
    }
    if let Some(missing) = launch.prints.iter().find(|text| !output.contains(**text)) {
        return Err(format!("the output lacks `{missing}`:\n{output}"));
    }
    Ok(start.elapsed().as_secs_f64())
}

// ---- one rank of a job ----

/// Runs `scenario` on this rank; the exit status.
fn run_rank(scenario: &str) -> i32 {
    let mut mpi = Mpi::init().expect("MPI initialises");
    mpi.set_exit_timeout(Duration::from_secs(2));
    let (rank, world) = (mpi.rank(), mpi.world_size());
    match scenario {
        "agree" => {
            // Every rank of these jobs runs on this machine.
            assert_eq!(mpi.local_rank(), rank, "local rank");
            agree_tutorial(&mpi).expect("tutorial net");
            agree_dynamic(&mpi).expect("DynamicNet");
            agree_cnn(&mpi).expect("CNN");
            agree_optimizer_state(&mpi).expect("optimizer state");
            println!("rank {rank} of {world} agrees");
            0
        }
        "mismatch" => {
            let rng = &mut seeded(1);
            let refused = if rank == 1 {
                DataParallel::new(WiderNet::new(&Cpu, rng), &mpi).map(|_| ())
            } else {
                DataParallel::new(TwoLayerNet::new(&Cpu, rng), &mpi).map(|_| ())
            };
            let error = refused.expect_err("another network on rank 1 is an error on every rank");
            println!("rank {rank} refused: {error}");
            0
        }
        "early_return" | "panic" | "exit" => {
            let mut net = DataParallel::new(TwoLayerNet::new(&Cpu, &mut seeded(1)), &mpi)
                .expect("same networks");
            if rank == 1 {
                match scenario {
                    "early_return" => return 0,
                    "panic" => panic!("rank 1 fails"),
                    _ => std::process::exit(3),
                }
            }
            // The other ranks train on, and wait for rank 1 in their first all-reduce.
            let x = Tensor::ones([2, 1000], &Cpu);
            loop {
                let (y, tape) = net.forward_train(&x).expect("forward");
                net.backward_params(tape, &y).expect("backward");
                net.sync_gradients().expect("all-reduce");
            }
        }
        _ => {
            eprintln!("unknown scenario `{scenario}`");
            2
        }
    }
}

/// This rank's rows of the whole batch `x`.
fn shard(x: &Tensor, rank: usize, world: usize) -> Tensor {
    let rows = BATCH / world;
    x.try_narrow(0, rank * rows, rows)
        .expect("a shard of the batch")
}

/// The parameters' values, or their gradients, one after another.
fn flatten<M: Module<Cpu>>(net: &M, grads: bool) -> Vec<f32> {
    let mut values = Vec::new();
    net.visit_params(&mut |_, param| {
        let tensor = if grads {
            param.grad().cloned()
        } else {
            Some(param.value().clone())
        };
        values.extend(tensor.map_or_else(|| vec![f32::NAN; param.value().numel()], |t| t.to_vec()));
    });
    values
}

/// Checks `ours` against `expected` to a relative tolerance (NaN marks "no gradient" in both).
fn check_close(what: &str, ours: &[f32], expected: &[f32], tolerance: f32) -> Result<()> {
    assert_eq!(ours.len(), expected.len(), "{what}: lengths");
    let scale = expected
        .iter()
        .fold(1e-6_f32, |m, v| if v.is_nan() { m } else { m.max(v.abs()) });
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        let close = (a.is_nan() && b.is_nan()) || (a - b).abs() <= tolerance * scale;
        if !close {
            return Err(Error::Usage(format!(
                "{what}: element {i} is {a}, expected {b}"
            )));
        }
    }
    Ok(())
}

/// Checks that every rank holds rank 0's parameters and buffers, bit for bit.
fn check_same_everywhere<M: Module<Cpu>>(net: &M, mpi: &Mpi) -> Result<()> {
    let mut ours = flatten(net, false);
    net.visit_buffers(&mut |_, buffer| {
        if let declnet::runtime::Buffer::Tensor(tensor) = buffer {
            ours.extend(tensor.to_vec());
        }
    });
    let mut rank0 = ours.clone();
    mpi.broadcast(&mut rank0, 0)?;
    assert!(ours == rank0, "rank {} differs from rank 0", mpi.rank());
    Ok(())
}

/// A backward pass's callback for finished gradients, as `backward_params_notify` takes it.
type Ready<'a, M> = Option<&'a mut dyn FnMut(&M, &str) -> Result<()>>;

/// One data-parallel run against a single process that averages the same shards: `step`
/// accumulates one shard's gradient (scaled by `scale`) into a network, announcing finished
/// gradients to `ready` when given one.
fn check_against_reference<M, R>(
    mpi: &Mpi,
    make: impl Fn(&mut SeededRng) -> M,
    mut optimizer: impl FnMut() -> Optimizer<R>,
    step: impl Fn(&mut M, usize, f32, Ready<'_, M>) -> Result<()>,
    what: &str,
) -> Result<M>
where
    M: Module<Cpu>,
    R: UpdateRule,
{
    let (rank, world) = (mpi.rank(), mpi.world_size());
    let mut net = DataParallel::new(make(&mut seeded(100 + rank as u64)), mpi)?;
    // Buckets of 1 KiB, then 64 KiB: more than one per backward pass even for these small
    // nets (a parameter is never split between buckets).
    net.set_bucket_sizes(1024, 64 * 1024);
    let mut reference = make(&mut seeded(100));
    let initial = format!("{what}: rank 0's initial weights");
    check_close(
        &initial,
        &flatten(&*net, false),
        &flatten(&reference, false),
        0.0,
    )?;
    let (mut opt, mut reference_opt) = (optimizer(), optimizer());
    for iteration in 0..STEPS {
        net.zero_grad();
        let part = iteration * world + rank;
        if iteration % 2 == 1 {
            net.backward_synced(|net, ready| step(net, part, 1.0, Some(ready)))?;
            let buckets = net.last_sync().buckets;
            assert!(world == 1 || buckets > 1, "{what}: {buckets} buckets");
        } else {
            step(&mut net, part, 1.0, None)?;
            net.sync_gradients()?;
        }
        reference.zero_grad();
        for shard in 0..world {
            let part = iteration * world + shard;
            step(&mut reference, part, 1.0 / world as f32, None)?;
        }
        let grads = format!("{what}: step {iteration} gradients");
        check_close(
            &grads,
            &flatten(&*net, true),
            &flatten(&reference, true),
            1e-5,
        )?;
        opt.try_step(&mut net)?;
        reference_opt.try_step(&mut reference)?;
    }
    let params = format!("{what}: parameters");
    check_close(
        &params,
        &flatten(&*net, false),
        &flatten(&reference, false),
        1e-5,
    )?;
    check_same_everywhere(&*net, mpi)?;
    Ok(net.into_inner())
}

fn sgd() -> Sgd {
    Sgd::new(SgdConfig {
        lr: 1e-3,
        momentum: 0.9,
        ..SgdConfig::default()
    })
}

/// `grad` backpropagated through `net`, announcing finished gradients to `ready` if given.
macro_rules! backward {
    ($net:expr, $tape:expr, $grad:expr, $ready:expr) => {
        match $ready {
            Some(ready) => $net.backward_params_notify($tape, $grad, ready),
            None => $net.backward_params($tape, $grad),
        }
    };
}

fn agree_tutorial(mpi: &Mpi) -> Result<()> {
    let world = mpi.world_size();
    let x = Tensor::randn([BATCH, 1000], &Cpu, &mut seeded(7));
    let y = Tensor::randn([BATCH, 10], &Cpu, &mut seeded(8));
    let loss = MseLoss::new(Reduction::Mean);
    // `part` counts shards over the steps; shard `part % world` of the batch.
    let step = |net: &mut TwoLayerNet, part: usize, scale: f32, ready: Ready<'_, TwoLayerNet>| {
        let xs = shard(&x, part % world, world);
        let ys = shard(&y, part % world, world);
        let (out, tape) = net.forward_train(&xs)?;
        let (_, grad) = loss.try_value_and_grad(&out, &ys)?;
        backward!(net, tape, &(scale * &grad), ready)
    };
    let make = |rng: &mut SeededRng| TwoLayerNet::new(&Cpu, rng);
    check_against_reference(mpi, make, sgd, step, "tutorial net")?;
    // The mean over equal shards is the whole batch's gradient, computed in one pass.
    let mut split = DataParallel::new(make(&mut seeded(5 + mpi.rank() as u64)), mpi)?;
    let mut whole = make(&mut seeded(5));
    let (out, tape) = whole.forward_train(&x)?;
    let (_, grad) = loss.try_value_and_grad(&out, &y)?;
    whole.backward_params(tape, &grad)?;
    split.backward_synced(|net, ready| step(net, mpi.rank(), 1.0, Some(ready)))?;
    let what = "tutorial net: the whole batch's gradients";
    check_close(what, &flatten(&*split, true), &flatten(&whole, true), 1e-5)
}

fn agree_dynamic(mpi: &Mpi) -> Result<()> {
    let world = mpi.world_size();
    let x = Tensor::randn([BATCH, 1000], &Cpu, &mut seeded(9));
    let y = Tensor::randn([BATCH, 10], &Cpu, &mut seeded(10));
    let loss = MseLoss::new(Reduction::Mean);
    // Each shard takes its own trip count: 0 (no gradient for the middle layer), 1, 2, ..
    let step = |net: &mut DynamicNet, part: usize, scale: f32, ready: Ready<'_, DynamicNet>| {
        let xs = shard(&x, part % world, world);
        let ys = shard(&y, part % world, world);
        let (out, tape) = net.forward_train(&xs, part % 4)?;
        let (_, grad) = loss.try_value_and_grad(&out, &ys)?;
        backward!(net, tape, &(scale * &grad), ready)
    };
    let make = |rng: &mut SeededRng| DynamicNet::new(&Cpu, rng);
    check_against_reference(mpi, make, sgd, step, "DynamicNet")?;
    Ok(())
}

fn agree_cnn(mpi: &Mpi) -> Result<()> {
    let world = mpi.world_size();
    let x = Tensor::randn([BATCH, 1, 8, 8], &Cpu, &mut seeded(11));
    let labels: Vec<usize> = (0..BATCH).map(|i| (i * 7) % 10).collect();
    let loss = CrossEntropyLoss::default();
    let step = |net: &mut SmallCnn, part: usize, scale: f32, ready: Ready<'_, SmallCnn>| {
        let (rows, first) = (BATCH / world, (part % world) * (BATCH / world));
        let xs = shard(&x, part % world, world);
        let ys = Labels::try_new(&labels[first..first + rows], &Cpu)?;
        let (out, tape) = net.forward_train(&xs)?;
        let (_, grad) = loss.try_value_and_grad(&out, &ys)?;
        backward!(net, tape, &(scale * &grad), ready)
    };
    let adam = || {
        Adam::new(AdamConfig {
            lr: 1e-2,
            ..AdamConfig::default()
        })
    };
    let make = |rng: &mut SeededRng| SmallCnn::new(&Cpu, rng);
    check_against_reference(mpi, make, adam, step, "CNN")?;
    Ok(())
}

/// Only rank 0 has stepped its Adam (as after loading a checkpoint alone); after
/// `broadcast_optimizer`, every rank holds rank 0's state, bit for bit.
fn agree_optimizer_state(mpi: &Mpi) -> Result<()> {
    let mut net = DataParallel::new(TwoLayerNet::new(&Cpu, &mut seeded(3)), mpi)?;
    let mut adam = Adam::new(AdamConfig {
        lr: 1e-3,
        ..AdamConfig::default()
    });
    if mpi.rank() == 0 {
        let x = Tensor::randn([2, 1000], &Cpu, &mut seeded(4));
        for _ in 0..2 {
            net.zero_grad();
            let (y, tape) = net.forward_train(&x)?;
            net.backward_params(tape, &y)?;
            adam.try_step(&mut net)?;
        }
    }
    net.broadcast_optimizer(&mut adam)?;
    let state = adam.try_state()?;
    let mut ours: Vec<f32> = state.scalars.iter().map(|&(_, v)| v as f32).collect();
    ours.push(state.tensors.len() as f32);
    for (_, tensor) in &state.tensors {
        ours.extend(tensor.to_vec());
    }
    let mut rank0 = ours.clone();
    mpi.broadcast(&mut rank0, 0)?;
    assert!(
        state.tensors.len() == 8 && ours == rank0,
        "rank {}'s Adam state differs",
        mpi.rank()
    );
    Ok(())
}
