//! The AVX512-BF16 GEMM block: up to 8 rows of A against one 32-column panel, or up to 6 rows
//! against two panels side by side. The loop is written once over [`PairLanes`]; on the CPU the
//! lanes are a `vdpbf16ps` register, and in the tests a portable model of one ([`Soft`]) runs the
//! same loop, so its blocking, panel pairs and edges are checked on any CPU.
//!
//! A packed tile row (one K pair for 16 columns) is exactly one `__m512bh`, so the kernel
//! broadcasts a pair of A's row into every lane and `vdpbf16ps` adds `a₀b₀ + a₁b₁` to 16 column
//! sums at once: no horizontal reductions, 16 accumulators of 16 columns for 8 rows.
//!
//! Large tasks take their panels two at a time, in blocks of 6 rows: 24 accumulators, 4 panel
//! vectors and the broadcast fill 29 of the 32 registers. Each broadcast of A then feeds four
//! `vdpbf16ps` instead of two: a K pair takes 10 loads and about 44 instructions for 24 of them,
//! where one panel took 10 loads and about 45 instructions for 16. That matters where the CPU
//! retires two 512-bit `vdpbf16ps` a cycle. On AMD Zen 5 (the 0.6B GEMMs over weights in cache,
//! the two loops alternating in one process) both ran 930–970 GFLOP/s up to 512 rows, at the
//! `vdpbf16ps` peak, but at 2,048 rows q/k/v and gate/up ran 1.09–1.20× faster paired, and the
//! 0.6B corpus 1.01–1.10× (`examples/profile_bf16.rs`, six alternating pairs).

use std::ops::Range;

use half::bf16;

use super::{Fetch, Sink, MAX_FETCH_PASSES};
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::PackedWeight;

use crate::pack::{BLOCK_ELEMS, TILE_ELEMS};

/// 16 f32 column sums as the loop uses them, and the bf16 pairs it multiplies into them.
///
/// # Safety
/// Implementations may only be used where the CPU has their instructions; `load` reads 16
/// 32-bit words at its pointer, `splat` one, `store` writes `valid` f32 (reading them first
/// with `accumulate`).
pub(crate) unsafe trait PairLanes: Copy {
    /// 16 bf16 pairs: one K pair of 16 columns (a packed tile row), or one pair of a row of A
    /// in every lane.
    type Pairs: Copy;
    fn zero() -> Self;
    unsafe fn load(p: *const bf16) -> Self::Pairs;
    unsafe fn splat(p: *const bf16) -> Self::Pairs;
    /// Lane by lane, `self + a₁b₁`, rounded, then `+ a₀b₀`, rounded: `vdpbf16ps`, odd element
    /// first (each product of two bf16 is exact in f32).
    fn dot(self, a: Self::Pairs, b: Self::Pairs) -> Self;
    unsafe fn store(self, p: *mut f32, valid: usize, accumulate: bool);
    /// [`Block::run`] with these lanes, compiled for the CPU that has them.
    unsafe fn run(block: Block, panels: usize, rows: usize, out: Out);
}

/// The loop: row blocks of one panel, or of two, into C, or through a scratch block for fused
/// epilogues.
///
/// # Safety
/// `V`'s instructions run on this CPU; the sink and the rectangle are as [`super::gemm`]
/// checked them.
#[inline(always)]
pub(super) unsafe fn rows<V: PairLanes>(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let (lda, k_blocks, n) = (a.stride(), w.k_blocks(), w.n());
    // Tasks small enough to request the next panel during this one read weights from memory
    // and keep one panel a block; larger ones run from cache and pair their panels.
    let paired = rows.len().div_ceil(MAX_ROWS) > MAX_FETCH_PASSES;
    let mut scratch = [0f32; 2 * PAIRED_ROWS * BLOCK];
    let mut nb = panels.start;
    while nb < panels.end {
        let width = if paired && nb + 1 < panels.end { 2 } else { 1 };
        let height = if width == 2 { PAIRED_ROWS } else { MAX_ROWS };
        let last = nb + width - 1;
        let last_cols = (n - last * BLOCK).min(BLOCK);
        let next = (last + 1 < panels.end).then(|| w.panel(last + 1).as_ptr());
        let passes = rows.len().div_ceil(height);
        for (pass, r) in rows.clone().step_by(height).enumerate() {
            let count = height.min(rows.end - r);
            let stream = Fetch::new(next, k_blocks, pass, passes);
            // SAFETY: the caller vouched for `V`; rows r..r+count of A and of the sink exist,
            // panels nb..=last of W, and the stores keep to their valid columns.
            unsafe {
                let a = a.padded().as_ptr().add(r * lda);
                let block = Block {
                    stream,
                    a,
                    lda,
                    k_blocks,
                    first: w.panel(nb).as_ptr(),
                    last_cols,
                };
                if let Sink::F32 { c, ldc, accumulate } = sink {
                    let out = Out {
                        c: c.add(r * ldc + nb * BLOCK),
                        ldc,
                        panel_stride: BLOCK,
                        accumulate,
                    };
                    V::run(block, width, count, out);
                } else {
                    let out = Out {
                        c: scratch.as_mut_ptr(),
                        ldc: BLOCK,
                        panel_stride: PAIRED_ROWS * BLOCK,
                        accumulate: false,
                    };
                    V::run(block, width, count, out);
                    for p in 0..width {
                        let cols = if nb + p == last { last_cols } else { BLOCK };
                        sink.finish(&scratch[p * PAIRED_ROWS * BLOCK..], r, nb + p, count, cols);
                    }
                }
            }
        }
        nb += width;
    }
}

/// Most rows a block of one panel handles.
const MAX_ROWS: usize = 8;

/// Most rows a block of two panels handles.
const PAIRED_ROWS: usize = 6;

// The scratch block, sized for two panels of `PAIRED_ROWS`, also holds one of `MAX_ROWS`.
const _: () = assert!(2 * PAIRED_ROWS >= MAX_ROWS);

/// One row block's inputs: A's rows from `a`, `lda` apart, against the panel at `first` and,
/// in a block of two, the one after it; the last panel has `last_cols` valid columns. `stream`
/// goes with the first panel ([`Fetch`]).
#[derive(Clone, Copy)]
pub(crate) struct Block {
    stream: Fetch,
    a: *const bf16,
    lda: usize,
    k_blocks: usize,
    first: *const bf16,
    last_cols: usize,
}

/// Where a block's results go: rows `ldc` apart from `c`, each panel's 32 columns
/// `panel_stride` after the previous panel's; `accumulate` adds to what is there.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    c: *mut f32,
    ldc: usize,
    panel_stride: usize,
    accumulate: bool,
}

/// The [`PairLanes::run`] method: `$kernel::<Self, ROWS, PANELS>` for the block shape asked
/// for, one instantiation per shape the loop uses.
macro_rules! run_by_shape {
    ($kernel:ident) => {
        #[inline(always)]
        unsafe fn run(block: Block, panels: usize, rows: usize, out: Out) {
            // SAFETY: forwarded; the implementing lanes run on this CPU, per the trait.
            unsafe {
                match (panels, rows) {
                    (1, 1) => $kernel::<Self, 1, 1>(block, out),
                    (1, 2) => $kernel::<Self, 2, 1>(block, out),
                    (1, 3) => $kernel::<Self, 3, 1>(block, out),
                    (1, 4) => $kernel::<Self, 4, 1>(block, out),
                    (1, 5) => $kernel::<Self, 5, 1>(block, out),
                    (1, 6) => $kernel::<Self, 6, 1>(block, out),
                    (1, 7) => $kernel::<Self, 7, 1>(block, out),
                    (1, 8) => $kernel::<Self, 8, 1>(block, out),
                    (2, 1) => $kernel::<Self, 1, 2>(block, out),
                    (2, 2) => $kernel::<Self, 2, 2>(block, out),
                    (2, 3) => $kernel::<Self, 3, 2>(block, out),
                    (2, 4) => $kernel::<Self, 4, 2>(block, out),
                    (2, 5) => $kernel::<Self, 5, 2>(block, out),
                    (2, 6) => $kernel::<Self, 6, 2>(block, out),
                    _ => unreachable!("a block of {rows} rows × {panels} panels"),
                }
            }
        }
    };
}

/// `C (+)= A · panels` for `ROWS` rows and `PANELS` (1 or 2) panels.
///
/// # Safety
/// `V` runs on this CPU. `block.a` points at `ROWS` rows of `k_blocks · 32` bf16; `first` at
/// `PANELS` panels of `k_blocks · 1024` packed bf16; `out` at `ROWS` rows of the panels'
/// valid columns.
#[inline(always)]
unsafe fn block<V: PairLanes, const ROWS: usize, const PANELS: usize>(block: Block, out: Out) {
    let Block {
        stream,
        a,
        lda,
        k_blocks,
        first,
        last_cols,
    } = block;
    let mut acc = [[[V::zero(); 2]; PANELS]; ROWS];
    for kb in 0..k_blocks {
        // SAFETY: block `kb` of each panel and columns `kb·32..kb·32 + 32` of A's rows exist.
        unsafe {
            let blocks: [*const bf16; PANELS] =
                std::array::from_fn(|p| first.add((p * k_blocks + kb) * BLOCK_ELEMS));
            for pair in 0..16 {
                stream.step(blocks[0], kb, pair);
                for &b in &blocks[1..] {
                    stream.step_beside(b, pair);
                }
                let b: [[V::Pairs; 2]; PANELS] = std::array::from_fn(|p| {
                    [0, TILE_ELEMS].map(|tile| V::load(blocks[p].add(tile + pair * 32)))
                });
                for (m, acc) in acc.iter_mut().enumerate() {
                    let a_pair = V::splat(a.add(m * lda + kb * 32 + 2 * pair));
                    for (acc, b) in acc.iter_mut().zip(&b) {
                        acc[0] = acc[0].dot(a_pair, b[0]);
                        acc[1] = acc[1].dot(a_pair, b[1]);
                    }
                }
            }
        }
    }
    for p in 0..PANELS {
        let cols = if p + 1 == PANELS { last_cols } else { BLOCK };
        for (m, acc) in acc.iter().enumerate() {
            for half in 0..2 {
                // SAFETY: the stores keep inside the row's valid columns.
                unsafe {
                    let at = out.c.add(m * out.ldc + p * out.panel_stride + half * 16);
                    let valid = cols.saturating_sub(16 * half).min(16);
                    acc[p][half].store(at, valid, out.accumulate);
                }
            }
        }
    }
}

/// A portable model of the 16 lanes: `vdpbf16ps`'s arithmetic lane by lane, the same bits.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Soft([f32; 16]);

#[cfg(test)]
fn halves(word: u32) -> (f32, f32) {
    (
        f32::from_bits(word << 16),
        f32::from_bits(word & 0xFFFF_0000),
    )
}

// SAFETY: plain memory reads and writes within the trait's contract.
#[cfg(test)]
unsafe impl PairLanes for Soft {
    type Pairs = [u32; 16];

    fn zero() -> Self {
        Self([0.0; 16])
    }

    unsafe fn load(p: *const bf16) -> [u32; 16] {
        // SAFETY: 16 words from `p`, per the contract.
        std::array::from_fn(|i| unsafe { p.cast::<u32>().add(i).read_unaligned() })
    }

    unsafe fn splat(p: *const bf16) -> [u32; 16] {
        // SAFETY: one word at `p`, per the contract.
        [unsafe { p.cast::<u32>().read_unaligned() }; 16]
    }

    fn dot(self, a: [u32; 16], b: [u32; 16]) -> Self {
        Self(std::array::from_fn(|i| {
            let ((a0, a1), (b0, b1)) = (halves(a[i]), halves(b[i]));
            (self.0[i] + a1 * b1) + a0 * b0
        }))
    }

    unsafe fn store(self, p: *mut f32, valid: usize, accumulate: bool) {
        for (i, &v) in self.0[..valid].iter().enumerate() {
            // SAFETY: `valid` f32 from `p`, per the contract.
            unsafe { *p.add(i) = if accumulate { *p.add(i) + v } else { v } };
        }
    }

    run_by_shape!(block);
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::Bf16Lanes;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m512, __m512bh, _mm512_add_ps, _mm512_dpbf16_ps, _mm512_loadu_si512,
        _mm512_mask_loadu_ps, _mm512_mask_storeu_ps, _mm512_set1_epi32, _mm512_setzero_ps,
    };

    use half::bf16;

    use super::{Block, Out, PairLanes};

    /// [`super::block`] as a function of its own for each shape, compiled with AVX512-BF16,
    /// so each has the registers to itself.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn bf16_block<V: PairLanes, const ROWS: usize, const PANELS: usize>(
        block: Block,
        out: Out,
    ) {
        // SAFETY: forwarded.
        unsafe { super::block::<V, ROWS, PANELS>(block, out) }
    }

    /// A `vdpbf16ps` register of 16 f32 sums.
    #[derive(Clone, Copy)]
    pub(crate) struct Bf16Lanes(__m512);

    // SAFETY: made only where AVX512-BF16 was detected (`Isa::Avx512Bf16`); the pointer
    // contract is the trait's.
    unsafe impl PairLanes for Bf16Lanes {
        type Pairs = __m512bh;

        #[inline(always)]
        fn zero() -> Self {
            // SAFETY: AVX-512F is present, per the trait's contract.
            Self(unsafe { _mm512_setzero_ps() })
        }

        #[inline(always)]
        unsafe fn load(p: *const bf16) -> __m512bh {
            // SAFETY: per the trait's contract; 32 bf16 are reinterpreted as 16 pairs.
            unsafe { std::mem::transmute(_mm512_loadu_si512(p.cast())) }
        }

        #[inline(always)]
        unsafe fn splat(p: *const bf16) -> __m512bh {
            // SAFETY: per the trait's contract; the pair's bits go to every lane unchanged.
            unsafe {
                let bits = p.cast::<i32>().read_unaligned();
                std::mem::transmute(_mm512_set1_epi32(bits))
            }
        }

        #[inline(always)]
        fn dot(self, a: __m512bh, b: __m512bh) -> Self {
            // SAFETY: AVX512-BF16 is present, per the trait's contract.
            Self(unsafe { _mm512_dpbf16_ps(self.0, a, b) })
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32, valid: usize, accumulate: bool) {
            let mask = crate::first_lanes(valid);
            // SAFETY: per the trait's contract; the mask keeps to the `valid` lanes.
            unsafe {
                let mut v = self.0;
                if accumulate {
                    v = _mm512_add_ps(v, _mm512_mask_loadu_ps(_mm512_setzero_ps(), mask, p));
                }
                _mm512_mask_storeu_ps(p, mask, v);
            }
        }

        run_by_shape!(bf16_block);
    }
}

/// The AVX512-BF16 instantiation, compiled with the instructions enabled.
///
/// # Safety
/// The CPU has AVX512F/BW/BF16; the rest as [`rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn avx512bf16_rows(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    // SAFETY: forwarded.
    unsafe { self::rows::<Bf16Lanes>(a, w, sink, rows, panels) }
}
