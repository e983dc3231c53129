//! The Qwen3 decoder on CPU in bf16, on our own kernels (`candle-embed-kernels`).
//!
//! Same computation as [`crate::model`], with the precision split the reference's bf16 run
//! would envy: matmul inputs are bf16 and their sums f32, while the residual stream, RMSNorm,
//! RoPE, softmax and pooling stay f32. Weights are read once, fused (q/k/v into one projection,
//! gate/up into one) and packed for the kernels; nothing else is kept.
//!
//! Per layer, for the packed batch's `tokens` rows:
//! RMSNorm → bf16 → qkv GEMM → causal GQA attention (its packing applies the per-head RMSNorm and
//! RoPE in f32 to each row as it rounds it to bf16) → bf16 → o_proj GEMM added into the residual →
//! RMSNorm → bf16 → gate/up GEMM with SiLU·up fused → bf16 → down GEMM added into the residual.
//! The first norm, the qkv GEMM and attention's packing run group by group of whole sequences, so
//! the f32 q/k/v rows are read back from cache; the MLP runs in row chunks so its intermediate
//! stays small. In the last layer everything after
//! attention runs on the pooled rows only (each sequence's last token), and so does the final norm.
//!
//! The GEMMs and attention run inside `trace`-level spans named `gemm` and `attention`, for
//! profilers (`examples/profile_bf16.rs`); without a subscriber that wants them they cost a
//! branch.

use std::sync::Mutex;

use candle_embed_kernels::attention::{causal_attention, AttentionBuffers, Heads, QkvRows};
use candle_embed_kernels::{
    elementwise, f32_to_bf16, gemm, gemm_silu_mul, AlignedVec, BfMatrix, Isa, PackedWeight,
};
use half::bf16;
use rayon::prelude::*;

use crate::config::Config;
use crate::decoder::Decoder;
use crate::error::Result;
use crate::pack::PackedBatch;
use crate::pool::Pooled;
use crate::weights::WeightReader;

/// Rows per MLP chunk: its `rows × intermediate` bf16 stays at ~6 MB for the 0.6B shape.
const MLP_ROWS: usize = 1024;

/// Tokens (whole sequences) whose f32 q/k/v rows are computed and packed for attention at a
/// time: 16 MiB of them for the 0.6B shape, which the last-level cache keeps between the GEMM
/// that writes them and the packing that reads them.
const QKV_GROUP: usize = 1024;

/// RMSNorm weight and epsilon.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn new(cfg: &Config, size: usize, r: &WeightReader) -> Result<Self> {
        Ok(Self {
            weight: r.f32("weight", &[size])?,
            eps: cfg.rms_norm_eps as f32,
        })
    }

    /// `x / rms(x) · weight` in place, in f32 as the reference computes it.
    fn apply(&self, x: &mut [f32]) {
        elementwise::rms_norm(x, &self.weight, self.eps);
    }

    /// Every row of `x` (rows of `width`), normed and rounded to bf16 into `out`.
    fn to_bf16(&self, x: &[f32], width: usize, out: &mut BfMatrix) {
        out.reshape_for_overwrite(x.len() / width, width);
        out.par_rows_mut()
            .zip(x.par_chunks_exact(width))
            .for_each_init(
                || vec![0f32; width],
                |row, (dst, src)| {
                    row.copy_from_slice(src);
                    self.apply(row);
                    f32_to_bf16(row, &mut dst[..width]);
                },
            );
    }
}

/// RoPE tables (rotate-half convention), f32, `max_positions × head_dim / 2`.
#[derive(Debug, Clone)]
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    fn new(cfg: &Config) -> Self {
        let (cos, sin) = crate::model::rope_tables(cfg);
        Self {
            cos,
            sin,
            half: cfg.head_dim() / 2,
        }
    }

    /// The cosines and sines of `position`.
    fn at(&self, position: usize) -> (&[f32], &[f32]) {
        (
            &self.cos[position * self.half..][..self.half],
            &self.sin[position * self.half..][..self.half],
        )
    }
}

/// Batches up to this many tokens leave their buffers to the next pass (about 0.6 GB for the
/// 0.6B shape at the limit); a longer one, such as a single 32k-token text, frees them.
const KEEP_TOKENS: usize = 16_384;

/// Activation buffers, reused across layers and, through [`Kept`], across forward passes: a
/// batch's buffers run to hundreds of MB, and fresh ones cost a page fault per page (in a VM,
/// faulting in the attention buffers for every layer took 15% of the whole pass).
#[derive(Default)]
struct Scratch {
    /// `(tokens, hidden)` residual stream.
    x: AlignedVec<f32>,
    normed: BfMatrix,
    /// f32 GEMM outputs are stored as tiles: aligned so that each tile row is one cache line.
    qkv: AlignedVec<f32>,
    attention: AttentionBuffers,
    attn: BfMatrix,
    /// The last layer's attention rows of the pooled tokens.
    picked: BfMatrix,
    mlp_in: BfMatrix,
    mlp_mid: BfMatrix,
}

/// The scratch of the last forward pass, for the next one. A pass running while another holds
/// it (two threads sharing the model) allocates its own.
#[derive(Default)]
struct Kept(Mutex<Option<Box<Scratch>>>);

impl Kept {
    fn take(&self) -> Box<Scratch> {
        self.0
            .try_lock()
            .ok()
            .and_then(|mut kept| kept.take())
            .unwrap_or_default()
    }

    fn put(&self, scratch: Box<Scratch>) {
        if let Ok(mut kept) = self.0.try_lock() {
            *kept = Some(scratch);
        }
    }
}

impl Clone for Kept {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

#[derive(Debug, Clone)]
struct Attention {
    /// q, k and v projections stacked: `(q + 2·kv)·head_dim` outputs.
    qkv_proj: PackedWeight,
    o_proj: PackedWeight,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: Heads,
}

impl Attention {
    fn new(cfg: &Config, r: &WeightReader) -> Result<Self> {
        let (hidden, dim) = (cfg.hidden_size, cfg.head_dim());
        let (q, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let mut stacked = r.pp("q_proj").bf16("weight", &[q * dim, hidden])?;
        stacked.extend(r.pp("k_proj").bf16("weight", &[kv * dim, hidden])?);
        stacked.extend(r.pp("v_proj").bf16("weight", &[kv * dim, hidden])?);
        let o = r.pp("o_proj").bf16("weight", &[hidden, q * dim])?;
        Ok(Self {
            qkv_proj: PackedWeight::new(&stacked, (q + 2 * kv) * dim, hidden),
            o_proj: PackedWeight::new(&o, hidden, q * dim),
            q_norm: RmsNorm::new(cfg, dim, &r.pp("q_norm"))?,
            k_norm: RmsNorm::new(cfg, dim, &r.pp("k_norm"))?,
            heads: Heads { q, kv, dim },
        })
    }

    /// Adds the attention output of the residual rows `x` (normed by `norm`) to `x`.
    fn forward(
        &self,
        isa: Isa,
        x: &mut [f32],
        norm: &RmsNorm,
        rope: &Rope,
        batch: &PackedBatch,
        s: &mut Scratch,
    ) {
        self.attend(isa, x, norm, rope, batch, s);
        let _gemm = tracing::trace_span!("gemm").entered();
        gemm(isa, &s.attn, &self.o_proj, x, self.o_proj.n(), true);
    }

    /// Attention of the residual rows `x`, normed by `norm`, before the output projection, into
    /// `s.attn`. The q/k/v projection runs group by group of whole sequences, each group packed
    /// for attention while its f32 rows are still in cache.
    fn attend(
        &self,
        isa: Isa,
        x: &[f32],
        norm: &RmsNorm,
        rope: &Rope,
        batch: &PackedBatch,
        s: &mut Scratch,
    ) {
        let Heads { q, kv, dim } = self.heads;
        let (hidden, width) = (norm.weight.len(), (q + 2 * kv) * dim);
        let normed = &mut s.normed;
        // (group tokens, (q + 2·kv)·dim)
        let mut compute = |tokens: std::ops::Range<usize>, qkv: &mut AlignedVec<f32>| {
            norm.to_bf16(
                &x[tokens.start * hidden..tokens.end * hidden],
                hidden,
                normed,
            );
            qkv.resize_for_overwrite(tokens.len() * width);
            let _gemm = tracing::trace_span!("gemm").entered();
            gemm(isa, normed, &self.qkv_proj, qkv, width, false);
        };
        let ranges: Vec<_> = batch.ranges().collect();
        let scale = 1.0 / (dim as f32).sqrt();
        // q heads, then k heads: normed and rotated as each row is packed.
        let prepare = |token: usize, row: &[f32], qk: &mut [f32]| {
            let (cos, sin) = rope.at(batch.positions[token] as usize);
            let heads = row.chunks_exact(dim).zip(qk.chunks_exact_mut(dim));
            for (i, (src, dst)) in heads.enumerate() {
                let norm = if i < q { &self.q_norm } else { &self.k_norm };
                elementwise::rms_norm_rope(src, &norm.weight, norm.eps, cos, sin, dst);
            }
        };
        // (tokens, q·dim) in bf16: the o_proj input. The span holds the q/k/v GEMMs' spans,
        // which a profiler subtracts.
        let _attention = tracing::trace_span!("attention").entered();
        let qkv = QkvRows::Grouped {
            group_tokens: QKV_GROUP,
            compute: &mut compute,
            rows: &mut s.qkv,
        };
        causal_attention(
            isa,
            self.heads,
            qkv,
            &ranges,
            scale,
            &prepare,
            &mut s.attention,
            &mut s.attn,
        );
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    /// gate and up interleaved for the fused SiLU·up GEMM.
    gate_up_proj: PackedWeight,
    down_proj: PackedWeight,
    intermediate: usize,
}

impl Mlp {
    fn new(cfg: &Config, r: &WeightReader) -> Result<Self> {
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let gate = r.pp("gate_proj").bf16("weight", &[inter, hidden])?;
        let up = r.pp("up_proj").bf16("weight", &[inter, hidden])?;
        let down = r.pp("down_proj").bf16("weight", &[hidden, inter])?;
        Ok(Self {
            gate_up_proj: PackedWeight::gate_up(&gate, &up, inter, hidden),
            down_proj: PackedWeight::new(&down, hidden, inter),
            intermediate: inter,
        })
    }

    /// Adds `down(silu(gate(n)) · up(n))` of the normed rows `s.mlp_in` to the residual rows `x`.
    fn forward(&self, isa: Isa, x: &mut [f32], s: &mut Scratch) {
        let _gemm = tracing::trace_span!("gemm").entered();
        // (rows, intermediate) in bf16: the down projection's input.
        gemm_silu_mul(
            isa,
            &s.mlp_in,
            &self.gate_up_proj,
            self.intermediate,
            &mut s.mlp_mid,
        );
        let hidden = self.down_proj.n();
        gemm(isa, &s.mlp_mid, &self.down_proj, x, hidden, true);
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
    fn new(cfg: &Config, r: &WeightReader) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::new(cfg, cfg.hidden_size, &r.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, &r.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg,
                cfg.hidden_size,
                &r.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new(cfg, &r.pp("mlp"))?,
        })
    }

    fn forward(&self, isa: Isa, x: &mut [f32], rope: &Rope, batch: &PackedBatch, s: &mut Scratch) {
        let hidden = self.input_layernorm.weight.len();
        self.self_attn
            .forward(isa, x, &self.input_layernorm, rope, batch, s);
        for chunk in x.chunks_mut(MLP_ROWS * hidden) {
            self.post_attention_layernorm
                .to_bf16(chunk, hidden, &mut s.mlp_in);
            self.mlp.forward(isa, chunk, s);
        }
    }

    /// The last layer, for the pooled rows only: attention needs every token's keys and values,
    /// but after it only the rows that are pooled (`rows`, each sequence's last token) matter,
    /// so the output projection and the MLP run on those alone. Rows do not depend on each other
    /// in any kernel, so this gives the same bits as the whole layer. Returns `rows × hidden`.
    fn forward_rows(
        &self,
        isa: Isa,
        x: &[f32],
        rope: &Rope,
        batch: &PackedBatch,
        rows: &[u32],
        s: &mut Scratch,
    ) -> Vec<f32> {
        let hidden = self.input_layernorm.weight.len();
        self.self_attn
            .attend(isa, x, &self.input_layernorm, rope, batch, s);
        let width = s.attn.cols();
        s.picked.reshape_for_overwrite(rows.len(), width);
        for (i, &row) in rows.iter().enumerate() {
            s.picked
                .row_mut(i)
                .copy_from_slice(s.attn.row(row as usize));
        }
        let mut out = gather_rows(x, hidden, rows);
        tracing::trace_span!("gemm").in_scope(|| {
            gemm(
                isa,
                &s.picked,
                &self.self_attn.o_proj,
                &mut out,
                hidden,
                true,
            );
        });
        for chunk in out.chunks_mut(MLP_ROWS * hidden) {
            self.post_attention_layernorm
                .to_bf16(chunk, hidden, &mut s.mlp_in);
            self.mlp.forward(isa, chunk, s);
        }
        out
    }
}

/// Rows `rows` of `x` (rows of `width`), one after another.
fn gather_rows(x: &[f32], width: usize, rows: &[u32]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&row| &x[row as usize * width..][..width])
        .copied()
        .collect()
}

/// Qwen3 decoder without LM head, bf16 on CPU.
#[derive(Debug, Clone)]
pub struct Model {
    /// `(vocab, hidden)` token embeddings, kept in bf16 (rows are widened when looked up).
    embed_tokens: Vec<bf16>,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    rope: Rope,
    hidden: usize,
    isa: Isa,
    kept: Kept,
}

impl Model {
    /// Reads and packs the weights under `r` (the level holding `embed_tokens`, `layers`, `norm`).
    pub fn new(cfg: &Config, r: &WeightReader, isa: Isa) -> Result<Self> {
        let hidden = cfg.hidden_size;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, &r.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: r
                .pp("embed_tokens")
                .bf16("weight", &[cfg.vocab_size, hidden])?,
            layers,
            norm: RmsNorm::new(cfg, hidden, &r.pp("norm"))?,
            rope: Rope::new(cfg),
            hidden,
            isa,
            kept: Kept::default(),
        })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The final (normed) hidden state of each sequence's last token, in order.
    fn pooled(&self, batch: &PackedBatch) -> Pooled {
        let hidden = self.hidden;
        let mut scratch = self.kept.take();
        // (tokens, hidden) residual stream, f32; every row is overwritten here.
        let mut x = std::mem::take(&mut scratch.x);
        x.resize_for_overwrite(batch.total_tokens() * hidden);
        x.par_chunks_exact_mut(hidden)
            .zip(batch.input_ids.par_iter())
            .for_each(|(row, &id)| {
                let src = &self.embed_tokens[id as usize * hidden..][..hidden];
                for (d, s) in row.iter_mut().zip(src) {
                    *d = s.to_f32();
                }
            });
        let rows = batch.last_rows();
        let mut pooled = match self.layers.split_last() {
            Some((last, layers)) => {
                for layer in layers {
                    layer.forward(self.isa, &mut x, &self.rope, batch, &mut scratch);
                }
                last.forward_rows(self.isa, &x, &self.rope, batch, &rows, &mut scratch)
            }
            None => gather_rows(&x, hidden, &rows),
        };
        for row in pooled.chunks_exact_mut(hidden) {
            self.norm.apply(row);
        }
        scratch.x = x;
        if batch.total_tokens() <= KEEP_TOKENS {
            self.kept.put(scratch);
        }
        Pooled::new(pooled, hidden)
    }
}

impl Decoder for Model {
    fn forward(&self, batch: &PackedBatch) -> Result<Pooled> {
        Ok(crate::decoder::on_cpu_pool(|| self.pooled(batch)))
    }
}
