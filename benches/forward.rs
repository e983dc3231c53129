//! Criterion benchmark of the forward pass on a packed batch, CPU, f32: as `dtype="f32"` runs it
//! (our decoder on the f32 loops, where the CPU has AVX2) and on candle's ops (CPUs without AVX2),
//! side by side.
//!
//! The model is a small Qwen3 (hidden 256, 4 layers, 8 query / 2 KV heads of 32, MLP 768) whose
//! weights are random, drawn in memory and written to a temporary checkpoint for our decoder to
//! read; the values do not change the work done. Throughput is reported in tokens per second.
//!
//!     cargo bench -p candle-embed-engine --bench forward
//!     cargo bench -p candle-embed-engine --bench forward -- --quick   # a fast look

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device};
use candle_embed_engine::cpu::{self, F32};
use candle_embed_engine::decoder::Decoder;
use candle_embed_engine::device::parse_compute;
use candle_embed_engine::model::{AttentionPath, Model};
use candle_embed_engine::pack::PackedBatch;
use candle_embed_engine::weights::WeightReader;
use candle_embed_engine::Config;
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const CONFIG: &str = r#"{
    "model_type": "qwen3",
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": true
}"#;

/// The f32 decoders of a model with weights drawn by candle-nn's default initializers (random
/// linears and embeddings, unit norms): candle's ops, and ours where this CPU has a family.
fn random_models(cfg: &Config) -> Vec<(&'static str, Box<dyn Decoder>)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let candle = Model::new(cfg, vb, AttentionPath::Blocked).expect("building the random model");
    let mut models: Vec<(&str, Box<dyn Decoder>)> = vec![("candle", Box::new(candle))];
    let ours = parse_compute("f32", &Device::Cpu)
        .expect("the f32 path on this CPU")
        .cpu_kernel;
    if let Some(isa) = ours {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("model.safetensors");
        varmap.save(&file).expect("writing the random checkpoint");
        let reader = WeightReader::open(&[file]).expect("reading it back");
        let model = cpu::Model::<F32>::new(cfg, &reader, isa).expect("packing the random model");
        models.insert(0, ("ours", Box::new(model)));
    }
    models
}

/// A deterministic stream of token ids below `vocab` (64-bit LCG; no RNG crate needed).
struct Ids {
    state: u64,
    vocab: u32,
}

impl Iterator for Ids {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        Some(((self.state >> 33) % u64::from(self.vocab)) as u32)
    }
}

/// Sequences of the given lengths filled with pseudo-random ids.
fn sequences(lengths: &[usize], vocab: usize) -> Vec<Vec<u32>> {
    let mut ids = Ids {
        state: 42,
        vocab: vocab as u32,
    };
    lengths
        .iter()
        .map(|&len| ids.by_ref().take(len).collect())
        .collect()
}

/// Batch shapes: one short query, a small mixed batch, and a 32-input batch whose lengths look
/// like a document corpus (mostly 20–120 tokens, a few long ones).
fn shapes() -> Vec<(&'static str, Vec<usize>)> {
    let mixed_8 = vec![64, 17, 120, 45, 90, 33, 71, 72];
    let mixed_32 = vec![
        12, 48, 60, 95, 23, 310, 57, 66, 8, 140, 52, 37, 61, 75, 29, 480, 44, 58, 103, 19, 63, 55,
        210, 41, 70, 5, 88, 49, 62, 34, 120, 59,
    ];
    vec![
        ("1x16", vec![16]),
        ("8_mixed", mixed_8),
        ("32_mixed", mixed_32),
    ]
}

fn forward(c: &mut Criterion) {
    let cfg: Config = serde_json::from_str(CONFIG).expect("valid bench config");
    let models = random_models(&cfg);
    let mut group = c.benchmark_group("forward_f32_cpu");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for (name, lengths) in shapes() {
        let batch = PackedBatch::new(&sequences(&lengths, cfg.vocab_size));
        group.throughput(Throughput::Elements(batch.total_tokens() as u64));
        for (decoder, model) in &models {
            let id = BenchmarkId::new(
                format!("{name}/{decoder}"),
                format!("{}tok", batch.total_tokens()),
            );
            group.bench_with_input(id, &batch, |b, batch| {
                b.iter(|| model.forward(black_box(batch)).expect("forward"));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
