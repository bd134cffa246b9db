//! `forward` (inference: computes the output, keeps nothing) and `forward_train` (also returns
//! the tape `backward` needs).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::items::{Saved, tape_bindings};
use super::{
    binary_op, carried_ident, dim_expr, function_state_ident, loop_ident, outputs_type, private,
    record_ident, shape_ident, tape_ident, unary_op, value_ident, value_ref,
};
use crate::ir::{DimKind, Network, Op, ValueId};
use crate::plan::Plan;

pub fn gen_forward(net: &Network, outputs: &[ValueId], plan: &Plan) -> TokenStream {
    let private = private();
    let name = &net.name;
    let tape = tape_ident(net);
    let inputs: Vec<_> = net.inputs.iter().map(|input| &input.ident).collect();
    let (index_params, index_params_train) = (index_params(net, false), index_params(net, true));
    let index_names: Vec<_> = net.index_inputs.iter().map(|input| &input.ident).collect();
    let extras = extra_params(net);
    let extra_names = net.extras.iter().map(|extra| &extra.ident);
    let input_places = (0..inputs.len()).map(syn::Index::from);
    let checks = gen_input_checks(net, "forward");
    let train_checks = gen_input_checks(net, "forward_train");
    let steps = gen_steps(net, plan, false);
    let train_steps = gen_steps(net, plan, true);
    let owned_output = owned_outputs(net, outputs, |_| false);
    let train_output = owned_outputs(net, outputs, |id| plan.saved_values.contains(&id));
    let returns = outputs_type(net);
    let top_shapes = Saved::of(net, plan, None).shapes;
    let shapes = top_shapes.iter().map(|&id| {
        let ident = shape_ident(id);
        let value = value_ref(net, id);
        quote!(let #ident = #value.shape().clone();)
    });
    let tape_fields = tape_bindings(net, plan);
    let output_refs = outputs.iter().map(|&id| value_ref(net, id));
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
        pub fn forward(&self, #(#inputs: &#private::Tensor<B>,)* #(#index_params,)* #(#extras,)*) -> #private::Result<#returns> {
            #checks
            #(#steps)*
            Ok(#owned_output)
        }

        #[doc = #train_doc]
        ///
        /// # Errors
        /// As [`Self::forward`].
        pub fn forward_train<'a>(&self, #(#inputs: &'a #private::Tensor<B>,)* #(#index_params_train,)* #(#extras,)*)
            -> #private::Result<(#returns, #tape<'a, B>)>
        {
            self.forward_train_from(#(::std::borrow::Cow::Borrowed(#inputs),)* #(#index_names,)* #(#extra_names,)*)
        }

        /// [`Self::forward_train`] with the inputs borrowed or owned: an owned input moves
        /// into the tape, which then need not copy it to outlive the caller's tensor (what
        /// an outer network does with an input that dies in the call).
        ///
        /// # Errors
        /// As [`Self::forward`].
        pub fn forward_train_from<'a>(&self, #(#inputs: #private::TapeInput<'a, B>,)* #(#index_params_train,)* #(#extras,)*)
            -> #private::Result<(#returns, #tape<'a, B>)>
        {
            let tape_inputs = (#(#inputs,)*);
            #(let #inputs: &#private::Tensor<B> = &tape_inputs.#input_places;)*
            #train_checks
            #(#train_steps)*
            let output_shapes = [#(#output_refs.shape().clone()),*];
            #(#shapes)*
            let output = #train_output;
            let (#(#inputs,)*) = tape_inputs;
            #(let #index_names = ::std::borrow::Cow::Borrowed(#index_names);)*
            Ok((output, #tape {
                #(#tape_fields,)*
                output_shapes,
                _inputs: ::core::marker::PhantomData,
            }))
        }
    }
}

/// `name: &Indices<B>` for every index input (`&'a` for `forward_train`, whose tape keeps them).
pub fn index_params(net: &Network, train: bool) -> Vec<TokenStream> {
    let private = private();
    let lifetime = if train { quote!('a) } else { quote!() };
    net.index_inputs
        .iter()
        .map(|input| {
            let ident = &input.ident;
            quote!(#ident: &#lifetime #private::Indices<B>)
        })
        .collect()
}

/// `name: Type` for every non-tensor argument.
pub fn extra_params(net: &Network) -> Vec<TokenStream> {
    net.extras
        .iter()
        .map(|extra| {
            let (ident, ty) = (&extra.ident, &extra.ty);
            quote!(#ident: #ty)
        })
        .collect()
}

/// The statements computing the live top-level nodes in order, each loop as one `for` block;
/// `train` also keeps what backward needs (custom functions' state, loop records).
fn gen_steps(net: &Network, plan: &Plan, train: bool) -> Vec<TokenStream> {
    let mut steps = Vec::new();
    let mut emitted = vec![false; net.regions.len()];
    for id in (0..net.nodes.len()).filter(|&id| plan.live[id] && net.nodes[id].region.is_none()) {
        match net.nodes[id].op {
            Op::RegionOutput { region: looped, .. } => {
                if !emitted[looped] {
                    emitted[looped] = true;
                    steps.push(gen_loop(net, plan, looped, train));
                }
            }
            _ => steps.extend(gen_step(net, plan, id, train)),
        }
    }
    steps
}

/// Loop `looped`: carried variables in `c{loop}_{index}`, the body's steps, and (when
/// training) one record per iteration of what the body's backward rules read.
fn gen_loop(net: &Network, plan: &Plan, looped: usize, train: bool) -> TokenStream {
    let private = private();
    let info = &net.regions[looped];
    let iter = &info.iter;
    let carried: Vec<(usize, ValueId, ValueId)> = info
        .carried
        .iter()
        .enumerate()
        .filter(|(_, (param, output))| plan.live[*param] || plan.live[*output])
        .map(|(index, &(param, output))| (index, param, output))
        .collect();
    let saved = Saved::of(net, plan, Some(looped));
    let mut init = Vec::new();
    let mut enter = Vec::new();
    let mut next = Vec::new();
    let mut store = Vec::new();
    let mut outputs = Vec::new();
    let mut moved: Vec<ValueId> = Vec::new();
    for &(index, param, output) in &carried {
        let c = carried_ident(looped, index);
        let Op::RegionParam {
            init: first,
            result,
            ..
        } = net.nodes[param].op
        else {
            continue;
        };
        init.push(if plan.loop_takes_init.contains(&param) {
            let v = value_ident(first);
            quote!(let mut #c = #v;)
        } else {
            let v = value_ref(net, first);
            quote!(let mut #c = #v.try_clone()?;)
        });
        if plan.live[param] {
            let v = value_ident(param);
            enter.push(quote!(let #v = #c;));
        }
        let next_ident = quote::format_ident!("next{}", index);
        // Move the body's result into the carried variable, unless the record keeps it too,
        // another carried variable took it, or it does not belong to this iteration.
        let movable = net.nodes[result].region == Some(looped)
            && (result != param || plan.live[param])
            && !(train && saved.values.contains(&result))
            && !moved.contains(&result);
        let value = if movable {
            moved.push(result);
            let v = value_ident(result);
            quote!(#v)
        } else {
            let v = value_ref(net, result);
            quote!(#v.try_clone()?)
        };
        next.push(quote!(let #next_ident = #value;));
        store.push(quote!(#c = #next_ident;));
        if plan.live[output] {
            let v = value_ident(output);
            outputs.push(quote!(let #v = #c;));
        }
    }
    let body: Vec<TokenStream> = (0..net.nodes.len())
        .filter(|&id| plan.live[id] && net.nodes[id].region == Some(looped))
        .filter(|&id| !matches!(net.nodes[id].op, Op::RegionParam { .. }))
        .filter_map(|id| gen_step(net, plan, id, train))
        .collect();
    let records = loop_ident(looped);
    let (declare, record) = if train {
        let record_type = record_ident(net, looped);
        let shapes = saved.shapes.iter().map(|&id| {
            let ident = shape_ident(id);
            let value = value_ref(net, id);
            quote!(let #ident = #value.shape().clone();)
        });
        let fields = saved.bindings();
        (
            quote!(let mut #records = #private::LoopRecords::<#record_type<B>>::new();),
            quote! {
                #(#shapes)*
                #(#next)*
                #records.push(#record_type { #(#fields,)* _backend: ::core::marker::PhantomData });
            },
        )
    } else {
        (quote!(), quote!(#(#next)*))
    };
    quote! {
        #(#init)*
        #declare
        for _ in #iter {
            #(#enter)*
            #(#body)*
            #record
            #(#store)*
        }
        #(#outputs)*
    }
}

/// Checks every input against its declared shape, binding named dims (the batch) on the way.
fn gen_input_checks(net: &Network, method: &str) -> TokenStream {
    let private = private();
    let label = format!("{}::{method}", net.name);
    let checks = net.inputs.iter().chain(&net.index_inputs).map(|input| {
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

/// The outputs as owned tensors (a tuple when there are several).
fn owned_outputs(
    net: &Network,
    outputs: &[ValueId],
    saved: impl Fn(ValueId) -> bool,
) -> TokenStream {
    let each = outputs.iter().enumerate().map(|(index, &id)| {
        // A value returned twice is moved once and copied for its other places.
        let repeated = outputs[index + 1..].contains(&id);
        owned(net, id, saved(id) || repeated)
    });
    if outputs.len() == 1 {
        quote!(#(#each)*)
    } else {
        quote!((#(#each),*))
    }
}

/// An output as an owned tensor: moved out of its variable, or copied when it is an input,
/// a parameter, or also needed elsewhere.
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

/// The statement computing node `id` (none for inputs and parameters, which are read in place,
/// and loop nodes, which `gen_loop` binds).
fn gen_step(net: &Network, plan: &Plan, id: ValueId, train: bool) -> Option<TokenStream> {
    let private = private();
    let value = match net.nodes[id].op {
        Op::Input(_) | Op::Param(_) | Op::RegionParam { .. } | Op::RegionOutput { .. } => {
            return None;
        }
        Op::Layer { field, x: input } => {
            let x = value_ref(net, input);
            let field = net.fields[field].access();
            let (v, state) = (value_ident(id), function_state_ident(id));
            return Some(if train && plan.writes_into(id, train) == Some(input) {
                let x = value_ident(input);
                quote!(let (#v, #state) = #private::Layer::layer_forward_train_owned(&self.#field, #x)?;)
            } else if train {
                quote!(let (#v, #state) = #private::Layer::layer_forward_train(&self.#field, #x)?;)
            } else {
                quote!(let #v = #private::Layer::layer_forward(&self.#field, #x)?;)
            });
        }
        Op::Embed { field, ids } => {
            let (v, ids) = (value_ident(id), &net.index_inputs[ids].ident);
            let field = net.fields[field].access();
            return Some(quote!(let #v = self.#field.forward(#ids)?;));
        }
        Op::Custom { ref function, x } => {
            let x = value_ref(net, x);
            let name = quote!(#function).to_string();
            let (v, state) = (value_ident(id), function_state_ident(id));
            let state = if train { quote!(#state) } else { quote!(_) };
            // Spanned at the function's name, so a missing `Function` impl is reported there.
            let call =
                quote_spanned!(function.span()=> #private::apply_function(&#function, #name, #x));
            return Some(quote! {
                let (#v, #state) = #call?;
            });
        }
        Op::Map { ref op, x, .. } => {
            let op = unary_op(op);
            let v = value_ident(id);
            // With the derivative the backward pass multiplies by, as the op's state.
            if train && plan.saved_functions.contains(&id) {
                let state = function_state_ident(id);
                if plan.writes_into(id, train).is_some() {
                    let x = value_ident(x);
                    return Some(quote! {
                        let mut #v = #x;
                        let #state = #v.try_map_with_derivative_(#op)?;
                    });
                }
                let x = value_ref(net, x);
                return Some(quote!(let (#v, #state) = #x.try_map_with_derivative(#op)?;));
            }
            if plan.writes_into(id, train).is_some() {
                let x = value_ident(x);
                return Some(quote!(let mut #v = #x; #v.try_map_(#op)?;));
            }
            let x = value_ref(net, x);
            quote!(#x.try_map(#op)?)
        }
        Op::Binary { op, a, b } => {
            let name = op.variant().to_lowercase();
            let op_tokens = binary_op(op);
            if let Some(target) = plan.writes_into(id, train) {
                let other = if target == a { b } else { a };
                let (v, target, other) =
                    (value_ident(id), value_ident(target), value_ref(net, other));
                return Some(
                    quote!(let mut #v = #target; #v.try_zip_(#op_tokens, #name, #other)?;),
                );
            }
            let (a, b) = (value_ref(net, a), value_ref(net, b));
            quote!(#a.try_zip(#op_tokens, #name, #b)?)
        }
        Op::Mm { a, a_t, b, b_t } if net.nodes[id].shape.0.len() > 2 => {
            let (a, b) = (value_ref(net, a), value_ref(net, b));
            quote!(#a.try_matmul_with(#b, (#a_t, #b_t))?)
        }
        Op::Mm { a, a_t, b, b_t } => {
            let (a, b) = (mat_view(net, a, a_t), mat_view(net, b, b_t));
            quote!(#a.try_mm(#b)?)
        }
        Op::Permute { x, ref order } => {
            let x = value_ref(net, x);
            quote!(#x.try_permute(&[#(#order),*])?)
        }
        Op::Narrow { x, dim, start } => {
            let (x, len) = (value_ref(net, x), runtime_dim(&net.nodes[id].shape.0[dim]));
            quote!(#x.try_narrow(#dim, #start, #len)?)
        }
        Op::CausalMask { x } => {
            let v = value_ident(id);
            let value = if plan.writes_into(id, train).is_some() {
                let x = value_ident(x);
                quote!(#x)
            } else {
                let x = value_ref(net, x);
                quote!(#x.try_clone()?)
            };
            return Some(quote! {
                let mut #v = #value;
                #v.try_causal_fill_(f32::NEG_INFINITY)?;
            });
        }
        Op::Softmax { x, dim, log, .. } => {
            let x = value_ref(net, x);
            if log {
                quote!(#x.try_log_softmax(#dim)?)
            } else {
                quote!(#x.try_softmax(#dim)?)
            }
        }
        Op::Pool { x, pool, .. } => {
            let (x, spec) = (value_ref(net, x), pool_tokens(pool));
            if train && pool.max {
                let (v, state) = (value_ident(id), function_state_ident(id));
                return Some(quote!(let (#v, #state) = #x.try_pool2d_with_indices(&#spec)?;));
            }
            quote!(#x.try_pool2d(&#spec)?)
        }
        Op::Reshape { x, .. } => {
            let dims = net.nodes[id].shape.0.iter().map(runtime_dim);
            if plan.writes_into(id, train).is_some() {
                let x = value_ident(x);
                quote!(#x.try_reshape([#(#dims),*])?)
            } else {
                let x = value_ref(net, x);
                quote!(#x.try_clone()?.try_reshape([#(#dims),*])?)
            }
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

/// The runtime's `Pool2d` for `pool`.
pub fn pool_tokens(pool: crate::ir::PoolSpec) -> TokenStream {
    let private = private();
    let (kernel, stride, padding) = (pool.kernel, pool.stride, pool.padding);
    if pool.max {
        quote!(#private::Pool2d::max(#kernel, #stride, #padding))
    } else {
        quote!(#private::Pool2d::avg(#kernel, #stride, #padding))
    }
}

/// A dim as a `usize` expression inside `forward`: named dims are read from the sizes the
/// inputs bound.
fn runtime_dim(dim: &crate::ir::Dim) -> TokenStream {
    match &dim.kind {
        DimKind::Named(name) => quote!(dims.size(#name)),
        _ => dim_expr(dim),
    }
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
