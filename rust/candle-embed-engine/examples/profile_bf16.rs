//! Where the CPU forward pass spends its time (bf16, or with `--f32` the exact path's f32):
//! GEMM, attention, the rest, on packed batches
//! shaped like the end-to-end benchmark's corpus (log-normal lengths around a median of 60
//! tokens, 5 to 500, batches of at most 8192 tokens), or with `--length L` every sequence L tokens
//! long (the benchmark's by-length corpora), or with `--query L` on one L-token sequence
//! forwarded alone, again and again (a short query's latency, set beside the time to read the
//! layers' bf16 weights once). Token ids are random: speed does not depend on them.
//! The decoder's `gemm` and `attention` tracing spans are timed by a small layer here; the
//! production path carries no timers.
//!
//!     python3 scripts/make_bench_model.py
//!     cargo run --release -p candle-embed-engine --example profile_bf16 -- bench-out/qwen3-0.6b-random [sequences]
//!     cargo run --release -p candle-embed-engine --example profile_bf16 -- bench-out/qwen3-0.6b-random 256 --length 16
//!     cargo run --release -p candle-embed-engine --example profile_bf16 -- bench-out/qwen3-0.6b-random --query 16
//!     cargo run --release -p candle-embed-engine --example profile_bf16 -- bench-out/qwen3-0.6b-random 128 --f32

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_embed_engine::cpu::{Bf16, Model, F32};
use candle_embed_engine::decoder::Decoder;
use candle_embed_engine::pack::{PackedBatch, TokenBudget};
use candle_embed_engine::weights::{local_files, WeightReader};
use candle_embed_engine::Config;
use candle_embed_kernels::attention::{flops, Heads};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Sums the time spent inside spans by span name, less the time of the spans of other names
/// inside them (attention's time without its q/k/v GEMMs).
#[derive(Default)]
struct SpanTimes {
    totals: Mutex<HashMap<&'static str, Duration>>,
    inner: Mutex<HashMap<&'static str, Duration>>,
}

struct Entered(Instant);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for &'static SpanTimes {
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Entered(Instant::now()));
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(Entered(at)) = span.extensions_mut().remove::<Entered>() {
                let elapsed = at.elapsed();
                *self.totals.lock().unwrap().entry(span.name()).or_default() += elapsed;
                if let Some(parent) = span.parent().filter(|p| p.name() != span.name()) {
                    *self.inner.lock().unwrap().entry(parent.name()).or_default() += elapsed;
                }
            }
        }
    }
}

/// What to run: the mixed corpus of `sequences` texts, `sequences` texts of `tokens` tokens each,
/// or one `tokens`-token text alone.
enum Workload {
    Corpus { sequences: usize },
    Length { sequences: usize, tokens: usize },
    Query { tokens: usize },
}

/// The workload's token ids, its batches and how many times they run.
fn inputs(workload: &Workload) -> (Vec<Vec<u32>>, Vec<std::ops::Range<usize>>, usize) {
    // Deterministic lengths: exp(N(ln 60, 0.8)) by Box-Muller over a 64-bit LCG.
    let mut state = 42u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    match *workload {
        Workload::Corpus { sequences } => {
            let sequences: Vec<Vec<u32>> = (0..sequences)
                .map(|_| {
                    let normal =
                        (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
                    let len = (60.0 * (0.8 * normal).exp()).round().clamp(5.0, 500.0) as usize;
                    (0..len).map(|_| (uniform() * 150_000.0) as u32).collect()
                })
                .collect();
            let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
            let batches = TokenBudget::new(8192).plan(&lengths);
            (sequences, batches, 1)
        }
        Workload::Length { sequences, tokens } => {
            let sequences: Vec<Vec<u32>> = (0..sequences)
                .map(|_| {
                    (0..tokens)
                        .map(|_| (uniform() * 150_000.0) as u32)
                        .collect()
                })
                .collect();
            let batches = TokenBudget::new(8192).plan(&vec![tokens; sequences.len()]);
            (sequences, batches, 1)
        }
        Workload::Query { tokens } => {
            let one = (0..tokens)
                .map(|_| (uniform() * 150_000.0) as u32)
                .collect();
            // 30 passes of a short query; a long one, as few as give a steady figure.
            let passes = (2048 / tokens.max(1)).clamp(3, 30);
            (vec![one], std::iter::once(0..1).collect(), passes)
        }
    }
}

/// The model directory, the workload and whether to run the f32 path, from
/// `[DIR] [SEQUENCES [--length L] | --query L] [--f32]`.
fn parse_args(mut args: Vec<String>) -> anyhow::Result<(std::path::PathBuf, Workload, bool)> {
    let f32 = args.iter().any(|a| a == "--f32");
    args.retain(|a| a != "--f32");
    let length = match args.iter().position(|a| a == "--length") {
        Some(at) => {
            let value = args.get(at + 1).map(|n| n.parse::<usize>());
            args.drain(at..(at + 2).min(args.len()));
            Some(value.ok_or_else(|| anyhow::anyhow!("--length takes a token count"))??)
        }
        None => None,
    };
    let dir = std::path::PathBuf::from(
        args.first()
            .map_or("bench-out/qwen3-0.6b-random", String::as_str),
    );
    let workload = match args.get(1).map(String::as_str) {
        Some("--query") => Workload::Query {
            tokens: args.get(2).map_or(Ok(16), |n| n.parse())?,
        },
        other => {
            let sequences = other.map_or(Ok(256), str::parse)?;
            match length {
                Some(tokens) => Workload::Length { sequences, tokens },
                None => Workload::Corpus { sequences },
            }
        }
    };
    Ok((dir, workload, f32))
}

fn main() -> anyhow::Result<()> {
    let times: &'static SpanTimes = Box::leak(Box::default());
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(times))?;

    let (dir, workload, f32) = parse_args(std::env::args().skip(1).collect())?;
    let isa = match candle_embed_kernels::isa::select().map_err(anyhow::Error::msg)? {
        candle_embed_kernels::Selection::Bf16(isa) if f32 => isa.for_f32(),
        candle_embed_kernels::Selection::Bf16(isa) => isa,
        candle_embed_kernels::Selection::None => anyhow::bail!("no kernel family on this CPU"),
    };
    let cfg = Config::from_file(&dir.join("config.json"))?;
    let reader = WeightReader::open(&local_files(&dir)?)?;
    let model: Box<dyn Decoder> = if f32 {
        Box::new(Model::<F32>::new(&cfg, &reader, isa)?)
    } else {
        Box::new(Model::<Bf16>::new(&cfg, &reader, isa)?)
    };
    let (precision, weight_size) = if f32 { ("f32", 4.0) } else { ("bf16", 2.0) };

    let (sequences, batches, passes) = inputs(&workload);
    let count = sequences.len() * passes;
    let tokens: usize = sequences.iter().map(Vec::len).sum::<usize>() * passes;

    // One warm-up pass on the first batch, then the clock and the span sums start from zero.
    model.forward(&PackedBatch::new(&sequences[batches[0].clone()]))?;
    times.totals.lock().unwrap().clear();
    times.inner.lock().unwrap().clear();
    let started = Instant::now();
    for _ in 0..passes {
        for group in &batches {
            model.forward(&PackedBatch::new(&sequences[group.clone()]))?;
        }
    }
    let total = started.elapsed();
    let spent = |name| {
        let total = times.totals.lock().unwrap().get(name).copied();
        let inner = times.inner.lock().unwrap().get(name).copied();
        total
            .unwrap_or_default()
            .saturating_sub(inner.unwrap_or_default())
    };
    let (gemm, attention) = (spent("gemm"), spent("attention"));
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
    let rest = total.saturating_sub(gemm + attention);
    // A layer's weights: the qkv projection, then o_proj and the MLP (gate, up, down).
    let (h, d, i) = (cfg.hidden_size, cfg.head_dim(), cfg.intermediate_size);
    let (q, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let (qkv_weights, rest_weights) = (
        ((q + 2 * kv) * d * h) as f64,
        (q * d * h + 3 * h * i) as f64,
    );
    let layers = cfg.num_hidden_layers as f64;
    // Every token goes through qkv in every layer; the last layer runs o_proj and the MLP for
    // each sequence's last token only.
    let gemm_flops = {
        let rest_rows = tokens as f64 * (layers - 1.0) + count as f64;
        2.0 * (qkv_weights * tokens as f64 * layers + rest_weights * rest_rows)
    };
    println!(
        "{isa} {precision}: {count} sequences, {tokens} tokens in {total:.2?}: {:.0} tokens/s",
        tokens as f64 / total.as_secs_f64()
    );
    // Attention's span includes storing Q, K and V as bf16 or f32 (with the norms and rotary
    // embedding), so its rate is of the whole step, not of the products alone.
    let attention_flops = {
        let heads = Heads { q, kv, dim: d };
        // Only the lengths count.
        let lengths: Vec<_> = sequences.iter().map(|s| 0..s.len()).collect();
        flops(heads, &lengths) * layers * passes as f64
    };
    println!(
        "  gemm {gemm:.2?} ({:.0}%, {:.0} GFLOP/s)  attention {attention:.2?} ({:.0}%, {:.0} \
         GFLOP/s)  rest {rest:.2?} ({:.0}%)",
        share(gemm),
        gemm_flops / gemm.as_secs_f64() / 1e9,
        share(attention),
        attention_flops / attention.as_secs_f64() / 1e9,
        share(rest)
    );
    if let Workload::Query { .. } = workload {
        // A short query cannot beat one read of the layers' weights (the embedding table is
        // only indexed): set the GEMMs' time beside it.
        let weight_bytes = weight_size * layers * (qkv_weights + rest_weights);
        let per_pass = total / passes as u32;
        println!(
            "  {per_pass:.2?} a query; its GEMMs read the layers' {:.2} GB of {precision} weights \
             at {:.1} GB/s",
            weight_bytes / 1e9,
            weight_bytes * passes as f64 / gemm.as_secs_f64() / 1e9
        );
    }
    Ok(())
}
