//! The AVX2 attention kernel: the [`Reference`](super::Reference) kernel's arithmetic, 8 lanes at
//! a time, bit for bit.
//!
//! A packed K or V word is a bf16 pair; shifting it left by 16 gives the even element as f32 and
//! masking off the low half the odd one. Every product in the two matrix products is of two bf16
//! values, exact in f32, so a fused multiply-add rounds exactly where the reference's separate
//! multiply and add do; the softmax's own steps (`exp2`, the rescaling by `alpha`) keep the
//! reference's operations one for one.

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_epi32, _mm256_add_ps, _mm256_and_si256, _mm256_blendv_ps,
    _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmpgt_epi32, _mm256_cvtps_epi32,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_max_ps, _mm256_mul_ps,
    _mm256_round_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps,
    _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_ps, _mm256_sub_ps,
};

use super::kernel::{exp2, Pass, PassKernel, EXP2_MIN, EXP2_POLY};
use super::{KEYS, LANES};
use crate::gemm::split;

/// The AVX2 kernel; only made where the CPU has AVX2 and FMA.
pub(super) struct Avx2(());

impl Avx2 {
    /// # Safety
    /// The CPU has AVX2 and FMA.
    pub(super) unsafe fn new() -> Self {
        Self(())
    }
}

const ROWS: usize = 8;
/// Rows whose scores are summed together, sharing each K register.
const ROW_GROUP: usize = 2;
/// 8-key registers per 32-key block.
const KEY_VECS: usize = KEYS / 8;

impl PassKernel for Avx2 {
    const ROWS: usize = ROWS;

    fn pass(&mut self, pass: &mut Pass<'_>) {
        pass.check(ROWS);
        // SAFETY: construction vouched for the CPU; the pass was checked.
        unsafe { avx2_pass(pass) }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA; `pass` passed [`Pass::check`] for 8 rows.
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_pass(pass: &mut Pass<'_>) {
    let high = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
    let (q, k, dp) = (pass.q.as_ptr(), pass.k[0].as_ptr(), pass.dp);
    let mut scores = [[_mm256_setzero_ps(); KEY_VECS]; ROWS];
    for group in (0..ROWS).step_by(ROW_GROUP) {
        let mut s = [[_mm256_setzero_ps(); KEY_VECS]; ROW_GROUP];
        for pair in 0..dp / 2 {
            // SAFETY: pair < dp/2 and the rows are < 8, inside the checked Q rows and K block.
            unsafe {
                let mut qs = [(_mm256_setzero_ps(), _mm256_setzero_ps()); ROW_GROUP];
                for (r, qs) in qs.iter_mut().enumerate() {
                    let bits = q
                        .add((group + r) * pass.q_stride + 2 * pair)
                        .cast::<i32>()
                        .read_unaligned();
                    *qs = split(_mm256_set1_epi32(bits), high);
                }
                for g in 0..KEY_VECS {
                    let words = _mm256_loadu_si256(k.add(pair * KEYS + 8 * g).cast::<__m256i>());
                    let (even, odd) = split(words, high);
                    for (s, &(q_even, q_odd)) in s.iter_mut().zip(&qs) {
                        s[g] = _mm256_fmadd_ps(q_odd, odd, s[g]);
                        s[g] = _mm256_fmadd_ps(q_even, even, s[g]);
                    }
                }
            }
        }
        scores[group..group + ROW_GROUP].copy_from_slice(&s);
    }
    for (r, scores) in scores.iter().enumerate() {
        // SAFETY: r < 8 rows, as checked.
        unsafe { softmax_row(pass, r, scores, high) };
    }
}

/// The reference's softmax step and `o = o·alpha + P·V` for row `r`.
///
/// # Safety
/// As [`avx2_pass`], and `r < 8`.
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row(pass: &mut Pass<'_>, r: usize, scores: &[__m256; KEY_VECS], high: __m256i) {
    let valid = _mm256_set1_epi32(pass.valid[r].min(KEYS) as i32);
    let lane_keys = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let c = _mm256_set1_ps(pass.c);
    // Keys past the row's last visible one count as -inf, as the reference never scores them.
    let mut masked = [neg_inf; KEY_VECS];
    let mut visible = [_mm256_setzero_ps(); KEY_VECS];
    for g in 0..KEY_VECS {
        let keys = _mm256_add_epi32(lane_keys, _mm256_set1_epi32(8 * g as i32));
        visible[g] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(valid, keys));
        masked[g] = _mm256_blendv_ps(neg_inf, scores[g], visible[g]);
    }
    let mut lanes = [0f32; KEYS];
    for g in 0..KEY_VECS {
        // SAFETY: 8·g + 8 ≤ 32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * g), masked[g]) };
    }
    let top = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max) * pass.c;
    let m = pass.m[r].max(top);
    let alpha = exp2(pass.m[r] - m);
    pass.m[r] = m;

    let minus_m = _mm256_set1_ps(-m);
    let mut p = [_mm256_setzero_ps(); KEY_VECS];
    for g in 0..KEY_VECS {
        let e = round_to_bf16(exp2_vec(_mm256_fmadd_ps(masked[g], c, minus_m)));
        p[g] = _mm256_blendv_ps(_mm256_setzero_ps(), e, visible[g]);
    }
    let mut probs = [0f32; KEYS];
    for g in 0..KEY_VECS {
        // SAFETY: 8·g + 8 ≤ 32.
        unsafe { _mm256_storeu_ps(probs.as_mut_ptr().add(8 * g), p[g]) };
    }

    let alpha_v = _mm256_set1_ps(alpha);
    // SAFETY: row r's 16 lanes of l and dp sums of o lie inside the checked slices; the V
    // block holds 16 key pairs × dp words.
    unsafe {
        let l = pass.l.as_mut_ptr().add(r * LANES);
        for half in 0..LANES / 8 {
            let sum = _mm256_add_ps(p[half], p[half + LANES / 8]);
            let at = l.add(8 * half);
            let v = if pass.first {
                sum
            } else {
                _mm256_fmadd_ps(_mm256_loadu_ps(at), alpha_v, sum)
            };
            _mm256_storeu_ps(at, v);
        }

        let (dp, v) = (pass.dp, pass.v[0].as_ptr());
        let o = pass.o.as_mut_ptr().add(r * dp);
        for d in (0..dp).step_by(32) {
            let mut acc = [_mm256_setzero_ps(); 4];
            if !pass.first {
                for (i, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_mul_ps(_mm256_loadu_ps(o.add(d + 8 * i)), alpha_v);
                }
            }
            for j in 0..KEYS / 2 {
                let (p_even, p_odd) = (
                    _mm256_set1_ps(probs[2 * j]),
                    _mm256_set1_ps(probs[2 * j + 1]),
                );
                for (i, acc) in acc.iter_mut().enumerate() {
                    let words = _mm256_loadu_si256(v.add(j * dp + d + 8 * i).cast::<__m256i>());
                    let (even, odd) = split(words, high);
                    *acc = _mm256_fmadd_ps(p_odd, odd, *acc);
                    *acc = _mm256_fmadd_ps(p_even, even, *acc);
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(d + 8 * i), *acc);
            }
        }
    }
}

/// The scalar `exp2`, 8 lanes at a time: the same clamp, rounding, polynomial of fused
/// multiply-adds and final scaling. The scaling is by `2^n` with `n ≥ -125` of a polynomial
/// near 1, so its result is a normal float and the f32 product is exact, like the scalar's
/// product in f64 rounded once.
#[target_feature(enable = "avx2,fma")]
fn exp2_vec(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(EXP2_MIN));
    // Round to nearest even, no exceptions.
    let n = _mm256_round_ps::<0x08>(x);
    let f = _mm256_sub_ps(x, n);
    let mut poly = _mm256_set1_ps(EXP2_POLY[6]);
    for &coef in EXP2_POLY[..6].iter().rev() {
        poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(coef));
    }
    let exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(exponent));
    _mm256_mul_ps(poly, scale)
}

/// Rounds finite f32 to the nearest bf16 (ties to even) and back, as `bf16::from_f32` does.
#[target_feature(enable = "avx2")]
fn round_to_bf16(x: __m256) -> __m256 {
    let bits = _mm256_castps_si256(x);
    let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
    let rounded = _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
    _mm256_castsi256_ps(_mm256_and_si256(
        rounded,
        _mm256_set1_epi32(0xFFFF_0000_u32 as i32),
    ))
}
