//! The Qwen3 decoder, run over packed sequences (see [`crate::pack`]).
//!
//! Per layer: RMSNorm → q/k/v projections → per-head RMSNorm of q and k → RoPE (rotate-half) →
//! causal grouped-query attention inside each sequence → o_proj → residual → RMSNorm → SwiGLU MLP
//! → residual. A final RMSNorm follows the last layer. There is no LM head: an embedding model
//! only needs hidden states.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{linear_no_bias, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};

use crate::config::Config;
use crate::decoder::Decoder;
use crate::pack::PackedBatch;
use crate::pool::{self, Pooled};

/// Keys × queries × heads processed at once per attention block; bounds the score matrix of long
/// inputs (32k tokens would otherwise need heads × 32k × 32k floats).
const MAX_SCORE_ELEMENTS: usize = 1 << 25;

/// Rotary position embedding tables, indexed by position.
#[derive(Debug, Clone)]
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// The tables of [`rope_tables`], in the compute dtype.
    fn new(cfg: &Config, dtype: DType, device: &Device) -> candle_core::Result<Self> {
        let (cos, sin) = rope_tables(cfg);
        let shape = (cfg.max_position_embeddings, cfg.head_dim() / 2);
        Ok(Self {
            cos: Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
        })
    }

    /// Tables for the batch's positions: `(tokens, head_dim / 2)` each.
    fn select(&self, positions: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.cos.index_select(positions, 0)?,
            self.sin.index_select(positions, 0)?,
        ))
    }
}

/// cos and sin of every (position, frequency) pair, `max_position_embeddings × head_dim / 2`
/// row-major, with `inv_freq[i] = 1 / θ^(2i/d)` computed in f32 as the reference does. Shared
/// by both decoders so their rotations are the same numbers.
pub(crate) fn rope_tables(cfg: &Config) -> (Vec<f32>, Vec<f32>) {
    let dim = cfg.head_dim();
    let theta = cfg.rope_theta() as f32;
    let inv_freq: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32))
        .collect();
    let len = cfg.max_position_embeddings;
    let mut cos = Vec::with_capacity(len * dim / 2);
    let mut sin = Vec::with_capacity(len * dim / 2);
    for pos in 0..len {
        for f in &inv_freq {
            let angle = pos as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Applies RoPE to `(tokens, heads, head_dim)`.
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::rotary_emb::rope_thd(&x.unsqueeze(0)?.contiguous()?, cos, sin)?.squeeze(0)
}

/// Additive causal mask for query rows `rows` against keys `0..keys`.
fn causal_mask(
    rows: std::ops::Range<usize>,
    keys: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let n = rows.len();
    let mask: Vec<f32> = rows
        .flat_map(|q| (0..keys).map(move |k| if k <= q { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (n, keys), device)
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let (hidden, head_dim) = (cfg.hidden_size, cfg.head_dim());
        let (num_heads, num_kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Self {
            q_proj: linear_no_bias(hidden, num_heads * head_dim, vb.pp("q_proj"))?,
            k_proj: linear_no_bias(hidden, num_kv_heads * head_dim, vb.pp("k_proj"))?,
            v_proj: linear_no_bias(hidden, num_kv_heads * head_dim, vb.pp("v_proj"))?,
            o_proj: linear_no_bias(num_heads * head_dim, hidden, vb.pp("o_proj"))?,
            q_norm: rms_norm(head_dim, cfg.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: rms_norm(head_dim, cfg.rms_norm_eps, vb.pp("k_norm"))?,
            num_heads,
            num_kv_heads,
            head_dim,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        batch: &PackedBatch,
    ) -> candle_core::Result<Tensor> {
        let tokens = x.dim(0)?;
        // (tokens, heads, head_dim)
        let q = self
            .q_proj
            .forward(x)?
            .reshape((tokens, self.num_heads, self.head_dim))?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape((tokens, self.num_kv_heads, self.head_dim))?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape((tokens, self.num_kv_heads, self.head_dim))?;
        let q = apply_rotary(&self.q_norm.forward(&q)?, cos, sin)?;
        let k = apply_rotary(&self.k_norm.forward(&k)?, cos, sin)?;

        let per_sequence = batch
            .ranges()
            .map(|rows| {
                self.attend(
                    &q.narrow(0, rows.start, rows.len())?,
                    &k.narrow(0, rows.start, rows.len())?,
                    &v.narrow(0, rows.start, rows.len())?,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        // (tokens, heads * head_dim)
        let out =
            Tensor::cat(&per_sequence, 0)?.reshape((tokens, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }

    /// Causal attention within one sequence: q `(len, heads, d)`, k/v `(len, kv_heads, d)`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        let len = q.dim(0)?;
        let groups = self.num_heads / self.num_kv_heads;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        // (heads, len, d); each K/V head serves `groups` consecutive query heads.
        let q = q.transpose(0, 1)?.contiguous()?;
        let repeat = |t: &Tensor| -> candle_core::Result<Tensor> {
            t.transpose(0, 1)?
                .unsqueeze(1)?
                .expand((self.num_kv_heads, groups, len, self.head_dim))?
                .reshape((self.num_heads, len, self.head_dim))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);

        let block = (MAX_SCORE_ELEMENTS / (self.num_heads * len)).clamp(1, len);
        let mut outputs = Vec::with_capacity(len.div_ceil(block));
        for start in (0..len).step_by(block) {
            let rows = start..(start + block).min(len);
            // Causality: rows up to `end` never look past key `end - 1`.
            let keys = rows.end;
            let q_blk = q.narrow(1, rows.start, rows.len())?;
            let k_blk = k.narrow(1, 0, keys)?;
            let v_blk = v.narrow(1, 0, keys)?;
            // (heads, rows, keys), softmax in f32 whatever the compute dtype.
            let scores = (q_blk.matmul(&k_blk.t()?)? * scale)?.to_dtype(DType::F32)?;
            let mask = causal_mask(rows, keys, q.device())?;
            let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
            outputs.push(probs.to_dtype(v.dtype())?.matmul(&v_blk.contiguous()?)?);
        }
        // (len, heads, d)
        Tensor::cat(&outputs, 1)?.transpose(0, 1)
    }
}

// Field names are the checkpoint's tensor names.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: linear_no_bias(hidden, inter, vb.pp("gate_proj"))?,
            up_proj: linear_no_bias(hidden, inter, vb.pp("up_proj"))?,
            down_proj: linear_no_bias(inter, hidden, vb.pp("down_proj"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.silu()?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(cfg: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            input_layernorm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: rms_norm(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        batch: &PackedBatch,
    ) -> candle_core::Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, cos, sin, batch)?;
        let x = (x + attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        x + mlp
    }
}

/// Qwen3 decoder without LM head.
#[derive(Debug, Clone)]
pub struct Model {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rotary: Rotary,
    device: Device,
}

impl Model {
    /// Builds the model from weights under `vb` (the level holding `embed_tokens`, `layers`, `norm`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?,
            rotary: Rotary::new(cfg, vb.dtype(), vb.device())?,
            device: vb.device().clone(),
        })
    }

    /// Final hidden states of every packed token: `(total_tokens, hidden)`.
    pub fn hidden_states(&self, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(batch.input_ids.as_slice(), &self.device)?;
        let positions = Tensor::new(batch.positions.as_slice(), &self.device)?;
        let (cos, sin) = self.rotary.select(&positions)?;
        let mut x = self.embed_tokens.forward(&ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, &cos, &sin, batch)?;
        }
        self.norm.forward(&x)
    }
}

impl Decoder for Model {
    fn forward(&self, batch: &PackedBatch) -> crate::Result<Pooled> {
        let hidden = self.hidden_states(batch)?;
        Ok(Pooled::from_tensor(&pool::last_token(&hidden, batch)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_blocks_the_future() {
        let mask = causal_mask(1..3, 3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mask[0], [0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(mask[1], [0.0, 0.0, 0.0]);
    }
}
