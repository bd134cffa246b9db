//! [`Embedding`]: PyTorch's `nn.Embedding(num, dim)`, a table of `num` rows of `dim` looked
//! up by [`Indices`]; its gradient adds each output row's gradient into the row it came from.

use rand::Rng;

use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::module::Module;
use crate::ops::index::Indices;
use crate::param::Param;
use crate::shape::Dims;
use crate::tensor::Tensor;

/// A lookup table of `[num, dim]` (`weight`, drawn from N(0, 1) like PyTorch's).
///
/// ```
/// use declnet_runtime::layers::Embedding;
/// use declnet_runtime::ops::index::Indices;
/// use declnet_runtime::{Cpu, Tensor, rng::seeded};
/// let mut table = Embedding::new(10, 4, &Cpu, &mut seeded(0));
/// let ids = Indices::with_shape(&[1, 3, 3, 9], [2, 2], &Cpu)?;
/// let y = table.forward(&ids)?;
/// assert_eq!(y.dims(), &[2, 2, 4]);
/// table.backward(&ids, &Tensor::ones([2, 2, 4], &Cpu))?;
/// let grad = table.weight.grad().unwrap().to_vec();
/// assert_eq!(grad[3 * 4..4 * 4], [2.0; 4]); // row 3 was looked up twice
/// # Ok::<(), declnet_runtime::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Embedding<B: Backend = Cpu> {
    /// `[num, dim]`.
    pub weight: Param<B>,
}

impl<B: Backend> Embedding<B> {
    /// A table of `num` rows of `dim`, drawn from N(0, 1) with `rng`.
    #[must_use]
    pub fn new<R: Rng + ?Sized>(num: usize, dim: usize, device: &B, rng: &mut R) -> Self {
        Self {
            weight: Param::new(Tensor::randn([num, dim], device, rng)),
        }
    }

    fn dim(&self) -> usize {
        self.weight.value().dims()[1]
    }

    /// The rows `ids` name, shaped `[..ids, dim]`.
    ///
    /// # Errors
    /// [`Error::Usage`] for an index past the table (it names the index and the table's size).
    pub fn forward(&self, ids: &Indices<B>) -> Result<Tensor<B>> {
        let num = self.weight.value().dims()[0];
        if ids.bound() > num {
            return Err(Error::Usage(format!(
                "Embedding({num}, {}): index {} is out of range for a table of {num} rows",
                self.dim(),
                ids.bound() - 1
            )));
        }
        let flat = Indices::from_kernel(
            ids.as_tensor().try_clone()?.try_reshape([ids.len()])?,
            ids.bound(),
        );
        let rows = self.weight.value().try_index_select(0, &flat)?;
        let mut dims = Dims::from_slice(ids.shape().dims());
        dims.push(self.dim());
        rows.try_reshape(dims)
    }

    /// Adds the gradient of the rows `ids` looked up, `grad_out` `[..ids, dim]`, into the
    /// table's gradient (rows looked up twice get both).
    ///
    /// # Errors
    /// [`Error::Shape`] when `grad_out` is not the output's shape.
    pub fn backward(&mut self, ids: &Indices<B>, grad_out: &Tensor<B>) -> Result<()> {
        let mut expected = Dims::from_slice(ids.shape().dims());
        expected.push(self.dim());
        if grad_out.dims() != expected.as_slice() {
            return Err(Error::Shape {
                op: "Embedding backward",
                expected: expected.into(),
                found: grad_out.shape().clone(),
            });
        }
        self.weight.try_accumulate_grad_with(|grad, beta| {
            if beta == 0.0 {
                let device = grad.device().clone();
                device.fill(&mut grad.storage, 0.0)?;
            }
            grad.try_index_add_rows_(ids, grad_out)
        })
    }
}

impl<B: Backend> Module<B> for Embedding<B> {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param<B>)) {
        f("weight", &self.weight);
    }

    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param<B>)) {
        f("weight", &mut self.weight);
    }
}
