//! The GEMM for CPUs without bf16 instructions: bf16 widened to f32 in registers, f32 fused
//! multiply-adds. One loop, written once over [`Lanes`] (an f32 SIMD register), runs as AVX2 (8
//! lanes, most laptops, AMD Zen 2/3) and as AVX-512F (16 lanes, Skylake to Ice Lake Xeons); a
//! portable model of the lanes ([`Soft`]) runs the same loop in the tests, so its indexing,
//! blocking and edges are checked on any CPU, in both shapes.
//!
//! A packed tile row holds, for 16 columns, the 32-bit word `(k even, k odd)` of each column. A
//! bf16 is the upper half of an f32, so shifting a word left by 16 gives the even element as f32
//! and masking off its low half the odd one: no conversion instructions. A task's rows of A are
//! widened to f32 once, so its values are broadcast straight from memory. Each product of two
//! bf16 is exact in f32, so the only rounding is the FMA's sum: every output is
//! `(((0 + a₀w₀) + a₁w₁) + …)` in K order, one rounding per step, whatever the lane count or the
//! block shape — the same bits from the AVX2, AVX-512F and model runs.
//!
//! The same loop runs `dtype="f32"` ([`super::gemm_f32`]): f32 weights, whose tile rows hold the
//! 16 even elements and then the 16 odd ones, are loaded as they are ([`Widened`]); A's f32 rows
//! are copied as the bf16 ones are widened. The sums are the same sequential FMAs, now over
//! products that round.

use std::ops::Range;

use half::bf16;

use super::{Fetch, Operand, Sink};
use crate::aligned::AlignedVec;
use crate::matrix::BLOCK;
use crate::pack::{Element, PackedWeight, BLOCK_ELEMS, TILE_ELEMS};

/// A packed weight element the loop reads: how one register's worth of a tile row's columns
/// (laid out as [`Element::in_pair_row`] says) becomes the even and odd f32 operands.
pub(crate) trait Widened: Element {
    /// The even and odd elements of `V::LANES` columns of a tile row, from column `p`'s place.
    ///
    /// # Safety
    /// `V` runs on this CPU; the tile row holds `V::LANES` columns from `p`.
    unsafe fn pairs<V: Lanes>(p: *const Self) -> (V, V);
}

impl Widened for bf16 {
    #[inline(always)]
    unsafe fn pairs<V: Lanes>(p: *const Self) -> (V, V) {
        // SAFETY: per the contract.
        unsafe { V::pairs(p) }
    }
}

impl Widened for f32 {
    #[inline(always)]
    unsafe fn pairs<V: Lanes>(p: *const Self) -> (V, V) {
        // SAFETY: per the contract; the odd elements are 16 on.
        unsafe { (V::load(p), V::load(p.add(16))) }
    }
}

/// An f32 SIMD register as the loop uses it.
///
/// # Safety
/// Implementations may only be used where the CPU has their instructions; the pointers given
/// to them are valid for `LANES` elements (`pairs`: `LANES` 32-bit words).
pub(crate) unsafe trait Lanes: Copy {
    const LANES: usize;
    /// Rows × column-vectors of one block: its sums fill all but a few registers.
    const ROWS: usize;
    fn zero() -> Self;
    /// `*p` in every lane.
    unsafe fn splat(p: *const f32) -> Self;
    /// `LANES` packed pairs at `p`: their even and their odd elements, as f32.
    unsafe fn pairs(p: *const bf16) -> (Self, Self);
    /// `LANES` f32 from `p`.
    unsafe fn load(p: *const f32) -> Self;
    /// `self + a·b`, rounded once.
    fn fma(self, a: Self, b: Self) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// [`block`] for `rows` rows (1 to `ROWS`) with these lanes. On the CPUs each height is a
    /// function of its own, so each micro-kernel has the registers to itself: inlined into the
    /// task loop, the 12-row AVX-512 block's registers depended on the code around it, and one
    /// change there put its broadcasts on the stack (200 → 140 GFLOP/s at 128 rows on Zen 4).
    ///
    /// # Safety
    /// As [`block`].
    unsafe fn block<E: Widened>(
        rows: usize,
        stream: Fetch<E>,
        a: *const f32,
        lda: usize,
        b: *const E,
        blocks: usize,
        p: *mut f32,
    );
}

/// Column-vectors per 32-column panel.
const fn vectors<V: Lanes>() -> usize {
    BLOCK / V::LANES
}

/// f32 between a widened row's end and the next row's start. Unpadded, the rows are K·4 bytes
/// apart, a multiple of 4 KiB at every Qwen3 width, so a block's 12 rows map to one L1 set;
/// the line of each row is reused for 8 pairs, but 12 lines in an 8-way set (Skylake, Zen 3
/// and 4) evict one another before then. Under cachegrind with a 32 KiB 8-way L1, the 12-row
/// block at K = 1024 missed on every other read of A unpadded, and only on first touch with
/// one line of padding; with a 48 KiB 12-way L1 (Golden Cove), half as many misses remained.
const ROW_PAD: usize = 16;

/// Column-vectors one block holds per row: two (two 16-lane halves, or one 8-lane half at a
/// time).
const COLS: usize = 2;

/// A task's rows of A widened to f32, and one panel of their results.
#[derive(Default)]
struct Scratch {
    a: AlignedVec<f32>,
    panel: AlignedVec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The task loop: the task's rows of A widened (or copied) to f32 once, then panel by panel
/// into a scratch panel (rows × 32), which goes to the sink.
///
/// # Safety
/// `V`'s instructions run on this CPU; the sink and the rectangle are as [`super::gemm`]
/// checked them.
#[inline(always)]
pub(super) unsafe fn rows<V: Lanes, A: Operand>(
    a: &A,
    w: &PackedWeight<A::Weight>,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) where
    A::Weight: Widened,
{
    let (k_blocks, n) = (w.k_blocks(), w.n());
    let width = k_blocks * BLOCK;
    let row_f32 = width + ROW_PAD;
    // Taken out and put back rather than borrowed in a closure: a closure would be compiled
    // without the caller's target features, and the SIMD calls in it would not inline.
    let mut s = SCRATCH.take();
    s.a.resize_for_overwrite(rows.len() * row_f32);
    s.panel.resize_for_overwrite(rows.len() * BLOCK);
    for (r, dst) in rows.clone().zip(s.a.chunks_exact_mut(row_f32)) {
        a.row_f32(r, &mut dst[..width]);
    }
    for nb in panels.clone() {
        let cols = (n - nb * BLOCK).min(BLOCK);
        let next = (nb + 1 < panels.end).then(|| w.panel(nb + 1).as_ptr());
        // SAFETY: the widened rows, the panel and the scratch panel have the sizes `panel`
        // needs; the caller vouched for `V`.
        unsafe {
            panel::<V, A::Weight>(
                rows.len(),
                s.a.as_ptr(),
                row_f32,
                w.panel(nb).as_ptr(),
                next,
                k_blocks,
                s.panel.as_mut_ptr(),
            );
        }
        match sink {
            Sink::F32 { c, ldc, accumulate } => {
                for (i, sums) in s.panel.chunks_exact(BLOCK).enumerate() {
                    // SAFETY: row `rows.start + i`, panel nb's `cols` columns lie in C and in
                    // this task's rectangle.
                    unsafe {
                        let dst = c.add((rows.start + i) * ldc + nb * BLOCK);
                        for (j, &sum) in sums[..cols].iter().enumerate() {
                            *dst.add(j) = if accumulate { *dst.add(j) + sum } else { sum };
                        }
                    }
                }
            }
            // SAFETY: as above; the scratch panel's rows are 32 apart.
            Sink::SiluMul { .. } | Sink::SiluMulF32 { .. } => unsafe {
                sink.finish(&s.panel, rows.start, nb, rows.len(), cols);
            },
        }
    }
    SCRATCH.set(s);
}

/// One panel of `A · Wᵀ` for `rows` rows: `out[r·32 + j] = Σ_k a[r][k] · W[j][k]`, rows 32
/// apart, in blocks of `V::ROWS` rows × 2 column-vectors. (Cutting K into L1-sized chunks
/// measured no faster on Zen 3: L2 feeds this loop fast enough.)
///
/// # Safety
/// As [`rows`]; `a` points at `rows` rows of `k_blocks · 32` f32, `lda` apart; `panel` at
/// `k_blocks · 1024` packed elements; `out` holds `rows · 32` f32.
#[inline(always)]
unsafe fn panel<V: Lanes, E: Widened>(
    rows: usize,
    a: *const f32,
    lda: usize,
    panel: *const E,
    next: Option<*const E>,
    k_blocks: usize,
    out: *mut f32,
) {
    // As few blocks as `V::ROWS` allows, their rows shared out evenly: 16 rows of AVX2 go as
    // 4 × 4, not 5 + 5 + 5 + 1, whose last block would read the panel for a fifth of the work.
    // A row's sums do not depend on its block, so neither do its bits.
    let blocks = rows.div_ceil(V::ROWS);
    let passes = vectors::<V>() / COLS * blocks;
    for first in (0..vectors::<V>()).step_by(COLS) {
        let col = first * V::LANES;
        // Column `col`'s place in a block's first pair.
        let b = (col / 16) * TILE_ELEMS + E::in_pair_row(col % 16, 0);
        for i in 0..blocks {
            let (r, end) = (i * rows / blocks, (i + 1) * rows / blocks);
            let pass = first / COLS * blocks + i;
            let stream = Fetch::new(next, k_blocks, pass, passes);
            // SAFETY: rows r..end and this group's columns lie inside the operands.
            unsafe {
                let (a, b, p) = (a.add(r * lda), panel.add(b), out.add(r * 32 + col));
                V::block(end - r, stream, a, lda, b, k_blocks, p);
            }
        }
    }
}

/// `R` rows against two column-vectors over `blocks` K blocks: the vectors' elements start at
/// `b` (blocks `BLOCK_ELEMS` apart, the second vector `LANES` columns on), the sums go to `p`
/// (rows 32 apart); `stream` says what the loop requests ahead of itself ([`super::Fetch`]).
#[inline(always)]
unsafe fn block<V: Lanes, E: Widened, const R: usize>(
    stream: Fetch<E>,
    a: *const f32,
    lda: usize,
    b: *const E,
    blocks: usize,
    p: *mut f32,
) {
    // The second vector: `LANES` columns on, which may be the next 16-column tile.
    let next = if V::LANES == 16 {
        TILE_ELEMS
    } else {
        E::in_pair_row(V::LANES, 0)
    };
    let mut acc = [[V::zero(); COLS]; R];
    // SAFETY: the caller's contract covers the sums, A's rows and the K blocks.
    unsafe {
        for kb in 0..blocks {
            let b = b.add(kb * BLOCK_ELEMS);
            let a = a.add(kb * 32);
            for pair in 0..16 {
                stream.step(b, kb, pair);
                let (even0, odd0) = E::pairs::<V>(b.add(pair * 32));
                let (even1, odd1) = E::pairs::<V>(b.add(pair * 32 + next));
                for (m, acc) in acc.iter_mut().enumerate() {
                    let x = V::splat(a.add(m * lda + 2 * pair));
                    acc[0] = acc[0].fma(x, even0);
                    acc[1] = acc[1].fma(x, even1);
                    let x = V::splat(a.add(m * lda + 2 * pair + 1));
                    acc[0] = acc[0].fma(x, odd0);
                    acc[1] = acc[1].fma(x, odd1);
                }
            }
        }
        for (m, acc) in acc.iter().enumerate() {
            acc[0].store(p.add(m * 32));
            acc[1].store(p.add(m * 32 + V::LANES));
        }
    }
}

/// The [`Lanes::block`] method: `$kernel::<Self, R>` for the height `R` among `$heights` that
/// `rows` equals. One instantiation per height a lane type uses, and none for the others.
macro_rules! block_by_height {
    ($kernel:ident, [$($height:literal)*]) => {
        #[inline(always)]
        unsafe fn block<E: Widened>(
            rows: usize,
            stream: crate::gemm::Fetch<E>,
            a: *const f32,
            lda: usize,
            b: *const E,
            blocks: usize,
            p: *mut f32,
        ) {
            // SAFETY: forwarded; the implementing lanes run on this CPU, per the trait.
            unsafe {
                match rows {
                    $($height => $kernel::<Self, E, $height>(stream, a, lda, b, blocks, p),)*
                    rows => unreachable!("a block of {rows} rows"),
                }
            }
        }
    };
}

/// A portable model of an `N`-lane register: the loop's arithmetic lane by lane (`mul_add` is
/// the same single rounding as the FMA instruction).
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Soft<const N: usize>([f32; N]);

macro_rules! soft_lanes {
    ($n:literal, $rows:literal, $heights:tt) => {
        // SAFETY: plain memory reads and writes within the contract's `N` elements.
        #[cfg(test)]
        unsafe impl Lanes for Soft<$n> {
            const LANES: usize = $n;
            const ROWS: usize = $rows;

            fn zero() -> Self {
                Self([0.0; $n])
            }

            unsafe fn splat(p: *const f32) -> Self {
                // SAFETY: per the trait's contract.
                Self([unsafe { *p }; $n])
            }

            unsafe fn pairs(p: *const bf16) -> (Self, Self) {
                let (mut even, mut odd) = ([0.0; $n], [0.0; $n]);
                for i in 0..$n {
                    // SAFETY: per the trait's contract, `N` words from `p`.
                    let word = unsafe { p.cast::<u32>().add(i).read_unaligned() };
                    even[i] = f32::from_bits(word << 16);
                    odd[i] = f32::from_bits(word & 0xFFFF_0000);
                }
                (Self(even), Self(odd))
            }

            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: per the trait's contract.
                Self(std::array::from_fn(|i| unsafe {
                    p.add(i).read_unaligned()
                }))
            }

            fn fma(self, a: Self, b: Self) -> Self {
                let mut out = self.0;
                for i in 0..$n {
                    out[i] = a.0[i].mul_add(b.0[i], self.0[i]);
                }
                Self(out)
            }

            unsafe fn store(self, p: *mut f32) {
                // SAFETY: per the trait's contract.
                unsafe { std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, $n) };
            }

            block_by_height!(block, $heights);
        }
    };
}

// The AVX2 and AVX-512F block shapes.
soft_lanes!(8, 5, [1 2 3 4 5]);
soft_lanes!(16, 12, [1 2 3 4 5 6 7 8 9 10 11 12]);

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{split, Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, __m256i, __m512, _mm256_and_si256, _mm256_broadcast_ss, _mm256_castsi256_ps,
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_setzero_ps,
        _mm256_slli_epi32, _mm256_storeu_ps, _mm512_and_si512, _mm512_castsi512_ps,
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_setzero_ps, _mm512_slli_epi32, _mm512_storeu_ps,
    };

    use half::bf16;

    use super::{Lanes, Widened};

    /// [`super::block`] as a function of its own, compiled with `$features`.
    macro_rules! micro_kernel {
        ($name:ident, $features:literal) => {
            #[inline(never)]
            #[target_feature(enable = $features)]
            unsafe fn $name<V: Lanes, E: Widened, const R: usize>(
                stream: crate::gemm::Fetch<E>,
                a: *const f32,
                lda: usize,
                b: *const E,
                blocks: usize,
                p: *mut f32,
            ) {
                // SAFETY: forwarded.
                unsafe { super::block::<V, E, R>(stream, a, lda, b, blocks, p) }
            }
        };
    }

    micro_kernel!(avx2_block, "avx2,fma");
    micro_kernel!(avx512_block, "avx512f,avx2,fma");

    /// 8 f32 lanes of AVX2: 5 rows × 2 vectors of sums, the vectors' even and odd halves, A's
    /// value and the odd-half mask fill the 16 registers. With 6 rows (12 sums) the two spare
    /// registers are too few and the compiler kept the sums on the stack, loading and storing
    /// each around every FMA: 110–140 GFLOP/s against 200 with 5 rows on AMD Zen 4
    /// (`examples/gemm_gflops.rs avx2`, both cores; their FMA peak is 183–200).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    /// The even and odd bf16 of 8 packed pairs, as f32 (`high` holds 0xFFFF_0000 in every
    /// lane).
    #[inline(always)]
    pub(crate) fn split(words: __m256i, high: __m256i) -> (__m256, __m256) {
        // SAFETY: plain integer ops on registers; AVX2 is enabled in every caller.
        unsafe {
            (
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(words)),
                _mm256_castsi256_ps(_mm256_and_si256(words, high)),
            )
        }
    }

    // SAFETY: made only where AVX2 and FMA were detected (`Isa::Avx2`); the pointer contract
    // is the trait's.
    unsafe impl Lanes for Avx2 {
        const LANES: usize = 8;
        const ROWS: usize = 5;

        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: AVX is part of AVX2, which the caller has.
            Self(unsafe { _mm256_setzero_ps() })
        }

        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            // SAFETY: per the trait's contract.
            Self(unsafe { _mm256_broadcast_ss(&*p) })
        }

        #[inline(always)]
        unsafe fn pairs(p: *const bf16) -> (Self, Self) {
            // SAFETY: per the trait's contract.
            let (even, odd) = unsafe {
                split(
                    _mm256_loadu_si256(p.cast::<__m256i>()),
                    _mm256_set1_epi32(0xFFFF_0000_u32 as i32),
                )
            };
            (Self(even), Self(odd))
        }

        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: per the trait's contract.
            Self(unsafe { _mm256_loadu_ps(p) })
        }

        #[inline(always)]
        fn fma(self, a: Self, b: Self) -> Self {
            // SAFETY: FMA is present, per the trait's contract.
            Self(unsafe { _mm256_fmadd_ps(a.0, b.0, self.0) })
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: per the trait's contract.
            unsafe { _mm256_storeu_ps(p, self.0) }
        }

        block_by_height!(avx2_block, [1 2 3 4 5]);
    }

    /// 16 f32 lanes of AVX-512F: 12 rows × 2 vectors of sums take 24 of the 32 registers, A's
    /// value is broadcast from memory into the FMA itself.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    // SAFETY: made only where AVX-512F was detected (`Isa::Avx512`); the pointer contract is
    // the trait's.
    unsafe impl Lanes for Avx512 {
        const LANES: usize = 16;
        const ROWS: usize = 12;

        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: AVX-512F is present, per the trait's contract.
            Self(unsafe { _mm512_setzero_ps() })
        }

        #[inline(always)]
        unsafe fn splat(p: *const f32) -> Self {
            // SAFETY: per the trait's contract.
            Self(unsafe { _mm512_set1_ps(*p) })
        }

        #[inline(always)]
        unsafe fn pairs(p: *const bf16) -> (Self, Self) {
            // SAFETY: per the trait's contract.
            unsafe {
                let words = _mm512_loadu_si512(p.cast());
                let high = _mm512_set1_epi32(0xFFFF_0000_u32 as i32);
                (
                    Self(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(words))),
                    Self(_mm512_castsi512_ps(_mm512_and_si512(words, high))),
                )
            }
        }

        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: per the trait's contract.
            Self(unsafe { _mm512_loadu_ps(p) })
        }

        #[inline(always)]
        fn fma(self, a: Self, b: Self) -> Self {
            // SAFETY: AVX-512F is present, per the trait's contract.
            Self(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: per the trait's contract.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }

        block_by_height!(avx512_block, [1 2 3 4 5 6 7 8 9 10 11 12]);
    }
}

/// The AVX2 instantiation, compiled with the instructions enabled.
///
/// # Safety
/// The CPU has AVX2 and FMA; the rest as [`rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn avx2_rows<A: Operand>(
    a: &A,
    w: &PackedWeight<A::Weight>,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) where
    A::Weight: Widened,
{
    // SAFETY: forwarded.
    unsafe { self::rows::<Avx2, A>(a, w, sink, rows, panels) }
}

/// The AVX-512F instantiation, compiled with the instructions enabled.
///
/// # Safety
/// The CPU has AVX-512F; the rest as [`rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn avx512_rows<A: Operand>(
    a: &A,
    w: &PackedWeight<A::Weight>,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) where
    A::Weight: Widened,
{
    // SAFETY: forwarded.
    unsafe { self::rows::<Avx512, A>(a, w, sink, rows, panels) }
}
