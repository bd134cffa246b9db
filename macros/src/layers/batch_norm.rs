//! `BatchNorm1d<C>` and `BatchNorm2d<C>` with `eps`, `momentum` and `affine = false` as named
//! options (PyTorch's names and defaults): the runtime's `layers::BatchNorm`, on `[N, C]` or
//! `[N, C, L]` and on `[N, C, H, W]`. The output has the input's shape.

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

struct BatchNorm {
    two_d: bool,
    features: Dim,
    eps: f32,
    momentum: f32,
    affine: bool,
}

/// Reads `BatchNorm1d<features>` or `BatchNorm2d<features>` and its named options.
pub fn check(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let name = ty.name.to_string();
    let mut layer = BatchNorm {
        two_d: name == "BatchNorm2d",
        features: Dim::lit(0, ty.name.span()),
        eps: 1e-5,
        momentum: 0.1,
        affine: true,
    };
    let mut dims = Vec::new();
    let mut ok = true;
    for arg in &ty.args {
        match arg {
            LayerArg::Dim(dim) => dims.push(resolve_dim(dim, const_generics, false, errors)),
            LayerArg::Named { name, value } => {
                let option = name.to_string();
                let read = match (option.as_str(), value) {
                    ("affine", syn::Lit::Bool(value)) => {
                        layer.affine = value.value;
                        true
                    }
                    ("eps" | "momentum", value) => match positive_float(value) {
                        Some(number) if option == "eps" => {
                            layer.eps = number;
                            true
                        }
                        Some(number) if number <= 1.0 => {
                            layer.momentum = number;
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                };
                if !read {
                    let message = match option.as_str() {
                        "affine" => "`affine` takes `true` or `false`".to_owned(),
                        "eps" => "`eps` takes a positive number, like `eps = 1e-3`".to_owned(),
                        "momentum" => {
                            "`momentum` takes a number in (0, 1], like `momentum = 0.01`".to_owned()
                        }
                        _ => format!(
                            "unknown `{name}` option `{option}`; the options are `eps`, \
                             `momentum` and `affine`",
                            name = ty.name
                        ),
                    };
                    errors.at(name.span(), message);
                    ok = false;
                }
            }
            other => {
                errors.at(
                    other.span(),
                    format!("`{}` takes `num_features`, then named options", ty.name),
                );
                ok = false;
            }
        }
    }
    let [features] = &dims[..] else {
        errors.over(
            ty.tokens.to_token_stream(),
            format!(
                "`{name}` takes 1 dim (num_features), got {}: write `{name}<16>`",
                dims.len()
            ),
        );
        return None;
    };
    if matches!(features.kind, DimKind::Named(_)) {
        return None;
    }
    layer.features = features.clone();
    ok.then(|| FieldKind::Layer(Box::new(layer)))
}

/// A float or integer literal's value, if positive.
fn positive_float(lit: &syn::Lit) -> Option<f32> {
    let value = match lit {
        syn::Lit::Float(float) => float.base10_parse::<f32>().ok()?,
        syn::Lit::Int(int) => int.base10_parse::<f32>().ok()?,
        _ => return None,
    };
    (value > 0.0 && value.is_finite()).then_some(value)
}

impl BatchNorm {
    fn name(&self) -> &'static str {
        if self.two_d {
            "BatchNorm2d"
        } else {
            "BatchNorm1d"
        }
    }
}

impl LayerRule for BatchNorm {
    fn describe(&self) -> String {
        let mut options = Vec::new();
        if self.eps != 1e-5 {
            options.push(format!(", eps = {}", self.eps));
        }
        if self.momentum != 0.1 {
            options.push(format!(", momentum = {}", self.momentum));
        }
        if !self.affine {
            options.push(", affine = false".to_owned());
        }
        format!("{}<{}{}>", self.name(), self.features, options.concat())
    }

    fn field_type(&self) -> TokenStream {
        let private = private();
        quote!(#private::layers::BatchNorm<B>)
    }

    fn init(&self) -> TokenStream {
        let private = private();
        let features = dim_expr(&self.features);
        let kind = if self.two_d {
            quote!(TwoD)
        } else {
            quote!(OneD)
        };
        let Self {
            eps,
            momentum,
            affine,
            ..
        } = *self;
        quote! {
            #private::layers::BatchNorm::new(
                #private::layers::BatchNormKind::#kind,
                #features,
                #private::layers::BatchNormConfig {
                    eps: #eps,
                    momentum: #momentum,
                    affine: #affine,
                },
                device,
            )
        }
    }

    fn num_params(&self) -> TokenStream {
        let features = dim_expr(&self.features);
        if self.affine {
            quote!((2 * #features))
        } else {
            quote!(0)
        }
    }

    fn output_shape(
        &self,
        x: &Shape,
        _at: Span,
        assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        let features = &self.features;
        let expected = if self.two_d {
            format!("input `[N, {features}, H, W]`")
        } else {
            format!("input `[N, {features}]` or `[N, {features}, L]`")
        };
        let rank_fits = if self.two_d {
            x.0.len() == 4
        } else {
            matches!(x.0.len(), 2 | 3)
        };
        if !rank_fits {
            return Err(Mismatch {
                expected,
                declared: None,
            });
        }
        if !unify(features, &x.0[1], assertions) {
            let mut dims: Vec<String> = x.0.iter().map(ToString::to_string).collect();
            dims[1] = features.to_string();
            return Err(Mismatch {
                expected: format!("input `[{}]`", dims.join(", ")),
                declared: Some((
                    features.span,
                    format!("is declared with {features} features here"),
                )),
            });
        }
        Ok(x.clone())
    }

    fn input_span(&self) -> Option<Span> {
        Some(self.features.span)
    }

    fn reads_input(&self) -> bool {
        true
    }

    fn recovered_shape(&self, x: &Shape) -> Option<Shape> {
        Some(x.clone())
    }
}
