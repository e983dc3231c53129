//! What Q, K and V are stored as between the packing sweep and the kernels, and the layouts of
//! K and V that each type is packed in (see [`super::pack::Packed`]).
//!
//! bf16 (the bf16 path): K and V as 32-bit words holding a bf16 pair, the probabilities rounded
//! to bf16 too, so every product in the kernels is exact. f32 (the exact path): nothing is
//! rounded; K and V are packed in the layouts the widened kernels otherwise make from the pairs
//! (K `dp × 32`, a row per element; V `32 × dp`, a row per key), and a product of two f32 is
//! rounded by the fused multiply-add that adds it.

use half::bf16;

use super::KEYS;
use crate::aligned::Plain;
use crate::matrix::f32_to_bf16;

/// The per-type facts the packing and the kernels need. Sealed: [`super::Stored`] is its public
/// face, for bf16 and f32 only.
pub trait Layout: Plain {
    /// A K or V word: a bf16 pair, or one f32.
    type Word: Plain;
    /// Elements per word.
    const PER_WORD: usize;
    /// Whether the probabilities are rounded to this type before P·V.
    const ROUNDS: bool;
    /// `x` in this type (rounded to nearest even for bf16).
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    /// `src` as this type into `dst` (the same length).
    fn convert(src: &[f32], dst: &mut [Self]);
    /// Elements `2p` and `2p + 1` of key `key`, from a block's packed K.
    fn key_pair(k: &[Self::Word], p: usize, key: usize) -> (f32, f32);
    /// Element `d` of keys `2j` and `2j + 1`, from a block's packed V of `dp` a key.
    fn value_pair(v: &[Self::Word], j: usize, d: usize, dp: usize) -> (f32, f32);
    /// Lays out one block's K and V: `k_rows` and `v_rows` hold its 32 tokens' rows of
    /// `stride` (every K/V head, `dp` each), `k` and `v` get each head's block in turn. `vector`
    /// says AVX512-BF16 may be used (the same words either way).
    fn pack(
        k_rows: &[Self],
        v_rows: &[Self],
        stride: usize,
        dp: usize,
        k: &mut [Self::Word],
        v: &mut [Self::Word],
        vector: bool,
    );
}

impl Layout for bf16 {
    type Word = u32;
    const PER_WORD: usize = 2;
    const ROUNDS: bool = true;

    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }

    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }

    fn convert(src: &[f32], dst: &mut [Self]) {
        f32_to_bf16(src, dst);
    }

    fn key_pair(k: &[u32], p: usize, key: usize) -> (f32, f32) {
        unpair(k[p * KEYS + key])
    }

    fn value_pair(v: &[u32], j: usize, d: usize, dp: usize) -> (f32, f32) {
        unpair(v[j * dp + d])
    }

    /// K: for each dimension pair p the 32 keys' pairs `(k[2p], k[2p+1])`: per half one 16-key
    /// register, or one row of a 16-key B tile. V: for each key pair j and dimension d the pair
    /// `(v[2j][d], v[2j+1][d])`: 16 dimensions of them make one register, or one B-tile row,
    /// that probability pairs turn into 16 output sums.
    fn pack(
        k_rows: &[bf16],
        v_rows: &[bf16],
        stride: usize,
        dp: usize,
        k: &mut [u32],
        v: &mut [u32],
        vector: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if vector {
            // SAFETY: `vector` is only set where AVX512-BF16 was checked; the caller checked
            // the sizes.
            unsafe { super::avx512::pack(k_rows, v_rows, stride, dp, k, v) };
            return;
        }
        let _ = vector;
        for (h, k) in k.chunks_exact_mut(KEYS * dp / 2).enumerate() {
            for (t, row) in k_rows.chunks_exact(stride).enumerate() {
                for (p, values) in row[h * dp..(h + 1) * dp].chunks_exact(2).enumerate() {
                    k[p * KEYS + t] = pair(values[0], values[1]);
                }
            }
        }
        for (h, v) in v.chunks_exact_mut(KEYS * dp / 2).enumerate() {
            for (j, v) in v.chunks_exact_mut(dp).enumerate() {
                let even = &v_rows[2 * j * stride + h * dp..][..dp];
                let odd = &v_rows[(2 * j + 1) * stride + h * dp..][..dp];
                for ((v, &e), &o) in v.iter_mut().zip(even).zip(odd) {
                    *v = pair(e, o);
                }
            }
        }
    }
}

impl Layout for f32 {
    type Word = f32;
    const PER_WORD: usize = 1;
    const ROUNDS: bool = false;

    fn from_f32(x: f32) -> Self {
        x
    }

    fn to_f32(self) -> f32 {
        self
    }

    fn convert(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }

    fn key_pair(k: &[f32], p: usize, key: usize) -> (f32, f32) {
        (k[2 * p * KEYS + key], k[(2 * p + 1) * KEYS + key])
    }

    fn value_pair(v: &[f32], j: usize, d: usize, dp: usize) -> (f32, f32) {
        (v[2 * j * dp + d], v[(2 * j + 1) * dp + d])
    }

    /// K: `dp × 32`, row d holding element d of the 32 keys. V: `32 × dp`, the keys' rows.
    fn pack(
        k_rows: &[f32],
        v_rows: &[f32],
        stride: usize,
        dp: usize,
        k: &mut [f32],
        v: &mut [f32],
        _vector: bool,
    ) {
        for (h, k) in k.chunks_exact_mut(KEYS * dp).enumerate() {
            for (t, row) in k_rows.chunks_exact(stride).enumerate() {
                for (d, &value) in row[h * dp..(h + 1) * dp].iter().enumerate() {
                    k[d * KEYS + t] = value;
                }
            }
        }
        for (h, v) in v.chunks_exact_mut(KEYS * dp).enumerate() {
            for (v, row) in v.chunks_exact_mut(dp).zip(v_rows.chunks_exact(stride)) {
                v.copy_from_slice(&row[h * dp..(h + 1) * dp]);
            }
        }
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
