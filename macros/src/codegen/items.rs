//! The generated items other than the passes: the struct, the tape struct, `new`, parameter
//! visiting (`Module`), `NUM_PARAMS` and `summary`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::{
    dim_expr, function_state_ident, generics, loop_ident, private, record_ident, shape_ident,
    str_lit, tape_ident, value_ident,
};
use crate::ir::{DimKind, Field, FieldKind, Network, Op, ValueId};
use crate::plan::Plan;

/// The network struct with one public field per stateful layer or parameter.
fn gen_network_struct(net: &Network) -> TokenStream {
    let private = private();
    let attrs = &net.attrs;
    let vis = &net.vis;
    let name = &net.name;
    let consts = &net.const_generics;
    let stateful: Vec<&Field> = net.fields.iter().filter(|f| f.kind.has_state()).collect();
    // A list's elements make one array field.
    let fields = list_heads(net).map(|(field, count)| {
        let ident = &field.ident;
        let element = field_type(field);
        let (ty, prefix) = match count {
            Some(count) => (
                quote!([#element; #count]),
                format!("`{ident}.0` to `{ident}.{}`", count - 1),
            ),
            None => (element, format!("`{}`", field.state_name)),
        };
        let docs = if field.attrs.iter().any(|a| a.path().is_ident("doc")) {
            quote!()
        } else {
            let what = match count {
                Some(count) => format!("{count} of {}, each with its own weights", describe(field)),
                None => describe(field),
            };
            let doc = format!("{what}; `state_dict` prefix {prefix}.");
            quote!(#[doc = #doc])
        };
        let attrs = &field.attrs;
        quote!(#(#attrs)* #docs pub #ident: #ty)
    });
    // A network without parameters still has to use its backend parameter.
    let marker = stateful
        .is_empty()
        .then(|| quote!(#[doc(hidden)] pub __backend: ::core::marker::PhantomData<B>,));
    quote! {
        #(#attrs)*
        // Field names mirror the module attributes a PyTorch user would write.
        #[allow(clippy::struct_field_names)]
        #vis struct #name<#(const #consts: usize,)* B: #private::Backend = #private::Cpu> {
            #(#fields,)*
            #marker
        }
    }
}

/// The stateful fields as the struct declares them: each field, or a list's first element with
/// the list's length.
fn list_heads(net: &Network) -> impl Iterator<Item = (&Field, Option<usize>)> {
    let fields = &net.fields;
    fields
        .iter()
        .filter(|field| field.kind.has_state() && field.element.is_none_or(|index| index == 0))
        .map(|field| {
            let count = field.element.map(|_| {
                fields
                    .iter()
                    .filter(|other| other.ident == field.ident)
                    .count()
            });
            (field, count)
        })
}

/// The Rust type of a stateful field.
fn field_type(field: &Field) -> TokenStream {
    let private = private();
    match &field.kind {
        FieldKind::Layer(rule) => rule.field_type(),
        _ => quote!(#private::Param<B>),
    }
}

/// A field's layer as a user would write it: `Linear<784, 128>`, `Param<[3, 4]>`, `ReLU`.
fn describe(field: &Field) -> String {
    match &field.kind {
        FieldKind::Layer(rule) => format!("`{}`", rule.describe()),
        FieldKind::Param { shape } => format!("`Param<{shape}>`"),
        FieldKind::Stateless(layer) => format!("`{}`", layer.layer_name()),
    }
}

/// The network struct and its tape: the values `forward_train` saves for `backward`.
pub fn gen_structs(net: &Network, plan: &Plan) -> TokenStream {
    let private = private();
    let vis = &net.vis;
    let network = gen_network_struct(net);
    let tape = tape_ident(net);
    let doc = format!(
        "What [`{name}::backward`] needs from [`{name}::forward_train`]: the saved activations, \
         borrowed inputs and shapes, and nothing else.",
        name = net.name
    );
    let mut fields: Vec<TokenStream> = net
        .inputs
        .iter()
        .map(|input| {
            let ident = &input.ident;
            quote!(#ident: #private::TapeInput<'a, B>)
        })
        .collect();
    fields.extend(net.index_inputs.iter().map(|input| {
        let ident = &input.ident;
        quote!(#ident: ::std::borrow::Cow<'a, #private::Indices<B>>)
    }));
    fields.extend(saved_field_types(net, &Saved::of(net, plan, None)));
    let bindings = tape_bindings(net, plan);
    let count = net.declared_outputs.len();
    let inputs: Vec<&syn::Ident> = net.inputs.iter().map(|input| &input.ident).collect();
    let index_inputs: Vec<&syn::Ident> =
        net.index_inputs.iter().map(|input| &input.ident).collect();
    let mut records = Vec::new();
    for looped in 0..net.regions.len() {
        let record = record_ident(net, looped);
        let field = loop_ident(looped);
        fields.push(quote!(#field: #private::LoopRecords<#record<B>>));
        let record_fields = saved_field_types(net, &Saved::of(net, plan, Some(looped)));
        let record_doc = format!(
            "What one iteration of loop {looped} of `{}` saves for backward.",
            net.name
        );
        records.push(quote! {
            #[doc = #record_doc]
            #[doc(hidden)]
            #[allow(dead_code)]
            #vis struct #record<B: #private::Backend> {
                #(#record_fields,)*
                _backend: ::core::marker::PhantomData<B>,
            }
        });
    }
    quote! {
        #network

        #[doc = #doc]
        #[allow(dead_code)]
        #vis struct #tape<'a, B: #private::Backend> {
            #(#fields,)*
            output_shapes: [#private::Shape; #count],
            _inputs: ::core::marker::PhantomData<&'a B>,
        }

        impl<'a, B: #private::Backend> #tape<'a, B> {
            /// This tape with its borrowed inputs copied, so that it can outlive them (how an
            /// outer network keeps a nested network's tape).
            ///
            /// # Errors
            /// When the device cannot copy.
            pub fn into_owned(self) -> #private::Result<#tape<'static, B>> {
                let Self { #(#bindings,)* output_shapes, .. } = self;
                #(let #inputs = #private::owned(#inputs)?;)*
                #(let #index_inputs = ::std::borrow::Cow::Owned(#index_inputs.into_owned());)*
                Ok(#tape { #(#bindings,)* output_shapes, _inputs: ::core::marker::PhantomData })
            }
        }

        #(#records)*
    }
}

/// What the tape (region `None`) or one iteration's record of a loop saves.
pub struct Saved {
    /// Computed values (inputs are borrowed by the tape instead).
    pub values: Vec<ValueId>,
    /// Values whose run-time shape is saved.
    pub shapes: Vec<ValueId>,
    /// Custom-function nodes whose state is saved.
    pub functions: Vec<ValueId>,
}

impl Saved {
    pub fn of(net: &Network, plan: &Plan, region: Option<usize>) -> Self {
        let here = |id: &&ValueId| net.nodes[**id].region == region;
        Self {
            values: plan
                .saved_values
                .iter()
                .filter(here)
                .copied()
                .filter(|&id| !matches!(net.nodes[id].op, Op::Input(_)))
                .collect(),
            shapes: plan.saved_shapes.iter().filter(here).copied().collect(),
            functions: plan.saved_functions.iter().filter(here).copied().collect(),
        }
    }

    /// The names the saved things are bound to, in field order.
    pub fn bindings(&self) -> Vec<TokenStream> {
        let values = self.values.iter().map(|&id| {
            let ident = value_ident(id);
            quote!(#ident)
        });
        let shapes = self.shapes.iter().map(|&id| {
            let ident = shape_ident(id);
            quote!(#ident)
        });
        let functions = self.functions.iter().map(|&id| {
            let ident = function_state_ident(id);
            quote!(#ident)
        });
        values.chain(shapes).chain(functions).collect()
    }
}

/// `name: Type` for every saved thing.
fn saved_field_types(net: &Network, saved: &Saved) -> Vec<TokenStream> {
    let private = private();
    let mut fields = Vec::new();
    for &id in &saved.values {
        let ident = value_ident(id);
        fields.push(quote!(#ident: #private::Tensor<B>));
    }
    for &id in &saved.shapes {
        let ident = shape_ident(id);
        fields.push(quote!(#ident: #private::Shape));
    }
    for &id in &saved.functions {
        let ident = function_state_ident(id);
        match &net.nodes[id].op {
            Op::Custom { function, .. } => {
                let ty =
                    quote_spanned!(function.span()=> <#function as #private::Function<B>>::Saved);
                fields.push(quote!(#ident: #ty));
            }
            Op::Layer { field, .. } => {
                let ty = field_type(&net.fields[*field]);
                fields.push(quote!(#ident: <#ty as #private::Layer<B>>::Tape));
            }
            // Max pooling's argmax.
            Op::Pool { .. } => fields.push(quote!(#ident: Option<#private::Tensor<B>>)),
            // An elementwise op's derivative.
            Op::Map { .. } => fields.push(quote!(#ident: #private::Tensor<B>)),
            _ => {}
        }
    }
    fields
}

/// The names the tape's fields are bound to: inputs, top-level saved things, loop records.
pub fn tape_bindings(net: &Network, plan: &Plan) -> Vec<TokenStream> {
    let inputs = net.inputs.iter().chain(&net.index_inputs).map(|input| {
        let ident = &input.ident;
        quote!(#ident)
    });
    let loops = (0..net.regions.len()).map(|looped| {
        let ident = loop_ident(looped);
        quote!(#ident)
    });
    inputs
        .chain(Saved::of(net, plan, None).bindings())
        .chain(loops)
        .collect()
}

/// `Layer` and `LayerShape` for a network that declares one `[batch, in]` input and a
/// `[batch, out]` output (and no other arguments), so that other networks can use it as a
/// layer.
pub fn gen_layer_impl(net: &Network) -> TokenStream {
    let private = private();
    let (Some(input), [], [], 1, [output]) = (
        net.inputs.first(),
        net.index_inputs.as_slice(),
        net.extras.as_slice(),
        net.inputs.len(),
        net.declared_outputs.as_slice(),
    ) else {
        return quote!();
    };
    let out = &output.0;
    let dims = &input.shape.0;
    // `[N, in] -> [N, out]` or `[B, T, in] -> [B, T, out]`: named leading dims, kept.
    let rank = dims.len();
    let leading_kept = matches!(rank, 2 | 3)
        && out.len() == rank
        && dims[..rank - 1]
            .iter()
            .zip(&out[..rank - 1])
            .all(|(a, b)| matches!(a.kind, DimKind::Named(_)) && a.kind == b.kind);
    if !leading_kept {
        return quote!();
    }
    let (in_features, out_features) = (dim_expr(&dims[rank - 1]), dim_expr(&out[rank - 1]));
    let rank = proc_macro2::Literal::usize_unsuffixed(rank);
    let (impl_generics, ty) = generics(net);
    let tape = tape_ident(net);
    quote! {
        #[automatically_derived]
        impl<#impl_generics> #private::LayerShape for #ty {
            const INPUT_RANK: usize = #rank;
            const IN_FEATURES: usize = #in_features;
            const OUT_FEATURES: usize = #out_features;
        }

        #[automatically_derived]
        impl<#impl_generics> #private::Layer<B> for #ty {
            type Tape = #tape<'static, B>;

            fn layer_forward(&self, x: &#private::Tensor<B>) -> #private::Result<#private::Tensor<B>> {
                self.forward(x)
            }

            fn layer_forward_train(&self, x: &#private::Tensor<B>)
                -> #private::Result<(#private::Tensor<B>, Self::Tape)>
            {
                let (y, tape) = self.forward_train(x)?;
                Ok((y, tape.into_owned()?))
            }

            /// The tape keeps `x` itself.
            fn layer_forward_train_owned(&self, x: #private::Tensor<B>)
                -> #private::Result<(#private::Tensor<B>, Self::Tape)>
            {
                let (y, tape) = self.forward_train_from(::std::borrow::Cow::Owned(x))?;
                Ok((y, tape.into_owned()?))
            }

            /// The input is in the tape already.
            fn layer_backward(
                &mut self,
                _x: ::core::option::Option<&#private::Tensor<B>>,
                tape: Self::Tape,
                grad_out: &#private::Tensor<B>,
                input_grad: bool,
            ) -> #private::Result<Option<#private::Tensor<B>>> {
                if input_grad {
                    self.backward(tape, grad_out).map(Some)
                } else {
                    self.backward_params(tape, grad_out).map(|()| None)
                }
            }
        }
    }
}

/// The structs of a network with errors: the network as declared, and a tape that is never
/// made.
pub fn gen_fallback_structs(net: &Network) -> TokenStream {
    let private = private();
    let vis = &net.vis;
    let network = gen_network_struct(net);
    let tape = tape_ident(net);
    quote! {
        #network

        /// Not available: `network!` reported errors for this network.
        #vis struct #tape<'a, B: #private::Backend>(::core::marker::PhantomData<&'a B>);

        impl<'a, B: #private::Backend> #tape<'a, B> {
            /// Not available: `network!` reported errors for this network.
            ///
            /// # Errors
            /// Never returns.
            pub fn into_owned(self) -> #private::Result<#tape<'static, B>> {
                unreachable!()
            }
        }
    }
}

/// `new(device, rng)`: PyTorch's default initialisation, and the dim equalities only rustc
/// can check.
pub fn gen_new(net: &Network) -> TokenStream {
    let private = private();
    // Every token of the check carries the span of the dim the consumer declares, so rustc's
    // "expected `H`, found `50`" lands on the `50` to edit, as the macro's own messages do.
    let assertions = net.assertions.iter().map(|assertion| {
        let span = assertion.expected.span;
        let private = quote_spanned!(span=> ::declnet::__private);
        let found = dim_expr(&assertion.found);
        let expected = dim_expr(&assertion.expected);
        quote_spanned! {span=>
            #private::same_dim(#private::Dim::<{ #expected }>, #private::Dim::<{ #found }>);
        }
    });
    let inits = list_heads(net).map(|(field, count)| {
        let ident = &field.ident;
        match &field.kind {
            FieldKind::Layer(rule) => {
                let init = rule.init();
                match count {
                    // Element by element, in order, as separate fields would draw.
                    Some(count) => {
                        let inits = (0..count).map(|_| &init);
                        quote!(#ident: [#(#inits),*])
                    }
                    None => quote!(#ident: #init),
                }
            }
            FieldKind::Param { shape } => {
                let dims = shape.0.iter().map(dim_expr);
                quote!(#ident: #private::Param::new(#private::Tensor::randn([#(#dims),*], device, rng)))
            }
            FieldKind::Stateless(_) => unreachable!("filtered: stateless layers have no field"),
        }
    });
    let marker = net
        .fields
        .iter()
        .all(|f| !f.kind.has_state())
        .then(|| quote!(__backend: ::core::marker::PhantomData,));
    let doc = format!(
        "A new `{}` on `device`, initialised like PyTorch: `Linear` layers uniform in \
         ±1/sqrt(in_features), `Param`s from N(0, 1), drawn from `rng`.",
        net.name
    );
    quote! {
        #[doc = #doc]
        pub fn new<R: #private::Rng + ?Sized>(device: &B, rng: &mut R) -> Self {
            #(#assertions)*
            Self { #(#inits,)* #marker }
        }
    }
}

/// The number of scalars in a field, as a `usize` expression.
fn param_count(field: &Field) -> TokenStream {
    match &field.kind {
        FieldKind::Layer(rule) => rule.num_params(),
        FieldKind::Param { shape } => {
            let dims = shape.0.iter().map(dim_expr);
            quote!((1 #(* #dims)*))
        }
        FieldKind::Stateless(_) => quote!(0),
    }
}

/// `NUM_PARAMS` and `summary()`: the layer table, known when the crate compiles, in the order
/// the forward pass applies the layers, with the activations a forward body applies as
/// methods, and how often each layer is used.
pub fn gen_summary(net: &Network) -> TokenStream {
    let private = private();
    let counts: Vec<TokenStream> = net.fields.iter().map(param_count).collect();
    let field_row = |index: usize, output: String| {
        let field = &net.fields[index];
        let uses: Vec<&crate::ir::Node> = net
            .nodes
            .iter()
            .filter(|node| node.op.field() == Some(index))
            .collect();
        let mut kind = describe(field).replace('`', "");
        if uses.iter().any(|node| node.region.is_some()) {
            kind.push_str(", in a loop or branch");
        } else if uses.len() > 1 {
            kind = format!("{kind}, {} uses", uses.len());
        }
        let (name, count) = (&field.state_name, &counts[index]);
        quote!((#name, #kind, #output, #count))
    };
    let mut rows = Vec::new();
    let mut listed = vec![false; net.fields.len()];
    for node in &net.nodes {
        match (&node.op, node.op.field()) {
            (_, Some(index)) if !listed[index] => {
                listed[index] = true;
                rows.push(field_row(index, node.shape.to_string()));
            }
            (
                Op::Map {
                    op, layer: None, ..
                },
                _,
            ) if op.entry.method.is_some() => {
                let args: Vec<String> = op.args.iter().map(|arg| format!("{arg:?}")).collect();
                let method = op.entry.method.unwrap_or_default();
                let mut kind = format!(".{method}({})", args.join(", "));
                if node.region.is_some() {
                    kind.push_str(", in a loop or branch");
                }
                let output = node.shape.to_string();
                rows.push(quote!(("", #kind, #output, 0)));
            }
            (
                Op::Softmax {
                    dim,
                    log,
                    layer: None,
                    ..
                },
                _,
            ) => {
                let kind = format!(".{}({dim})", if *log { "log_softmax" } else { "softmax" });
                let output = node.shape.to_string();
                rows.push(quote!(("", #kind, #output, 0)));
            }
            _ => {}
        }
    }
    // `Identity` layers compute nothing, so no node lists them.
    for index in (0..net.fields.len()).filter(|&index| !listed[index]) {
        rows.push(field_row(index, "its input".to_owned()));
    }
    let name = net.name.to_string();
    let input_shapes: Vec<String> = net
        .inputs
        .iter()
        .map(|i| format!("{}: {}", i.ident, i.shape))
        .collect();
    let header = format!("{name}({})\n", input_shapes.join(", "));
    let total = if counts.is_empty() {
        quote!(0)
    } else {
        quote!(#(#counts)+*)
    };
    let span = net.name.span();
    let header = str_lit(&header, span);
    quote! {
        /// The number of trainable scalars, known at compile time.
        pub const NUM_PARAMS: usize = #total;

        /// A table of the layers in the order `forward` applies them, and of the activations
        /// it applies as methods: name, type (with how often a layer is used), output shape
        /// and parameter count.
        pub fn summary() -> String {
            #private::summary(#header, &[#(#rows),*])
        }
    }
}

/// `train_step`: forward, loss, `zero_grad`, `backward_params` and the optimizer's step in one
/// call, for a network with one output.
pub fn gen_train_step(net: &Network) -> TokenStream {
    if net.declared_outputs.len() != 1 {
        return quote!();
    }
    let private = private();
    let inputs: Vec<_> = net
        .inputs
        .iter()
        .chain(&net.index_inputs)
        .map(|input| &input.ident)
        .collect();
    let tensors = net.inputs.iter().map(|input| &input.ident);
    let index_params = super::forward::index_params(net, false);
    let extras = super::forward::extra_params(net);
    let extra_names: Vec<_> = net.extras.iter().map(|extra| &extra.ident).collect();
    quote! {
        /// One training step, PyTorch's `optimizer.zero_grad(); loss = loss_fn(net(x),
        /// target); loss.backward(); optimizer.step()`: runs [`Self::forward_train`], computes
        /// the loss and its gradient, clears the gradients, runs [`Self::backward_params`] and
        /// steps `optimizer`. Returns the loss, still on the device (a loss without reduction
        /// is backpropagated as its sum). For other steps, call those five yourself.
        ///
        /// # Errors
        /// When an input or `target` does not fit the network or the loss, or the device
        /// fails.
        pub fn train_step<L, R>(
            &mut self,
            #(#tensors: &#private::Tensor<B>,)*
            #(#index_params,)*
            #(#extras,)*
            target: &L::Target,
            loss_fn: &L,
            optimizer: &mut #private::Optimizer<R, B>,
        ) -> #private::Result<#private::Tensor<B>>
        where
            L: #private::Loss<B> + ?Sized,
            R: #private::UpdateRule,
        {
            let (output, tape) = self.forward_train(#(#inputs,)* #(#extra_names,)*)?;
            let (loss, grad) = loss_fn.try_value_and_grad(&output, target)?;
            #private::Module::zero_grad(self);
            self.backward_params(tape, &grad)?;
            optimizer.try_step(self)?;
            Ok(loss)
        }
    }
}

/// `load(device, path)`: a new network with a safetensors file's weights.
pub fn gen_load(net: &Network) -> TokenStream {
    let private = private();
    let name = &net.name;
    let load_doc = format!(
        "A `{name}` on `device` with the weights of a safetensors file in PyTorch's `state_dict` \
         layout (see `ModuleIo::load` for the checks)."
    );
    quote! {
        #[doc = #load_doc]
        ///
        /// # Errors
        /// When the file cannot be read, is malformed, or its names, shapes or dtypes differ
        /// from the network's.
        pub fn load(device: &B, path: impl AsRef<::std::path::Path>) -> #private::Result<Self> {
            let mut net = Self::new(device, &mut #private::seeded(0));
            #private::ModuleIo::load(&mut net, path)?;
            Ok(net)
        }
    }
}

/// `Module`: the parameters with their `state_dict` names, in declaration order.
pub fn gen_module_impl(net: &Network) -> TokenStream {
    let private = private();
    let (impl_generics, ty) = generics(net);
    let stateful: Vec<(&Field, Option<usize>)> = list_heads(net).collect();
    // `visit(field, element, name)` for each stateful field (only layers when `layers_only`),
    // or for each element of a list, which a loop borrows one at a time.
    let each = |layers_only: bool,
                mutable: bool,
                visit: &dyn Fn(&Field, TokenStream, TokenStream) -> TokenStream| {
        let mut out = TokenStream::new();
        for &(field, count) in &stateful {
            if layers_only && !matches!(field.kind, FieldKind::Layer(_)) {
                continue;
            }
            let ident = &field.ident;
            let borrow = if mutable { quote!(&mut) } else { quote!(&) };
            out.extend(match count {
                Some(count) => {
                    let names = (0..count).map(|index| format!("{ident}.{index}"));
                    let body = visit(field, quote!(element), quote!(name));
                    quote! {
                        for (element, name) in (#borrow self.#ident).into_iter().zip([#(#names),*]) {
                            #body
                        }
                    }
                }
                None => {
                    let name = &field.state_name;
                    visit(field, quote!(#borrow self.#ident), quote!(#name))
                }
            });
        }
        out
    };
    let visit = each(false, false, &|field, element, name| match field.kind {
        FieldKind::Layer(_) => quote!(#private::visit_prefixed(#element, #name, f);),
        _ => quote!(f(#name, #element);),
    });
    let visit_mut = each(false, true, &|field, element, name| match field.kind {
        FieldKind::Layer(_) => quote!(#private::visit_prefixed_mut(#element, #name, f);),
        _ => quote!(f(#name, #element);),
    });
    let buffers = each(
        true,
        false,
        &|_, element, name| quote!(#private::visit_buffers_prefixed(#element, #name, f);),
    );
    let buffers_mut = each(
        true,
        true,
        &|_, element, name| quote!(#private::visit_buffers_prefixed_mut(#element, #name, f);),
    );
    let config = each(
        true,
        false,
        &|_, element, name| quote!(#private::visit_config_prefixed(#element, #name, f);),
    );
    let modes = each(
        true,
        true,
        &|_, element, _| quote!(#private::Module::set_training(#element, training);),
    );
    quote! {
        #[automatically_derived]
        #[allow(unused_variables)]
        impl<#impl_generics> #private::Module<B> for #ty {
            fn visit_params<'p>(&'p self, f: &mut dyn FnMut(&str, &'p #private::Param<B>)) {
                #visit
            }
            fn visit_params_mut<'p>(&'p mut self, f: &mut dyn FnMut(&str, &'p mut #private::Param<B>)) {
                #visit_mut
            }
            fn visit_buffers(&self, f: &mut dyn FnMut(&str, #private::Buffer<'_, B>)) {
                #buffers
            }
            fn visit_buffers_mut(&mut self, f: &mut dyn FnMut(&str, #private::BufferMut<'_, B>)) {
                #buffers_mut
            }
            fn visit_config(&self, f: &mut dyn FnMut(&str, ::std::string::String)) {
                #config
            }
            fn set_training(&mut self, training: bool) {
                #modes
            }
        }
    }
}
