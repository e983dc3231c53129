//! Best-of-N GFLOP/s of the bf16 GEMM at the 0.6B shapes, for quick tuning runs (criterion's
//! `benches/kernels.rs` is the reference benchmark).
//!
//!     cargo run --release -p candle-embed-kernels --example gemm_gflops [amx|avx512bf16]

use std::time::Instant;

use candle_embed_kernels::{gemm, BfMatrix, Isa, PackedWeight};
use half::bf16;

fn main() {
    let isa = match std::env::args().nth(1).as_deref() {
        Some("avx512bf16") => Isa::Avx512Bf16,
        Some("reference") => Isa::Reference,
        _ => Isa::Amx,
    };
    for (name, k, n) in [
        ("qkv", 1024, 4096),
        ("o_proj", 2048, 1024),
        ("gate_up", 1024, 6144),
        ("down", 3072, 1024),
    ] {
        let w: Vec<bf16> = (0..n * k)
            .map(|i| bf16::from_f32(((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
            .collect();
        let w = PackedWeight::new(&w, n, k);
        print!("{isa} {name:8}");
        for m in [1, 16, 128, 512, 1024, 2048, 8192] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104_729) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let a = BfMatrix::from_f32(&a, m, k);
            let mut c = candle_embed_kernels::AlignedVec::<f32>::zeroed(m * n);
            let reps = (4e10 / (2.0 * (m * n * k) as f64)).clamp(3.0, 200.0) as usize;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..reps {
                    gemm(isa, &a, &w, &mut c, n, false);
                }
                best = best.min(t.elapsed().as_secs_f64() / reps as f64);
            }
            print!("  M={m}: {:6.0}", 2.0 * (m * n * k) as f64 / best / 1e9);
        }
        println!("  GFLOP/s");
    }
}
