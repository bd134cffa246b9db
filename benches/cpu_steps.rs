//! Generated training steps on the CPU against the time of their matrix products alone (the
//! lower bound for any implementation), as one table: the tutorial network with SGD and with
//! Adam, `DynamicNet` with momentum SGD, and a 784-512-512-10 MLP at batch 256 with
//! cross-entropy and Adam. Each GEMM-only time is measured in the same run, with the same
//! operand layouts, into buffers allocated once. Each row runs in a process of its own and
//! also prints that process's peak resident memory.
//!
//! Then the MLP's row again, alternately idle and beside a process of its own that keeps one
//! core busy, and the median ratio of the pairs; and idle on one thread, the most a step can
//! do with the one core a busy neighbour leaves it.
//!
//! Run: `cargo bench --bench cpu_steps` (`RAYON_NUM_THREADS` sets the thread count).

#[path = "../examples/07_dynamic_net.rs"]
#[allow(dead_code, reason = "the example's `main` is not used here")]
mod dynamic_net;
mod timing;
#[path = "../tests/shared/two_layer_net.rs"]
mod two_layer_net;

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use declnet::losses::{Loss, MseLoss, Reduction};
use declnet::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use declnet::prelude::*;
use timing::median_call_time;
use two_layer_net::TwoLayerNet;

const SAMPLES: usize = 21;

/// The products of one training step of a `Linear(inputs, outputs)` on the rows of `x`: the
/// forward `x W^T`, the weight gradient `dy^T x` and, unless it is the first layer, the input
/// gradient `dy W`.
struct LinearProducts<'x> {
    x: Cow<'x, Tensor>,
    w: Tensor,
    y: Tensor,
    grad_w: Tensor,
    grad_x: Option<Tensor>,
}

impl<'x> LinearProducts<'x> {
    fn new(x: Cow<'x, Tensor>, outputs: usize, input_grad: bool, rng: &mut SeededRng) -> Self {
        let [rows, inputs] = x.dims()[..] else {
            panic!("a batch of rows, not {:?}", x.dims());
        };
        Self {
            w: Tensor::randn([outputs, inputs], &Cpu, rng),
            y: Tensor::zeros([rows, outputs], &Cpu),
            grad_w: Tensor::zeros([outputs, inputs], &Cpu),
            grad_x: input_grad.then(|| Tensor::zeros([rows, inputs], &Cpu)),
            x,
        }
    }

    fn run(&mut self) {
        let x: &Tensor = &self.x;
        self.y.addmm_(x, self.w.t(), 0.0, 1.0);
        // `y` stands in for the output's gradient: same shape, same work.
        self.grad_w.addmm_(self.y.t(), x, 0.0, 1.0);
        if let Some(grad_x) = &mut self.grad_x {
            grad_x.addmm_(&self.y, &self.w, 0.0, 1.0);
        }
        black_box((&self.y, &self.grad_w, &self.grad_x));
    }
}

/// The median time of the products of a stack of `Linear` layers on the step's input `x`,
/// `layers` giving each one's output width and whether it computes its input's gradient. The
/// first multiplies `x` itself (a copy would add its size to the row's peak memory), the
/// others random inputs of their shape.
fn gemms_only(x: &Tensor, layers: &[(usize, bool)], calls: usize) -> Duration {
    let rng = &mut seeded(1);
    let mut products: Vec<LinearProducts> = Vec::new();
    for &(outputs, input_grad) in layers {
        let input = match products.last() {
            None => Cow::Borrowed(x),
            Some(previous) => Cow::Owned(Tensor::randn(previous.y.dims(), &Cpu, rng)),
        };
        products.push(LinearProducts::new(input, outputs, input_grad, rng));
    }
    median_call_time(SAMPLES, calls, || {
        for product in &mut products {
            product.run();
        }
    })
}

/// One row of the table.
struct Row {
    name: &'static str,
    step: Duration,
    gemms: Duration,
    target: f64,
}

fn tutorial(adam: bool) -> Row {
    let rng = &mut seeded(0);
    let x = Tensor::randn([64, 1000], &Cpu, rng);
    let y = Tensor::randn([64, 10], &Cpu, rng);
    let mut net = TwoLayerNet::new(&Cpu, rng);
    let loss_fn = MseLoss::new(Reduction::Sum);
    // Tiny learning rates keep the weights (and so the work) the same from step to step.
    let mut sgd = Sgd::new(SgdConfig {
        lr: 1e-12,
        ..SgdConfig::default()
    });
    let mut adam_optimizer = Adam::new(AdamConfig {
        lr: 1e-12,
        ..AdamConfig::default()
    });
    let gemms = gemms_only(&x, &[(100, false), (10, true)], 50);
    let step = median_call_time(SAMPLES, 50, || {
        let (y_pred, tape) = net.forward_train(&x).unwrap();
        let (loss, grad) = loss_fn.value_and_grad(&y_pred, &y);
        net.zero_grad();
        net.backward_params(tape, &grad).unwrap();
        if adam {
            adam_optimizer.step(&mut net);
        } else {
            sgd.step(&mut net);
        }
        black_box(loss);
    });
    let (name, target) = if adam {
        ("tutorial network, Adam", 1.2)
    } else {
        ("tutorial network, SGD", 1.1)
    };
    Row {
        name,
        step,
        gemms,
        target,
    }
}

fn dynamic_net() -> Row {
    const REPEATS: usize = 2;
    let rng = &mut seeded(0);
    let x = Tensor::randn([64, 1000], &Cpu, rng);
    let y = Tensor::randn([64, 10], &Cpu, rng);
    let mut net = dynamic_net::DynamicNet::new(&Cpu, rng);
    let mut sgd = Sgd::new(SgdConfig {
        lr: 1e-12,
        momentum: 0.9,
        ..SgdConfig::default()
    });
    let mut layers = vec![(100, false)];
    layers.extend([(100, true); REPEATS]);
    layers.push((10, true));
    let gemms = gemms_only(&x, &layers, 50);
    let step = median_call_time(SAMPLES, 50, || {
        black_box(dynamic_net::train_step(&mut net, &mut sgd, &x, &y, REPEATS).unwrap());
    });
    Row {
        name: "DynamicNet (2 repeats), momentum SGD",
        step,
        gemms,
        target: 1.15,
    }
}

network! {
    struct Mlp(x: [N, 784]) -> [N, 10] {
        Linear<784, 512>, ReLU, Linear<512, 512>, ReLU, Linear<512, 10>
    }
}

fn mlp() -> Row {
    let rng = &mut seeded(0);
    let x = Tensor::randn([256, 784], &Cpu, rng);
    let labels: Vec<usize> = (0..256).map(|i| i % 10).collect();
    let labels = Labels::new(&labels, &Cpu);
    let gemms = gemms_only(&x, &[(512, false), (512, true), (10, true)], 10);
    let mut net = Mlp::new(&Cpu, rng);
    let loss_fn = CrossEntropyLoss::default();
    let mut adam = Adam::new(AdamConfig {
        lr: 1e-12,
        ..AdamConfig::default()
    });
    let step = median_call_time(SAMPLES, 10, || {
        black_box(net.train_step(&x, &labels, &loss_fn, &mut adam).unwrap());
    });
    Row {
        name: "784-512-512-10 MLP, batch 256, CE, Adam",
        step,
        gemms,
        target: 1.1,
    }
}

/// The process's peak resident memory in MiB, from `/proc/self/status` (Linux).
fn peak_resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The rows, each run in a process of its own (`--row <i>`), so each has its own peak resident
/// memory. Each measures its GEMMs first: their buffers go back to the CPU's buffer pool, and
/// the step takes those of its lengths (the MLP builds its network after them for that).
const ROWS: [fn() -> Row; 4] = [|| tutorial(false), || tutorial(true), dynamic_net, mlp];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--spin") {
        loop {
            black_box(0);
        }
    }
    if let Some(at) = args.iter().position(|arg| arg == "--row") {
        let row = ROWS[args[at + 1].parse::<usize>().expect("a row number")]();
        let rss = peak_resident_mib().unwrap_or(f64::NAN);
        let (step, gemms) = (row.step.as_nanos(), row.gemms.as_nanos());
        println!("{}\t{step}\t{gemms}\t{}\t{rss}", row.name, row.target);
        return;
    }
    let threads = declnet::num_threads();
    println!(
        "cpu training steps against their GEMMs alone ({threads} threads, medians of {SAMPLES}; \
         each row a process, with its peak resident memory):"
    );
    println!(
        "| {:<40} | {:>10} | {:>10} | {:>6} | {:>6} | {:>8} |",
        "step", "step", "GEMMs", "ratio", "target", "RSS"
    );
    println!(
        "|{:-<42}|{:-<12}|{:-<12}|{:-<8}|{:-<8}|{:-<10}|",
        "", "", "", "", "", ""
    );
    for i in 0..ROWS.len() {
        let RowResult {
            name,
            step,
            gemms,
            target,
            rss,
        } = run_row(i, None);
        println!(
            "| {name:<40} | {step:>10.1?} | {gemms:>10.1?} | {:>5.2}x | {target:>5.2}x | {rss:>4.1} MiB |",
            step.as_secs_f64() / gemms.as_secs_f64(),
        );
    }
    busy_neighbour();
}

/// Idle and busy runs of the MLP row alternated, so that a change in the host's speed
/// between them moves both.
const BUSY_PAIRS: usize = 3;

/// The last row again, alternately idle and beside a process that keeps one core busy, and
/// the median ratio of the pairs (issue 13: at most 1.5x). Then the same step idle on one
/// thread: what a step can do with one core, all a busy neighbour leaves of two.
fn busy_neighbour() {
    let row = ROWS.len() - 1;
    let mut name = String::new();
    let mut runs: Vec<[Duration; 3]> = (0..BUSY_PAIRS)
        .map(|_| {
            let idle = run_row(row, None);
            name = idle.name;
            let one_thread = run_row(row, Some(1)).step;
            let _neighbour = BusyNeighbour::start();
            [idle.step, run_row(row, None).step, one_thread]
        })
        .collect();
    let ratio = |[idle, busy, _]: &[Duration; 3]| busy.as_secs_f64() / idle.as_secs_f64();
    runs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    let [idle, busy, one_thread] = runs[BUSY_PAIRS / 2];
    println!(
        "{name} beside a busy process: {busy:.1?} against {idle:.1?} idle, {:.2}x \
         (median of {BUSY_PAIRS} alternated pairs; target <= 1.5x); on one thread, idle: \
         {one_thread:.1?}, {:.2}x the idle step",
        ratio(&runs[BUSY_PAIRS / 2]),
        one_thread.as_secs_f64() / idle.as_secs_f64(),
    );
}

/// A process of this bench that spins on one core until dropped (even by a panic).
struct BusyNeighbour(std::process::Child);

impl BusyNeighbour {
    fn start() -> Self {
        let me = std::env::current_exe().expect("the bench's own path");
        let child = std::process::Command::new(me)
            .arg("--spin")
            .spawn()
            .expect("the bench runs itself");
        Self(child)
    }
}

impl Drop for BusyNeighbour {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one row's process printed.
struct RowResult {
    name: String,
    step: Duration,
    gemms: Duration,
    target: f64,
    rss: f64,
}

/// Runs row `i` in a process of its own, on `threads` threads (`RAYON_NUM_THREADS`) if given.
fn run_row(i: usize, threads: Option<usize>) -> RowResult {
    let me = std::env::current_exe().expect("the bench's own path");
    let mut command = std::process::Command::new(&me);
    command.args(["--row", &i.to_string()]);
    if let Some(threads) = threads {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    let output = command.output().expect("the bench runs itself");
    assert!(output.status.success(), "row {i}: {output:?}");
    let line = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    let [name, step, gemms, target, rss] = fields[..] else {
        panic!("row {i} printed {line:?}");
    };
    let nanos = |field: &str| Duration::from_nanos(field.parse().expect("nanoseconds"));
    RowResult {
        name: name.to_owned(),
        step: nanos(step),
        gemms: nanos(gemms),
        target: target.parse().expect("a target"),
        rss: rss.parse().expect("MiB"),
    }
}
