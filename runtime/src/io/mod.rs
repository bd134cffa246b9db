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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::module::Module;
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
                tensor.try_to_vec()?,
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
    /// The parameters as the bytes of a safetensors file (`F32`, metadata `{"format": "pt"}`).
    ///
    /// # Errors
    /// [`Error::DuplicateName`] when two parameters share a name; a device error from
    /// downloading.
    fn save_to_bytes(&self) -> Result<Vec<u8>> {
        let mut records = Vec::new();
        let mut failure = None;
        self.visit_params(&mut |name, param| match param.value().try_to_vec() {
            Ok(data) => records.push((name.to_owned(), param.value().shape().clone(), data)),
            Err(error) => {
                failure.get_or_insert(error);
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        let metadata = Metadata::from([(FORMAT.0.to_owned(), FORMAT.1.to_owned())]);
        safetensors::encode("save", &records, &metadata)
    }

    /// Writes the parameters to a safetensors file at `path`, like
    /// `safetensors.torch.save_file(model.state_dict(), path)`.
    ///
    /// # Errors
    /// As [`ModuleIo::save_to_bytes`], and [`Error::Io`] when the file cannot be written.
    fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.save_to_bytes()?;
        write("save", path.as_ref(), &bytes)
    }

    /// Loads every parameter from the bytes of a safetensors file that holds exactly the
    /// module's parameters, like `load_state_dict(..)`.
    ///
    /// # Errors
    /// On any error the module is left unchanged:
    /// [`Error::InvalidFile`] for bytes that are not a valid safetensors file (nothing panics,
    /// whatever the bytes); [`Error::TensorNames`] listing every parameter the file lacks and
    /// every tensor the module does not expect; [`Error::TensorDtype`] for an element type
    /// other than `F32`, `F64`, `F16` or `BF16`; [`Error::TensorShapes`] listing every
    /// misshaped tensor; [`Error::DuplicateName`] when two parameters share a name; a device
    /// error from uploading.
    fn load_from_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        load_into(self, "load", bytes, None, true).map(drop)
    }

    /// Loads every parameter from the safetensors file at `path`, which must hold exactly the
    /// module's parameters.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, and as [`ModuleIo::load_from_bytes`]; the
    /// module is left unchanged.
    fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = read("load", path)?;
        load_into(self, "load", &bytes, Some(path), true).map(drop)
    }

    /// Loads the parameters the file has, like `load_state_dict(.., strict=False)`: tensors the
    /// module does not expect are ignored, parameters the file lacks keep their values, and
    /// both are listed in the returned [`PartialLoad`].
    ///
    /// # Errors
    /// As [`ModuleIo::load_from_bytes`] except [`Error::TensorNames`]; a tensor that matches a
    /// parameter's name must still have its shape and a float element type. The module is left
    /// unchanged on error.
    fn load_partial_from_bytes(&mut self, bytes: &[u8]) -> Result<PartialLoad> {
        load_into(self, "load_partial", bytes, None, false)
    }

    /// [`ModuleIo::load_partial_from_bytes`] on the file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, and as
    /// [`ModuleIo::load_partial_from_bytes`]; the module is left unchanged.
    fn load_partial(&mut self, path: impl AsRef<Path>) -> Result<PartialLoad> {
        let path = path.as_ref();
        let bytes = read("load_partial", path)?;
        load_into(self, "load_partial", &bytes, Some(path), false)
    }
}

impl<B: Backend, M: Module<B> + ?Sized> ModuleIo<B> for M {}

/// Validates `bytes` against `module`, uploads every tensor, and only then assigns them.
fn load_into<B: Backend, M: Module<B> + ?Sized>(
    module: &mut M,
    op: &'static str,
    bytes: &[u8],
    path: Option<&Path>,
    strict: bool,
) -> Result<PartialLoad> {
    let parsed = safetensors::parse(op, bytes, path)?;

    // What the module expects: names in visiting order, shapes, and the device to load onto.
    let mut expected: Vec<(String, Shape, B)> = Vec::new();
    module.visit_params(&mut |name, param| {
        let value = param.value();
        expected.push((
            name.to_owned(),
            value.shape().clone(),
            value.device().clone(),
        ));
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

    let in_file: HashMap<&str, &safetensors::RawTensor<'_>> = parsed
        .tensors
        .iter()
        .map(|raw| (raw.name.as_str(), raw))
        .collect();
    let missing: Vec<(String, Shape)> = expected
        .iter()
        .filter(|(name, _, _)| !in_file.contains_key(name.as_str()))
        .map(|(name, shape, _)| (name.clone(), shape.clone()))
        .collect();
    let unexpected: Vec<(String, Shape)> = parsed
        .tensors
        .iter()
        .filter(|raw| !names.contains(raw.name.as_str()))
        .map(|raw| (raw.name.clone(), raw.shape.clone()))
        .collect();
    if strict && !(missing.is_empty() && unexpected.is_empty()) {
        return Err(Error::TensorNames {
            op,
            missing,
            unexpected,
        });
    }

    let mut mismatches = Vec::new();
    for (name, shape, _) in &expected {
        if let Some(raw) = in_file.get(name.as_str())
            && raw.shape != *shape
        {
            mismatches.push((name.clone(), raw.shape.clone(), shape.clone()));
        }
    }
    if !mismatches.is_empty() {
        return Err(Error::TensorShapes { op, mismatches });
    }

    let mut loaded: HashMap<String, Tensor<B>> = HashMap::new();
    for (name, shape, device) in expected {
        if let Some(raw) = in_file.get(name.as_str()) {
            let data = safetensors::to_f32(op, raw)?;
            loaded.insert(name, Tensor::try_from_vec(data, shape, &device)?);
        }
    }

    // Everything is validated and on its device: assign.
    let mut failure = None;
    module.visit_params_mut(&mut |name, param: &mut Param<B>| {
        if let Some(tensor) = loaded.remove(name)
            && let Err(error) = param.set_value(tensor)
        {
            // Only a module whose two visitors disagree on shapes gets here.
            failure.get_or_insert(error);
        }
    });
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(PartialLoad {
        missing: missing.into_iter().map(|(name, _)| name).collect(),
        unexpected: unexpected.into_iter().map(|(name, _)| name).collect(),
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
