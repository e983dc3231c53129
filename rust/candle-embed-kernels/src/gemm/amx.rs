//! The AMX GEMM loop: 32-row blocks (16 for a last odd half) of tiles; full f32 blocks go
//! straight into C, edge blocks and fused epilogues through a scratch block in L1, finished
//! row by row while the tiles compute the next block.

use std::ops::Range;

use super::Sink;
use crate::aligned::Aligned;
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::PackedWeight;
use crate::tiles::{self, Tiles};

/// A block whose results wait in a scratch buffer for the sink: its place, and how many of
/// its rows are done.
#[derive(Clone, Copy)]
struct Pending {
    buffer: usize,
    r: usize,
    nb: usize,
    valid: usize,
    cols: usize,
    done: usize,
}

impl Pending {
    /// Hands the sink its rows up to `upto` (at most `valid`).
    ///
    /// # Safety
    /// As [`Sink::finish`] for the whole block.
    #[inline(always)]
    unsafe fn finish_to(&mut self, sink: Sink, scratch: &[f32], upto: usize) {
        let upto = upto.min(self.valid);
        if upto > self.done {
            let rows = self.done..upto;
            // SAFETY: a part of the block the caller vouched for.
            unsafe {
                sink.finish(
                    &scratch[rows.start * BLOCK..],
                    self.r + rows.start,
                    self.nb,
                    rows.len(),
                    self.cols,
                );
            }
            self.done = upto;
        }
    }
}

/// The AMX loop: 32-row blocks (16 for a last odd half); full f32 blocks go straight into C.
/// Edge blocks and fused epilogues go through one of two scratch blocks in L1, and the sink
/// takes them during the next block's K loop, a row or so per K block: that work (SiLU, the
/// product, rounding) then runs on the vector units while the tiles compute, instead of
/// after them.
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
    let mut scratch = [Aligned([0f32; BLOCK * BLOCK]); 2];
    let buffers = scratch.each_mut().map(|s| s.as_mut_ptr());
    let buffer = |i: usize| {
        // SAFETY: each buffer holds 32 × 32 and outlives the loop; the tiles write a buffer
        // only while it is not the pending one, which is the one read through this.
        unsafe { std::slice::from_raw_parts(buffers[i], BLOCK * BLOCK) }
    };
    let mut pending: Option<Pending> = None;
    // Rows of the pending block finished per K block, so all are done within one block.
    let per_k_block = BLOCK.div_ceil(k_blocks.max(1));
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
            // The scratch block this one would use: the one not pending.
            let own = pending.map_or(0, |p| 1 - p.buffer);
            let mut during = |kb: usize| {
                if let Some(p) = pending.as_mut() {
                    // SAFETY: the pending block is another block of this rectangle.
                    unsafe { p.finish_to(sink, buffer(p.buffer), (kb + 1) * per_k_block) };
                }
            };
            // SAFETY: A is padded to whole 32-row blocks and r is a multiple of 16 (32 unless
            // this is the last block), so `block_rows` rows from r exist; the sink's cells are
            // inside the caller's rectangle; the scratch blocks hold 32 × 32. A pending block
            // is another block of the rectangle, so its cells are not this block's.
            unsafe {
                let a_ptr = a.padded().as_ptr().add(r * lda);
                let (dst, ld, accumulate, direct) = match sink {
                    Sink::F32 { c, ldc, accumulate } if valid == block_rows && cols == BLOCK => {
                        (c.add(r * ldc + nb * BLOCK), ldc, accumulate, true)
                    }
                    _ => {
                        let accumulate = sink.accumulates();
                        if accumulate {
                            let s = std::slice::from_raw_parts_mut(buffers[own], BLOCK * BLOCK);
                            sink.preload(s, r, nb, valid, cols);
                        }
                        (buffers[own], BLOCK, accumulate, false)
                    }
                };
                tiles::block(
                    tiles,
                    block_rows,
                    a_ptr,
                    lda,
                    panel,
                    k_blocks,
                    dst,
                    ld,
                    accumulate,
                    ahead,
                    &mut during,
                );
                if let Some(mut p) = pending.take() {
                    p.finish_to(sink, buffer(p.buffer), BLOCK);
                }
                if !direct {
                    pending = Some(Pending {
                        buffer: own,
                        r,
                        nb,
                        valid,
                        cols,
                        done: 0,
                    });
                }
            }
            r += block_rows;
        }
    }
    if let Some(mut p) = pending.take() {
        // SAFETY: as above.
        unsafe { p.finish_to(sink, buffer(p.buffer), BLOCK) };
    }
}
