//! Q, K and V of a batch stored once (see [`super::store`]) and laid out for the kernels.

use std::ops::Range;

use rayon::prelude::*;

use super::Stored;
use super::{padded_dim, AttentionBuffers, Heads, Prepare, KEYS};
use crate::aligned::AlignedVec;

/// Q, K and V converted to `E` once, in sweeps over the f32 rows token by token (all rows, or
/// group after group of whole sequences), and laid out for the kernels, in blocks of 32 tokens
/// (a sequence's blocks start at its first token).
///
/// Q: per block, the 32 tokens' rows of `q · dp`, as in `qkv` (heads padded to `dp`), so one
/// query head's positions are `q · dp` apart. K and V: per block and K/V head, the 32 keys in
/// `E`'s layout ([`super::store::Layout::pack`]).
///
/// Tokens past the end of a sequence and dimensions past `dim` are zero.
pub(super) struct Packed<E: Stored> {
    pub(super) q: AlignedVec<E>,
    pub(super) k: AlignedVec<E::Word>,
    pub(super) v: AlignedVec<E::Word>,
    /// (first token, tokens) of every block.
    spans: Vec<(usize, usize)>,
    /// Index of each sequence's first block.
    pub(super) first_block: Vec<usize>,
    pub(super) heads: Heads,
    pub(super) dp: usize,
}

impl<E: Stored> Packed<E> {
    /// Room for every block of `sequences`, filled by [`Self::fill`].
    pub(super) fn new(
        heads: Heads,
        sequences: &[Range<usize>],
        buffers: AttentionBuffers<E>,
    ) -> Self {
        let dp = padded_dim(heads.dim);
        let (q_len, kv_len) = (KEYS * heads.q * dp, heads.kv * KEYS * dp / E::PER_WORD);
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
    /// `first_token..`, with AVX512-BF16 where `vector` says the CPU has it.
    pub(super) fn fill(
        &mut self,
        qkv: &[f32],
        first_token: usize,
        blocks: Range<usize>,
        prepare: Prepare<'_>,
        vector: bool,
    ) {
        let heads = self.heads;
        let (q_len, kv_len) = (
            KEYS * heads.q * self.dp,
            heads.kv * KEYS * self.dp / E::PER_WORD,
        );
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
    pub(super) fn block(
        &self,
        seq: usize,
        b: usize,
        head: usize,
    ) -> (&[E], &[E::Word], &[E::Word]) {
        let block = self.first_block[seq] + b;
        let q_len = KEYS * self.heads.q * self.dp;
        let kv_len = KEYS * self.dp / E::PER_WORD;
        let at = block * self.heads.kv + head;
        (
            &self.q[block * q_len..(block + 1) * q_len],
            &self.k[at * kv_len..(at + 1) * kv_len],
            &self.v[at * kv_len..(at + 1) * kv_len],
        )
    }
}

/// One block's K and V rows as `E`, token-major (32 rows of `kv · dp`), and the prepared
/// query and key heads of a token: scratch for packing.
struct KvRows<E> {
    k: Vec<E>,
    v: Vec<E>,
    qk: Vec<f32>,
}

impl<E: Stored> KvRows<E> {
    fn new(heads: Heads) -> Self {
        let len = KEYS * heads.kv * padded_dim(heads.dim);
        Self {
            k: vec![E::default(); len],
            v: vec![E::default(); len],
            qk: vec![0.0; (heads.q + heads.kv) * heads.dim],
        }
    }

    /// Prepares and converts `tokens` (at most 32), whose rows `qkv` holds from token
    /// `first_token` on: each token's query and key heads prepared (into L1), then Q converted
    /// straight into its packed place `q`, K and V into the scratch rows.
    fn load(
        &mut self,
        heads: Heads,
        qkv: &[f32],
        first_token: usize,
        tokens: Range<usize>,
        prepare: Prepare<'_>,
        q: &mut [E],
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
                q.fill(E::default());
                k.fill(E::default());
                v.fill(E::default());
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

    /// Writes one block's K and V chunks (every K/V head) in `E`'s packed layout.
    fn pack(&self, heads: Heads, k: &mut [E::Word], v: &mut [E::Word], vector: bool) {
        let dp = padded_dim(heads.dim);
        let stride = heads.kv * dp;
        assert!(self.k.len() == KEYS * stride && self.v.len() == KEYS * stride);
        assert!(k.len() == heads.kv * KEYS * dp / E::PER_WORD && v.len() == k.len());
        E::pack(&self.k, &self.v, stride, dp, k, v, vector);
    }
}

/// Converts consecutive heads of `dim` values into rows of `dp` (zeros after `dim`).
fn convert_heads<E: Stored>(src: &[f32], dst: &mut [E], dim: usize, dp: usize) {
    if dim == dp {
        E::convert(src, dst);
        return;
    }
    for (src, dst) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dp)) {
        E::convert(src, &mut dst[..dim]);
        dst[dim..].fill(E::default());
    }
}
