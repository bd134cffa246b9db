//! The transformer's layers against PyTorch (`ops.safetensors`): `LayerNorm` (`F.layer_norm`
//! over the last dim with a weight and a bias: the output and the gradients of the input, the
//! weight and the bias) and `Embedding` (`F.embedding`), on every device; and `LayerNorm` in
//! `network!`, where the last dim is checked when the crate compiles.

mod common;

use common::{Fixture, assert_losses_match, max_rel_diff, on_every_device};
use declnet::prelude::*;

network! {
    struct Normed(x: [B, 4, 5]) -> [B, 4, 5] { norm: LayerNorm<5> }
}

network! {
    /// A pre-norm residual MLP block, as in a transformer.
    struct Block {
        norm: LayerNorm<8>,
        fc: Linear<8, 8>,
    }
    fn forward(x: [B, 8]) -> [B, 8] {
        x + fc(norm(x)).gelu()
    }
}

on_every_device!(layer_norm_matches_pytorch, layer_norm);

fn layer_norm<B: Backend>(device: &B) {
    let fixture = Fixture::open("ops.safetensors");
    let tensor = |key: &str| fixture.tensor_on(&format!("layer_norm.{key}"), device);
    let mut net = Normed::new(device, &mut seeded(0));
    let state = [("norm.weight", tensor("in1")), ("norm.bias", tensor("in2"))];
    let refs: Vec<(&str, &Tensor<B>)> = state.iter().map(|(n, t)| (*n, t)).collect();
    net.load_state_dict(&refs).unwrap();
    // The fixture's [4, 5] input as a batch of one.
    let x = tensor("in0").try_reshape([1, 4, 5]).unwrap();
    let g = tensor("grad_out").try_reshape([1, 4, 5]).unwrap();
    let (y, tape) = net.forward_train(&x).unwrap();
    let grad_x = net.backward(tape, &g).unwrap();
    let norm = &net.norm;
    let checks = [
        ("output", y.to_vec(), "out"),
        ("input gradient", grad_x.to_vec(), "grad_in0"),
        (
            "weight gradient",
            norm.weight.as_ref().unwrap().grad().unwrap().to_vec(),
            "grad_in1",
        ),
        (
            "bias gradient",
            norm.bias.as_ref().unwrap().grad().unwrap().to_vec(),
            "grad_in2",
        ),
    ];
    for (what, actual, key) in checks {
        let diff = max_rel_diff(&actual, &tensor(key).to_vec(), 1.0);
        println!("layer_norm {what}: {diff:e}");
        assert!(diff <= 2e-6, "layer_norm {what} differs by {diff:e}");
    }
}

#[test]
fn a_pre_norm_block_trains() {
    let mut net = Block::new(&Cpu, &mut seeded(1));
    assert_eq!(
        net.param_names(),
        ["norm.weight", "norm.bias", "fc.weight", "fc.bias"]
    );
    assert_eq!(Block::<Cpu>::NUM_PARAMS, 16 + 72);
    let x = Tensor::randn([16, 8], &Cpu, &mut seeded(2));
    let target = Tensor::randn([16, 8], &Cpu, &mut seeded(3));
    let loss_fn = MseLoss::new(Reduction::Mean);
    let mut optimizer = Adam::new(AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    });
    let first = net
        .train_step(&x, &target, &loss_fn, &mut optimizer)
        .unwrap()
        .item();
    let mut last = first;
    for _ in 0..50 {
        last = net
            .train_step(&x, &target, &loss_fn, &mut optimizer)
            .unwrap()
            .item();
    }
    assert!(last < 0.75 * first, "loss {first} -> {last}");
}

on_every_device!(embedding_matches_pytorch, embedding);

/// `F.embedding` (`ops.safetensors`): a `[2, 2]` lookup into a `[5, 4]` table, with a row
/// looked up twice, and the table's gradient.
fn embedding<B: Backend>(device: &B) {
    use declnet::runtime::layers::Embedding;
    use declnet::runtime::ops::index::Indices;
    let fixture = Fixture::open("ops.safetensors");
    let tensor = |key: &str| fixture.tensor_on(&format!("embedding.{key}"), device);
    let ids = fixture_ids(&fixture, "embedding.indices");
    let ids = Indices::with_shape(&ids, [2, 2], device).unwrap();
    let mut table = Embedding::new(5, 4, device, &mut seeded(0));
    table.weight.set_value(tensor("in0")).unwrap();
    let y = table.forward(&ids).unwrap();
    assert_eq!(y.dims(), &[2, 2, 4]);
    assert_eq!(y.to_vec(), tensor("out").to_vec());
    table.backward(&ids, &tensor("grad_out")).unwrap();
    let grad = table.weight.grad().unwrap().to_vec();
    let diff = max_rel_diff(&grad, &tensor("grad_in0").to_vec(), 1.0);
    assert!(
        diff <= 1e-6,
        "embedding weight gradient differs by {diff:e}"
    );
    let error = table
        .forward(&Indices::new(&[5], device).unwrap())
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "usage: Embedding(5, 4): index 5 is out of range for a table of 5 rows"
    );
}

network! {
    /// A position-wise MLP on `[B, T, C]`, as in a transformer block.
    struct PositionWise(x: [B, T, 8]) -> [B, T, 4] {
        fc1: Linear<8, 16>, GELU, norm: LayerNorm<16>, fc2: Linear<16, 4>
    }
}

network! {
    struct Flat(x: [N, 8]) -> [N, 4] {
        fc1: Linear<8, 16>, GELU, norm: LayerNorm<16>, fc2: Linear<16, 4>
    }
}

/// `Linear` on `[B, T, C]` applies to the last dim: the same as the network on `[B * T, C]`,
/// forward and backward.
#[test]
fn linear_applies_to_the_last_dim() {
    let mut wide = PositionWise::new(&Cpu, &mut seeded(5));
    let mut flat = Flat::new(&Cpu, &mut seeded(5));
    let x = Tensor::randn([2, 3, 8], &Cpu, &mut seeded(6));
    let g = Tensor::randn([2, 3, 4], &Cpu, &mut seeded(7));
    let (y, tape) = wide.forward_train(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 4]);
    let grad_x = wide.backward(tape, &g).unwrap();
    let x_flat = x.try_clone().unwrap().try_reshape([6, 8]).unwrap();
    let (y_flat, tape) = flat.forward_train(&x_flat).unwrap();
    let grad_flat = flat
        .backward(tape, &g.try_clone().unwrap().try_reshape([6, 4]).unwrap())
        .unwrap();
    assert_eq!(y.to_vec(), y_flat.to_vec());
    assert_eq!(grad_x.dims(), &[2, 3, 8]);
    assert_eq!(grad_x.to_vec(), grad_flat.to_vec());
    let grads = |net: &dyn Module<Cpu>| -> Vec<Vec<f32>> {
        let mut grads = Vec::new();
        net.visit_params(&mut |_, p| grads.push(p.grad().unwrap().to_vec()));
        grads
    };
    // The LayerNorm's sums over rows run over [2, 3] or [6]: the same terms, another order.
    for (wide, flat) in grads(&wide).iter().zip(grads(&flat)) {
        assert!(max_rel_diff(wide, &flat, 1.0) < 1e-6);
    }
}

network! {
    /// The reference script's pre-LayerNorm GPT-2 block, with the built-in attention.
    struct GptBlock {
        ln_1: LayerNorm<32>,
        attn: CausalSelfAttention<32, 4>,
        ln_2: LayerNorm<32>,
        mlp_fc: Linear<32, 128>,
        mlp_proj: Linear<128, 32>,
    }
    fn forward(x: [B, T, 32]) -> [B, T, 32] {
        let h = x + attn(ln_1(x));
        h + mlp_proj(mlp_fc(ln_2(h)).gelu())
    }
}

/// `transformer.safetensors`: block 0 of the reference GPT alone on a random input, its output
/// and its input's gradient. The file names the attention as GPT-2 does (`c_attn`, `c_proj`,
/// the same layouts as `in_proj_weight` and `out_proj`), so it loads through a name map.
fn gpt_block<B: Backend>(device: &B) {
    let path = common::fixture_path("transformer.safetensors");
    let fixture = Fixture::open("transformer.safetensors");
    let mut block = GptBlock::new(device, &mut seeded(0));
    block
        .load_with(&path, |name| format!("init.blocks.0.{}", gpt2_name(name)))
        .unwrap();
    let x = fixture.tensor_on("block.x", device);
    let (y, tape) = block.forward_train(&x).unwrap();
    let grad_x = block
        .backward(tape, &fixture.tensor_on("block.grad_out", device))
        .unwrap();
    for (what, actual, key) in [
        ("output", y, "block.y"),
        ("input gradient", grad_x, "block.grad_x"),
    ] {
        let diff = max_rel_diff(&actual.to_vec(), &fixture.tensor(key).to_vec(), 1.0);
        println!("gpt block {what}: {diff:e}");
        assert!(diff <= 1e-5, "gpt block {what} differs by {diff:e}");
    }
}

on_every_device!(gpt_block_matches_pytorch, gpt_block);

network! {
    /// The reference script's attention written out by hand, under its names: one `c_attn`
    /// projection split into q, k and v, four heads of 8, a causal softmax, `c_proj`.
    struct HandAttention {
        c_attn: Linear<32, 96>,
        c_proj: Linear<32, 32>,
    }
    fn forward(x: [B, T, 32]) -> [B, T, 32] {
        let (q, k, v) = c_attn(x).split(32, 2);
        let q = q.view([B, T, 4, 8]).transpose(1, 2);
        let k = k.view([B, T, 4, 8]).transpose(1, 2);
        let v = v.view([B, T, 4, 8]).transpose(1, 2);
        let att = (q.matmul(k.transpose(-2, -1)) / 8.0.sqrt()).causal_mask().softmax(-1);
        let y = att.matmul(v).transpose(1, 2).contiguous().view([B, T, 32]);
        c_proj(y)
    }
}

network! {
    /// The reference script's block with the attention above: its `state_dict` names are the
    /// script's, so the fixture loads with a prefix and nothing renamed.
    struct HandBlock {
        ln_1: LayerNorm<32>,
        attn: HandAttention,
        ln_2: LayerNorm<32>,
        mlp_fc: Linear<32, 128>,
        mlp_proj: Linear<128, 32>,
    }
    fn forward(x: [B, T, 32]) -> [B, T, 32] {
        let h = x + attn(ln_1(x));
        h + mlp_proj(mlp_fc(ln_2(h)).gelu())
    }
}

/// Block 0 of the reference GPT with the attention written in `network!`: the output and the
/// input gradient, and the parameter gradients against the built-in attention's.
fn hand_written_block<B: Backend>(device: &B) {
    let path = common::fixture_path("transformer.safetensors");
    let fixture = Fixture::open("transformer.safetensors");
    let mut hand = HandBlock::new(device, &mut seeded(0));
    hand.load_with(&path, |name| format!("init.blocks.0.{name}"))
        .unwrap();
    let x = fixture.tensor_on("block.x", device);
    let grad_out = fixture.tensor_on("block.grad_out", device);
    let (y, tape) = hand.forward_train(&x).unwrap();
    let grad_x = hand.backward(tape, &grad_out).unwrap();
    for (what, actual, key) in [
        ("output", y, "block.y"),
        ("input gradient", grad_x, "block.grad_x"),
    ] {
        let diff = max_rel_diff(&actual.to_vec(), &fixture.tensor(key).to_vec(), 1.0);
        println!("hand-written gpt block {what}: {diff:e}");
        assert!(
            diff <= 1e-5,
            "hand-written gpt block {what} differs by {diff:e}"
        );
    }
    let mut built_in = GptBlock::new(device, &mut seeded(0));
    built_in
        .load_with(&path, |name| format!("init.blocks.0.{}", gpt2_name(name)))
        .unwrap();
    let (_, tape) = built_in.forward_train(&x).unwrap();
    built_in.backward(tape, &grad_out).unwrap();
    let grads = |net: &dyn Module<B>| {
        let mut grads = Vec::new();
        net.visit_params(&mut |_, param| grads.push(param.grad().unwrap().to_vec()));
        grads
    };
    let (hand, built_in) = (grads(&hand), grads(&built_in));
    assert_eq!(hand.len(), built_in.len());
    for (hand, built_in) in hand.iter().zip(built_in) {
        let diff = max_rel_diff(hand, &built_in, 1e-2);
        assert!(diff <= 1e-4, "a parameter gradient differs by {diff:e}");
    }
}

on_every_device!(hand_written_block_matches_pytorch, hand_written_block);

network! {
    /// The reference script's GPT: token and position embeddings, two blocks with their own
    /// weights, a final `LayerNorm` and a bias-free head.
    struct Gpt {
        wte: Embedding<16, 32>,
        wpe: Embedding<8, 32>,
        h0: GptBlock,
        h1: GptBlock,
        ln_f: LayerNorm<32>,
        lm_head: Linear<32, 16, bias = false>,
    }
    fn forward(idx: Indices<[B, T]>, pos: Indices<[T]>) -> [B, T, 16] {
        let x = wte(idx) + wpe(pos);
        lm_head(ln_f(h1(h0(x))))
    }
}

/// The GPT's parameter names in the reference script's `state_dict`.
fn gpt2_name(name: &str) -> String {
    let name = name
        .replace("in_proj_weight", "c_attn.weight")
        .replace("in_proj_bias", "c_attn.bias")
        .replace("out_proj", "c_proj");
    match name.strip_prefix('h') {
        Some(rest) if rest.starts_with(['0', '1']) => format!("blocks.{rest}"),
        _ => name,
    }
}

/// The GPT on `device` with the fixture's initial weights, and the fixture.
fn reference_gpt<B: Backend>(device: &B) -> (Gpt<B>, Fixture) {
    let path = common::fixture_path("transformer.safetensors");
    let mut net = Gpt::new(device, &mut seeded(0));
    net.load_with(&path, |name| format!("init.{}", gpt2_name(name)))
        .unwrap();
    (net, Fixture::open("transformer.safetensors"))
}

/// The fixture's integer tensor `key` as indices.
fn fixture_ids(fixture: &Fixture, key: &str) -> Vec<usize> {
    fixture
        .i64s(key)
        .iter()
        .map(|&id| usize::try_from(id).unwrap())
        .collect()
}

/// `transformer.safetensors`: the whole GPT's logits, loss and every parameter's gradient.
fn gpt<B: Backend>(device: &B) {
    let (mut net, fixture) = reference_gpt(device);
    let ids = |key: &str| fixture_ids(&fixture, key);
    let idx = Indices::with_shape(&ids("check.idx"), [4, 8], device).unwrap();
    let pos = Indices::new(&(0..8).collect::<Vec<_>>(), device).unwrap();
    let (logits, tape) = net.forward_train(&idx, &pos).unwrap();
    let diff = max_rel_diff(
        &logits.to_vec(),
        &fixture.tensor("check.logits").to_vec(),
        1.0,
    );
    println!("gpt logits: {diff:e}");
    assert!(diff <= 1e-5, "logits differ by {diff:e}");
    let flat = logits.try_reshape([32, 16]).unwrap();
    let labels = Labels::new(&ids("check.targets"), device);
    let (loss, grad) = CrossEntropyLoss::default()
        .try_value_and_grad(&flat, &labels)
        .unwrap();
    let expected = fixture.tensor("check.loss").to_vec()[0];
    println!("gpt loss: {} vs {expected}", loss.item());
    assert!((loss.item() - expected).abs() <= 1e-5 * expected);
    net.backward_params(tape, &grad.try_reshape([4, 8, 16]).unwrap())
        .unwrap();
    let mut worst = 0.0f32;
    net.visit_params(&mut |name, param| {
        let expected = fixture.tensor(&format!("check.grad.{}", gpt2_name(name)));
        let diff = max_rel_diff(&param.grad().unwrap().to_vec(), &expected.to_vec(), 1e-2);
        worst = worst.max(diff);
        assert!(diff <= 1e-4, "gradient of {name} differs by {diff:e}");
    });
    println!("gpt gradients: worst {worst:e}");
}

on_every_device!(gpt_matches_pytorch, gpt);

/// `transformer.safetensors`: 30 `AdamW` steps from the same weights on the same batches: the
/// losses, and every weight after them.
fn gpt_training<B: Backend>(device: &B) {
    let (mut net, fixture) = reference_gpt(device);
    let (all_idx, all_targets) = (
        fixture_ids(&fixture, "train.idx"),
        fixture_ids(&fixture, "train.targets"),
    );
    let pos = Indices::new(&(0..8).collect::<Vec<_>>(), device).unwrap();
    let mut optimizer = AdamW::new(AdamWConfig {
        lr: 3e-3,
        betas: (0.9, 0.95),
        weight_decay: 0.1,
        ..AdamWConfig::default()
    });
    let loss_fn = CrossEntropyLoss::default();
    let mut losses = Vec::new();
    for step in 0..30 {
        let batch = step * 32..(step + 1) * 32;
        let idx = Indices::with_shape(&all_idx[batch.clone()], [4, 8], device).unwrap();
        let labels = Labels::new(&all_targets[batch], device);
        let (logits, tape) = net.forward_train(&idx, &pos).unwrap();
        let flat = logits.try_reshape([32, 16]).unwrap();
        let (loss, grad) = loss_fn.try_value_and_grad(&flat, &labels).unwrap();
        net.zero_grad();
        net.backward_params(tape, &grad.try_reshape([4, 8, 16]).unwrap())
            .unwrap();
        optimizer.try_step(&mut net).unwrap();
        losses.push(loss.item());
    }
    assert_losses_match(&losses, &fixture.tensor("train.losses").to_vec(), 1e-3);
    // The key projection's bias gets no gradient (adding it shifts every score of a query by
    // the same amount), only rounding noise, which Adam scales up to steps of `lr`: those 32
    // entries of `in_proj_bias` follow the noise and are left out.
    let mut worst = 0.0f32;
    net.visit_params(&mut |name, param| {
        let expected = fixture
            .tensor(&format!("final.{}", gpt2_name(name)))
            .to_vec();
        let mut actual = param.value().to_vec();
        let mut expected = expected;
        if name.ends_with("in_proj_bias") {
            actual.drain(32..64);
            expected.drain(32..64);
        }
        let diff = max_rel_diff(&actual, &expected, 1.0);
        worst = worst.max(diff);
        assert!(diff <= 1e-4, "final {name} differs by {diff:e}");
    });
    println!("gpt after 30 AdamW steps: worst weight difference {worst:e}");
}

on_every_device!(gpt_trains_like_pytorch, gpt_training);

network! {
    /// The reference script's GPT as it declares itself: a list of blocks, and attention
    /// written out, so its `state_dict` loads with no name map at all.
    struct ListedGpt {
        wte: Embedding<16, 32>,
        wpe: Embedding<8, 32>,
        blocks: [HandBlock; 2],
        ln_f: LayerNorm<32>,
        lm_head: Linear<32, 16, bias = false>,
    }
    fn forward(idx: Indices<[B, T]>, pos: Indices<[T]>) -> [B, T, 16] {
        let mut x = wte(idx) + wpe(pos);
        for block in blocks {
            x = block(x);
        }
        lm_head(ln_f(x))
    }
}

/// `transformer.safetensors` into the listed GPT: the logits, and every gradient under the
/// script's own names.
fn listed_gpt<B: Backend>(device: &B) {
    let path = common::fixture_path("transformer.safetensors");
    let fixture = Fixture::open("transformer.safetensors");
    let mut net = ListedGpt::new(device, &mut seeded(0));
    assert_eq!(net.param_names()[2], "blocks.0.ln_1.weight");
    assert_eq!(net.blocks.len(), 2);
    net.load_with(&path, |name| format!("init.{name}")).unwrap();
    let ids = |key: &str| fixture_ids(&fixture, key);
    let idx = Indices::with_shape(&ids("check.idx"), [4, 8], device).unwrap();
    let pos = Indices::new(&(0..8).collect::<Vec<_>>(), device).unwrap();
    let (logits, tape) = net.forward_train(&idx, &pos).unwrap();
    let diff = max_rel_diff(
        &logits.to_vec(),
        &fixture.tensor("check.logits").to_vec(),
        1.0,
    );
    println!("listed gpt logits: {diff:e}");
    assert!(diff <= 1e-5, "logits differ by {diff:e}");
    let flat = logits.try_reshape([32, 16]).unwrap();
    let labels = Labels::new(&ids("check.targets"), device);
    let (_, grad) = CrossEntropyLoss::default()
        .try_value_and_grad(&flat, &labels)
        .unwrap();
    net.backward_params(tape, &grad.try_reshape([4, 8, 16]).unwrap())
        .unwrap();
    let mut count = 0;
    net.visit_params(&mut |name, param| {
        let expected = fixture.tensor(&format!("check.grad.{name}"));
        let diff = max_rel_diff(&param.grad().unwrap().to_vec(), &expected.to_vec(), 1e-2);
        assert!(diff <= 1e-4, "gradient of {name} differs by {diff:e}");
        count += 1;
    });
    assert_eq!(count, 29);
}

on_every_device!(a_list_of_blocks_loads_the_scripts_state_dict, listed_gpt);

network! {
    struct FourHeads(x: [B, T, 32]) -> [B, T, 32] {
        norm: LayerNorm<32>, attn: CausalSelfAttention<32, 4>
    }
}

network! {
    struct TwoHeads(x: [B, T, 32]) -> [B, T, 32] {
        norm: LayerNorm<32>, attn: CausalSelfAttention<32, 2>
    }
}

/// The head count shapes no weight, so `save` records it in the file's metadata and loading
/// into a model with another one is an error that changes nothing.
#[test]
fn a_state_dict_with_another_head_count_is_an_error() {
    let path = std::env::temp_dir().join("declnet-test-four-heads.safetensors");
    FourHeads::new(&Cpu, &mut seeded(0)).save(&path).unwrap();
    let file = declnet::runtime::io::load_tensors(&path, &Cpu).unwrap();
    assert_eq!(file.metadata["attn.num_heads"], "4");
    let mut two = TwoHeads::new(&Cpu, &mut seeded(1));
    let before = two.attn.in_proj_weight.value().to_vec();
    let error = two.load(&path).unwrap_err();
    assert_eq!(
        error.to_string(),
        "load: `attn.num_heads` is 4 in the file, but the module has 2"
    );
    let error = two.load_with(&path, ToOwned::to_owned).unwrap_err();
    assert!(matches!(error, Error::ConfigMismatch { .. }), "{error}");
    assert_eq!(two.attn.in_proj_weight.value().to_vec(), before);
    FourHeads::new(&Cpu, &mut seeded(2)).load(&path).unwrap();
    std::fs::remove_file(&path).ok();
}
