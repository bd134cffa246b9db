//! Losses against PyTorch (`tests/fixtures/ops.safetensors`: value and gradient for a random
//! upstream gradient) and against finite differences of their own values.

mod common;

use common::{Fixture, max_rel_diff, on_every_device};
use declnet::prelude::*;
use declnet::runtime::losses::{
    BceWithLogitsLoss, CrossEntropyLoss, L1Loss, Labels, Loss, MseLoss, NllLoss, Reduction,
    SmoothL1Loss,
};

/// Loss values and gradients must match PyTorch to this relative error on the CPU: both compute
/// in f32, and the reductions and log-sum-exp round differently by a few ulps (measured at most
/// 3.3e-7, on the cross-entropy gradient).
const TOLERANCE: f32 = 1e-6;

/// The same on CUDA, whose `expf` and `log1pf` are accurate to 2 and 1 ulp instead of correctly
/// rounded: the BCE-with-logits gradient `sigmoid(x) - t` loses a few more digits to
/// cancellation (measured 1.1e-6 on an H100).
const CUDA_TOLERANCE: f32 = 3e-6;

fn check<B: Backend, L: Loss<B, Target = Tensor<B>>>(loss: &L, name: &str, device: &B) {
    let fixture = Fixture::open("ops.safetensors");
    let pred = fixture.tensor_on(&format!("{name}.in0"), device);
    let target = fixture.tensor_on(&format!("{name}.in1"), device);
    let grad_out = fixture.tensor_on(&format!("{name}.grad_out"), device);
    let value = loss.forward(&pred, &target);
    let grad = loss.backward(&pred, &target, &grad_out);
    compare(name, &value, &grad, &fixture);
}

fn compare<B: Backend>(name: &str, value: &Tensor<B>, grad: &Tensor<B>, fixture: &Fixture) {
    let out = fixture.tensor(&format!("{name}.out"));
    let grad_in = fixture.tensor(&format!("{name}.grad_in0"));
    assert_eq!(value.dims(), out.dims(), "{name}");
    assert_eq!(grad.dims(), grad_in.dims(), "{name}");
    let tolerance = if value.device().name() == "cpu" {
        TOLERANCE
    } else {
        CUDA_TOLERANCE
    };
    let value_diff = max_rel_diff(&value.to_vec(), &out.to_vec(), 0.0);
    let grad_diff = max_rel_diff(&grad.to_vec(), &grad_in.to_vec(), 0.0);
    println!("{name}: value {value_diff:e}, gradient {grad_diff:e} relative");
    assert!(
        value_diff <= tolerance,
        "{name} value differs by {value_diff:e}"
    );
    assert!(
        grad_diff <= tolerance,
        "{name} gradient differs by {grad_diff:e}"
    );
}

fn labels<B: Backend>(fixture: &Fixture, device: &B) -> Labels<B> {
    let labels: Vec<usize> = fixture
        .i64s("cross_entropy.labels")
        .into_iter()
        .map(|l| usize::try_from(l).expect("a class index"))
        .collect();
    Labels::new(&labels, device)
}

on_every_device!(pointwise_losses_match_pytorch, pointwise_losses);

fn pointwise_losses<B: Backend>(device: &B) {
    check(&MseLoss::new(Reduction::Sum), "mse_sum", device);
    check(&MseLoss::new(Reduction::Mean), "mse_mean", device);
    check(&L1Loss::new(Reduction::Mean), "l1_mean", device);
    check(&SmoothL1Loss::default(), "smooth_l1", device);
    check(&BceWithLogitsLoss::default(), "bce_with_logits", device);
}

on_every_device!(class_index_losses_match_pytorch, class_index_losses);

fn class_index_losses<B: Backend>(device: &B) {
    let fixture = Fixture::open("ops.safetensors");
    let labels = labels(&fixture, device);
    for (name, reduction) in [
        ("cross_entropy", Reduction::Mean),
        ("cross_entropy_sum", Reduction::Sum),
    ] {
        let loss = CrossEntropyLoss::new(reduction);
        let logits = fixture.tensor_on(&format!("{name}.in0"), device);
        let grad_out = fixture.tensor_on(&format!("{name}.grad_out"), device);
        let value = loss.forward(&logits, &labels);
        let grad = loss.backward(&logits, &labels, &grad_out);
        compare(name, &value, &grad, &fixture);
    }

    // The fixture is `nll_loss(log_softmax(p, 1), labels)` with its gradient with respect to
    // `p`, so it checks `log_softmax` and its backward too.
    let p = fixture.tensor_on("nll.in0", device);
    let log_probs = p.log_softmax(1);
    let loss = NllLoss::new(Reduction::Mean);
    let grad_out = fixture.tensor_on("nll.grad_out", device);
    let value = loss.forward(&log_probs, &labels);
    let grad_log_probs = loss.backward(&log_probs, &labels, &grad_out);
    let grad_p = grad_log_probs.log_softmax_backward(&log_probs, 1).unwrap();
    compare("nll", &value, &grad_p, &fixture);
}

/// A loss against a target tensor.
type TensorLoss = dyn Loss<Cpu, Target = Tensor>;
/// A loss against class indices.
type ClassLoss = dyn Loss<Cpu, Target = Labels>;

/// Step of the central differences.
const STEP: f32 = 1e-2;
/// Central differences of an f32 loss of about 10 with step 1e-2 carry a rounding error of
/// about 1e-7 * 10 / 1e-2 = 1e-4 and a truncation error of `STEP^2 * f''' / 6` (below 1e-4
/// for these smooth losses away from their kinks): 2e-3 absolute (or relative, for large
/// derivatives) leaves room and still catches any wrong factor or sign.
const FD_TOLERANCE: f32 = 2e-3;

/// Compares `grad` with central differences of `value_at` around `x`, skipping coordinates in
/// `skip` (next to a kink of the loss).
fn finite_difference_check(
    name: &str,
    x: &[f32],
    grad: &[f32],
    skip: impl Fn(usize) -> bool,
    value_at: impl Fn(&[f32]) -> f32,
) {
    let mut checked = 0;
    for i in (0..x.len()).filter(|&i| !skip(i)) {
        let mut plus = x.to_vec();
        plus[i] += STEP;
        let mut minus = x.to_vec();
        minus[i] -= STEP;
        let numeric = (value_at(&plus) - value_at(&minus)) / (2.0 * STEP);
        let error = (numeric - grad[i]).abs() / grad[i].abs().max(1.0);
        assert!(
            error <= FD_TOLERANCE,
            "{name}: d/dx[{i}] is {} but finite differences give {numeric}",
            grad[i]
        );
        checked += 1;
    }
    assert!(checked * 2 > x.len(), "{name}: too few coordinates checked");
}

#[test]
fn pointwise_gradients_match_finite_differences() {
    let rng = &mut seeded(8);
    let shape = [6, 5];
    let x = Tensor::randn(shape, &Cpu, rng);
    let target = Tensor::randn(shape, &Cpu, rng);
    let probabilities = Tensor::rand(shape, &Cpu, rng);
    let (xs, ts) = (x.to_vec(), target.to_vec());
    let losses: Vec<(&str, Box<TensorLoss>, &Tensor, f32)> = vec![
        (
            "mse sum",
            Box::new(MseLoss::new(Reduction::Sum)),
            &target,
            f32::NAN,
        ),
        (
            "mse mean",
            Box::new(MseLoss::new(Reduction::Mean)),
            &target,
            f32::NAN,
        ),
        (
            "l1 sum",
            Box::new(L1Loss::new(Reduction::Sum)),
            &target,
            0.0,
        ),
        (
            "smooth l1",
            Box::new(SmoothL1Loss::new(Reduction::Sum, 0.5)),
            &target,
            0.5,
        ),
        (
            "bce",
            Box::new(BceWithLogitsLoss::new(Reduction::Mean)),
            &probabilities,
            f32::NAN,
        ),
    ];
    for (name, loss, target, kink) in losses {
        let (_, grad) = loss.value_and_grad(&x, target);
        // Coordinates whose |x - t| lies within two steps of a kink (0 or beta) are skipped.
        let near_kink = |i: usize| {
            let d = (xs[i] - ts[i]).abs();
            d < 2.0 * STEP || (d - kink).abs() < 2.0 * STEP
        };
        let value_at = |v: &[f32]| {
            loss.forward(&Tensor::from_slice(v, shape, &Cpu), target)
                .item()
        };
        finite_difference_check(name, &xs, &grad.to_vec(), near_kink, value_at);
    }
}

#[test]
fn class_index_gradients_match_finite_differences() {
    let x = Tensor::randn([4, 6], &Cpu, &mut seeded(9));
    let labels = Labels::new(&[5, 0, 2, 2], &Cpu);
    let xs = x.to_vec();
    let losses: Vec<(&str, Box<ClassLoss>)> = vec![
        (
            "cross entropy",
            Box::new(CrossEntropyLoss::new(Reduction::Sum)),
        ),
        (
            "cross entropy, smoothed",
            Box::new(CrossEntropyLoss::new(Reduction::Mean).with_label_smoothing(0.1)),
        ),
        ("nll", Box::new(NllLoss::new(Reduction::Mean))),
    ];
    for (name, loss) in losses {
        let (_, grad) = loss.value_and_grad(&x, &labels);
        let value_at = |v: &[f32]| {
            loss.forward(&Tensor::from_slice(v, [4, 6], &Cpu), &labels)
                .item()
        };
        finite_difference_check(name, &xs, &grad.to_vec(), |_| false, value_at);
    }
}

#[test]
fn large_logits_give_finite_exact_losses() {
    let x = Tensor::from_vec(vec![200.0, -200.0], [2], &Cpu);
    let t = Tensor::from_vec(vec![1.0, 1.0], [2], &Cpu);
    let loss = BceWithLogitsLoss::new(Reduction::None).forward(&x, &t);
    assert_eq!(loss.to_vec(), [0.0, 200.0]);
    let logits = Tensor::from_vec(vec![500.0, -500.0, 0.0], [1, 3], &Cpu);
    let ce = CrossEntropyLoss::new(Reduction::Sum).forward(&logits, &Labels::new(&[1], &Cpu));
    assert_eq!(ce.item(), 1000.0);
}
