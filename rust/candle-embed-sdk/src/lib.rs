//! The async Rust SDK: load a model with [`EmbeddingModelBuilder`], then call
//! [`EmbeddingModel::generate_embeddings`]. Model work runs on tokio's blocking pool, never on
//! the async workers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), candle_embed_sdk::SdkError> {
//! use candle_embed_sdk::{EmbeddingModelBuilder, EmbeddingRequest};
//!
//! let model = EmbeddingModelBuilder::new("Qwen/Qwen3-Embedding-0.6B").build().await?;
//! let vectors = model
//!     .generate_embeddings(EmbeddingRequest::builder().add_prompt("What is graphene?"))
//!     .await?;
//! assert_eq!(vectors[0].len(), 1024);
//! # Ok(()) }
//! ```

mod builder;
mod model;

pub use builder::EmbeddingModelBuilder;
pub use candle_embed_engine::{
    EmbeddingArchitecture, EmbeddingInput, EmbeddingRequest, EmbeddingRequestBuilder, Embeddings,
    EngineError, ModelInfo, TruncationSide,
};
pub use model::EmbeddingModel;

/// What the SDK can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The blocking task running the model panicked or was cancelled.
    #[error("model task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = SdkError> = std::result::Result<T, E>;
