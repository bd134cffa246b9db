//! The runtime's one error type: every variant names the op and the shapes involved.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::shape::Shape;

/// A result whose error is the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a tensor operation.
///
/// Messages follow rustc's style: lowercase, the op first, then both shapes.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `mm` operands whose inner dimensions differ.
    #[error("{op}: cannot multiply {lhs} by {rhs}: inner dims {} and {} differ", lhs.dims()[1], rhs.dims()[0])]
    MatmulInnerDims {
        /// The operation.
        op: &'static str,
        /// Shape of the left operand, as the product sees it (after any transpose).
        lhs: Shape,
        /// Shape of the right operand, as the product sees it.
        rhs: Shape,
    },
    /// Two shapes that PyTorch's broadcasting rules reject.
    #[error(
        "{op}: cannot broadcast {lhs} with {rhs}: sizes {lhs_size} and {rhs_size} differ at dim {dim}"
    )]
    Broadcast {
        /// The operation.
        op: &'static str,
        /// Shape of the left operand.
        lhs: Shape,
        /// Shape of the right operand.
        rhs: Shape,
        /// The dimension (counted in the longer shape) where they disagree.
        dim: usize,
        /// The left size at `dim`.
        lhs_size: usize,
        /// The right size at `dim`.
        rhs_size: usize,
    },
    /// An op that needs a tensor of one exact shape (no broadcasting), like a gradient of its
    /// output or a saved value of the same shape.
    #[error("{op}: expected shape {expected}, found {found}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// The shape the op needs.
        expected: Shape,
        /// The shape it was given.
        found: Shape,
    },
    /// An in-place op whose broadcast result does not have the shape of the tensor it writes.
    #[error("{op}: cannot write a result of shape {result} into a tensor of shape {target}")]
    InPlaceShape {
        /// The operation.
        op: &'static str,
        /// Shape of the tensor written in place.
        target: Shape,
        /// Shape the broadcast result would have.
        result: Shape,
    },
    /// An op that needs a tensor of a given rank.
    #[error("{op}: expected a {expected}-D tensor, found shape {found}")]
    Rank {
        /// The operation.
        op: &'static str,
        /// The rank the op needs.
        expected: usize,
        /// The shape it was given.
        found: Shape,
    },
    /// Data whose length does not fit the shape it is meant to fill.
    #[error("{op}: shape {shape} holds {} elements, but {len} were given", shape.numel())]
    Length {
        /// The operation.
        op: &'static str,
        /// The shape asked for.
        shape: Shape,
        /// The number of elements given.
        len: usize,
    },
    /// A shape whose element count overflows `usize`.
    #[error("{op}: shape {shape} has more elements than fit in memory")]
    TooLarge {
        /// The operation.
        op: &'static str,
        /// The shape asked for.
        shape: Shape,
    },
    /// `item` (or another scalar read) on a tensor with more or fewer than one element.
    #[error("{op}: expected a tensor with one element, found shape {shape}")]
    NotScalar {
        /// The operation.
        op: &'static str,
        /// The shape it was given.
        shape: Shape,
    },
    /// A dimension index past the rank of the tensor.
    #[error("{op}: dim {dim} is out of range for shape {shape}")]
    DimOutOfRange {
        /// The operation.
        op: &'static str,
        /// The dimension asked for.
        dim: usize,
        /// The tensor's shape.
        shape: Shape,
    },
    /// A reshape that changes the number of elements.
    #[error("{op}: cannot reshape {from} ({} elements) into {to} ({} elements)", from.numel(), to.numel())]
    Reshape {
        /// The operation.
        op: &'static str,
        /// The tensor's shape.
        from: Shape,
        /// The requested shape.
        to: Shape,
    },
    /// A network input whose shape does not match the declared one.
    #[error("{network}: input `{input}` must have shape {declared}, found {found}: {detail}")]
    InputShape {
        /// The network and method, like `TwoLayerNet::forward`.
        network: &'static str,
        /// The input's name.
        input: &'static str,
        /// The declared shape, with named dims, like `[B, 1000]`.
        declared: String,
        /// The shape passed in.
        found: Shape,
        /// Which dim disagrees and why.
        detail: String,
    },
    /// A backward pass given an output gradient whose shape is not the output's.
    #[error("{network}: `grad_out` must have the output's shape {expected}, found {found}")]
    GradShape {
        /// The network and method, like `TwoLayerNet::backward`.
        network: &'static str,
        /// The output's shape.
        expected: Shape,
        /// The gradient's shape.
        found: Shape,
    },
    /// A custom [`Function`](crate::function::Function) whose output shape is not its input's.
    #[error(
        "custom function `{function}` must keep its input's shape {input}, but returned {output}"
    )]
    FunctionShape {
        /// The function's name.
        function: &'static str,
        /// The input's shape.
        input: Shape,
        /// The output's shape.
        output: Shape,
    },
    /// A program given arguments it cannot use.
    #[error("usage: {0}")]
    Usage(String),
    /// Operands that live on different devices.
    #[error("{op}: operands are on different devices ({lhs} and {rhs})")]
    DeviceMismatch {
        /// The operation.
        op: &'static str,
        /// The left operand's device.
        lhs: String,
        /// The right operand's device.
        rhs: String,
    },
    /// A loss whose prediction and target (or upstream gradient) have different shapes.
    #[error("{op}: prediction has shape {input}, but {what} has shape {other}")]
    LossShapes {
        /// The loss.
        op: &'static str,
        /// Shape of the prediction.
        input: Shape,
        /// What does not fit: `target`, `grad_out`.
        what: &'static str,
        /// Its shape.
        other: Shape,
    },
    /// A loss given a batch with no samples (its mean would be NaN).
    #[error("{op}: empty batch: prediction has shape {input}")]
    EmptyBatch {
        /// The loss.
        op: &'static str,
        /// Shape of the prediction.
        input: Shape,
    },
    /// A class-index loss given as many labels as there are rows.
    #[error("{op}: prediction {input} has {} rows, but {labels} labels were given", input.dims().first().copied().unwrap_or(0))]
    LabelCount {
        /// The loss.
        op: &'static str,
        /// Shape of the prediction, `[batch, classes]`.
        input: Shape,
        /// The number of labels.
        labels: usize,
    },
    /// A class index not below the number of classes.
    #[error("{op}: label {label} at index {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The loss.
        op: &'static str,
        /// Position of the label in the batch.
        index: usize,
        /// The label.
        label: usize,
        /// The number of classes (columns of the prediction).
        classes: usize,
    },
    /// A value that should be finite (a loss checked with `check_finite`) is NaN or infinite.
    #[error("{op}: {count} of {total} values are not finite (first: {first})")]
    NonFinite {
        /// The check.
        op: &'static str,
        /// How many values are NaN or infinite.
        count: usize,
        /// How many values were checked.
        total: usize,
        /// The first non-finite value, as printed (`NaN`, `inf`, `-inf`).
        first: String,
    },
    /// A hyper-parameter PyTorch rejects too (a negative learning rate, `beta1 >= 1`).
    #[error("{op}: invalid {name}: {message}")]
    HyperParameter {
        /// The optimizer or scheduler.
        op: &'static str,
        /// The hyper-parameter.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Optimizer state that does not fit the model or the optimizer it is used with.
    #[error("{op}: {message}")]
    OptimizerState {
        /// The optimizer.
        op: &'static str,
        /// What does not fit, naming the parameter.
        message: String,
    },
    /// A failure reported by the backend itself (a driver error, an allocation failure).
    #[error("{op}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The backend's message.
        message: String,
    },
    /// [`Cuda::new`](crate::Cuda::new) in a build without the `cuda` feature.
    #[error(
        "cuda: declnet was built without CUDA support; rebuild with `--features cuda` to use `Cuda`"
    )]
    CudaNotCompiled,
    /// [`Mpi::init`](crate::distributed::Mpi::init) in a build without the `mpi` feature.
    #[error(
        "mpi: declnet was built without MPI support; rebuild with `--features mpi` to use `Mpi`"
    )]
    MpiNotCompiled,
    /// `Nccl` in a build without the `nccl` feature.
    #[error(
        "nccl: declnet was built without NCCL support; rebuild with `--features nccl` to use `Nccl`"
    )]
    NcclNotCompiled,
    /// Ranks of a data-parallel job that cannot work together (different networks), or a
    /// collective that failed.
    #[error("{op}: {message}")]
    Distributed {
        /// The operation.
        op: &'static str,
        /// What went wrong, naming the ranks.
        message: String,
    },
    /// A file that cannot be read or written.
    #[error("{op}: cannot {action} `{}`: {message}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// What was attempted: `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The kind of I/O failure.
        kind: std::io::ErrorKind,
        /// The operating system's message.
        message: String,
    },
    /// Bytes that are not a well-formed safetensors file (truncated, corrupt, or a header that
    /// disagrees with the data).
    #[error("{op}: {} is not a valid safetensors file: {message}", describe_source(path.as_deref()))]
    InvalidFile {
        /// The operation.
        op: &'static str,
        /// The file, when the bytes came from one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        message: String,
    },
    /// Tensors the module expects that the file lacks, and tensors in the file the module
    /// does not expect, each with its shape.
    #[error("{}", describe_names(op, missing, unexpected))]
    TensorNames {
        /// The operation.
        op: &'static str,
        /// Names (and the shapes the module expects) missing from the file.
        missing: Vec<(String, Shape)>,
        /// Names (and their shapes in the file) the module has no parameter for.
        unexpected: Vec<(String, Shape)>,
    },
    /// Tensors whose shape in the file differs from the parameter they are loaded into.
    #[error("{}", describe_shapes(op, mismatches))]
    TensorShapes {
        /// The operation.
        op: &'static str,
        /// Each misshaped tensor: its name, its shape in the file, the shape expected.
        mismatches: Vec<(String, Shape, Shape)>,
    },
    /// A tensor stored with an element type that cannot be converted to `f32`.
    #[error("{op}: tensor `{name}` {shape} is stored as {dtype}; only {readable} can be loaded")]
    TensorDtype {
        /// The operation.
        op: &'static str,
        /// The tensor's name.
        name: String,
        /// Its shape in the file.
        shape: Shape,
        /// Its element type, as safetensors names it (`I64`, `U8`, ...).
        dtype: String,
        /// The element types the op reads there: `F32, F64, F16 and BF16` for floats.
        readable: &'static str,
    },
    /// Tensors that safetensors cannot encode (a header over its 100 MB limit).
    #[error("{op}: cannot encode the tensors as safetensors: {message}")]
    Serialize {
        /// The operation.
        op: &'static str,
        /// safetensors' message.
        message: String,
    },
    /// A setting the file's metadata records with another value than the module's (a model
    /// with another head count saved it).
    #[error("{op}: `{name}` is {in_file} in the file, but the module has {in_module}")]
    ConfigMismatch {
        /// The operation.
        op: &'static str,
        /// The setting's `state_dict` name, like `blocks.0.attn.num_heads`.
        name: String,
        /// Its value in the file's metadata.
        in_file: String,
        /// Its value in the module.
        in_module: String,
    },
    /// Two tensors (or two parameters of one module) with the same name.
    #[error("{op}: two tensors are named `{name}`")]
    DuplicateName {
        /// The operation.
        op: &'static str,
        /// The repeated name.
        name: String,
    },
}

fn describe_source(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("`{}`", path.display()),
        None => "the buffer".to_owned(),
    }
}

/// `` `a` [2, 3], `b` [3] ``
fn describe_list(tensors: &[(String, Shape)]) -> String {
    let mut out = String::new();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}`{name}` {shape}");
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn describe_names(op: &str, missing: &[(String, Shape)], unexpected: &[(String, Shape)]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "the file lacks {} tensor{} the module expects: {}",
            missing.len(),
            plural(missing.len()),
            describe_list(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "the file has {} tensor{} the module does not expect: {}",
            unexpected.len(),
            plural(unexpected.len()),
            describe_list(unexpected)
        ));
    }
    format!("{op}: {}", parts.join("; "))
}

fn describe_shapes(op: &str, mismatches: &[(String, Shape, Shape)]) -> String {
    let parts: Vec<String> = mismatches
        .iter()
        .map(|(name, found, expected)| {
            format!(
                "tensor `{name}` has shape {found} in the file, but the module expects {expected}"
            )
        })
        .collect();
    format!("{op}: {}", parts.join("; "))
}

/// Debug-formats as the message, so `fn main() -> Result<()>` and `unwrap` print what went
/// wrong rather than the variant's fields.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Unwraps `result`, panicking with the error's message at the caller's location.
///
/// The convenient (non-`try_`) forms of every op go through this, so their panics read exactly
/// like the `Err` of the checked form.
#[track_caller]
pub(crate) fn or_panic<T>(result: Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_message_names_both_shapes_and_inner_dims() {
        let error = Error::MatmulInnerDims {
            op: "mm",
            lhs: Shape::from([64, 1000]),
            rhs: Shape::from([999, 100]),
        };
        assert_eq!(
            error.to_string(),
            "mm: cannot multiply [64, 1000] by [999, 100]: inner dims 1000 and 999 differ"
        );
    }

    #[test]
    #[should_panic(expected = "item: expected a tensor with one element, found shape [2]")]
    fn or_panic_panics_with_the_message() {
        or_panic::<()>(Err(Error::NotScalar {
            op: "item",
            shape: Shape::from([2]),
        }));
    }
}
