//! `PackedWeight`: a linear layer's weight, re-laid-out once at load for the kernels.
//!
//! A checkpoint stores `W` as `(out, in)` = `(N, K)`; the GEMM computes `C = A · Wᵀ`. The packed
//! form is a sequence of 32-column panels; each panel holds, for every 32-deep slice of K, two
//! tiles of 16 columns. A tile row is one K *pair* of 16 columns, 32 elements. In bf16 it is in
//! VNNI order, 16 × (k even, k odd), 64 bytes: exactly what an AMX `tdpbf16ps` B tile row
//! multiplies and what one `vdpbf16ps` register holds. In f32 (the exact path's weights) it is
//! the 16 even elements, then the 16 odd ones: each half is one 512-bit register, or two 256-bit
//! ones, ready for the FMAs. A whole panel is contiguous, so a kernel streams it front to back.
//! N and K are zero-padded to 32.

use std::fmt;

use half::bf16;

use crate::aligned::{AlignedVec, Plain};
use crate::matrix::BLOCK;

/// Elements in one tile: 16 K-pairs × 16 columns × 2.
pub const TILE_ELEMS: usize = 512;
/// Elements of one 32×32 (two-tile) block.
pub const BLOCK_ELEMS: usize = 2 * TILE_ELEMS;

/// A weight element type the kernels read packed: bf16 (every kernel) or f32 (the widened
/// AVX2 / AVX-512F loops and the reference, for `dtype="f32"`).
pub trait Element: Plain + PartialEq + fmt::Debug {
    /// Where column `c` (0..16) of a tile row keeps its element of K parity `half`.
    fn in_pair_row(c: usize, half: usize) -> usize;
    /// The value, exactly, as f32.
    fn to_f32(self) -> f32;
}

impl Element for bf16 {
    fn in_pair_row(c: usize, half: usize) -> usize {
        2 * c + half
    }

    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Element for f32 {
    fn in_pair_row(c: usize, half: usize) -> usize {
        16 * half + c
    }

    fn to_f32(self) -> f32 {
        self
    }
}

#[derive(Clone, Debug)]
pub struct PackedWeight<E: Element = bf16> {
    /// Cache-line aligned: every tile is whole lines.
    data: AlignedVec<E>,
    n: usize,
    k: usize,
}

impl<E: Element> PackedWeight<E> {
    /// Packs a row-major `(n, k)` weight. Fused projections pack the row-wise concatenation of
    /// their weights (q, k, v → one `(q + k + v, hidden)` matrix).
    pub fn new(weight: &[E], n: usize, k: usize) -> Self {
        assert_eq!(
            weight.len(),
            n * k,
            "weight of {n}×{k} needs {} values",
            n * k
        );
        let (n_blocks, k_blocks) = (n.div_ceil(BLOCK), k.div_ceil(BLOCK));
        let mut data = AlignedVec::zeroed(n_blocks * k_blocks * BLOCK_ELEMS);
        for (col, row) in weight.chunks_exact(k.max(1)).enumerate().take(n) {
            for (depth, &value) in row.iter().enumerate() {
                data[offset::<E>(col, depth, k_blocks)] = value;
            }
        }
        Self { data, n, k }
    }

    /// The MLP's gate and up weights (each `(intermediate, k)`) for [`crate::gemm::gemm_silu_mul`]:
    /// every 32-column panel holds 16 gate columns then the same 16 up columns, so one block of
    /// the product has both halves of SiLU(gate)·up side by side.
    pub fn gate_up(gate: &[E], up: &[E], intermediate: usize, k: usize) -> Self {
        assert_eq!(gate.len(), intermediate * k, "gate of {intermediate}×{k}");
        assert_eq!(up.len(), intermediate * k, "up of {intermediate}×{k}");
        let groups = intermediate.div_ceil(16);
        let mut rows = vec![E::default(); groups * 32 * k];
        for g in 0..groups {
            for c in 0..16.min(intermediate - 16 * g) {
                let src = (16 * g + c) * k;
                rows[(32 * g + c) * k..][..k].copy_from_slice(&gate[src..src + k]);
                rows[(32 * g + 16 + c) * k..][..k].copy_from_slice(&up[src..src + k]);
            }
        }
        Self::new(&rows, groups * 32, k)
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n_blocks(&self) -> usize {
        self.n.div_ceil(BLOCK)
    }

    pub fn k_blocks(&self) -> usize {
        self.k.div_ceil(BLOCK)
    }

    /// Panel `nb`: columns `32·nb..32·nb + 32`, all of K, `k_blocks × 1024` elements.
    pub fn panel(&self, nb: usize) -> &[E] {
        let len = self.k_blocks() * BLOCK_ELEMS;
        &self.data[nb * len..(nb + 1) * len]
    }

    /// Bytes held (padding included).
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<E>()
    }

    /// The weight value at output `col`, input `depth` (zero in the padding).
    pub fn get(&self, col: usize, depth: usize) -> E {
        self.data[offset::<E>(col, depth, self.k_blocks())]
    }
}

/// Where `W[col][depth]` lives in the packed layout.
#[inline]
fn offset<E: Element>(col: usize, depth: usize, k_blocks: usize) -> usize {
    let (nb, tile, c) = (col / BLOCK, (col % BLOCK) / 16, col % 16);
    let (kb, pair, half) = (depth / BLOCK, (depth % BLOCK) / 2, depth % 2);
    (nb * k_blocks + kb) * BLOCK_ELEMS + tile * TILE_ELEMS + pair * 32 + E::in_pair_row(c, half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_once_and_padding_is_zero() {
        let (n, k) = (37, 45);
        let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32(i as f32 + 1.0)).collect();
        let p = PackedWeight::new(&w, n, k);
        assert_eq!(p.bytes(), 2 * 32 * 2 * 32 * 2);
        for col in 0..n {
            for depth in 0..k {
                assert_eq!(p.get(col, depth), w[col * k + depth]);
            }
        }
        let nonzero = p.data.iter().filter(|v| v.to_f32() != 0.0).count();
        assert_eq!(nonzero, n * k);
    }

    #[test]
    fn a_tile_row_is_one_k_pair_across_16_columns() {
        let (n, k) = (32, 32);
        let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32(i as f32)).collect();
        let p = PackedWeight::new(&w, n, k);
        // Second tile (columns 16..32), K pair 3 (depths 6, 7): column c's pair sits at 2c.
        let row = &p.panel(0)[TILE_ELEMS + 3 * 32..TILE_ELEMS + 4 * 32];
        for c in 0..16 {
            assert_eq!(row[2 * c], w[(16 + c) * k + 6]);
            assert_eq!(row[2 * c + 1], w[(16 + c) * k + 7]);
        }
    }

    #[test]
    fn an_f32_tile_row_holds_the_even_elements_then_the_odd() {
        let (n, k) = (40, 70);
        let w: Vec<f32> = (0..n * k).map(|i| i as f32 + 1.0).collect();
        let p = PackedWeight::new(&w, n, k);
        assert_eq!(p.bytes(), 2 * 3 * BLOCK_ELEMS * 4);
        for col in 0..n {
            for depth in 0..k {
                assert_eq!(p.get(col, depth).to_bits(), w[col * k + depth].to_bits());
            }
        }
        assert_eq!(p.data.iter().filter(|&&v| v != 0.0).count(), n * k);
        // Panel 1 (columns 32..), second K block (depths 32..), first tile, K pair 2.
        let row = &p.panel(1)[BLOCK_ELEMS + 2 * 32..][..32];
        for c in 0..8 {
            assert_eq!(row[c].to_bits(), w[(32 + c) * k + 36].to_bits());
            assert_eq!(row[16 + c].to_bits(), w[(32 + c) * k + 37].to_bits());
        }
        assert!(row[8..16].iter().chain(&row[24..]).all(|&v| v == 0.0));
    }
}
