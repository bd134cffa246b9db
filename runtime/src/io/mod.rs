//! Saving and loading weights as [safetensors], with PyTorch's `state_dict` names and layouts.
//!
//! A module's file holds one little-endian `F32` tensor per parameter, named as
//! [`Module::visit_params`] names it (`linear1.weight`, `block.fc.bias`) and shaped as PyTorch
//! shapes it (`Linear.weight` is `[out, in]`), with the metadata `{"format": "pt"}` that
//! `safetensors.torch` writes. So the same file moves between the two with no adapter:
//!
//! ```python
//! from safetensors.torch import load_file, save_file
//! model = TwoLayerNet(1000, 100, 10)                      # the same layer names as in Rust
//! model.load_state_dict(load_file("model.safetensors"))  # a file `net.save(..)` wrote
//! save_file(model.state_dict(), "model.safetensors")      # a file `net.load(..)` reads
//! ```
//!
//! Loading validates the whole file against the whole module first (names, element types,
//! shapes, and the upload to the device) and only then assigns, so a failed load leaves the
//! module as it was. Tensors stored as `F16` or `BF16` are widened to `f32` exactly and `F64`
//! ones rounded to nearest, so a `model.half()` or `model.double()` state dict loads too;
//! any other element type is an [`Error::TensorDtype`].
//!
//! [`save_tensors`] and [`load_tensors`] do the same for any list of named tensors plus string
//! metadata (an optimizer's state, a data set).
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

mod safetensors;

use self::safetensors::{RawTensor, Values};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::module::{Buffer, BufferMut, Module};
use crate::param::Param;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The string key-value pairs a safetensors file carries in its `__metadata__` entry.
pub type Metadata = BTreeMap<String, String>;

/// The metadata key `safetensors.torch` sets, and the value declnet writes to it.
const FORMAT: (&str, &str) = ("format", "pt");

/// The named tensors and the metadata read from a safetensors file.
#[derive(Debug)]
pub struct TensorFile<B: Backend = Cpu> {
    /// Every tensor, sorted by name.
    pub tensors: Vec<(String, Tensor<B>)>,
    /// The file's metadata (empty when it has none).
    pub metadata: Metadata,
}

impl<B: Backend> TensorFile<B> {
    /// The tensor called `name`, if the file has one.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Tensor<B>> {
        self.tensors
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i].1)
    }
}

/// Encodes named tensors and `metadata` as the bytes of a safetensors file.
///
/// The tensors are stored as little-endian `F32`; `metadata` gets `"format": "pt"` unless it
/// sets `format` itself.
///
/// # Errors
/// [`Error::DuplicateName`] when two tensors share a name; a device error from downloading.
pub fn serialize_tensors<B: Backend>(
    tensors: &[(&str, &Tensor<B>)],
    metadata: &Metadata,
) -> Result<Vec<u8>> {
    let records = tensors
        .iter()
        .map(|(name, tensor)| {
            Ok((
                (*name).to_owned(),
                tensor.shape().clone(),
                Values::F32(tensor.try_to_vec()?),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = metadata.clone();
    metadata
        .entry(FORMAT.0.to_owned())
        .or_insert_with(|| FORMAT.1.to_owned());
    safetensors::encode("save_tensors", &records, &metadata)
}

/// Writes named tensors and `metadata` to a safetensors file at `path`, as
/// [`serialize_tensors`] encodes them.
///
/// # Examples
/// ```
/// use declnet_runtime::io::{Metadata, load_tensors, save_tensors};
/// use declnet_runtime::{Cpu, Tensor};
/// let step = Tensor::from_vec(vec![3.0], [1], &Cpu);
/// let momentum = Tensor::from_vec(vec![0.5, -0.5], [2], &Cpu);
/// let metadata = Metadata::from([("lr".to_owned(), "0.01".to_owned())]);
/// let path = std::env::temp_dir().join("declnet-doc-save-tensors.safetensors");
/// save_tensors(&path, &[("step", &step), ("fc.weight.momentum", &momentum)], &metadata)?;
/// let file = load_tensors(&path, &Cpu)?;
/// assert_eq!(file.get("fc.weight.momentum").unwrap().to_vec(), [0.5, -0.5]);
/// assert_eq!(file.metadata["lr"], "0.01");
/// assert_eq!(file.metadata["format"], "pt");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), declnet_runtime::Error>(())
/// ```
///
/// # Errors
/// As [`serialize_tensors`], and [`Error::Io`] when the file cannot be written.
pub fn save_tensors<B: Backend>(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor<B>)],
    metadata: &Metadata,
) -> Result<()> {
    let bytes = serialize_tensors(tensors, metadata)?;
    write("save_tensors", path.as_ref(), &bytes)
}

/// Decodes the bytes of a safetensors file into tensors on `device`, sorted by name, and the
/// file's metadata.
///
/// # Errors
/// [`Error::InvalidFile`] for bytes that are not a valid safetensors file,
/// [`Error::TensorDtype`] for a tensor that is not `F32`, `F64`, `F16` or `BF16`, and a device
/// error from uploading. Nothing panics, whatever the bytes.
pub fn deserialize_tensors<B: Backend>(bytes: &[u8], device: &B) -> Result<TensorFile<B>> {
    decode_tensors("load_tensors", bytes, None, device)
}

/// Reads a safetensors file into tensors on `device`, sorted by name, and the file's metadata.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, and as [`deserialize_tensors`].
pub fn load_tensors<B: Backend>(path: impl AsRef<Path>, device: &B) -> Result<TensorFile<B>> {
    let path = path.as_ref();
    let bytes = read("load_tensors", path)?;
    decode_tensors("load_tensors", &bytes, Some(path), device)
}

/// Reads one floating-point tensor of a safetensors file onto `device`, whatever else the file
/// holds (integer labels beside images, say).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::InvalidFile`] for a malformed file,
/// [`Error::Usage`] when it has no tensor `name`, [`Error::TensorDtype`] when that tensor is
/// not floating-point.
pub fn load_tensor<B: Backend>(
    path: impl AsRef<Path>,
    name: &str,
    device: &B,
) -> Result<Tensor<B>> {
    const OP: &str = "load_tensor";
    let path = path.as_ref();
    let bytes = read(OP, path)?;
    let parsed = safetensors::parse(OP, &bytes, Some(path))?;
    let raw = find(OP, &parsed, name)?;
    Tensor::try_from_vec(safetensors::to_f32(OP, raw)?, raw.shape.clone(), device)
}

/// Reads one integer tensor (`I64`, `I32` or `U8`) of a safetensors file as indices: class
/// labels, token ids. Returns them and the tensor's shape.
///
/// # Errors
/// As [`load_tensor`], and [`Error::Usage`] for a negative value.
pub fn load_indices(path: impl AsRef<Path>, name: &str) -> Result<(Vec<usize>, Shape)> {
    const OP: &str = "load_indices";
    let path = path.as_ref();
    let bytes = read(OP, path)?;
    let parsed = safetensors::parse(OP, &bytes, Some(path))?;
    let raw = find(OP, &parsed, name)?;
    Ok((safetensors::to_indices(OP, raw)?, raw.shape.clone()))
}

/// Tensor `name` of a parsed file, or an error naming it and what the file holds.
fn find<'p, 'a>(
    op: &'static str,
    parsed: &'p safetensors::Parsed<'a>,
    name: &str,
) -> Result<&'p safetensors::RawTensor<'a>> {
    parsed
        .tensors
        .iter()
        .find(|raw| raw.name == name)
        .ok_or_else(|| {
            let names: Vec<String> = parsed
                .tensors
                .iter()
                .map(|raw| format!("`{}`", raw.name))
                .collect();
            Error::Usage(format!(
                "{op}: the file has no tensor `{name}`; it holds {}",
                names.join(", ")
            ))
        })
}

fn decode_tensors<B: Backend>(
    op: &'static str,
    bytes: &[u8],
    path: Option<&Path>,
    device: &B,
) -> Result<TensorFile<B>> {
    let parsed = safetensors::parse(op, bytes, path)?;
    let tensors = parsed
        .tensors
        .iter()
        .map(|raw| {
            let data = safetensors::to_f32(op, raw)?;
            let tensor = Tensor::try_from_vec(data, raw.shape.clone(), device)?;
            Ok((raw.name.clone(), tensor))
        })
        .collect::<Result<_>>()?;
    Ok(TensorFile {
        tensors,
        metadata: parsed.metadata,
    })
}

/// What [`ModuleIo::load_partial`] skipped: PyTorch's `load_state_dict(strict=False)` result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialLoad {
    /// Parameters the file has no tensor for; they keep their values. In visiting order.
    pub missing: Vec<String>,
    /// Tensors in the file the module has no parameter for; they are ignored. Sorted.
    pub unexpected: Vec<String>,
}

/// Saving and loading any [`Module`]'s parameters as safetensors, under PyTorch `state_dict`
/// names (see the [module docs](self) for the PyTorch side).
///
/// Loading replaces each parameter's value with a tensor allocated on the device the parameter
/// is on; gradients are left as they are. Implemented for every [`Module`].
///
/// # Examples
/// ```
/// use declnet_runtime::io::ModuleIo;
/// use declnet_runtime::{Cpu, Module, Param, Tensor};
///
/// struct Affine { weight: Param, bias: Param }
///
/// impl Module<Cpu> for Affine {
///     fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param)) {
///         f("weight", &self.weight);
///         f("bias", &self.bias);
///     }
///     fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param)) {
///         f("weight", &mut self.weight);
///         f("bias", &mut self.bias);
///     }
/// }
///
/// let new = |w: f32| Affine {
///     weight: Param::new(Tensor::full([2, 3], w, &Cpu)),
///     bias: Param::new(Tensor::zeros([2], &Cpu)),
/// };
/// let path = std::env::temp_dir().join("declnet-doc-module-io.safetensors");
/// new(0.5).save(&path)?;
/// let mut net = new(0.0);
/// net.load(&path)?;
/// assert_eq!(net.weight.value().to_vec(), [0.5; 6]);
///
/// let mut wider = Affine { weight: Param::new(Tensor::zeros([2, 4], &Cpu)), ..new(0.0) };
/// let error = wider.load(&path).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "load: tensor `weight` has shape [2, 3] in the file, but the module expects [2, 4]"
/// );
/// assert_eq!(wider.weight.value().to_vec(), [0.0; 8], "a failed load changes nothing");
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), declnet_runtime::Error>(())
/// ```
pub trait ModuleIo<B: Backend>: Module<B> {
    /// The parameters and buffers as the bytes of a safetensors file (`F32`, counts as `I64`,
    /// metadata `{"format": "pt"}`).
    ///
    /// # Errors
    /// [`Error::DuplicateName`] when two entries share a name; a device error from
    /// downloading.
    fn save_to_bytes(&self) -> Result<Vec<u8>> {
        let mut records = Vec::new();
        let mut failure = None;
        let mut record = |name: &str, tensor: &Tensor<B>| match tensor.try_to_vec() {
            Ok(data) => records.push((name.to_owned(), tensor.shape().clone(), Values::F32(data))),
            Err(error) => {
                failure.get_or_insert(error);
            }
        };
        self.visit_params(&mut |name, param| record(name, param.value()));
        let mut counts = Vec::new();
        self.visit_buffers(&mut |name, buffer| match buffer {
            Buffer::Tensor(tensor) => record(name, tensor),
            Buffer::Count(count) => counts.push((name.to_owned(), count)),
        });
        if let Some(error) = failure {
            return Err(error);
        }
        records.extend(
            counts
                .into_iter()
                .map(|(name, count)| (name, Shape::from([0usize; 0]), Values::I64(vec![count]))),
        );
        let mut metadata = Metadata::from([(FORMAT.0.to_owned(), FORMAT.1.to_owned())]);
        self.visit_config(&mut |name, value| {
            metadata.insert(name.to_owned(), value);
        });
        safetensors::encode("save", &records, &metadata)
    }

    /// Writes the parameters and buffers to a safetensors file at `path`, like
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    ///
    /// # Errors
    /// As [`ModuleIo::save_to_bytes`], and [`Error::Io`] when the file cannot be written.
    fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.save_to_bytes()?;
        write("save", path.as_ref(), &bytes)
    }

    /// Loads every parameter and buffer from the bytes of a safetensors file that holds
    /// exactly the module's, like `load_state_dict(..)`.
    ///
    /// # Errors
    /// On any error the module is left unchanged:
    /// [`Error::InvalidFile`] for bytes that are not a valid safetensors file (nothing panics,
    /// whatever the bytes); [`Error::TensorNames`] listing every entry the file lacks and
    /// every tensor the module does not expect; [`Error::TensorDtype`] for an element type
    /// other than `F32`, `F64`, `F16` or `BF16` (`I64`, `I32` or `U8` for a count);
    /// [`Error::TensorShapes`] listing every misshaped tensor; [`Error::DuplicateName`] when
    /// two entries share a name; a device error from uploading.
    fn load_from_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        load_file(self, "load", bytes, None, Match::Exact).map(drop)
    }

    /// Loads every parameter and buffer from the safetensors file at `path`, which must hold
    /// exactly the module's.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, and as [`ModuleIo::load_from_bytes`]; the
    /// module is left unchanged.
    fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = read("load", path)?;
        load_file(self, "load", &bytes, Some(path), Match::Exact).map(drop)
    }

    /// Loads the entries the file has, like `load_state_dict(.., strict=False)`: tensors the
    /// module does not expect are ignored, entries the file lacks keep their values, and
    /// both are listed in the returned [`PartialLoad`].
    ///
    /// # Errors
    /// As [`ModuleIo::load_from_bytes`] except [`Error::TensorNames`]; a tensor that matches an
    /// entry's name must still have its shape and element type. The module is left unchanged
    /// on error.
    fn load_partial_from_bytes(&mut self, bytes: &[u8]) -> Result<PartialLoad> {
        load_file(self, "load_partial", bytes, None, Match::Partial)
    }

    /// [`ModuleIo::load_partial_from_bytes`] on the file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, and as
    /// [`ModuleIo::load_partial_from_bytes`]; the module is left unchanged.
    fn load_partial(&mut self, path: impl AsRef<Path>) -> Result<PartialLoad> {
        let path = path.as_ref();
        let bytes = read("load_partial", path)?;
        load_file(self, "load_partial", &bytes, Some(path), Match::Partial)
    }

    /// Loads every parameter and buffer `name` from the file's tensor `file_name(name)`, for a
    /// file that names them otherwise: `|name| format!("model.{name}")` for a prefix,
    /// `|name| name.replace("fc1", "0")` for an `nn.Sequential`'s numbers. Tensors no entry
    /// maps to are ignored; every entry must find its tensor.
    ///
    /// # Examples
    /// ```
    /// use declnet_runtime::io::{ModuleIo, Metadata, save_tensors};
    /// use declnet_runtime::layers::Linear;
    /// use declnet_runtime::{Cpu, Tensor, rng::seeded};
    /// let path = std::env::temp_dir().join("declnet-doc-load-with.safetensors");
    /// let weight = Tensor::full([2, 3], 0.5, &Cpu);
    /// let bias = Tensor::zeros([2], &Cpu);
    /// let steps = Tensor::zeros([1], &Cpu);
    /// let tensors = [("0.weight", &weight), ("0.bias", &bias), ("steps", &steps)];
    /// save_tensors(&path, &tensors, &Metadata::new())?;
    /// let mut fc = Linear::new(3, 2, true, &Cpu, &mut seeded(0));
    /// fc.load_with(&path, |name| format!("0.{name}"))?;
    /// assert_eq!(fc.weight.value().to_vec(), [0.5; 6]);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok::<(), declnet_runtime::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::TensorNames`] listing the entries
    /// whose tensors the file lacks (under their file names); otherwise as
    /// [`ModuleIo::load_from_bytes`]. The module is left unchanged on error.
    fn load_with(
        &mut self,
        path: impl AsRef<Path>,
        file_name: impl Fn(&str) -> String,
    ) -> Result<()> {
        let path = path.as_ref();
        let bytes = read("load_with", path)?;
        load_file(
            self,
            "load_with",
            &bytes,
            Some(path),
            Match::Mapped(&file_name),
        )
        .map(drop)
    }

    /// Copies of every parameter and buffer under their `state_dict` names, like
    /// `state_dict()` (a count becomes a scalar tensor): what [`ModuleIo::load_state_dict`]
    /// takes back.
    ///
    /// # Errors
    /// When the device cannot copy.
    fn state_dict(&self) -> Result<Vec<(String, Tensor<B>)>> {
        let mut entries = Vec::new();
        let mut counts = Vec::new();
        let mut failure = None;
        let mut push = |name: &str, copy: Result<Tensor<B>>| match copy {
            Ok(tensor) => entries.push((name.to_owned(), tensor)),
            Err(error) => {
                failure.get_or_insert(error);
            }
        };
        self.visit_params(&mut |name, param| push(name, param.value().try_clone()));
        self.visit_buffers(&mut |name, buffer| match buffer {
            Buffer::Tensor(tensor) => push(name, tensor.try_clone()),
            Buffer::Count(count) => counts.push((name.to_owned(), count)),
        });
        if let Some(error) = failure {
            return Err(error);
        }
        for (name, count) in counts {
            let Some(device) = entries.first().map(|(_, t)| t.device().clone()) else {
                return Err(Error::Usage(format!(
                    "state_dict: the count `{name}` belongs to a module without tensors"
                )));
            };
            // Counts below 2^24 are exact in an `f32`.
            let scalar = Tensor::try_from_vec(vec![count as f32], [0usize; 0], &device)?;
            entries.push((name, scalar));
        }
        Ok(entries)
    }

    /// Loads every parameter and buffer from named tensors in memory, which must be exactly
    /// the module's, like `load_state_dict(state_dict)`: to copy weights between networks
    /// (`other.state_dict()`), or to set them from computed tensors. Counts load from a
    /// whole-valued scalar.
    ///
    /// # Errors
    /// [`Error::TensorNames`], [`Error::TensorShapes`] and [`Error::DuplicateName`] as
    /// [`ModuleIo::load_from_bytes`]; [`Error::Usage`] for a count that is not a whole
    /// number; a device error from copying. The module is left unchanged on error.
    fn load_state_dict(&mut self, tensors: &[(&str, &Tensor<B>)]) -> Result<()> {
        let entries = tensors
            .iter()
            .map(|&(name, tensor)| (name.to_owned(), Source::Memory(tensor)))
            .collect::<Vec<_>>();
        load_into(self, "load_state_dict", &entries, Match::Exact).map(drop)
    }
}

impl<B: Backend, M: Module<B> + ?Sized> ModuleIo<B> for M {}

/// How a load matches the module's entries to the source's tensors.
#[derive(Clone, Copy)]
enum Match<'m> {
    /// By name, each entry to one tensor and each tensor to one entry.
    Exact,
    /// By name, skipping what either side lacks.
    Partial,
    /// Entry `name` to tensor `map(name)`; tensors no entry maps to are ignored.
    Mapped(&'m dyn Fn(&str) -> String),
}

/// A tensor to load: in a parsed file, or in memory.
enum Source<'s, B: Backend> {
    File(&'s RawTensor<'s>),
    Memory(&'s Tensor<B>),
}

impl<B: Backend> Source<'_, B> {
    fn shape(&self) -> &Shape {
        match self {
            Source::File(raw) => &raw.shape,
            Source::Memory(tensor) => tensor.shape(),
        }
    }

    /// The tensor as `shape` on `device`.
    fn to_tensor(&self, op: &'static str, shape: Shape, device: &B) -> Result<Tensor<B>> {
        let data = match self {
            Source::File(raw) => safetensors::to_f32(op, raw)?,
            Source::Memory(tensor) => tensor.try_to_vec()?,
        };
        Tensor::try_from_vec(data, shape, device)
    }

    /// The scalar as a count.
    fn to_count(&self, op: &'static str, name: &str) -> Result<i64> {
        match self {
            Source::File(raw) => Ok(safetensors::to_i64(op, raw)?[0]),
            Source::Memory(tensor) => {
                let value = tensor.try_item()?;
                if value.fract() == 0.0 && value.abs() < 2f32.powi(63) {
                    Ok(value as i64)
                } else {
                    Err(Error::Usage(format!(
                        "{op}: `{name}` is a count, but the tensor holds {value}"
                    )))
                }
            }
        }
    }
}

/// What a module holds under one name: a tensor (a parameter or a buffer) on its device, or
/// a count.
enum Slot<B: Backend> {
    Tensor(B),
    Count,
}

/// A value validated and ready to assign.
enum Loaded<B: Backend> {
    Tensor(Tensor<B>),
    Count(i64),
}

/// Parses `bytes` and loads them into `module` as [`load_into`] does.
fn load_file<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    op: &'static str,
    bytes: &[u8],
    path: Option<&Path>,
    matching: Match<'_>,
) -> Result<PartialLoad> {
    let parsed = safetensors::parse(op, bytes, path)?;
    check_config(module, op, &parsed.metadata, &matching)?;
    let entries = parsed
        .tensors
        .iter()
        .map(|raw| (raw.name.clone(), Source::File(raw)))
        .collect::<Vec<_>>();
    load_into(module, op, &entries, matching)
}

/// Fails when the file's metadata records a setting of `module` (under the name `matching`
/// gives it) with another value; a file without it (PyTorch's) cannot say and passes.
fn check_config<B: Backend, M: Module<B> + ?Sized>(
    module: &M,
    op: &'static str,
    metadata: &Metadata,
    matching: &Match<'_>,
) -> Result<()> {
    let mut mismatch = None;
    module.visit_config(&mut |name, value| {
        let key = match matching {
            Match::Mapped(file_name) => file_name(name),
            Match::Exact | Match::Partial => name.to_owned(),
        };
        if let Some(in_file) = metadata.get(&key)
            && *in_file != value
            && mismatch.is_none()
        {
            mismatch = Some(Error::ConfigMismatch {
                op,
                name: name.to_owned(),
                in_file: in_file.clone(),
                in_module: value,
            });
        }
    });
    mismatch.map_or(Ok(()), Err)
}

/// Validates `sources` against `module` (names, shapes, element types), converts every value
/// and puts it on its device, and only then assigns them all.
fn load_into<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    op: &'static str,
    sources: &[(String, Source<'_, B>)],
    matching: Match<'_>,
) -> Result<PartialLoad> {
    // What the module expects: names in visiting order, shapes, and where each value goes.
    let mut expected: Vec<(String, Shape, Slot<B>)> = Vec::new();
    module.visit_params(&mut |name, param| {
        let value = param.value();
        let slot = Slot::Tensor(value.device().clone());
        expected.push((name.to_owned(), value.shape().clone(), slot));
    });
    module.visit_buffers(&mut |name, buffer| {
        expected.push(match buffer {
            Buffer::Tensor(tensor) => (
                name.to_owned(),
                tensor.shape().clone(),
                Slot::Tensor(tensor.device().clone()),
            ),
            Buffer::Count(_) => (name.to_owned(), Shape::from([0usize; 0]), Slot::Count),
        });
    });
    let mut names = HashSet::new();
    for (name, _, _) in &expected {
        if !names.insert(name.as_str()) {
            return Err(Error::DuplicateName {
                op,
                name: name.clone(),
            });
        }
    }
    let mut in_source: HashMap<&str, &Source<'_, B>> = HashMap::new();
    for (name, source) in sources {
        if in_source.insert(name.as_str(), source).is_some() {
            return Err(Error::DuplicateName {
                op,
                name: name.clone(),
            });
        }
    }

    // Each entry's name in the source.
    let source_name = |name: &str| match matching {
        Match::Mapped(map) => map(name),
        Match::Exact | Match::Partial => name.to_owned(),
    };
    let wanted: Vec<String> = expected
        .iter()
        .map(|(name, _, _)| source_name(name))
        .collect();
    let missing: Vec<(String, Shape)> = expected
        .iter()
        .zip(&wanted)
        .filter(|(_, wanted)| !in_source.contains_key(wanted.as_str()))
        .map(|((name, shape, _), wanted)| match matching {
            Match::Mapped(_) => (wanted.clone(), shape.clone()),
            Match::Exact | Match::Partial => (name.clone(), shape.clone()),
        })
        .collect();
    let reached: HashSet<&str> = wanted.iter().map(String::as_str).collect();
    let unexpected: Vec<(String, Shape)> = sources
        .iter()
        .filter(|(name, _)| !reached.contains(name.as_str()))
        .map(|(name, source)| (name.clone(), source.shape().clone()))
        .collect();
    let strict_names = match matching {
        Match::Exact => !(missing.is_empty() && unexpected.is_empty()),
        Match::Mapped(_) => !missing.is_empty(),
        Match::Partial => false,
    };
    if strict_names {
        let unexpected = match matching {
            Match::Mapped(_) => Vec::new(),
            Match::Exact | Match::Partial => unexpected.clone(),
        };
        return Err(Error::TensorNames {
            op,
            missing,
            unexpected,
        });
    }

    let mut mismatches = Vec::new();
    for ((name, shape, _), wanted) in expected.iter().zip(&wanted) {
        if let Some(source) = in_source.get(wanted.as_str())
            && source.shape() != shape
        {
            mismatches.push((name.clone(), source.shape().clone(), shape.clone()));
        }
    }
    if !mismatches.is_empty() {
        return Err(Error::TensorShapes { op, mismatches });
    }

    let mut loaded: HashMap<String, Loaded<B>> = HashMap::new();
    for ((name, shape, slot), wanted) in expected.into_iter().zip(&wanted) {
        if let Some(source) = in_source.get(wanted.as_str()) {
            let value = match slot {
                Slot::Tensor(device) => Loaded::Tensor(source.to_tensor(op, shape, &device)?),
                Slot::Count => Loaded::Count(source.to_count(op, &name)?),
            };
            loaded.insert(name, value);
        }
    }

    // Everything is validated and on its device: assign.
    let mut failure = None;
    module.visit_params_mut(&mut |name, param: &mut Param<B>| {
        if let Some(Loaded::Tensor(tensor)) = loaded.remove(name)
            && let Err(error) = param.set_value(tensor)
        {
            // Only a module whose two visitors disagree on shapes gets here.
            failure.get_or_insert(error);
        }
    });
    module.visit_buffers_mut(&mut |name, buffer| match (buffer, loaded.remove(name)) {
        (BufferMut::Tensor(tensor), Some(Loaded::Tensor(value))) => *tensor = value,
        (BufferMut::Count(count), Some(Loaded::Count(value))) => *count = value,
        _ => {}
    });
    if let Some(error) = failure {
        return Err(error);
    }
    let names = |list: Vec<(String, Shape)>| list.into_iter().map(|(name, _)| name).collect();
    Ok(PartialLoad {
        missing: names(missing),
        unexpected: names(unexpected),
    })
}

fn read(op: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io_error(op, "read", path, &e))
}

fn write(op: &'static str, path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| io_error(op, "write", path, &e))
}

fn io_error(op: &'static str, action: &'static str, path: &Path, error: &std::io::Error) -> Error {
    Error::Io {
        op,
        action,
        path: path.to_path_buf(),
        kind: error.kind(),
        message: error.to_string(),
    }
}
