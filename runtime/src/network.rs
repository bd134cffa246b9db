//! Support for code that `network!` generates: checks at a network's entry, gradient
//! accumulation in backward passes, and compile-time dim equalities.

use std::borrow::Cow;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::module::Module;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// A loop's records in a generated tape, one per iteration: the first eight inline, so a
/// training step with short loops allocates nothing for them.
pub type LoopRecords<T> = smallvec::SmallVec<[T; 8]>;

/// A layer with state that a network applies like `fc(x)`: [`Linear`](crate::layers::Linear),
/// and every network `network!` generates with one `[batch, in]` (or `[B, T, in]`) input and
/// a `[batch, out]` (`[B, T, out]`) output, so networks nest. The generated code calls every layer through this trait alone.
pub trait Layer<B: Backend>: Module<B> {
    /// What one training forward pass saves for its backward pass besides the input, which
    /// the calling network keeps when the layer needs it; owns everything.
    type Tape;

    /// The forward pass for inference.
    ///
    /// # Errors
    /// When `x`'s shape is not one the layer takes, or the device fails.
    fn layer_forward(&self, x: &Tensor<B>) -> Result<Tensor<B>>;

    /// The forward pass for training: the output and the tape.
    ///
    /// # Errors
    /// As [`Layer::layer_forward`].
    fn layer_forward_train(&self, x: &Tensor<B>) -> Result<(Tensor<B>, Self::Tape)>;

    /// [`Layer::layer_forward_train`] of an input the caller has no further use for: a layer
    /// whose tape keeps its input (a nested network) keeps `x` instead of a copy.
    ///
    /// # Errors
    /// As [`Layer::layer_forward`].
    fn layer_forward_train_owned(&self, x: Tensor<B>) -> Result<(Tensor<B>, Self::Tape)> {
        self.layer_forward_train(&x)
    }

    /// Accumulates the parameters' gradients for the output gradient; returns the input
    /// gradient if `input_grad`. `x` is the input the tape was made from, when the layer's
    /// `network!` rule has the network keep it; a layer whose tape holds all it needs (a
    /// dropout mask, a nested network's own tape) gets `None`.
    ///
    /// # Errors
    /// When `grad_out` does not have the output's shape, the layer needs `x` and got `None`
    /// ([`kept_input`]), or the device fails.
    fn layer_backward(
        &mut self,
        x: Option<&Tensor<B>>,
        tape: Self::Tape,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>>;
}

/// The input a [`Layer::layer_backward`] was given, or an error naming `layer`, whose backward
/// pass needs it.
///
/// # Errors
/// [`Error::Usage`] when `x` is `None`.
pub fn kept_input<'x, B: Backend>(layer: &str, x: Option<&'x Tensor<B>>) -> Result<&'x Tensor<B>> {
    x.ok_or_else(|| {
        Error::Usage(format!(
            "{layer} backward needs the input of its forward pass, and was given none"
        ))
    })
}

/// The rank and feature widths of a generated network used as a [`Layer`], as constants the
/// outer network's shapes are checked against at compile time.
pub trait LayerShape {
    /// The input's rank: 2 for `[batch, IN_FEATURES]`, 3 for `[B, T, IN_FEATURES]`.
    const INPUT_RANK: usize;
    /// The width of the input's last dim.
    const IN_FEATURES: usize;
    /// The width of the output's last dim (the leading dims are the input's).
    const OUT_FEATURES: usize;
}

/// An input held by a tape: borrowed from the caller, or owned once the tape is kept by an
/// outer network (see [`owned`]).
pub type TapeInput<'a, B> = Cow<'a, Tensor<B>>;

/// A tape input that no longer borrows: a copy of a borrowed tensor.
///
/// # Errors
/// When the device cannot copy.
pub fn owned<B: Backend>(input: TapeInput<'_, B>) -> Result<TapeInput<'static, B>> {
    Ok(Cow::Owned(match input {
        Cow::Borrowed(tensor) => tensor.try_clone()?,
        Cow::Owned(tensor) => tensor,
    }))
}

/// Adds `grad` to the adjoint in `slot` (or puts it there, if empty): how a value used several
/// times in a forward pass gets the sum of its gradients.
///
/// # Errors
/// When the shapes differ (a bug in the generated code) or the device fails.
pub fn accumulate<B: Backend>(slot: &mut Option<Tensor<B>>, grad: Tensor<B>) -> Result<()> {
    match slot {
        Some(sum) => sum.try_zip_(crate::ops::binary::BinaryOp::Add, "accumulate", &grad),
        None => {
            *slot = Some(grad);
            Ok(())
        }
    }
}

/// [`accumulate`] for a borrowed gradient, copied only when the slot is empty.
///
/// # Errors
/// As [`accumulate`].
pub fn accumulate_ref<B: Backend>(slot: &mut Option<Tensor<B>>, grad: &Tensor<B>) -> Result<()> {
    match slot {
        Some(sum) => sum.try_zip_(crate::ops::binary::BinaryOp::Add, "accumulate", grad),
        None => {
            *slot = Some(grad.try_clone()?);
            Ok(())
        }
    }
}

/// The gradient of an output with respect to a value it does not depend on: zeros of `like`'s
/// shape. Returned for inputs that do not reach the output.
///
/// # Errors
/// When the device cannot allocate.
pub fn grad_or_zeros<B: Backend>(slot: Option<Tensor<B>>, like: &Tensor<B>) -> Result<Tensor<B>> {
    slot.map_or_else(
        || Tensor::try_zeros(like.shape().clone(), like.device()),
        Ok,
    )
}

/// Checks that `grad_out` has the shape of the output it is the gradient of.
///
/// # Errors
/// [`Error::GradShape`] naming both shapes.
pub fn check_grad_out<B: Backend>(
    network: &'static str,
    output: &Shape,
    grad_out: &Tensor<B>,
) -> Result<()> {
    if grad_out.shape() == output {
        Ok(())
    } else {
        Err(Error::GradShape {
            network,
            expected: output.clone(),
            found: grad_out.shape().clone(),
        })
    }
}

/// A dimension as a type, so rustc can check dims the macro cannot compare (const generics).
#[derive(Debug, Clone, Copy)]
pub struct Dim<const N: usize>;

/// Compiles only when both dims are the same type: `same_dim(Dim::<H>, Dim::<100>)` is a type
/// error pointing at the declaration that disagrees.
pub fn same_dim<const N: usize>(_: Dim<N>, _: Dim<N>) {}

/// A dim of a declared input shape: a number, or a name bound on entry (`B` for the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredDim {
    /// A size known when the network was compiled (a literal or a const generic).
    Fixed(usize),
    /// A size named in the declaration and bound by the first input that has it.
    Named(&'static str),
}

/// The sizes named dims took in one call, so every input agrees on them.
#[derive(Debug, Default)]
pub struct DimBindings {
    bound: smallvec::SmallVec<[(&'static str, usize, &'static str); 4]>,
}

impl DimBindings {
    /// The size named dim `name` took from the inputs (0 if no input has it, which the macro
    /// rules out).
    #[must_use]
    pub fn size(&self, name: &str) -> usize {
        self.bound
            .iter()
            .find(|bound| bound.0 == name)
            .map_or(0, |bound| bound.1)
    }

    /// Checks `found` against `declared` for input `input` of `network`, binding named dims.
    ///
    /// # Errors
    /// [`Error::InputShape`] naming the input, the declared and found shapes and the first dim
    /// that disagrees.
    pub fn check(
        &mut self,
        network: &'static str,
        input: &'static str,
        declared: &[DeclaredDim],
        found: &Shape,
    ) -> Result<()> {
        let error = |detail: String| Error::InputShape {
            network,
            input,
            declared: display_declared(declared),
            found: found.clone(),
            detail,
        };
        if found.rank() != declared.len() {
            return Err(error(format!(
                "expected {} dims, found {}",
                declared.len(),
                found.rank()
            )));
        }
        for (index, (dim, &size)) in declared.iter().zip(found.dims()).enumerate() {
            match *dim {
                DeclaredDim::Fixed(expected) if size != expected => {
                    return Err(error(format!("dim {index} is {size}, expected {expected}")));
                }
                DeclaredDim::Fixed(_) => {}
                DeclaredDim::Named(name) => match self.bound.iter().find(|b| b.0 == name) {
                    Some(&(_, bound, from)) if bound != size => {
                        return Err(error(format!(
                            "dim {index} (`{name}`) is {size}, but `{name}` is {bound} from `{from}`"
                        )));
                    }
                    Some(_) => {}
                    None => self.bound.push((name, size, input)),
                },
            }
        }
        Ok(())
    }
}

fn display_declared(declared: &[DeclaredDim]) -> String {
    let dims: Vec<String> = declared
        .iter()
        .map(|dim| match dim {
            DeclaredDim::Fixed(size) => size.to_string(),
            DeclaredDim::Named(name) => (*name).to_owned(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// One row of a network's `summary()`: name, type, output shape, parameter count.
pub type SummaryRow = (&'static str, &'static str, &'static str, usize);

/// A network's layer table, as `summary()` prints it: `header`, one line per row, and the total.
#[must_use]
pub fn summary(header: &str, rows: &[SummaryRow]) -> String {
    use std::fmt::Write;
    let mut out = String::from(header);
    let mut line = |name: &str, kind: &str, output: &str, count: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{name:<14} {kind:<28} {output:<16} {count:>10}");
    };
    line("layer", "type", "output", &"params");
    for (name, kind, output, count) in rows {
        line(name, kind, output, count);
    }
    let total: usize = rows.iter().map(|row| row.3).sum();
    line("total", "", "", &total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeclaredDim::{Fixed, Named};

    #[test]
    fn binds_named_dims_and_reports_disagreements() {
        let mut bindings = DimBindings::default();
        let declared = [Named("B"), Fixed(1000)];
        bindings
            .check("Net::forward", "x", &declared, &Shape::from([64, 1000]))
            .unwrap();
        let error = bindings
            .check(
                "Net::forward",
                "y",
                &[Named("B"), Fixed(10)],
                &Shape::from([32, 10]),
            )
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Net::forward: input `y` must have shape [B, 10], found [32, 10]: \
             dim 0 (`B`) is 32, but `B` is 64 from `x`"
        );
    }

    #[test]
    fn accumulate_sums_contributions() {
        let mut slot = None;
        accumulate(&mut slot, Tensor::ones([2], &crate::Cpu)).unwrap();
        accumulate_ref(&mut slot, &Tensor::ones([2], &crate::Cpu)).unwrap();
        assert_eq!(slot.as_ref().unwrap().to_vec(), [2.0, 2.0]);
        let like = Tensor::ones([3], &crate::Cpu);
        assert_eq!(grad_or_zeros(None, &like).unwrap().to_vec(), [0.0; 3]);
        let error = check_grad_out("Net::backward", &Shape::from([2]), &like).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Net::backward: `grad_out` must have the output's shape [2], found [3]"
        );
    }

    #[test]
    fn fixed_dims_and_rank() {
        let mut bindings = DimBindings::default();
        let declared = [Named("B"), Fixed(1000)];
        let error = bindings
            .check("Net::forward", "x", &declared, &Shape::from([64, 999]))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Net::forward: input `x` must have shape [B, 1000], found [64, 999]: \
             dim 1 is 999, expected 1000"
        );
        let error = bindings
            .check("Net::forward", "x", &declared, &Shape::from([1000]))
            .unwrap_err();
        assert!(
            error.to_string().ends_with("expected 2 dims, found 1"),
            "{error}"
        );
    }
}
