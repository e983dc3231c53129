//! The AVX512-BF16 attention kernel, and the AVX512 pieces the AMX kernel shares: packing K and
//! V, the softmax step, finishing output rows.
//!
//! [`Avx512`]: 8 rows × 32 keys of scores in 16 registers (`vdpbf16ps` of a broadcast query
//! pair against a K pair register), then P·V as 8 rows × 32 dimensions of accumulators. The
//! softmax step works on scores in memory, 16 keys a register, and writes the rounded
//! probabilities row-major: a row's key pair is one 32-bit word, ready to broadcast or to load
//! as an AMX A tile.

use std::arch::x86_64::{
    __m256bh, __m256i, __m512, __m512bh, __m512i, _mm256_loadu_si256, _mm256_storeu_si256,
    _mm512_add_ps, _mm512_cvtepu16_epi32, _mm512_cvtneps_pbh, _mm512_cvtpbh_ps, _mm512_dpbf16_ps,
    _mm512_fmadd_ps, _mm512_fmsub_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_mov_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_maskz_mov_ps, _mm512_max_ps,
    _mm512_mul_ps, _mm512_or_si512, _mm512_reduce_max_ps, _mm512_roundscale_ps, _mm512_scalef_ps,
    _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_setzero_si512,
    _mm512_shuffle_i32x4, _mm512_slli_epi32, _mm512_storeu_ps, _mm512_storeu_si512, _mm512_sub_ps,
    _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32, _mm512_unpacklo_epi64,
};

use half::bf16;

use super::kernel::{Pass, PassKernel, EXP2_MIN, EXP2_POLY};
use super::{KEYS, LANES, MAX_ROWS};
use crate::aligned::Aligned;

/// The AVX512-BF16 kernel; only made where the CPU has it.
pub(super) struct Avx512(());

impl Avx512 {
    /// # Safety
    /// The CPU has AVX512F, AVX512BW and AVX512-BF16.
    pub(super) unsafe fn new() -> Self {
        Self(())
    }
}

const ROWS: usize = 8;

impl PassKernel for Avx512 {
    const ROWS: usize = ROWS;

    fn pass(&mut self, pass: &mut Pass<'_>) {
        pass.check(ROWS);
        // SAFETY: construction vouched for the CPU; the pass was checked.
        unsafe { avx512_pass(pass) }
    }

    fn finish(&self, o: &[f32], inv: f32, dst: &mut [bf16]) {
        // SAFETY: construction vouched for the CPU.
        unsafe { finish(o, inv, dst) }
    }
}

/// # Safety
/// The CPU has AVX512F/BW/BF16; `pass` passed [`Pass::check`] for 8 rows.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn avx512_pass(pass: &mut Pass<'_>) {
    let (q, k, dp) = (pass.q.as_ptr(), pass.k[0].as_ptr(), pass.dp);
    let mut s = [[_mm512_setzero_ps(); 2]; ROWS];
    for pair in 0..dp / 2 {
        // SAFETY: pair < dp/2, so both 64-byte halves of the pair's K row and every query
        // pair read lie inside the checked blocks.
        unsafe {
            let k0 = as_bh(_mm512_loadu_si512(k.add(pair * KEYS).cast()));
            let k1 = as_bh(_mm512_loadu_si512(k.add(pair * KEYS + 16).cast()));
            for (r, s) in s.iter_mut().enumerate() {
                let qp = broadcast_pair(q.add(r * pass.q_stride + 2 * pair));
                s[0] = _mm512_dpbf16_ps(s[0], qp, k0);
                s[1] = _mm512_dpbf16_ps(s[1], qp, k1);
            }
        }
    }
    // Through memory, so that the softmax handles rows the same way for both kernels.
    let mut scores = Aligned([0f32; ROWS * KEYS]);
    for (r, s) in s.iter().enumerate() {
        // SAFETY: row r's 32 scores lie inside `scores`.
        unsafe {
            _mm512_storeu_ps(scores.as_mut_ptr().add(r * KEYS), s[0]);
            _mm512_storeu_ps(scores.as_mut_ptr().add(r * KEYS + 16), s[1]);
        }
    }
    let mut probs = Aligned([bf16::ZERO; ROWS * KEYS]);
    let mut alpha = [0f32; ROWS];
    softmax(pass, &scores.0, &mut probs.0, &mut alpha);
    let chunks = dp / 16;
    for chunk in (0..chunks).step_by(2) {
        // SAFETY: dp is a multiple of 32, so chunk + 2 ≤ chunks.
        unsafe { accumulate(pass, &probs.0, &alpha, chunk) };
    }
}

/// `o = o·alpha + P·V` for two 16-dimension chunks from `chunk`: 8 × 2 accumulators.
///
/// # Safety
/// As [`avx512_pass`], and `chunk + 2 ≤ dp / 16`.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn accumulate(
    pass: &mut Pass<'_>,
    probs: &[bf16; ROWS * KEYS],
    alpha: &[f32; ROWS],
    chunk: usize,
) {
    let dp = pass.dp;
    let (o, v, p) = (pass.o.as_mut_ptr(), pass.v[0].as_ptr(), probs.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    // SAFETY: rows < 8, chunks chunk and chunk + 1 < dp/16 and key pairs < 16 index inside
    // o (8 × dp f32), v (16 × dp words) and probs (8 × 32 bf16).
    unsafe {
        if !pass.first {
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm512_set1_ps(alpha[r]);
                let row = o.add(r * dp + chunk * 16);
                acc[0] = _mm512_mul_ps(_mm512_loadu_ps(row), a);
                acc[1] = _mm512_mul_ps(_mm512_loadu_ps(row.add(16)), a);
            }
        }
        for pair in 0..KEYS / 2 {
            let at = v.add(pair * dp + chunk * 16);
            let v0 = as_bh(_mm512_loadu_si512(at.cast()));
            let v1 = as_bh(_mm512_loadu_si512(at.add(16).cast()));
            for (r, acc) in acc.iter_mut().enumerate() {
                let pp = broadcast_pair(p.add(r * KEYS + 2 * pair));
                acc[0] = _mm512_dpbf16_ps(acc[0], pp, v0);
                acc[1] = _mm512_dpbf16_ps(acc[1], pp, v1);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = o.add(r * dp + chunk * 16);
            _mm512_storeu_ps(row, acc[0]);
            _mm512_storeu_ps(row.add(16), acc[1]);
        }
    }
}

/// [`PassKernel::finish`], 16 values at a time (`vcvtneps2bf16` rounds to nearest even, as
/// `bf16::from_f32` does).
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
pub(super) fn finish(o: &[f32], inv: f32, dst: &mut [bf16]) {
    let n = o.len().min(dst.len());
    let whole = n / 16 * 16;
    let inv_v = _mm512_set1_ps(inv);
    for d in (0..whole).step_by(16) {
        // SAFETY: d + 16 ≤ n, inside both slices.
        unsafe {
            let scaled = _mm512_mul_ps(_mm512_loadu_ps(o.as_ptr().add(d)), inv_v);
            let rounded = _mm512_cvtneps_pbh(scaled);
            _mm256_storeu_si256(
                dst.as_mut_ptr().add(d).cast(),
                std::mem::transmute::<__m256bh, __m256i>(rounded),
            );
        }
    }
    for d in whole..n {
        dst[d] = bf16::from_f32(o[d] * inv);
    }
}

/// The online-softmax step for the pass's rows from their raw scores (`rows × 32·blocks`,
/// row major): updates the maxima and the lane sums, stores the rounded probabilities (same
/// layout, bf16) and each row's rescale factor. Each phase is a loop over rows with no
/// dependence between iterations, so the out-of-order core overlaps the rows' latency
/// chains (horizontal maximum, exp2).
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
pub(super) fn softmax(pass: &mut Pass<'_>, scores: &[f32], probs: &mut [bf16], alpha: &mut [f32]) {
    let rows = pass.m.len();
    let width = pass.blocks * KEYS;
    let halves = width / 16;
    assert!(scores.len() == rows * width && probs.len() == rows * width);
    assert!(alpha.len() == rows && rows.is_multiple_of(8) && rows <= MAX_ROWS);
    let c = _mm512_set1_ps(pass.c);
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut masks = [0u64; MAX_ROWS];
    for (mask, &valid) in masks.iter_mut().zip(pass.valid) {
        *mask = if valid >= 64 {
            u64::MAX
        } else {
            (1 << valid) - 1
        };
    }
    let lane_mask = |r: usize, half: usize| (masks[r] >> (16 * half)) as u16;
    let load = |r: usize, half: usize| {
        // SAFETY: r < rows and half < width/16 keep the 16 floats inside `scores`.
        unsafe { _mm512_loadu_ps(scores.as_ptr().add(r * width + half * 16)) }
    };
    for group in (0..rows).step_by(16) {
        let n = (rows - group).min(16);
        let lanes = crate::first_lanes(n);
        let mut top = [f32::NEG_INFINITY; 16];
        for i in 0..n {
            let r = group + i;
            let mut both = ninf;
            for half in 0..halves {
                let masked = _mm512_mask_mov_ps(ninf, lane_mask(r, half), load(r, half));
                both = _mm512_max_ps(both, masked);
            }
            top[i] = _mm512_reduce_max_ps(both);
        }
        let mut new_m = [0f32; 16];
        // SAFETY: the masks keep to the group's n rows of `m` and `alpha`; the arrays hold 16.
        unsafe {
            let old = _mm512_maskz_loadu_ps(lanes, pass.m.as_ptr().add(group));
            // c > 0, so the largest scaled score is the largest score, scaled.
            let new = _mm512_max_ps(old, _mm512_mul_ps(_mm512_loadu_ps(top.as_ptr()), c));
            _mm512_storeu_ps(new_m.as_mut_ptr(), new);
            _mm512_mask_storeu_ps(pass.m.as_mut_ptr().add(group), lanes, new);
            let factor = exp2(_mm512_sub_ps(old, new));
            _mm512_mask_storeu_ps(alpha.as_mut_ptr().add(group), lanes, factor);
        }
        for i in 0..n {
            let r = group + i;
            let m = _mm512_set1_ps(new_m[i]);
            let mut sum = _mm512_setzero_ps();
            for half in 0..halves {
                let e = exp2(_mm512_fmsub_ps(load(r, half), c, m));
                let rounded = _mm512_cvtneps_pbh(_mm512_maskz_mov_ps(lane_mask(r, half), e));
                sum = _mm512_add_ps(sum, _mm512_cvtpbh_ps(rounded));
                // SAFETY: 16 bf16 at r·width + half·16 lie inside `probs` (asserted).
                unsafe {
                    _mm256_storeu_si256(
                        probs.as_mut_ptr().add(r * width + half * 16).cast(),
                        std::mem::transmute::<__m256bh, __m256i>(rounded),
                    );
                }
            }
            let l = &mut pass.l[r * LANES..(r + 1) * LANES];
            // SAFETY: `l` is 16 f32.
            unsafe {
                let updated = if pass.first {
                    sum
                } else {
                    let a = _mm512_set1_ps(alpha[r]);
                    _mm512_fmadd_ps(_mm512_loadu_ps(l.as_ptr()), a, sum)
                };
                _mm512_storeu_ps(l.as_mut_ptr(), updated);
            }
        }
    }
}

/// [`super::KvRows::pack`] in registers: K by 16×16 transposes of 32-bit pairs, V by
/// widening and merging two keys' rows.
///
/// # Safety
/// The CPU has AVX512F/BW; `k_rows` and `v_rows` hold 32 rows of `stride` bf16, `stride` is
/// a multiple of `dp`, and `k`, `v` hold `stride / dp` blocks of `16 · dp` words.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pack(
    k_rows: &[bf16],
    v_rows: &[bf16],
    stride: usize,
    dp: usize,
    k: &mut [u32],
    v: &mut [u32],
) {
    let len = KEYS * dp / 2;
    for (h, k) in k.chunks_exact_mut(len).enumerate() {
        for half in 0..2 {
            for p0 in (0..dp / 2).step_by(16) {
                // SAFETY: rows 16·half..16·half + 16 and pairs p0..p0 + 16 of head h lie
                // inside `k_rows`; the stores go to pairs p0..p0 + 16, keys of `half`.
                unsafe {
                    let rows: [__m512i; 16] = std::array::from_fn(|i| {
                        let at = (16 * half + i) * stride + h * dp + 2 * p0;
                        _mm512_loadu_si512(k_rows.as_ptr().add(at).cast())
                    });
                    for (j, column) in transpose(&rows).iter().enumerate() {
                        let at = (p0 + j) * KEYS + 16 * half;
                        _mm512_storeu_si512(k.as_mut_ptr().add(at).cast(), *column);
                    }
                }
            }
        }
    }
    for (h, v) in v.chunks_exact_mut(len).enumerate() {
        for j in 0..KEYS / 2 {
            for d in (0..dp).step_by(16) {
                // SAFETY: keys 2j, 2j + 1 and dimensions d..d + 16 of head h lie inside
                // `v_rows`; the store goes to pair j's dimensions d..d + 16.
                unsafe {
                    let even = v_rows.as_ptr().add(2 * j * stride + h * dp + d);
                    let odd = even.add(stride);
                    let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(even.cast()));
                    let hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(odd.cast()));
                    let words = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
                    _mm512_storeu_si512(v.as_mut_ptr().add(j * dp + d).cast(), words);
                }
            }
        }
    }
}

/// Transposes 16 rows of 16 words: unpack pairs and quads within 128-bit lanes, then
/// regroup the lanes (the classic four-stage network, 64 shuffles).
#[target_feature(enable = "avx512f")]
fn transpose(r: &[__m512i; 16]) -> [__m512i; 16] {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + k], lane L: rows 4i..4i + 4 of column 4L + k.
    let mut u = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    let mut out = [_mm512_setzero_si512(); 16];
    for k in 0..4 {
        let (x, y) = (
            _mm512_shuffle_i32x4::<0x44>(u[k], u[4 + k]),
            _mm512_shuffle_i32x4::<0xEE>(u[k], u[4 + k]),
        );
        let (x2, y2) = (
            _mm512_shuffle_i32x4::<0x44>(u[8 + k], u[12 + k]),
            _mm512_shuffle_i32x4::<0xEE>(u[8 + k], u[12 + k]),
        );
        out[k] = _mm512_shuffle_i32x4::<0x88>(x, x2);
        out[4 + k] = _mm512_shuffle_i32x4::<0xDD>(x, x2);
        out[8 + k] = _mm512_shuffle_i32x4::<0x88>(y, y2);
        out[12 + k] = _mm512_shuffle_i32x4::<0xDD>(y, y2);
    }
    out
}

/// Vector twin of [`super::exp2`].
#[target_feature(enable = "avx512f")]
fn exp2(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(EXP2_MIN));
    // Round to nearest even, exceptions suppressed.
    let n = _mm512_roundscale_ps::<0x08>(x);
    let f = _mm512_sub_ps(x, n);
    let mut poly = _mm512_set1_ps(EXP2_POLY[6]);
    for &c in EXP2_POLY[..6].iter().rev() {
        poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(poly, n)
}

/// Two consecutive bf16 at `at`, repeated in all 16 lanes.
///
/// # Safety
/// Four bytes at `at` are readable.
#[target_feature(enable = "avx512f")]
unsafe fn broadcast_pair(at: *const bf16) -> __m512bh {
    // SAFETY: the caller vouches for the four bytes.
    as_bh(_mm512_set1_epi32(unsafe {
        at.cast::<i32>().read_unaligned()
    }))
}

#[inline(always)]
pub(super) fn as_bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512-bit plain-data vectors; bf16 pairs are reinterpreted, not converted.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}
