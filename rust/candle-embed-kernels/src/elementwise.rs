//! The row-wise f32 steps between the GEMMs, written so the compiler vectorizes them, and run at
//! the widest vectors the CPU has (`crate::widest`): RMSNorm, and SiLU(gate)·up with the
//! result rounded to bf16 for the down projection (or kept f32, on the f32 path).
//!
//! `exp` is our own (range reduction to 2ⁿ·eʳ, degree-6 polynomial, ~1 ulp): libm's is a scalar
//! call, and SiLU over `tokens × intermediate` values would otherwise cost as much as a GEMM.

use half::bf16;

use crate::matrix::{f32_to_bf16, round_bf16};
use crate::widest::{widest, Width};

/// `x · weight / sqrt(mean(x²) + eps)` in place, as the reference computes it in f32.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    assert_eq!(x.len(), weight.len(), "rms_norm: weight length");
    rms_norm_at(Width::detect(), x, weight, eps);
}

widest! {
    fn rms_norm_at(x: &mut [f32], weight: &[f32], eps: f32) = rms_norm_generic;
}

/// `dst = rope(rms_norm(src))` for one attention head: RMSNorm with `weight`, then the
/// rotate-half rotary embedding with one position's `cos` and `sin` (`src.len() / 2` each). The
/// same operations in the same order as [`rms_norm`] followed by the rotation, without the
/// intermediate copy, so the result is bit for bit theirs.
pub fn rms_norm_rope(
    src: &[f32],
    weight: &[f32],
    eps: f32,
    cos: &[f32],
    sin: &[f32],
    dst: &mut [f32],
) {
    let half = src.len() / 2;
    assert!(
        src.len().is_multiple_of(2)
            && weight.len() == src.len()
            && dst.len() == src.len()
            && cos.len() == half
            && sin.len() == half,
        "rms_norm_rope: head of {}, weight {}, cos/sin {}/{}, out {}",
        src.len(),
        weight.len(),
        cos.len(),
        sin.len(),
        dst.len()
    );
    rms_norm_rope_at(Width::detect(), src, weight, eps, cos, sin, dst);
}

widest! {
    fn rms_norm_rope_at(
        src: &[f32],
        weight: &[f32],
        eps: f32,
        cos: &[f32],
        sin: &[f32],
        dst: &mut [f32],
    ) = rms_norm_rope_generic;
}

/// `silu(gate) · up`, rounded to bf16 into `out` (all three the same length).
pub fn silu_mul_to_bf16(gate: &[f32], up: &[f32], out: &mut [bf16], scratch: &mut Vec<f32>) {
    assert!(gate.len() == up.len() && up.len() == out.len());
    scratch.resize(gate.len(), 0.0);
    silu_mul_at(Width::detect(), gate, up, scratch);
    f32_to_bf16(scratch, out);
}

widest! {
    fn silu_mul_at(gate: &[f32], up: &[f32], out: &mut [f32]) = silu_mul;
}

/// Rows the fused GEMM epilogue rounds into a buffer at a time, without AVX512-BF16.
const CHUNK: usize = 32;

/// The fused GEMM epilogue: `rows` rows of a 32-wide f32 block holding 16 gate then 16 up
/// values become `count` bf16 outputs per row at `out`, rows `ldo` apart.
///
/// # Safety
/// `block` holds `rows · 32` values; `out` has `rows` writable rows of `count ≤ 16` at `ldo`.
pub(crate) unsafe fn silu_mul_block(
    block: &[f32],
    rows: usize,
    out: *mut bf16,
    ldo: usize,
    count: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::isa::avx512bf16_available() {
        // SAFETY: the CPU has AVX512F/BW/VL/BF16; the rest is the caller's contract.
        unsafe { silu_mul_block_avx512(block, rows, out, ldo, count) };
        return;
    }
    // A chunk of rows at a time into a buffer, then their `count` outputs to their places.
    let mut act = [bf16::ZERO; CHUNK * 16];
    let width = Width::detect();
    for first in (0..rows).step_by(CHUNK) {
        let n = CHUNK.min(rows - first);
        silu_mul_rows_at(width, &block[first * 32..][..n * 32], &mut act[..n * 16]);
        for (i, act) in act[..n * 16].chunks_exact(16).enumerate() {
            // SAFETY: the caller's contract: row first + i has `count` writable outputs.
            unsafe {
                std::ptr::copy_nonoverlapping(act.as_ptr(), out.add((first + i) * ldo), count);
            }
        }
    }
}

widest! {
    /// Rows of 16 gate then 16 up values into rows of 16 bf16 outputs.
    fn silu_mul_rows_at(block: &[f32], out: &mut [bf16]) = silu_mul_rows;
}

/// [`silu_mul_block`] for the f32 path: the products stay f32.
///
/// # Safety
/// `block` holds `rows · 32` values; `out` has `rows` writable rows of `count ≤ 16` at `ldo`.
pub(crate) unsafe fn silu_mul_block_f32(
    block: &[f32],
    rows: usize,
    out: *mut f32,
    ldo: usize,
    count: usize,
) {
    let width = Width::detect();
    let mut act = [0f32; 16];
    for (i, row) in block[..rows * 32].chunks_exact(32).enumerate() {
        silu_mul_into_at(width, &row[..16], &row[16..], &mut act);
        // SAFETY: the caller's contract: row i has `count` writable outputs.
        unsafe { std::ptr::copy_nonoverlapping(act.as_ptr(), out.add(i * ldo), count) };
    }
}

widest! {
    fn silu_mul_into_at(gate: &[f32], up: &[f32], out: &mut [f32]) = silu_mul;
}

#[inline(always)]
fn silu_mul_rows(block: &[f32], out: &mut [bf16]) {
    for (row, out) in block.chunks_exact(32).zip(out.chunks_exact_mut(16)) {
        let (gate, up) = row.split_at(16);
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = round_bf16(silu(*g) * u);
        }
    }
}

/// With AVX512VL, which the 16-lane masked store of the result needs: without it the store
/// is a call per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
unsafe fn silu_mul_block_avx512(
    block: &[f32],
    rows: usize,
    out: *mut bf16,
    ldo: usize,
    count: usize,
) {
    use std::arch::x86_64::{
        __m256i, _mm256_mask_storeu_epi16, _mm512_cvtneps_pbh, _mm512_loadu_ps,
    };
    let mask = crate::first_lanes(count);
    let mut act = [0f32; 16];
    for i in 0..rows {
        let row = &block[i * 32..i * 32 + 32];
        silu_mul(&row[..16], &row[16..], &mut act);
        // SAFETY: 16 floats in `act`; the masked store writes `count` bf16 of row i.
        unsafe {
            let v = _mm512_loadu_ps(act.as_ptr());
            let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(out.add(i * ldo).cast(), mask, h);
        }
    }
}

#[inline(always)]
fn rms_norm_generic(x: &mut [f32], weight: &[f32], eps: f32) {
    let inv = inverse_rms(x, eps);
    for (v, w) in x.iter_mut().zip(weight) {
        *v = w * (*v * inv);
    }
}

/// `1 / sqrt(mean(x²) + eps)`.
#[inline(always)]
fn inverse_rms(x: &[f32], eps: f32) -> f32 {
    // Sixteen partial sums: lets the compiler vectorize the reduction.
    let mut partial = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for chunk in &mut chunks {
        for (p, v) in partial.iter_mut().zip(chunk) {
            *p += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    let sum = partial.iter().sum::<f32>() + tail;
    1.0 / (sum / x.len() as f32 + eps).sqrt()
}

#[inline(always)]
fn rms_norm_rope_generic(
    src: &[f32],
    weight: &[f32],
    eps: f32,
    cos: &[f32],
    sin: &[f32],
    dst: &mut [f32],
) {
    let inv = inverse_rms(src, eps);
    let half = src.len() / 2;
    let (src_lo, src_hi) = src.split_at(half);
    let (w_lo, w_hi) = weight.split_at(half);
    let (lo, hi) = dst.split_at_mut(half);
    // Zipped iterators rather than indexing: no bounds checks, so the loop vectorizes.
    let outputs = lo.iter_mut().zip(hi.iter_mut());
    let inputs = src_lo.iter().zip(src_hi).zip(w_lo.iter().zip(w_hi));
    for ((((lo, hi), ((&a, &b), (&wa, &wb))), &c), &s) in outputs.zip(inputs).zip(cos).zip(sin) {
        let a = wa * (a * inv);
        let b = wb * (b * inv);
        *lo = a * c - b * s;
        *hi = b * c + a * s;
    }
}

#[inline(always)]
fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(*g) * u;
    }
}

#[inline(always)]
fn silu(g: f32) -> f32 {
    g / (1.0 + exp(-g))
}

/// eˣ for f32, branch-free so it vectorizes; saturates near 0 below -87.3 and at e⁸⁸
/// above 88 (SiLU needs neither end precisely).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so n·ln2 is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // n as an integer, read from the mantissa bits (an `as i32` cast would not vectorize).
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor terms of eʳ on |r| ≤ ln2/2: error below 2^-24 relative.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((n_int + 127) << 23) as u32);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 0.000_37;
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert!(exp(-200.0) < 1e-37 && exp(-200.0) >= 0.0);
        assert!(exp(200.0).is_finite());
    }

    #[test]
    fn silu_and_rms_norm_match_plain_formulas() {
        let gate: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) * 0.37).collect();
        let up: Vec<f32> = (0..100).map(|i| (i as f32 * 0.11).sin()).collect();
        let mut out = vec![bf16::ZERO; 100];
        silu_mul_to_bf16(&gate, &up, &mut out, &mut Vec::new());
        for i in 0..100 {
            let want = gate[i] / (1.0 + (-gate[i]).exp()) * up[i];
            assert_eq!(out[i], bf16::from_f32(want), "{i}: {}", gate[i]);
        }
        let weight: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 * 0.01).collect();
        let mut x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).cos()).collect();
        let ms = x.iter().map(|v| v * v).sum::<f32>() / 37.0;
        let want: Vec<f32> = x
            .iter()
            .zip(&weight)
            .map(|(v, w)| w * (v / (ms + 1e-6).sqrt()))
            .collect();
        rms_norm(&mut x, &weight, 1e-6);
        for (g, w) in x.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}");
        }
    }

    /// Each width's build of a step against the portable one, bit for bit.
    #[test]
    fn every_width_gives_the_portable_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // 300 values: whole registers at every width and a ragged end.
        let x: Vec<f32> = crate::test_values(300, 21)
            .iter()
            .map(|v| v * 9.0)
            .collect();
        let w: Vec<f32> = crate::test_values(300, 22)
            .iter()
            .map(|v| 1.0 + v)
            .collect();
        let cos: Vec<f32> = crate::test_values(150, 23);
        let sin: Vec<f32> = crate::test_values(150, 24);
        let (mut norm, mut rope, mut silu) = (x.clone(), vec![0f32; 300], vec![0f32; 300]);
        let mut rows = vec![bf16::ZERO; 144];
        rms_norm_generic(&mut norm, &w, 1e-6);
        rms_norm_rope_generic(&x, &w, 1e-6, &cos, &sin, &mut rope);
        super::silu_mul(&x, &w, &mut silu);
        silu_mul_rows(&x[..288], &mut rows);
        for width in Width::available() {
            let mut got = x.clone();
            rms_norm_at(width, &mut got, &w, 1e-6);
            assert_eq!(bits(&got), bits(&norm), "rms_norm, {width:?}");
            rms_norm_rope_at(width, &x, &w, 1e-6, &cos, &sin, &mut got);
            assert_eq!(bits(&got), bits(&rope), "rms_norm_rope, {width:?}");
            silu_mul_at(width, &x, &w, &mut got);
            assert_eq!(bits(&got), bits(&silu), "silu_mul, {width:?}");
            let mut got = vec![bf16::ZERO; 144];
            silu_mul_rows_at(width, &x[..288], &mut got);
            assert_eq!(got, rows, "silu_mul_rows, {width:?}");
        }
        // And the rows are SiLU·up rounded, as the unfused steps give them.
        for (i, r) in rows.iter().enumerate() {
            let (row, j) = (i / 16, i % 16);
            let g = x[row * 32 + j];
            let want = bf16::from_f32(g / (1.0 + exp(-g)) * x[row * 32 + 16 + j]);
            assert_eq!(r.to_bits(), want.to_bits(), "row {row}, output {j}");
        }
    }

    #[test]
    fn fused_norm_and_rope_equal_norm_then_rotation_bitwise() {
        let dim = 128;
        let src: Vec<f32> = crate::test_values(dim, 3).iter().map(|v| v * 5.0).collect();
        let weight: Vec<f32> = crate::test_values(dim, 4).iter().map(|v| 1.0 + v).collect();
        let angles: Vec<f32> = (0..dim / 2)
            .map(|i| 37.0 / 1e4f32.powf(i as f32 / 64.0))
            .collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let mut want = src.clone();
        rms_norm(&mut want, &weight, 1e-6);
        let (lo, hi) = want.split_at_mut(dim / 2);
        for i in 0..dim / 2 {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
        let mut got = vec![0f32; dim];
        rms_norm_rope(&src, &weight, 1e-6, &cos, &sin, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }
}
