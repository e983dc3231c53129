//! The AVX512-BF16 GEMM block: up to 8 rows of A against one 32-column panel, or up to 6 rows
//! against two panels side by side.
//!
//! A packed tile row (one K pair for 16 columns) is exactly one `__m512bh`, so the kernel
//! broadcasts a pair of A's row into every lane and `vdpbf16ps` adds `a₀b₀ + a₁b₁` to 16 column
//! sums at once: no horizontal reductions, 16 accumulators of 16 columns for 8 rows.
//!
//! Large tasks take their panels two at a time, in blocks of 6 rows: 24 accumulators, 4 panel
//! vectors and the broadcast fill 29 of the 32 registers. Each broadcast of A then feeds four
//! `vdpbf16ps` instead of two: a K pair takes 10 loads and about 44 instructions for 24 of them,
//! where one panel took 10 loads and about 45 instructions for 16. That matters where the CPU
//! retires two 512-bit `vdpbf16ps` a cycle. On AMD Zen 5 (`examples/gemm_gflops.rs`, alternating
//! calls) both loops ran 930–970 GFLOP/s up to 512 rows, near the 940–960 peak, but at 2,048
//! rows q/k/v and gate/up ran 1.09–1.20× faster paired, and the 0.6B corpus 1.01–1.10×.

use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_add_ps, _mm512_dpbf16_ps, _mm512_loadu_si512,
    _mm512_mask_loadu_ps, _mm512_mask_storeu_ps, _mm512_set1_epi32, _mm512_setzero_ps,
};

use std::ops::Range;

use half::bf16;

use super::{Fetch, Sink, MAX_FETCH_PASSES};
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::PackedWeight;

use crate::pack::{BLOCK_ELEMS, TILE_ELEMS};

/// The AVX512-BF16 loop: row blocks of one panel, or of two, into C, or through a scratch
/// block for fused epilogues.
pub(super) unsafe fn rows(
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
            // SAFETY: AVX512-BF16 was checked by the caller; rows r..r+count of A and of the
            // sink exist, panels nb..=last of W, and the masked stores keep to their columns.
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
                    block.run(width, count, out);
                } else {
                    let out = Out {
                        c: scratch.as_mut_ptr(),
                        ldc: BLOCK,
                        panel_stride: PAIRED_ROWS * BLOCK,
                        accumulate: false,
                    };
                    block.run(width, count, out);
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

/// One row block's inputs: A's rows from `a`, `lda` apart, against the panel at `first` and,
/// in a block of two, the one after it; the last panel has `last_cols` valid columns. `stream`
/// goes with the first panel ([`Fetch`]).
struct Block {
    stream: Fetch,
    a: *const bf16,
    lda: usize,
    k_blocks: usize,
    first: *const bf16,
    last_cols: usize,
}

/// Where a block's results go: rows `ldc` apart from `c`, each panel's 32 columns
/// `panel_stride` after the previous panel's; `accumulate` adds to what is there.
struct Out {
    c: *mut f32,
    ldc: usize,
    panel_stride: usize,
    accumulate: bool,
}

impl Block {
    /// `C (+)= A · panels` over `panels` (1 or 2) panels and `rows` rows.
    ///
    /// # Safety
    /// The CPU has AVX512F/BW/BF16. `a` points at `rows` rows of `k_blocks · 32` bf16; `first`
    /// at `panels` panels of `k_blocks · 1024` packed bf16; `out` at `rows` rows of the
    /// panels' valid columns.
    unsafe fn run(self, panels: usize, rows: usize, out: Out) {
        // SAFETY: forwarded from this function's contract; `ROWS` equals `rows` and stays
        // within the registers for the panel count.
        unsafe {
            match (panels, rows) {
                (1, 1) => self.rows_block::<1, 1>(out),
                (1, 2) => self.rows_block::<2, 1>(out),
                (1, 3) => self.rows_block::<3, 1>(out),
                (1, 4) => self.rows_block::<4, 1>(out),
                (1, 5) => self.rows_block::<5, 1>(out),
                (1, 6) => self.rows_block::<6, 1>(out),
                (1, 7) => self.rows_block::<7, 1>(out),
                (1, 8) => self.rows_block::<8, 1>(out),
                (2, 1) => self.rows_block::<1, 2>(out),
                (2, 2) => self.rows_block::<2, 2>(out),
                (2, 3) => self.rows_block::<3, 2>(out),
                (2, 4) => self.rows_block::<4, 2>(out),
                (2, 5) => self.rows_block::<5, 2>(out),
                (2, 6) => self.rows_block::<6, 2>(out),
                _ => unreachable!("avx512 block of {rows} rows × {panels} panels"),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn rows_block<const ROWS: usize, const PANELS: usize>(self, out: Out) {
        let Block {
            stream,
            a,
            lda,
            k_blocks,
            first,
            last_cols,
        } = self;
        let mut acc = [[[_mm512_setzero_ps(); 2]; PANELS]; ROWS];
        for kb in 0..k_blocks {
            // SAFETY: block `kb` of each panel and columns `kb·32..kb·32 + 32` of A's rows
            // exist.
            unsafe {
                let blocks: [*const bf16; PANELS] =
                    std::array::from_fn(|p| first.add((p * k_blocks + kb) * BLOCK_ELEMS));
                for pair in 0..16 {
                    stream.step(blocks[0], kb, pair);
                    for &b in &blocks[1..] {
                        stream.step_beside(b, pair);
                    }
                    let b: [[__m512bh; 2]; PANELS] = std::array::from_fn(|p| {
                        [0, TILE_ELEMS].map(|tile| {
                            as_bh(_mm512_loadu_si512(blocks[p].add(tile + pair * 32).cast()))
                        })
                    });
                    for (m, acc) in acc.iter_mut().enumerate() {
                        let bits = a
                            .add(m * lda + kb * 32 + 2 * pair)
                            .cast::<i32>()
                            .read_unaligned();
                        let a_pair = as_bh(_mm512_set1_epi32(bits));
                        for (acc, b) in acc.iter_mut().zip(&b) {
                            acc[0] = _mm512_dpbf16_ps(acc[0], a_pair, b[0]);
                            acc[1] = _mm512_dpbf16_ps(acc[1], a_pair, b[1]);
                        }
                    }
                }
            }
        }
        for p in 0..PANELS {
            let cols = if p + 1 == PANELS { last_cols } else { BLOCK };
            let masks = [lane_mask(cols), lane_mask(cols.saturating_sub(16))];
            for (m, acc) in acc.iter().enumerate() {
                for half in 0..2 {
                    // SAFETY: the masks keep the access inside the row's valid columns.
                    unsafe {
                        let at = out.c.add(m * out.ldc + p * out.panel_stride + half * 16);
                        let mut v: __m512 = acc[p][half];
                        if out.accumulate {
                            v = _mm512_add_ps(
                                v,
                                _mm512_mask_loadu_ps(_mm512_setzero_ps(), masks[half], at),
                            );
                        }
                        _mm512_mask_storeu_ps(at, masks[half], v);
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn lane_mask(valid: usize) -> u16 {
    if valid >= 16 {
        u16::MAX
    } else {
        (1u16 << valid) - 1
    }
}

#[inline(always)]
fn as_bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512-bit plain-data vectors; bf16 pairs are reinterpreted, not converted.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}
