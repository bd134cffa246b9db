//! `Linear<in, out>` and `Linear<in, out, bias = false>`: PyTorch's `nn.Linear` on the last dim
//! of `[batch, in]` or `[B, T, in]`, the runtime's `Linear`.

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

struct Linear {
    input: Dim,
    output: Dim,
    bias: bool,
}

/// Reads `Linear<in, out>` or `Linear<in, out, bias = false>`.
pub fn check(ty: &LayerType, const_generics: &[Ident], errors: &mut Errors) -> Option<FieldKind> {
    let mut dims = Vec::new();
    let mut bias = true;
    for arg in &ty.args {
        match arg {
            LayerArg::Dim(dim) => dims.push(resolve_dim(dim, const_generics, false, errors)),
            LayerArg::Named { name, value } if name == "bias" => match value {
                syn::Lit::Bool(value) => bias = value.value,
                other => errors.over(other, "`bias` takes `true` or `false`"),
            },
            LayerArg::Named { name, .. } => {
                errors.at(
                    name.span(),
                    format!("unknown `Linear` option `{name}`; the only option is `bias = false`"),
                );
            }
            LayerArg::Shape(shape) => {
                errors.at(
                    shape.span,
                    "`Linear` takes two dims, `Linear<in_features, out_features>`, not a shape",
                );
            }
            LayerArg::Negative(_, span) | LayerArg::Float(_, span) => {
                errors.at(
                    *span,
                    "a dim must be a non-negative integer that fits in `usize`",
                );
            }
        }
    }
    // A dim that is not a const generic was reported by `resolve_dim`, a negative one above;
    // a layer built from them would only add errors that are not the user's.
    if dims.iter().any(|dim| matches!(dim.kind, DimKind::Named(_)))
        || ty
            .args
            .iter()
            .any(|arg| matches!(arg, LayerArg::Negative(..) | LayerArg::Float(..)))
    {
        return None;
    }
    if dims.len() != 2 {
        errors.over(
            ty.tokens.to_token_stream(),
            format!(
                "`Linear` takes 2 dims (in_features, out_features), got {}: write `Linear<784, 128>`",
                dims.len()
            ),
        );
        return None;
    }
    let output = dims.pop()?;
    let input = dims.pop()?;
    Some(FieldKind::Layer(Box::new(Linear {
        input,
        output,
        bias,
    })))
}

impl Linear {
    /// `x`'s shape with the last dim replaced by the output's.
    fn applied(&self, x: &Shape) -> Shape {
        let mut dims = x.0.clone();
        if let Some(last) = dims.last_mut() {
            *last = self.output.clone();
        }
        Shape(dims)
    }
}

impl LayerRule for Linear {
    fn describe(&self) -> String {
        let (input, output) = (&self.input, &self.output);
        if self.bias {
            format!("Linear<{input}, {output}>")
        } else {
            format!("Linear<{input}, {output}, bias = false>")
        }
    }

    fn field_type(&self) -> TokenStream {
        let private = private();
        quote!(#private::layers::Linear<B>)
    }

    fn init(&self) -> TokenStream {
        let private = private();
        let (input, output, bias) = (dim_expr(&self.input), dim_expr(&self.output), self.bias);
        quote!(#private::layers::Linear::new(#input, #output, #bias, device, rng))
    }

    fn num_params(&self) -> TokenStream {
        let (input, output) = (dim_expr(&self.input), dim_expr(&self.output));
        if self.bias {
            quote!((#input * #output + #output))
        } else {
            quote!((#input * #output))
        }
    }

    fn output_shape(
        &self,
        x: &Shape,
        _at: Span,
        assertions: &mut Vec<DimAssertion>,
    ) -> Result<Shape, Mismatch> {
        // Applied to the last dim, like `nn.Linear`: `[N, in]`, `[B, T, in]`.
        if x.0.len() >= 2 && unify(&self.input, &x.0[x.0.len() - 1], assertions) {
            return Ok(self.applied(x));
        }
        let mut dims: Vec<String> = x.0.iter().map(ToString::to_string).collect();
        // A `[N, C, H, W]` feature map needs flattening first, as in PyTorch.
        let feature_map = dims.len() == 4;
        if let (2 | 3, Some(last)) = (x.0.len(), dims.last_mut()) {
            *last = self.input.to_string();
        } else {
            let batch = dims.first().cloned().unwrap_or_else(|| "batch".to_owned());
            dims = vec![batch, self.input.to_string()];
        }
        let hint = if feature_map {
            " (flatten it first: `.flatten(1)` or a `Flatten` layer)"
        } else {
            ""
        };
        Err(Mismatch {
            expected: format!("input `[{}]`{hint}", dims.join(", ")),
            declared: Some((
                self.input.span,
                format!("is declared with {} input features here", self.input),
            )),
        })
    }

    fn reads_input(&self) -> bool {
        true
    }

    /// `[.., out]` for a `[.., features]` input of the wrong width (not a feature map, which
    /// wanted flattening: a guess would mislead the checks after it).
    fn recovered_shape(&self, x: &Shape) -> Option<Shape> {
        matches!(x.0.len(), 2 | 3).then(|| self.applied(x))
    }

    fn input_span(&self) -> Option<Span> {
        Some(self.input.span)
    }
}
