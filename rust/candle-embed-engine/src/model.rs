//! The Qwen3 decoder, run over packed sequences (see [`crate::pack`]).
//!
//! Per layer: RMSNorm → q/k/v projections → per-head RMSNorm of q and k → RoPE (rotate-half) →
//! causal grouped-query attention inside each sequence → o_proj → residual → RMSNorm → SwiGLU MLP
//! → residual. A final RMSNorm follows the last layer. There is no LM head: an embedding model
//! only needs hidden states, and of the last layer only each sequence's last row (computed alone
//! on the varlen path).
//!
//! q/k/v and gate/up are each one stacked matmul. Attention over the packed batch is one
//! [`crate::varlen`] call on CUDA, per sequence elsewhere ([`AttentionPath`]).
//!
//! The matmuls run in the weights' dtype (bf16 on GPUs); the residual stream, the norms, RoPE,
//! SiLU·up and softmax stay f32, as in our CPU decoder ([`crate::cpu`]), which is what keeps bf16
//! vectors closer to the f32 reference than transformers' all-bf16 run. CPUs run this decoder in
//! f32 only where they have no AVX2 (or `CANDLE_EMBED_CPU_KERNEL=none` says so).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};

use crate::config::Config;
use crate::decoder::Decoder;
use crate::pack::PackedBatch;
use crate::pool::Pooled;
use crate::varlen::{self, Plan};

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
    /// The tables of [`rope_tables`], in f32 like the rest of the residual side.
    fn new(cfg: &Config, device: &Device) -> candle_core::Result<Self> {
        let (cos, sin) = rope_tables(cfg);
        let shape = (cfg.max_position_embeddings, cfg.head_dim() / 2);
        Ok(Self {
            cos: Tensor::from_vec(cos, shape, device)?,
            sin: Tensor::from_vec(sin, shape, device)?,
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

/// The environment variable that picks the attention path: `varlen`, `blocked` or `auto`.
pub const ATTENTION_ENV: &str = "CANDLE_EMBED_ATTENTION";

/// How attention runs over a packed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionPath {
    /// One call for the whole batch ([`crate::varlen`]): our CUDA kernel on GPUs, its CPU model
    /// elsewhere (slow; for tests).
    Varlen,
    /// Per sequence, with candle's matmuls over blocks of query rows.
    Blocked,
}

impl AttentionPath {
    /// `varlen` on CUDA in f32 and bf16, `blocked` elsewhere, unless [`ATTENTION_ENV`] says.
    pub fn choose(device: &Device, dtype: DType) -> Result<Self, String> {
        let forced = std::env::var(ATTENTION_ENV).ok();
        let varlen_fits = crate::varlen::supports(dtype) && (device.is_cuda() || device.is_cpu());
        match forced.as_deref().map(str::trim) {
            None | Some("" | "auto") => Ok(if device.is_cuda() && varlen_fits {
                Self::Varlen
            } else {
                Self::Blocked
            }),
            Some("blocked") => Ok(Self::Blocked),
            Some("varlen") if varlen_fits => Ok(Self::Varlen),
            Some("varlen") => Err(format!(
                "{ATTENTION_ENV}=varlen runs on CUDA or CPU in f32 or bf16, not {dtype:?} on \
                 {device:?}"
            )),
            Some(other) => Err(format!(
                "{ATTENTION_ENV}={other:?}: expected \"auto\", \"varlen\" or \"blocked\""
            )),
        }
    }
}

/// Which query rows a layer computes: every token, or (the last layer of an embedding model,
/// whose other rows nobody reads) each sequence's last token.
#[derive(Clone, Copy)]
enum Rows<'a> {
    All,
    Last(&'a Tensor),
}

/// What every layer of one forward pass shares.
struct Pass<'a> {
    batch: &'a PackedBatch,
    cos: Tensor,
    sin: Tensor,
    /// On [`AttentionPath::Varlen`], the kernel's tasks for every row and for the last rows;
    /// `None` on the blocked path.
    varlen: Option<(Plan, Plan)>,
}

/// A projection: f32 activations in and out, the matmul in the weights' dtype (bf16 on GPUs: cuBLAS
/// bf16 inputs, f32 sums, one rounding of the result). The weight may be several checkpoint
/// matrices stacked (q, k, v or gate, up), so one matmul does the work of several.
#[derive(Debug, Clone)]
struct Proj(Linear);

impl Proj {
    /// The projection of the checkpoint matrices `names` (`sizes` rows each) stacked.
    fn load(
        vb: &VarBuilder,
        names: &[&str],
        sizes: &[usize],
        input: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self(Linear::new(stacked(vb, names, sizes, input)?, None)))
    }

    fn dtype(&self) -> DType {
        self.0.weight().dtype()
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0
            .forward(&x.to_dtype(self.dtype())?)?
            .to_dtype(DType::F32)
    }
}

/// The checkpoint matrices `names` (`sizes` rows of `input` each), stacked.
fn stacked(
    vb: &VarBuilder,
    names: &[&str],
    sizes: &[usize],
    input: usize,
) -> candle_core::Result<Tensor> {
    let parts = names
        .iter()
        .zip(sizes)
        .map(|(name, &rows)| {
            // candle-nn's `linear_no_bias` initializer, for weights made rather than read
            // (the benches' random models).
            vb.pp(*name).get_with_hints(
                (rows, input),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

/// An RMSNorm in f32 whatever the checkpoint's dtype, as the bf16 CPU path and the reference
/// keep norms.
fn norm(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<RmsNorm> {
    let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
    Ok(RmsNorm::new(weight.to_dtype(DType::F32)?, eps))
}

#[derive(Debug, Clone)]
struct Attention {
    /// q_proj, k_proj and v_proj stacked.
    qkv_proj: Proj,
    o_proj: Proj,
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
        let (q, kv) = (num_heads * head_dim, num_kv_heads * head_dim);
        let qkv = ["q_proj", "k_proj", "v_proj"];
        Ok(Self {
            qkv_proj: Proj::load(&vb, &qkv, &[q, kv, kv], hidden)?,
            o_proj: Proj::load(&vb, &["o_proj"], &[hidden], q)?,
            q_norm: norm(head_dim, cfg.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: norm(head_dim, cfg.rms_norm_eps, vb.pp("k_norm"))?,
            num_heads,
            num_kv_heads,
            head_dim,
        })
    }

    fn forward(&self, x: &Tensor, pass: &Pass, rows: Rows) -> candle_core::Result<Tensor> {
        let tokens = x.dim(0)?;
        let (q_width, kv_width) = (
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
        );
        let qkv = self.qkv_proj.forward(x)?;
        let heads = |start, width, n| {
            qkv.narrow(1, start, width)?
                .reshape((tokens, n, self.head_dim))
        };
        // (tokens, heads, head_dim)
        let q = heads(0, q_width, self.num_heads)?;
        let k = heads(q_width, kv_width, self.num_kv_heads)?;
        let v = heads(q_width + kv_width, kv_width, self.num_kv_heads)?;
        let q = apply_rotary(&self.q_norm.forward(&q)?, &pass.cos, &pass.sin)?;
        let k = apply_rotary(&self.k_norm.forward(&k)?, &pass.cos, &pass.sin)?;
        let q = match rows {
            Rows::All => q,
            Rows::Last(last) => q.index_select(last, 0)?,
        };
        // Attention's matmuls take the weights' dtype, as the projections do; softmax stays f32.
        let dtype = self.qkv_proj.dtype();
        let (q, k, v) = (q.to_dtype(dtype)?, k.to_dtype(dtype)?, v.to_dtype(dtype)?);
        let q_rows = q.dim(0)?;

        let out = match (&pass.varlen, rows) {
            (Some((all, _)), Rows::All) => varlen::attention(&q, &k, &v, all)?,
            (Some((_, last)), Rows::Last(_)) => varlen::attention(&q, &k, &v, last)?,
            (None, _) => {
                let per_sequence = pass
                    .batch
                    .ranges()
                    .enumerate()
                    .map(|(i, seq)| {
                        let (q, first_row) = match rows {
                            Rows::All => (q.narrow(0, seq.start, seq.len())?, 0),
                            Rows::Last(_) => (q.narrow(0, i, 1)?, seq.len() - 1),
                        };
                        self.attend(
                            &q,
                            &k.narrow(0, seq.start, seq.len())?,
                            &v.narrow(0, seq.start, seq.len())?,
                            first_row,
                        )
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&per_sequence, 0)?
            }
        };
        self.o_proj.forward(&out.reshape((q_rows, q_width))?)
    }

    /// Causal attention within one sequence: q `(rows, heads, d)` holds the sequence's rows
    /// `first_row..`, k/v `(len, kv_heads, d)` all of it.
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        first_row: usize,
    ) -> candle_core::Result<Tensor> {
        let (q_len, len) = (q.dim(0)?, k.dim(0)?);
        let groups = self.num_heads / self.num_kv_heads;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        // (heads, rows, d); each K/V head serves `groups` consecutive query heads.
        let q = q.transpose(0, 1)?.contiguous()?;
        let repeat = |t: &Tensor| -> candle_core::Result<Tensor> {
            t.transpose(0, 1)?
                .unsqueeze(1)?
                .expand((self.num_kv_heads, groups, len, self.head_dim))?
                .reshape((self.num_heads, len, self.head_dim))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);

        let block = (MAX_SCORE_ELEMENTS / (self.num_heads * len)).clamp(1, q_len);
        let mut outputs = Vec::with_capacity(q_len.div_ceil(block));
        for start in (0..q_len).step_by(block) {
            let local = start..(start + block).min(q_len);
            let rows = first_row + local.start..first_row + local.end;
            // Causality: rows up to `end` never look past key `end - 1`.
            let keys = rows.end;
            let q_blk = q.narrow(1, local.start, local.len())?;
            let k_blk = k.narrow(1, 0, keys)?;
            let v_blk = v.narrow(1, 0, keys)?;
            // (heads, rows, keys), softmax in f32 whatever the compute dtype.
            let scores = (q_blk.matmul(&k_blk.t()?)? * scale)?.to_dtype(DType::F32)?;
            let mask = causal_mask(rows, keys, q.device())?;
            let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
            outputs.push(probs.to_dtype(v.dtype())?.matmul(&v_blk.contiguous()?)?);
        }
        // (rows, heads, d)
        Tensor::cat(&outputs, 1)?.transpose(0, 1)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    /// gate_proj and up_proj stacked.
    gate_up: Proj,
    down_proj: Proj,
    intermediate: usize,
}

impl Mlp {
    fn new(cfg: &Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_up: Proj::load(&vb, &["gate_proj", "up_proj"], &[inter, inter], hidden)?,
            down_proj: Proj::load(&vb, &["down_proj"], &[hidden], inter)?,
            intermediate: inter,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let inter = self.intermediate;
        let gate_up = self.gate_up.forward(x)?;
        let gate = gate_up.narrow(1, 0, inter)?.silu()?;
        self.down_proj
            .forward(&(gate * gate_up.narrow(1, inter, inter)?)?)
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
            input_layernorm: norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: norm(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    /// `x` is every token's hidden state; the result holds the rows `rows` asks for.
    fn forward(&self, x: &Tensor, pass: &Pass, rows: Rows) -> candle_core::Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, pass, rows)?;
        let residual = match rows {
            Rows::All => x.clone(),
            Rows::Last(last) => x.index_select(last, 0)?,
        };
        let x = (residual + attn)?;
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
    attention: AttentionPath,
    device: Device,
}

impl Model {
    /// Builds the model from weights under `vb` (the level holding `embed_tokens`, `layers`,
    /// `norm`), attention as `attention` says.
    pub fn new(
        cfg: &Config,
        vb: VarBuilder,
        attention: AttentionPath,
    ) -> candle_core::Result<Self> {
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, vb.pp("layers").pp(i)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens,
            layers,
            norm: norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?,
            rotary: Rotary::new(cfg, vb.device())?,
            attention,
            device: vb.device().clone(),
        })
    }

    /// The final hidden state (normed) of each sequence's last token: `(sequences, hidden)`.
    /// On the varlen path the last layer computes only those rows.
    pub fn pooled_states(&self, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(batch.input_ids.as_slice(), &self.device)?;
        let positions = Tensor::new(batch.positions.as_slice(), &self.device)?;
        let last = Tensor::new(batch.last_rows(), &self.device)?;
        let (cos, sin) = self.rotary.select(&positions)?;
        let varlen = (self.attention == AttentionPath::Varlen).then(|| {
            (
                Plan::all_rows(batch.ranges()),
                Plan::last_rows(batch.ranges()),
            )
        });
        let pass = Pass {
            batch,
            cos,
            sin,
            varlen,
        };
        let mut x = self.embed_tokens.forward(&ids)?.to_dtype(DType::F32)?;
        // Only the varlen path skips the unpooled rows of the last layer. On the blocked path
        // (CPU f32) candle's matmul would then see a few rows instead of the whole batch, and at
        // such small row counts its result depends on how many there are: a vector would change
        // with its batch in the last bit.
        let pooled_only = pass.varlen.is_some();
        let (layers, final_layer) = match self.layers.split_last() {
            Some((last_layer, rest)) if pooled_only => (rest, Some(last_layer)),
            _ => (self.layers.as_slice(), None),
        };
        for layer in layers {
            x = layer.forward(&x, &pass, Rows::All)?;
        }
        let pooled = match final_layer {
            Some(layer) => layer.forward(&x, &pass, Rows::Last(&last))?,
            None => x.index_select(&last, 0)?,
        };
        self.norm.forward(&pooled)
    }
}

impl Decoder for Model {
    fn forward(&self, batch: &PackedBatch) -> crate::Result<Pooled> {
        let pass = || Pooled::from_tensor(&self.pooled_states(batch)?);
        // GPU passes stay on the caller's thread, where its CUDA context is current.
        if self.device.is_cpu() {
            Ok(crate::decoder::on_cpu_pool(pass)?)
        } else {
            Ok(pass()?)
        }
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
