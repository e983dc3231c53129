//! Causal grouped-query attention over packed sequences, bf16 products with f32 softmax.
//!
//! Flash-style: a task takes up to 128 positions of one sequence for the `q/kv` query heads that
//! share one K/V head, and walks the sequence's 32-key blocks up to the diagonal with a running
//! maximum and sum per row, rescaling its f32 accumulator; no L×L score matrix exists, and a
//! task's scratch is its rows' state (rows × head_dim). Q, K and V are first rounded to bf16 in
//! a sweep over `qkv` (or over group after group of its rows as the caller makes them, see
//! [`QkvRows::Grouped`]) into a bf16 copy half the size of the f32 input, K and V straight
//! into the layouts the kernels multiply, so each K/V block is converted once and then read by
//! every query head of its group.
//!
//! Four kernels, one arithmetic: Q, K, V and the probabilities P are rounded to bf16 (nearest
//! even), products are summed in f32, the softmax runs in f32 in base 2 (`exp2` of
//! `scale·log2 e·q·k`), and the output is rounded to bf16 once at the end. [`Isa::Reference`] is
//! portable scalar code; [`Isa::Avx512Bf16`] does the same operations in the same order with
//! `vdpbf16ps` (bit for bit equal), [`Isa::Avx2`] and [`Isa::Avx512`] with f32 fused
//! multiply-adds on bf16 widened in 8- or 16-lane registers, one loop for both (bit for bit
//! equal too: every product is exact); [`Isa::Amx`] computes the two
//! products with tiles, which sum a 32-wide dot product in their own order, and takes its softmax
//! steps 64 keys at a time. A
//! row's result depends only on its own sequence (blocks start at the sequence's first token,
//! and no reduction crosses rows), so a text gets the same bits whatever it is packed with.
//!
//! [`causal_attention_f32`] is the exact path's: Q, K, V and P stay f32 (each product rounded
//! with the sum it joins), on the reference or the AVX2 / AVX-512F loops, and the output is f32.

use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::isa::{Isa, Kernel};
use crate::matrix::BfMatrix;

use pack::Packed;
use store::Layout;
use tasks::{tasks, Job, Runs};

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;
mod pack;
mod reference;
mod store;
mod tasks;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod widened;

/// Head counts of a grouped-query attention layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub q: usize,
    /// Key/value heads; each serves `q / kv` consecutive query heads.
    pub kv: usize,
    /// Elements per head.
    pub dim: usize,
}

/// What Q, K and V are kept as inside [`causal_attention`] (bf16) and [`causal_attention_f32`]
/// (f32), for naming their [`AttentionBuffers`]. Sealed.
pub trait Stored: Layout {}

impl Stored for bf16 {}
impl Stored for f32 {}

/// Keys per block: two 16-lane registers, or two 16-column tiles, of scores per query row.
pub(crate) const KEYS: usize = 32;
/// Lanes of the per-row partial sums (one register).
pub(crate) const LANES: usize = 16;
/// Query rows of the largest kernel pass (AMX: two 16-row tiles).
pub(crate) const MAX_ROWS: usize = 32;

/// Causal attention inside each packed sequence.
///
/// `qkv` is f32, `tokens × (q + 2·kv)·dim`, each row holding the q heads, then the k heads, then
/// the v heads (RMS-normed and rotated already). `sequences` are the token ranges of the packed
/// sequences, in order, covering `0..tokens`. `scale` (usually `1/√dim`) must be positive.
/// Writes the `tokens × q·dim` result into `out` (reset to that shape), which is the o_proj
/// input. `buffers` holds the bf16 copies of Q, K and V; reusing it across calls saves
/// allocating (and page-faulting) them for every layer.
///
/// `prepare(token, row, qk)` writes the query and key heads of a token's f32 row (its first
/// `(q + kv)·dim` values) as they are to be rounded into `qk`: the model's per-head norms and
/// rotary embedding go there, so `qkv` is read once in all instead of being rewritten in place
/// by a pass of its own. [`unprepared`] copies them as they are.
pub fn causal_attention(
    isa: Isa,
    heads: Heads,
    qkv: QkvRows<'_>,
    sequences: &[Range<usize>],
    scale: f32,
    prepare: Prepare<'_>,
    buffers: &mut AttentionBuffers,
    out: &mut BfMatrix,
) {
    Call::new(
        Kernel::supported(isa, "attention"),
        heads,
        sequences,
        scale,
        prepare,
    )
    .bf16(qkv, buffers, out);
}

/// [`causal_attention`] in f32, the exact path: nothing is rounded to bf16, and `out` is reset to
/// `tokens × q·dim` f32. `isa` is the family whose f32 loop runs it ([`Isa::for_f32`]: the
/// families with bf16 instructions run the AVX-512F one).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_f32(
    isa: Isa,
    heads: Heads,
    qkv: QkvRows<'_>,
    sequences: &[Range<usize>],
    scale: f32,
    prepare: Prepare<'_>,
    buffers: &mut AttentionBuffers<f32>,
    out: &mut AlignedVec<f32>,
) {
    let kernel = Kernel::supported(isa.for_f32(), "attention");
    Call::new(kernel, heads, sequences, scale, prepare).f32(qkv, buffers, out);
}

/// The f32 q/k/v rows [`causal_attention`] reads, `(q + 2·kv)·dim` values a token.
pub enum QkvRows<'a> {
    /// Every token's row.
    All(&'a [f32]),
    /// Rows made group by group as they are needed: `compute(tokens, rows)` writes the rows of
    /// `tokens` into `rows` (resizing it), for groups of whole sequences of at least
    /// `group_tokens` tokens (the last may be smaller), and each group is packed into bf16 while
    /// its rows are still in cache. A whole batch's rows (16 KiB a token for the 0.6B shape)
    /// would go out to memory and come back; one group's stay in the last-level cache. The
    /// result is the same bits as `All`.
    Grouped {
        group_tokens: usize,
        compute: &'a mut dyn FnMut(Range<usize>, &mut AlignedVec<f32>),
        rows: &'a mut AlignedVec<f32>,
    },
}

/// What [`causal_attention`] applies to the query and key heads of each token's qkv row before
/// rounding them: `(token, row, qk)`, see there.
pub type Prepare<'a> = &'a (dyn Fn(usize, &[f32], &mut [f32]) + Sync);

/// A [`Prepare`] that leaves rows unchanged.
pub fn unprepared(_token: usize, row: &[f32], qk: &mut [f32]) {
    qk.copy_from_slice(&row[..qk.len()]);
}

/// Floating-point operations of causal attention (QKᵀ and PV over the lower triangle), for
/// throughput figures.
pub fn flops(heads: Heads, sequences: &[Range<usize>]) -> f64 {
    let squares: f64 = sequences.iter().map(|s| (s.len() as f64).powi(2)).sum();
    2.0 * squares * heads.dim as f64 * heads.q as f64
}

/// The same attention from the f32 inputs in f64, without any rounding: the yardstick for the
/// kernels. Returns `tokens × q·dim` values.
pub fn f64_reference(
    heads: Heads,
    qkv: &[f32],
    sequences: &[Range<usize>],
    scale: f32,
) -> Vec<f64> {
    let tokens = check_shapes(heads, qkv, sequences);
    let Heads { q, kv, dim } = heads;
    let width = (q + 2 * kv) * dim;
    let at = |token: usize, col: usize| f64::from(qkv[token * width + col]);
    let mut out = vec![0f64; tokens * q * dim];
    for seq in sequences {
        for h in 0..q {
            let (k_col, v_col) = ((q + h / (q / kv)) * dim, (q + kv + h / (q / kv)) * dim);
            for i in seq.clone() {
                let scores: Vec<f64> = (seq.start..=i)
                    .map(|j| {
                        let dot: f64 = (0..dim)
                            .map(|d| at(i, h * dim + d) * at(j, k_col + d))
                            .sum();
                        dot * f64::from(scale)
                    })
                    .collect();
                let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                let total: f64 = weights.iter().sum();
                for (j, w) in (seq.start..=i).zip(&weights) {
                    for d in 0..dim {
                        out[(i * q + h) * dim + d] += w / total * at(j, v_col + d);
                    }
                }
            }
        }
    }
    out
}

/// Validates the arguments; returns the token count.
pub(crate) fn check_shapes(heads: Heads, qkv: &[f32], sequences: &[Range<usize>]) -> usize {
    let tokens = check_sequences(heads, sequences);
    check_rows(heads, qkv, tokens);
    tokens
}

/// Validates the heads and the sequences; returns the token count.
fn check_sequences(heads: Heads, sequences: &[Range<usize>]) -> usize {
    assert!(
        heads.kv > 0 && heads.q.is_multiple_of(heads.kv),
        "attention: {} query heads cannot share {} K/V heads",
        heads.q,
        heads.kv
    );
    let mut tokens = 0;
    for seq in sequences {
        assert!(
            seq.start == tokens && seq.end >= seq.start,
            "attention: sequences must be contiguous from 0; got {seq:?} after token {tokens}"
        );
        tokens = seq.end;
    }
    tokens
}

/// Checks that `qkv` holds the rows of `tokens` tokens.
fn check_rows(heads: Heads, qkv: &[f32], tokens: usize) {
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    assert_eq!(
        qkv.len(),
        tokens * width,
        "attention: qkv holds {} values, {tokens} tokens of {width} need {}",
        qkv.len(),
        tokens * width
    );
}

/// A head's length as the kernels store it: whole 32-element tile rows (zeros added).
pub(crate) fn padded_dim(dim: usize) -> usize {
    dim.next_multiple_of(32)
}

/// What one call of either entry point attends with.
struct Call<'a> {
    kernel: Kernel,
    heads: Heads,
    sequences: &'a [Range<usize>],
    /// The tokens of `sequences`, checked once.
    tokens: usize,
    scale: f32,
    prepare: Prepare<'a>,
}

impl<'a> Call<'a> {
    /// A call on `kernel`, over checked `heads` and `sequences`.
    fn new(
        kernel: Kernel,
        heads: Heads,
        sequences: &'a [Range<usize>],
        scale: f32,
        prepare: Prepare<'a>,
    ) -> Self {
        Self {
            kernel,
            heads,
            sequences,
            tokens: check_sequences(heads, sequences),
            scale,
            prepare,
        }
    }

    /// Into `out`, reset to `tokens × q·dim` bf16.
    fn bf16(&self, qkv: QkvRows<'_>, buffers: &mut AttentionBuffers, out: &mut BfMatrix) {
        // Every real output is written by a task.
        out.reshape_for_overwrite(self.tokens, self.heads.q * self.heads.dim);
        self.attend(qkv, buffers, out.rows_mut());
    }

    /// Into `out`, reset to `tokens × q·dim` f32.
    fn f32(
        &self,
        qkv: QkvRows<'_>,
        buffers: &mut AttentionBuffers<f32>,
        out: &mut AlignedVec<f32>,
    ) {
        let width = self.heads.q * self.heads.dim;
        out.resize_for_overwrite(self.tokens * width);
        // `chunks_exact_mut(0)` panics; with no columns there is nothing to write.
        let rows = out.chunks_exact_mut(width.max(1)).take(self.tokens);
        self.attend(qkv, buffers, rows);
    }

    /// Packs Q, K and V as `E`, then runs every task, writing the tokens' `rows`.
    fn attend<'o, E: Runs>(
        &self,
        qkv: QkvRows<'_>,
        buffers: &mut AttentionBuffers<E>,
        rows: impl Iterator<Item = &'o mut [E]>,
    ) {
        let Self {
            kernel,
            heads,
            sequences,
            tokens,
            scale,
            prepare,
        } = *self;
        // The AVX512 and AMX kernels (and their packing) need AVX512-BF16, the tiles' softmax
        // included; AVX2 packs with the portable code.
        let vector = matches!(kernel, Kernel::Amx | Kernel::Avx512Bf16);
        #[cfg(test)]
        let vector = vector || kernel == Kernel::SoftAmx;
        assert!(!vector || Isa::Avx512Bf16.is_supported());
        assert!(kernel != Kernel::Amx || Isa::Amx.is_supported());
        assert!(kernel != Kernel::Avx2 || Isa::Avx2.is_supported());
        assert!(kernel != Kernel::Avx512 || Isa::Avx512.is_supported());
        // With c > 0 the largest scaled score is the largest score, scaled (see the softmax).
        assert!(
            scale > 0.0 && scale.is_finite(),
            "attention: scale {scale} is not positive"
        );
        if tokens == 0 || heads.q == 0 || heads.dim == 0 {
            return;
        }
        let mut packed = Packed::new(heads, sequences, std::mem::take(buffers));
        match qkv {
            QkvRows::All(qkv) => {
                check_rows(heads, qkv, tokens);
                packed.fill(
                    qkv,
                    0,
                    0..packed.blocks_before(sequences.len()),
                    prepare,
                    vector,
                );
            }
            QkvRows::Grouped {
                group_tokens,
                compute,
                rows,
            } => {
                let mut first = 0;
                while first < sequences.len() {
                    let start = sequences[first].start;
                    let last = (first..sequences.len())
                        .find(|&s| sequences[s].end - start >= group_tokens)
                        .unwrap_or(sequences.len() - 1);
                    let group = start..sequences[last].end;
                    compute(group.clone(), rows);
                    check_rows(heads, rows, group.len());
                    let blocks = packed.blocks_before(first)..packed.blocks_before(last + 1);
                    packed.fill(rows, group.start, blocks, prepare, vector);
                    first = last + 1;
                }
            }
        }
        let job = Job {
            kernel,
            heads,
            sequences,
            packed,
            c: scale * std::f32::consts::LOG2_E,
        };
        tasks(heads, sequences, rows)
            .into_par_iter()
            .with_max_len(1)
            .for_each(|task| E::run(&job, task));
        let Packed { q, k, v, .. } = job.packed;
        *buffers = AttentionBuffers { q, k, v };
    }
}

/// Storage for the packed Q, K and V of [`causal_attention`] (bf16, about half the size of its
/// f32 `qkv` input) or of [`causal_attention_f32`] (f32), kept by the caller between calls.
pub struct AttentionBuffers<E: Stored = bf16> {
    pub(crate) q: AlignedVec<E>,
    pub(crate) k: AlignedVec<E::Word>,
    pub(crate) v: AlignedVec<E::Word>,
}

impl<E: Stored> Default for AttentionBuffers<E> {
    fn default() -> Self {
        Self {
            q: AlignedVec::default(),
            k: AlignedVec::default(),
            v: AlignedVec::default(),
        }
    }
}

impl<E: Stored> AttentionBuffers<E> {
    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.q.capacity_bytes() + self.k.capacity_bytes() + self.v.capacity_bytes()
    }
}
