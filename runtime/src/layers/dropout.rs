//! [`Dropout`]: PyTorch's `nn.Dropout`. In training mode each forward pass zeroes every element
//! with probability `p` and scales the rest by `1 / (1 - p)`, with a fresh mask drawn from the
//! layer's own seeded generator; in evaluation mode it passes its input through.
//!
//! A mask is a seed ([`DropoutMask`]): the training forward pass keeps it on the tape and the
//! backward pass applies the same mask to the gradient. The generator sits behind a lock so
//! that forward passes keep taking `&self`.

use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};

use rand::Rng;

use crate::backend::{Backend, Cpu};
use crate::error::Result;
use crate::module::Module;
use crate::network::Layer;
use crate::ops::dropout::DropoutMask;
use crate::param::Param;
use crate::rng::{SeededRng, seeded};
use crate::tensor::Tensor;

/// Dropout with probability `p`, in training mode until [`Module::eval`].
#[derive(Debug)]
pub struct Dropout<B: Backend = Cpu> {
    p: f32,
    training: bool,
    masks: Mutex<SeededRng>,
    backend: PhantomData<fn() -> B>,
}

impl<B: Backend> Dropout<B> {
    /// A dropout of probability `p` whose masks come from a generator seeded from `rng`.
    ///
    /// # Panics
    /// When `p` is not in `[0, 1]` (`network!` checks it when it compiles).
    #[track_caller]
    #[must_use]
    pub fn new<R: Rng + ?Sized>(p: f32, rng: &mut R) -> Self {
        crate::error::or_panic(Self::try_new(p, rng))
    }

    /// [`Dropout::new`], with an error for a bad `p`.
    ///
    /// # Errors
    /// [`Error::Usage`](crate::Error::Usage) when `p` is not in `[0, 1]`.
    pub fn try_new<R: Rng + ?Sized>(p: f32, rng: &mut R) -> Result<Self> {
        DropoutMask::new(p, 0)?;
        Ok(Self {
            p,
            training: true,
            masks: Mutex::new(seeded(rng.next_u64())),
            backend: PhantomData,
        })
    }

    /// The probability of dropping an element.
    #[must_use]
    pub fn p(&self) -> f32 {
        self.p
    }

    /// The next mask, or `None` in evaluation mode.
    fn next_mask(&self) -> Result<Option<DropoutMask>> {
        if !self.training || self.p == 0.0 {
            return Ok(None);
        }
        // A generator is never left half-updated, so a poisoned lock is still usable.
        let seed = self
            .masks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_u64();
        DropoutMask::new(self.p, seed).map(Some)
    }

    fn apply(x: &Tensor<B>, mask: Option<&DropoutMask>) -> Result<Tensor<B>> {
        match mask {
            Some(mask) => x.try_dropout(mask),
            None => x.try_clone(),
        }
    }
}

impl<B: Backend> Module<B> for Dropout<B> {
    fn visit_params<'a>(&'a self, _: &mut dyn FnMut(&str, &'a Param<B>)) {}

    fn visit_params_mut<'a>(&'a mut self, _: &mut dyn FnMut(&str, &'a mut Param<B>)) {}

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

impl<B: Backend> Layer<B> for Dropout<B> {
    /// The mask the forward pass applied (`None`: it passed the input through).
    type Tape = Option<DropoutMask>;

    fn layer_forward(&self, x: &Tensor<B>) -> Result<Tensor<B>> {
        Self::apply(x, self.next_mask()?.as_ref())
    }

    fn layer_forward_train(&self, x: &Tensor<B>) -> Result<(Tensor<B>, Self::Tape)> {
        let mask = self.next_mask()?;
        Ok((Self::apply(x, mask.as_ref())?, mask))
    }

    fn layer_backward(
        &mut self,
        _: Option<&Tensor<B>>,
        mask: Self::Tape,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        input_grad
            .then(|| Self::apply(grad_out, mask.as_ref()))
            .transpose()
    }
}
