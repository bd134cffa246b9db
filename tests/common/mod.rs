//! Reading PyTorch reference fixtures (`tests/fixtures/*.safetensors`) in tests, and running a
//! check on every device.

use std::path::PathBuf;

use declnet::prelude::*;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

/// A fixture file's bytes, from which tensors are read by name.
pub struct Fixture {
    name: String,
    bytes: Vec<u8>,
}

impl Fixture {
    /// Reads fixture `file` (see [`fixture_path`]).
    #[allow(dead_code, reason = "not every test binary reads fixtures")]
    pub fn open(file: &str) -> Self {
        let path = fixture_path(file);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
        Self {
            name: file.to_owned(),
            bytes,
        }
    }

    fn view(&self, key: &str) -> safetensors::tensor::TensorView<'_> {
        let tensors = SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("{} is not a safetensors file: {e}", self.name));
        tensors
            .tensor(key)
            .unwrap_or_else(|e| panic!("{} has no tensor {key}: {e}", self.name))
    }

    /// The f32 tensor `key`, on the CPU.
    pub fn tensor(&self, key: &str) -> Tensor {
        let view = self.view(key);
        assert_eq!(view.dtype(), Dtype::F32, "{key} is not f32");
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::from_vec(data, view.shape(), &Cpu)
    }

    /// The f32 tensor `key`, on `device`.
    #[allow(dead_code, reason = "not every test binary runs on a device")]
    pub fn tensor_on<B: Backend>(&self, key: &str, device: &B) -> Tensor<B> {
        self.tensor(key).to_device(device)
    }

    /// The tutorial's training data, `data.x` and `data.y`, on `device`.
    #[allow(dead_code, reason = "not every test binary replays a tutorial stage")]
    pub fn data_on<B: Backend>(&self, device: &B) -> (Tensor<B>, Tensor<B>) {
        (
            self.tensor_on("data.x", device),
            self.tensor_on("data.y", device),
        )
    }

    /// Sets every parameter of `net` to the fixture's `<prefix>.init.<name>`.
    #[allow(
        dead_code,
        reason = "not every test binary starts from PyTorch's weights"
    )]
    pub fn init_params<B: Backend>(&self, net: &mut impl Module<B>, prefix: &str) {
        net.visit_params_mut(&mut |name, param| {
            let device = param.value().device().clone();
            param
                .set_value(self.tensor_on(&format!("{prefix}.init.{name}"), &device))
                .unwrap();
        });
    }

    /// The string stored under `key` in the file's metadata.
    #[allow(dead_code, reason = "not every test binary reads metadata")]
    pub fn metadata(&self, key: &str) -> String {
        let (_, metadata) = SafeTensors::read_metadata(&self.bytes)
            .unwrap_or_else(|e| panic!("{} is not a safetensors file: {e}", self.name));
        metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(key))
            .unwrap_or_else(|| panic!("{} has no metadata {key}", self.name))
            .clone()
    }

    /// The i64 tensor `key`, flattened.
    #[allow(dead_code, reason = "not every test binary reads integer tensors")]
    pub fn i64s(&self, key: &str) -> Vec<i64> {
        let view = self.view(key);
        assert_eq!(view.dtype(), Dtype::I64, "{key} is not i64");
        view.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    }
}

/// `tests/fixtures/<file>` in the source tree the test was built in or, for a test binary
/// copied to another machine (`scripts/gpu-check.sh`), in the current directory.
#[allow(dead_code, reason = "not every test binary reads fixtures")]
pub fn fixture_path(file: &str) -> PathBuf {
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = if built_in.is_dir() {
        built_in
    } else {
        PathBuf::from("tests/fixtures")
    };
    dir.join(file)
}

/// The largest relative difference `|a - e| / max(|e|, floor)` over two equally long slices.
#[allow(dead_code, reason = "not every test binary compares with a tolerance")]
pub fn max_rel_diff(actual: &[f32], expected: &[f32], floor: f32) -> f32 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs() / e.abs().max(floor))
        .fold(0.0, f32::max)
}

/// Checks a replayed training run against PyTorch's losses: the first 10 steps to
/// [`EARLY_TOLERANCE`], the rest to `late_tolerance` (both relative), printing the worst
/// differences so a failure says by how much.
#[allow(dead_code, reason = "not every test binary replays a training run")]
pub fn assert_losses_match(actual: &[f32], expected: &[f32], late_tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "number of steps");
    let early = max_rel_diff(&actual[..10], &expected[..10], 0.0);
    let late = max_rel_diff(&actual[10..], &expected[10..], 0.0);
    println!("max relative loss difference: first 10 steps {early:e}, later {late:e}");
    assert!(
        early <= EARLY_TOLERANCE,
        "first 10 losses differ by {early:e} relative"
    );
    assert!(
        late <= late_tolerance,
        "later losses differ by {late:e} relative"
    );
}

/// The first steps of a replay agree with PyTorch to float rounding.
pub const EARLY_TOLERANCE: f32 = 1e-4;

/// GPU 0 for the CUDA run of a test, or `None` after writing `skipped: no CUDA device (why)` to
/// stderr, so the skip shows in the log of a passing run; with `DECLNET_REQUIRE_CUDA=1` a skip
/// fails the test instead.
#[allow(dead_code, reason = "not every test binary runs on a device")]
pub fn cuda_or_skip() -> Option<Cuda> {
    match Cuda::new(0) {
        Ok(device) => Some(device),
        Err(error) => {
            declnet::runtime::backend::skip_without_cuda(&error);
            None
        }
    }
}

/// `on_every_device!(name, check)` makes the tests `name::cpu` and `name::cuda`, which run
/// `check(&device)` on the CPU and on GPU 0 (skipped, and passing, without one).
#[allow(unused_macros, reason = "not every test binary runs on a device")]
macro_rules! on_every_device {
    ($name:ident, $check:ident) => {
        mod $name {
            #[test]
            fn cpu() {
                super::$check(&declnet::Cpu);
            }

            #[test]
            fn cuda() {
                if let Some(device) = super::common::cuda_or_skip() {
                    super::$check(&device);
                }
            }
        }
    };
}
#[allow(unused_imports, reason = "not every test binary runs on a device")]
pub(crate) use on_every_device;
