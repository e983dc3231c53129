//! The portable attention kernel: scalar code that fixes the arithmetic the vector kernels
//! reproduce.

use super::kernel::{exp2, Pass, PassKernel};
use super::Stored;
use super::{KEYS, LANES};

/// Portable kernel with the AVX512-BF16 kernel's arithmetic: each pair product added odd
/// element first, as `vdpbf16ps` does, and the same softmax steps; the two agree bit for bit.
/// In f32 it fixes the exact path's arithmetic the same way: the same order, each product
/// rounded with its sum (a fused multiply-add; with bf16 inputs the product is exact, so that
/// changes nothing there), probabilities not rounded.
pub(super) struct Reference;

const ROWS: usize = 8;

impl<E: Stored> PassKernel<E> for Reference {
    const ROWS: usize = ROWS;

    fn pass(&mut self, pass: &mut Pass<'_, E>) {
        pass.check(ROWS);
        let dp = pass.dp;
        for r in 0..ROWS {
            let q = &pass.q[r * pass.q_stride..][..dp];
            let q = |d: usize| q[d].to_f32();
            let valid = pass.valid[r];
            let mut scores = [f32::NEG_INFINITY; KEYS];
            for (key, score) in scores.iter_mut().enumerate().take(valid) {
                let mut s = 0f32;
                for p in 0..dp / 2 {
                    let (even, odd) = E::key_pair(pass.k[0], p, key);
                    s = q(2 * p + 1).mul_add(odd, s);
                    s = q(2 * p).mul_add(even, s);
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
                *p = E::from_f32(exp2(s.mul_add(pass.c, -m))).to_f32();
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
                    let (even, odd) = E::value_pair(pass.v[0], j, d, dp);
                    acc = p[2 * j + 1].mul_add(odd, acc);
                    acc = p[2 * j].mul_add(even, acc);
                }
                *o = acc;
            }
        }
    }
}
