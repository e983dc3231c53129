//! `BfMatrix`: activations in bf16, laid out the way the GEMM kernels read them.
//!
//! Rows are `stride` elements apart, `stride` is the column count rounded up to a tile's 32 bf16
//! (64 bytes), and the row count is rounded up to 32: a kernel can always load whole 32×32 blocks,
//! and the padding is zero so it adds nothing to any sum.

use half::bf16;

use crate::aligned::AlignedVec;
use crate::widest::{widest, Width};

/// Rows and columns of the blocks every kernel works in.
pub const BLOCK: usize = 32;

/// A row-major bf16 matrix with zero padding to whole 32×32 blocks, starting on a cache line
/// (so every tile row is one line).
#[derive(Clone, Debug, Default)]
pub struct BfMatrix {
    data: AlignedVec<bf16>,
    rows: usize,
    cols: usize,
    stride: usize,
}

impl BfMatrix {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let mut m = Self::default();
        m.reset(rows, cols);
        m
    }

    /// Reshapes to `rows × cols` of zeros, reusing the allocation when it is large enough.
    pub fn reset(&mut self, rows: usize, cols: usize) {
        self.rows = rows;
        self.cols = cols;
        self.stride = padded_stride(cols);
        self.data
            .clear_to(rows.next_multiple_of(BLOCK) * self.stride);
    }

    /// Reshapes to `rows × cols` for a producer that writes every real cell: only the padding is
    /// zeroed, so reusing a large buffer costs no memset of the whole of it. Real cells hold
    /// whatever the storage held before.
    pub fn reshape_for_overwrite(&mut self, rows: usize, cols: usize) {
        self.rows = rows;
        self.cols = cols;
        self.stride = padded_stride(cols);
        let stride = self.stride;
        self.data
            .resize_for_overwrite(rows.next_multiple_of(BLOCK) * stride);
        if stride > cols {
            for row in self.data[..rows * stride].chunks_exact_mut(stride) {
                row[cols..].fill(bf16::ZERO);
            }
        }
        self.data[rows * stride..].fill(bf16::ZERO);
    }

    /// `rows × cols` rounded from f32 (round to nearest even).
    pub fn from_f32(values: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            values.len(),
            rows * cols,
            "from_f32: {rows}×{cols} needs {} values",
            rows * cols
        );
        let mut m = Self::zeros(rows, cols);
        for (r, src) in values.chunks_exact(cols.max(1)).enumerate().take(rows) {
            f32_to_bf16(src, m.row_mut(r));
        }
        m
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub(crate) fn padded_mut(&mut self) -> &mut [bf16] {
        &mut self.data
    }

    /// Distance between rows, in elements.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Row `r`, its `cols` real elements only.
    pub fn row(&self, r: usize) -> &[bf16] {
        &self.data[r * self.stride..r * self.stride + self.cols]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [bf16] {
        &mut self.data[r * self.stride..r * self.stride + self.cols]
    }

    /// The real rows as `(stride)`-long chunks, for filling rows in parallel; only the first
    /// `cols` elements of each chunk may be written (the rest is padding and must stay zero).
    pub fn rows_mut(&mut self) -> std::slice::ChunksExactMut<'_, bf16> {
        let end = self.rows * self.stride;
        self.data[..end].chunks_exact_mut(self.stride.max(1))
    }

    /// [`Self::rows_mut`] as a rayon iterator.
    pub fn par_rows_mut(&mut self) -> rayon::slice::ChunksExactMut<'_, bf16> {
        use rayon::slice::ParallelSliceMut;
        let end = self.rows * self.stride;
        self.data[..end].par_chunks_exact_mut(self.stride.max(1))
    }

    /// All storage, padding included: `rows.next_multiple_of(32) × stride`.
    pub fn padded(&self) -> &[bf16] {
        &self.data
    }
}

/// Row stride for `cols` columns: whole 64-byte tile rows, plus one more when the stride would be
/// a multiple of 512 bytes. A tile load reads 16 rows at this stride; at 2 KB or 4 KB (K = 1024,
/// 2048) all of them would fall into the same few L1 sets and evict each other.
fn padded_stride(cols: usize) -> usize {
    let stride = cols.next_multiple_of(BLOCK);
    if stride.is_multiple_of(256) {
        stride + BLOCK
    } else {
        stride
    }
}

/// Rounds `src` to bf16 into `dst` (same length), nearest-even as torch's `.to(bfloat16)`.
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if crate::isa::avx512bf16_available() {
        // SAFETY: the CPU has AVX512-BF16 and AVX512F (checked above); lengths are equal.
        unsafe { f32_to_bf16_avx512(src, dst) };
        return;
    }
    round_all_at(Width::detect(), src, dst);
}

widest! {
    fn round_all_at(src: &[f32], dst: &mut [bf16]) = round_all;
}

#[inline(always)]
fn round_all(src: &[f32], dst: &mut [bf16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = round_bf16(*s);
    }
}

/// `bf16::from_f32` (nearest, ties to even; a NaN stays a NaN, quieted) without its branches,
/// so that a loop of it vectorizes.
#[inline(always)]
pub(crate) fn round_bf16(x: f32) -> bf16 {
    let bits = x.to_bits();
    // Adding just under half a unit of the last kept place, plus its lowest bit, carries into
    // that place exactly when the dropped half rounds up.
    let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    let quiet_nan = ((bits >> 16) | 0x40) as u16;
    bf16::from_bits(if x.is_nan() { quiet_nan } else { rounded })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw")]
unsafe fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16]) {
    use std::arch::x86_64::{__m256i, _mm256_storeu_si256, _mm512_cvtneps_pbh, _mm512_loadu_ps};
    let chunks = src.len() / 16;
    for i in 0..chunks {
        // SAFETY: i * 16 + 16 <= len for both slices; unaligned loads and stores.
        unsafe {
            let v = _mm512_loadu_ps(src.as_ptr().add(i * 16));
            let h = _mm512_cvtneps_pbh(v);
            _mm256_storeu_si256(
                dst.as_mut_ptr().add(i * 16).cast::<__m256i>(),
                std::mem::transmute::<std::arch::x86_64::__m256bh, __m256i>(h),
            );
        }
    }
    for i in chunks * 16..src.len() {
        dst[i] = bf16::from_f32(src[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_free_rounding_is_halfs_at_every_width() {
        let mut src = crate::test_values(1000, 11);
        for v in &mut src {
            *v *= 1e3;
        }
        // Ties both ways, the largest finite values (one rounds to infinity), subnormals,
        // signed zeros, infinities and NaNs with payloads.
        src.extend(
            [
                0x3F80_8000,
                0x3F81_8000,
                0xBF80_8000,
                0x3F80_8001,
                0x3F80_7FFF,
                0x7F7F_7FFF,
                0x7F7F_FFFF,
                0x0000_0001,
                0x8000_8000,
                0x0001_8000,
                0x0000_0000,
                0x8000_0000,
                0x7F80_0000,
                0xFF80_0000,
                0x7FC0_0000,
                0x7F80_0001,
                0xFF81_2345,
                0x7FFF_FFFF,
            ]
            .map(f32::from_bits),
        );
        let want: Vec<u16> = src.iter().map(|&s| bf16::from_f32(s).to_bits()).collect();
        for width in Width::available() {
            let mut dst = vec![bf16::ZERO; src.len()];
            round_all_at(width, &src, &mut dst);
            let got: Vec<u16> = dst.iter().map(|d| d.to_bits()).collect();
            assert_eq!(got, want, "{width:?}");
        }
    }

    #[test]
    fn padding_is_zero_and_rows_round_trip() {
        let values: Vec<f32> = (0..3 * 5).map(|i| i as f32 * 0.5).collect();
        let m = BfMatrix::from_f32(&values, 3, 5);
        assert_eq!((m.rows(), m.cols(), m.stride()), (3, 5, 32));
        assert_eq!(BfMatrix::zeros(1, 1024).stride(), 1056);
        assert_eq!(m.padded().len(), 32 * 32);
        assert_eq!(m.padded().as_ptr() as usize % 64, 0);
        assert_eq!(m.row(2)[4], bf16::from_f32(7.0));
        let nonzero = m.padded().iter().filter(|v| v.to_f32() != 0.0).count();
        assert_eq!(nonzero, 14, "only real cells (minus the one zero) are set");
    }

    #[test]
    fn reshaping_for_overwrite_zeroes_exactly_the_padding() {
        let mut m = BfMatrix::from_f32(&vec![1.5; 70 * 300], 70, 300);
        m.reshape_for_overwrite(33, 40);
        assert_eq!((m.rows(), m.cols(), m.stride()), (33, 40, 64));
        assert_eq!(m.padded().len(), 64 * 64);
        for (i, v) in m.padded().iter().enumerate() {
            let (r, c) = (i / 64, i % 64);
            if r >= 33 || c >= 40 {
                assert_eq!(v.to_bits(), 0, "padding cell ({r}, {c})");
            }
        }
    }

    #[test]
    fn rounding_matches_half_including_ties_and_specials() {
        let mut src: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.731).sin() * 1e3).collect();
        // Ties to even, subnormals, infinities, NaN.
        src.extend([
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
        ]);
        let mut dst = vec![bf16::ZERO; src.len()];
        f32_to_bf16(&src, &mut dst);
        for (s, d) in src.iter().zip(&dst) {
            assert_eq!(d.to_bits(), bf16::from_f32(*s).to_bits(), "{s:e}");
        }
        let mut nan = [bf16::ZERO; 17];
        f32_to_bf16(&[f32::NAN; 17], &mut nan);
        assert!(nan.iter().all(|v| v.is_nan()));
    }
}
