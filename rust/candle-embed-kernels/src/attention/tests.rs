//! Every kernel against f64 attention, against each other, and alone against packed.

use std::ops::Range;

use super::*;

/// Deterministic values in [-amp, amp).
fn values(count: usize, seed: u64, amp: f32) -> Vec<f32> {
    crate::test_values(count, seed)
        .into_iter()
        .map(|v| v * amp)
        .collect()
}

/// Random q, k, v for `lens` packed sequences; queries scaled by `sharp` (larger = peakier
/// softmax).
fn inputs(heads: Heads, lens: &[usize], seed: u64, sharp: f32) -> (Vec<f32>, Vec<Range<usize>>) {
    let tokens: usize = lens.iter().sum();
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    let mut qkv = values(tokens * width, seed, 1.0);
    for row in qkv.chunks_exact_mut(width) {
        row[..heads.q * heads.dim]
            .iter_mut()
            .for_each(|x| *x *= sharp);
    }
    let sequences = lens
        .iter()
        .scan(0, |at, len| {
            *at += len;
            Some(*at - len..*at)
        })
        .collect();
    (qkv, sequences)
}

/// Every kernel this CPU can run; the tile model only in the cheaper tests.
fn choices(with_model: bool) -> Vec<Kernel> {
    let mut all = vec![Kernel::Reference];
    if Isa::Avx2.is_supported() {
        all.push(Kernel::Avx2);
    }
    if Isa::Avx512.is_supported() {
        all.push(Kernel::Avx512);
    }
    if Isa::Avx512Bf16.is_supported() {
        all.push(Kernel::Avx512Bf16);
        if with_model {
            all.push(Kernel::SoftAmx);
        }
    }
    if Isa::Amx.is_supported() {
        all.push(Kernel::Amx);
    }
    all
}

/// Every public kernel family this CPU can run, the reference first.
fn runnable_isas() -> impl Iterator<Item = Isa> {
    let all = [
        Isa::Reference,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];
    all.into_iter().filter(|isa| isa.is_supported())
}

/// [`causal_attention`] (bf16) on `kernel`, which may be a software model.
#[allow(clippy::too_many_arguments)]
fn attend(
    kernel: Kernel,
    heads: Heads,
    qkv: QkvRows<'_>,
    sequences: &[Range<usize>],
    scale: f32,
    prepare: Prepare<'_>,
    buffers: &mut AttentionBuffers,
    out: &mut BfMatrix,
) {
    Call::new(kernel, heads, sequences, scale, prepare).bf16(qkv, buffers, out);
}

fn run(choice: Kernel, heads: Heads, qkv: &[f32], sequences: &[Range<usize>]) -> BfMatrix {
    let mut out = BfMatrix::zeros(3, 5);
    let scale = 1.0 / (heads.dim as f32).sqrt();
    let mut buffers = AttentionBuffers::default();
    attend(
        choice,
        heads,
        QkvRows::All(qkv),
        sequences,
        scale,
        &unprepared,
        &mut buffers,
        &mut out,
    );
    out
}

/// The exact path's kernels this CPU can run, the reference first.
fn f32_choices() -> Vec<Kernel> {
    let mut all = vec![Kernel::Reference];
    if Isa::Avx2.is_supported() {
        all.push(Kernel::Avx2);
    }
    if Isa::Avx512.is_supported() {
        all.push(Kernel::Avx512);
    }
    all
}

/// [`causal_attention_f32`] on `kernel`, rows prepared by `prepare`, with fresh buffers.
fn run_f32(
    kernel: Kernel,
    heads: Heads,
    qkv: QkvRows<'_>,
    sequences: &[Range<usize>],
    prepare: Prepare<'_>,
) -> AlignedVec<f32> {
    let mut out = AlignedVec::default();
    out.resize(7);
    let scale = 1.0 / (heads.dim as f32).sqrt();
    Call::new(kernel, heads, sequences, scale, prepare).f32(
        qkv,
        &mut AttentionBuffers::default(),
        &mut out,
    );
    out
}

/// Largest |kernel − f64| over the output, divided by max |v|.
fn relative_error(choice: Kernel, heads: Heads, lens: &[usize], sharp: f32) -> f64 {
    error_of(heads, lens, sharp, |qkv, sequences| {
        let out = run(choice, heads, qkv, sequences);
        assert_eq!(out.cols(), heads.q * heads.dim);
        (0..out.rows())
            .flat_map(|t| out.row(t).iter().map(|x| x.to_f32()))
            .collect()
    })
}

/// [`relative_error`] of the exact path.
fn relative_error_f32(kernel: Kernel, heads: Heads, lens: &[usize], sharp: f32) -> f64 {
    error_of(heads, lens, sharp, |qkv, sequences| {
        run_f32(kernel, heads, QkvRows::All(qkv), sequences, &unprepared).to_vec()
    })
}

/// Largest |`attention` − f64| over the output (`tokens × q·dim`), divided by max |v|, on
/// random inputs for `lens`.
fn error_of(
    heads: Heads,
    lens: &[usize],
    sharp: f32,
    attention: impl FnOnce(&[f32], &[Range<usize>]) -> Vec<f32>,
) -> f64 {
    let seed = lens.len() as u64 * 7 + heads.dim as u64;
    let (qkv, sequences) = inputs(heads, lens, seed, sharp);
    let out = attention(&qkv, &sequences);
    let exact = f64_reference(heads, &qkv, &sequences, 1.0 / (heads.dim as f32).sqrt());
    assert_eq!(out.len(), exact.len());
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    let v_max = qkv
        .chunks_exact(width)
        .flat_map(|row| &row[(heads.q + heads.kv) * heads.dim..])
        .fold(0f32, |m, v| m.max(v.abs()));
    let worst = out
        .iter()
        .zip(&exact)
        .map(|(&got, want)| (f64::from(got) - want).abs())
        .fold(0f64, f64::max);
    worst / f64::from(v_max)
}

const fn heads(q: usize, kv: usize, dim: usize) -> Heads {
    Heads { q, kv, dim }
}

/// Head dims 16, 32 and 128 (the model's), and 20 (padded inside the pair and tile
/// layouts); groups of 1, 2, 4 and 8 query heads per K/V head.
const SHAPES: [Heads; 7] = [
    heads(1, 1, 16),
    heads(2, 2, 32),
    heads(4, 2, 32),
    heads(8, 2, 16),
    heads(8, 1, 32),
    heads(4, 1, 128),
    heads(2, 1, 20),
];

/// Every shape, the `lens` batches and two softmax sharpnesses: each `error(shape, lens,
/// sharp)` (× max|v|) of `kernel` at most `bound`; returns the worst.
fn worst_error(
    kernel: &str,
    lens: &[&[usize]],
    bound: f64,
    error: impl Fn(Heads, &[usize], f32) -> f64,
) -> f64 {
    let mut worst = 0f64;
    for heads in SHAPES {
        for lens in lens {
            for sharp in [1.0, 4.0] {
                let err = error(heads, lens, sharp);
                worst = worst.max(err);
                assert!(
                    err <= bound,
                    "{kernel} {heads:?} {lens:?} sharp {sharp}: error {err:.2e} × max|v|"
                );
            }
        }
    }
    worst
}

#[test]
fn matches_f64_attention() {
    let lens: [&[usize]; 5] = [&[1], &[1, 1, 1], &[5], &[33], &[17, 1, 64, 200]];
    for choice in choices(true) {
        // Q, K, V, P and the output are each rounded to bf16 (2^-9 relative): scores move by
        // ~|s|·2^-8, the output by ~2^-8 of max|v| from each rounding; measured worst 5.7e-3,
        // so 1e-2 leaves room to spare.
        let name = format!("{choice:?}");
        let worst = worst_error(&name, &lens, 1e-2, |heads, lens, sharp| {
            relative_error(choice, heads, lens, sharp)
        });
        eprintln!("{name}: worst error {worst:.2e} × max|v|");
    }
}

#[test]
fn long_sequence_matches_f64_attention() {
    let heads = heads(2, 1, 128);
    for choice in choices(false) {
        let err = relative_error(choice, heads, &[700], 4.0);
        // As above (measured 4.5e-3).
        assert!(err <= 1e-2, "{choice:?}: error {err:.2e} × max|v|");
        eprintln!("{choice:?}: 700 tokens, error {err:.2e} × max|v|");
    }
}

/// The AVX512-BF16 and AVX2 kernels do the reference's operations in the same order
/// (products of bf16 are exact in f32, so `vdpbf16ps` and an FMA round where the reference's
/// add does; the odd product is added first; the exp2 polynomial is the same fused chain),
/// so they agree with it bit for bit. The AMX kernel sums a
/// 32-wide dot product in the tiles' own order and takes its softmax steps 64 keys at a
/// time, so its probabilities are rounded relative to other maxima: a probability can
/// differ by a bf16 step (2^-9 relative) and an output by a bf16 step or two.
#[test]
fn kernels_agree() {
    for heads in SHAPES {
        let (qkv, sequences) = inputs(heads, &[17, 1, 64, 200], 3, 4.0);
        let reference = run(Kernel::Reference, heads, &qkv, &sequences);
        for choice in choices(true) {
            let out = run(choice, heads, &qkv, &sequences);
            if matches!(
                choice,
                Kernel::Reference | Kernel::Avx512Bf16 | Kernel::Avx2 | Kernel::Avx512
            ) {
                assert_eq!(out.padded(), reference.padded(), "{choice:?} {heads:?}");
                continue;
            }
            let worst = out
                .padded()
                .iter()
                .zip(reference.padded())
                .map(|(a, b)| (a.to_f32() - b.to_f32()).abs())
                .fold(0f32, f32::max);
            // |v| < 1, so outputs are below 1 and one bf16 step there is 2^-8 at most;
            // measured worst 2^-8. A wrong index or mask would be off by far more.
            eprintln!("{choice:?} {heads:?}: differs from the reference by {worst:.2e}");
            assert!(worst <= 2.0f32.powi(-7), "{choice:?} {heads:?}: {worst:e}");
        }
    }
}

/// A sequence's rows are the same alone and packed between others.
#[test]
fn sequences_do_not_depend_on_their_neighbours() {
    let heads = heads(4, 2, 32);
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    let (a, b, c) = (45, 70, 9);
    let (all, _) = inputs(heads, &[b, a, c], 5, 2.0);
    let alone = &all[b * width..(b + a) * width];
    for choice in choices(true) {
        let single = run(choice, heads, alone, std::slice::from_ref(&(0..a)));
        let packed = run(choice, heads, &all, &[0..b, b..b + a, b + a..b + a + c]);
        for t in 0..a {
            assert_eq!(single.row(t), packed.row(b + t), "{choice:?} row {t}");
        }
    }
}

/// Preparing rows while packing equals preparing `qkv` beforehand, bit for bit, with the
/// token index passed being the row's; buffers reused across calls of other shapes.
#[test]
fn prepare_applies_to_each_row_as_packed() {
    let heads = heads(4, 2, 32);
    let (qkv, sequences) = inputs(heads, &[37, 5, 64], 9, 1.0);
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    // Something token-dependent and not linear, on q and k only.
    let change =
        |token: usize, x: f32, i: usize| (x * (1.0 + token as f32 * 0.01) + i as f32 * 1e-3).sin();
    let prepare = |token: usize, row: &[f32], qk: &mut [f32]| {
        for (i, (out, &x)) in qk.iter_mut().zip(row).enumerate() {
            *out = change(token, x, i);
        }
    };
    let mut before = qkv.clone();
    for (token, row) in before.chunks_exact_mut(width).enumerate() {
        for (i, x) in row[..(heads.q + heads.kv) * heads.dim]
            .iter_mut()
            .enumerate()
        {
            *x = change(token, *x, i);
        }
    }
    let isa = crate::isa::best().unwrap_or(Isa::Reference);
    let mut buffers = AttentionBuffers::default();
    let mut expected = BfMatrix::default();
    let (other, other_sequences) = inputs(heads, &[100], 3, 1.0);
    causal_attention(
        isa,
        heads,
        QkvRows::All(&other),
        &other_sequences,
        0.2,
        &unprepared,
        &mut buffers,
        &mut expected,
    );
    causal_attention(
        isa,
        heads,
        QkvRows::All(&before),
        &sequences,
        0.2,
        &unprepared,
        &mut buffers,
        &mut expected,
    );
    let mut prepared = BfMatrix::default();
    causal_attention(
        isa,
        heads,
        QkvRows::All(&qkv),
        &sequences,
        0.2,
        &prepare,
        &mut buffers,
        &mut prepared,
    );
    assert_eq!(expected.padded(), prepared.padded());
}

/// Rows made and packed group by group give the bits of all rows at once, with every group
/// whole sequences of at least the group size (the last excepted).
#[test]
fn grouped_rows_give_the_same_bits() {
    let heads = heads(4, 2, 32);
    let lens = [37, 5, 64, 1, 90, 33];
    let (qkv, sequences) = inputs(heads, &lens, 4, 1.0);
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    let prepare = |token: usize, row: &[f32], qk: &mut [f32]| {
        for (out, &x) in qk.iter_mut().zip(row) {
            *out = x * (1.0 + token as f32 * 0.01);
        }
    };
    for kernel in choices(true) {
        let mut buffers = AttentionBuffers::default();
        let mut all = BfMatrix::default();
        attend(
            kernel,
            heads,
            QkvRows::All(&qkv),
            &sequences,
            0.2,
            &prepare,
            &mut buffers,
            &mut all,
        );
        for group_tokens in [1, 40, 100, 1000] {
            let mut groups = Vec::new();
            let mut compute = |tokens: Range<usize>, rows: &mut AlignedVec<f32>| {
                rows.resize_for_overwrite(tokens.len() * width);
                rows.copy_from_slice(&qkv[tokens.start * width..tokens.end * width]);
                groups.push(tokens);
            };
            let (mut rows, mut grouped) = (AlignedVec::default(), BfMatrix::default());
            attend(
                kernel,
                heads,
                QkvRows::Grouped {
                    group_tokens,
                    compute: &mut compute,
                    rows: &mut rows,
                },
                &sequences,
                0.2,
                &prepare,
                &mut buffers,
                &mut grouped,
            );
            assert_eq!(
                all.padded(),
                grouped.padded(),
                "{kernel:?}, groups of {group_tokens}"
            );
            let covered: Vec<usize> = groups.iter().flat_map(Clone::clone).collect();
            assert_eq!(covered, (0..lens.iter().sum()).collect::<Vec<_>>());
            for (i, group) in groups.iter().enumerate() {
                assert!(sequences.iter().any(|s| s.start == group.start));
                assert!(sequences.iter().any(|s| s.end == group.end));
                assert!(i + 1 == groups.len() || group.len() >= group_tokens);
            }
        }
    }
}

/// The exact path against f64 attention: nothing is rounded to bf16, so the error is f32's.
#[test]
fn f32_matches_f64_attention() {
    let lens: [&[usize]; 5] = [&[1], &[1, 1, 1], &[5], &[33], &[17, 1, 64, 200, 700]];
    for kernel in f32_choices() {
        // f32 sums of up to 128 products (2^-24 each step) and the exp2 polynomial's 2e-7:
        // measured worst 7.0e-7 × max|v|, against 5.7e-3 for the bf16 kernels. Rounding P to
        // bf16 alone exceeds this bound 100-fold.
        let name = format!("f32 {kernel:?}");
        let worst = worst_error(&name, &lens, 2e-6, |heads, lens, sharp| {
            relative_error_f32(kernel, heads, lens, sharp)
        });
        eprintln!("{name}: worst error {worst:.2e} × max|v|");
    }
}

/// The widened loops do the f32 reference's operations in its order, so they agree bit for
/// bit; and a sequence's rows do not depend on what it is packed with.
#[test]
fn f32_kernels_agree_and_sequences_stand_alone() {
    for heads in SHAPES {
        let lens = [45, 70, 9, 1, 33];
        let (qkv, sequences) = inputs(heads, &lens, 3, 4.0);
        let reference = run_f32(
            Kernel::Reference,
            heads,
            QkvRows::All(&qkv),
            &sequences,
            &unprepared,
        );
        let (width, cols) = ((heads.q + 2 * heads.kv) * heads.dim, heads.q * heads.dim);
        for kernel in f32_choices() {
            let out = run_f32(kernel, heads, QkvRows::All(&qkv), &sequences, &unprepared);
            assert_eq!(&out[..], &reference[..], "{kernel:?} {heads:?}");
            let seq = &sequences[1];
            let alone = run_f32(
                kernel,
                heads,
                QkvRows::All(&qkv[seq.start * width..seq.end * width]),
                std::slice::from_ref(&(0..seq.len())),
                &unprepared,
            );
            assert_eq!(
                &alone[..],
                &out[seq.start * cols..seq.end * cols],
                "{kernel:?} {heads:?}: alone"
            );
        }
    }
}

/// In f32 too, rows made and prepared group by group give the bits of all rows prepared at
/// once.
#[test]
fn f32_grouped_rows_give_the_same_bits() {
    let heads = heads(4, 2, 32);
    let lens = [37, 5, 64, 1, 90, 33];
    let (qkv, sequences) = inputs(heads, &lens, 4, 1.0);
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    let prepare = |token: usize, row: &[f32], qk: &mut [f32]| {
        for (out, &x) in qk.iter_mut().zip(row) {
            *out = x * (1.0 + token as f32 * 0.01);
        }
    };
    for kernel in f32_choices() {
        let all = run_f32(kernel, heads, QkvRows::All(&qkv), &sequences, &prepare);
        let mut compute = |tokens: Range<usize>, rows: &mut AlignedVec<f32>| {
            rows.resize_for_overwrite(tokens.len() * width);
            rows.copy_from_slice(&qkv[tokens.start * width..tokens.end * width]);
        };
        let mut rows = AlignedVec::default();
        let grouped = QkvRows::Grouped {
            group_tokens: 40,
            compute: &mut compute,
            rows: &mut rows,
        };
        let grouped = run_f32(kernel, heads, grouped, &sequences, &prepare);
        assert_eq!(&all[..], &grouped[..], "{kernel:?}");
    }
}

#[test]
fn empty_input_gives_empty_output() {
    let heads = heads(2, 1, 16);
    for isa in runnable_isas() {
        let mut out = BfMatrix::zeros(3, 5);
        let mut buffers = AttentionBuffers::default();
        causal_attention(
            isa,
            heads,
            QkvRows::All(&[]),
            &[],
            0.25,
            &unprepared,
            &mut buffers,
            &mut out,
        );
        assert_eq!((out.rows(), out.cols()), (0, 32));
        let mut out = AlignedVec::default();
        out.resize(5);
        causal_attention_f32(
            isa,
            heads,
            QkvRows::All(&[]),
            &[],
            0.25,
            &unprepared,
            &mut AttentionBuffers::default(),
            &mut out,
        );
        assert!(out.is_empty());
    }
}

/// Seconds a call of `run` takes: a warm-up call (thread pool, buffers), then about a second of
/// calls of `work` FLOPs; one call where that is minutes (`slow`: the reference on long
/// sequences).
fn seconds_per_call(work: f64, slow: bool, mut run: impl FnMut()) -> f64 {
    let repeats = if slow {
        1
    } else {
        run();
        (4e11 / work).clamp(3.0, 200.0) as usize
    };
    let start = std::time::Instant::now();
    for _ in 0..repeats {
        run();
    }
    start.elapsed().as_secs_f64() / repeats as f64
}

/// GFLOP/s at Qwen3-Embedding-0.6B's attention shape (16 query heads, 8 K/V heads of 128),
/// for single sequences and a batch of short texts:
/// `cargo test --release -p candle-embed-kernels attention::tests::throughput -- --ignored
/// --nocapture` (`CANDLE_EMBED_CPU_KERNEL=amx` etc. times one kernel only; the reference
/// takes minutes on the longest sequence).
#[test]
#[ignore = "timing, run in release"]
fn throughput() {
    let heads = heads(16, 8, 128);
    let only = std::env::var(crate::KERNEL_ENV).ok();
    let cases: [(&str, Vec<usize>); 4] = [
        ("1 × 128", vec![128]),
        ("1 × 1024", vec![1024]),
        ("1 × 8192", vec![8192]),
        ("32 × 60", vec![60; 32]),
    ];
    for (name, lens) in cases {
        let (qkv, sequences) = inputs(heads, &lens, 1, 1.0);
        let work = flops(heads, &sequences);
        for isa in runnable_isas() {
            if only.as_deref().is_some_and(|name| name != isa.name()) {
                continue;
            }
            let (mut out, mut buffers) = (BfMatrix::default(), AttentionBuffers::default());
            let run = || {
                causal_attention(
                    isa,
                    heads,
                    QkvRows::All(&qkv),
                    &sequences,
                    0.088,
                    &unprepared,
                    &mut buffers,
                    &mut out,
                );
            };
            let secs = seconds_per_call(work, isa == Isa::Reference && work > 1e10, run);
            eprintln!(
                "{name:>9} tokens {isa:>10}: {:7.1} GFLOP/s ({:.3} ms, {} threads)",
                work / secs / 1e9,
                secs * 1e3,
                rayon::current_num_threads()
            );
        }
        // The exact path, on the f32 loops.
        for isa in [Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() || only.as_deref().is_some_and(|name| name != isa.name()) {
                continue;
            }
            let (mut out, mut buffers) = (AlignedVec::default(), AttentionBuffers::default());
            let run = || {
                causal_attention_f32(
                    isa,
                    heads,
                    QkvRows::All(&qkv),
                    &sequences,
                    0.088,
                    &unprepared,
                    &mut buffers,
                    &mut out,
                );
            };
            let secs = seconds_per_call(work, false, run);
            eprintln!(
                "{name:>9} tokens {:>10}: {:7.1} GFLOP/s ({:.3} ms)",
                format!("{isa} f32"),
                work / secs / 1e9,
                secs * 1e3,
            );
        }
    }
}
