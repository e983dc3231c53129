//! Where the bf16 CPU forward pass spends its time: GEMM, attention, the rest, on packed batches
//! shaped like the end-to-end benchmark's corpus (log-normal lengths around a median of 60
//! tokens, 5 to 500, batches of at most 8192 tokens). Token ids are random: speed does not
//! depend on them.
//!
//!     python3 scripts/make_bench_model.py
//!     cargo run --release -p candle-embed-engine --example profile_bf16 -- bench-out/qwen3-0.6b-random [sequences]

use std::time::Duration;

use candle_embed_engine::cpu_bf16::{Model, Timings};
use candle_embed_engine::pack::{plan_batches, PackedBatch};
use candle_embed_engine::weights::{local_files, WeightReader};
use candle_embed_engine::Config;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .unwrap_or_else(|| "bench-out/qwen3-0.6b-random".into()),
    );
    let count: usize = args.next().map_or(Ok(256), |n| n.parse())?;
    let isa = match candle_embed_kernels::isa::select_bf16().map_err(anyhow::Error::msg)? {
        candle_embed_kernels::Selection::Bf16(isa) => isa,
        candle_embed_kernels::Selection::None => anyhow::bail!("no bf16 kernel on this CPU"),
    };
    let cfg = Config::from_file(&dir.join("config.json"))?;
    let model = Model::new(&cfg, &WeightReader::open(&local_files(&dir)?)?, isa)?;

    // Deterministic lengths: exp(N(ln 60, 0.8)) by Box-Muller over a 64-bit LCG.
    let mut state = 42u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let sequences: Vec<Vec<u32>> = (0..count)
        .map(|_| {
            let normal = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
            let len = (60.0 * (0.8 * normal).exp()).round().clamp(5.0, 500.0) as usize;
            (0..len).map(|_| (uniform() * 150_000.0) as u32).collect()
        })
        .collect();
    let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    let tokens: usize = lengths.iter().sum();

    // One warm-up pass on the first batch.
    let batches = plan_batches(&lengths, 8192);
    model.forward_last(&PackedBatch::new(&sequences[batches[0].clone()]));
    let mut sum = Timings::default();
    for group in batches {
        let (_, t) = model.forward_last_timed(&PackedBatch::new(&sequences[group]));
        sum.gemm += t.gemm;
        sum.attention += t.attention;
        sum.total += t.total;
    }
    let share = |d: Duration| 100.0 * d.as_secs_f64() / sum.total.as_secs_f64();
    let rest = sum.total.saturating_sub(sum.gemm + sum.attention);
    // Per token and layer: the qkv projection, then o_proj and the MLP, which the last layer
    // runs for each sequence's last token only.
    let gemm_flops = {
        let (h, d, i) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
        let (q, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let layers = cfg.num_hidden_layers as f64;
        let qkv = (h * (q + 2 * kv) * d) as f64 * tokens as f64 * layers;
        let rest_rows = tokens as f64 * (layers - 1.0) + count as f64;
        2.0 * (qkv + (q * d * h + 2 * h * i + i * h) as f64 * rest_rows)
    };
    println!(
        "{isa}: {count} sequences, {tokens} tokens in {:.2?}: {:.0} tokens/s",
        sum.total,
        tokens as f64 / sum.total.as_secs_f64()
    );
    println!(
        "  gemm {:.2?} ({:.0}%, {:.0} GFLOP/s)  attention {:.2?} ({:.0}%)  rest {:.2?} ({:.0}%)",
        sum.gemm,
        share(sum.gemm),
        gemm_flops / sum.gemm.as_secs_f64() / 1e9,
        sum.attention,
        share(sum.attention),
        rest,
        share(rest)
    );
    Ok(())
}
