//! `backward` and `backward_params`: the reverse pass, one block per node in reverse order,
//! each adding its operands' gradients into their adjoints (or straight into parameters).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::forward::{mat_view, pool_tokens};
use super::items::{Saved, tape_bindings};
use super::{
    binary_op, function_state_ident, grad_ident, grad_out_ident, grad_outs_type, input_grads_type,
    loop_ident, private, record_ident, shape_ident, tape_ident, unary_op, value_ident, value_ref,
};
use crate::elementwise::Grad;
use crate::ir::{BinaryOp, FieldKind, Network, Op, ValueId};
use crate::plan::Plan;
use crate::shape::same_shape;

/// `backward`, `backward_params`, and the one body both call (`backward_pass`), in which the
/// work only the input gradients need runs when its `input_grads` flag is set.
pub fn gen_backward(net: &Network, outputs: &[ValueId], plan: &Plan) -> TokenStream {
    let private = private();
    let name = &net.name;
    let tape = tape_ident(net);
    let saved = tape_bindings(net, plan);
    let input_names: Vec<&syn::Ident> = net.inputs.iter().map(|input| &input.ident).collect();
    // With one output, its gradient is `grad_out0` itself; with several, each output's
    // adjoint starts from a copy (an output may also feed another output). A parameter
    // returned as it is takes `grad_out0` into its gradient as a seed.
    let direct = match outputs {
        [output] if !matches!(net.nodes[*output].op, Op::Param(_)) => Some(*output),
        _ => None,
    };
    let adjoints = gen_adjoints(net, plan, None, direct);
    let seeds: Vec<TokenStream> = if direct.is_some() {
        Vec::new()
    } else {
        outputs
            .iter()
            .enumerate()
            .map(|(index, &id)| {
                let grad = grad_out_ident(index);
                let add = match net.nodes[id].op {
                    Op::Param(field) => {
                        let field = net.fields[field].access();
                        quote!(self.#field.try_accumulate_grad(#grad)?;)
                    }
                    _ => {
                        let adjoint = grad_ident(id);
                        quote!(#private::accumulate_ref(&mut #adjoint, #grad)?;)
                    }
                };
                gate(plan, id, add)
            })
            .collect()
    };
    let steps = announce_final_fields(net, gen_reverse_keyed(net, plan, None, direct));
    let grad_names: Vec<_> = (0..outputs.len()).map(grad_out_ident).collect();
    let unpack = if outputs.len() == 1 {
        quote!(let grad_out0 = grad_out;)
    } else {
        quote!(let (#(#grad_names),*) = grad_out;)
    };
    let (backward_label, params_label) = (
        format!("{name}::backward"),
        format!("{name}::backward_params"),
    );
    let checks = grad_names.iter().enumerate().map(|(index, grad)| {
        quote!(#private::check_grad_out(label, &tape.output_shapes[#index], #grad)?;)
    });
    let grad_outs = grad_outs_type(net);
    let grads: Vec<TokenStream> = net
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let ident = &input.ident;
            let node = net
                .nodes
                .iter()
                .position(|node| matches!(node.op, Op::Input(i) if i == index));
            match node.filter(|&id| plan.needs_grad[id]) {
                Some(id) if Some(id) == direct => quote!(grad_out0.try_clone()?),
                Some(id) => {
                    let grad = grad_ident(id);
                    quote!(#private::grad_or_zeros(#grad, #ident)?)
                }
                None => {
                    quote!(#private::Tensor::try_zeros(#ident.shape().clone(), #ident.device())?)
                }
            }
        })
        .collect();
    let result = if grads.len() == 1 {
        quote!(#(#grads)*)
    } else {
        quote!((#(#grads),*))
    };
    let grads_type = input_grads_type(net);
    let backward_doc = format!(
        "Backpropagates `grad_out` (the gradient of the loss with respect to the output of \
         [`{name}::forward_train`]): adds every parameter's gradient into its `grad` (so \
         shared and repeated uses accumulate) and returns the gradient with respect to the \
         input(s)."
    );
    let params_doc = format!(
        "Like [`{name}::backward`], but skips the work only the input gradient needs: what \
         a training step calls."
    );
    quote! {
        #[doc = #backward_doc]
        ///
        /// # Errors
        /// When `grad_out` does not have the output's shape, or the device fails.
        pub fn backward(&mut self, tape: #tape<'_, B>, grad_out: #grad_outs) -> #private::Result<#grads_type> {
            match self.backward_pass(tape, grad_out, true, None)? {
                Some(grads) => Ok(grads),
                None => unreachable!("`backward_pass` returns the input gradients it is asked for"),
            }
        }

        #[doc = #params_doc]
        ///
        /// # Errors
        /// When `grad_out` does not have the output's shape, or the device fails.
        pub fn backward_params(&mut self, tape: #tape<'_, B>, grad_out: #grad_outs) -> #private::Result<()> {
            self.backward_pass(tape, grad_out, false, None).map(drop)
        }

        /// Like [`Self::backward_params`], and calls `ready(self, prefix)` as soon as the
        /// gradients of a field's parameters (those named `prefix` or `prefix.*`) are final,
        /// in an order fixed by the declaration, whatever the run-time loop counts: how
        /// `DataParallel::backward_synced` averages gradients while the backward pass goes on.
        ///
        /// # Errors
        /// When `grad_out` does not have the output's shape, the device fails, or `ready`
        /// fails.
        pub fn backward_params_notify(
            &mut self,
            tape: #tape<'_, B>,
            grad_out: #grad_outs,
            ready: &mut dyn FnMut(&Self, &str) -> #private::Result<()>,
        ) -> #private::Result<()> {
            self.backward_pass(tape, grad_out, false, Some(ready)).map(drop)
        }

        /// The reverse pass of `backward` (`input_grads`), `backward_params` and
        /// `backward_params_notify` (`ready`).
        fn backward_pass(
            &mut self,
            tape: #tape<'_, B>,
            grad_out: #grad_outs,
            input_grads: bool,
            mut ready: Option<&mut dyn FnMut(&Self, &str) -> #private::Result<()>>,
        ) -> #private::Result<Option<#grads_type>>
        {
            let label = if input_grads { #backward_label } else { #params_label };
            #unpack
            #(#checks)*
            let #tape { #(#saved,)* .. } = tape;
            #(let #input_names: &#private::Tensor<B> = &#input_names;)*
            #(#adjoints)*
            #(#seeds)*
            #(#steps)*
            if input_grads { Ok(Some(#result)) } else { Ok(None) }
        }
    }
}

/// The reverse steps with, after each, `ready` calls for the fields whose gradients it
/// finishes: a field is final after the last step (in reverse order) that writes its
/// gradients, which is the step of its first use in the forward pass, a whole top-level loop
/// counting as one step. Fields no emitted step writes are announced at the end, so no field
/// is ever announced early.
fn announce_final_fields(net: &Network, steps: Vec<(ValueId, TokenStream)>) -> Vec<TokenStream> {
    let stateful: Vec<usize> = (0..net.fields.len())
        .filter(|&field| !matches!(net.fields[field].kind, FieldKind::Stateless(_)))
        .collect();
    // Each loop's backward block is emitted at its last output, inside its parent region.
    let mut loop_block: Vec<(ValueId, Option<usize>)> = vec![(0, None); net.regions.len()];
    for (id, node) in net.nodes.iter().enumerate() {
        if let Op::RegionOutput { region, .. } = node.op {
            loop_block[region] = (id, node.region); // ids ascend: the last output wins
        }
    }
    // The step a node's backward runs in: its own at the top level, else its outermost
    // loop's block.
    let step_key = |id: ValueId| -> ValueId {
        let (mut key, mut region) = (id, net.nodes[id].region);
        while let Some(looped) = region {
            (key, region) = loop_block[looped];
        }
        key
    };
    let mut final_step: Vec<Option<ValueId>> = vec![None; net.fields.len()];
    for (id, node) in net.nodes.iter().enumerate() {
        let writes: Vec<usize> = match node.op {
            Op::Layer { field, .. } | Op::Embed { field, .. } => vec![field],
            Op::Param(_) => Vec::new(),
            _ => node
                .op
                .operands()
                .into_iter()
                .filter_map(|operand| match net.nodes[operand].op {
                    Op::Param(field) => Some(field),
                    _ => None,
                })
                .collect(),
        };
        for field in writes {
            let key = step_key(id);
            let slot = &mut final_step[field];
            *slot = Some(slot.map_or(key, |old: ValueId| old.min(key)));
        }
    }
    let announce = |field: usize| {
        let prefix = &net.fields[field].state_name;
        quote!(if let Some(ready) = ready.as_mut() { ready(self, #prefix)?; })
    };
    let mut announced = vec![false; net.fields.len()];
    let mut out = Vec::new();
    for (key, step) in steps {
        out.push(step);
        for &field in &stateful {
            if final_step[field] == Some(key) {
                announced[field] = true;
                out.push(announce(field));
            }
        }
    }
    out.extend(
        stateful
            .iter()
            .filter(|&&field| !announced[field])
            .map(|&field| announce(field)),
    );
    out
}

/// `code`, which gives value `target` a gradient: as it is when `backward_params` needs that
/// gradient too, run only under `input_grads` when only the input gradients do, nothing when
/// neither does.
fn gate(plan: &Plan, target: ValueId, code: TokenStream) -> TokenStream {
    if !plan.needs_grad[target] {
        quote!()
    } else if plan.param_grad[target] {
        code
    } else {
        quote!(if input_grads { #code })
    }
}

/// Whether value `target` gets a gradient, as a `bool` expression: `true`, `false`, or the
/// `input_grads` flag when only the input gradients need it.
fn wants_grad(plan: &Plan, target: ValueId) -> TokenStream {
    if plan.param_grad[target] {
        quote!(true)
    } else if plan.needs_grad[target] {
        quote!(input_grads)
    } else {
        quote!(false)
    }
}

/// `let mut g{id} = None;` for the nodes of `region` whose gradient is computed.
fn gen_adjoints(
    net: &Network,
    plan: &Plan,
    region: Option<usize>,
    direct: Option<ValueId>,
) -> Vec<TokenStream> {
    let private = private();
    (0..net.nodes.len())
        .filter(|&id| {
            plan.needs_grad[id]
                && Some(id) != direct
                && net.nodes[id].region == region
                && !matches!(net.nodes[id].op, Op::Param(_))
                && plan.gradient_of[id].is_none()
        })
        .map(|id| {
            let ident = grad_ident(id);
            quote!(let mut #ident: Option<#private::Tensor<B>> = None;)
        })
        .collect()
}

/// The backward rules of `region`'s nodes in reverse order; each loop (at the top level) as
/// one block that replays its records backwards.
fn gen_reverse(
    net: &Network,
    plan: &Plan,
    region: Option<usize>,
    direct: Option<ValueId>,
) -> Vec<TokenStream> {
    gen_reverse_keyed(net, plan, region, direct)
        .into_iter()
        .map(|(_, step)| step)
        .collect()
}

/// [`gen_reverse`], each step with the node it was made for (a loop's block: the loop's last
/// output).
fn gen_reverse_keyed(
    net: &Network,
    plan: &Plan,
    region: Option<usize>,
    direct: Option<ValueId>,
) -> Vec<(ValueId, TokenStream)> {
    let mut steps = Vec::new();
    let mut emitted = vec![false; net.regions.len()];
    for id in (0..net.nodes.len()).rev() {
        let node = &net.nodes[id];
        if !plan.needs_grad[id] || node.region != region {
            continue;
        }
        let deferred = deferred_contribution(plan, id, direct);
        match node.op {
            // An input's gradient is complete once every reader has run.
            Op::Input(_) if !deferred.is_empty() => steps.push((id, deferred)),
            Op::Input(_) | Op::Param(_) | Op::RegionParam { .. } => {}
            Op::RegionOutput { region: looped, .. } => {
                if !emitted[looped] {
                    emitted[looped] = true;
                    steps.push((id, gen_loop_backward(net, plan, looped, direct)));
                }
            }
            _ if plan.gradient_of[id].is_some() => {
                // The gradient is the addition's, read where it is.
                let holder = plan.gradient_holder(id);
                let body = gen_rule(net, plan, id);
                steps.push((
                    id,
                    if body.is_empty() {
                        // A sum whose operands read its gradient themselves.
                        body
                    } else if Some(holder) == direct {
                        quote!({ let g = grad_out0; #body })
                    } else {
                        let ident = grad_ident(holder);
                        quote!(if let Some(g) = #ident.as_ref() { #body })
                    },
                ));
            }
            _ => {
                let ident = grad_ident(id);
                let rule = match gen_rule_in_place(net, plan, id) {
                    // The adjoint is read by this rule only, so an elementwise rule may
                    // overwrite it and pass it on instead of allocating.
                    Some(body) if Some(id) != direct => {
                        quote!(if let Some(mut g) = #ident.take() { #body })
                    }
                    _ if Some(id) == direct => {
                        let body = gen_rule(net, plan, id);
                        quote!({ let g = grad_out0; #body })
                    }
                    _ => {
                        let body = gen_rule(net, plan, id);
                        quote!(if let Some(g) = #ident.as_ref() { #body })
                    }
                };
                steps.push((id, quote!(#deferred #rule)));
            }
        }
    }
    steps
}

/// The gradient [`Plan::defers_gradient`] holds back for value `target`, added into its
/// adjoint once its other reader has contributed (empty when there is none).
fn deferred_contribution(plan: &Plan, target: ValueId, direct: Option<ValueId>) -> TokenStream {
    let Some(addition) = plan.deferred_from[target] else {
        return TokenStream::new();
    };
    let (private, ident) = (private(), grad_ident(target));
    let holder = plan.gradient_holder(addition);
    let add = if Some(holder) == direct {
        quote!(#private::accumulate_ref(&mut #ident, grad_out0)?;)
    } else {
        let source = grad_ident(holder);
        quote!(if let Some(g) = #source.as_ref() { #private::accumulate_ref(&mut #ident, g)?; })
    };
    gate(plan, target, add)
}

/// Loop `looped` backwards: the carried variables' gradients (`gc{index}`) enter each
/// iteration at the body's results and leave it at the loop parameters, replayed over the
/// records in reverse; what is left flows into the loop's initial values.
fn gen_loop_backward(
    net: &Network,
    plan: &Plan,
    looped: usize,
    direct: Option<ValueId>,
) -> TokenStream {
    let private = private();
    let records = loop_ident(looped);
    let record_type = record_ident(net, looped);
    let bindings = Saved::of(net, plan, Some(looped)).bindings();
    let (mut seeds, mut enter, mut leave, mut finish) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, &(param, out)) in net.regions[looped].carried.iter().enumerate() {
        let Op::RegionParam { init, result, .. } = net.nodes[param].op else {
            continue;
        };
        let gc = quote::format_ident!("gc{}", index);
        let seed = if Some(out) == direct {
            quote!(Some(grad_out0.try_clone()?))
        } else if plan.needs_grad[out] {
            let g = grad_ident(out);
            quote!(#g.take())
        } else {
            quote!(None)
        };
        seeds.push(quote!(let mut #gc: Option<#private::Tensor<B>> = #seed;));
        let into_result = contribute(net, plan, result, &quote!(g));
        enter.push(quote!(if let Some(g) = #gc.take() { #into_result }));
        leave.push(if plan.needs_grad[param] {
            let g = grad_ident(param);
            quote!(#gc = #g.take();)
        } else {
            quote!(#gc = None;)
        });
        let into_init = contribute(net, plan, init, &quote!(g));
        finish.push(quote!(if let Some(g) = #gc { #into_init }));
    }
    let adjoints = gen_adjoints(net, plan, Some(looped), direct);
    let body = gen_reverse(net, plan, Some(looped), direct);
    quote! {
        {
            #(#seeds)*
            for record in #records.into_iter().rev() {
                let #record_type { #(#bindings,)* .. } = record;
                #(#adjoints)*
                #(#enter)*
                #(#body)*
                #(#leave)*
            }
            #(#finish)*
        }
    }
}

/// Adds the owned gradient `grad` into value `target`'s adjoint, or into the parameter.
fn contribute(net: &Network, plan: &Plan, target: ValueId, grad: &TokenStream) -> TokenStream {
    let private = private();
    let add = match net.nodes[target].op {
        Op::Param(field) => {
            let field = net.fields[field].access();
            quote!(self.#field.try_accumulate_grad(&#grad)?;)
        }
        _ => {
            let ident = grad_ident(target);
            quote!(#private::accumulate(&mut #ident, #grad)?;)
        }
    };
    gate(plan, target, add)
}

/// Adds the borrowed gradient `g` into value `target`'s adjoint, or into the parameter.
fn contribute_ref(net: &Network, plan: &Plan, target: ValueId) -> TokenStream {
    let private = private();
    let add = match net.nodes[target].op {
        Op::Param(field) => {
            let field = net.fields[field].access();
            quote!(self.#field.try_accumulate_grad(g)?;)
        }
        _ => {
            let ident = grad_ident(target);
            quote!(#private::accumulate_ref(&mut #ident, g)?;)
        }
    };
    gate(plan, target, add)
}

/// `grad` summed back to `operand`'s shape when node `id` broadcast it.
fn unbroadcast(net: &Network, id: ValueId, operand: ValueId, grad: TokenStream) -> TokenStream {
    if same_shape(&net.nodes[operand].shape, &net.nodes[id].shape) {
        grad
    } else {
        let shape = shape_ident(operand);
        quote!(#grad.try_sum_to_shape(&#shape)?)
    }
}

/// The backward rule of an elementwise node `id` with its output gradient owned in `mut g`:
/// the gradient is transformed in place and moved on. `None` for other nodes.
fn gen_rule_in_place(net: &Network, plan: &Plan, id: ValueId) -> Option<TokenStream> {
    if let Op::Reshape { x, .. } = net.nodes[id].op {
        let shape = shape_ident(x);
        return Some(contribute(
            net,
            plan,
            x,
            &quote!(g.try_reshape(#shape.clone())?),
        ));
    }
    if let Op::CausalMask { x } = net.nodes[id].op {
        let add = contribute(net, plan, x, &quote!(g));
        return Some(quote! {
            g.try_causal_fill_(0.0)?;
            #add
        });
    }
    let Op::Map { ref op, x, .. } = net.nodes[id].op else {
        return None;
    };
    let add = contribute(net, plan, x, &quote!(g));
    let unary = unary_op(op);
    Some(match op.entry.grad {
        Grad::Identity => add,
        Grad::Linear => quote! {
            g.try_map_(#unary)?;
            #add
        },
        Grad::FromInput | Grad::FromOutput => {
            let saved = saved_by(net, id);
            quote! {
                g.try_map_backward_(#unary, #saved)?;
                #add
            }
        }
        Grad::Derivative => {
            let (private, state) = (private(), function_state_ident(id));
            quote! {
                g.try_zip_(#private::BinaryOp::Mul, "mul", &#state)?;
                #add
            }
        }
    })
}

/// What the backward rule of elementwise node `id` reads: its input or its output.
fn saved_by(net: &Network, id: ValueId) -> TokenStream {
    match net.nodes[id].op {
        Op::Map { ref op, .. } if op.entry.grad == Grad::FromOutput => {
            let y = value_ident(id);
            quote!(&#y)
        }
        Op::Map { x, .. } => value_ref(net, x),
        _ => unreachable!("only elementwise nodes save their input or output"),
    }
}

/// The backward rule of node `id`, with its output gradient bound to `g`.
fn gen_rule(net: &Network, plan: &Plan, id: ValueId) -> TokenStream {
    let private = private();
    let needs = |x: ValueId| plan.needs_grad[x];
    match net.nodes[id].op {
        Op::Input(_) | Op::Param(_) | Op::RegionParam { .. } | Op::RegionOutput { .. } => quote!(),
        Op::Embed { field, ids } => {
            let (field, ids) = (net.fields[field].access(), &net.index_inputs[ids].ident);
            quote!(self.#field.backward(&#ids, g)?;)
        }
        Op::Layer { field, x } => {
            let reads_input =
                matches!(&net.fields[field].kind, FieldKind::Layer(rule) if rule.reads_input());
            let field = net.fields[field].access();
            let x_ref = if reads_input {
                let x = value_ref(net, x);
                quote!(::core::option::Option::Some(#x))
            } else {
                quote!(::core::option::Option::None)
            };
            let (state, input_grad) = (function_state_ident(id), wants_grad(plan, x));
            let call = quote! {
                #private::Layer::layer_backward(&mut self.#field, #x_ref, #state, g, #input_grad)?
            };
            if needs(x) {
                let add = contribute(net, plan, x, &quote!(dx));
                quote!(if let Some(dx) = #call { #add })
            } else {
                quote!(#call;)
            }
        }
        Op::Custom { ref function, x } => {
            let state = function_state_ident(id);
            let call = quote_spanned!(function.span()=> #private::Function::backward(&#function, &#state, g));
            let grad = quote!(#call?);
            contribute(net, plan, x, &grad)
        }
        Op::Map { ref op, x, .. } => {
            let unary = unary_op(op);
            match op.entry.grad {
                Grad::Identity => contribute_ref(net, plan, x),
                Grad::Linear => contribute(net, plan, x, &quote!(g.try_map(#unary)?)),
                Grad::FromInput | Grad::FromOutput => {
                    let saved = saved_by(net, id);
                    let grad = quote!(g.try_map_backward(#unary, #saved)?);
                    contribute(net, plan, x, &grad)
                }
                Grad::Derivative => {
                    let state = function_state_ident(id);
                    let grad = quote!(g.try_zip(#private::BinaryOp::Mul, "mul", &#state)?);
                    contribute(net, plan, x, &grad)
                }
            }
        }
        Op::Binary { op, a, b } => {
            let mut out = TokenStream::new();
            let slots = [
                (a, b, false, quote!(Lhs)),
                (b, a, op == BinaryOp::Sub, quote!(Rhs)),
            ];
            for (operand, other, negate, wrt) in slots {
                if !needs(operand) {
                    continue;
                }
                let broadcast = !same_shape(&net.nodes[operand].shape, &net.nodes[id].shape);
                out.extend(match op {
                    BinaryOp::Div | BinaryOp::Maximum | BinaryOp::Minimum => {
                        let (op, a, b) = (binary_op(op), value_ref(net, a), value_ref(net, b));
                        let grad =
                            quote!(g.try_zip_backward(#op, #private::Operand::#wrt, #a, #b)?);
                        contribute(net, plan, operand, &grad)
                    }
                    BinaryOp::Mul => {
                        let other = value_ref(net, other);
                        let grad = unbroadcast(net, id, operand, quote!(g.try_mul(#other)?));
                        contribute(net, plan, operand, &grad)
                    }
                    _ if negate => {
                        let grad = unbroadcast(
                            net,
                            id,
                            operand,
                            quote!(g.try_map(#private::UnaryOp::Neg)?),
                        );
                        contribute(net, plan, operand, &grad)
                    }
                    _ if broadcast => {
                        let grad = unbroadcast(net, id, operand, quote!(g));
                        contribute(net, plan, operand, &grad)
                    }
                    // Its rule reads `g` itself, or its adjoint takes `g` last.
                    _ if plan.gradient_of[operand] == Some(id)
                        || plan.deferred_from[operand] == Some(id) =>
                    {
                        TokenStream::new()
                    }
                    _ => contribute_ref(net, plan, operand),
                });
            }
            out
        }
        Op::Mm { a, a_t, b, b_t } if net.nodes[id].shape.0.len() > 2 => {
            // C = op(A) op(B): dA = g op(B)^T (or its transpose), dB = op(A)^T g (or its).
            let (a_ref, b_ref) = (value_ref(net, a), value_ref(net, b));
            let (not_a_t, not_b_t) = (!a_t, !b_t);
            let mut out = TokenStream::new();
            if needs(a) {
                let grad = if a_t {
                    quote!(#b_ref.try_matmul_with(g, (#b_t, true))?)
                } else {
                    quote!(g.try_matmul_with(#b_ref, (false, #not_b_t))?)
                };
                out.extend(contribute(net, plan, a, &grad));
            }
            if needs(b) {
                let grad = if b_t {
                    quote!(g.try_matmul_with(#a_ref, (true, #a_t))?)
                } else {
                    quote!(#a_ref.try_matmul_with(g, (#not_a_t, false))?)
                };
                out.extend(contribute(net, plan, b, &grad));
            }
            out
        }
        Op::Mm { a, a_t, b, b_t } => {
            let grad = quote!(#private::MatView::from(g));
            let grad_t = quote!(#private::MatView::from(g).t());
            let mut out = TokenStream::new();
            if needs(a) {
                let (lhs, rhs) = if a_t {
                    (mat_view(net, b, b_t), grad_t.clone())
                } else {
                    (grad.clone(), mat_view(net, b, !b_t))
                };
                out.extend(mm_contribution(net, plan, a, b, &lhs, &rhs));
            }
            if needs(b) {
                let (lhs, rhs) = if b_t {
                    (grad_t, mat_view(net, a, a_t))
                } else {
                    (mat_view(net, a, !a_t), grad)
                };
                out.extend(mm_contribution(net, plan, b, a, &lhs, &rhs));
            }
            out
        }
        Op::Permute { x, ref order } => {
            let mut inverse = vec![0; order.len()];
            for (i, &dim) in order.iter().enumerate() {
                inverse[dim] = i;
            }
            contribute(net, plan, x, &quote!(g.try_permute(&[#(#inverse),*])?))
        }
        Op::Narrow { x, dim, start } => {
            let shape = shape_ident(x);
            let grad = quote!(g.try_narrow_backward(&#shape, #dim, #start)?);
            contribute(net, plan, x, &grad)
        }
        Op::CausalMask { x } => {
            let add = contribute(net, plan, x, &quote!(g));
            quote!({
                let mut g = g.try_clone()?;
                g.try_causal_fill_(0.0)?;
                #add
            })
        }
        Op::Softmax { x, dim, log, .. } => {
            let y = value_ident(id);
            let grad = if log {
                quote!(g.log_softmax_backward(&#y, #dim)?)
            } else {
                quote!(g.softmax_backward(&#y, #dim)?)
            };
            contribute(net, plan, x, &grad)
        }
        Op::Pool { x, pool, .. } => {
            let (shape, spec) = (shape_ident(x), pool_tokens(pool));
            let indices = if pool.max {
                let state = function_state_ident(id);
                quote!(#state.as_ref())
            } else {
                quote!(None)
            };
            let grad = quote!(g.try_pool2d_backward(&#spec, #indices, &#shape)?);
            contribute(net, plan, x, &grad)
        }
        Op::Reshape { x, .. } => {
            let shape = shape_ident(x);
            contribute(
                net,
                plan,
                x,
                &quote!(g.try_clone()?.try_reshape(#shape.clone())?),
            )
        }
        Op::Sum { x } => {
            let shape = shape_ident(x);
            contribute(net, plan, x, &quote!(g.try_broadcast_to(&#shape)?))
        }
        Op::Mean { x } => {
            let shape = shape_ident(x);
            let grad = quote!(g
                .try_map(#private::UnaryOp::MulScalar(1.0 / #shape.numel() as f32))?
                .try_broadcast_to(&#shape)?);
            contribute(net, plan, x, &grad)
        }
    }
}

/// Adds `lhs x rhs` into `target`: straight into a parameter's gradient with one GEMM (unless
/// the other operand is the same parameter, which is then still borrowed), else as a new tensor.
fn mm_contribution(
    net: &Network,
    plan: &Plan,
    target: ValueId,
    other: ValueId,
    lhs: &TokenStream,
    rhs: &TokenStream,
) -> TokenStream {
    match net.nodes[target].op {
        Op::Param(field) if target != other => {
            let field = net.fields[field].access();
            quote!(self.#field.try_accumulate_grad_mm(#lhs, #rhs)?;)
        }
        _ => contribute(net, plan, target, &quote!(#lhs.try_mm(#rhs)?)),
    }
}
