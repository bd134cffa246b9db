//! The lowered network: fields, inputs, and the forward pass as a list of SSA nodes in
//! evaluation order. Every node keeps the span it came from and a description of where its
//! value comes from, for error messages.

use std::collections::HashSet;
use std::fmt;

use proc_macro2::{Span, TokenStream};
use syn::{Attribute, Ident, Visibility};

use crate::elementwise::MapOp;
use crate::layers::LayerRule;

/// A dim of a shape the macro reasons about.
#[derive(Clone, Debug)]
pub struct Dim {
    pub kind: DimKind,
    pub span: Span,
}

/// What a dim is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DimKind {
    /// A number written in the declaration.
    Lit(usize),
    /// A const generic of the network, known when rustc instantiates it.
    Const(String),
    /// A name bound at run time from the inputs (the batch `B`).
    Named(String),
    /// A constant of a nested network type (`INPUT_RANK`, `IN_FEATURES` or `OUT_FEATURES` of
    /// its `LayerShape`), known to rustc only.
    Extern { ty: String, constant: &'static str },
}

impl Dim {
    pub fn lit(value: usize, span: Span) -> Self {
        Self {
            kind: DimKind::Lit(value),
            span,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DimKind::Lit(value) => write!(f, "{value}"),
            DimKind::Const(name) | DimKind::Named(name) => f.write_str(name),
            DimKind::Extern { ty, constant } => write!(f, "{ty}::{constant}"),
        }
    }
}

/// A symbolic shape, displayed like `[B, 100]`.
#[derive(Clone, Debug)]
pub struct Shape(pub Vec<Dim>);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, dim) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{dim}")?;
        }
        f.write_str("]")
    }
}

/// A field of the generated struct, or a stateless layer that only has a name.
pub struct Field {
    pub attrs: Vec<Attribute>,
    /// The Rust field name.
    pub ident: Ident,
    /// The index in a list of layers (`blocks: [Block; 4]`), whose elements share the ident.
    pub element: Option<usize>,
    /// The `state_dict` prefix (`linear1`, `blocks.2`, or `0` for the first layer of a
    /// sequential network).
    pub state_name: String,
    pub kind: FieldKind,
    /// The declaration's tokens, for errors that point at it.
    pub decl: TokenStream,
}

impl Field {
    /// The field as code after `self.`: `fc`, or `blocks[2]` for a list's element.
    pub fn access(&self) -> TokenStream {
        let ident = &self.ident;
        match self.element {
            Some(index) => {
                let index = proc_macro2::Literal::usize_unsuffixed(index);
                quote::quote!(#ident[#index])
            }
            None => quote::quote!(#ident),
        }
    }

    /// The field as the user names it in messages: `fc`, `blocks[2]`.
    pub fn display_name(&self) -> String {
        match self.element {
            Some(index) => format!("{}[{index}]", self.ident),
            None => self.ident.to_string(),
        }
    }
}

/// What a field holds.
pub enum FieldKind {
    /// A layer with state, a runtime `Layer` (`Linear<784, 128>`, a nested network), and the
    /// rule that knows its shapes, type and initialisation.
    Layer(Box<dyn LayerRule>),
    /// `Param<[dims]>`: a raw trainable tensor, N(0, 1) at init like `torch.randn`.
    Param { shape: Shape },
    /// A layer without parameters, so without a struct field: it lowers to an op.
    Stateless(StatelessLayer),
}

/// A layer without parameters (`ReLU`, `Flatten`, `MaxPool2d<2>`): applying it is applying
/// its op, so it has no struct field, no parameters and no runtime type.
pub enum StatelessLayer {
    /// An elementwise layer (`ReLU`, `LeakyReLU<0.2>`).
    Map(MapOp),
    /// `Softmax<dim>` or, when `log`, `LogSoftmax<dim>`; `dim` may count from the end
    /// (`-1`) and is checked against the input's rank where the layer is applied.
    Softmax { dim: isize, log: bool },
    /// `Flatten` (`Flatten<start>`, `Flatten<start, end>`): dims `start..=end` merged into one,
    /// counted from the end when negative.
    Flatten { start: isize, end: isize },
    /// `MaxPool2d<kernel, stride, padding>` or `AvgPool2d<..>`.
    Pool(PoolSpec),
    /// `AdaptiveAvgPool2d<height, width>`: average pooling to an output of that size, lowered
    /// to an `AvgPool2d` whose windows are PyTorch's adaptive ones.
    AdaptiveAvgPool { height: usize, width: usize },
}

impl StatelessLayer {
    /// The layer as the user would write it: `ReLU`, `Softmax<-1>`, `Flatten<1, 2>`.
    pub fn layer_name(&self) -> String {
        match self {
            StatelessLayer::Map(op) => op.layer_name(),
            StatelessLayer::Pool(pool) => pool.layer_name(),
            StatelessLayer::AdaptiveAvgPool { height, width } => {
                format!("AdaptiveAvgPool2d<{height}, {width}>")
            }
            StatelessLayer::Flatten { start: 1, end: -1 } => "Flatten".to_owned(),
            StatelessLayer::Flatten { start, end } => format!("Flatten<{start}, {end}>"),
            StatelessLayer::Softmax { dim, log } => format!("{}<{dim}>", softmax_name(*log)),
        }
    }
}

/// The layer name of a softmax, or of a log-softmax when `log`.
pub fn softmax_name(log: bool) -> &'static str {
    if log { "LogSoftmax" } else { "Softmax" }
}

/// A 2-D pooling of square windows, PyTorch's (`ceil_mode=False`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// Max pooling, else average pooling.
    pub max: bool,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolSpec {
    /// PyTorch's defaults: the stride is the kernel, the padding 0.
    pub fn new(max: bool, kernel: usize, stride: Option<usize>, padding: Option<usize>) -> Self {
        Self {
            max,
            kernel,
            stride: stride.unwrap_or(kernel),
            padding: padding.unwrap_or(0),
        }
    }

    /// The layer type as the user would write it: `MaxPool2d<2>`, `AvgPool2d<3, 2, 1>`.
    pub fn layer_name(&self) -> String {
        let name = if self.max { "MaxPool2d" } else { "AvgPool2d" };
        match (self.stride == self.kernel, self.padding) {
            (true, 0) => format!("{name}<{}>", self.kernel),
            (_, 0) => format!("{name}<{}, {}>", self.kernel, self.stride),
            _ => format!("{name}<{}, {}, {}>", self.kernel, self.stride, self.padding),
        }
    }

    /// The output size along a spatial dim of `size`, or why the windows do not fit it:
    /// `floor((size + 2 padding - kernel) / stride) + 1`.
    pub fn output_size(&self, size: usize) -> Result<usize, String> {
        let padded = size + 2 * self.padding;
        if self.kernel == 0 || self.stride == 0 {
            Err("the kernel and the stride must be positive".to_owned())
        } else if 2 * self.padding > self.kernel {
            Err(format!(
                "padding {} is more than half the kernel {}",
                self.padding, self.kernel
            ))
        } else if self.kernel > padded {
            Err(format!(
                "the kernel {} is larger than the padded input, {size} + 2*{} = {padded}",
                self.kernel, self.padding
            ))
        } else {
            Ok((padded - self.kernel) / self.stride + 1)
        }
    }
}

impl FieldKind {
    /// Whether the field holds parameters (and so is a struct field).
    pub fn has_state(&self) -> bool {
        !matches!(self, FieldKind::Stateless(_))
    }
}

/// Index of a node in [`Network::nodes`].
pub type ValueId = usize;

/// A binary elementwise op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

impl BinaryOp {
    pub fn verb(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "subtract",
            BinaryOp::Mul => "multiply",
            BinaryOp::Div => "divide",
            BinaryOp::Maximum => "take the maximum of",
            BinaryOp::Minimum => "take the minimum of",
        }
    }

    /// The runtime's `BinaryOp` variant.
    pub fn variant(self) -> &'static str {
        match self {
            BinaryOp::Add => "Add",
            BinaryOp::Sub => "Sub",
            BinaryOp::Mul => "Mul",
            BinaryOp::Div => "Div",
            BinaryOp::Maximum => "Maximum",
            BinaryOp::Minimum => "Minimum",
        }
    }
}

/// One step of the forward pass.
pub enum Op {
    /// The forward function's `index`th input.
    Input(usize),
    /// A `Param` field's value.
    Param(usize),
    /// A layer field applied to `x`.
    Layer { field: usize, x: ValueId },
    /// An `Embedding` field looking up index input `ids`.
    Embed { field: usize, ids: usize },
    /// An elementwise op applied to `x`, by a layer (`layer`), a method or an operator.
    Map {
        op: MapOp,
        x: ValueId,
        layer: Option<usize>,
    },
    /// `a op b` with broadcasting.
    Binary {
        op: BinaryOp,
        a: ValueId,
        b: ValueId,
    },
    /// `op(a) x op(b)`, each operand optionally read with its last two dims swapped: `.mm()`
    /// of matrices, or `.matmul()` of tensors of one rank whose leading (batch) dims agree.
    Mm {
        a: ValueId,
        a_t: bool,
        b: ValueId,
        b_t: bool,
    },
    /// `x` with its dims reordered, copied: output dim `i` is input dim `order[i]`
    /// (`.permute()`, `.transpose()`, or `.t()` used as a value of its own).
    Permute { x: ValueId, order: Vec<usize> },
    /// `x.narrow(dim, start, len)`, or one part of a `.split()` / `.chunk()`.
    Narrow {
        x: ValueId,
        dim: usize,
        start: usize,
    },
    /// `x.causal_mask()`: the entries above the diagonal of the last two dims set to `-inf`.
    CausalMask { x: ValueId },
    /// `x.softmax(dim)`, or `x.log_softmax(dim)` when `log`, by a `Softmax` layer (`layer`)
    /// or a method; `dim` is already non-negative.
    Softmax {
        x: ValueId,
        dim: usize,
        log: bool,
        layer: Option<usize>,
    },
    /// `x` under the node's shape, with as many elements: `.flatten()`, `.reshape([..])`,
    /// `.view([..])`, or a `Flatten` layer (`layer`).
    Reshape { x: ValueId, layer: Option<usize> },
    /// A 2-D pooling of `[N, C, H, W]`, by a layer (`layer`) or a method.
    Pool {
        x: ValueId,
        pool: PoolSpec,
        layer: Option<usize>,
    },
    /// `x.sum()`.
    Sum { x: ValueId },
    /// `x.mean()`.
    Mean { x: ValueId },
    /// A user's `Function` applied to `x`: `MyReLU.apply(x)`.
    Custom { function: syn::Path, x: ValueId },
    /// A region's carried variable at the start of a run: `init` on the first, the previous
    /// run's `result` after.
    RegionParam { init: ValueId, result: ValueId },
    /// Region `region`'s carried variable after it: `init` if it never ran, else the last
    /// `result`.
    RegionOutput {
        region: usize,
        init: ValueId,
        result: ValueId,
    },
}

impl Op {
    /// The field this op applies, if it applies one (a layer, parameter or nested network).
    pub fn field(&self) -> Option<usize> {
        match *self {
            Op::Layer { field, .. } | Op::Embed { field, .. } | Op::Param(field) => Some(field),
            Op::Map { layer, .. }
            | Op::Softmax { layer, .. }
            | Op::Reshape { layer, .. }
            | Op::Pool { layer, .. } => layer,
            _ => None,
        }
    }

    /// The values this op reads.
    pub fn operands(&self) -> Vec<ValueId> {
        match *self {
            Op::Input(_) | Op::Param(_) | Op::Embed { .. } => vec![],
            Op::Layer { x, .. }
            | Op::Map { x, .. }
            | Op::Reshape { x, .. }
            | Op::Pool { x, .. }
            | Op::Permute { x, .. }
            | Op::Narrow { x, .. }
            | Op::CausalMask { x }
            | Op::Softmax { x, .. }
            | Op::Sum { x }
            | Op::Mean { x }
            | Op::Custom { x, .. } => vec![x],
            Op::Binary { a, b, .. } | Op::Mm { a, b, .. } => vec![a, b],
            Op::RegionParam { init, result, .. } | Op::RegionOutput { init, result, .. } => {
                vec![init, result]
            }
        }
    }
}

/// A value of the forward pass.
pub struct Node {
    pub op: Op,
    pub shape: Shape,
    /// The region (loop or `if` arm) whose body computes it (`None`: the top level).
    pub region: Option<usize>,
    /// Where its value comes from, for messages: "`linear1`", "input `x`", "`.relu()`".
    pub origin: String,
}

/// An input of `forward`.
pub struct Input {
    pub ident: Ident,
    pub shape: Shape,
}

/// A non-tensor argument of `forward`, passed through as is (`repeats: usize`).
pub struct Extra {
    pub ident: Ident,
    pub ty: syn::Type,
}

/// A region of the forward pass that runs a number of times known at run time: a `for` loop,
/// or an `if` arm (which runs once or not at all). Its iterator expression is Rust, evaluated
/// at run time; per variable it carries from run to run, its `RegionParam` and `RegionOutput`
/// nodes.
pub struct Region {
    pub iter: syn::Expr,
    pub carried: Vec<(ValueId, ValueId)>,
}

/// Two dims the macro could not compare (const generics); rustc compares them through types.
pub struct DimAssertion {
    pub expected: Dim,
    pub found: Dim,
}

/// The whole lowered network.
pub struct Network {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub const_generics: Vec<Ident>,
    pub fields: Vec<Field>,
    pub inputs: Vec<Input>,
    /// `Indices<[..]>` inputs, after the tensor inputs: what `Embedding` layers look up.
    pub index_inputs: Vec<Input>,
    pub extras: Vec<Extra>,
    /// The output shapes `forward` declares.
    pub declared_outputs: Vec<Shape>,
    pub nodes: Vec<Node>,
    pub regions: Vec<Region>,
    pub assertions: Vec<DimAssertion>,
    /// The `Identity` layers applied: they add no node, yet are used.
    pub identity_layers: HashSet<usize>,
}
