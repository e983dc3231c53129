//! The Qwen3 decoder on CPU, on our own kernels (`candle-embed-kernels`), in bf16 or in f32.
//!
//! Same computation as [`crate::model`]. In bf16 ([`Bf16`]), with the precision split the
//! reference's bf16 run would envy: matmul inputs are bf16 and their sums f32, while the residual
//! stream, RMSNorm, RoPE, softmax and pooling stay f32. In f32 ([`F32`], `dtype="f32"`) nothing is
//! rounded to bf16, and every matmul output is its products summed one fused multiply-add at a
//! time in a fixed order, so a row's bits do not depend on its batch. Weights are read once,
//! fused (q/k/v into one projection, gate/up into one) and packed for the kernels; nothing else
//! is kept.
//!
//! Per layer, for the packed batch's `tokens` rows (bf16 below is the [`Precision`]'s type):
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

use candle_embed_kernels::attention::{AttentionBuffers, Heads, QkvRows, Stored};
use candle_embed_kernels::pack::Element;
use candle_embed_kernels::{elementwise, AlignedVec, Isa, PackedWeight};
use rayon::prelude::*;

use crate::config::Config;
use crate::decoder::Decoder;
use crate::error::Result;
use crate::pack::PackedBatch;
use crate::pool::Pooled;
use crate::weights::WeightReader;

mod precision;

pub use precision::{Bf16, Precision, F32};

/// Rows per MLP chunk: its `rows × intermediate` bf16 stays at ~6 MB for the 0.6B shape (12 MB
/// in f32).
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

    /// Every row of `x` (rows of `width`), normed and stored as `P`'s matmul input into `out`.
    fn to_rows<P: Precision>(&self, x: &[f32], width: usize, out: &mut P::Rows) {
        P::reshape(out, x.len() / width, width)
            .zip(x.par_chunks_exact(width))
            .for_each_init(
                || vec![0f32; width],
                |row, (dst, src)| {
                    row.copy_from_slice(src);
                    self.apply(row);
                    P::store(row, &mut dst[..width]);
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
/// 0.6B shape at the limit in bf16, more in f32); a longer one, such as a single 32k-token text,
/// frees them.
const KEEP_TOKENS: usize = 16_384;

/// Activation buffers, reused across layers and, through [`Kept`], across forward passes: a
/// batch's buffers run to hundreds of MB, and fresh ones cost a page fault per page (in a VM,
/// faulting in the attention buffers for every layer took 15% of the whole pass).
struct Scratch<P: Precision> {
    /// `(tokens, hidden)` residual stream.
    x: AlignedVec<f32>,
    normed: P::Rows,
    /// f32 GEMM outputs are stored as tiles: aligned so that each tile row is one cache line.
    qkv: AlignedVec<f32>,
    attention: AttentionBuffers<P::E>,
    attn: P::Rows,
    /// The last layer's attention rows of the pooled tokens.
    picked: P::Rows,
    mlp_in: P::Rows,
    mlp_mid: P::Rows,
}

impl<P: Precision> Default for Scratch<P> {
    fn default() -> Self {
        Self {
            x: AlignedVec::default(),
            normed: P::Rows::default(),
            qkv: AlignedVec::default(),
            attention: AttentionBuffers::default(),
            attn: P::Rows::default(),
            picked: P::Rows::default(),
            mlp_in: P::Rows::default(),
            mlp_mid: P::Rows::default(),
        }
    }
}

/// The scratch of the last forward pass, for the next one. A pass running while another holds
/// it (two threads sharing the model) allocates its own.
struct Kept<P: Precision>(Mutex<Option<Box<Scratch<P>>>>);

impl<P: Precision> Default for Kept<P> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<P: Precision> Kept<P> {
    fn take(&self) -> Box<Scratch<P>> {
        self.0
            .try_lock()
            .ok()
            .and_then(|mut kept| kept.take())
            .unwrap_or_default()
    }

    fn put(&self, scratch: Box<Scratch<P>>) {
        if let Ok(mut kept) = self.0.try_lock() {
            *kept = Some(scratch);
        }
    }
}

impl<P: Precision> Clone for Kept<P> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<P: Precision> std::fmt::Debug for Kept<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

#[derive(Debug, Clone)]
struct Attention<E: Element> {
    /// q, k and v projections stacked: `(q + 2·kv)·head_dim` outputs.
    qkv_proj: PackedWeight<E>,
    o_proj: PackedWeight<E>,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: Heads,
}

impl<E: Element + Stored> Attention<E> {
    fn new<P: Precision<E = E>>(cfg: &Config, r: &WeightReader) -> Result<Self> {
        let (hidden, dim) = (cfg.hidden_size, cfg.head_dim());
        let (q, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let read =
            |name: &str, rows: usize, cols: usize| P::read(&r.pp(name), "weight", &[rows, cols]);
        let mut stacked = read("q_proj", q * dim, hidden)?;
        stacked.extend(read("k_proj", kv * dim, hidden)?);
        stacked.extend(read("v_proj", kv * dim, hidden)?);
        let o = read("o_proj", hidden, q * dim)?;
        Ok(Self {
            qkv_proj: PackedWeight::new(&stacked, (q + 2 * kv) * dim, hidden),
            o_proj: PackedWeight::new(&o, hidden, q * dim),
            q_norm: RmsNorm::new(cfg, dim, &r.pp("q_norm"))?,
            k_norm: RmsNorm::new(cfg, dim, &r.pp("k_norm"))?,
            heads: Heads { q, kv, dim },
        })
    }

    /// Adds the attention output of the residual rows `x` (normed by `norm`) to `x`.
    fn forward<P: Precision<E = E>>(
        &self,
        isa: Isa,
        x: &mut [f32],
        norm: &RmsNorm,
        rope: &Rope,
        batch: &PackedBatch,
        s: &mut Scratch<P>,
    ) {
        self.attend(isa, x, norm, rope, batch, s);
        let _gemm = tracing::trace_span!("gemm").entered();
        P::gemm(isa, &s.attn, &self.o_proj, x, self.o_proj.n(), true);
    }

    /// Attention of the residual rows `x`, normed by `norm`, before the output projection, into
    /// `s.attn`. The q/k/v projection runs group by group of whole sequences, each group packed
    /// for attention while its f32 rows are still in cache.
    fn attend<P: Precision<E = E>>(
        &self,
        isa: Isa,
        x: &[f32],
        norm: &RmsNorm,
        rope: &Rope,
        batch: &PackedBatch,
        s: &mut Scratch<P>,
    ) {
        let Heads { q, kv, dim } = self.heads;
        let (hidden, width) = (norm.weight.len(), (q + 2 * kv) * dim);
        let normed = &mut s.normed;
        // (group tokens, (q + 2·kv)·dim)
        let mut compute = |tokens: std::ops::Range<usize>, qkv: &mut AlignedVec<f32>| {
            norm.to_rows::<P>(
                &x[tokens.start * hidden..tokens.end * hidden],
                hidden,
                normed,
            );
            qkv.resize_for_overwrite(tokens.len() * width);
            let _gemm = tracing::trace_span!("gemm").entered();
            P::gemm(isa, normed, &self.qkv_proj, qkv, width, false);
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
        // (tokens, q·dim) as `E`: the o_proj input. The span holds the q/k/v GEMMs' spans,
        // which a profiler subtracts.
        let _attention = tracing::trace_span!("attention").entered();
        let qkv = QkvRows::Grouped {
            group_tokens: QKV_GROUP,
            compute: &mut compute,
            rows: &mut s.qkv,
        };
        P::attention(
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
struct Mlp<E: Element> {
    /// gate and up interleaved for the fused SiLU·up GEMM.
    gate_up_proj: PackedWeight<E>,
    down_proj: PackedWeight<E>,
    intermediate: usize,
}

impl<E: Element + Stored> Mlp<E> {
    fn new<P: Precision<E = E>>(cfg: &Config, r: &WeightReader) -> Result<Self> {
        let (hidden, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let read =
            |name: &str, rows: usize, cols: usize| P::read(&r.pp(name), "weight", &[rows, cols]);
        let gate = read("gate_proj", inter, hidden)?;
        let up = read("up_proj", inter, hidden)?;
        let down = read("down_proj", hidden, inter)?;
        Ok(Self {
            gate_up_proj: PackedWeight::gate_up(&gate, &up, inter, hidden),
            down_proj: PackedWeight::new(&down, hidden, inter),
            intermediate: inter,
        })
    }

    /// Adds `down(silu(gate(n)) · up(n))` of the normed rows `s.mlp_in` to the residual rows `x`.
    fn forward<P: Precision<E = E>>(&self, isa: Isa, x: &mut [f32], s: &mut Scratch<P>) {
        let _gemm = tracing::trace_span!("gemm").entered();
        // (rows, intermediate) as `E`: the down projection's input.
        P::gemm_silu_mul(
            isa,
            &s.mlp_in,
            &self.gate_up_proj,
            self.intermediate,
            &mut s.mlp_mid,
        );
        let hidden = self.down_proj.n();
        P::gemm(isa, &s.mlp_mid, &self.down_proj, x, hidden, true);
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer<E: Element> {
    input_layernorm: RmsNorm,
    self_attn: Attention<E>,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp<E>,
}

impl<E: Element + Stored> DecoderLayer<E> {
    fn new<P: Precision<E = E>>(cfg: &Config, r: &WeightReader) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::new(cfg, cfg.hidden_size, &r.pp("input_layernorm"))?,
            self_attn: Attention::new::<P>(cfg, &r.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                cfg,
                cfg.hidden_size,
                &r.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new::<P>(cfg, &r.pp("mlp"))?,
        })
    }

    fn forward<P: Precision<E = E>>(
        &self,
        isa: Isa,
        x: &mut [f32],
        rope: &Rope,
        batch: &PackedBatch,
        s: &mut Scratch<P>,
    ) {
        let hidden = self.input_layernorm.weight.len();
        self.self_attn
            .forward(isa, x, &self.input_layernorm, rope, batch, s);
        for chunk in x.chunks_mut(MLP_ROWS * hidden) {
            self.post_attention_layernorm
                .to_rows::<P>(chunk, hidden, &mut s.mlp_in);
            self.mlp.forward(isa, chunk, s);
        }
    }

    /// The last layer, for the pooled rows only: attention needs every token's keys and values,
    /// but after it only the rows that are pooled (`rows`, each sequence's last token) matter,
    /// so the output projection and the MLP run on those alone. Rows do not depend on each other
    /// in any kernel, so this gives the same bits as the whole layer. Returns `rows × hidden`.
    fn forward_rows<P: Precision<E = E>>(
        &self,
        isa: Isa,
        x: &[f32],
        rope: &Rope,
        batch: &PackedBatch,
        rows: &[u32],
        s: &mut Scratch<P>,
    ) -> Vec<f32> {
        let hidden = self.input_layernorm.weight.len();
        self.self_attn
            .attend(isa, x, &self.input_layernorm, rope, batch, s);
        let width = self.self_attn.o_proj.k();
        let picked = P::reshape(&mut s.picked, rows.len(), width);
        picked.zip(rows).for_each(|(dst, &row)| {
            dst[..width].copy_from_slice(P::row(&s.attn, row as usize, width));
        });
        let mut out = gather_rows(x, hidden, rows);
        tracing::trace_span!("gemm").in_scope(|| {
            P::gemm(
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
                .to_rows::<P>(chunk, hidden, &mut s.mlp_in);
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

/// Qwen3 decoder without LM head on CPU, its matmuls in `P`.
#[derive(Debug, Clone)]
pub struct Model<P: Precision> {
    /// `(vocab, hidden)` token embeddings, kept as `E` (rows are widened when looked up).
    embed_tokens: Vec<P::E>,
    layers: Vec<DecoderLayer<P::E>>,
    norm: RmsNorm,
    rope: Rope,
    hidden: usize,
    isa: Isa,
    kept: Kept<P>,
}

impl<P: Precision> Model<P> {
    /// Reads and packs the weights under `r` (the level holding `embed_tokens`, `layers`, `norm`)
    /// for the kernels of `isa` (in f32, its f32 loop: [`Isa::for_f32`]).
    pub fn new(cfg: &Config, r: &WeightReader, isa: Isa) -> Result<Self> {
        let hidden = cfg.hidden_size;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new::<P>(cfg, &r.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed_tokens: P::read(&r.pp("embed_tokens"), "weight", &[cfg.vocab_size, hidden])?,
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

impl<P: Precision> Decoder for Model<P> {
    fn forward(&self, batch: &PackedBatch) -> Result<Pooled> {
        Ok(crate::decoder::on_cpu_pool(|| self.pooled(batch)))
    }
}
