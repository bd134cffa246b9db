//! `Conv2d<IN, OUT, K>` with `stride`, `padding`, `dilation`, `groups` and `bias = false` as
//! named options (PyTorch's names and defaults): `nn.Conv2d` on `[N, IN, H, W]`, the runtime's
//! `layers::Conv2d`. The output's height and width are computed when the crate compiles.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::Ident;

use super::{LayerRule, Mismatch};
use crate::check::resolve_dim;
use crate::codegen::{dim_expr, private};
use crate::errors::Errors;
use crate::ir::{Dim, DimAssertion, DimKind, FieldKind, Shape};
use crate::parse::{LayerArg, LayerType};
use crate::shape::unify;

struct Conv2d {
    input: Dim,
    output: Dim,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
    bias: bool,
}

/// Reads `Conv2d<in, out, kernel>` and its named options.
pub fn check(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let mut dims = Vec::new();
    let mut options = [
        ("stride", 1),
        ("padding", 0),
        ("dilation", 1),
        ("groups", 1),
    ];
    let mut bias = true;
    let mut ok = true;
    for arg in &ty.args {
        match arg {
            LayerArg::Dim(dim) => dims.push((dim, resolve_dim(dim, const_generics, false, errors))),
            LayerArg::Named { name, value } if name == "bias" => match value {
                syn::Lit::Bool(value) => bias = value.value,
                other => {
                    errors.over(other, "`bias` takes `true` or `false`");
                    ok = false;
                }
            },
            LayerArg::Named { name, value } => {
                let slot = options.iter_mut().find(|(option, _)| name == option);
                let value = match value {
                    syn::Lit::Int(int) => int.base10_parse::<usize>().ok(),
                    _ => None,
                };
                match (slot, value) {
                    (Some(slot), Some(value)) => slot.1 = value,
                    (Some(_), None) => {
                        errors.at(
                            name.span(),
                            format!("`{name}` takes a non-negative integer"),
                        );
                        ok = false;
                    }
                    (None, _) => {
                        errors.at(
                            name.span(),
                            format!(
                                "unknown `Conv2d` option `{name}`; the options are `stride`, \
                                 `padding`, `dilation`, `groups` and `bias`"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            other => {
                errors.at(
                    other.span(),
                    "`Conv2d` takes `in_channels, out_channels, kernel_size`, then named options",
                );
                ok = false;
            }
        }
    }
    let [(_, input), (_, output), (kernel_decl, kernel)] = &dims[..] else {
        errors.over(
            ty.tokens.to_token_stream(),
            format!(
                "`Conv2d` takes 3 dims (in_channels, out_channels, kernel_size), got {}: write \
                 `Conv2d<1, 16, 3>`",
                dims.len()
            ),
        );
        return None;
    };
    let DimKind::Lit(kernel_size) = kernel.kind else {
        errors.at(
            kernel_decl.span(),
            "the kernel size of `Conv2d` must be a number",
        );
        return None;
    };
    let [stride, padding, dilation, groups] = options.map(|(_, value)| value);
    if stride == 0 || dilation == 0 || groups == 0 || kernel_size == 0 {
        errors.at(
            ty.name.span(),
            "`Conv2d`'s kernel, stride, dilation and groups must be positive",
        );
        return None;
    }
    for dim in [input, output] {
        if let DimKind::Lit(channels) = dim.kind
            && channels % groups != 0
        {
            errors.at(
                dim.span,
                format!("`groups = {groups}` does not divide {channels} channels"),
            );
            ok = false;
        }
        if matches!(dim.kind, DimKind::Named(_)) {
            ok = false;
        }
    }
    ok.then(|| {
        FieldKind::Layer(Box::new(Conv2d {
            input: input.clone(),
            output: output.clone(),
            kernel: kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
        }))
    })
}

impl Conv2d {
    /// The output size along a spatial dim of `size`, PyTorch's formula, or `None` when the
    /// dilated kernel is larger than the padded input.
    fn output_size(&self, size: usize) -> Option<usize> {
        let span = self.dilation * (self.kernel - 1) + 1;
        let padded = size + 2 * self.padding;
        (span <= padded).then(|| (padded - span) / self.stride + 1)
    }

    fn spatial(&self, x: &Shape) -> Option<[usize; 2]> {
        match x.0.as_slice() {
            [_, _, h, w] => match (&h.kind, &w.kind) {
                (DimKind::Lit(h), DimKind::Lit(w)) => {
                    Some([self.output_size(*h)?, self.output_size(*w)?])
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl LayerRule for Conv2d {
    fn describe(&self) -> String {
        let mut options = Vec::new();
        for (name, value, default) in [
            ("stride", self.stride, 1),
            ("padding", self.padding, 0),
            ("dilation", self.dilation, 1),
            ("groups", self.groups, 1),
        ] {
            if value != default {
                options.push(format!(", {name} = {value}"));
            }
        }
        if !self.bias {
            options.push(", bias = false".to_owned());
        }
        format!(
            "Conv2d<{}, {}, {}{}>",
            self.input,
            self.output,
            self.kernel,
            options.concat()
        )
    }

    fn field_type(&self) -> TokenStream {
        let private = private();
        quote!(#private::layers::Conv2d<B>)
    }

    fn init(&self) -> TokenStream {
        let private = private();
        let (input, output) = (dim_expr(&self.input), dim_expr(&self.output));
        let Self {
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
            ..
        } = *self;
        quote! {
            #private::layers::Conv2d::new(
                #input,
                #output,
                #kernel,
                #private::layers::Conv2dConfig {
                    stride: #stride,
                    padding: #padding,
                    dilation: #dilation,
                    groups: #groups,
                    bias: #bias,
                },
                device,
                rng,
            )
        }
    }

    fn num_params(&self) -> TokenStream {
        let (input, output) = (dim_expr(&self.input), dim_expr(&self.output));
        let (kernel, groups) = (self.kernel, self.groups);
        let bias = if self.bias {
            quote!(+ #output)
        } else {
            quote!()
        };
        quote!((#output * (#input / #groups) * #kernel * #kernel #bias))
    }

    fn output_shape(
        &self,
        x: &Shape,
        _at: Span,
        assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        let declared = Some((
            self.input.span,
            format!("is declared with {} input channels here", self.input),
        ));
        let [batch, channels, h, w] = x.0.as_slice() else {
            return Err(Mismatch {
                expected: format!("a `[N, {}, H, W]` input", self.input),
                declared: None,
            });
        };
        if !unify(&self.input, channels, assertions) {
            return Err(Mismatch {
                expected: format!("input `[{batch}, {}, {h}, {w}]`", self.input),
                declared,
            });
        }
        let Some([out_h, out_w]) = self.spatial(x) else {
            let span = self.dilation * (self.kernel - 1) + 1;
            return Err(Mismatch {
                expected: format!(
                    "a height and width given as numbers, at least {span} with padding {} \
                     (its kernel is {k}x{k}, dilation {})",
                    self.padding,
                    self.dilation,
                    k = self.kernel
                ),
                declared: None,
            });
        };
        Ok(Shape(vec![
            batch.clone(),
            self.output.clone(),
            Dim::lit(out_h, self.output.span),
            Dim::lit(out_w, self.output.span),
        ]))
    }

    fn reads_input(&self) -> bool {
        true
    }

    fn recovered_shape(&self, x: &Shape) -> Option<Shape> {
        let [out_h, out_w] = self.spatial(x)?;
        Some(Shape(vec![
            x.0[0].clone(),
            self.output.clone(),
            Dim::lit(out_h, self.output.span),
            Dim::lit(out_w, self.output.span),
        ]))
    }

    fn input_span(&self) -> Option<Span> {
        Some(self.input.span)
    }
}
