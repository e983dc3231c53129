//! The GPU's decoder (candle's ops with bf16 weights and matmuls, f32 residual side, varlen
//! attention) run on the CPU, against the fixtures' transformers recordings: the bf16 arithmetic
//! the GPU does, checked on machines without one. Only cuBLAS is missing (candle's CPU bf16 matmul
//! stands in). On a GPU, tests/test_gpu.py holds the real thing to the same yardstick.

use std::path::Path;

use candle_core::{DType, Device};
use candle_embed_engine::model::{AttentionPath, Model};
use candle_embed_engine::pack::PackedBatch;
use candle_embed_engine::{weights, Config, Decoder, ModelSource};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
const MODELS: [&str; 3] = ["gqa-bf16", "mqa-f16-prefix", "mha-f32-sharded"];
const BF16_FLOOR: f64 = 1e-2;

fn load(model: &str, dtype: DType) -> Model {
    let files = ModelSource::new(format!("{FIXTURES}/models/{model}"))
        .resolve()
        .unwrap();
    let config = Config::from_file(&files.config).unwrap();
    let (vb, _) = weights::var_builder(&files.weights, dtype, &Device::Cpu).unwrap();
    Model::new(&config, vb, AttentionPath::Varlen).unwrap()
}

fn rows(value: &Value) -> Vec<Vec<f64>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The model card's finishing: Matryoshka cut, then L2 normalization unless turned off.
fn finish(row: &[f32], request: &Value) -> Vec<f64> {
    let dims = request["dimensions"]
        .as_u64()
        .map_or(row.len(), |d| d as usize);
    let cut: Vec<f64> = row[..dims].iter().map(|&x| f64::from(x)).collect();
    if request["normalize"].as_bool() == Some(false) {
        return cut;
    }
    let norm = cut.iter().map(|x| x * x).sum::<f64>().sqrt();
    cut.iter().map(|x| x / norm).collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Every case of `model` through the decoder in `dtype`: (ours, transformers bf16) max |diff|
/// from the f32 reference, per case.
fn errors(model: &str, dtype: DType) -> Vec<(String, f64, f64)> {
    let decoder = load(model, dtype);
    let text = std::fs::read_to_string(Path::new(FIXTURES).join(format!("expected/{model}.json")))
        .unwrap();
    let recording: Value = serde_json::from_str(&text).unwrap();
    recording["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let ids: Vec<Vec<u32>> = serde_json::from_value(case["token_ids"].clone()).unwrap();
            let pooled = decoder.forward(&PackedBatch::new(&ids)).unwrap();
            let ours: Vec<Vec<f64>> = (0..pooled.rows())
                .map(|i| finish(pooled.row(i), &case["request"]))
                .collect();
            let want = rows(&case["embeddings"]);
            let theirs = rows(&case["embeddings_bf16"]);
            (
                case["id"].as_str().unwrap().to_owned(),
                max_diff(&ours, &want),
                max_diff(&theirs, &want),
            )
        })
        .collect()
}

#[test]
fn f32_matches_transformers_f32() {
    for model in MODELS {
        for (id, ours, _) in errors(model, DType::F32) {
            assert!(ours <= 1e-4, "{model}/{id}: max |diff| {ours:e}");
        }
    }
}

#[test]
fn bf16_is_at_least_as_close_as_transformers_bf16() {
    for model in MODELS {
        let cases = errors(model, DType::BF16);
        for (id, ours, theirs) in &cases {
            assert!(
                *ours <= theirs.max(BF16_FLOOR),
                "{model}/{id}: ours {ours:e}, transformers bf16 {theirs:e}"
            );
        }
        let mean = |f: fn(&(String, f64, f64)) -> f64| {
            cases.iter().map(f).sum::<f64>() / cases.len() as f64
        };
        let (ours, theirs) = (mean(|c| c.1), mean(|c| c.2));
        assert!(
            ours <= theirs,
            "{model}: mean max |diff| ours {ours:e}, transformers bf16 {theirs:e}"
        );
    }
}
