//! From the IR to Rust: the struct, its constructor, forward and backward passes, parameter
//! visiting and summary. Generated code reaches the runtime through `::declnet::__private`.

mod backward;
mod forward;
mod items;

pub use items::gen_summary;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::Ident;

use crate::elementwise::MapOp;
use crate::ir::{BinaryOp, Dim, DimKind, Network, Op, ValueId};
use crate::plan::Plan;

/// Everything `network!` expands to for a network that passed every check, with `summary()`
/// (from [`gen_summary`]) made before [`crate::optimize`] rewrote it.
pub fn expand(
    net: &Network,
    outputs: &[ValueId],
    plan: &Plan,
    summary: &TokenStream,
) -> TokenStream {
    let structs = items::gen_structs(net, plan);
    let constructor = items::gen_new(net);
    let forward = forward::gen_forward(net, outputs, plan);
    let backward = backward::gen_backward(net, outputs, plan);
    let load = items::gen_load(net);
    let train_step = items::gen_train_step(net);
    let module = items::gen_module_impl(net);
    let layer = items::gen_layer_impl(net);
    let (impl_generics, ty) = generics(net);
    quote! {
        #structs

        #[automatically_derived]
        #[allow(unused_mut, unused_variables, clippy::all, clippy::pedantic)]
        impl<#impl_generics> #ty {
            #constructor
            #forward
            #backward
            #train_step
            #summary
            #load
        }

        #module
        #layer
    }
}

/// The struct and every item [`expand`] would generate, with bodies that are never reached,
/// for a network with errors: code using the network then reports only the real errors.
pub fn expand_fallback(net: &Network) -> TokenStream {
    let structs = items::gen_fallback_structs(net);
    let (impl_generics, ty) = generics(net);
    let name = &net.name;
    let tape = tape_ident(net);
    let inputs = net.inputs.iter().map(|input| &input.ident);
    let (inputs2, inputs3) = (inputs.clone(), inputs.clone());
    let (index_params, index_params_train) = (
        forward::index_params(net, false),
        forward::index_params(net, true),
    );
    let extras = forward::extra_params(net);
    let grads = input_grads_type(net);
    let outputs = outputs_type(net);
    let grad_outs = grad_outs_type(net);
    let private = private();
    let module = items::gen_module_impl(net);
    let layer = items::gen_layer_impl(net);
    quote! {
        #structs

        #[allow(unused_variables, clippy::all, clippy::pedantic)]
        impl<#impl_generics> #ty {
            /// Not available: `network!` reported errors for this network.
            pub fn new<R: #private::Rng + ?Sized>(device: &B, rng: &mut R) -> Self {
                unreachable!(concat!("`network!` reported errors for `", stringify!(#name), "`"))
            }
            /// Not available: `network!` reported errors for this network.
            pub fn forward(&self, #(#inputs: &#private::Tensor<B>,)* #(#index_params,)* #(#extras,)*) -> #private::Result<#outputs> {
                unreachable!()
            }
            /// Not available: `network!` reported errors for this network.
            pub fn forward_train<'a>(&self, #(#inputs2: &'a #private::Tensor<B>,)* #(#index_params_train,)* #(#extras,)*)
                -> #private::Result<(#outputs, #tape<'a, B>)> {
                unreachable!()
            }
            /// Not available: `network!` reported errors for this network.
            pub fn forward_train_from<'a>(&self, #(#inputs3: #private::TapeInput<'a, B>,)* #(#index_params_train,)* #(#extras,)*)
                -> #private::Result<(#outputs, #tape<'a, B>)> {
                unreachable!()
            }
            /// Not available: `network!` reported errors for this network.
            pub fn backward(&mut self, tape: #tape<'_, B>, grad_out: #grad_outs) -> #private::Result<#grads> {
                unreachable!()
            }
            /// Not available: `network!` reported errors for this network.
            pub fn backward_params(&mut self, tape: #tape<'_, B>, grad_out: #grad_outs) -> #private::Result<()> {
                unreachable!()
            }
            /// Not available: `network!` reported errors for this network.
            pub fn backward_params_notify(
                &mut self,
                tape: #tape<'_, B>,
                grad_out: #grad_outs,
                ready: &mut dyn FnMut(&Self, &str) -> #private::Result<()>,
            ) -> #private::Result<()> {
                unreachable!()
            }
            /// Not available: `network!` reported errors for this network.
            pub const NUM_PARAMS: usize = 0;
            /// Not available: `network!` reported errors for this network.
            pub fn summary() -> String {
                unreachable!()
            }
            /// Not available: `network!` reported errors for this network.
            pub fn load(device: &B, path: impl AsRef<::std::path::Path>) -> #private::Result<Self> {
                unreachable!()
            }
        }

        #module
        #layer
    }
}

/// The path generated code reaches the runtime by.
pub fn private() -> TokenStream {
    quote!(::declnet::__private)
}

/// `const H: usize, B: Backend` and `Name<H, B>`.
fn generics(net: &Network) -> (TokenStream, TokenStream) {
    let private = private();
    let consts = &net.const_generics;
    let name = &net.name;
    (
        quote!(#(const #consts: usize,)* B: #private::Backend),
        quote!(#name<#(#consts,)* B>),
    )
}

fn tape_ident(net: &Network) -> Ident {
    format_ident!("{}Tape", net.name)
}

/// The type `backward` returns: one input's gradient, or a tuple of them.
fn input_grads_type(net: &Network) -> TokenStream {
    let private = private();
    let grads = net.inputs.iter().map(|_| quote!(#private::Tensor<B>));
    if net.inputs.len() == 1 {
        quote!(#private::Tensor<B>)
    } else {
        quote!((#(#grads),*))
    }
}

/// The type `forward` returns: one tensor, or a tuple of them.
fn outputs_type(net: &Network) -> TokenStream {
    let private = private();
    if net.declared_outputs.len() == 1 {
        quote!(#private::Tensor<B>)
    } else {
        let each = (0..net.declared_outputs.len()).map(|_| quote!(#private::Tensor<B>));
        quote!((#(#each),*))
    }
}

/// The type of `backward`'s `grad_out`: one tensor's gradient, or a tuple of them.
fn grad_outs_type(net: &Network) -> TokenStream {
    let private = private();
    if net.declared_outputs.len() == 1 {
        quote!(&#private::Tensor<B>)
    } else {
        let each = (0..net.declared_outputs.len()).map(|_| quote!(&#private::Tensor<B>));
        quote!((#(#each),*))
    }
}

/// The variable holding output `index`'s gradient inside `backward`.
fn grad_out_ident(index: usize) -> Ident {
    format_ident!("grad_out{}", index)
}

/// A dim as a Rust `usize` expression.
pub fn dim_expr(dim: &Dim) -> TokenStream {
    match &dim.kind {
        DimKind::Lit(value) => {
            let lit = Literal::usize_unsuffixed(*value);
            quote_spanned!(dim.span=> #lit)
        }
        DimKind::Const(name) | DimKind::Named(name) => {
            let ident = Ident::new(name, dim.span);
            quote!(#ident)
        }
        DimKind::Extern { ty, constant } => {
            let (ty, constant) = (Ident::new(ty, dim.span), Ident::new(constant, dim.span));
            let private = private();
            quote_spanned!(dim.span=> <#ty as #private::LayerShape>::#constant)
        }
    }
}

/// The runtime's `UnaryOp` computing `op`: `UnaryOp::LeakyRelu(0.2f32)`.
fn unary_op(op: &MapOp) -> TokenStream {
    let private = private();
    let variant = Ident::new(op.entry.variant, Span::call_site());
    if op.args.is_empty() {
        quote!(#private::UnaryOp::#variant)
    } else {
        let args = op.args.iter().map(|&arg| f32_tokens(arg));
        quote!(#private::UnaryOp::#variant(#(#args),*))
    }
}

/// The runtime's `BinaryOp` computing `op`.
fn binary_op(op: BinaryOp) -> TokenStream {
    let private = private();
    let variant = Ident::new(op.variant(), Span::call_site());
    quote!(#private::BinaryOp::#variant)
}

/// An `f32` literal (negative numbers as a negated literal).
fn f32_tokens(value: f32) -> TokenStream {
    let lit = Literal::f32_suffixed(value.abs());
    if value.is_sign_negative() {
        quote!((-#lit))
    } else {
        quote!(#lit)
    }
}

/// The variable holding computed value `id`.
fn value_ident(id: ValueId) -> Ident {
    format_ident!("v{}", id)
}

/// The variable holding the gradient of value `id`.
fn grad_ident(id: ValueId) -> Ident {
    format_ident!("g{}", id)
}

/// The variable holding custom-function node `id`'s saved state.
fn function_state_ident(id: ValueId) -> Ident {
    format_ident!("f{}", id)
}

/// The tape field (and local) holding loop `looped`'s per-iteration records.
fn loop_ident(looped: usize) -> Ident {
    format_ident!("loop{}", looped)
}

/// The record type of one iteration of loop `looped`.
fn record_ident(net: &Network, looped: usize) -> Ident {
    format_ident!("{}LoopRecord{}", net.name, looped)
}

/// The variable carrying loop `looped`'s carried variable `index` between iterations.
fn carried_ident(looped: usize, index: usize) -> Ident {
    format_ident!("c{}_{}", looped, index)
}

/// The variable holding the run-time shape of value `id`.
fn shape_ident(id: ValueId) -> Ident {
    format_ident!("s{}", id)
}

/// A `&Tensor<B>` expression for value `id`: an input's name, a parameter's value, or a
/// reference to a computed value's variable.
fn value_ref(net: &Network, id: ValueId) -> TokenStream {
    match net.nodes[id].op {
        Op::Input(index) => {
            let ident = &net.inputs[index].ident;
            quote!(#ident)
        }
        Op::Param(field) => {
            let field = net.fields[field].access();
            quote!(self.#field.value())
        }
        _ => {
            let ident = value_ident(id);
            quote!((&#ident))
        }
    }
}

/// `name` as a string literal with a span.
fn str_lit(value: &str, span: Span) -> Literal {
    let mut lit = Literal::string(value);
    lit.set_span(span);
    lit
}
