//! The `network!` procedural macro of declnet.
//!
//! This file is the shim and the pipeline; the macro is a compiler over `proc_macro2` in the
//! modules below, one phase each, every phase reporting all the errors it finds:
//! `parse` (syn) -> `lower` (IR with shapes; each field read by its rule in `layers/`, each
//! elementwise op by its row in `elementwise`) -> `check` (rules over the whole network) ->
//! `optimize` (rewrites that compute the same for less) -> `plan` (liveness, gradients, what
//! the tape saves, which buffers are reused) -> `codegen` (quote).

#![forbid(unsafe_code)]

mod check;
mod codegen;
mod elementwise;
mod errors;
mod ir;
mod layers;
mod lower;
mod optimize;
mod parse;
mod plan;
mod shape;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

/// Declares a neural network: a struct with its layers and parameters, `new` with PyTorch's
/// initialisation, `forward`, `forward_train` and a generated `backward`, with every shape
/// checked when the crate compiles. The syntax, construct by construct with examples, is in
/// the `declnet::syntax` module of the `declnet` crate.
///
/// What the macro expands to for a small net (the stage 6 `TwoLayerNet`) is checked in as
/// `macros/tests/snapshots/two_layer_net.expanded.rs`; the test `two_layer_net_expansion_snapshot`
/// keeps it current (`UPDATE_SNAPSHOTS=1 cargo test -p declnet-macros` rewrites it).
#[proc_macro]
pub fn network(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into()).into()
}

/// Expands one `network!` invocation: the generated items, or the struct, stub impls and
/// every error found.
fn expand(input: TokenStream) -> TokenStream {
    let def = match syn::parse2::<parse::NetworkDef>(input) {
        Ok(def) => def,
        Err(error) => return error.to_compile_error(),
    };
    let mut errors = errors::Errors::default();
    let (mut network, outputs) = lower::lower(def, &mut errors);
    // With errors already reported, a field may look unused only because its use was not lowered.
    if let Some(outputs) = outputs.as_ref().filter(|_| errors.is_empty()) {
        check::check_fields_used(&network, outputs, &mut errors);
    }
    let error = match (errors.into_combined(), outputs) {
        (None, Some(outputs)) => {
            let summary = codegen::gen_summary(&network);
            optimize::optimize(&mut network, &outputs);
            let plan = plan::Plan::new(&network, &outputs);
            return codegen::expand(&network, &outputs, &plan, &summary);
        }
        (Some(error), _) => error,
        // Lowering yields no output only after reporting why; if it ever does not, say so
        // rather than emit a network whose methods panic.
        (None, None) => syn::Error::new(
            network.name.span(),
            "internal error in `network!`: the forward pass could not be built, yet no error \
             was reported; please report this with the declaration",
        ),
    };
    let mut tokens = error.to_compile_error();
    tokens.extend(codegen::expand_fallback(&network));
    tokens
}
