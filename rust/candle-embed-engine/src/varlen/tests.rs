//! The kernel's CPU model against plain f64 attention, on ragged batches, every head layout the
//! Qwen3 family uses and head sizes the kernel must mask around.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::*;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn ranges(lengths: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    lengths
        .iter()
        .map(|&len| {
            start += len;
            start - len..start
        })
        .collect()
}

struct Case {
    lengths: Vec<usize>,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

impl Case {
    fn tokens(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// q (scaled up so the softmax is far from uniform), k, v.
    fn inputs(&self, seed: u64) -> (Tensor, Tensor, Tensor) {
        let t = self.tokens();
        let q: Vec<f32> = values(t * self.heads * self.d, seed)
            .into_iter()
            .map(|x| 4.0 * x)
            .collect();
        let k = values(t * self.kv_heads * self.d, seed + 1);
        let v = values(t * self.kv_heads * self.d, seed + 2);
        let dev = &Device::Cpu;
        (
            Tensor::from_vec(q, (t, self.heads, self.d), dev).unwrap(),
            Tensor::from_vec(k, (t, self.kv_heads, self.d), dev).unwrap(),
            Tensor::from_vec(v, (t, self.kv_heads, self.d), dev).unwrap(),
        )
    }
}

/// Softmax attention in f64 for query `row` (a token of `seq`) and `head`.
#[allow(clippy::many_single_char_names)]
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    c: &Case,
    seq: &Range<usize>,
    row: usize,
    head: usize,
) -> Vec<f64> {
    let d = c.d;
    let kv_head = head / (c.heads / c.kv_heads);
    let qr = &q[(row * c.heads + head) * d..][..d];
    let scores: Vec<f64> = (seq.start..=row)
        .map(|key| {
            let kr = &k[(key * c.kv_heads + kv_head) * d..][..d];
            qr.iter()
                .zip(kr)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum::<f64>()
                / (d as f64).sqrt()
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    (0..d)
        .map(|col| {
            (seq.start..=row)
                .zip(&weights)
                .map(|(key, w)| w * f64::from(v[(key * c.kv_heads + kv_head) * d + col]))
                .sum::<f64>()
                / total
        })
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn cases() -> Vec<Case> {
    let ragged = vec![1, 7, 8, 9, 31, 32, 33, 70];
    vec![
        // Qwen3-Embedding-0.6B's layout: 16 query heads over 8 key/value heads, d = 128.
        Case {
            lengths: ragged.clone(),
            heads: 16,
            kv_heads: 8,
            d: 128,
        },
        // 4B / 8B: groups of 4.
        Case {
            lengths: vec![5, 40, 2],
            heads: 8,
            kv_heads: 2,
            d: 128,
        },
        // The fixtures' shapes: small heads the kernel masks lanes for, MQA and MHA.
        Case {
            lengths: ragged.clone(),
            heads: 4,
            kv_heads: 2,
            d: 32,
        },
        Case {
            lengths: ragged.clone(),
            heads: 4,
            kv_heads: 1,
            d: 16,
        },
        Case {
            lengths: ragged,
            heads: 2,
            kv_heads: 2,
            d: 16,
        },
        // Odd head size: the unpadded key stride.
        Case {
            lengths: vec![3, 65],
            heads: 2,
            kv_heads: 1,
            d: 33,
        },
        // One token alone.
        Case {
            lengths: vec![1],
            heads: 2,
            kv_heads: 1,
            d: 8,
        },
    ]
}

#[test]
fn every_row_matches_f64_attention() {
    for (i, case) in cases().iter().enumerate() {
        let (q, k, v) = case.inputs(i as u64);
        let seqs = ranges(&case.lengths);
        let out = flat(&attention(&q, &k, &v, &Plan::all_rows(seqs.clone())).unwrap());
        let (qf, kf, vf) = (flat(&q), flat(&k), flat(&v));
        let mut worst = 0.0f64;
        for seq in &seqs {
            for row in seq.clone() {
                for head in 0..case.heads {
                    let want = reference(&qf, &kf, &vf, case, seq, row, head);
                    let got = &out[(row * case.heads + head) * case.d..][..case.d];
                    for (g, w) in got.iter().zip(&want) {
                        worst = worst.max((f64::from(*g) - w).abs());
                    }
                }
            }
        }
        assert!(
            worst < 2e-5,
            "case {i}: max |diff| {worst:e} against f64 attention"
        );
    }
}

#[test]
fn last_rows_are_the_full_passes_last_rows_bit_for_bit() {
    for (i, case) in cases().iter().enumerate() {
        let (q, k, v) = case.inputs(10 + i as u64);
        let seqs = ranges(&case.lengths);
        let full = flat(&attention(&q, &k, &v, &Plan::all_rows(seqs.clone())).unwrap());
        let last = Tensor::new(
            seqs.iter().map(|s| (s.end - 1) as u32).collect::<Vec<_>>(),
            &Device::Cpu,
        )
        .unwrap();
        let q_last = q.index_select(&last, 0).unwrap();
        let pooled = flat(&attention(&q_last, &k, &v, &Plan::last_rows(seqs.clone())).unwrap());
        let width = case.heads * case.d;
        for (n, seq) in seqs.iter().enumerate() {
            assert_eq!(
                pooled[n * width..][..width],
                full[(seq.end - 1) * width..][..width],
                "case {i}, sequence {n}"
            );
        }
    }
}

#[test]
fn a_sequence_gets_the_same_bits_wherever_it_sits_in_the_batch() {
    let (heads, kv_heads, d) = (4, 2, 32);
    let alone_case = Case {
        lengths: vec![45],
        heads,
        kv_heads,
        d,
    };
    let (q, k, v) = alone_case.inputs(7);
    let alone = flat(&attention(&q, &k, &v, &Plan::all_rows(ranges(&[45]))).unwrap());
    for before in [1usize, 8, 13, 100] {
        let other = Case {
            lengths: vec![before, 3],
            heads,
            kv_heads,
            d,
        };
        let (oq, ok, ov) = other.inputs(99);
        let split = |t: &Tensor| {
            (
                t.narrow(0, 0, before).unwrap(),
                t.narrow(0, before, 3).unwrap(),
            )
        };
        let ((q0, q1), (k0, k1), (v0, v1)) = (split(&oq), split(&ok), split(&ov));
        // [other sequence, our sequence, a third one]
        let cat = |a: &Tensor, b: &Tensor, c: &Tensor| Tensor::cat(&[a, b, c], 0).unwrap();
        let packed = attention(
            &cat(&q0, &q, &q1),
            &cat(&k0, &k, &k1),
            &cat(&v0, &v, &v1),
            &Plan::all_rows(ranges(&[before, 45, 3])),
        )
        .unwrap();
        let ours = flat(&packed.narrow(0, before, 45).unwrap());
        assert_eq!(ours, alone, "after a {before}-token neighbour");
    }
}

#[test]
fn bf16_stays_within_bf16_rounding_of_f64() {
    let case = Case {
        lengths: vec![1, 9, 40],
        heads: 16,
        kv_heads: 8,
        d: 128,
    };
    let (q, k, v) = case.inputs(3);
    let (q, k, v) = (
        q.to_dtype(DType::BF16).unwrap(),
        k.to_dtype(DType::BF16).unwrap(),
        v.to_dtype(DType::BF16).unwrap(),
    );
    let seqs = ranges(&case.lengths);
    let out = attention(&q, &k, &v, &Plan::all_rows(seqs.clone())).unwrap();
    assert_eq!(out.dtype(), DType::BF16);
    let out = flat(&out);
    let (qf, kf, vf) = (flat(&q), flat(&k), flat(&v));
    for seq in &seqs {
        for row in seq.clone() {
            for head in 0..case.heads {
                let want = reference(&qf, &kf, &vf, &case, seq, row, head);
                let got = &out[(row * case.heads + head) * case.d..][..case.d];
                for (g, w) in got.iter().zip(&want) {
                    // One bf16 rounding of the output (8 bits of mantissa) plus f32 sums.
                    assert!(
                        (f64::from(*g) - w).abs() <= w.abs() / 256.0 + 1e-5,
                        "{g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn plans_cover_every_row_once_heaviest_first() {
    let seqs = ranges(&[1, 8, 9, 20]);
    let plan = Plan::all_rows(seqs.clone());
    let mut seen = [0; 38];
    for t in plan.tasks() {
        assert!((1..=WARPS as u32).contains(&t.rows));
        let seq = seqs
            .iter()
            .find(|s| s.contains(&(t.q_row as usize)))
            .unwrap();
        assert_eq!(t.first_key as usize, seq.start);
        assert_eq!(
            t.last_key, t.q_row,
            "a full pass's first row sees up to itself"
        );
        assert!(
            (t.q_row + t.rows) as usize <= seq.end,
            "a task stays in its sequence"
        );
        for r in t.q_row..t.q_row + t.rows {
            seen[r as usize] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1));
    let costs: Vec<u64> = plan.tasks().iter().map(|t| t.cost()).collect();
    assert!(costs.windows(2).all(|w| w[0] >= w[1]));

    let last = Plan::last_rows(seqs);
    let mut rows: Vec<_> = last
        .tasks()
        .iter()
        .map(|t| (t.q_row, t.first_key, t.last_key))
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, [(0, 0, 0), (1, 1, 8), (2, 9, 17), (3, 18, 37)]);
}

#[test]
fn shapes_the_kernel_cannot_hold_are_refused() {
    let dev = &Device::Cpu;
    let t = |shape: (usize, usize, usize)| Tensor::zeros(shape, DType::F32, dev).unwrap();
    let plan = Plan::all_rows(ranges(&[4]));
    let err = |q, k, v| attention(&q, &k, &v, &plan).unwrap_err().to_string();
    assert!(err(t((4, 2, 256)), t((4, 1, 256)), t((4, 1, 256))).contains("head_dim 256"));
    assert!(err(t((4, 3, 16)), t((4, 2, 16)), t((4, 2, 16))).contains("divisor"));
    assert!(err(t((4, 2, 16)), t((4, 1, 16)), t((4, 1, 8))).contains("must both be"));
    // A plan for more rows than the tensors hold would read past them.
    assert!(err(t((3, 2, 16)), t((3, 1, 16)), t((3, 1, 16))).contains("the tensors hold"));
}
