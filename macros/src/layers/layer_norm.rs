//! `LayerNorm<len>` with `eps`, `elementwise_affine = false` and `bias = false` as named
//! options (PyTorch's names and defaults): the runtime's `layers::LayerNorm`, normalising the
//! last dim, which must be `len`. The output has the input's shape.

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

struct LayerNorm {
    len: Dim,
    eps: f32,
    affine: bool,
    bias: bool,
}

/// Reads `LayerNorm<len>` and its named options.
pub fn check(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let (mut eps, mut affine, mut bias) = (1e-5, true, true);
    let mut dims = Vec::new();
    let mut ok = true;
    for arg in &ty.args {
        match arg {
            LayerArg::Dim(dim) => dims.push(resolve_dim(dim, const_generics, false, errors)),
            LayerArg::Named { name, value } => {
                let read = match (name.to_string().as_str(), value) {
                    ("elementwise_affine", syn::Lit::Bool(value)) => {
                        affine = value.value;
                        true
                    }
                    ("bias", syn::Lit::Bool(value)) => {
                        bias = value.value;
                        true
                    }
                    ("eps", syn::Lit::Float(value)) => match value.base10_parse::<f32>() {
                        Ok(value) if value > 0.0 && value.is_finite() => {
                            eps = value;
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                };
                if !read {
                    errors.at(
                        name.span(),
                        format!(
                            "`LayerNorm` takes `eps = <positive number>`, \
                             `elementwise_affine = <bool>` and `bias = <bool>`; found `{name}`"
                        ),
                    );
                    ok = false;
                }
            }
            other => {
                errors.at(
                    other.span(),
                    "`LayerNorm` takes `normalized_shape`, then named options",
                );
                ok = false;
            }
        }
    }
    let [len] = &dims[..] else {
        errors.over(
            ty.tokens.to_token_stream(),
            format!(
                "`LayerNorm` takes 1 dim (the last dim's size), got {}: write `LayerNorm<64>`",
                dims.len()
            ),
        );
        return None;
    };
    if matches!(len.kind, DimKind::Named(_)) {
        return None;
    }
    ok.then(|| {
        FieldKind::Layer(Box::new(LayerNorm {
            len: len.clone(),
            eps,
            affine,
            bias,
        }))
    })
}

impl LayerRule for LayerNorm {
    fn describe(&self) -> String {
        let mut options = Vec::new();
        if self.eps != 1e-5 {
            options.push(format!(", eps = {:?}", self.eps));
        }
        if !self.affine {
            options.push(", elementwise_affine = false".to_owned());
        } else if !self.bias {
            options.push(", bias = false".to_owned());
        }
        format!("LayerNorm<{}{}>", self.len, options.concat())
    }

    fn field_type(&self) -> TokenStream {
        let private = private();
        quote!(#private::layers::LayerNorm<B>)
    }

    fn init(&self) -> TokenStream {
        let private = private();
        let len = dim_expr(&self.len);
        let Self {
            eps, affine, bias, ..
        } = *self;
        quote! {
            #private::layers::LayerNorm::new(
                #len,
                #private::layers::LayerNormConfig {
                    eps: #eps,
                    elementwise_affine: #affine,
                    bias: #bias,
                },
                device,
            )
        }
    }

    fn num_params(&self) -> TokenStream {
        let len = dim_expr(&self.len);
        let count = usize::from(self.affine) + usize::from(self.affine && self.bias);
        quote!((#count * #len))
    }

    fn output_shape(
        &self,
        x: &Shape,
        _at: Span,
        assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        let len = &self.len;
        let fits = x.0.last().is_some_and(|last| unify(len, last, assertions));
        if fits {
            return Ok(x.clone());
        }
        let mut dims: Vec<String> = x.0.iter().map(ToString::to_string).collect();
        match dims.last_mut() {
            Some(last) => *last = len.to_string(),
            None => dims.push(len.to_string()),
        }
        Err(Mismatch {
            expected: format!("input `[{}]`", dims.join(", ")),
            declared: Some((len.span, format!("is declared with {len} features here"))),
        })
    }

    fn input_span(&self) -> Option<Span> {
        Some(self.len.span)
    }

    fn reads_input(&self) -> bool {
        true
    }

    fn recovered_shape(&self, x: &Shape) -> Option<Shape> {
        Some(x.clone())
    }
}
