//! Layers with parameters, their PyTorch initialisation, and their forward and backward passes.
//! `network!` declares fields of these types and calls these methods.

/// `Module` for a layer type whose parameters are `weight` and an optional `bias`.
macro_rules! weight_and_bias_params {
    ($layer:ident) => {
        impl<B: crate::backend::Backend> crate::module::Module<B> for $layer<B> {
            fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a crate::param::Param<B>)) {
                f("weight", &self.weight);
                if let Some(bias) = &self.bias {
                    f("bias", bias);
                }
            }

            fn visit_params_mut<'a>(
                &'a mut self,
                f: &mut dyn FnMut(&str, &'a mut crate::param::Param<B>),
            ) {
                f("weight", &mut self.weight);
                if let Some(bias) = &mut self.bias {
                    f("bias", bias);
                }
            }
        }
    };
}

/// [`weight_and_bias_params`], and `Layer` for a layer type whose inherent `forward(x)` /
/// `backward(x, grad_out, input_grad)` need nothing but the input, which the network's tape
/// keeps (its rule reads it); so the layer's own tape is empty.
macro_rules! weight_and_bias_layer {
    ($layer:ident) => {
        weight_and_bias_params!($layer);

        impl<B: crate::backend::Backend> crate::network::Layer<B> for $layer<B> {
            type Tape = ();

            fn layer_forward(
                &self,
                x: &crate::tensor::Tensor<B>,
            ) -> crate::error::Result<crate::tensor::Tensor<B>> {
                self.forward(x)
            }

            fn layer_forward_train(
                &self,
                x: &crate::tensor::Tensor<B>,
            ) -> crate::error::Result<(crate::tensor::Tensor<B>, ())> {
                Ok((self.forward(x)?, ()))
            }

            fn layer_backward(
                &mut self,
                x: Option<&crate::tensor::Tensor<B>>,
                (): (),
                grad_out: &crate::tensor::Tensor<B>,
                input_grad: bool,
            ) -> crate::error::Result<Option<crate::tensor::Tensor<B>>> {
                let x = crate::network::kept_input(stringify!($layer), x)?;
                self.backward(x, grad_out, input_grad)
            }
        }
    };
}

mod attention;
mod batch_norm;
mod conv;
mod dropout;
mod embedding;
mod layer_norm;
mod linear;

pub use attention::{AttentionTape, CausalSelfAttention};
pub use batch_norm::{BatchNorm, BatchNormConfig, BatchNormKind, BatchNormTape};
pub use conv::{Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use linear::Linear;
