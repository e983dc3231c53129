//! The portable attention kernel: scalar code that fixes the arithmetic the vector kernels
//! reproduce.

use half::bf16;

use super::kernel::{exp2, Pass, PassKernel};
use super::pack::unpair;
use super::{KEYS, LANES};

/// Portable kernel with the AVX512-BF16 kernel's arithmetic: each bf16 pair product added odd
/// element first, as `vdpbf16ps` does, and the same softmax steps; the two agree bit for bit.
pub(super) struct Reference;

impl PassKernel for Reference {
    const ROWS: usize = 8;

    fn pass(&mut self, pass: &mut Pass<'_>) {
        pass.check(Self::ROWS);
        let dp = pass.dp;
        for r in 0..Self::ROWS {
            let q = &pass.q[r * pass.q_stride..][..dp];
            let valid = pass.valid[r];
            let mut scores = [f32::NEG_INFINITY; KEYS];
            for (key, score) in scores.iter_mut().enumerate().take(valid) {
                let mut s = 0f32;
                for p in 0..dp / 2 {
                    let (even, odd) = unpair(pass.k[0][p * KEYS + key]);
                    s += q[2 * p + 1].to_f32() * odd;
                    s += q[2 * p].to_f32() * even;
                }
                *score = s;
            }
            // c > 0, so the largest scaled score is the largest score, scaled.
            let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) * pass.c;
            let m = pass.m[r].max(top);
            let alpha = exp2(pass.m[r] - m);
            pass.m[r] = m;
            let mut p = [0f32; KEYS];
            for (p, s) in p.iter_mut().zip(&scores).take(valid) {
                *p = bf16::from_f32(exp2(s.mul_add(pass.c, -m))).to_f32();
            }
            for (lane, l) in pass.l[r * LANES..(r + 1) * LANES].iter_mut().enumerate() {
                let sum = p[lane] + p[lane + LANES];
                *l = if pass.first {
                    sum
                } else {
                    l.mul_add(alpha, sum)
                };
            }
            let o = &mut pass.o[r * dp..(r + 1) * dp];
            for (d, o) in o.iter_mut().enumerate() {
                let mut acc = if pass.first { 0.0 } else { *o * alpha };
                for j in 0..KEYS / 2 {
                    let (even, odd) = unpair(pass.v[0][j * dp + d]);
                    acc += p[2 * j + 1] * odd;
                    acc += p[2 * j] * even;
                }
                *o = acc;
            }
        }
    }
}
