//! The attention kernel for CPUs without bf16 instructions: the [`Reference`](super::Reference)
//! kernel's arithmetic, bit for bit, a register of f32 lanes at a time. Written once over
//! [`Wide`], it runs as AVX2 (8 lanes) and as AVX-512F (16 lanes, Skylake to Ice Lake Xeons).
//!
//! A packed K or V word is a bf16 pair; shifting it left by 16 gives the even element as f32 and
//! masking off the low half the odd one. Each key block's K and V are widened this way once, when
//! a task reaches the block ([`PassKernel::key_blocks`]), and a pass's 8 query rows when it starts:
//! the products then load f32 and broadcast a query or probability from memory, where splitting
//! pairs in every pass cost up to 3 instructions per 4 multiply-adds (and on Intel cores the
//! shifts share the multiply-adds' ports). Every product in the two matrix products is of two
//! bf16 values, exact in f32, so a fused multiply-add rounds exactly where the reference's
//! separate multiply and add do; the softmax's own steps (`exp2`, the rescaling by `alpha`) keep
//! the reference's operations one for one. Lanes never meet except in the row maximum, which is
//! exact in any order, so the lane count does not change a bit.
//!
//! The exact path (`f32` Q, K and V) runs the same loops: its K and V are packed in the widened
//! layouts, so a key block is copied instead of widened, and its probabilities are not rounded.
//! The reference's f32 products are fused with their sums as here, so the two agree bit for bit
//! in f32 too.

use half::bf16;

use super::kernel::{exp2, Pass, PassKernel};
use super::Stored;
use super::{KEYS, LANES};

/// Query rows per pass.
const ROWS: usize = 8;
/// Registers of 32 keys (or 32 output sums) at the narrowest lanes, 8: the arrays below hold
/// this many and use `KEYS / W::LANES` of them.
const MAX_VECS: usize = KEYS / 8;
/// The most [`Wide::OUT_VECS`].
const MAX_OUT_VECS: usize = 2;

/// An f32 SIMD register as this kernel uses it.
///
/// # Safety
/// Implementations may only be used where the CPU has their instructions; pointers given to
/// them are valid for `LANES` elements.
pub(super) unsafe trait Wide: Copy {
    const LANES: usize;
    /// Query rows whose scores are summed together, sharing each K register, and registers of
    /// output sums per row in P·V. AVX-512's 32 registers hold 16 sums besides what feeds them:
    /// 8 rows × 2 registers of 16 keys or outputs. AVX2's 16 hold 8: 2 rows × 4 registers of 8
    /// keys, 8 rows × 1 register of outputs.
    const SCORE_ROWS: usize;
    const OUT_VECS: usize;
    fn zero() -> Self;
    fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `LANES` packed bf16 pairs at `p`: their even and their odd elements, as f32.
    unsafe fn pairs(p: *const u32) -> (Self, Self);
    /// `self + a·b`, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    fn max(self, b: Self) -> Self;
    /// The largest lane (exact in any order, as every lane is a number or -inf).
    fn reduce_max(self) -> f32;
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
    /// The CPU has the instructions; `pass` passed [`Pass::check`] for 8 rows; `block` is the
    /// pass's key block widened, and `queries` has room for 8 rows of dp.
    unsafe fn pass<E: Stored>(pass: &mut Pass<'_, E>, block: Block<'_>, queries: &mut [f32]);
    /// [`widen`] over these lanes, compiled as [`Wide::pass`].
    ///
    /// # Safety
    /// The CPU has the instructions; `words` is whole rows of `width` words, a multiple of
    /// `LANES`, and `wide` twice as long.
    unsafe fn widen(words: &[u32], width: usize, wide: &mut [f32]);
}

/// A key block widened to f32 (see [`widen`]).
#[derive(Clone, Copy)]
pub(super) struct Block<'a> {
    /// `dp × 32`: row `d` holds element `d` of the 32 keys.
    keys: &'a [f32],
    /// `32 × dp`: row `t` holds the values of key `t`.
    values: &'a [f32],
}

/// The kernel over `W`'s registers; only made where the CPU has them.
pub(super) struct Widened<W: Wide> {
    /// The current key block widened, as in [`Block`].
    keys: Vec<f32>,
    values: Vec<f32>,
    /// A pass's query rows as f32, `8 × dp`.
    queries: Vec<f32>,
    lanes: std::marker::PhantomData<W>,
}

impl<W: Wide> Widened<W> {
    /// # Safety
    /// The CPU has `W`'s instructions.
    pub(super) unsafe fn new() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            queries: Vec::new(),
            lanes: std::marker::PhantomData,
        }
    }
}

impl<W: Wide> PassKernel<bf16> for Widened<W> {
    const ROWS: usize = ROWS;

    fn key_blocks(&mut self, k: [&[u32]; 2], v: [&[u32]; 2], dp: usize) {
        let words = KEYS * dp / 2;
        assert!(dp.is_multiple_of(32) && k[0].len() == words && v[0].len() == words);
        self.keys.resize(2 * words, 0.0);
        self.values.resize(2 * words, 0.0);
        // SAFETY: construction vouched for the CPU; the sizes were checked.
        unsafe {
            W::widen(k[0], KEYS, &mut self.keys);
            W::widen(v[0], dp, &mut self.values);
        }
    }

    fn pass(&mut self, pass: &mut Pass<'_>) {
        self.run(pass);
    }
}

/// The exact path: K and V are packed in the widened layouts already, and only copied.
impl<W: Wide> PassKernel<f32> for Widened<W> {
    const ROWS: usize = ROWS;

    fn key_blocks(&mut self, k: [&[f32]; 2], v: [&[f32]; 2], dp: usize) {
        assert!(dp.is_multiple_of(32) && k[0].len() == KEYS * dp && v[0].len() == KEYS * dp);
        self.keys.clear();
        self.keys.extend_from_slice(k[0]);
        self.values.clear();
        self.values.extend_from_slice(v[0]);
    }

    fn pass(&mut self, pass: &mut Pass<'_, f32>) {
        self.run(pass);
    }
}

impl<W: Wide> Widened<W> {
    fn run<E: Stored>(&mut self, pass: &mut Pass<'_, E>) {
        pass.check(ROWS);
        let size = KEYS * pass.dp;
        assert!(
            self.keys.len() == size && self.values.len() == size,
            "a pass before its key block"
        );
        self.queries.resize(ROWS * pass.dp, 0.0);
        let block = Block {
            keys: &self.keys,
            values: &self.values,
        };
        // SAFETY: construction vouched for the CPU; the pass and the buffers were checked.
        unsafe { W::pass(pass, block, &mut self.queries) }
    }
}

/// Rows of packed pairs (`width` words a row) widened into twice as many rows of f32: row `i`'s
/// even elements become row `2i`, its odd ones row `2i + 1`. For K (`dp/2 × 32` key pairs) that
/// is `dp × 32`, a row per element; for V (`16 × dp` pairs of keys), `32 × dp`, a row per key.
///
/// # Safety
/// As [`Wide::widen`].
#[inline(always)]
unsafe fn widen<W: Wide>(words: &[u32], width: usize, wide: &mut [f32]) {
    let (src, dst) = (words.as_ptr(), wide.as_mut_ptr());
    for row in 0..words.len() / width {
        for at in (row * width..(row + 1) * width).step_by(W::LANES) {
            // SAFETY: `at` starts a register inside row `row`; rows 2·row and 2·row + 1 of
            // `wide`, twice the words' length, hold its halves.
            unsafe {
                let (even, odd) = W::pairs(src.add(at));
                even.store(dst.add(at + row * width));
                odd.store(dst.add(at + row * width + width));
            }
        }
    }
}

/// # Safety
/// As [`Wide::pass`].
#[inline(always)]
unsafe fn pass<W: Wide, E: Stored>(pass: &mut Pass<'_, E>, block: Block<'_>, queries: &mut [f32]) {
    // The loops below rely on these; an implementation breaking them fails to compile.
    const {
        assert!(ROWS.is_multiple_of(W::SCORE_ROWS) && W::OUT_VECS <= MAX_OUT_VECS);
        assert!(KEYS.is_multiple_of(W::LANES) && KEYS / W::LANES <= MAX_VECS);
    }
    let vecs = KEYS / W::LANES;
    let dp = pass.dp;
    // The rows' queries as f32, each broadcast from memory in the products below.
    for (r, row) in queries.chunks_exact_mut(dp).enumerate() {
        let src = &pass.q[r * pass.q_stride..][..dp];
        for (d, s) in row.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    let (q, k) = (queries.as_ptr(), block.keys.as_ptr());
    let mut scores = [[W::zero(); MAX_VECS]; ROWS];
    for group in (0..ROWS).step_by(W::SCORE_ROWS) {
        let mut s = [[W::zero(); MAX_VECS]; ROWS];
        for pair in 0..dp / 2 {
            // The reference's order: each pair's odd product, then its even one.
            for d in [2 * pair + 1, 2 * pair] {
                for g in 0..vecs {
                    // SAFETY: d < dp, and g and the rows index inside the checked 8 × dp
                    // queries and dp × 32 keys.
                    unsafe {
                        let key = W::load(k.add(d * KEYS + W::LANES * g));
                        for (r, s) in s.iter_mut().take(W::SCORE_ROWS).enumerate() {
                            s[g] = s[g].fma(W::splat(*q.add((group + r) * dp + d)), key);
                        }
                    }
                }
            }
        }
        scores[group..group + W::SCORE_ROWS].copy_from_slice(&s[..W::SCORE_ROWS]);
    }
    let mut probs = [[0f32; KEYS]; ROWS];
    let mut alpha = [0f32; ROWS];
    for (r, scores) in scores.iter().enumerate() {
        // SAFETY: r < 8 rows, as checked.
        alpha[r] = unsafe { softmax_row::<W, E>(pass, r, scores, &mut probs[r]) };
    }
    // SAFETY: as checked.
    unsafe { add_pv::<W, E>(pass, block.values, &probs, &alpha) };
}

/// The reference's softmax step for row `r`: its running maximum and sum updated, its
/// probabilities (rounded to bf16 in the bf16 path) into `probs`; returns the factor `alpha`
/// that rescales the row's earlier sums.
///
/// # Safety
/// As [`pass`], and `r < 8`.
#[inline(always)]
unsafe fn softmax_row<W: Wide, E: Stored>(
    pass: &mut Pass<'_, E>,
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
    let mut top = neg_inf;
    for g in 0..vecs {
        masked[g] = scores[g].below(W::LANES * g, valid, neg_inf);
        top = top.max(masked[g]);
    }
    let top = top.reduce_max() * pass.c;
    let m = pass.m[r].max(top);
    let alpha = exp2(pass.m[r] - m);
    pass.m[r] = m;

    let minus_m = W::splat(-m);
    let mut p = [W::zero(); MAX_VECS];
    for g in 0..vecs {
        let e = minus_m.fma(masked[g], c).exp2();
        let e = if E::ROUNDS { e.round_to_bf16() } else { e };
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

/// `o = o·alpha + P·V` for the pass's rows, [`Wide::OUT_VECS`] registers of output sums per row
/// at a time, each V register loaded once for all 8 rows.
///
/// # Safety
/// As [`pass`], with `values` the block's widened V.
#[inline(always)]
unsafe fn add_pv<W: Wide, E: Stored>(
    pass: &mut Pass<'_, E>,
    values: &[f32],
    probs: &[[f32; KEYS]; ROWS],
    alpha: &[f32; ROWS],
) {
    let (dp, v) = (pass.dp, values.as_ptr());
    let o = pass.o.as_mut_ptr();
    let width = W::LANES * W::OUT_VECS;
    // SAFETY: the rows' dp sums of o lie inside the checked slice; `values` holds 32 × dp;
    // dp is a multiple of 32, so of `width`.
    unsafe {
        for d in (0..dp).step_by(width) {
            let mut acc = [[W::zero(); MAX_OUT_VECS]; ROWS];
            if !pass.first {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (g, acc) in acc.iter_mut().take(W::OUT_VECS).enumerate() {
                        let at = o.add(r * dp + d + W::LANES * g);
                        *acc = W::load(at).mul(W::splat(alpha[r]));
                    }
                }
            }
            for j in 0..KEYS / 2 {
                for g in 0..W::OUT_VECS {
                    let at = d + W::LANES * g;
                    let even = W::load(v.add(2 * j * dp + at));
                    let odd = W::load(v.add((2 * j + 1) * dp + at));
                    // The reference's order: the odd key's product first.
                    for (acc, probs) in acc.iter_mut().zip(probs) {
                        acc[g] = acc[g].fma(W::splat(probs[2 * j + 1]), odd);
                        acc[g] = acc[g].fma(W::splat(probs[2 * j]), even);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (g, acc) in acc.iter().take(W::OUT_VECS).enumerate() {
                    acc.store(o.add(r * dp + d + W::LANES * g));
                }
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
        _mm256_blendv_ps, _mm256_castps256_ps128, _mm256_castps_si256, _mm256_castsi256_ps,
        _mm256_cmpgt_epi32, _mm256_cvtps_epi32, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_loadu_si256, _mm256_max_ps, _mm256_mul_ps, _mm256_round_ps,
        _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_slli_epi32,
        _mm256_srli_epi32, _mm256_storeu_ps, _mm256_sub_ps, _mm512_add_epi32, _mm512_add_ps,
        _mm512_and_si512, _mm512_castps_si512, _mm512_castsi512_ps, _mm512_cvtps_epi32,
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_mov_ps, _mm512_max_ps,
        _mm512_mul_ps, _mm512_reduce_max_ps, _mm512_roundscale_ps, _mm512_set1_epi32,
        _mm512_set1_ps, _mm512_setzero_ps, _mm512_slli_epi32, _mm512_srli_epi32, _mm512_storeu_ps,
        _mm512_sub_ps, _mm_cvtss_f32, _mm_max_ps, _mm_max_ss, _mm_movehdup_ps, _mm_movehl_ps,
    };

    use super::{Block, Pass, Stored, Wide};
    use crate::attention::kernel::{EXP2_MIN, EXP2_POLY};
    use crate::gemm::split;

    /// 8 f32 lanes of AVX2 and FMA.
    #[derive(Clone, Copy)]
    pub(in crate::attention) struct Avx2(__m256);

    const HIGH: u32 = 0xFFFF_0000;

    // SAFETY: made only where AVX2 and FMA were detected; the pointer contract is the trait's.
    unsafe impl Wide for Avx2 {
        const LANES: usize = 8;
        const SCORE_ROWS: usize = 2;
        const OUT_VECS: usize = 1;

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
        fn max(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm256_max_ps(self.0, b.0) })
        }

        #[inline(always)]
        fn reduce_max(self) -> f32 {
            // SAFETY: as above.
            unsafe {
                let x = _mm_max_ps(
                    _mm256_castps256_ps128(self.0),
                    _mm256_extractf128_ps::<1>(self.0),
                );
                let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
                _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)))
            }
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
        unsafe fn pass<E: Stored>(pass: &mut Pass<'_, E>, block: Block<'_>, queries: &mut [f32]) {
            // SAFETY: forwarded.
            unsafe { super::pass::<Self, E>(pass, block, queries) }
        }

        #[target_feature(enable = "avx2,fma")]
        unsafe fn widen(words: &[u32], width: usize, wide: &mut [f32]) {
            // SAFETY: forwarded.
            unsafe { super::widen::<Self>(words, width, wide) }
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
        const SCORE_ROWS: usize = 8;
        const OUT_VECS: usize = 2;

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
        fn max(self, b: Self) -> Self {
            // SAFETY: as above.
            Self(unsafe { _mm512_max_ps(self.0, b.0) })
        }

        #[inline(always)]
        fn reduce_max(self) -> f32 {
            // SAFETY: as above.
            unsafe { _mm512_reduce_max_ps(self.0) }
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
        unsafe fn pass<E: Stored>(pass: &mut Pass<'_, E>, block: Block<'_>, queries: &mut [f32]) {
            // SAFETY: forwarded.
            unsafe { super::pass::<Self, E>(pass, block, queries) }
        }

        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn widen(words: &[u32], width: usize, wide: &mut [f32]) {
            // SAFETY: forwarded.
            unsafe { super::widen::<Self>(words, width, wide) }
        }
    }
}
