//! The SDK against the recorded transformers outputs of the fixture models.

use std::path::PathBuf;

use candle_embed_sdk::{EmbeddingModelBuilder, EmbeddingRequest, SdkError};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A recorded case: the request, transformers' f32 vectors and its bf16 vectors.
fn recorded_case(model: &str, case: &str) -> (EmbeddingRequest, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let path = fixtures().join("expected").join(format!("{model}.json"));
    let recording: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = recording["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == case)
        .unwrap_or_else(|| panic!("no case {case}"));
    let request = serde_json::from_value(case["request"].clone()).unwrap();
    let expected = serde_json::from_value(case["embeddings"].clone()).unwrap();
    let bf16 = serde_json::from_value(case["embeddings_bf16"].clone()).unwrap();
    (request, expected, bf16)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test]
async fn default_dtype_matches_the_reference() {
    // `auto`: bf16 on our kernels on AMX / AVX512-BF16 CPUs, f32 elsewhere.
    let model_dir = fixtures().join("models/gqa-bf16");
    let model = EmbeddingModelBuilder::new(model_dir.to_str().unwrap())
        .build()
        .await
        .unwrap();
    let (request, expected, transformers_bf16) = recorded_case("gqa-bf16", "batch_mixed_lengths");
    let vectors = model.generate_embeddings(request).await.unwrap();
    for ((got, want), theirs) in vectors.iter().zip(&expected).zip(&transformers_bf16) {
        // As in tests/test_parity.py: at least as close to the f32 reference as transformers'
        // own bf16 run, or within 1e-2 where that run happens to be closer still.
        let bound = max_diff(theirs, want).max(1e-2);
        assert!(
            max_diff(got, want) <= bound,
            "max |diff| {} > {bound}",
            max_diff(got, want)
        );
    }
}

#[tokio::test]
async fn builder_api_matches_the_reference() {
    let model_dir = fixtures().join("models/gqa-bf16");
    let model = EmbeddingModelBuilder::new(model_dir.to_str().unwrap())
        .with_dtype("f32")
        .with_logging()
        .build()
        .await
        .unwrap();
    let (request, expected, _) = recorded_case("gqa-bf16", "batch_mixed_lengths");
    let vectors = model.generate_embeddings(request).await.unwrap();
    assert_eq!(vectors.len(), expected.len());
    for (got, want) in vectors.iter().zip(&expected) {
        let diff = max_diff(got, want);
        // Same tolerance as the Python parity suite: f32 CPU path vs transformers in f32.
        assert!(diff <= 1e-4, "max |diff| {diff}");
    }

    // The seed's builder style: prompts added one by one.
    let texts: Vec<String> =
        match serde_json::to_value(&recorded_case("gqa-bf16", "batch_mixed_lengths").0.input)
            .unwrap()
        {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect(),
            other => panic!("expected texts, got {other}"),
        };
    let built = texts
        .iter()
        .fold(EmbeddingRequest::builder(), |b, t| b.add_prompt(t.as_str()));
    assert_eq!(model.generate_embeddings(built).await.unwrap(), vectors);
}

#[tokio::test]
async fn errors_surface_as_engine_errors() {
    let missing = EmbeddingModelBuilder::new("/definitely/not/a/model")
        .build()
        .await;
    assert!(matches!(missing, Err(SdkError::Engine(_))));

    let model_dir = fixtures().join("models/gqa-bf16");
    let model = EmbeddingModelBuilder::new(model_dir.to_str().unwrap())
        .build()
        .await
        .unwrap();
    let err = model
        .generate_embeddings(
            EmbeddingRequest::builder()
                .add_prompt("x")
                .with_dimensions(10_000),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dimensions"), "{err}");
}
