//! The Rust SDK example: `cargo run --release --example embeddings -- [MODEL]`, where MODEL is a
//! local directory or a hub id (default `Qwen/Qwen3-Embedding-0.6B`).

use anyhow::Result;
use candle_embed_sdk::{EmbeddingModelBuilder, EmbeddingRequest};

#[tokio::main]
async fn main() -> Result<()> {
    let model_id = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Qwen/Qwen3-Embedding-0.6B".to_owned());
    let model = EmbeddingModelBuilder::new(model_id)
        .with_logging()
        .build()
        .await?;

    let embeddings = model
        .generate_embeddings(
            EmbeddingRequest::builder()
                .add_prompt("What is graphene?")
                .add_prompt("Explain superconductors in simple terms."),
        )
        .await?;

    println!(
        "Returned {} vectors of {} dimensions",
        embeddings.len(),
        embeddings[0].len()
    );
    Ok(())
}
