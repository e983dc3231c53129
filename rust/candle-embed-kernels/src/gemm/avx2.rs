//! The AVX2 GEMM panel, for x86 CPUs with neither AMX nor AVX512-BF16 (most laptops, AMD Zen 2
//! and 3): a task's rows of A against one 32-column panel, in f32 fused multiply-adds.
//!
//! A packed tile row holds, for 16 columns, the 32-bit word `(k even, k odd)` of each column; 8
//! of those words are one 256-bit register. A bf16 is the upper half of an f32, so shifting every
//! word left by 16 gives the even elements as f32 and masking off the low half gives the odd
//! ones: no conversion instructions. A's rows are widened to f32 once per task, so its values
//! are broadcast straight from memory. Each product of two bf16 is exact in f32, so the only
//! rounding is the FMA's sum, as in the other kernels (bf16 inputs, f32 sums).

use std::arch::x86_64::{
    __m256, __m256i, _mm256_and_si256, _mm256_broadcast_ss, _mm256_castsi256_ps, _mm256_fmadd_ps,
    _mm256_loadu_si256, _mm256_set1_epi32, _mm256_setzero_ps, _mm256_slli_epi32, _mm256_storeu_ps,
};

use std::ops::Range;

use half::bf16;

use super::Sink;
use crate::aligned::AlignedVec;
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::{PackedWeight, BLOCK_ELEMS, TILE_ELEMS};

/// A task's rows of A widened to f32, and one panel of their results, for the AVX2 kernel.
#[derive(Default)]
struct Avx2Scratch {
    a: AlignedVec<f32>,
    panel: AlignedVec<f32>,
}

thread_local! {
    static AVX2_SCRATCH: std::cell::RefCell<Avx2Scratch> = std::cell::RefCell::default();
}

/// The AVX2 loop: the task's rows of A widened to f32 once, then panel by panel into a scratch
/// panel (rows × 32), which goes to the sink.
pub(super) unsafe fn rows(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let (lda, k_blocks, n) = (a.stride(), w.k_blocks(), w.n());
    let width = k_blocks * BLOCK;
    AVX2_SCRATCH.with_borrow_mut(|s| {
        s.a.resize_for_overwrite(rows.len() * width);
        s.panel.resize_for_overwrite(rows.len() * BLOCK);
        for (r, dst) in rows.clone().zip(s.a.chunks_exact_mut(width)) {
            widen(&a.padded()[r * lda..][..width], dst);
        }
        for nb in panels {
            let cols = (n - nb * BLOCK).min(BLOCK);
            // SAFETY: the caller checked AVX2 and FMA; the widened rows, the panel and the
            // scratch panel have the sizes `panel` needs.
            unsafe {
                panel(
                    rows.len(),
                    s.a.as_ptr(),
                    width,
                    w.panel(nb).as_ptr(),
                    k_blocks,
                    s.panel.as_mut_ptr(),
                );
            }
            match sink {
                Sink::F32 { c, ldc, accumulate } => {
                    for (i, sums) in s.panel.chunks_exact(BLOCK).enumerate() {
                        // SAFETY: row `rows.start + i`, panel nb's `cols` columns lie in C and
                        // in this task's rectangle.
                        unsafe {
                            let dst = c.add((rows.start + i) * ldc + nb * BLOCK);
                            for (j, &sum) in sums[..cols].iter().enumerate() {
                                *dst.add(j) = if accumulate { *dst.add(j) + sum } else { sum };
                            }
                        }
                    }
                }
                // SAFETY: as above; the scratch panel's rows are 32 apart.
                Sink::SiluMul { .. } => unsafe {
                    sink.finish(&s.panel, rows.start, nb, rows.len(), cols);
                },
            }
        }
    });
}

/// Most rows one call handles: 6 rows × 16 columns of sums take 12 registers, leaving 4 for the
/// widened weights of a K step and A's broadcast value.
const MAX_ROWS: usize = 6;

/// One panel of `A · Wᵀ` for `rows` rows: `out[r·32 + j] = Σ_k a[r][k] · W[j][k]`, rows 32
/// apart. A is widened to f32 ([`widen`]), rows `lda` apart, so its values are broadcast
/// straight from memory. Each row's sums run over K in order, so its result depends on nothing
/// but its own inputs. (Cutting K into L1-sized chunks, the partial sums kept in `out`, measured
/// no faster on Zen 3: L2 feeds this loop fast enough.)
///
/// # Safety
/// The CPU has AVX2 and FMA. `a` points at `rows` rows of `k_blocks · 32` f32, `lda` apart;
/// `panel` at `k_blocks · 1024` packed bf16; `out` holds `rows · 32` f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn panel(
    rows: usize,
    a: *const f32,
    lda: usize,
    panel: *const bf16,
    k_blocks: usize,
    out: *mut f32,
) {
    for half in 0..2 {
        for r in (0..rows).step_by(MAX_ROWS) {
            // SAFETY: rows r..r + count and this half's 16 columns lie inside the operands, per
            // the contract.
            unsafe {
                let a = a.add(r * lda);
                let b = panel.add(half * TILE_ELEMS);
                let p = out.add(r * 32 + half * 16);
                match MAX_ROWS.min(rows - r) {
                    1 => rows_block::<1>(a, lda, b, k_blocks, p),
                    2 => rows_block::<2>(a, lda, b, k_blocks, p),
                    3 => rows_block::<3>(a, lda, b, k_blocks, p),
                    4 => rows_block::<4>(a, lda, b, k_blocks, p),
                    5 => rows_block::<5>(a, lda, b, k_blocks, p),
                    _ => rows_block::<6>(a, lda, b, k_blocks, p),
                }
            }
        }
    }
}

/// `ROWS` rows against `blocks` K blocks of one 16-column half panel (`b`, blocks
/// `BLOCK_ELEMS` apart), the sums stored at `p` (rows 32 apart).
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_block<const ROWS: usize>(
    a: *const f32,
    lda: usize,
    b: *const bf16,
    blocks: usize,
    p: *mut f32,
) {
    let high = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
    let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
    // SAFETY: the caller's contract covers the sums, A's rows and the K blocks.
    unsafe {
        for kb in 0..blocks {
            let b = b.add(kb * BLOCK_ELEMS);
            let a = a.add(kb * 32);
            for pair in 0..16 {
                let w0 = _mm256_loadu_si256(b.add(pair * 32).cast::<__m256i>());
                let w1 = _mm256_loadu_si256(b.add(pair * 32 + 16).cast::<__m256i>());
                let (b0_even, b0_odd) = split(w0, high);
                let (b1_even, b1_odd) = split(w1, high);
                for (m, acc) in acc.iter_mut().enumerate() {
                    let a_even = _mm256_broadcast_ss(&*a.add(m * lda + 2 * pair));
                    acc[0] = _mm256_fmadd_ps(a_even, b0_even, acc[0]);
                    acc[1] = _mm256_fmadd_ps(a_even, b1_even, acc[1]);
                }
                for (m, acc) in acc.iter_mut().enumerate() {
                    let a_odd = _mm256_broadcast_ss(&*a.add(m * lda + 2 * pair + 1));
                    acc[0] = _mm256_fmadd_ps(a_odd, b0_odd, acc[0]);
                    acc[1] = _mm256_fmadd_ps(a_odd, b1_odd, acc[1]);
                }
            }
        }
        for (m, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(p.add(m * 32), acc[0]);
            _mm256_storeu_ps(p.add(m * 32 + 8), acc[1]);
        }
    }
}

/// `dst = f32(src)`: bf16 is the upper half of an f32, so widening is exact.
fn widen(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s.to_bits()) << 16);
    }
}

/// The even and odd bf16 of 8 packed pairs, as f32 (`high` holds 0xFFFF_0000 in every lane).
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
