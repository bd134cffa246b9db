//! Optimizers against PyTorch: every config of `tests/fixtures/optimizers.safetensors` (six
//! steps of `torch.optim` on one `[5, 3]` parameter with recorded gradients) is replayed and
//! compared step by step; then PyTorch's "no gradient is not a zero gradient" rule, and exact
//! resumption from exported state.

mod common;

use common::{Fixture, max_rel_diff, on_every_device};
use declnet::runtime::optim::scheduler::{LrScheduler, OneCycleLr};
use declnet::runtime::optim::{
    AdadeltaConfig, AdagradConfig, AdamConfig, AdamWConfig, Optimizer, RmsPropConfig, SgdConfig,
    UpdateRule,
};
use declnet::runtime::{Module, Param};
use declnet::{Backend, Cpu, Tensor};
use serde_json::Value;

/// Every step of every config must match PyTorch to this relative error: the kernels repeat
/// PyTorch's operations in the same order in f32, so at most a few ulps separate them (1e-6 is
/// about 8 ulps). Measured: bit-exact for SGD, Adam, `AdamW`, Adadelta; at most 3e-7 for
/// Adagrad and `RMSprop`.
const TOLERANCE: f32 = 1e-6;

/// Denominator floor of the relative error. The parameters are `randn` (|p| ~ 1); an element
/// that an update cancels to near zero keeps the rounding of its O(1) terms. Measured case:
/// `rmsprop_centered_momentum` step 3, element 7 is 8.9e-3 with an absolute difference of
/// 3.0e-8 (half an ulp of 0.5), 3.3e-6 relative to itself but 3.0e-7 against this floor.
/// Every other element of every step meets 1e-6 relative to itself.
const RELATIVE_FLOOR: f32 = 0.1;

/// A model of one or more named parameters.
struct Params<B: Backend = Cpu>(Vec<(String, Param<B>)>);

impl<B: Backend> Params<B> {
    fn single(value: Tensor<B>) -> Self {
        Self(vec![("p".to_owned(), Param::new(value))])
    }

    /// Sets parameter `i`'s gradient to `grad` (replacing any previous one).
    fn set_grad(&mut self, i: usize, grad: &Tensor<B>) {
        self.0[i].1.zero_grad();
        self.0[i].1.accumulate_grad(grad);
    }

    fn value(&self, i: usize) -> Vec<f32> {
        self.0[i].1.value().to_vec()
    }
}

impl<B: Backend> Module<B> for Params<B> {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param<B>)) {
        for (name, param) in &self.0 {
            f(name, param);
        }
    }

    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param<B>)) {
        for (name, param) in &mut self.0 {
            f(name, param);
        }
    }
}

/// Step `s` of the fixture's gradients, `[5, 3]`, on the CPU.
fn grad(fixture: &Fixture, s: usize) -> Tensor {
    grad_on(fixture, s, &Cpu)
}

/// Step `s` of the fixture's gradients, `[5, 3]`, on `device`.
fn grad_on<B: Backend>(fixture: &Fixture, s: usize, device: &B) -> Tensor<B> {
    let all = fixture.tensor("grads").to_vec();
    Tensor::from_slice(&all[s * 15..(s + 1) * 15], [5, 3], device)
}

fn f(config: &Value, key: &str, default: f64) -> f64 {
    config.get(key).and_then(Value::as_f64).unwrap_or(default)
}

fn flag(config: &Value, key: &str) -> bool {
    config.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Replays `rule` over the fixture's six gradients; the worst relative error over all steps,
/// against the floored and the plain denominator.
fn replay<R: UpdateRule, B: Backend>(
    rule: R,
    fixture: &Fixture,
    name: &str,
    device: &B,
) -> (f32, f32) {
    let mut model = Params::single(fixture.tensor_on("param_init", device));
    let mut opt: Optimizer<R, B> = Optimizer::new(rule);
    let trajectory = fixture.tensor(&format!("{name}.trajectory")).to_vec();
    let (mut worst, mut worst_unfloored) = (0.0f32, 0.0f32);
    for (s, expected) in trajectory.chunks_exact(15).enumerate() {
        model.set_grad(0, &grad_on(fixture, s, device));
        opt.step(&mut model);
        let diff = max_rel_diff(&model.value(0), expected, RELATIVE_FLOOR);
        assert!(
            diff <= TOLERANCE,
            "{name}: step {s} differs from PyTorch by {diff:e} relative"
        );
        worst = worst.max(diff);
        worst_unfloored = worst_unfloored.max(max_rel_diff(&model.value(0), expected, 0.0));
    }
    (worst, worst_unfloored)
}

on_every_device!(every_config_matches_pytorch_at_every_step, every_config);

fn every_config<B: Backend>(device: &B) {
    let fixture = Fixture::open("optimizers.safetensors");
    let configs: Value = serde_json::from_str(&fixture.metadata("configs")).expect("json");
    let configs = configs.as_object().expect("an object of configs");
    assert_eq!(configs.len(), 12);
    for (name, c) in configs {
        let lr = f(c, "lr", f64::NAN);
        let weight_decay = |default| f(c, "weight_decay", default);
        let worst = match c["optimizer"].as_str().expect("optimizer name") {
            "SGD" => {
                let rule = SgdConfig {
                    lr,
                    momentum: f(c, "momentum", 0.0),
                    dampening: f(c, "dampening", 0.0),
                    weight_decay: weight_decay(0.0),
                    nesterov: flag(c, "nesterov"),
                    ..SgdConfig::default()
                };
                replay(rule, &fixture, name, device)
            }
            "Adam" => {
                let rule = AdamConfig {
                    lr,
                    weight_decay: weight_decay(0.0),
                    amsgrad: flag(c, "amsgrad"),
                    ..AdamConfig::default()
                };
                // The capturable form counts steps on the device: the same numbers.
                let capturable = AdamConfig {
                    capturable: true,
                    ..rule
                };
                replay(capturable, &fixture, name, device);
                replay(rule, &fixture, name, device)
            }
            "AdamW" => {
                let rule = AdamWConfig {
                    lr,
                    weight_decay: weight_decay(1e-2),
                    amsgrad: flag(c, "amsgrad"),
                    ..AdamWConfig::default()
                };
                let capturable = AdamWConfig {
                    capturable: true,
                    ..rule
                };
                replay(capturable, &fixture, name, device);
                replay(rule, &fixture, name, device)
            }
            "Adadelta" => {
                let rule = AdadeltaConfig {
                    lr,
                    weight_decay: weight_decay(0.0),
                    ..AdadeltaConfig::default()
                };
                replay(rule, &fixture, name, device)
            }
            "Adagrad" => {
                let rule = AdagradConfig {
                    lr,
                    weight_decay: weight_decay(0.0),
                    ..AdagradConfig::default()
                };
                replay(rule, &fixture, name, device)
            }
            "RMSprop" => {
                let rule = RmsPropConfig {
                    lr,
                    momentum: f(c, "momentum", 0.0),
                    centered: flag(c, "centered"),
                    weight_decay: weight_decay(0.0),
                    ..RmsPropConfig::default()
                };
                replay(rule, &fixture, name, device)
            }
            other => panic!("unknown optimizer {other}"),
        };
        println!(
            "{name}: max relative error {:e} (to max(|p|, {RELATIVE_FLOOR})), {:e} (to |p|)",
            worst.0, worst.1
        );
    }
}

/// Two parameters; the second gets a gradient only at the steps in `second_steps`, or a zero
/// gradient at the others when `zeros` is set. Returns the second parameter's final value.
fn second_param_after<R: UpdateRule>(rule: R, second_steps: &[usize], zeros: bool) -> Vec<f32> {
    let fixture = Fixture::open("optimizers.safetensors");
    let init = fixture.tensor("param_init");
    let mut model = Params(vec![
        ("a".to_owned(), Param::new(init.clone())),
        ("b".to_owned(), Param::new(init.clone())),
    ]);
    let mut opt: Optimizer<R> = Optimizer::new(rule);
    for s in 0..4 {
        model.set_grad(0, &grad(&fixture, s));
        if second_steps.contains(&s) {
            model.set_grad(1, &grad(&fixture, s));
        } else if zeros {
            model.set_grad(1, &Tensor::zeros([5, 3], &Cpu));
        } else {
            model.0[1].1.zero_grad();
        }
        opt.step(&mut model);
    }
    model.value(1)
}

#[test]
fn a_parameter_without_gradient_is_skipped_but_a_zero_gradient_is_not() {
    let momentum = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..SgdConfig::default()
    };
    // Gradients at steps 0 and 2 only, with nothing in between, must equal two consecutive
    // steps of those gradients: the skipped steps neither move the parameter nor decay the
    // momentum buffer.
    let fixture = Fixture::open("optimizers.safetensors");
    let mut alone = Params::single(fixture.tensor("param_init"));
    let mut opt = Optimizer::new(momentum);
    for s in [0, 2] {
        alone.set_grad(0, &grad(&fixture, s));
        opt.step(&mut alone);
    }
    assert_eq!(second_param_after(momentum, &[0, 2], false), alone.value(0));
    // A zero gradient is a real step: momentum keeps moving the parameter.
    assert_ne!(second_param_after(momentum, &[0, 2], true), alone.value(0));

    // Adam's per-parameter step count (its bias correction) only counts real updates.
    let adam = AdamConfig {
        lr: 0.01,
        ..AdamConfig::default()
    };
    let mut alone = Params::single(fixture.tensor("param_init"));
    let mut opt = Optimizer::new(adam);
    for s in [1, 3] {
        alone.set_grad(0, &grad(&fixture, s));
        opt.step(&mut alone);
    }
    assert_eq!(second_param_after(adam, &[1, 3], false), alone.value(0));
    assert_ne!(second_param_after(adam, &[1, 3], true), alone.value(0));
}

/// Runs `rule` six steps uninterrupted, and three steps + export + restore into a fresh
/// optimizer + three steps; the final parameters must be bit-identical. The second parameter
/// never gets a gradient, so it has no state to export.
fn check_resume<R: UpdateRule>(rule: R) {
    let fixture = Fixture::open("optimizers.safetensors");
    let fresh = || {
        Params(vec![
            ("w".to_owned(), Param::new(fixture.tensor("param_init"))),
            ("unused".to_owned(), Param::new(Tensor::ones([2], &Cpu))),
        ])
    };
    let run = |model: &mut Params, opt: &mut Optimizer<R>, steps: std::ops::Range<usize>| {
        for s in steps {
            model.set_grad(0, &grad(&fixture, s));
            opt.step(model);
        }
    };
    let mut straight = fresh();
    let mut opt = Optimizer::new(rule.clone());
    run(&mut straight, &mut opt, 0..6);

    let mut resumed = fresh();
    let mut first = Optimizer::new(rule.clone());
    run(&mut resumed, &mut first, 0..3);
    let state = first.state();
    assert!(state.tensors.iter().all(|(name, _)| name.starts_with("w.")));
    let mut second = Optimizer::new(rule);
    second.load_state(&resumed, &state);
    run(&mut resumed, &mut second, 3..6);
    assert_eq!(
        resumed.value(0),
        straight.value(0),
        "{} does not resume exactly",
        R::NAME
    );

    // Without the state, the continuation differs: the test above can fail.
    let mut cold = fresh();
    let mut head = Optimizer::new(opt.rule().clone());
    run(&mut cold, &mut head, 0..3);
    let mut restart = Optimizer::new(opt.rule().clone());
    run(&mut cold, &mut restart, 3..6);
    assert_ne!(cold.value(0), straight.value(0), "{}", R::NAME);
}

#[test]
fn every_optimizer_resumes_exactly_from_exported_state() {
    check_resume(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.1,
        weight_decay: 0.01,
        ..SgdConfig::default()
    });
    check_resume(AdamConfig {
        lr: 0.01,
        amsgrad: true,
        ..AdamConfig::default()
    });
    check_resume(AdamWConfig {
        lr: 0.01,
        ..AdamWConfig::default()
    });
    // The step count of a capturable Adam lives on the device; it is exported from there.
    check_resume(AdamConfig {
        lr: 0.01,
        capturable: true,
        ..AdamConfig::default()
    });
    check_resume(AdadeltaConfig::default());
    check_resume(AdagradConfig {
        lr_decay: 0.1,
        ..AdagradConfig::default()
    });
    check_resume(RmsPropConfig {
        momentum: 0.9,
        centered: true,
        ..RmsPropConfig::default()
    });
}

#[test]
fn exported_state_is_named_tensors_and_scalars() {
    let fixture = Fixture::open("optimizers.safetensors");
    let mut model = Params::single(fixture.tensor("param_init"));
    let mut opt = Optimizer::new(AdamConfig::default());
    model.set_grad(0, &grad(&fixture, 0));
    opt.step(&mut model);
    opt.step(&mut model);
    let state = opt.state();
    assert_eq!(state.optimizer, "Adam");
    assert_eq!(
        state.scalars,
        [("lr".to_owned(), 1e-3), ("p.step".to_owned(), 2.0)]
    );
    let names: Vec<_> = state
        .tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.dims()))
        .collect();
    assert_eq!(
        names,
        [("p.exp_avg", &[5, 3][..]), ("p.exp_avg_sq", &[5, 3][..])]
    );
}

#[test]
fn mismatched_state_or_model_is_an_error() {
    let fixture = Fixture::open("optimizers.safetensors");
    let mut model = Params::single(fixture.tensor("param_init"));
    let mut adam = Optimizer::new(AdamConfig::default());
    model.set_grad(0, &grad(&fixture, 0));
    adam.step(&mut model);
    let state = adam.state();

    let mut sgd = Optimizer::new(SgdConfig::default());
    let error = sgd.try_load_state(&model, &state).unwrap_err();
    assert_eq!(
        error.to_string(),
        "SGD: state was exported from `Adam`, not `SGD`"
    );

    let other = Params::single(Tensor::zeros([3, 5], &Cpu));
    let mut fresh = Optimizer::new(AdamConfig::default());
    let error = fresh.try_load_state(&other, &state).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Adam: `p.exp_avg` has shape [5, 3], but parameter `p` has shape [3, 5]"
    );

    let mut renamed = Params(vec![(
        "q".to_owned(),
        Param::new(fixture.tensor("param_init")),
    )]);
    let error = fresh.try_load_state(&renamed, &state).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Adam: state has `p.step`, which does not fit the model's parameters"
    );

    let mut missing = state.clone();
    missing.tensors.pop();
    let error = fresh.try_load_state(&model, &missing).unwrap_err();
    assert_eq!(error.to_string(), "Adam: state has no `p.exp_avg_sq`");

    let mut bigger = Params::single(fixture.tensor("param_init"));
    bigger
        .0
        .push(("extra".to_owned(), Param::new(Tensor::ones([1], &Cpu))));
    let before = model.value(0);
    let error = adam.try_step(&mut bigger).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Adam: the model has more than the 1 parameters the state was built for"
    );
    let error = adam.try_step(&mut renamed).unwrap_err();
    assert!(
        error.to_string().contains("parameter 0 is `q` [5, 3]"),
        "{error}"
    );
    assert_eq!(model.value(0), before, "a failed step changes nothing");
}

#[test]
fn invalid_hyper_parameters_are_rejected_like_pytorch() {
    let error = Optimizer::<AdamConfig>::try_new(AdamConfig {
        betas: (1.0, 0.999),
        ..AdamConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Adam: invalid beta1: expected a value in [0, 1), found 1"
    );
    let error = Optimizer::<SgdConfig>::try_new(SgdConfig {
        nesterov: true,
        ..SgdConfig::default()
    })
    .unwrap_err();
    assert!(
        error.to_string().starts_with("SGD: invalid nesterov"),
        "{error}"
    );
    let error = Optimizer::<RmsPropConfig>::try_new(RmsPropConfig {
        lr: -1.0,
        ..RmsPropConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "RMSprop: invalid lr: expected a value >= 0, found -1"
    );
}

#[test]
fn capturable_adam_counts_on_the_device_to_the_same_bits() {
    let fixture = Fixture::open("optimizers.safetensors");
    let run = |capturable: bool| {
        let mut model = Params::single(fixture.tensor("param_init"));
        let mut opt = Optimizer::new(AdamWConfig {
            lr: 0.01,
            amsgrad: true,
            capturable,
            ..AdamWConfig::default()
        });
        // Learning rate and beta1 change every step: the capturable form reads them (and
        // the weight decay factor and bias corrections that depend on them) on the device.
        let mut one_cycle = LrScheduler::new(OneCycleLr::new(0.05, 10), &mut opt);
        for s in 0..6 {
            model.set_grad(0, &grad(&fixture, s));
            opt.step(&mut model);
            one_cycle.step(&mut opt);
        }
        let bits: Vec<u32> = model.value(0).iter().map(|v| v.to_bits()).collect();
        (bits, opt.state().scalars)
    };
    let (host, host_scalars) = run(false);
    let (device, device_scalars) = run(true);
    assert_eq!(device, host);
    assert_eq!(
        device_scalars, host_scalars,
        "the exported step counts agree"
    );
}
