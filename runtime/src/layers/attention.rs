//! [`CausalSelfAttention`]: multi-head self-attention over `[B, T, E]` where position `t`
//! attends to positions up to `t`, with the parameters of PyTorch's `nn.MultiheadAttention`
//! (`in_proj_weight` `[3E, E]` computing q, k and v in one product, `in_proj_bias`,
//! `out_proj.weight`, `out_proj.bias`), so such a module's `state_dict` loads as it is.
//!
//! The largest thing it materialises is the attention `[B, H, T, T]`, which its backward pass
//! reads (with q, k and v).

use rand::Rng;

use super::Linear;
use crate::backend::{Backend, Cpu};
use crate::error::{Error, Result};
use crate::module::{Module, visit_prefixed, visit_prefixed_mut};
use crate::network::{Layer, kept_input};
use crate::param::Param;
use crate::tensor::Tensor;

/// Causal multi-head self-attention of width `embed` with `heads` heads.
#[derive(Debug, Clone)]
pub struct CausalSelfAttention<B: Backend = Cpu> {
    /// `[3 embed, embed]`: the q, k and v projections stacked, xavier-uniform like PyTorch's.
    pub in_proj_weight: Param<B>,
    /// `[3 embed]`, zeros.
    pub in_proj_bias: Param<B>,
    /// The output projection, `embed` to `embed` (bias zeros).
    pub out_proj: Linear<B>,
    heads: usize,
}

/// What the training forward pass keeps for backward: each head's q, k, v `[B, H, T, D]`,
/// the attention `[B, H, T, T]` and the heads' output before the projection `[B, T, E]`.
#[derive(Debug)]
pub struct AttentionTape<B: Backend> {
    q: Tensor<B>,
    k: Tensor<B>,
    v: Tensor<B>,
    attention: Tensor<B>,
    heads_out: Tensor<B>,
}

impl<B: Backend> CausalSelfAttention<B> {
    /// A layer with PyTorch's `nn.MultiheadAttention` initialisation, drawn from `rng`.
    ///
    /// # Panics
    /// When `heads` is 0 or does not divide `embed` (`network!` checks it when it compiles).
    #[track_caller]
    #[must_use]
    pub fn new<R: Rng + ?Sized>(embed: usize, heads: usize, device: &B, rng: &mut R) -> Self {
        assert!(
            heads > 0 && embed.is_multiple_of(heads),
            "CausalSelfAttention: the head count {heads} does not divide the width {embed}"
        );
        let bound = (6.0 / (4 * embed) as f32).sqrt();
        let mut out_proj = Linear::new(embed, embed, true, device, rng);
        if let Some(bias) = &mut out_proj.bias {
            bias.value_mut().fill_(0.0);
        }
        Self {
            in_proj_weight: Param::new(Tensor::uniform(
                [3 * embed, embed],
                -bound,
                bound,
                device,
                rng,
            )),
            in_proj_bias: Param::new(Tensor::zeros([3 * embed], device)),
            out_proj,
            heads,
        }
    }

    fn embed(&self) -> usize {
        self.in_proj_weight.value().dims()[1]
    }

    /// The output and what backward reads, for `x` `[B, T, E]`.
    fn attend(&self, x: &Tensor<B>) -> Result<(Tensor<B>, AttentionTape<B>)> {
        let (embed, heads) = (self.embed(), self.heads);
        let &[batch, time, width] = x.dims() else {
            return Err(self.input_error(x));
        };
        if width != embed {
            return Err(self.input_error(x));
        }
        let head = embed / heads;
        // [B * T, 3E] -> [B, T, 3, H, D] -> [3, B, H, T, D]: q, k and v, head by head.
        let qkv = x
            .try_rows()?
            .try_mm(self.in_proj_weight.value().t())?
            .try_zip(
                crate::ops::binary::BinaryOp::Add,
                "attention",
                self.in_proj_bias.value(),
            )?
            .try_reshape([batch, time, 3, heads, head])?
            .try_permute(&[2, 0, 3, 1, 4])?;
        let part = |i| -> Result<Tensor<B>> {
            qkv.try_narrow(0, i, 1)?
                .try_reshape([batch, heads, time, head])
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scale = 1.0 / (head as f32).sqrt();
        let mut scores = q.try_matmul_with(&k, (false, true))?;
        scores.try_map_(crate::ops::unary::UnaryOp::MulScalar(scale))?;
        scores.try_causal_fill_(f32::NEG_INFINITY)?;
        let attention = scores.try_softmax(3)?;
        let heads_out = attention
            .try_matmul(&v)?
            .try_permute(&[0, 2, 1, 3])?
            .try_reshape([batch, time, embed])?;
        let y = self.out_proj.forward(&heads_out)?;
        let tape = AttentionTape {
            q,
            k,
            v,
            attention,
            heads_out,
        };
        Ok((y, tape))
    }

    /// Accumulates every parameter's gradient for input `x` and output gradient `grad_out`;
    /// returns the input's gradient if `input_grad`.
    ///
    /// # Errors
    /// When the shapes do not fit, or the device fails.
    pub fn backward(
        &mut self,
        x: &Tensor<B>,
        tape: AttentionTape<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let AttentionTape {
            q,
            k,
            v,
            attention,
            heads_out,
        } = tape;
        let &[batch, heads, time, head] = q.dims() else {
            return Err(self.input_error(x));
        };
        let grad_heads = self
            .out_proj
            .backward(&heads_out, grad_out, true)?
            .ok_or_else(|| Error::Usage("attention: no gradient from out_proj".to_owned()))?
            .try_reshape([batch, time, heads, head])?
            .try_permute(&[0, 2, 1, 3])?;
        // out = A v: dA = dout v^T, dv = A^T dout.
        let grad_attention = grad_heads.try_matmul_with(&v, (false, true))?;
        let grad_v = attention.try_matmul_with(&grad_heads, (true, false))?;
        // Through the softmax (masked entries have A = 0, so no gradient) and the scale.
        let mut grad_scores = grad_attention.softmax_backward(&attention, 3)?;
        grad_scores.try_map_(crate::ops::unary::UnaryOp::MulScalar(
            1.0 / (head as f32).sqrt(),
        ))?;
        // scores = q k^T: dq = dS k, dk = dS^T q.
        let grad_q = grad_scores.try_matmul(&k)?;
        let grad_k = grad_scores.try_matmul_with(&q, (true, false))?;
        // [3, B, H, T, D] back to [B * T, 3E].
        let embed = heads * head;
        let grad_qkv = Tensor::try_stack(&[&grad_q, &grad_k, &grad_v], 0)?
            .try_permute(&[1, 3, 0, 2, 4])?
            .try_reshape([batch * time, 3 * embed])?;
        let rows = x.try_rows()?;
        self.in_proj_weight
            .try_accumulate_grad_mm(grad_qkv.t(), rows)?;
        self.in_proj_bias.try_accumulate_grad_sum_rows(&grad_qkv)?;
        input_grad
            .then(|| {
                grad_qkv
                    .try_mm(self.in_proj_weight.value())?
                    .try_reshape(x.shape().clone())
            })
            .transpose()
    }

    fn input_error(&self, x: &Tensor<B>) -> Error {
        Error::Usage(format!(
            "CausalSelfAttention({}, heads {}) expects input [B, T, {}], found {}",
            self.embed(),
            self.heads,
            self.embed(),
            x.shape()
        ))
    }
}

impl<B: Backend> Module<B> for CausalSelfAttention<B> {
    fn visit_params<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Param<B>)) {
        f("in_proj_weight", &self.in_proj_weight);
        f("in_proj_bias", &self.in_proj_bias);
        visit_prefixed(&self.out_proj, "out_proj", f);
    }

    fn visit_params_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut Param<B>)) {
        f("in_proj_weight", &mut self.in_proj_weight);
        f("in_proj_bias", &mut self.in_proj_bias);
        visit_prefixed_mut(&mut self.out_proj, "out_proj", f);
    }

    /// The head count, which no weight's shape shows: a file saved with another is an error.
    fn visit_config(&self, f: &mut dyn FnMut(&str, String)) {
        f("num_heads", self.heads.to_string());
    }
}

impl<B: Backend> Layer<B> for CausalSelfAttention<B> {
    type Tape = AttentionTape<B>;

    fn layer_forward(&self, x: &Tensor<B>) -> Result<Tensor<B>> {
        Ok(self.attend(x)?.0)
    }

    fn layer_forward_train(&self, x: &Tensor<B>) -> Result<(Tensor<B>, AttentionTape<B>)> {
        self.attend(x)
    }

    fn layer_backward(
        &mut self,
        x: Option<&Tensor<B>>,
        tape: AttentionTape<B>,
        grad_out: &Tensor<B>,
        input_grad: bool,
    ) -> Result<Option<Tensor<B>>> {
        let x = kept_input("CausalSelfAttention", x)?;
        self.backward(x, tape, grad_out, input_grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    fn objective(layer: &CausalSelfAttention, x: &Tensor, weights: &Tensor) -> f64 {
        let y = layer.layer_forward(x).unwrap().to_vec();
        y.iter()
            .zip(weights.to_vec())
            .map(|(y, w)| f64::from(y * w))
            .sum()
    }

    /// The input's and every parameter's gradient against central differences.
    #[test]
    fn gradients_match_finite_differences() {
        let mut layer = CausalSelfAttention::new(4, 2, &Cpu, &mut seeded(0));
        // Non-zero biases, so their gradients are exercised too.
        layer
            .in_proj_bias
            .set_value(Tensor::randn([12], &Cpu, &mut seeded(1)))
            .unwrap();
        let x = Tensor::randn([2, 3, 4], &Cpu, &mut seeded(2));
        let weights = Tensor::randn([2, 3, 4], &Cpu, &mut seeded(3));
        let (_, tape) = layer.layer_forward_train(&x).unwrap();
        let grad_x = layer
            .layer_backward(Some(&x), tape, &weights, true)
            .unwrap()
            .unwrap()
            .to_vec();
        let h = 1e-2f32;
        let check = |analytic: f32, numeric: f64, what: &str| {
            let numeric = numeric as f32;
            assert!(
                (analytic - numeric).abs() < 1e-2 * numeric.abs().max(1.0),
                "{what}: {analytic} vs {numeric}"
            );
        };
        for i in 0..x.numel() {
            let at = |delta: f32| {
                let mut data = x.to_vec();
                data[i] += delta;
                objective(&layer, &Tensor::from_vec(data, [2, 3, 4], &Cpu), &weights)
            };
            check(
                grad_x[i],
                (at(h) - at(-h)) / f64::from(2.0 * h),
                &format!("input {i}"),
            );
        }
        let grads: Vec<(String, Vec<f32>)> = layer
            .params()
            .iter()
            .map(|(name, p)| (name.to_string(), p.grad().unwrap().to_vec()))
            .collect();
        for (name, analytic) in grads {
            for (j, &value) in analytic.iter().enumerate() {
                let at = |delta: f32| {
                    let mut probe = layer.clone();
                    probe.visit_params_mut(&mut |n, p| {
                        if n == name {
                            let mut data = p.value().to_vec();
                            data[j] += delta;
                            let shape = p.value().shape().clone();
                            p.set_value(Tensor::from_vec(data, shape, &Cpu)).unwrap();
                        }
                    });
                    objective(&probe, &x, &weights)
                };
                check(
                    value,
                    (at(h) - at(-h)) / f64::from(2.0 * h),
                    &format!("{name} {j}"),
                );
            }
        }
    }

    /// Position `t` sees positions up to `t` only: changing the last one leaves the others.
    #[test]
    fn attention_is_causal_and_names_follow_multihead_attention() {
        let layer = CausalSelfAttention::new(8, 2, &Cpu, &mut seeded(4));
        assert_eq!(
            layer.param_names(),
            [
                "in_proj_weight",
                "in_proj_bias",
                "out_proj.weight",
                "out_proj.bias"
            ]
        );
        let x = Tensor::randn([1, 5, 8], &Cpu, &mut seeded(5));
        let mut data = x.to_vec();
        data[4 * 8] += 1.0;
        let moved = Tensor::from_vec(data, [1, 5, 8], &Cpu);
        let (a, b) = (
            layer.layer_forward(&x).unwrap().to_vec(),
            layer.layer_forward(&moved).unwrap().to_vec(),
        );
        assert_eq!(a[..32], b[..32]);
        assert_ne!(a[32..], b[32..]);
        let error = layer
            .layer_forward(&Tensor::zeros([2, 5], &Cpu))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "usage: CausalSelfAttention(8, heads 2) expects input [B, T, 8], found [2, 5]"
        );
    }
}
