//! Saving and loading weights as safetensors: PyTorch interop against the fixtures
//! `two_layer_net_trained.safetensors` / `two_layer_net_io.safetensors` (with a hand-written
//! module and with one `network!` declares), bit-exact round trips, every kind of bad input
//! (each an error that leaves the module untouched), and a fuzz run of the loader over
//! arbitrary bytes.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use common::Fixture;
use declnet::io::{Metadata, PartialLoad, deserialize_tensors, load_tensors, save_tensors};
use declnet::prelude::*;
use declnet::runtime::rand::{Rng, RngExt as _};
use declnet::runtime::{Module, Param};
use safetensors::tensor::{Dtype, TensorView};

/// PyTorch's output and ours differ only by summation order in the two GEMMs.
const INTEROP_TOLERANCE: f32 = 1e-5;

/// The tutorial's `TwoLayerNet`, written by hand: the loader's tests do not depend on the macro.
struct TwoLayerNet {
    w1: Param,
    b1: Param,
    w2: Param,
    b2: Param,
}

impl TwoLayerNet {
    fn zeros() -> Self {
        Self {
            w1: Param::new(Tensor::zeros([100, 1000], &Cpu)),
            b1: Param::new(Tensor::zeros([100], &Cpu)),
            w2: Param::new(Tensor::zeros([10, 100], &Cpu)),
            b2: Param::new(Tensor::zeros([10], &Cpu)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = &x.mm(self.w1.value().t()) + self.b1.value();
        let h_relu = h.clamp_min(0.0);
        &h_relu.mm(self.w2.value().t()) + self.b2.value()
    }
}

impl Module<Cpu> for TwoLayerNet {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        f("linear1.weight", &self.w1);
        f("linear1.bias", &self.b1);
        f("linear2.weight", &self.w2);
        f("linear2.bias", &self.b2);
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) {
        f("linear1.weight", &mut self.w1);
        f("linear1.bias", &mut self.b1);
        f("linear2.weight", &mut self.w2);
        f("linear2.bias", &mut self.b2);
    }
}

network! {
    /// The tutorial's `TwoLayerNet` declared with the macro: PyTorch's `state_dict` names.
    struct DeclaredNet {
        linear1: Linear<1000, 100>,
        linear2: Linear<100, 10>,
    }
    fn forward(x: [N, 1000]) -> [N, 10] {
        linear2(linear1(x).clamp_min(0.0))
    }
}

/// A module with any list of named parameters.
struct Named(Vec<(&'static str, Param)>);

impl Named {
    fn new(params: &[(&'static str, &[usize])], rng: &mut impl Rng) -> Self {
        Self(
            params
                .iter()
                .map(|&(name, dims)| (name, Param::new(Tensor::randn(dims, &Cpu, rng))))
                .collect(),
        )
    }
}

impl Module<Cpu> for Named {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
        for (name, param) in &self.0 {
            f(name, param);
        }
    }
    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) {
        for (name, param) in &mut self.0 {
            f(name, param);
        }
    }
}

/// Every parameter's name and bit pattern: what "untouched" and "bit for bit" compare.
fn snapshot(module: &impl Module<Cpu>) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let mut out = Vec::new();
    module.visit_params(&mut |name, param| {
        let bits = param.value().to_vec().iter().map(|x| x.to_bits()).collect();
        out.push((name.to_owned(), param.value().dims().to_vec(), bits));
    });
    out
}

fn fixture_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file)
}

fn scratch_path(file: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(file)
}

/// A safetensors file with the given raw tensors, written with the safetensors crate itself.
fn raw_file(tensors: &[(&str, Dtype, &[usize], Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                *name,
                TensorView::new(*dtype, shape.to_vec(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn pytorch_trained_weights_reproduce_pytorch_output() {
    let mut net = TwoLayerNet::zeros();
    net.load(fixture_path("two_layer_net_trained.safetensors"))
        .unwrap();
    let io = Fixture::open("two_layer_net_io.safetensors");
    let y_pred = net.forward(&io.tensor("x"));
    let expected = io.tensor("y_pred");
    assert_eq!(y_pred.dims(), &[8, 10]);
    let max_abs = y_pred
        .to_vec()
        .iter()
        .zip(expected.to_vec())
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    println!("interop: max abs difference from PyTorch's y_pred = {max_abs:e}");
    assert!(
        max_abs <= INTEROP_TOLERANCE,
        "max abs difference {max_abs:e}"
    );
}

#[test]
fn declared_network_loads_pytorch_weights_and_reproduces_pytorch_output() {
    let net = DeclaredNet::load(&Cpu, fixture_path("two_layer_net_trained.safetensors")).unwrap();
    let io = Fixture::open("two_layer_net_io.safetensors");
    let y_pred = net.forward(&io.tensor("x")).unwrap();
    let expected = io.tensor("y_pred");
    assert_eq!(y_pred.dims(), expected.dims());
    let max_abs = y_pred
        .to_vec()
        .iter()
        .zip(expected.to_vec())
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    println!("interop through network!: max abs difference from PyTorch's y_pred = {max_abs:e}");
    assert!(
        max_abs <= INTEROP_TOLERANCE,
        "max abs difference {max_abs:e}"
    );
}

#[test]
fn declared_network_saves_pytorch_state_dict_names_and_shapes() {
    let net = DeclaredNet::new(&Cpu, &mut seeded(0));
    let path = scratch_path("declared_net.safetensors");
    net.save(&path).unwrap();
    let file = load_tensors(&path, &Cpu).unwrap();
    std::fs::remove_file(&path).unwrap();
    let saved: Vec<(&str, &[usize])> = file
        .tensors
        .iter()
        .map(|(name, tensor)| (name.as_str(), tensor.dims()))
        .collect();
    // The names and shapes of `TwoLayerNet(1000, 100, 10).state_dict()`, sorted.
    let expected: [(&str, &[usize]); 4] = [
        ("linear1.bias", &[100]),
        ("linear1.weight", &[100, 1000]),
        ("linear2.bias", &[10]),
        ("linear2.weight", &[10, 100]),
    ];
    assert_eq!(saved, expected);
    assert_eq!(file.metadata["format"], "pt");
    let fixture = Fixture::open("two_layer_net_trained.safetensors");
    for (name, dims) in expected {
        assert_eq!(
            fixture.tensor(name).dims(),
            dims,
            "the PyTorch file's {name}"
        );
    }
}

#[test]
fn loaded_weights_are_the_files_bits_and_save_writes_them_back() {
    let fixture = Fixture::open("two_layer_net_trained.safetensors");
    let mut net = TwoLayerNet::zeros();
    net.load(fixture_path("two_layer_net_trained.safetensors"))
        .unwrap();
    for (name, dims, bits) in snapshot(&net) {
        let expected = fixture.tensor(&name);
        assert_eq!(dims, expected.dims(), "{name}");
        let expected: Vec<u32> = expected.to_vec().iter().map(|x| x.to_bits()).collect();
        assert!(bits == expected, "{name} differs from the file");
    }

    // What declnet writes is what PyTorch wrote, plus safetensors.torch's format tag.
    let bytes = net.save_to_bytes().unwrap();
    let file = deserialize_tensors(&bytes, &Cpu).unwrap();
    assert_eq!(
        file.metadata,
        Metadata::from([("format".into(), "pt".into())])
    );
    let names: Vec<&str> = file.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "linear1.bias",
            "linear1.weight",
            "linear2.bias",
            "linear2.weight"
        ]
    );
    for (name, tensor) in &file.tensors {
        let expected = fixture.tensor(name);
        assert_eq!(tensor.dims(), expected.dims(), "{name}");
        assert!(
            tensor
                .to_vec()
                .iter()
                .map(|x| x.to_bits())
                .eq(expected.to_vec().iter().map(|x| x.to_bits())),
            "{name}"
        );
    }
}

#[test]
fn save_then_load_round_trips_bit_for_bit() {
    let rng = &mut seeded(7);
    let shapes: &[(&str, &[usize])] = &[
        ("block.fc.weight", &[4, 3]),
        ("block.fc.bias", &[4]),
        ("scale", &[]),
        ("empty", &[0, 5]),
    ];
    let mut source = Named::new(shapes, rng);
    // Values that a lossy path would change: NaN payloads, infinities, -0, subnormals.
    let special = [
        f32::NAN,
        -f32::INFINITY,
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x7fc0_1234),
    ];
    let mut w = source.0[0].1.value().to_vec();
    w[..special.len()].copy_from_slice(&special);
    source.0[0]
        .1
        .set_value(Tensor::from_vec(w, [4, 3], &Cpu))
        .unwrap();

    let path = scratch_path("round_trip.safetensors");
    source.save(&path).unwrap();
    let mut target = Named::new(shapes, &mut seeded(8));
    assert_ne!(snapshot(&source), snapshot(&target));
    target.load(&path).unwrap();
    assert_eq!(snapshot(&source), snapshot(&target));

    // Saving what was loaded writes the same bytes.
    assert_eq!(
        target.save_to_bytes().unwrap(),
        std::fs::read(&path).unwrap()
    );
}

#[test]
fn named_tensors_and_metadata_round_trip() {
    let rng = &mut seeded(9);
    let a = Tensor::randn([3, 2], &Cpu, rng);
    let b = Tensor::randn([5], &Cpu, rng);
    let metadata = Metadata::from([
        ("step".to_owned(), "12".to_owned()),
        ("format".to_owned(), "declnet-optim".to_owned()),
    ]);
    let path = scratch_path("named.safetensors");
    save_tensors(
        &path,
        &[("state.0.exp_avg", &a), ("state.0.step", &b)],
        &metadata,
    )
    .unwrap();
    let file = load_tensors(&path, &Cpu).unwrap();
    assert_eq!(file.metadata, metadata, "an explicit format is kept");
    assert_eq!(file.tensors.len(), 2);
    assert_eq!(file.get("state.0.exp_avg").unwrap().to_vec(), a.to_vec());
    assert_eq!(file.get("state.0.step").unwrap().dims(), &[5]);
    assert!(file.get("state.1.step").is_none());

    let error = save_tensors(&path, &[("a", &a), ("a", &b)], &metadata).unwrap_err();
    assert_eq!(error.to_string(), "save_tensors: two tensors are named `a`");
}

fn small_net() -> Named {
    Named::new(&[("fc.weight", &[3, 4]), ("fc.bias", &[3])], &mut seeded(1))
}

/// Loads `bytes` into a fresh small net, expects an error, checks the net is untouched and
/// returns the message.
fn load_error(bytes: &[u8]) -> String {
    let mut net = small_net();
    let before = snapshot(&net);
    let error = net.load_from_bytes(bytes).unwrap_err();
    assert_eq!(
        snapshot(&net),
        before,
        "a failed load changed the module: {error}"
    );
    error.to_string()
}

#[test]
fn missing_and_unexpected_tensors_are_all_listed() {
    let bytes = raw_file(&[
        ("fc.weight", Dtype::F32, &[3, 4], f32_bytes(&[1.0; 12])),
        ("fc3.weight", Dtype::F32, &[2, 2], f32_bytes(&[1.0; 4])),
        ("extra", Dtype::I64, &[1], vec![0; 8]),
    ]);
    assert_eq!(
        load_error(&bytes),
        "load: the file lacks 1 tensor the module expects: `fc.bias` [3]; \
         the file has 2 tensors the module does not expect: `extra` [1], `fc3.weight` [2, 2]"
    );
    let only_missing = raw_file(&[]);
    assert_eq!(
        load_error(&only_missing),
        "load: the file lacks 2 tensors the module expects: `fc.weight` [3, 4], `fc.bias` [3]"
    );
}

#[test]
fn load_partial_skips_extras_and_keeps_missing_parameters() {
    let bytes = raw_file(&[
        ("fc.weight", Dtype::F32, &[3, 4], f32_bytes(&[2.0; 12])),
        ("num_batches_tracked", Dtype::I64, &[], vec![0; 8]),
    ]);
    let mut net = small_net();
    let bias = net.0[1].1.value().to_vec();
    let report = net.load_partial_from_bytes(&bytes).unwrap();
    assert_eq!(
        report,
        PartialLoad {
            missing: vec!["fc.bias".into()],
            unexpected: vec!["num_batches_tracked".into()],
        }
    );
    assert_eq!(net.0[0].1.value().to_vec(), [2.0; 12]);
    assert_eq!(
        net.0[1].1.value().to_vec(),
        bias,
        "a missing parameter keeps its value"
    );

    // A matching name must still match in shape, and nothing is assigned if one does not.
    let misshaped = raw_file(&[
        ("fc.weight", Dtype::F32, &[3, 4], f32_bytes(&[5.0; 12])),
        ("fc.bias", Dtype::F32, &[4], f32_bytes(&[5.0; 4])),
    ]);
    let before = snapshot(&net);
    let error = net.load_partial_from_bytes(&misshaped).unwrap_err();
    assert_eq!(
        error.to_string(),
        "load_partial: tensor `fc.bias` has shape [4] in the file, but the module expects [3]"
    );
    assert_eq!(snapshot(&net), before);
}

#[test]
fn misshaped_tensors_are_all_listed() {
    let bytes = raw_file(&[
        ("fc.weight", Dtype::F32, &[4, 3], f32_bytes(&[1.0; 12])),
        ("fc.bias", Dtype::F32, &[1, 3], f32_bytes(&[1.0; 3])),
    ]);
    assert_eq!(
        load_error(&bytes),
        "load: tensor `fc.weight` has shape [4, 3] in the file, but the module expects [3, 4]; \
         tensor `fc.bias` has shape [1, 3] in the file, but the module expects [3]"
    );
}

#[test]
fn pytorch_message_for_a_misshaped_linear_weight() {
    let mut net = TwoLayerNet::zeros();
    net.w1 = Param::new(Tensor::zeros([100, 999], &Cpu));
    let error = net
        .load(fixture_path("two_layer_net_trained.safetensors"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "load: tensor `linear1.weight` has shape [100, 1000] in the file, but the module expects [100, 999]"
    );
    assert_eq!(net.b1.value().to_vec(), [0.0; 100], "nothing was assigned");
}

#[test]
fn half_bfloat_and_double_tensors_load_as_f32_and_integers_do_not() {
    let bf16 = |x: f32| ((x.to_bits() >> 16) as u16).to_le_bytes();
    let weight: Vec<f32> = (0..12).map(|i| i as f32 - 5.5).collect();
    let bytes = raw_file(&[
        (
            "fc.weight",
            Dtype::BF16,
            &[3, 4],
            weight.iter().flat_map(|&x| bf16(x)).collect(),
        ),
        (
            "fc.bias",
            Dtype::F64,
            &[3],
            [0.1f64, 0.2, 0.3]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
    ]);
    let mut net = small_net();
    net.load_from_bytes(&bytes).unwrap();
    assert_eq!(net.0[0].1.value().to_vec(), weight);
    assert_eq!(net.0[1].1.value().to_vec(), [0.1f32, 0.2, 0.3]);

    let half = raw_file(&[
        (
            "fc.weight",
            Dtype::F16,
            &[3, 4],
            [0x3c00u16; 12]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        ("fc.bias", Dtype::F32, &[3], f32_bytes(&[0.0; 3])),
    ]);
    net.load_from_bytes(&half).unwrap();
    assert_eq!(net.0[0].1.value().to_vec(), [1.0; 12]);

    let ints = raw_file(&[
        ("fc.weight", Dtype::F32, &[3, 4], f32_bytes(&[1.0; 12])),
        ("fc.bias", Dtype::I32, &[3], vec![0; 12]),
    ]);
    assert_eq!(
        load_error(&ints),
        "load: tensor `fc.bias` [3] is stored as I32; only F32, F64, F16 and BF16 can be loaded"
    );
}

#[test]
fn truncated_corrupt_and_lying_files_are_errors() {
    let good = small_net().save_to_bytes().unwrap();
    small_net().load_from_bytes(&good).unwrap();

    assert_eq!(
        load_error(&good[..5]),
        "load: the buffer is not a valid safetensors file: header too small"
    );
    assert_eq!(
        load_error(&good[..good.len() - 1]),
        "load: the buffer is not a valid safetensors file: \
         the header says tensor `fc.weight` ends at byte 60 of the data, but the file holds 59 data bytes"
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        load_error(&trailing),
        "load: the buffer is not a valid safetensors file: incomplete metadata, file not fully covered"
    );
    assert_eq!(
        load_error(&[]),
        "load: the buffer is not a valid safetensors file: header too small"
    );
    let mut not_json = good.clone();
    not_json[8] = b'[';
    assert!(
        load_error(&not_json).starts_with(
            "load: the buffer is not a valid safetensors file: invalid JSON in header"
        ),
    );
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        load_error(&huge_header),
        "load: the buffer is not a valid safetensors file: header too large"
    );

    // A header that lies about where the data is.
    let header_len = usize::try_from(u64::from_le_bytes(good[..8].try_into().unwrap())).unwrap();
    let header = std::str::from_utf8(&good[8..8 + header_len]).unwrap();
    let with_header = |header: &str| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&good[8 + header_len..]);
        bytes
    };
    assert!(header.contains("[12,60]"), "{header}");
    assert_eq!(
        load_error(&with_header(&header.replace("[12,60]", "[12,4000]"))),
        "load: the buffer is not a valid safetensors file: \
         the header says tensor `fc.weight` ends at byte 4000 of the data, but the file holds 60 data bytes"
    );
    assert_eq!(
        load_error(&with_header(&header.replace("[12,60]", "[4,52]"))),
        "load: the buffer is not a valid safetensors file: invalid offset for tensor `fc.weight`"
    );
    assert_eq!(
        load_error(&with_header(&header.replace("[3,4]", "[4,4]"))),
        "load: the buffer is not a valid safetensors file: invalid shape, data type, or offset for tensor"
    );
}

#[test]
fn io_errors_name_the_path() {
    let path = scratch_path("no-such-dir/net.safetensors");
    let mut net = small_net();
    let error = net.load(&path).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("load: cannot read `{}`: ", path.display())),
        "{message}"
    );
    assert!(matches!(
        error,
        Error::Io {
            kind: std::io::ErrorKind::NotFound,
            ..
        }
    ));
    let error = net.save(&path).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with(&format!("save: cannot write `{}`: ", path.display())),
        "{error}"
    );
    // A file that exists but is not safetensors names the file.
    let error = net.load(fixture_path("../common/mod.rs")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("common/mod.rs` is not a valid safetensors file: "),
        "{error}"
    );
}

#[test]
fn two_parameters_with_one_name_are_refused() {
    let mut net = Named::new(&[("w", &[2]), ("w", &[2])], &mut seeded(2));
    assert_eq!(
        net.save_to_bytes().unwrap_err().to_string(),
        "save: two tensors are named `w`"
    );
    let bytes = raw_file(&[("w", Dtype::F32, &[2], f32_bytes(&[1.0, 2.0]))]);
    assert_eq!(
        net.load_from_bytes(&bytes).unwrap_err().to_string(),
        "load: two tensors are named `w`"
    );
}

/// One fuzz input: random bytes, a truncation, or byte flips of a valid file.
fn mutate(valid: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let header_end =
        8 + usize::try_from(u64::from_le_bytes(valid[..8].try_into().unwrap())).unwrap();
    match rng.random_range(0..8) {
        0 => {
            let len = rng.random_range(0..256);
            (0..len).map(|_| rng.random()).collect()
        }
        1 => valid[..rng.random_range(0..valid.len())].to_vec(),
        2 => {
            // Random bytes behind a plausible header length.
            let len = rng.random_range(0..256u64);
            let mut bytes = len.to_le_bytes().to_vec();
            bytes.extend((0..rng.random_range(0..300)).map(|_| rng.random::<u8>()));
            bytes
        }
        3 => {
            // Replace a digit of the header (shapes, offsets) with another digit.
            let mut bytes = valid.to_vec();
            let digits: Vec<usize> = (8..header_end)
                .filter(|&i| bytes[i].is_ascii_digit())
                .collect();
            for _ in 0..rng.random_range(1..3) {
                let i = digits[rng.random_range(0..digits.len())];
                bytes[i] = b'0' + rng.random_range(0..10u8);
            }
            bytes
        }
        4 | 5 => {
            // Flip bytes anywhere, mostly in the header.
            let mut bytes = valid.to_vec();
            for _ in 0..rng.random_range(1..5) {
                let end = if rng.random_bool(0.8) {
                    header_end
                } else {
                    bytes.len()
                };
                let i = rng.random_range(0..end);
                bytes[i] = rng.random();
            }
            bytes
        }
        6 => {
            // Flip one bit, then truncate or extend.
            let mut bytes = valid.to_vec();
            let i = rng.random_range(0..bytes.len());
            bytes[i] ^= 1 << rng.random_range(0..8);
            if rng.random_bool(0.5) {
                bytes.truncate(rng.random_range(0..bytes.len()));
            } else {
                bytes.extend((0..rng.random_range(1..16)).map(|_| rng.random::<u8>()));
            }
            bytes
        }
        _ => {
            // Splice: a random slice of the file moved elsewhere.
            let mut bytes = valid.to_vec();
            let a = rng.random_range(0..bytes.len());
            let b = rng.random_range(a..bytes.len());
            let chunk = bytes[a..b].to_vec();
            let at = rng.random_range(0..bytes.len());
            bytes.splice(at..at, chunk);
            bytes
        }
    }
}

#[test]
fn loader_never_panics_on_arbitrary_bytes() {
    const CASES: usize = 100_000;
    let source = small_net();
    let valid = source.save_to_bytes().unwrap();
    let rng = &mut seeded(2024);
    let mut target = small_net();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let start = Instant::now();
    for _ in 0..CASES {
        let bytes = mutate(&valid, rng);
        let before = snapshot(&target);
        if target.load_from_bytes(&bytes).is_ok() {
            *counts.entry("module accepted").or_default() += 1;
        } else {
            assert_eq!(
                snapshot(&target),
                before,
                "a failed load changed the module"
            );
            *counts.entry("module rejected").or_default() += 1;
        }
        let key = if deserialize_tensors(&bytes, &Cpu).is_ok() {
            "tensors accepted"
        } else {
            "tensors rejected"
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_unstable();
    println!(
        "fuzz: {CASES} inputs in {:.2?}: {counts:?}",
        start.elapsed()
    );
    let count = |key| {
        counts
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(0, |&(_, n)| n)
    };
    // Both outcomes happen, so the mutations reach past the first check.
    assert!(
        count("module accepted") > 0 && count("module rejected") > 0,
        "{counts:?}"
    );
    assert!(
        count("tensors accepted") >= count("module accepted"),
        "{counts:?}"
    );
}

/// `load_with` reads a file whose names differ (here a prefix and other tensors beside the
/// weights); `load_state_dict` loads from memory, with the same checks as a file.
#[test]
fn loads_through_a_name_map_and_from_memory() {
    let source = DeclaredNet::new(&Cpu, &mut seeded(1));
    let mut tensors: Vec<(String, &Tensor)> = source
        .params()
        .into_iter()
        .map(|(name, param)| (format!("model.{name}"), param.value()))
        .collect();
    let unrelated = Tensor::zeros([3], &Cpu);
    tensors.push(("optimizer.step".to_owned(), &unrelated));
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let path = std::env::temp_dir().join("declnet-test-load-with.safetensors");
    declnet::io::save_tensors(&path, &named, &declnet::io::Metadata::new()).unwrap();

    let mut net = DeclaredNet::new(&Cpu, &mut seeded(2));
    net.load_with(&path, |name| format!("model.{name}"))
        .unwrap();
    assert_eq!(
        net.linear2.weight.value().to_vec(),
        source.linear2.weight.value().to_vec()
    );
    let mut other = DeclaredNet::new(&Cpu, &mut seeded(3));
    let before = other.linear1.weight.value().to_vec();
    let error = other
        .load_with(&path, |name| name.replace("linear", "model.layer"))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("`model.layer1.weight` [100, 1000]"),
        "missing tensors are named as the map names them: {error}"
    );
    assert_eq!(other.linear1.weight.value().to_vec(), before, "unchanged");
    std::fs::remove_file(&path).ok();

    let params = source.params();
    let state: Vec<(&str, &Tensor)> = params
        .iter()
        .map(|(n, p)| (n.as_str(), p.value()))
        .collect();
    other.load_state_dict(&state).unwrap();
    assert_eq!(
        other.linear1.try_bias().unwrap().value().to_vec(),
        source.linear1.try_bias().unwrap().value().to_vec()
    );
    let error = other.load_state_dict(&state[..3]).unwrap_err();
    assert!(error.to_string().contains("linear2.bias"), "{error}");
    let wrong = Tensor::zeros([10, 99], &Cpu);
    let mut misshaped = state.clone();
    misshaped[2] = ("linear2.weight", &wrong);
    let error = other.load_state_dict(&misshaped).unwrap_err();
    assert!(error.to_string().contains("[10, 99]"), "{error}");
}
