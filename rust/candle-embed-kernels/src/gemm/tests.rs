//! Every GEMM kernel against f64 products: ragged shapes, single rows, threads, the fused
//! epilogue, row independence.

use super::*;

/// Runs `f` on a pool of one thread, so that a GEMM's rows make a single task.
fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(f)
}

fn values(count: usize, seed: u64) -> Vec<bf16> {
    crate::test_values(count, seed)
        .into_iter()
        .map(bf16::from_f32)
        .collect()
}

fn kernels() -> Vec<Kernel> {
    let mut all = vec![
        Kernel::Reference,
        Kernel::SoftAmx,
        Kernel::SoftAvx512Bf16,
        Kernel::SoftAvx512,
        Kernel::SoftAvx2,
    ];
    if Isa::Avx512.is_supported() {
        all.push(Kernel::Avx512);
    }
    if Isa::Avx512Bf16.is_supported() {
        all.push(Kernel::Avx512Bf16);
    }
    if Isa::Avx2.is_supported() {
        all.push(Kernel::Avx2);
    }
    if Isa::Amx.is_supported() {
        all.push(Kernel::Amx);
    }
    all
}

/// Runs `kernel` on an m×k by n×k problem and returns the largest error relative to the
/// f64 result, measured against Σ|a·w| (the scale f32 rounding of a sum works at).
fn check(kernel: Kernel, m: usize, n: usize, k: usize, accumulate: bool) {
    let (a_vals, w_vals) = (
        values(m * k, (m * 31 + k) as u64),
        values(n * k, (n * 17 + k) as u64),
    );
    let a = BfMatrix::from_f32(&a_vals.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, k);
    let w = PackedWeight::new(&w_vals, n, k);
    let ldc = n + 3;
    let start: Vec<f32> = (0..m * ldc).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut c = start.clone();
    run(kernel, &a, &w, &mut c, ldc, accumulate);
    let exact = f64_reference(&a_vals, &w_vals, m, n, k);
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert_eq!(
                    got.to_bits(),
                    start[i * ldc + j].to_bits(),
                    "{kernel:?} wrote outside C at ({i}, {j})"
                );
                continue;
            }
            let base = if accumulate {
                f64::from(start[i * ldc + j])
            } else {
                0.0
            };
            let want = base + exact[i * n + j];
            let magnitude: f64 = base.abs()
                + (0..k)
                    .map(|p| {
                        f64::from((a_vals[i * k + p].to_f32() * w_vals[j * k + p].to_f32()).abs())
                    })
                    .sum::<f64>();
            // Products of bf16 are exact in f32; only the f32 additions round, each by at
            // most 2^-24 of the running sum: k·2^-24·Σ|aw| bounds the error, 1e-6 rounds it up.
            let bound = (k as f64 * 6e-8).max(1e-6) * magnitude.max(1.0);
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "{kernel:?} {m}×{n}×{k} at ({i}, {j}): {got} vs {want}"
            );
        }
    }
}

#[test]
fn ragged_shapes_and_single_rows() {
    let shapes = [
        (1, 1, 1),
        (1, 32, 32),
        (1, 50, 70),
        (3, 17, 5),
        (16, 32, 64),
        (17, 33, 31),
        (32, 64, 96),
        (45, 40, 100),
        (130, 70, 64),
    ];
    for kernel in kernels() {
        for &(m, n, k) in &shapes {
            if kernel == Kernel::SoftAmx && m * n * k > 200_000 {
                continue;
            }
            check(kernel, m, n, k, false);
            check(kernel, m, n, k, true);
        }
    }
}

#[test]
fn larger_shapes_spread_over_threads() {
    for kernel in kernels().into_iter().filter(|k| *k != Kernel::SoftAmx) {
        check(kernel, 300, 200, 256, false);
        check(kernel, 257, 96, 1024, true);
    }
}

/// The model and the hardware agree bit for bit: same pairs, same f32 order per tile row
/// (within the precision the model assumes, checked loosely where they might differ).
#[test]
fn software_tiles_match_the_hardware() {
    if !Isa::Amx.is_supported() {
        return;
    }
    let (m, n, k) = (40, 48, 96);
    let a_vals = values(m * k, 1);
    let a = BfMatrix::from_f32(&a_vals.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, k);
    let w = PackedWeight::new(&values(n * k, 2), n, k);
    let (mut hw, mut soft) = (vec![0f32; m * n], vec![0f32; m * n]);
    run(Kernel::Amx, &a, &w, &mut hw, n, false);
    run(Kernel::SoftAmx, &a, &w, &mut soft, n, false);
    let worst = hw
        .iter()
        .zip(&soft)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "hardware and model differ by {worst}");
}

/// The `vdpbf16ps` lane model and the hardware give the same bits, single panels and pairs,
/// with and without accumulation.
#[test]
fn software_bf16_lanes_match_the_hardware() {
    if !Isa::Avx512Bf16.is_supported() {
        return;
    }
    for (m, n, k) in [(1, 40, 64), (13, 70, 96), (70, 180, 96), (100, 64, 1024)] {
        let a_f32: Vec<f32> = values(m * k, 41).iter().map(|v| v.to_f32()).collect();
        let a = BfMatrix::from_f32(&a_f32, m, k);
        let w = PackedWeight::new(&values(n * k, 42), n, k);
        for accumulate in [false, true] {
            let start: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32 - 2.0).collect();
            let (mut hw, mut soft) = (start.clone(), start);
            on_one_thread(|| {
                run(Kernel::Avx512Bf16, &a, &w, &mut hw, n, accumulate);
                run(Kernel::SoftAvx512Bf16, &a, &w, &mut soft, n, accumulate);
            });
            let same = hw
                .iter()
                .zip(&soft)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{m}×{n}×{k}, accumulate {accumulate}: model and hardware differ"
            );
        }
    }
}

#[test]
fn fused_silu_mul_matches_the_unfused_formula() {
    for kernel in kernels() {
        // The last shape's blocks hand their rows to the sink one per K block of the next
        // block (32 K blocks), across three row blocks and three panels.
        let shapes = [
            (1, 16, 32),
            (3, 40, 64),
            (17, 80, 48),
            (45, 96, 96),
            (70, 48, 1024),
        ];
        for &(m, inter, k) in &shapes {
            check_silu_mul(kernel, m, inter, k);
        }
    }
    // One task of 70 rows: AVX512-BF16 pairs the panels (5: two pairs and one left over; 3:
    // a pair and one, whose outputs end at 40).
    on_one_thread(|| {
        for kernel in kernels().into_iter().filter(|k| *k != Kernel::SoftAmx) {
            check_silu_mul(kernel, 70, 80, 96);
            check_silu_mul(kernel, 70, 40, 96);
        }
    });
}

fn check_silu_mul(kernel: Kernel, m: usize, inter: usize, k: usize) {
    let a_vals = values(m * k, 3);
    let (gate, up) = (values(inter * k, 4), values(inter * k, 5));
    let a = BfMatrix::from_f32(&a_vals.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, k);
    let w = PackedWeight::gate_up(&gate, &up, inter, k);
    let mut out = BfMatrix::default();
    out.reset(m, inter);
    let sink = Sink::SiluMul {
        out: out.padded_mut().as_mut_ptr(),
        ldo: out.stride(),
        n_out: inter,
    };
    run_into(kernel, &a, &w, sink);
    let (g, u) = (
        f64_reference(&a_vals, &gate, m, inter, k),
        f64_reference(&a_vals, &up, m, inter, k),
    );
    for i in 0..m {
        for j in 0..inter {
            let (gv, uv) = (g[i * inter + j], u[i * inter + j]);
            let want = gv / (1.0 + (-gv).exp()) * uv;
            let got = f64::from(out.row(i)[j].to_f32());
            // One bf16 rounding (2^-9 relative) plus f32 sums: 2^-8 of the value.
            assert!(
                (got - want).abs() <= want.abs() / 256.0 + 1e-5,
                "{kernel:?} {m}×{inter}×{k} ({i}, {j}): {got} vs {want}"
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn request_levels_are_the_x86_hints() {
    use std::arch::x86_64::{_MM_HINT_ET0, _MM_HINT_T0, _MM_HINT_T1};
    assert_eq!(
        (INTO_L1, INTO_L2, INTO_L1_FOR_WRITING),
        (_MM_HINT_T0, _MM_HINT_T1, _MM_HINT_ET0)
    );
}

/// The passes over a panel request every line of the next one, once; large tasks and a task's
/// last panel request none. In bf16 and in f32, whose panels are twice the lines.
#[test]
fn fetch_shares_cover_the_next_panel_once() {
    fetch_shares::<bf16>();
    fetch_shares::<f32>();
}

fn fetch_shares<E>() {
    let next = [0u8; 64];
    let base = next.as_ptr().cast::<E>();
    let per_block = 16 * lines_per_pair::<E>();
    for k_blocks in [1, 3, 32, 96] {
        for passes in 1..=MAX_FETCH_PASSES {
            let mut requested = Vec::new();
            for pass in 0..passes {
                let fetch = Fetch::new(Some(base), k_blocks, pass, passes);
                assert_eq!(fetch.own, pass == 0);
                for kb in 0..k_blocks {
                    for pair in 0..16 {
                        for line in fetch.next_lines(kb, pair).into_iter().flatten() {
                            requested.push((line as usize - base as usize) / 64);
                        }
                    }
                }
            }
            requested.sort_unstable();
            let lines = per_block * k_blocks;
            // Every line of the next panel, each once; rounding may add a few past its end.
            assert_eq!(
                requested[..lines],
                (0..lines).collect::<Vec<_>>(),
                "{k_blocks} K blocks, {passes} passes"
            );
            assert!(requested.windows(2).all(|w| w[0] < w[1]));
            assert!(requested.len() - lines < passes * k_blocks);
        }
        let many = Fetch::new(Some(base), k_blocks, 0, MAX_FETCH_PASSES + 1);
        assert!(many.own && many.next_lines(0, 0) == [None; 4]);
        assert_eq!(
            Fetch::<E>::new(None, k_blocks, 0, 1).next_lines(0, 0),
            [None; 4]
        );
    }
}

/// Tasks cover the rows once, in order, from 32-row block boundaries, within the cache bound,
/// a multiple of the threads where there are blocks enough, and within a block of each other.
#[test]
fn row_ranges_are_even_whole_blocks() {
    let cases = [
        (1, 256, 2),
        (16, 256, 2),
        (300, 256, 2),
        (1024, 160, 2),
        (1024, 256, 2),
        (1100, 256, 2),
        (1100, 256, 3),
        (8192, 160, 16),
        (33, 64, 8),
        (257, 256, 1),
    ];
    for (m, max_rows, threads) in cases {
        let ranges = row_ranges(m, max_rows, threads);
        let blocks = m.div_ceil(BLOCK);
        assert_eq!(ranges.first().unwrap().start, 0, "{m} {max_rows} {threads}");
        assert_eq!(ranges.last().unwrap().end, m, "{m} {max_rows} {threads}");
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        let sizes: Vec<usize> = ranges.iter().map(|r| r.len().div_ceil(BLOCK)).collect();
        assert!(
            ranges
                .iter()
                .all(|r| r.start % BLOCK == 0 && r.len() <= max_rows && !r.is_empty()),
            "{m} {max_rows} {threads}: {ranges:?}"
        );
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{m} {max_rows} {threads}: {ranges:?}"
        );
        assert!(
            ranges.len().is_multiple_of(threads) || ranges.len() == blocks,
            "{m} {max_rows} {threads}: {ranges:?}"
        );
    }
    assert_eq!(
        row_ranges(1024, 160, 2),
        (0..8).map(|t| 128 * t..128 * t + 128).collect::<Vec<_>>()
    );
}

/// A row's result is the same whatever rows surround it (batch invariance).
#[test]
fn rows_do_not_depend_on_their_neighbours() {
    let (n, k) = (96, 128);
    let w = PackedWeight::new(&values(n * k, 5), n, k);
    let row: Vec<f32> = values(k, 9).iter().map(|v| v.to_f32()).collect();
    for kernel in kernels() {
        let alone = BfMatrix::from_f32(&row, 1, k);
        let mut c1 = vec![0f32; n];
        run(kernel, &alone, &w, &mut c1, n, false);
        let m = 77;
        let mut many: Vec<f32> = values(m * k, 11).iter().map(|v| v.to_f32()).collect();
        many[50 * k..51 * k].copy_from_slice(&row);
        let batch = BfMatrix::from_f32(&many, m, k);
        let mut c2 = vec![0f32; m * n];
        run(kernel, &batch, &w, &mut c2, n, false);
        assert_eq!(c1, c2[50 * n..51 * n], "{kernel:?}");
    }
}

/// Tasks too large to request the next panel ahead take their panels two at a time on
/// AVX512-BF16: on one thread, 70 rows are one task of 9 eight-row passes. Pairs with a full
/// and a ragged second panel, a panel left over, accumulation, the fused epilogue, and each
/// row the same bits as when it is computed alone.
#[test]
fn large_tasks_pair_their_panels() {
    let (m, k): (usize, usize) = (70, 96);
    assert!(m.div_ceil(8) > MAX_FETCH_PASSES && row_chunk(Kernel::Avx512Bf16, k) >= m);
    on_one_thread(|| {
        for kernel in kernels().into_iter().filter(|k| *k != Kernel::SoftAmx) {
            for n in [180, 200] {
                check(kernel, m, n, k, false);
                check(kernel, m, n, k, true);
                let (a_vals, w_vals) = (values(m * k, 31), values(n * k, 32));
                let a_f32: Vec<f32> = a_vals.iter().map(|v| v.to_f32()).collect();
                let w = PackedWeight::new(&w_vals, n, k);
                let mut batch = vec![0f32; m * n];
                run(
                    kernel,
                    &BfMatrix::from_f32(&a_f32, m, k),
                    &w,
                    &mut batch,
                    n,
                    false,
                );
                for i in [0, 5, 6, 50, 69] {
                    let alone = BfMatrix::from_f32(&a_f32[i * k..(i + 1) * k], 1, k);
                    let mut c = vec![0f32; n];
                    run(kernel, &alone, &w, &mut c, n, false);
                    assert_eq!(c, batch[i * n..(i + 1) * n], "{kernel:?} n = {n}, row {i}");
                }
            }
        }
    });
}

/// `Σ_k a·w` one f32 FMA at a time in K order, from unpacked operands: the arithmetic the
/// widened kernels promise, in bf16 and in f32.
fn sequential_fma<E: Element>(a: &[E], w: &[E], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).fold(0f32, |sum, p| {
                a[i * k + p].to_f32().mul_add(w[j * k + p].to_f32(), sum)
            });
        }
    }
    c
}

/// The AVX2 and AVX-512F loops (on their 8- and 16-lane models, and on the hardware where the
/// CPU has it) give exactly the sequential FMA sums: same bits, any shape, any block edge. Rows
/// 1 to 25 meet every block height of both (a task's rows are shared out over its blocks); at
/// K = 2048 the 70 rows are three tasks of the widened kernels' row chunk (32, 32, 6).
#[test]
fn widened_kernels_are_the_sequential_fma_sums_bit_for_bit() {
    let mut widened = vec![Kernel::SoftAvx512, Kernel::SoftAvx2];
    for (isa, kernel) in [(Isa::Avx2, Kernel::Avx2), (Isa::Avx512, Kernel::Avx512)] {
        if isa.is_supported() {
            widened.push(kernel);
        }
    }
    let shapes = [
        (5, 70, 96),
        (13, 33, 64),
        (25, 64, 160),
        (40, 96, 32),
        (70, 40, 2048),
    ];
    for (m, n, k) in (1..=25).map(|m| (m, 40, 64)).chain(shapes) {
        let (a_vals, w_vals) = (values(m * k, 21), values(n * k, 22));
        let a = BfMatrix::from_f32(&a_vals.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, k);
        let w = PackedWeight::new(&w_vals, n, k);
        let want = sequential_fma(&a_vals, &w_vals, m, n, k);
        for &kernel in &widened {
            let mut c = vec![0f32; m * n];
            run(kernel, &a, &w, &mut c, n, false);
            let same = c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{kernel:?} {m}×{n}×{k} differs from the sequential FMA sums"
            );
        }
    }
}

/// The kernels with an f32 loop: the widened ones (on their models, and on the hardware where
/// the CPU has it) and the reference.
fn f32_kernels() -> Vec<Kernel> {
    let mut all = vec![Kernel::Reference, Kernel::SoftAvx512, Kernel::SoftAvx2];
    for (isa, kernel) in [(Isa::Avx2, Kernel::Avx2), (Isa::Avx512, Kernel::Avx512)] {
        if isa.is_supported() {
            all.push(kernel);
        }
    }
    all
}

/// The f32 GEMM, on every loop, is the sequential FMA sums bit for bit (so within f32 rounding
/// of the f64 products, checked too): every block height of both lane widths, ragged shapes,
/// tasks split over rows and over panels, accumulation into C, and nothing written past N.
/// The values carry full 24-bit mantissas, so no product is exact and a misplaced element or a
/// reordered sum would show.
#[test]
fn f32_kernels_are_the_sequential_fma_sums_bit_for_bit() {
    let shapes = [
        (5, 70, 96),
        (13, 33, 64),
        (17, 33, 31),
        (25, 64, 160),
        (40, 96, 32),
        (70, 40, 2048),
        (130, 70, 64),
    ];
    for (m, n, k) in (1..=25).map(|m| (m, 40, 64)).chain(shapes) {
        let a = crate::test_values(m * k, (m * 7 + k) as u64);
        let w_vals = crate::test_values(n * k, (n * 5 + k) as u64);
        let w = PackedWeight::new(&w_vals, n, k);
        let want = sequential_fma(&a, &w_vals, m, n, k);
        let exact: Vec<f64> = (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(w_vals[j * k + p]))
                    .sum()
            })
            .collect();
        // k rounded products and k rounded sums, each within 2^-24 of a value below k.
        for (got, exact) in want.iter().zip(&exact) {
            assert!((f64::from(*got) - exact).abs() <= 2.0 * k as f64 * 6e-8 * k as f64);
        }
        let a_rows = F32Rows {
            values: &a,
            rows: m,
            cols: k,
        };
        for kernel in f32_kernels() {
            let ldc = n + 3;
            let start: Vec<f32> = (0..m * ldc).map(|i| (i % 7) as f32 - 3.0).collect();
            for accumulate in [false, true] {
                let mut c = start.clone();
                run(kernel, &a_rows, &w, &mut c, ldc, accumulate);
                for i in 0..m {
                    for j in 0..ldc {
                        let (got, before) = (c[i * ldc + j], start[i * ldc + j]);
                        let want = match (j < n, accumulate) {
                            (false, _) => before,
                            (true, false) => want[i * n + j],
                            (true, true) => before + want[i * n + j],
                        };
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{kernel:?} {m}×{n}×{k} accumulate {accumulate} at ({i}, {j})"
                        );
                    }
                }
            }
        }
    }
}

/// An f32 row's result is the same alone and in a batch, on every f32 loop.
#[test]
fn f32_rows_do_not_depend_on_their_neighbours() {
    let (n, k, m) = (96, 128, 77);
    let w = PackedWeight::new(&crate::test_values(n * k, 5), n, k);
    let row = crate::test_values(k, 9);
    let mut many = crate::test_values(m * k, 11);
    many[50 * k..51 * k].copy_from_slice(&row);
    for kernel in f32_kernels() {
        let mut alone = vec![0f32; n];
        let one = F32Rows {
            values: &row,
            rows: 1,
            cols: k,
        };
        run(kernel, &one, &w, &mut alone, n, false);
        let mut batch = vec![0f32; m * n];
        let all = F32Rows {
            values: &many,
            rows: m,
            cols: k,
        };
        run(kernel, &all, &w, &mut batch, n, false);
        assert_eq!(alone, batch[50 * n..51 * n], "{kernel:?}");
    }
}

/// The public entry point: rows counted from A's length, the families without an f32 loop and
/// A of partial rows refused.
#[test]
fn gemm_f32_takes_whole_rows_and_the_f32_families() {
    let (n, k) = (40, 64);
    let w = PackedWeight::new(&crate::test_values(n * k, 3), n, k);
    let a = crate::test_values(3 * k, 4);
    let mut c = vec![0f32; 3 * n];
    gemm_f32(Isa::Reference, &a, &w, &mut c, n, false);
    assert_eq!(
        c,
        sequential_fma(&a, &crate::test_values(n * k, 3), 3, n, k)
    );
    let partial = std::panic::catch_unwind(|| {
        gemm_f32(
            Isa::Reference,
            &a[..=k],
            &w,
            &mut vec![0f32; 2 * n],
            n,
            false,
        );
    });
    assert!(partial.is_err());
    for isa in [Isa::Amx, Isa::Avx512Bf16] {
        assert_eq!(isa.for_f32(), Isa::Avx512);
        let refused = std::panic::catch_unwind(|| {
            gemm_f32(isa, &a, &w, &mut vec![0f32; 3 * n], n, false);
        });
        assert!(refused.is_err(), "{isa}");
    }
}

/// The f32 path's fused MLP epilogue, on every f32 loop: each output is `silu(g) · u` of the
/// sequential FMA sums of its gate and up columns, bit for bit, with an intermediate size that
/// leaves the last panel half empty; and a row alone gives the same bits as in a batch.
#[test]
fn f32_silu_mul_is_silu_of_the_sequential_sums() {
    let (m, inter, k) = (37, 40, 96);
    let a = crate::test_values(m * k, 13);
    let (gate, up) = (
        crate::test_values(inter * k, 14),
        crate::test_values(inter * k, 15),
    );
    let w = PackedWeight::gate_up(&gate, &up, inter, k);
    let (g, u) = (
        sequential_fma(&a, &gate, m, inter, k),
        sequential_fma(&a, &up, m, inter, k),
    );
    let want: Vec<f32> = g
        .iter()
        .zip(&u)
        .map(|(&g, &u)| g / (1.0 + crate::elementwise::exp(-g)) * u)
        .collect();
    for kernel in f32_kernels() {
        let mut out = vec![f32::NAN; m * inter];
        let a_rows = F32Rows {
            values: &a,
            rows: m,
            cols: k,
        };
        let sink = Sink::SiluMulF32 {
            out: out.as_mut_ptr(),
            ldo: inter,
            n_out: inter,
        };
        run_into(kernel, &a_rows, &w, sink);
        for (i, (got, want)) in out.iter().zip(&want).enumerate() {
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{kernel:?} at {i}: {got} vs {want}"
            );
        }
    }
    let mut alone = vec![0f32; inter];
    gemm_f32_silu_mul(Isa::Reference, &a[5 * k..6 * k], &w, inter, &mut alone);
    assert_eq!(alone, want[5 * inter..6 * inter]);
}
