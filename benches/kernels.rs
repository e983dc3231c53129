//! Criterion benchmarks of the bf16 kernels at Qwen3-Embedding-0.6B's real shapes, beside
//! candle's f32 matmul on the same problem. Throughput is reported as elements = FLOPs, so
//! criterion's "elem/s" reads as FLOP/s.
//!
//!     cargo bench -p candle-embed-kernels --bench kernels
//!     cargo bench -p candle-embed-kernels --bench kernels -- gemm/amx     # one kernel
//!     CANDLE_EMBED_BENCH_QUICK=1 cargo bench -p candle-embed-kernels --bench kernels -- --quick
//!
//! GEMM: M ∈ {16, 128, 512, 2048} tokens against (K→N) 1024→4096 (fused q/k/v), 2048→1024
//! (o_proj), 1024→6144 (fused gate/up) and 3072→1024 (down). Attention: one sequence of 128, 1k
//! and 8k tokens with 16 query heads, 8 K/V heads of 128.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use candle_embed_kernels::attention::{
    causal_attention, unprepared, AttentionBuffers, Heads, QkvRows,
};
use candle_embed_kernels::{gemm, BfMatrix, Isa, PackedWeight};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;

const ROWS: [usize; 4] = [16, 128, 512, 2048];
/// (name, K, N)
const SHAPES: [(&str, usize, usize); 4] = [
    ("qkv", 1024, 4096),
    ("o_proj", 2048, 1024),
    ("gate_up", 1024, 6144),
    ("down", 3072, 1024),
];

fn values(count: usize, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..count)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

fn kernels() -> Vec<Isa> {
    [Isa::Amx, Isa::Avx512Bf16, Isa::Avx2]
        .into_iter()
        .filter(|isa| isa.is_supported())
        .collect()
}

fn bench_gemm(c: &mut Criterion) {
    for (name, k, n) in SHAPES {
        let mut group = c.benchmark_group(format!("gemm/{name}_{k}x{n}"));
        group
            .measurement_time(Duration::from_secs(3))
            .sample_size(10);
        let w_f32 = values(n * k, 7);
        let w_bf16: Vec<bf16> = w_f32.iter().map(|v| bf16::from_f32(*v)).collect();
        let packed = PackedWeight::new(&w_bf16, n, k);
        let w_tensor = Tensor::from_vec(w_f32, (n, k), &Device::Cpu).unwrap();
        for m in ROWS {
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            let a_f32 = values(m * k, 3);
            let a = BfMatrix::from_f32(&a_f32, m, k);
            let mut out = candle_embed_kernels::AlignedVec::<f32>::zeroed(m * n);
            for isa in kernels() {
                group.bench_with_input(BenchmarkId::new(isa.name(), m), &m, |b, _| {
                    b.iter(|| gemm(isa, black_box(&a), &packed, &mut out, n, false));
                });
            }
            let a_tensor = Tensor::from_vec(a_f32, (m, k), &Device::Cpu).unwrap();
            group.bench_with_input(BenchmarkId::new("candle_f32", m), &m, |b, _| {
                b.iter(|| black_box(&a_tensor).matmul(&w_tensor.t().unwrap()).unwrap());
            });
        }
        group.finish();
    }
}

fn bench_attention(c: &mut Criterion) {
    let heads = Heads {
        q: 16,
        kv: 8,
        dim: 128,
    };
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    let mut group = c.benchmark_group("attention/q16_kv8_d128");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    for len in [128, 1024, 8192] {
        // Causal: half the L×L scores, two products (QKᵀ, PV) per score and dimension.
        let flops = 2 * len * len * heads.dim * heads.q;
        group.throughput(Throughput::Elements(flops as u64));
        let qkv = values(len * width, 11);
        let (mut out, mut buffers) = (BfMatrix::default(), AttentionBuffers::default());
        let one_sequence = std::iter::once(0..len).collect::<Vec<_>>();
        for isa in kernels() {
            group.bench_with_input(BenchmarkId::new(isa.name(), len), &len, |b, _| {
                b.iter(|| {
                    causal_attention(
                        isa,
                        heads,
                        QkvRows::All(black_box(&qkv)),
                        &one_sequence,
                        0.088,
                        &unprepared,
                        &mut buffers,
                        &mut out,
                    );
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_gemm, bench_attention);
criterion_main!(benches);
