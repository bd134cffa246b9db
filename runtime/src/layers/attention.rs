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
use crate::ops::matmul::{Gemm, GemmBatch, Strided};
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

/// What the training forward pass keeps for backward: q, k and v `[B * T, 3E]` (as the input
/// projection computes them: row `t` of a sequence holds q, k and v of every head in turn),
/// the attention `[B, H, T, T]` and the heads' output before the projection `[B, T, E]`.
#[derive(Debug)]
pub struct AttentionTape<B: Backend> {
    qkv: Tensor<B>,
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
        // [B * T, 3E]: each head reads its q, k and v in place, rows 3E apart.
        let mut qkv = x.try_rows()?.try_mm(self.in_proj_weight.value().t())?;
        qkv.try_zip_(
            crate::ops::binary::BinaryOp::Add,
            "attention",
            self.in_proj_bias.value(),
        )?;
        let products = HeadProducts {
            batch,
            heads,
            time,
            head,
        };
        let scores = products.scores((&qkv, Q), (&qkv, K), (false, true))?;
        let attention = scores.try_causal_softmax(products.scale())?;
        // Each head's rows into its columns of [B, T, E].
        let mut heads_out = Tensor::try_empty([batch, time, embed], x.device())?;
        products.rows_into(
            (&attention, Heads::Scores),
            (&qkv, V),
            false,
            (&mut heads_out, ONE_PART),
        )?;
        let y = self.out_proj.forward(&heads_out)?;
        let tape = AttentionTape {
            qkv,
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
            qkv,
            attention,
            heads_out,
        } = tape;
        let &[batch, time, embed] = x.dims() else {
            return Err(self.input_error(x));
        };
        if embed != self.embed() {
            return Err(self.input_error(x));
        }
        let heads = self.heads;
        let products = HeadProducts {
            batch,
            heads,
            time,
            head: embed / heads,
        };
        // [B, T, E], each head's rows in its columns.
        let grad_heads = self
            .out_proj
            .backward(&heads_out, grad_out, true)?
            .ok_or_else(|| Error::Usage("attention: no gradient from out_proj".to_owned()))?;
        // out = A v: dA = dout v^T, dv = A^T dout.
        let grad_attention = products.scores((&grad_heads, ONE_PART), (&qkv, V), (false, true))?;
        // dq, dk and dv in one [B * T, 3E] tensor, in q, k and v's places (each product
        // sums over T > 0 positions: every element is written).
        let mut grad_qkv = Tensor::try_empty(qkv.shape().clone(), x.device())?;
        let scores = Heads::Scores;
        products.rows_into(
            (&attention, scores),
            (&grad_heads, ONE_PART),
            true,
            (&mut grad_qkv, V),
        )?;
        // Through the softmax and the scale (masked entries get no gradient).
        let grad_scores =
            grad_attention.try_causal_softmax_backward(&attention, products.scale())?;
        // scores = q k^T: dq = dS k, dk = dS^T q.
        let (q, k) = ((&qkv, Q), (&qkv, K));
        products.rows_into((&grad_scores, scores), k, false, (&mut grad_qkv, Q))?;
        products.rows_into((&grad_scores, scores), q, true, (&mut grad_qkv, K))?;
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

/// q, k and v's places in the input projection's `[B * T, 3E]`.
const Q: Heads = Heads::Rows { part: 0, parts: 3 };
const K: Heads = Heads::Rows { part: 1, parts: 3 };
const V: Heads = Heads::Rows { part: 2, parts: 3 };

/// The heads' rows of a `[B, T, E]` tensor.
const ONE_PART: Heads = Heads::Rows { part: 0, parts: 1 };

/// Where a tensor holds each head's matrix.
#[derive(Debug, Clone, Copy)]
enum Heads {
    /// `[B, H, T, T]`: each head's `[T, T]` after the last.
    Scores,
    /// Part `part` of `parts` in each row of `[B, T, parts * E]`: head `h`'s `[T, D]` in
    /// columns `part * E + h * D..` of its sequence's rows.
    Rows { part: usize, parts: usize },
}

/// The per-head products of `batch * heads` heads over `time` positions of `head` features,
/// each one batched GEMM over the heads in groups of a sequence's, read and written in place
/// (q, k and v in the projection's rows, the heads' output in the output projection's).
#[derive(Debug, Clone, Copy)]
struct HeadProducts {
    batch: usize,
    heads: usize,
    time: usize,
    head: usize,
}

impl HeadProducts {
    /// The scores' scale, `1 / sqrt(D)`.
    fn scale(self) -> f32 {
        1.0 / (self.head as f32).sqrt()
    }

    /// Where `heads` lie, as the operand of a batched product.
    fn strided(self, heads: Heads) -> Strided {
        let Self {
            heads: count,
            time,
            head,
            ..
        } = self;
        match heads {
            Heads::Scores => Strided {
                step: time * time,
                group_step: count * time * time,
                ..Strided::default()
            },
            Heads::Rows { part, parts } => {
                let row = parts * count * head;
                Strided {
                    offset: part * count * head,
                    step: head,
                    group_step: time * row,
                    row_stride: row,
                }
            }
        }
    }

    /// Each head's `a b^T` of two `[T, D]` operands, in a new `[B, H, T, T]` tensor.
    fn scores<B: Backend>(
        self,
        a: (&Tensor<B>, Heads),
        b: (&Tensor<B>, Heads),
        transposed: (bool, bool),
    ) -> Result<Tensor<B>> {
        let gemm = head_gemm((self.time, self.time, self.head), transposed);
        let dims = [self.batch, self.heads, self.time, self.time];
        // The products overwrite every element, unless there is nothing to sum.
        let mut c = if gemm.k > 0 {
            Tensor::try_empty(dims, a.0.device())?
        } else {
            Tensor::try_zeros(dims, a.0.device())?
        };
        self.product_into(&gemm, a, b, (&mut c, Heads::Scores))?;
        Ok(c)
    }

    /// Each head's `op(a) b` of `[T, T]` scores `a` (transposed when `transpose_a`) and a
    /// `[T, D]` operand `b`, written over its rows of `c` (`T > 0`: every one is written).
    fn rows_into<B: Backend>(
        self,
        a: (&Tensor<B>, Heads),
        b: (&Tensor<B>, Heads),
        transpose_a: bool,
        c: (&mut Tensor<B>, Heads),
    ) -> Result<()> {
        let gemm = head_gemm((self.time, self.head, self.time), (transpose_a, false));
        self.product_into(&gemm, a, b, c)
    }

    /// Each head's `gemm` of its matrices in `a` and `b`, written over its matrix in `c`.
    fn product_into<B: Backend>(
        self,
        gemm: &Gemm,
        (a, a_heads): (&Tensor<B>, Heads),
        (b, b_heads): (&Tensor<B>, Heads),
        (c, c_heads): (&mut Tensor<B>, Heads),
    ) -> Result<()> {
        let batch = GemmBatch {
            count: self.batch * self.heads,
            group: self.heads,
            a: self.strided(a_heads),
            b: self.strided(b_heads),
            c: self.strided(c_heads),
        };
        a.check_same_device("attention", b)?;
        a.check_same_device("attention", c)?;
        a.device()
            .gemm_batched(gemm, &batch, &a.storage, &b.storage, &mut c.storage)
    }
}

/// One head's GEMM of `m x k` by `k x n`.
fn head_gemm((m, n, k): (usize, usize, usize), (trans_a, trans_b): (bool, bool)) -> Gemm {
    Gemm {
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha: 1.0,
        beta: 0.0,
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

    /// A layer of width 4 with 2 heads and non-zero biases (so their gradients are
    /// exercised too).
    fn layer(seed: u64) -> CausalSelfAttention {
        let mut layer = CausalSelfAttention::new(4, 2, &Cpu, &mut seeded(seed));
        let bias = Tensor::randn([12], &Cpu, &mut seeded(seed + 1));
        layer.in_proj_bias.set_value(bias).unwrap();
        layer
    }

    /// The gradients of input elements `inputs` and of every parameter against central
    /// differences, for input `x`.
    fn check_gradients(mut layer: CausalSelfAttention, x: &Tensor, inputs: &[usize]) {
        let weights = Tensor::randn(x.shape().clone(), &Cpu, &mut seeded(3));
        let (_, tape) = layer.layer_forward_train(x).unwrap();
        let grad_x = layer
            .layer_backward(Some(x), tape, &weights, true)
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
        for &i in inputs {
            let at = |delta: f32| {
                let mut data = x.to_vec();
                data[i] += delta;
                let moved = Tensor::from_vec(data, x.shape().clone(), &Cpu);
                objective(&layer, &moved, &weights)
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
                    objective(&probe, x, &weights)
                };
                check(
                    value,
                    (at(h) - at(-h)) / f64::from(2.0 * h),
                    &format!("{name} {j}"),
                );
            }
        }
    }

    /// The input's and every parameter's gradient against central differences.
    #[test]
    fn gradients_match_finite_differences() {
        let x = Tensor::randn([2, 3, 4], &Cpu, &mut seeded(2));
        let inputs: Vec<usize> = (0..x.numel()).collect();
        check_gradients(layer(0), &x, &inputs);
    }

    /// The attention by its definition, in `f64`: `[B, T, 4]` through `layer` (2 heads).
    fn reference(layer: &CausalSelfAttention, x: &Tensor) -> Vec<f64> {
        let &[batch, time, embed] = x.dims() else {
            unreachable!("a [B, T, E] input")
        };
        let (head, x) = (embed / 2, x.to_vec());
        let wide = |t: &Tensor| -> Vec<f64> { t.to_vec().into_iter().map(f64::from).collect() };
        let (w_in, b_in) = (
            wide(layer.in_proj_weight.value()),
            wide(layer.in_proj_bias.value()),
        );
        let w_out = wide(layer.out_proj.weight.value());
        let b_out = wide(layer.out_proj.try_bias().unwrap().value());
        let mut y = vec![0.0; x.len()];
        for n in 0..batch {
            let row = |t: usize| &x[(n * time + t) * embed..][..embed];
            // q, k and v of position t, feature f: row f, E + f or 2E + f of the projection.
            let project = |t: usize, f: usize| {
                let w = &w_in[f * embed..][..embed];
                b_in[f]
                    + w.iter()
                        .zip(row(t))
                        .map(|(w, &x)| w * f64::from(x))
                        .sum::<f64>()
            };
            for t in 0..time {
                let mut heads_out = vec![0.0; embed];
                for h in 0..2 {
                    let feature = |part: usize, d: usize| part * embed + h * head + d;
                    let score = |s: usize| {
                        let dot: f64 = (0..head)
                            .map(|d| project(t, feature(0, d)) * project(s, feature(1, d)))
                            .sum();
                        dot / (head as f64).sqrt()
                    };
                    let scores: Vec<f64> = (0..=t).map(score).collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for (s, score) in scores.iter().enumerate() {
                        let weight = (score - max).exp() / total;
                        for d in 0..head {
                            heads_out[h * head + d] += weight * project(s, feature(2, d));
                        }
                    }
                }
                for (o, out) in y[(n * time + t) * embed..][..embed].iter_mut().enumerate() {
                    let w = &w_out[o * embed..][..embed];
                    *out = b_out[o] + w.iter().zip(&heads_out).map(|(w, h)| w * h).sum::<f64>();
                }
            }
        }
        y
    }

    /// A sequence of 300 positions, whose causal softmax runs in several parts: the output is
    /// the attention's definition, and the gradients match central differences at positions
    /// across it.
    #[test]
    fn long_sequences_match_the_definition() {
        let time = 300;
        let layer = layer(6);
        let x = Tensor::randn([2, time, 4], &Cpu, &mut seeded(8));
        let y = layer.layer_forward(&x).unwrap().to_vec();
        let expected = reference(&layer, &x);
        for (i, (&found, &expected)) in y.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(found) - expected).abs() < 1e-5 * expected.abs().max(1.0),
                "y[{i}]: {found} vs {expected}"
            );
        }
        let inputs: Vec<usize> = [0, 127, 128, 263, time - 1]
            .iter()
            .flat_map(|&t| (time + t) * 4..(time + t + 1) * 4)
            .collect();
        check_gradients(layer, &x, &inputs);
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
        // Backward given another input than its tape's: an error, not a misread tape.
        let mut layer = layer;
        let (y, tape) = layer.layer_forward_train(&x).unwrap();
        let narrow = Tensor::zeros([1, 5, 4], &Cpu);
        let error = layer
            .layer_backward(Some(&narrow), tape, &y, true)
            .unwrap_err();
        assert!(error.to_string().contains("found [1, 5, 4]"), "{error}");
    }
}
