//! `StepGraph` on GPU 0: a captured training step replays the eager step's numbers, and the
//! steps a graph would replay wrongly are refused at capture with an error, leaving the state
//! and the device usable. Without a device each test prints `skipped: no CUDA device (...)`
//! and passes.
//!
//! A capture records every op issued to the device's stream, so the tests take turns.

mod common;
#[path = "shared/two_layer_net.rs"]
mod two_layer_net;

use std::sync::{Mutex, MutexGuard, PoisonError};

use common::{cuda_or_skip, max_rel_diff};
use declnet::losses::{CrossEntropyLoss, Labels, Loss, MseLoss, Reduction};
use declnet::optim::scheduler::{LrScheduler, OneCycleLr};
use declnet::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use declnet::prelude::*;
use two_layer_net::TwoLayerNet;

/// Everything a training step touches.
struct Training<O> {
    net: TwoLayerNet<Cuda>,
    optimizer: O,
    x: Tensor<Cuda>,
    y: Tensor<Cuda>,
    loss: Tensor<Cuda>,
}

impl<O> Training<O> {
    fn new(device: &Cuda, optimizer: O) -> Self {
        let rng = &mut seeded(0);
        Self {
            x: Tensor::randn([64, 1000], device, rng),
            y: Tensor::randn([64, 10], device, rng),
            net: TwoLayerNet::new(device, rng),
            optimizer,
            loss: Tensor::zeros([], device),
        }
    }

    /// Forward and backward; the gradients are left in the parameters.
    fn forward_backward(&mut self) -> Result<Tensor<Cuda>> {
        self.net.zero_grad();
        let (y_pred, tape) = self.net.forward_train(&self.x)?;
        let (loss, grad) = MseLoss::new(Reduction::Sum).try_value_and_grad(&y_pred, &self.y)?;
        self.net.backward_params(tape, &grad)?;
        Ok(loss)
    }
}

fn sgd_step(training: &mut Training<Sgd<Cuda>>) -> Result<()> {
    let loss = training.forward_backward()?;
    training.optimizer.try_step(&mut training.net)?;
    training.loss.try_copy_(&loss)
}

fn sgd(momentum: f32) -> Sgd<Cuda> {
    Sgd::new(SgdConfig {
        lr: 1e-5,
        momentum: f64::from(momentum),
        ..SgdConfig::default()
    })
}

/// One test at a time on the GPU.
fn gpu_turn() -> MutexGuard<'static, ()> {
    static GPU: Mutex<()> = Mutex::new(());
    GPU.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every parameter's values, in visiting order.
fn weights(net: &impl Module<Cuda>) -> Vec<f32> {
    let mut values = Vec::new();
    net.visit_params(&mut |_, param| values.extend(param.value().to_vec()));
    values
}

fn assert_close(what: &str, actual: &[f32], expected: &[f32]) {
    let diff = max_rel_diff(actual, expected, 1.0);
    assert!(
        diff <= 1e-5,
        "{what}: graph and eager differ by {diff:e} (relative)"
    );
}

#[test]
fn replayed_steps_match_eager_steps() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let mut eager = Training::new(&device, sgd(0.9));
    let mut graph = StepGraph::new(Training::new(&device, sgd(0.9)), sgd_step);

    // Momentum's first step differs from the rest, so capturing at once is refused, having
    // run step 1 eagerly and step 2 as recorded (a refused graph runs once).
    let error = graph.capture(&device).unwrap_err().to_string();
    assert!(
        error.contains("changes from one step to the next"),
        "{error}"
    );
    assert!(!graph.is_captured());
    sgd_step(&mut eager).unwrap();
    sgd_step(&mut eager).unwrap();
    assert_close(
        "weights",
        &weights(&graph.state().net),
        &weights(&eager.net),
    );
    // The second attempt runs step 3 eagerly and records step 4.
    graph.capture(&device).unwrap();
    sgd_step(&mut eager).unwrap();

    let mut eager_losses = Vec::new();
    let mut graph_losses = Vec::new();
    for _ in 0..20 {
        sgd_step(&mut eager).unwrap();
        eager_losses.push(eager.loss.item());
        graph.run().unwrap();
        graph_losses.push(graph.state().loss.item());
    }
    assert!(
        graph_losses[19] < graph_losses[0],
        "training progresses: {graph_losses:?}"
    );
    assert_close("losses", &graph_losses, &eager_losses);
    assert_close(
        "weights",
        &weights(&graph.state().net),
        &weights(&eager.net),
    );

    // An eager step between replays writes the same buffers and keeps the graph valid.
    graph.run_eagerly().unwrap();
    sgd_step(&mut eager).unwrap();
    graph.run().unwrap();
    sgd_step(&mut eager).unwrap();
    assert_close(
        "weights",
        &weights(&graph.state().net),
        &weights(&eager.net),
    );
}

fn adam_step(training: &mut Training<Adam<Cuda>>) -> Result<()> {
    let loss = training.forward_backward()?;
    training.optimizer.try_step(&mut training.net)?;
    training.loss.try_copy_(&loss)
}

fn adam(capturable: bool) -> Adam<Cuda> {
    Adam::new(AdamConfig {
        lr: 1e-4,
        capturable,
        ..AdamConfig::default()
    })
}

#[test]
fn adam_is_refused_because_its_bias_correction_changes() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let mut graph = StepGraph::new(Training::new(&device, adam(false)), adam_step);
    let error = graph.capture(&device).unwrap_err().to_string();
    assert!(error.contains("Adam"), "{error}");
    // The state is kept and trains eagerly.
    let before = weights(&graph.state().net);
    graph.run().unwrap();
    assert_ne!(weights(&graph.state().net), before);
}

#[test]
fn capturable_adam_replays_its_steps_exactly() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let mut eager = Training::new(&device, adam(true));
    let mut graph = StepGraph::new(Training::new(&device, adam(true)), adam_step);
    graph.capture(&device).unwrap();
    adam_step(&mut eager).unwrap();
    for _ in 0..20 {
        graph.run().unwrap();
        adam_step(&mut eager).unwrap();
    }
    assert_close("loss", &[graph.state().loss.item()], &[eager.loss.item()]);
    assert_close(
        "weights",
        &weights(&graph.state().net),
        &weights(&eager.net),
    );
    // The step count advanced on the device with every replay: 1 eager + 20 replayed.
    let state = graph.state().optimizer.state();
    let steps = state
        .scalars
        .iter()
        .find(|(name, _)| name == "linear1.weight.step");
    assert_eq!(steps.map(|&(_, step)| step), Some(21.0));
}

#[test]
fn a_scheduler_reaches_a_capturable_adams_replays() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let schedule = || OneCycleLr::new(1e-3, 30);
    let mut eager = Training::new(&device, adam(true));
    let mut eager_schedule = LrScheduler::new(schedule(), &mut eager.optimizer);
    let mut graph = StepGraph::new(Training::new(&device, adam(true)), adam_step);
    let mut graph_schedule =
        LrScheduler::new(schedule(), &mut graph.state_mut_keeping_graph().optimizer);
    graph.capture(&device).unwrap();
    adam_step(&mut eager).unwrap();
    for _ in 0..20 {
        // The learning rate and beta1 change between replays, written to the device.
        graph_schedule.step(&mut graph.state_mut_keeping_graph().optimizer);
        eager_schedule.step(&mut eager.optimizer);
        graph.run().unwrap();
        adam_step(&mut eager).unwrap();
    }
    assert!(graph.is_captured());
    assert_close(
        "weights",
        &weights(&graph.state().net),
        &weights(&eager.net),
    );
}

#[test]
fn a_learning_rate_set_inside_the_captured_step_is_refused_and_changes_nothing() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let state = (Training::new(&device, adam(true)), 0.0);
    let mut graph = StepGraph::new(state, |(training, lr)| {
        adam_step(training)?;
        *lr += 1e-4;
        training.optimizer.try_set_lr(*lr)
    });
    let error = graph.capture(&device).unwrap_err().to_string();
    assert!(error.contains("inside a captured step"), "{error}");
    // The eager step's value: the captured step's was refused before any device took it.
    assert_eq!(graph.state().0.optimizer.lr(), 1e-4);
    graph.run().unwrap();
    let (training, lr) = graph.state();
    assert_eq!(training.optimizer.lr(), *lr, "eager steps set it");
}

#[test]
fn reading_a_value_inside_the_step_is_refused() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let mut graph = StepGraph::new(Training::new(&device, sgd(0.0)), |training| {
        let loss = training.forward_backward()?;
        training.optimizer.try_step(&mut training.net)?;
        println!("loss {}", loss.try_item()?);
        Ok(())
    });
    let error = graph.capture(&device).unwrap_err().to_string();
    assert!(error.contains("inside a captured step"), "{error}");
    // The device still runs eager work.
    graph.run().unwrap();
    assert!(graph.state().loss.item().is_finite());
}

#[test]
fn waiting_for_the_gpu_inside_the_step_is_refused() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let mut graph = StepGraph::new(Training::new(&device, sgd(0.0)), |training| {
        training.loss = training.forward_backward()?;
        training.x.device().synchronize()
    });
    let error = graph.capture(&device).unwrap_err().to_string();
    assert!(error.contains("cannot wait for the GPU"), "{error}");
    graph.run().unwrap();
    device.synchronize().unwrap();
}

#[test]
fn replacing_a_tensor_of_the_state_is_refused() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let mut graph = StepGraph::new(Training::new(&device, sgd(0.0)), |training| {
        training.loss = training.forward_backward()?;
        training.optimizer.try_step(&mut training.net)
    });
    let error = graph.capture(&device).unwrap_err().to_string();
    assert!(
        error.contains("frees 1 buffer(s) of its state") && error.contains("in place"),
        "{error}"
    );
    graph.run().unwrap();
    assert!(graph.state().loss.item().is_finite());
}

#[test]
fn a_tensor_replaced_while_a_graph_lives_stays_allocated_for_it() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let mut graph = StepGraph::new(Training::new(&device, sgd(0.0)), sgd_step);
    graph.capture(&device).unwrap();
    // Replaced behind the graph's back: replays still read the old input buffer...
    graph.state_mut_keeping_graph().x = Tensor::zeros([64, 1000], &device);
    // ...which is not freed, so this cannot land in it, as it would in freed memory.
    let poison = Tensor::full([64, 1000], f32::NAN, &device);
    for _ in 0..3 {
        graph.run().unwrap();
    }
    assert!(graph.state().loss.item().is_finite());
    drop(poison);
    drop(graph); // frees the old input after the graph's last launch
    device.synchronize().unwrap();
}

#[test]
fn keeping_a_new_tensor_in_the_state_is_refused() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let state = (Training::new(&device, sgd(0.0)), Vec::new());
    let mut graph = StepGraph::new(state, |(training, losses)| {
        losses.push(training.forward_backward()?);
        training.optimizer.try_step(&mut training.net)
    });
    let error = graph.capture(&device).unwrap_err().to_string();
    assert!(error.contains("keeps a buffer it allocated"), "{error}");
    // The refused graph ran once, so the loss it kept holds a value.
    let losses = &graph.state().1;
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|loss| loss.item().is_finite()));
    graph.run().unwrap();
}

network! {
    /// A small classifier.
    struct Classifier {
        fc: Linear<20, 5>,
    }
    fn forward(x: [N, 20]) -> [N, 5] {
        fc(x).tanh()
    }
}

/// A classification step's state: the batch (inputs and labels) is overwritten in place
/// between steps.
struct Classification {
    net: Classifier<Cuda>,
    sgd: Sgd<Cuda>,
    x: Tensor<Cuda>,
    labels: Labels<Cuda>,
    loss: Tensor<Cuda>,
}

fn classification_step(c: &mut Classification) -> Result<()> {
    c.net.zero_grad();
    let (logits, tape) = c.net.forward_train(&c.x)?;
    let (loss, grad) =
        CrossEntropyLoss::new(Reduction::Mean).try_value_and_grad(&logits, &c.labels)?;
    c.net.backward_params(tape, &grad)?;
    c.sgd.try_step(&mut c.net)?;
    c.loss.try_copy_(&loss)
}

/// Batch `i`: 8 inputs and their labels.
fn batch(i: u64) -> (Vec<f32>, Vec<usize>) {
    let rng = &mut seeded(100 + i);
    let x = Tensor::randn([8, 20], &declnet::Cpu, rng).to_vec();
    let labels = (0..8).map(|r| (r * 3 + i as usize) % 5).collect();
    (x, labels)
}

#[test]
fn a_classification_step_replays_new_batches_written_in_place() {
    let _turn = gpu_turn();
    let Some(device) = cuda_or_skip() else {
        return;
    };
    let fresh = || {
        let (x, labels) = batch(0);
        Classification {
            net: Classifier::new(&device, &mut seeded(7)),
            sgd: sgd(0.0),
            x: Tensor::from_vec(x, [8, 20], &device),
            labels: Labels::new(&labels, &device),
            loss: Tensor::zeros([], &device),
        }
    };
    let mut eager = fresh();
    let mut graph = StepGraph::new(fresh(), classification_step);
    graph.capture(&device).unwrap(); // step on batch 0, records the next
    classification_step(&mut eager).unwrap();
    for i in 1..6 {
        let (x, labels) = batch(i);
        eager.x.try_copy_from_slice(&x).unwrap();
        eager.labels.try_copy_from_slice(&labels).unwrap();
        classification_step(&mut eager).unwrap();
        let state = graph.state_mut_keeping_graph();
        state.x.try_copy_from_slice(&x).unwrap();
        state.labels.try_copy_from_slice(&labels).unwrap();
        graph.run().unwrap();
        assert_close(
            &format!("loss of batch {i}"),
            &[graph.state().loss.item()],
            &[eager.loss.item()],
        );
    }
    assert_close(
        "weights",
        &weights(&graph.state().net),
        &weights(&eager.net),
    );
}
