//! One rule file per layer kind: what its declaration may say, the shape it maps an input to
//! (and what a mismatch says), its field's type, initialisation and parameter count. Reading a
//! field's type dispatches here; lowering and codegen ask the rule and name no layer kind.
//!
//! A layer with state is a field holding a runtime `Layer` ([`LayerRule`]); a stateless layer
//! (`ReLU`, `Softmax<1>`, `MaxPool2d<2>`) is a [`StatelessLayer`](crate::ir::StatelessLayer)
//! that lowers to the op that computes it, so the tape keeps what that op saves. A new one is a
//! variant there, its name, and one arm in `Lowerer::stateless`.

mod attention;
mod batch_norm;
mod conv;
mod dropout;
mod elementwise;
mod embedding;
mod flatten;
mod layer_norm;
mod linear;
mod network;
mod param;
mod pool;
mod softmax;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::Ident;

use crate::check::resolve_dim;
use crate::elementwise as table;
use crate::errors::{Errors, did_you_mean};
use crate::ir::{Dim, DimAssertion, DimKind, FieldKind, Shape};
use crate::parse::{LayerArg, LayerType};

/// What `network!` knows of a layer with state.
pub trait LayerRule {
    /// The layer as the user wrote it: `Linear<784, 128>`.
    fn describe(&self) -> String;

    /// The field's Rust type, a runtime `Layer<B>`.
    fn field_type(&self) -> TokenStream;

    /// The field's initial value, PyTorch's initialisation (`device` and `rng` are in scope).
    fn init(&self) -> TokenStream;

    /// The number of trainable scalars, as a `usize` expression.
    fn num_params(&self) -> TokenStream;

    /// The output shape for an input of shape `x` applied at `at` (dims only rustc can
    /// compare are added to `assertions`, with errors at `at`), or what the layer expects
    /// instead.
    fn output_shape(
        &self,
        x: &Shape,
        at: Span,
        assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch>;

    /// Where a mismatch is reported in a sequential network: the declaration's own input dim,
    /// if it has one.
    fn input_span(&self) -> Option<Span> {
        None
    }

    /// Whether the backward pass reads the layer's input, so the network's tape keeps it.
    fn reads_input(&self) -> bool;

    /// For an `Embedding`, the width of its rows: it is called with an index input, not a
    /// tensor.
    fn embedding_width(&self) -> Option<&Dim> {
        None
    }

    /// The output shape the layer would have had, after a mismatched input was reported: the
    /// layers after it are then still checked, so independent mistakes are reported together.
    fn recovered_shape(&self, x: &Shape) -> Option<Shape> {
        let _ = x;
        None
    }
}

/// The `N` dims of a layer type that takes nothing but dims (`Embedding<65, 128>`), each a
/// number or a const generic; `names` are PyTorch's names for them and `example` a correct
/// declaration, for the errors.
fn read_dims<const N: usize>(
    ty: &LayerType,
    const_generics: &[Ident],
    errors: &mut Errors,
    names: &str,
    example: &str,
) -> Option<[Dim; N]> {
    let mut dims = Vec::new();
    for arg in &ty.args {
        match arg {
            LayerArg::Dim(dim) => dims.push(resolve_dim(dim, const_generics, false, errors)),
            other => {
                errors.at(other.span(), format!("`{}` takes `{names}`", ty.name));
                return None;
            }
        }
    }
    let count = dims.len();
    let Ok(dims) = <[Dim; N]>::try_from(dims) else {
        errors.over(
            ty.tokens.to_token_stream(),
            format!(
                "`{}` takes {N} dims ({names}), got {count}: write `{example}`",
                ty.name
            ),
        );
        return None;
    };
    // A run-time name (the batch `B`) was reported by `resolve_dim`.
    (!dims.iter().any(|dim| matches!(dim.kind, DimKind::Named(_)))).then_some(dims)
}

/// Why a layer cannot take an input: what it expects (`` input `[N, 784]` ``), and where
/// its declaration says so, for a second error there.
pub struct Mismatch {
    pub expected: String,
    pub declared: Option<(Span, String)>,
}

/// Reads a declaration of one layer kind, or records why it cannot.
type Reader = fn(&LayerType, &[Ident], &mut Errors) -> Option<FieldKind>;

/// The layer kinds by type name, each with its rule file's reader: a new kind is one row here
/// and one file beside this one. (Elementwise layers come from their table, nested networks
/// from any other type name.)
const KINDS: &[(&str, Reader)] = &[
    ("Linear", linear::check),
    ("Conv2d", conv::check),
    ("BatchNorm1d", batch_norm::check),
    ("BatchNorm2d", batch_norm::check),
    ("Dropout", dropout::check),
    ("LayerNorm", layer_norm::check),
    ("Embedding", embedding::check),
    ("CausalSelfAttention", attention::check),
    ("Param", param::check),
    ("Softmax", softmax::check),
    ("LogSoftmax", softmax::check),
    ("Flatten", flatten::check),
    ("MaxPool2d", pool::check),
    ("AvgPool2d", pool::check),
    ("AdaptiveAvgPool2d", pool::check_adaptive),
];

/// The names of the layer types, for "did you mean" suggestions.
fn layer_names() -> impl Iterator<Item = &'static str> {
    KINDS
        .iter()
        .map(|(name, _)| *name)
        .chain(table::TABLE.iter().filter_map(|entry| entry.layer))
}

/// Interprets a field's layer type, or records why it cannot.
pub fn check_layer_type(
    ty: &LayerType,
    const_generics: &[Ident],
    errors: &mut Errors,
) -> Option<FieldKind> {
    let name = ty.name.to_string();
    if let Some((_, read)) = KINDS.iter().find(|(kind, _)| *kind == name) {
        return read(ty, const_generics, errors);
    }
    if let Some(entry) = table::layer(&name) {
        return elementwise::check(ty, entry, errors);
    }
    // Another network's type, written without arguments: `block: ResBlock`. rustc checks
    // that it exists and is a network (implements `Layer`); so only a known layer's name in
    // other letter case (`Relu`) is taken for a typo.
    let miscased = layer_names().find(|known| known.eq_ignore_ascii_case(&name));
    if ty.args.is_empty() && name.starts_with(char::is_uppercase) && miscased.is_none() {
        return Some(network::check(ty));
    }
    let message = match miscased.or_else(|| did_you_mean(&name, layer_names())) {
        Some(close) => format!("unknown layer `{name}`; did you mean `{close}`?"),
        // No list of layers here: it would grow with every kind (`declnet::syntax` has it).
        None => format!(
            "unknown layer `{name}`; the layers `network!` knows are listed in \
             `declnet::syntax`, and another network is used by its type name"
        ),
    };
    errors.at(ty.name.span(), message);
    None
}
