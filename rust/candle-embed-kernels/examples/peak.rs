//! The machine's limits, measured: f32 FMA peak (GFLOP/s, one core and all) with the widest
//! vectors the CPU has; the `vdpbf16ps` peak on AVX512-BF16 CPUs; on AMX CPUs the `tdpbf16ps`
//! peak and the GEMM's 2×2-tile block with its tiles loaded from L1 and from L2; memory read
//! bandwidth (GB/s, one thread and all). Kernel figures are reported against these.
//!
//!     cargo run --release -p candle-embed-kernels --example peak

// Calls the FMA loops behind a feature check.
#![allow(unsafe_code)]
// Elsewhere than x86-64 only the memory bandwidth is measured.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::time::Instant;

use rayon::prelude::*;

/// Independent FMA chains: enough to cover the latency (4–5 cycles) of two FMA ports.
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_cvtss_f32, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_setzero_ps,
    };
    let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-4));
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for x in &mut acc {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
    _mm256_cvtss_f32(sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_set1_ps, _mm512_setzero_ps};
    let (a, b) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-4));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for x in &mut acc {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    sum_lanes(&acc)
}

/// Every lane of every chain summed: a result the compiler cannot drop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sum_lanes(chains: &[std::arch::x86_64::__m512]) -> f32 {
    use std::arch::x86_64::{_mm512_add_ps, _mm512_reduce_add_ps, _mm512_setzero_ps};
    let sum = chains
        .iter()
        .fold(_mm512_setzero_ps(), |s, &x| _mm512_add_ps(s, x));
    _mm512_reduce_add_ps(sum)
}

/// `vdpbf16ps` chains: each instruction is 16 lanes × 2 products and 2 adds, 64 FLOPs, the
/// count the FMA probes use for 32. Sixteen chains, as the AVX512-BF16 GEMM block keeps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn dpbf16_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::{
        __m512bh, __m512i, _mm512_dpbf16_ps, _mm512_set1_epi32, _mm512_setzero_ps,
    };
    // SAFETY: plain 512-bit values reinterpreted as bf16 pairs.
    let pairs = unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3F80_3F80)) };
    let mut acc = [_mm512_setzero_ps(); 16];
    for _ in 0..iters {
        for x in &mut acc {
            *x = _mm512_dpbf16_ps(*x, pairs, pairs);
        }
    }
    sum_lanes(&acc)
}

/// `ldtilecfg` operand: palette 1, all eight tiles 16 rows × 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

/// `tdpbf16ps` FLOPs of `iters` rounds of the 2×2 block (four 16×16×32 products): C in tiles 0–3,
/// A in 4–5, B in 6–7. With `src` the A and B tiles are loaded each round from `src`, walking it
/// 4 KiB at a time (its size picks the cache level); without, the products alone run.
#[cfg(target_arch = "x86_64")]
fn amx_rounds(iters: usize, src: Option<&[u8]>) -> f64 {
    use std::arch::asm;
    let mut cfg = TileConfig([0; 64]);
    cfg.0[0] = 1;
    for t in 0..8 {
        cfg.0[16 + 2 * t] = 64;
        cfg.0[48 + t] = 16;
    }
    // SAFETY: AMX was checked and granted by the caller; every tile load reads 16 rows of 64
    // bytes inside `src` (4 KiB steps over a buffer a multiple of 4 KiB long).
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tilezero tmm4",
            "tilezero tmm5",
            "tilezero tmm6",
            "tilezero tmm7",
            options(nostack, nomem)
        );
        match src {
            None => {
                for _ in 0..iters {
                    asm!(
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        options(nostack, nomem)
                    );
                }
            }
            Some(src) => {
                let steps = src.len() / 4096;
                for i in 0..iters {
                    let p = src.as_ptr().add((i % steps) * 4096);
                    asm!("tileloadd tmm4, [{p} + {s}*1]", "tileloadd tmm6, [{p} + {s}*1 + 1024]",
                         "tileloadd tmm7, [{p} + {s}*1 + 2048]",
                         "tdpbf16ps tmm0, tmm4, tmm6", "tdpbf16ps tmm1, tmm4, tmm7",
                         "tileloadd tmm5, [{p} + {s}*1 + 3072]",
                         "tdpbf16ps tmm2, tmm5, tmm6", "tdpbf16ps tmm3, tmm5, tmm7",
                         p = in(reg) p, s = in(reg) 64usize, options(nostack, readonly));
                }
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
    4.0 * 2.0 * 16.0 * 16.0 * 32.0 * iters as f64
}

/// TFLOP/s of `threads` threads running [`amx_rounds`], each over its own buffer of `bytes`.
#[cfg(target_arch = "x86_64")]
fn amx_peak(threads: usize, bytes: Option<usize>) -> f64 {
    let iters = 50_000_000;
    let buffers: Vec<Option<Vec<u8>>> = (0..threads)
        .map(|t| bytes.map(|b| (0..b + 64).map(|i| ((i + t) % 7) as u8).collect()))
        .collect();
    let mut best = 0f64;
    for _ in 0..3 {
        let started = Instant::now();
        let flops: f64 = buffers
            .par_iter()
            .map(|buffer| {
                // Tile rows on cache lines: start at the first 64-byte boundary.
                let src = buffer.as_ref().map(|b| {
                    let skip = b.as_ptr().align_offset(64);
                    &b[skip..skip + b.len() - 64]
                });
                amx_rounds(iters, src)
            })
            .sum();
        best = best.max(flops / started.elapsed().as_secs_f64() / 1e12);
    }
    best
}

/// GFLOP/s of `threads` threads each running FMA chains of `lanes`-wide vectors.
fn fma_peak(threads: usize, lanes: usize, run: fn(usize) -> f32) -> f64 {
    vector_peak(threads, 2 * CHAINS * lanes, run)
}

/// GFLOP/s of `threads` threads each running `run`, which does `flops` per iteration.
fn vector_peak(threads: usize, flops: usize, run: fn(usize) -> f32) -> f64 {
    let iters = 20_000_000;
    let started = Instant::now();
    let sums: Vec<f32> = (0..threads)
        .into_par_iter()
        .map(|_| std::hint::black_box(run(iters)))
        .collect();
    std::hint::black_box(sums);
    let flops = (iters * flops * threads) as f64;
    flops / started.elapsed().as_secs_f64() / 1e9
}

/// GB/s of `threads` threads summing their parts of a buffer far larger than the caches.
fn read_bandwidth(buffer: &[u64], threads: usize) -> f64 {
    let part = buffer.len() / threads;
    let mut best = 0f64;
    for _ in 0..5 {
        let started = Instant::now();
        let sum: u64 = buffer[..part * threads]
            .par_chunks(part)
            .map(|chunk| chunk.iter().fold(0u64, |s, &x| s.wrapping_add(x)))
            .sum();
        std::hint::black_box(sum);
        let bytes = (part * threads * 8) as f64;
        best = best.max(bytes / started.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// GB/s of one thread reading the buffer the way a GEMM kernel reads a packed panel: in 2 KiB
/// blocks, line `p` then line `16 + p` (two tiles side by side), with no prefetch requests. Set
/// beside the plain read, it shows what the hardware prefetcher makes of that order.
fn zigzag_bandwidth(buffer: &[u64]) -> f64 {
    let mut best = 0f64;
    for _ in 0..3 {
        let started = Instant::now();
        let mut sum = 0u64;
        for block in buffer.chunks_exact(256) {
            for p in 0..16 {
                for line in [
                    &block[8 * p..8 * p + 8],
                    &block[128 + 8 * p..128 + 8 * p + 8],
                ] {
                    sum = line.iter().fold(sum, |s, &x| s.wrapping_add(x));
                }
            }
        }
        std::hint::black_box(sum);
        best = best.max((buffer.len() / 256 * 2048) as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    best
}

fn main() {
    let cores = rayon::current_num_threads();
    println!("threads: {cores}");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were just detected.
            let run = |i| unsafe { fma_avx2(i) };
            println!(
                "FMA peak, 256-bit: {:.0} GFLOP/s one core, {:.0} all",
                fma_peak(1, 8, run),
                fma_peak(cores, 8, run)
            );
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX512F was just detected.
            let run = |i| unsafe { fma_avx512(i) };
            println!(
                "FMA peak, 512-bit: {:.0} GFLOP/s one core, {:.0} all",
                fma_peak(1, 16, run),
                fma_peak(cores, 16, run)
            );
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            // SAFETY: AVX512-BF16 (and so AVX-512F) was just detected.
            let run = |i| unsafe { dpbf16_avx512(i) };
            println!(
                "vdpbf16ps peak, 512-bit: {:.0} GFLOP/s one core, {:.0} all",
                vector_peak(1, 16 * 64, run),
                vector_peak(cores, 16 * 64, run)
            );
        }
        if candle_embed_kernels::Isa::Amx.is_supported() {
            println!(
                "AMX tdpbf16ps peak: {:.2} TFLOP/s one core, {:.2} all",
                amx_peak(1, None),
                amx_peak(cores, None)
            );
            for (level, bytes) in [("L1", 32 << 10), ("L2", 1 << 20)] {
                println!(
                    "AMX 2x2 block, every tile loaded from {level} ({} KiB): {:.2} TFLOP/s one \
                     core, {:.2} all",
                    bytes >> 10,
                    amx_peak(1, Some(bytes)),
                    amx_peak(cores, Some(bytes))
                );
            }
        }
    }
    // 1 GiB: far past any cache, and a tenth of what the machines here have.
    let buffer: Vec<u64> = (0..(1u64 << 27)).collect();
    println!(
        "memory read: {:.1} GB/s one thread, {:.1} all",
        read_bandwidth(&buffer, 1),
        read_bandwidth(&buffer, cores)
    );
    println!(
        "memory read in a packed panel's order, no prefetch requests: {:.1} GB/s one thread",
        zigzag_bandwidth(&buffer)
    );
}
