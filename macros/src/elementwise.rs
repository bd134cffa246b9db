//! The elementwise ops of a forward body, one row each: the method (`.relu()`, also callable
//! as `relu(h)`), the activation layer (`ReLU`), the runtime's `UnaryOp` that computes it, its
//! scalar parameters with PyTorch's defaults, and what its backward rule reads. Lowering,
//! planning and codegen read this table and name no op themselves; the formulas live in the
//! runtime's table (`runtime/src/ops/unary/mod.rs`).

/// How an op's backward rule turns the output's gradient into the input's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grad {
    /// Passes it on unchanged (`x + c`, `Identity`).
    Identity,
    /// Applies the op itself to it, since the op is linear (`-x`, `x * c`).
    Linear,
    /// Multiplies it by the derivative at the op's input (`pow`, `log`).
    FromInput,
    /// Multiplies it by the derivative, computed from the op's output (`relu`, `sigmoid`,
    /// `tanh`, `exp`): the tape keeps the output only.
    FromOutput,
    /// Multiplies it by the derivative, which the training forward pass computes with the
    /// output in one pass and the tape keeps instead of the input: for ops whose derivative
    /// costs as much as the op (`gelu`, `silu`, `mish`), and then shares most of its work.
    Derivative,
}

/// One elementwise op.
#[derive(Debug, PartialEq)]
pub struct Elementwise {
    /// Its method in a forward body, if it has one.
    pub method: Option<&'static str>,
    /// Its activation layer type, if it has one.
    pub layer: Option<&'static str>,
    /// The runtime `UnaryOp` variant; empty for `Identity`, which computes nothing.
    pub variant: &'static str,
    /// Its scalar parameters: name and PyTorch's default (`None`: the argument is required).
    pub params: &'static [(&'static str, Option<f32>)],
    pub grad: Grad,
}

const fn row(
    method: Option<&'static str>,
    layer: Option<&'static str>,
    variant: &'static str,
    params: &'static [(&'static str, Option<f32>)],
    grad: Grad,
) -> Elementwise {
    Elementwise {
        method,
        layer,
        variant,
        params,
        grad,
    }
}

use Grad::{Derivative, FromInput, FromOutput, Identity, Linear};

/// Every elementwise op `network!` knows.
#[rustfmt::skip]
pub const TABLE: &[Elementwise] = &[
    row(Some("relu"), Some("ReLU"), "Relu", &[], FromOutput),
    row(Some("sigmoid"), Some("Sigmoid"), "Sigmoid", &[], FromOutput),
    row(Some("tanh"), Some("Tanh"), "Tanh", &[], FromOutput),
    row(Some("gelu"), Some("GELU"), "Gelu", &[], Derivative),
    row(Some("silu"), Some("SiLU"), "Silu", &[], Derivative),
    row(Some("mish"), Some("Mish"), "Mish", &[], Derivative),
    row(Some("leaky_relu"), Some("LeakyReLU"), "LeakyRelu", &[("negative_slope", Some(0.01))], FromInput),
    row(Some("elu"), Some("ELU"), "Elu", &[("alpha", Some(1.0))], FromInput),
    row(Some("softplus"), Some("Softplus"), "Softplus", &[("beta", Some(1.0)), ("threshold", Some(20.0))], FromInput),
    row(Some("hardtanh"), Some("Hardtanh"), "Hardtanh", &[("min_val", Some(-1.0)), ("max_val", Some(1.0))], FromInput),
    row(Some("relu6"), Some("ReLU6"), "Relu6", &[], FromInput),
    row(None, Some("Identity"), "", &[], Identity),
    row(Some("exp"), None, "Exp", &[], FromOutput),
    row(Some("log"), None, "Log", &[], FromInput),
    row(Some("sqrt"), None, "Sqrt", &[], FromOutput),
    row(Some("abs"), None, "Abs", &[], FromInput),
    row(Some("sin"), None, "Sin", &[], FromInput),
    row(Some("cos"), None, "Cos", &[], FromInput),
    row(Some("neg"), None, "Neg", &[], Linear),
    row(Some("clamp_min"), None, "ClampMin", &[("min", None)], FromInput),
    row(Some("pow"), None, "Pow", &[("exponent", None)], FromInput),
    // What the operators `x + c` and `x * c` lower to.
    row(None, None, "AddScalar", &[("other", None)], Identity),
    row(None, None, "MulScalar", &[("other", None)], Linear),
];

/// The row of method `name`.
pub fn method(name: &str) -> Option<&'static Elementwise> {
    TABLE.iter().find(|entry| entry.method == Some(name))
}

/// The row of layer type `name`.
pub fn layer(name: &str) -> Option<&'static Elementwise> {
    TABLE.iter().find(|entry| entry.layer == Some(name))
}

/// The row of runtime variant `variant`.
fn variant(variant: &str) -> &'static Elementwise {
    TABLE
        .iter()
        .find(|entry| entry.variant == variant)
        .unwrap_or_else(|| unreachable!("`{variant}` is a row of the table"))
}

/// An op of the table with its arguments, one per parameter.
#[derive(Clone, Debug)]
pub struct MapOp {
    pub entry: &'static Elementwise,
    pub args: Vec<f32>,
}

impl MapOp {
    /// `x + scalar`.
    pub fn add_scalar(scalar: f32) -> Self {
        Self {
            entry: variant("AddScalar"),
            args: vec![scalar],
        }
    }

    /// `x * scalar`.
    pub fn mul_scalar(scalar: f32) -> Self {
        Self {
            entry: variant("MulScalar"),
            args: vec![scalar],
        }
    }

    /// `-x`.
    pub fn neg() -> Self {
        Self {
            entry: variant("Neg"),
            args: Vec::new(),
        }
    }

    /// `x^exponent`.
    pub fn pow(exponent: f32) -> Self {
        Self {
            entry: variant("Pow"),
            args: vec![exponent],
        }
    }

    /// `entry` with the arguments given, the parameters' defaults after them; or a message
    /// saying which are missing or extra, for `what` (`` `.leaky_relu()` ``).
    pub fn with_args(
        entry: &'static Elementwise,
        given: &[f32],
        what: &str,
    ) -> Result<Self, String> {
        let params = entry.params;
        if given.len() > params.len() {
            let count = params.len();
            return Err(if count == 0 {
                format!("{what} takes no arguments")
            } else {
                format!(
                    "{what} takes at most {count} number{}: {}",
                    if count == 1 { "" } else { "s" },
                    param_list(entry)
                )
            });
        }
        let mut args = given.to_vec();
        for (name, default) in &params[given.len()..] {
            match default {
                Some(value) => args.push(*value),
                None => return Err(format!("{what} needs a number for its `{name}`")),
            }
        }
        Ok(Self { entry, args })
    }

    /// The layer type with its arguments, as the user would write it: `LeakyReLU<0.2>`.
    pub fn layer_name(&self) -> String {
        let name = self.entry.layer.unwrap_or(self.entry.variant);
        if self.args.is_empty() {
            name.to_owned()
        } else {
            let args: Vec<String> = self.args.iter().map(|arg| format!("{arg:?}")).collect();
            format!("{name}<{}>", args.join(", "))
        }
    }
}

/// `negative_slope` (default 0.01), ... for messages.
fn param_list(entry: &Elementwise) -> String {
    let params: Vec<String> = entry
        .params
        .iter()
        .map(|(name, default)| match default {
            Some(value) => format!("`{name}` (default {value:?})"),
            None => format!("`{name}`"),
        })
        .collect();
    params.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                assert!(a.method.is_none() || a.method != b.method, "{a:?}");
                assert!(a.layer.is_none() || a.layer != b.layer, "{a:?}");
                assert!(a.variant.is_empty() || a.variant != b.variant, "{a:?}");
            }
        }
    }

    #[test]
    fn arguments_take_defaults_and_report_what_is_missing() {
        let leaky = layer("LeakyReLU").unwrap();
        assert_eq!(MapOp::with_args(leaky, &[], "x").unwrap().args, [0.01]);
        assert_eq!(MapOp::with_args(leaky, &[0.2], "x").unwrap().args, [0.2]);
        assert_eq!(
            MapOp::with_args(leaky, &[0.2, 0.3], "`LeakyReLU`").unwrap_err(),
            "`LeakyReLU` takes at most 1 number: `negative_slope` (default 0.01)"
        );
        assert_eq!(
            MapOp::with_args(method("pow").unwrap(), &[], "`.pow()`").unwrap_err(),
            "`.pow()` needs a number for its `exponent`"
        );
        assert_eq!(
            MapOp::with_args(method("relu").unwrap(), &[1.0], "`.relu()`").unwrap_err(),
            "`.relu()` takes no arguments"
        );
    }
}
