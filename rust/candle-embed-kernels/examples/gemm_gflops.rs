//! Best-of-N GFLOP/s of the bf16 GEMM at the 0.6B shapes, for quick tuning runs, with our f32
//! GEMM (`dtype="f32"` where the CPU has AVX2) and candle's f32 matmul (its GEMM elsewhere) on
//! the same problem beside it (criterion's
//! `benches/kernels.rs` is the reference benchmark). The `cold` rows run small batches over
//! 256 MiB of distinct copies of the weight, as a forward pass meets its layers: from memory,
//! not from the last-level cache, and add the weight bytes read per second.
//!
//!     cargo run --release -p candle-embed-kernels --example gemm_gflops [amx|avx512bf16|avx512|avx2|reference]
//!
//! Without an argument: the kernel `dtype="auto"` uses on this CPU.

use std::fmt::Write;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_embed_kernels::{gemm, gemm_f32, BfMatrix, Isa, PackedWeight};
use half::bf16;

/// Seconds per call of `f`, best of 5 rounds of `reps` calls.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

fn main() -> candle_core::Result<()> {
    let isa = match std::env::args().nth(1).as_deref() {
        Some("avx512bf16") => Isa::Avx512Bf16,
        Some("avx512") => Isa::Avx512,
        Some("avx2") => Isa::Avx2,
        Some("amx") => Isa::Amx,
        Some("reference") => Isa::Reference,
        _ => candle_embed_kernels::isa::best().unwrap_or(Isa::Reference),
    };
    for (name, k, n) in [
        ("qkv", 1024, 4096),
        ("o_proj", 2048, 1024),
        ("gate_up", 1024, 6144),
        ("down", 3072, 1024),
    ] {
        let w_f32: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w_bf: Vec<bf16> = w_f32.iter().map(|&v| bf16::from_f32(v)).collect();
        let w = PackedWeight::new(&w_bf, n, k);
        let w32 = PackedWeight::new(&w_f32, n, k);
        let w_t = Tensor::from_vec(w_f32, (n, k), &Device::Cpu)?.t()?;
        let (mut ours, mut ours_f32, mut theirs) = (String::new(), String::new(), String::new());
        for m in [1, 16, 128, 512, 2048] {
            let a_f32: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let a = BfMatrix::from_f32(&a_f32, m, k);
            let a_t = Tensor::from_vec(a_f32.clone(), (m, k), &Device::Cpu)?;
            let mut c = candle_embed_kernels::AlignedVec::<f32>::zeroed(m * n);
            let flops = 2.0 * (m * n * k) as f64;
            let reps = (2e10 / flops).clamp(2.0, 100.0) as usize;
            let t = best_of(reps, || gemm(isa, &a, &w, &mut c, n, false));
            let t_f32 = best_of(reps, || {
                gemm_f32(isa.for_f32(), &a_f32, &w32, &mut c, n, false);
            });
            let t_candle = best_of(reps, || {
                a_t.matmul(&w_t).unwrap();
            });
            write!(ours, "  M={m}: {:6.0}", flops / t / 1e9).unwrap();
            write!(ours_f32, "  M={m}: {:6.0}", flops / t_f32 / 1e9).unwrap();
            write!(theirs, "  M={m}: {:6.0}", flops / t_candle / 1e9).unwrap();
        }
        println!("{name:8} {isa:>10} {ours}  GFLOP/s");
        let f32_name = format!("{} f32", isa.for_f32());
        println!("{name:8} {f32_name:>10} {ours_f32}  GFLOP/s");
        println!("{name:8} {:>10} {theirs}  GFLOP/s", "candle f32");

        let copies: Vec<PackedWeight> = (0..(256 << 20) / (2 * n * k))
            .map(|c| {
                let w: Vec<bf16> = w_bf
                    .iter()
                    .map(|&v| v * bf16::from_f32(1.0 + c as f32 / 1024.0))
                    .collect();
                PackedWeight::new(&w, n, k)
            })
            .collect();
        let mut cold = String::new();
        for m in [1, 16, 64] {
            let a = BfMatrix::from_f32(&vec![0.25; m * k], m, k);
            let mut c = candle_embed_kernels::AlignedVec::<f32>::zeroed(m * n);
            let t = best_of(1, || {
                for w in &copies {
                    gemm(isa, &a, w, &mut c, n, false);
                }
            }) / copies.len() as f64;
            let (flops, bytes) = (2.0 * (m * n * k) as f64, (2 * n * k) as f64);
            write!(
                cold,
                "  M={m}: {:4.0} ({:4.1} GB/s)",
                flops / t / 1e9,
                bytes / t / 1e9
            )
            .unwrap();
        }
        println!("{name:8} {:>10} {cold}  GFLOP/s", "cold");
    }
    Ok(())
}
