//! `cuda/varlen_attention.cu` run on the CPU, one simulated warp at a time: the same tasks, key
//! tiles, masks, f32 fused multiply-adds in the same order, streaming softmax and butterfly
//! reductions. Only `exp2` differs from the GPU's in the last bits. Blocks are independent, so
//! they run in parallel here as they do there.

// q, k, v, d, n: the kernel's names, kept so the two read side by side.
#![allow(clippy::many_single_char_names)]

use half::bf16;
use rayon::prelude::*;

use super::{KEYS, MAX_HEAD_DIM};

/// What every block of one call shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shapes {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `1/sqrt(d) * log2(e)`: scores are kept in log2 units, as the kernel keeps them.
    pub scale_log2: f32,
}

/// The element types the kernel reads and writes.
pub(crate) trait Element: Copy + Send + Sync + Default {
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
}

impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Element for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        // Round to nearest even, as `__float2bfloat16_rn`.
        bf16::from_f32(x)
    }
}

/// The kernel over every (task, head) block; `tasks` as [`super::Plan::words`] lays them out.
pub(crate) fn run<T: Element>(q: &[T], k: &[T], v: &[T], tasks: &[u32], s: Shapes) -> Vec<T> {
    assert!(s.head_dim <= MAX_HEAD_DIM && s.heads.is_multiple_of(s.kv_heads));
    let mut out = vec![T::default(); q.len()];
    let blocks: Vec<(usize, usize)> = (0..tasks.len() / 4)
        .flat_map(|t| (0..s.heads).map(move |h| (t, h)))
        .collect();
    let results: Vec<(usize, usize, Vec<f32>)> = blocks
        .par_iter()
        .map(|&(t, head)| {
            let task = &tasks[4 * t..4 * t + 4];
            (t, head, block(q, k, v, task, head, s))
        })
        .collect();
    let d = s.head_dim;
    for (t, head, rows) in results {
        let q_row = tasks[4 * t] as usize;
        for (r, values) in rows.chunks_exact(d).enumerate() {
            let at = ((q_row + r) * s.heads + head) * d;
            for (o, &x) in out[at..at + d].iter_mut().zip(values) {
                *o = T::from_f32(x);
            }
        }
    }
    out
}

/// One block: the task's rows for one query head, `rows × d` f32 results (before the store's
/// rounding).
fn block<T: Element>(q: &[T], k: &[T], v: &[T], task: &[u32], head: usize, s: Shapes) -> Vec<f32> {
    let [q_row, rows, first_key, last_key] =
        [task[0], task[1], task[2], task[3]].map(|x| x as usize);
    let d = s.head_dim;
    let kv_head = head / (s.heads / s.kv_heads);
    let qs: Vec<f32> = (0..rows * d)
        .map(|i| q[((q_row + i / d) * s.heads + head) * d + i % d].to_f32() * s.scale_log2)
        .collect();
    let key_end = last_key + rows;
    let mut out = vec![0.0f32; rows * d];

    for warp in 0..rows {
        let my_last = last_key + warp;
        let qr = &qs[warp * d..][..d];
        let (mut running_max, mut total) = (f32::NEG_INFINITY, 0.0f32);
        let mut acc = vec![0.0f32; d];
        let mut tile = first_key;
        while tile < key_end {
            let n = KEYS.min(key_end - tile);
            if tile > my_last {
                tile += KEYS;
                continue;
            }
            let kv = |j: usize, c: usize| ((tile + j) * s.kv_heads + kv_head) * d + c;
            let visible = |lane: usize| lane < n && tile + lane <= my_last;
            let scores: [f32; 32] = std::array::from_fn(|lane| {
                if visible(lane) {
                    (0..d).fold(0.0f32, |dot, c| qr[c].mul_add(k[kv(lane, c)].to_f32(), dot))
                } else {
                    f32::NEG_INFINITY
                }
            });
            let new_max = running_max.max(butterfly(scores, f32::max));
            let p: [f32; 32] = std::array::from_fn(|lane| {
                if visible(lane) {
                    (scores[lane] - new_max).exp2()
                } else {
                    0.0
                }
            });
            let rescale = (running_max - new_max).exp2();
            total = total * rescale + butterfly(p, |a, b| a + b);
            for a in &mut acc {
                *a *= rescale;
            }
            for (j, &pj) in p.iter().enumerate().take(n) {
                for (c, a) in acc.iter_mut().enumerate() {
                    *a = pj.mul_add(v[kv(j, c)].to_f32(), *a);
                }
            }
            running_max = new_max;
            tile += KEYS;
        }
        let inv = 1.0 / total;
        for (o, a) in out[warp * d..][..d].iter_mut().zip(&acc) {
            *o = a * inv;
        }
    }
    out
}

/// `__shfl_xor_sync` reduction over 32 lanes: every lane ends with the same value, lane 0's.
fn butterfly(mut lanes: [f32; 32], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut offset = 16;
    while offset > 0 {
        lanes = std::array::from_fn(|l| op(lanes[l], lanes[l ^ offset]));
        offset /= 2;
    }
    lanes[0]
}
