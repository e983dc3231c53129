//! Q, K and V of a batch rounded to bf16 once and laid out for the kernels.

use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use super::{padded_dim, AttentionBuffers, Heads, Prepare, KEYS};
use crate::aligned::AlignedVec;
use crate::matrix::f32_to_bf16;

/// Q, K and V rounded to bf16 once, in sweeps over the f32 rows token by token (all rows, or
/// group after group of whole sequences), and laid out for the kernels, in blocks of 32 tokens
/// (a sequence's blocks start at its first token).
///
/// Q: per block, the 32 tokens' rows of `q · dp`, as in `qkv` (heads padded to `dp`), so one
/// query head's positions are `q · dp` apart.
///
/// K: per block and K/V head, for each dimension pair p the 32 keys' pairs `(k[2p], k[2p+1])`:
/// per half one 16-key register, or one row of a 16-key B tile. V: per block and K/V head, for
/// each key pair j and dimension d the pair `(v[2j][d], v[2j+1][d])`: 16 dimensions of them make
/// one register, or one B-tile row, that probability pairs turn into 16 output sums. Pairs are
/// stored as the 32-bit word they make in memory.
///
/// Tokens past the end of a sequence and dimensions past `dim` are zero.
pub(super) struct Packed {
    pub(super) q: AlignedVec<bf16>,
    pub(super) k: AlignedVec<u32>,
    pub(super) v: AlignedVec<u32>,
    /// (first token, tokens) of every block.
    spans: Vec<(usize, usize)>,
    /// Index of each sequence's first block.
    pub(super) first_block: Vec<usize>,
    pub(super) heads: Heads,
    pub(super) dp: usize,
}

impl Packed {
    /// Room for every block of `sequences`, filled by [`Self::fill`].
    pub(super) fn new(heads: Heads, sequences: &[Range<usize>], buffers: AttentionBuffers) -> Self {
        let dp = padded_dim(heads.dim);
        let (q_len, kv_len) = (KEYS * heads.q * dp, heads.kv * KEYS * dp / 2);
        // (first token, tokens) of every block, sequence after sequence.
        let spans: Vec<(usize, usize)> = sequences
            .iter()
            .flat_map(|s| {
                (s.start..s.end)
                    .step_by(KEYS)
                    .map(|t| (t, (s.end - t).min(KEYS)))
            })
            .collect();
        let first_block = sequences
            .iter()
            .scan(0, |next, s| {
                let first = *next;
                *next += s.len().div_ceil(KEYS);
                Some(first)
            })
            .collect();
        let AttentionBuffers {
            mut q,
            mut k,
            mut v,
        } = buffers;
        // Every element is written by `fill`; reused buffers are only resized, not cleared.
        q.resize_for_overwrite(spans.len() * q_len);
        k.resize_for_overwrite(spans.len() * kv_len);
        v.resize_for_overwrite(spans.len() * kv_len);
        Self {
            q,
            k,
            v,
            spans,
            first_block,
            heads,
            dp,
        }
    }

    /// Packs `blocks` (whole sequences' blocks) from `qkv`, the f32 rows of tokens
    /// `first_token..`, with AVX512 where `vector` says the CPU has it.
    pub(super) fn fill(
        &mut self,
        qkv: &[f32],
        first_token: usize,
        blocks: Range<usize>,
        prepare: Prepare<'_>,
        vector: bool,
    ) {
        let heads = self.heads;
        let (q_len, kv_len) = (KEYS * heads.q * self.dp, heads.kv * KEYS * self.dp / 2);
        self.q[blocks.start * q_len..blocks.end * q_len]
            .par_chunks_mut(q_len)
            .zip(self.k[blocks.start * kv_len..blocks.end * kv_len].par_chunks_mut(kv_len))
            .zip(self.v[blocks.start * kv_len..blocks.end * kv_len].par_chunks_mut(kv_len))
            .zip(&self.spans[blocks])
            .for_each_init(
                || KvRows::new(heads),
                |rows, (((q, k), v), &(first, len))| {
                    let tokens = first..first + len;
                    rows.load(heads, qkv, first_token, tokens, prepare, q);
                    rows.pack(heads, k, v, vector);
                },
            );
    }

    /// Blocks of sequences `0..seq` (all of them when `seq` is past the last).
    pub(super) fn blocks_before(&self, seq: usize) -> usize {
        self.first_block
            .get(seq)
            .copied()
            .unwrap_or(self.spans.len())
    }

    /// Block `b` of sequence `seq`: its query rows, and K/V head `head`'s K and V.
    pub(super) fn block(&self, seq: usize, b: usize, head: usize) -> (&[bf16], &[u32], &[u32]) {
        let block = self.first_block[seq] + b;
        let q_len = KEYS * self.heads.q * self.dp;
        let kv_len = KEYS * self.dp / 2;
        let at = block * self.heads.kv + head;
        (
            &self.q[block * q_len..(block + 1) * q_len],
            &self.k[at * kv_len..(at + 1) * kv_len],
            &self.v[at * kv_len..(at + 1) * kv_len],
        )
    }
}

/// One block's K and V rows in bf16, token-major (32 rows of `kv · dp`), and the prepared
/// query and key heads of a token: scratch for packing.
struct KvRows {
    k: Vec<bf16>,
    v: Vec<bf16>,
    qk: Vec<f32>,
}

impl KvRows {
    fn new(heads: Heads) -> Self {
        let len = KEYS * heads.kv * padded_dim(heads.dim);
        Self {
            k: vec![bf16::ZERO; len],
            v: vec![bf16::ZERO; len],
            qk: vec![0.0; (heads.q + heads.kv) * heads.dim],
        }
    }

    /// Prepares and converts `tokens` (at most 32), whose rows `qkv` holds from token
    /// `first_token` on: each token's query and key heads prepared (into L1), then Q rounded
    /// straight into its packed place `q`, K and V into the scratch rows.
    fn load(
        &mut self,
        heads: Heads,
        qkv: &[f32],
        first_token: usize,
        tokens: Range<usize>,
        prepare: Prepare<'_>,
        q: &mut [bf16],
    ) {
        let Heads {
            q: q_heads,
            kv,
            dim,
        } = heads;
        let (width, dp) = ((q_heads + 2 * kv) * dim, padded_dim(dim));
        let (k, v, qk) = (&mut self.k, &mut self.v, &mut self.qk);
        let rows = q
            .chunks_exact_mut(q_heads * dp)
            .zip(k.chunks_exact_mut(kv * dp))
            .zip(v.chunks_exact_mut(kv * dp));
        for (t, ((q, k), v)) in rows.enumerate() {
            if t >= tokens.len() {
                q.fill(bf16::ZERO);
                k.fill(bf16::ZERO);
                v.fill(bf16::ZERO);
                continue;
            }
            let src = &qkv[(tokens.start - first_token + t) * width..][..width];
            prepare(tokens.start + t, src, qk);
            let (src_q, src_k) = qk.split_at(q_heads * dim);
            convert_heads(src_q, q, dim, dp);
            convert_heads(src_k, k, dim, dp);
            convert_heads(&src[(q_heads + kv) * dim..], v, dim, dp);
        }
    }

    /// Writes one block's K and V chunks (every K/V head) in the packed layout, with AVX512 where
    /// `vector` says the CPU has it (the same words either way).
    fn pack(&self, heads: Heads, k: &mut [u32], v: &mut [u32], vector: bool) {
        let dp = padded_dim(heads.dim);
        let stride = heads.kv * dp;
        assert!(self.k.len() == KEYS * stride && self.v.len() == KEYS * stride);
        assert!(k.len() == heads.kv * KEYS * dp / 2 && v.len() == k.len());
        #[cfg(target_arch = "x86_64")]
        if vector {
            // SAFETY: `vector` is only set where AVX512-BF16 was checked; sizes asserted above.
            unsafe { super::avx512::pack(&self.k, &self.v, stride, dp, k, v) };
            return;
        }
        let _ = vector;
        for (h, k) in k.chunks_exact_mut(KEYS * dp / 2).enumerate() {
            for (t, row) in self.k.chunks_exact(stride).enumerate() {
                for (p, values) in row[h * dp..(h + 1) * dp].chunks_exact(2).enumerate() {
                    k[p * KEYS + t] = pair(values[0], values[1]);
                }
            }
        }
        for (h, v) in v.chunks_exact_mut(KEYS * dp / 2).enumerate() {
            for (j, v) in v.chunks_exact_mut(dp).enumerate() {
                let even = &self.v[2 * j * stride + h * dp..][..dp];
                let odd = &self.v[(2 * j + 1) * stride + h * dp..][..dp];
                for ((v, &e), &o) in v.iter_mut().zip(even).zip(odd) {
                    *v = pair(e, o);
                }
            }
        }
    }
}

/// Rounds consecutive heads of `dim` values into rows of `dp` (zeros after `dim`).
fn convert_heads(src: &[f32], dst: &mut [bf16], dim: usize, dp: usize) {
    if dim == dp {
        f32_to_bf16(src, dst);
        return;
    }
    for (src, dst) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dp)) {
        f32_to_bf16(src, &mut dst[..dim]);
        dst[dim..].fill(bf16::ZERO);
    }
}

/// Two bf16 as the 32-bit word they make in memory.
pub(super) fn pair(lo: bf16, hi: bf16) -> u32 {
    u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16)
}

/// The bf16 halves of a pair as f32: (lower, upper).
pub(super) fn unpair(word: u32) -> (f32, f32) {
    (
        f32::from_bits(word << 16),
        f32::from_bits(word & 0xFFFF_0000),
    )
}
