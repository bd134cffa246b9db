//! `forward` (inference: computes the output, keeps nothing) and `forward_train` (also returns
//! the tape `backward` needs).

use proc_macro2::TokenStream;
use quote::quote;

use super::items::tape_bindings;
use super::{dim_expr, f32_tokens, private, shape_ident, tape_ident, value_ident, value_ref};
use crate::autodiff::Plan;
use crate::ir::{Activation, BinaryOp, DimKind, Network, Op, ValueId};

pub fn gen_forward(net: &Network, output: ValueId, plan: &Plan) -> TokenStream {
    let private = private();
    let name = &net.name;
    let tape = tape_ident(net);
    let inputs: Vec<_> = net.inputs.iter().map(|input| &input.ident).collect();
    let checks = gen_input_checks(net, "forward");
    let train_checks = gen_input_checks(net, "forward_train");
    let steps: Vec<TokenStream> = (0..net.nodes.len())
        .filter(|&id| plan.live[id])
        .filter_map(|id| gen_step(net, id))
        .collect();
    let owned_output = owned(net, output, false);
    let train_output = owned(net, output, plan.saved_values.contains(&output));
    let shapes = plan.saved_shapes.iter().map(|&id| {
        let ident = shape_ident(id);
        let value = value_ref(net, id);
        quote!(let #ident = #value.shape().clone();)
    });
    let tape_fields = tape_bindings(net, plan);
    let output_ref = value_ref(net, output);
    let forward_doc = format!(
        "Runs `{name}` for inference: checks the inputs' shapes once, computes the output, saves nothing."
    );
    let train_doc = format!(
        "Runs `{name}` for training: the output, and the tape [`{name}::backward`] consumes \
         (saved activations; the inputs are borrowed, not copied)."
    );
    quote! {
        #[doc = #forward_doc]
        ///
        /// # Errors
        /// When an input's shape differs from the declared one (naming the input and the dim),
        /// or the device fails.
        pub fn forward(&self, #(#inputs: &#private::Tensor<B>),*) -> #private::Result<#private::Tensor<B>> {
            #checks
            #(#steps)*
            Ok(#owned_output)
        }

        #[doc = #train_doc]
        ///
        /// # Errors
        /// As [`Self::forward`].
        pub fn forward_train<'a>(&self, #(#inputs: &'a #private::Tensor<B>),*)
            -> #private::Result<(#private::Tensor<B>, #tape<'a, B>)>
        {
            #train_checks
            #(#steps)*
            let output_shape = #output_ref.shape().clone();
            #(#shapes)*
            let output = #train_output;
            Ok((output, #tape {
                #(#tape_fields,)*
                output_shape,
                _inputs: ::core::marker::PhantomData,
            }))
        }
    }
}

/// Checks every input against its declared shape, binding named dims (the batch) on the way.
fn gen_input_checks(net: &Network, method: &str) -> TokenStream {
    let private = private();
    let label = format!("{}::{method}", net.name);
    let checks = net.inputs.iter().map(|input| {
        let ident = &input.ident;
        let name = ident.to_string();
        let dims = input.shape.0.iter().map(|dim| match &dim.kind {
            DimKind::Named(name) => quote!(#private::DeclaredDim::Named(#name)),
            _ => {
                let value = dim_expr(dim);
                quote!(#private::DeclaredDim::Fixed(#value))
            }
        });
        quote!(dims.check(#label, #name, &[#(#dims),*], #ident.shape())?;)
    });
    quote! {
        let mut dims = #private::DimBindings::default();
        #(#checks)*
    }
}

/// The output as an owned tensor: moved out of its variable, or copied when it is an input,
/// a parameter, or also saved in the tape.
fn owned(net: &Network, id: ValueId, saved: bool) -> TokenStream {
    match net.nodes[id].op {
        Op::Input(_) | Op::Param(_) => {
            let value = value_ref(net, id);
            quote!(#value.try_clone()?)
        }
        _ if saved => {
            let ident = value_ident(id);
            quote!(#ident.try_clone()?)
        }
        _ => {
            let ident = value_ident(id);
            quote!(#ident)
        }
    }
}

/// The statement computing node `id` (none for inputs and parameters, which are read in place).
fn gen_step(net: &Network, id: ValueId) -> Option<TokenStream> {
    let private = private();
    let unary = |x: ValueId, op: TokenStream| {
        let x = value_ref(net, x);
        quote!(#x.try_map(#private::UnaryOp::#op)?)
    };
    let value = match net.nodes[id].op {
        Op::Input(_) | Op::Param(_) => return None,
        Op::Linear { field, x } => {
            let field = &net.fields[field].ident;
            let x = value_ref(net, x);
            quote!(self.#field.forward(#x)?)
        }
        Op::Activation { activation, x, .. } => match activation {
            Activation::Relu => unary(x, quote!(ClampMin(0.0))),
            Activation::Sigmoid => unary(x, quote!(Sigmoid)),
            Activation::Tanh => unary(x, quote!(Tanh)),
            Activation::Gelu => unary(x, quote!(Gelu)),
        },
        Op::ClampMin { x, min } => {
            let min = f32_tokens(min);
            unary(x, quote!(ClampMin(#min)))
        }
        Op::Pow { x, exponent } => {
            let exponent = f32_tokens(exponent);
            unary(x, quote!(Pow(#exponent)))
        }
        Op::AddScalar { x, scalar } => {
            let scalar = f32_tokens(scalar);
            unary(x, quote!(AddScalar(#scalar)))
        }
        Op::MulScalar { x, scalar } => {
            let scalar = f32_tokens(scalar);
            unary(x, quote!(MulScalar(#scalar)))
        }
        Op::Neg { x } => unary(x, quote!(Neg)),
        Op::Binary { op, a, b } => {
            let (a, b) = (value_ref(net, a), value_ref(net, b));
            match op {
                BinaryOp::Add => quote!(#a.try_add(#b)?),
                BinaryOp::Sub => quote!(#a.try_sub(#b)?),
                BinaryOp::Mul => quote!(#a.try_mul(#b)?),
            }
        }
        Op::Mm { a, a_t, b, b_t } => {
            let (a, b) = (mat_view(net, a, a_t), mat_view(net, b, b_t));
            quote!(#a.try_mm(#b)?)
        }
        Op::Transpose { x } => {
            let x = value_ref(net, x);
            quote!(#x.try_t()?.try_to_tensor()?)
        }
        Op::Sum { x } => {
            let x = value_ref(net, x);
            quote!(#x.try_sum()?)
        }
        Op::Mean { x } => {
            let x = value_ref(net, x);
            quote!(#x.try_mean()?)
        }
    };
    let ident = value_ident(id);
    Some(quote!(let #ident = #value;))
}

/// Value `id` as a matrix operand, read transposed when `transposed`.
pub fn mat_view(net: &Network, id: ValueId, transposed: bool) -> TokenStream {
    let private = private();
    let value = value_ref(net, id);
    if transposed {
        quote!(#private::MatView::from(#value).t())
    } else {
        quote!(#private::MatView::from(#value))
    }
}
