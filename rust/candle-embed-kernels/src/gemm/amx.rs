//! The AMX GEMM loop: 32-row blocks (16 for a last odd half) of tiles; full f32 blocks go
//! straight into C, edge blocks and fused epilogues through a scratch block in L1.

use std::ops::Range;

use super::Sink;
use crate::aligned::Aligned;
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::PackedWeight;
use crate::tiles::{self, Tiles};

/// The AMX loop: 32-row blocks (16 for a last odd half); full f32 blocks go straight into C,
/// edge blocks and fused epilogues through a scratch block in L1.
pub(super) unsafe fn rows<T: Tiles>(
    tiles: &mut T,
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    tiles.configure();
    let (lda, k_blocks, n) = (a.stride(), w.k_blocks(), w.n());
    let mut scratch = Aligned([0f32; BLOCK * BLOCK]);
    for nb in panels.clone() {
        let panel = w.panel(nb).as_ptr();
        let cols = (n - nb * BLOCK).min(BLOCK);
        let mut r = rows.start;
        while r < rows.end {
            let block_rows = if rows.end - r > 16 { BLOCK } else { 16 };
            let valid = block_rows.min(rows.end - r);
            // The next block: down the panel, or the top of the next one.
            let next = r + block_rows;
            let ahead = if next < rows.end {
                Some(sink.ahead(next, nb, (rows.end - next).min(BLOCK)))
            } else {
                let top = rows.len().min(BLOCK);
                (nb + 1 < panels.end).then(|| sink.ahead(rows.start, nb + 1, top))
            };
            // SAFETY: A is padded to whole 32-row blocks and r is a multiple of 16 (32 unless
            // this is the last block), so `block_rows` rows from r exist; the sink's cells are
            // inside the caller's rectangle; the scratch block holds 32 × 32.
            unsafe {
                let a_ptr = a.padded().as_ptr().add(r * lda);
                match sink {
                    Sink::F32 { c, ldc, accumulate } if valid == block_rows && cols == BLOCK => {
                        let c_ptr = c.add(r * ldc + nb * BLOCK);
                        tiles::block(
                            tiles, block_rows, a_ptr, lda, panel, k_blocks, c_ptr, ldc, accumulate,
                            ahead,
                        );
                    }
                    _ => {
                        let accumulate = sink.accumulates();
                        if accumulate {
                            sink.preload(&mut scratch.0, r, nb, valid, cols);
                        }
                        let s = scratch.as_mut_ptr();
                        tiles::block(
                            tiles, block_rows, a_ptr, lda, panel, k_blocks, s, BLOCK, accumulate,
                            ahead,
                        );
                        sink.finish(&scratch.0, r, nb, valid, cols);
                    }
                }
            }
            r += block_rows;
        }
    }
}
