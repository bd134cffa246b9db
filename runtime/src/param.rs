//! [`Param`]: a trainable tensor and the gradient a backward pass accumulates into it.

use crate::backend::Backend;
use crate::backend::Cpu;
use crate::error::{Error, Result, or_panic};
use crate::ops::matmul::MatView;
use crate::tensor::Tensor;

/// A trainable tensor with its gradient.
///
/// The gradient buffer is allocated once; "no gradient" (PyTorch's `grad is None` after
/// `zero_grad()`) is a flag, so clearing costs nothing and the first accumulation overwrites
/// instead of adding. A parameter used several times in a forward pass (weight sharing) gets the
/// sum of its gradients. Optimizers skip parameters without a gradient, like PyTorch's.
#[derive(Debug, Clone)]
pub struct Param<B: Backend = Cpu> {
    value: Tensor<B>,
    grad: Tensor<B>,
    has_grad: bool,
}

impl<B: Backend> Param<B> {
    /// A parameter holding `value`, without a gradient.
    #[must_use]
    pub fn new(value: Tensor<B>) -> Self {
        let grad = value.zeros_like();
        Self {
            value,
            grad,
            has_grad: false,
        }
    }

    /// The current value.
    #[must_use]
    pub fn value(&self) -> &Tensor<B> {
        &self.value
    }

    /// The value, for in-place updates (optimizers, manual SGD).
    pub fn value_mut(&mut self) -> &mut Tensor<B> {
        &mut self.value
    }

    /// Replaces the value with `value`, which must have the same shape.
    ///
    /// # Errors
    /// [`Error::Shape`] when the shapes differ; the parameter is left unchanged.
    pub fn set_value(&mut self, value: Tensor<B>) -> Result<()> {
        if value.shape() != self.value.shape() {
            return Err(Error::Shape {
                op: "set_value",
                expected: self.value.shape().clone(),
                found: value.shape().clone(),
            });
        }
        self.value = value;
        Ok(())
    }

    /// The gradient accumulated since the last [`Param::zero_grad`], if any.
    #[must_use]
    pub fn grad(&self) -> Option<&Tensor<B>> {
        self.has_grad.then_some(&self.grad)
    }

    /// The value to update and the gradient to update it with, borrowed together.
    pub fn value_and_grad_mut(&mut self) -> (&mut Tensor<B>, Option<&Tensor<B>>) {
        (&mut self.value, self.has_grad.then_some(&self.grad))
    }

    /// Forgets the gradient, like PyTorch's `zero_grad()` (which sets it to `None`).
    pub fn zero_grad(&mut self) {
        self.has_grad = false;
    }

    /// The gradient's buffer, whether or not it holds a gradient now: for engines that
    /// average it in place.
    pub(crate) fn grad_storage_mut(&mut self) -> &mut B::Storage {
        &mut self.grad.storage
    }

    /// Adds `grad` to the gradient (or sets it, if there is none yet).
    #[track_caller]
    pub fn accumulate_grad(&mut self, grad: &Tensor<B>) {
        or_panic(self.try_accumulate_grad(grad));
    }

    /// Adds `grad` to the gradient (or sets it, if there is none yet).
    ///
    /// # Errors
    /// [`Error::InPlaceShape`] when `grad` does not have the parameter's shape.
    pub fn try_accumulate_grad(&mut self, grad: &Tensor<B>) -> Result<()> {
        if grad.shape() != self.value.shape() {
            return Err(Error::InPlaceShape {
                op: "accumulate_grad",
                target: self.value.shape().clone(),
                result: grad.shape().clone(),
            });
        }
        if self.has_grad {
            self.grad.try_add_scaled_(1.0, grad)?;
        } else {
            self.grad.try_copy_(grad)?;
        }
        self.has_grad = true;
        Ok(())
    }

    /// Adds the column sums of `grad` (`[.., n]`, summed over every leading dim; `[n]` itself
    /// has none) to this `[n]` gradient: a bias's gradient from its layer's output gradient. Sums straight into the
    /// buffer when there is no gradient yet (the usual case after `zero_grad`).
    ///
    /// # Errors
    /// [`Error::InPlaceShape`] when `grad` is not `[.., n]` for this `[n]` parameter.
    pub fn try_accumulate_grad_sum_rows(&mut self, grad: &Tensor<B>) -> Result<()> {
        let Some(&cols) = grad.dims().last() else {
            return Err(self.sum_rows_error(grad));
        };
        if self.value.dims() != [cols] {
            return Err(self.sum_rows_error(grad));
        }
        if grad.rank() == 1 {
            return self.try_accumulate_grad(grad); // no leading dim to sum over
        }
        let rows = grad.dims()[..grad.rank() - 1].iter().product();
        if self.has_grad {
            let sums = grad.try_sum_to_shape(self.value.shape())?;
            self.grad.try_add_scaled_(1.0, &sums)?;
        } else {
            let device = self.grad.device.clone();
            device.sum_axis(&grad.storage, 1, rows, cols, &mut self.grad.storage)?;
        }
        self.has_grad = true;
        Ok(())
    }

    fn sum_rows_error(&self, grad: &Tensor<B>) -> Error {
        Error::InPlaceShape {
            op: "accumulate_grad_sum_rows",
            target: self.value.shape().clone(),
            result: grad.shape().clone(),
        }
    }

    /// Adds the product `a x b` to the gradient without a temporary (one GEMM with beta 0 or 1):
    /// how a `Linear` weight's gradient `dy^T x` is accumulated.
    #[track_caller]
    pub fn accumulate_grad_mm<'a>(
        &mut self,
        a: impl Into<MatView<'a, B>>,
        b: impl Into<MatView<'a, B>>,
    ) where
        B: 'a,
    {
        or_panic(self.try_accumulate_grad_mm(a, b));
    }

    /// Adds the product `a x b` to the gradient.
    ///
    /// # Errors
    /// As [`Tensor::try_addmm_`]; the gradient is left unchanged.
    pub fn try_accumulate_grad_mm<'a>(
        &mut self,
        a: impl Into<MatView<'a, B>>,
        b: impl Into<MatView<'a, B>>,
    ) -> Result<()>
    where
        B: 'a,
    {
        self.try_accumulate_grad_with(|grad, beta| grad.try_addmm_(a, b, beta, 1.0))
    }

    /// Lets `write` add into the gradient buffer without a temporary: it gets the buffer and
    /// the `beta` to scale what is there by, 0 when there is no gradient yet (overwrite) and
    /// 1 otherwise (accumulate). How layers sum products straight into their gradients.
    ///
    /// # Errors
    /// What `write` returns. A `write` that fails after writing leaves a gradient that was
    /// already there partly updated, so it should check before it writes.
    pub fn try_accumulate_grad_with(
        &mut self,
        write: impl FnOnce(&mut Tensor<B>, f32) -> Result<()>,
    ) -> Result<()> {
        let beta = if self.has_grad { 1.0 } else { 0.0 };
        write(&mut self.grad, beta)?;
        self.has_grad = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param() -> Param {
        Param::new(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], [2, 2], &Cpu))
    }

    #[test]
    fn starts_without_gradient_and_accumulates() {
        let mut p = param();
        assert!(p.grad().is_none());
        let g = Tensor::ones([2, 2], &Cpu);
        p.accumulate_grad(&g);
        p.accumulate_grad(&g);
        assert_eq!(p.grad().unwrap().to_vec(), [2.0; 4]);
        p.zero_grad();
        assert!(p.grad().is_none());
        p.accumulate_grad(&g);
        assert_eq!(
            p.grad().unwrap().to_vec(),
            [1.0; 4],
            "first gradient after zero_grad overwrites"
        );
    }

    #[test]
    fn accumulates_products_in_place() {
        let mut p = param();
        let x = Tensor::from_vec(vec![1.0, 2.0], [1, 2], &Cpu);
        p.accumulate_grad_mm(x.t(), &x);
        p.accumulate_grad_mm(x.t(), &x);
        assert_eq!(p.grad().unwrap().to_vec(), [2.0, 4.0, 4.0, 8.0]);
    }

    #[test]
    fn accumulates_column_sums() {
        let mut bias = Param::new(Tensor::zeros([2], &Cpu));
        let grad = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2], &Cpu);
        bias.try_accumulate_grad_sum_rows(&grad).unwrap();
        assert_eq!(bias.grad().unwrap().to_vec(), [9.0, 12.0]);
        bias.try_accumulate_grad_sum_rows(&grad).unwrap();
        assert_eq!(bias.grad().unwrap().to_vec(), [18.0, 24.0]);
        bias.zero_grad();
        bias.try_accumulate_grad_sum_rows(&grad).unwrap();
        assert_eq!(
            bias.grad().unwrap().to_vec(),
            [9.0, 12.0],
            "overwrites the old buffer"
        );
        let row = Tensor::from_vec(vec![1.0, 2.0], [2], &Cpu);
        bias.try_accumulate_grad_sum_rows(&row).unwrap();
        assert_eq!(
            bias.grad().unwrap().to_vec(),
            [10.0, 14.0],
            "a [n] gradient adds as it is"
        );
        let error = bias
            .try_accumulate_grad_sum_rows(&Tensor::zeros([3, 4], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "accumulate_grad_sum_rows: cannot write a result of shape [3, 4] into a tensor of shape [2]"
        );
    }

    #[test]
    fn rejects_misshaped_gradients_and_values() {
        let mut p = param();
        let error = p.try_accumulate_grad(&Tensor::ones([4], &Cpu)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "accumulate_grad: cannot write a result of shape [4] into a tensor of shape [2, 2]"
        );
        assert!(p.grad().is_none());
        let x = Tensor::ones([3, 1], &Cpu);
        assert!(p.try_accumulate_grad_mm(&x, x.t()).is_err());
        assert!(p.grad().is_none(), "a failed accumulation adds nothing");
        assert!(p.set_value(Tensor::ones([2], &Cpu)).is_err());
        assert_eq!(p.value().to_vec(), [1.0, 2.0, 3.0, 4.0]);
    }
}
