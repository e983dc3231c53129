//! The attention kernel for CPUs without bf16 instructions: the [`Reference`](super::Reference)
//! kernel's arithmetic, bit for bit, a register of f32 lanes at a time. Written once over
//! [`Wide`], it runs as AVX2 (8 lanes) and as AVX-512F (16 lanes, Skylake to Ice Lake Xeons).
//!
//! A packed K or V word is a bf16 pair; shifting it left by 16 gives the even element as f32 and
//! masking off the low half the odd one. Every product in the two matrix products is of two bf16
//! values, exact in f32, so a fused multiply-add rounds exactly where the reference's separate
//! multiply and add do; the softmax's own steps (`exp2`, the rescaling by `alpha`) keep the
//! reference's operations one for one. Lanes never meet except in the row maximum, which is
//! exact in any order, so the lane count does not change a bit.

use super::kernel::{exp2, Pass, PassKernel};
use super::{KEYS, LANES};

/// Query rows per pass.
const ROWS: usize = 8;
/// Rows whose scores are summed together, sharing each K register.
const ROW_GROUP: usize = 2;
/// Registers of 32 keys (or 32 output sums) at the narrowest lanes, 8: the arrays below hold
/// this many and use `KEYS / W::LANES` of them.
const MAX_VECS: usize = KEYS / 8;

/// An f32 SIMD register as this kernel uses it.
///
/// # Safety
/// Implementations may only be used where the CPU has their instructions; pointers given to
/// them are valid for `LANES` elements.
pub(super) unsafe trait Wide: Copy {
    const LANES: usize;
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `LANES` packed bf16 pairs at `p`: their even and their odd elements, as f32.
    unsafe fn pairs(p: *const u32) -> (Self, Self);
    /// One packed pair in every lane, split as [`Wide::pairs`].
    fn splat_pair(word: u32) -> (Self, Self);
    /// `self + a·b`, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    /// Lane `i` of `self` where `first + i < valid`, of `other` elsewhere.
    fn below(self, first: usize, valid: usize, other: Self) -> Self;
    /// The scalar [`exp2`], lane by lane.
    fn exp2(self) -> Self;
    /// Rounds finite f32 to the nearest bf16 (ties to even) and back, as `bf16::from_f32` does.
    fn round_to_bf16(self) -> Self;
    /// [`pass`] over these lanes, compiled with their instructions enabled: the generic body
    /// inlined into a function of each instruction set.
    ///
    /// # Safety
    /// The CPU has the instructions; `pass` passed [`Pass::check`] for 8 rows.
    unsafe fn pass(pass: &mut Pass<'_>);
}

/// The kernel over `W`'s registers; only made where the CPU has them.
pub(super) struct Widened<W: Wide>(std::marker::PhantomData<W>);

impl<W: Wide> Widened<W> {
    /// # Safety
    /// The CPU has `W`'s instructions.
    pub(super) unsafe fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<W: Wide> PassKernel for Widened<W> {
    const ROWS: usize = ROWS;

    fn pass(&mut self, pass: &mut Pass<'_>) {
        pass.check(ROWS);
        // SAFETY: construction vouched for the CPU; the pass was checked.
        unsafe { W::pass(pass) }
    }
}

/// # Safety
/// As [`Wide::pass`].
#[inline(always)]
unsafe fn pass<W: Wide>(pass: &mut Pass<'_>) {
    let vecs = KEYS / W::LANES;
    let (q, k, dp) = (pass.q.as_ptr(), pass.k[0].as_ptr(), pass.dp);
    let mut scores = [[W::zero(); MAX_VECS]; ROWS];
    for group in (0..ROWS).step_by(ROW_GROUP) {
        let mut s = [[W::zero(); MAX_VECS]; ROW_GROUP];
        for pair in 0..dp / 2 {
            // SAFETY: pair < dp/2 and the rows are < 8, inside the checked Q rows and K block.
            unsafe {
                let mut qs = [(W::zero(), W::zero()); ROW_GROUP];
                for (r, qs) in qs.iter_mut().enumerate() {
                    let word = q
                        .add((group + r) * pass.q_stride + 2 * pair)
                        .cast::<u32>()
                        .read_unaligned();
                    *qs = W::splat_pair(word);
                }
                for g in 0..vecs {
                    let (even, odd) = W::pairs(k.add(pair * KEYS + W::LANES * g));
                    for (s, &(q_even, q_odd)) in s.iter_mut().zip(&qs) {
                        s[g] = s[g].fma(q_odd, odd);
                        s[g] = s[g].fma(q_even, even);
                    }
                }
            }
        }
        scores[group..group + ROW_GROUP].copy_from_slice(&s);
    }
    let mut probs = [[0f32; KEYS]; ROWS];
    let mut alpha = [0f32; ROWS];
    for (r, scores) in scores.iter().enumerate() {
        // SAFETY: r < 8 rows, as checked.
        alpha[r] = unsafe { softmax_row::<W>(pass, r, scores, &mut probs[r]) };
    }
    // SAFETY: as checked.
    unsafe { add_pv::<W>(pass, &probs, &alpha) };
}

/// The reference's softmax step for row `r`: its running maximum and sum updated, its
/// probabilities (rounded to bf16) into `probs`; returns the factor `alpha` that rescales the
/// row's earlier sums.
///
/// # Safety
/// As [`pass`], and `r < 8`.
#[inline(always)]
unsafe fn softmax_row<W: Wide>(
    pass: &mut Pass<'_>,
    r: usize,
    scores: &[W; MAX_VECS],
    probs: &mut [f32; KEYS],
) -> f32 {
    let vecs = KEYS / W::LANES;
    let valid = pass.valid[r].min(KEYS);
    let neg_inf = W::splat(f32::NEG_INFINITY);
    let c = W::splat(pass.c);
    // Keys past the row's last visible one count as -inf, as the reference never scores them.
    let mut masked = [neg_inf; MAX_VECS];
    let mut lanes = [0f32; KEYS];
    for g in 0..vecs {
        masked[g] = scores[g].below(W::LANES * g, valid, neg_inf);
        // SAFETY: LANES·g + LANES ≤ 32.
        unsafe { masked[g].store(lanes.as_mut_ptr().add(W::LANES * g)) };
    }
    let top = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max) * pass.c;
    let m = pass.m[r].max(top);
    let alpha = exp2(pass.m[r] - m);
    pass.m[r] = m;

    let minus_m = W::splat(-m);
    let mut p = [W::zero(); MAX_VECS];
    for g in 0..vecs {
        let e = minus_m.fma(masked[g], c).exp2().round_to_bf16();
        p[g] = e.below(W::LANES * g, valid, W::zero());
        // SAFETY: LANES·g + LANES ≤ 32.
        unsafe { p[g].store(probs.as_mut_ptr().add(W::LANES * g)) };
    }

    let alpha_v = W::splat(alpha);
    // SAFETY: row r's 16 lanes of l lie inside the checked slice.
    unsafe {
        // l's 16 lanes hold keys j and j + 16 summed.
        let l = pass.l.as_mut_ptr().add(r * LANES);
        let halves = LANES / W::LANES;
        for half in 0..halves {
            let sum = p[half].add(p[half + halves]);
            let at = l.add(W::LANES * half);
            let v = if pass.first {
                sum
            } else {
                sum.fma(W::load(at), alpha_v)
            };
            v.store(at);
        }
    }
    alpha
}

/// `o = o·alpha + P·V` for the pass's rows, a register of output sums per row at a time: each
/// V word is loaded and split once for all 8 rows (split per row, the shifts and masks kept
/// pace with the multiply-adds on the same ports).
///
/// # Safety
/// As [`pass`].
#[inline(always)]
unsafe fn add_pv<W: Wide>(pass: &mut Pass<'_>, probs: &[[f32; KEYS]; ROWS], alpha: &[f32; ROWS]) {
    let (dp, v) = (pass.dp, pass.v[0].as_ptr());
    let o = pass.o.as_mut_ptr();
    // SAFETY: the rows' dp sums of o lie inside the checked slice; the V block holds 16 key
    // pairs × dp words.
    unsafe {
        for d in (0..dp).step_by(W::LANES) {
            let mut acc = [W::zero(); ROWS];
            if !pass.first {
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = W::load(o.add(r * dp + d)).mul(W::splat(alpha[r]));
                }
            }
            for j in 0..KEYS / 2 {
                let (even, odd) = W::pairs(v.add(j * dp + d));
                for (acc, probs) in acc.iter_mut().zip(probs) {
                    *acc = acc.fma(W::splat(probs[2 * j + 1]), odd);
                    *acc = acc.fma(W::splat(probs[2 * j]), even);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                acc.store(o.add(r * dp + d));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m256i, __m512, __m512i, _mm256_add_epi32, _mm256_add_ps, _mm256_and_si256,
        _mm256_blendv_ps, _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmpgt_epi32,
        _mm256_cvtps_epi32, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_max_ps,
        _mm256_mul_ps, _mm256_round_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32,
        _mm256_setzero_ps, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_ps, _mm256_sub_ps,
        _mm512_add_epi32, _mm512_add_ps, _mm512_and_si512, _mm512_castps_si512,
        _mm512_castsi512_ps, _mm512_cvtps_epi32, _mm512_fmadd_ps, _mm512_loadu_ps,
        _mm512_loadu_si512, _mm512_mask_mov_ps, _mm512_max_ps, _mm512_mul_ps, _mm512_roundscale_ps,
        _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_slli_epi32, _mm512_srli_epi32,
        _mm512_storeu_ps, _mm512_sub_ps,
    };

    use super::{Pass, Wide};
    use crate::attention::kernel::{EXP2_MIN, EXP2_POLY};
    use crate::gemm::split;

    /// 8 f32 lanes of AVX2 and FMA.
    #[derive(Clone, Copy)]
    pub(in crate::attention) struct Avx2(__m256);

    const HIGH: u32 = 0xFFFF_0000;

    // SAFETY: made only where AVX2 and FMA were detected; the pointer contract is the trait's.
    unsafe impl Wide for Avx2 {
        const LANES: usize = 8;

        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: the CPU has AVX2, per the trait's contract (as for every method here).
            Self(unsafe { _mm256_setzero_ps() })
        }

        #[inline(always)]
        fn splat(x: f32) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_set1_ps(x) })
        }

        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: per the trait's contract.
            Self(unsafe { _mm256_loadu_ps(p) })
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: per the trait's contract.
            unsafe { _mm256_storeu_ps(p, self.0) }
        }

        #[inline(always)]
        unsafe fn pairs(p: *const u32) -> (Self, Self) {
            // SAFETY: per the trait's contract.
            let (even, odd) = unsafe {
                split(
                    _mm256_loadu_si256(p.cast::<__m256i>()),
                    _mm256_set1_epi32(HIGH as i32),
                )
            };
            (Self(even), Self(odd))
        }

        #[inline(always)]
        fn splat_pair(word: u32) -> (Self, Self) {
            // SAFETY: as above.
            let (even, odd) = unsafe {
                split(
                    _mm256_set1_epi32(word as i32),
                    _mm256_set1_epi32(HIGH as i32),
                )
            };
            (Self(even), Self(odd))
        }

        #[inline(always)]
        fn fma(self, a: Self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_fmadd_ps(a.0, b.0, self.0) })
        }

        #[inline(always)]
        fn add(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_add_ps(self.0, b.0) })
        }

        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_mul_ps(self.0, b.0) })
        }

        #[inline(always)]
        fn below(self, first: usize, valid: usize, other: Self) -> Self {
            // SAFETY: as above.
            unsafe {
                let keys = _mm256_add_epi32(
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    _mm256_set1_epi32(first as i32),
                );
                let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), keys);
                Self(_mm256_blendv_ps(other.0, self.0, _mm256_castsi256_ps(keep)))
            }
        }

        #[inline(always)]
        fn exp2(self) -> Self {
            // SAFETY: as above.
            unsafe {
                let x = _mm256_max_ps(self.0, _mm256_set1_ps(EXP2_MIN));
                // Round to nearest even, no exceptions.
                let n = _mm256_round_ps::<0x08>(x);
                let f = _mm256_sub_ps(x, n);
                let mut poly = _mm256_set1_ps(EXP2_POLY[6]);
                for &coef in EXP2_POLY[..6].iter().rev() {
                    poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(coef));
                }
                let exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                // 2^n exactly; n ≥ -125 and the polynomial is near 1, so the product is a
                // normal float, exact, like the scalar's product in f64 rounded once.
                let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(exponent));
                Self(_mm256_mul_ps(poly, scale))
            }
        }

        #[inline(always)]
        fn round_to_bf16(self) -> Self {
            // SAFETY: as above.
            unsafe {
                let bits = _mm256_castps_si256(self.0);
                let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
                let rounded =
                    _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF)));
                Self(_mm256_castsi256_ps(_mm256_and_si256(
                    rounded,
                    _mm256_set1_epi32(HIGH as i32),
                )))
            }
        }

        #[target_feature(enable = "avx2,fma")]
        unsafe fn pass(pass: &mut Pass<'_>) {
            // SAFETY: forwarded.
            unsafe { super::pass::<Self>(pass) }
        }
    }

    /// 16 f32 lanes of AVX-512F.
    #[derive(Clone, Copy)]
    pub(in crate::attention) struct Avx512(__m512);

    #[inline(always)]
    fn split512(words: __m512i) -> (__m512, __m512) {
        // SAFETY: plain integer ops on registers; AVX-512F is enabled in every caller.
        unsafe {
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(words)),
                _mm512_castsi512_ps(_mm512_and_si512(words, _mm512_set1_epi32(HIGH as i32))),
            )
        }
    }

    // SAFETY: made only where AVX-512F was detected; the pointer contract is the trait's.
    unsafe impl Wide for Avx512 {
        const LANES: usize = 16;

        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: the CPU has AVX-512F, per the trait's contract (as for every method here).
            Self(unsafe { _mm512_setzero_ps() })
        }

        #[inline(always)]
        fn splat(x: f32) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_set1_ps(x) })
        }

        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: per the trait's contract.
            Self(unsafe { _mm512_loadu_ps(p) })
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: per the trait's contract.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }

        #[inline(always)]
        unsafe fn pairs(p: *const u32) -> (Self, Self) {
            // SAFETY: per the trait's contract.
            let (even, odd) = split512(unsafe { _mm512_loadu_si512(p.cast()) });
            (Self(even), Self(odd))
        }

        #[inline(always)]
        fn splat_pair(word: u32) -> (Self, Self) {
            // SAFETY: as above.
            let (even, odd) = split512(unsafe { _mm512_set1_epi32(word as i32) });
            (Self(even), Self(odd))
        }

        #[inline(always)]
        fn fma(self, a: Self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }

        #[inline(always)]
        fn add(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_add_ps(self.0, b.0) })
        }

        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_mul_ps(self.0, b.0) })
        }

        #[inline(always)]
        fn below(self, first: usize, valid: usize, other: Self) -> Self {
            let keep = crate::first_lanes(valid.saturating_sub(first));
            // SAFETY: as above.
            Self(unsafe { _mm512_mask_mov_ps(other.0, keep, self.0) })
        }

        #[inline(always)]
        fn exp2(self) -> Self {
            // SAFETY: as above.
            unsafe {
                let x = _mm512_max_ps(self.0, _mm512_set1_ps(EXP2_MIN));
                // Round to nearest even (no fraction bits kept), no exceptions.
                let n = _mm512_roundscale_ps::<0x08>(x);
                let f = _mm512_sub_ps(x, n);
                let mut poly = _mm512_set1_ps(EXP2_POLY[6]);
                for &coef in EXP2_POLY[..6].iter().rev() {
                    poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(coef));
                }
                let exponent = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
                // As the AVX2 lanes: 2^n exactly, the product exact.
                let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(exponent));
                Self(_mm512_mul_ps(poly, scale))
            }
        }

        #[inline(always)]
        fn round_to_bf16(self) -> Self {
            // SAFETY: as above.
            unsafe {
                let bits = _mm512_castps_si512(self.0);
                let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
                let rounded =
                    _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
                Self(_mm512_castsi512_ps(_mm512_and_si512(
                    rounded,
                    _mm512_set1_epi32(HIGH as i32),
                )))
            }
        }

        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn pass(pass: &mut Pass<'_>) {
            // SAFETY: forwarded.
            unsafe { super::pass::<Self>(pass) }
        }
    }
}
