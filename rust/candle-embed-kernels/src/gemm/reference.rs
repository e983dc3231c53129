//! The portable GEMM loop: scalar code with the kernels' arithmetic (bf16 products summed in
//! f32, K pair by pair).

use std::ops::Range;

use super::{F32Rows, Sink};
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::{PackedWeight, BLOCK_ELEMS, TILE_ELEMS};

/// Scalar code with the same arithmetic: bf16 products summed in f32, K pair by pair.
pub(super) unsafe fn rows(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let (k_blocks, n, lda) = (w.k_blocks(), w.n(), a.stride());
    let a_all = a.padded();
    for nb in panels {
        let panel = w.panel(nb);
        let cols = (n - nb * BLOCK).min(BLOCK);
        for r in rows.clone() {
            let a_row = &a_all[r * lda..(r + 1) * lda];
            let mut sums = [0f32; BLOCK];
            if sink.accumulates() {
                // SAFETY: row r, panel nb lie in the caller's rectangle.
                unsafe { sink.preload(&mut sums, r, nb, 1, cols) };
            }
            for kb in 0..k_blocks {
                let blk = &panel[kb * BLOCK_ELEMS..(kb + 1) * BLOCK_ELEMS];
                for (col, sum) in sums.iter_mut().enumerate() {
                    let tile = &blk[(col / 16) * TILE_ELEMS..];
                    for pair in 0..16 {
                        let at = pair * 32 + (col % 16) * 2;
                        let k = kb * BLOCK + 2 * pair;
                        *sum += a_row[k].to_f32() * tile[at].to_f32()
                            + a_row[k + 1].to_f32() * tile[at + 1].to_f32();
                    }
                }
            }
            // SAFETY: as above.
            unsafe { sink.finish(&sums, r, nb, 1, cols) };
        }
    }
}

/// The f32 loop's arithmetic in scalar code: each sum one FMA at a time in K order, as the
/// widened loops compute it, so all of them give the same bits.
pub(super) unsafe fn rows_f32(
    a: &F32Rows,
    w: &PackedWeight<f32>,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let (n, k) = (w.n(), a.cols);
    for nb in panels {
        let cols = (n - nb * BLOCK).min(BLOCK);
        for r in rows.clone() {
            let a_row = &a.values[r * k..(r + 1) * k];
            let mut sums = [0f32; BLOCK];
            for (col, sum) in sums.iter_mut().enumerate() {
                for (depth, &x) in a_row.iter().enumerate() {
                    *sum = x.mul_add(w.get(nb * BLOCK + col, depth), *sum);
                }
            }
            if sink.accumulates() {
                let mut base = [0f32; BLOCK];
                // SAFETY: row r, panel nb lie in the caller's rectangle.
                unsafe { sink.preload(&mut base, r, nb, 1, cols) };
                for (sum, b) in sums.iter_mut().zip(base) {
                    *sum += b;
                }
            }
            // SAFETY: as above.
            unsafe { sink.finish(&sums, r, nb, 1, cols) };
        }
    }
}
