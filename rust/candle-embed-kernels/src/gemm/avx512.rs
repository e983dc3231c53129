//! The AVX512-BF16 GEMM block: up to 8 rows of A against one 32-column panel.
//!
//! A packed tile row (one K pair for 16 columns) is exactly one `__m512bh`, so the kernel
//! broadcasts a pair of A's row into every lane and `vdpbf16ps` adds `a₀b₀ + a₁b₁` to 16 column
//! sums at once: no horizontal reductions, 16 accumulators of 16 columns for 8 rows.

use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_add_ps, _mm512_dpbf16_ps, _mm512_loadu_si512,
    _mm512_mask_loadu_ps, _mm512_mask_storeu_ps, _mm512_set1_epi32, _mm512_setzero_ps,
};

use std::ops::Range;

use half::bf16;

use super::{Fetch, Sink};
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::PackedWeight;

use crate::pack::{BLOCK_ELEMS, TILE_ELEMS};

/// The AVX512-BF16 loop: 8-row blocks of one panel into C, or through a scratch block for
/// fused epilogues.
pub(super) unsafe fn rows(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let (lda, k_blocks, n) = (a.stride(), w.k_blocks(), w.n());
    let mut scratch = [0f32; MAX_ROWS * BLOCK];
    let passes = rows.len().div_ceil(MAX_ROWS);
    for nb in panels.clone() {
        let panel = w.panel(nb).as_ptr();
        let cols = (n - nb * BLOCK).min(BLOCK);
        let next = (nb + 1 < panels.end).then(|| w.panel(nb + 1).as_ptr());
        for (pass, r) in rows.clone().step_by(MAX_ROWS).enumerate() {
            let count = MAX_ROWS.min(rows.end - r);
            let stream = Fetch::new(next, k_blocks, pass, passes);
            // SAFETY: AVX512-BF16 was checked by the caller; rows r..r+count of A and of the
            // sink exist, and the masked stores keep to `cols` columns.
            unsafe {
                let a_ptr = a.padded().as_ptr().add(r * lda);
                if let Sink::F32 { c, ldc, accumulate } = sink {
                    let c_ptr = c.add(r * ldc + nb * BLOCK);
                    block(
                        count, stream, a_ptr, lda, panel, k_blocks, c_ptr, ldc, cols, accumulate,
                    );
                } else {
                    let s = scratch.as_mut_ptr();
                    block(
                        count, stream, a_ptr, lda, panel, k_blocks, s, BLOCK, BLOCK, false,
                    );
                    sink.finish(&scratch, r, nb, count, cols);
                }
            }
        }
    }
}

/// Most rows one call handles.
const MAX_ROWS: usize = 8;

/// `C[rows, cols] (+)= A[rows, K] · panel` for `rows ≤ 8`, `cols ≤ 32` valid columns; `stream`
/// on the panel's first pass ([`super::stream_ahead`]).
///
/// # Safety
/// The CPU has AVX512F/BW/BF16. `a` points at `rows` rows of `k_blocks · 32` bf16, `lda` apart;
/// `panel` at `k_blocks · 1024` packed bf16; `c` at `rows` rows of `cols` f32, `ldc` apart.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn block(
    rows: usize,
    stream: Fetch,
    a: *const bf16,
    lda: usize,
    panel: *const bf16,
    k_blocks: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    // SAFETY: forwarded from this function's contract; `ROWS` equals `rows`.
    unsafe {
        match rows {
            1 => rows_block::<1>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            2 => rows_block::<2>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            3 => rows_block::<3>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            4 => rows_block::<4>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            5 => rows_block::<5>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            6 => rows_block::<6>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            7 => rows_block::<7>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            8 => rows_block::<8>(stream, a, lda, panel, k_blocks, c, ldc, cols, accumulate),
            _ => unreachable!("avx512 block of {rows} rows"),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_block<const ROWS: usize>(
    stream: Fetch,
    a: *const bf16,
    lda: usize,
    panel: *const bf16,
    k_blocks: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    for kb in 0..k_blocks {
        // SAFETY: block `kb` of the panel and columns `kb·32..kb·32 + 32` of A's rows exist.
        unsafe {
            let b = panel.add(kb * BLOCK_ELEMS);
            for pair in 0..16 {
                stream.step(b, kb, pair);
                let b0 = as_bh(_mm512_loadu_si512(b.add(pair * 32).cast()));
                let b1 = as_bh(_mm512_loadu_si512(b.add(TILE_ELEMS + pair * 32).cast()));
                for (m, acc) in acc.iter_mut().enumerate() {
                    let bits = a
                        .add(m * lda + kb * 32 + 2 * pair)
                        .cast::<i32>()
                        .read_unaligned();
                    let a_pair = as_bh(_mm512_set1_epi32(bits));
                    acc[0] = _mm512_dpbf16_ps(acc[0], a_pair, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], a_pair, b1);
                }
            }
        }
    }
    let masks = [lane_mask(cols), lane_mask(cols.saturating_sub(16))];
    for (m, acc) in acc.iter().enumerate() {
        for half in 0..2 {
            // SAFETY: the masks keep the access inside the row's `cols` valid columns.
            unsafe {
                let out = c.add(m * ldc + half * 16);
                let mut v: __m512 = acc[half];
                if accumulate {
                    v = _mm512_add_ps(
                        v,
                        _mm512_mask_loadu_ps(_mm512_setzero_ps(), masks[half], out),
                    );
                }
                _mm512_mask_storeu_ps(out, masks[half], v);
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
