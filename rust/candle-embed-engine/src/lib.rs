//! candle-embed's engine: Qwen3-Embedding vectors from text, with the reference implementation's
//! numbers. A request goes through the same stages whoever sends it:
//!
//! 1. [`prepare`] — [`request`] checked, then [`tokenize`]d (with [`prompt`]) against the
//!    model's limits, with its [`output`] plan;
//! 2. [`pack`] — sequences end to end in batches of at most a [`pack::TokenBudget`];
//! 3. [`decoder`] — one forward pass per batch, each sequence's last row pooled ([`pool`]):
//!    [`model`] on candle's ops (any device; attention over the packed batch by [`varlen`] on
//!    CUDA), or [`cpu`] on our CPU kernels (bf16, and f32 for the exact path);
//! 4. [`output`] — Matryoshka cut, L2 normalization and [`quantize`] (the requested precision)
//!    into one contiguous matrix.
//!
//! [`Embedder`] loads a model ([`source`] → [`config`] / [`weights`], [`device`]) and chains the
//! stages; the server puts its batching scheduler between stages 1 and 4. [`rerank`] runs
//! Qwen3-Reranker through the same stages: its prompt around each (query, document) pair, the same
//! decoder, and two rows of the LM head instead of the output plan.

pub mod config;
pub mod cpu;
pub mod decoder;
pub mod device;
pub mod embedder;
pub mod error;
pub mod logging;
pub mod model;
pub mod output;
pub mod pack;
pub mod pool;
mod precut;
pub mod prepare;
pub mod prompt;
pub mod quantize;
pub mod request;
pub mod rerank;
pub mod source;
pub mod tokenize;
pub mod varlen;
pub mod weights;

pub use config::{Config, EmbeddingArchitecture};
pub use decoder::Decoder;
pub use embedder::{Embedder, EmbedderOptions, ModelInfo, DEFAULT_MAX_BATCH_TOKENS};
pub use error::{EngineError, Result};
pub use output::{Embeddings, Output};
pub use pool::Pooled;
pub use prepare::{Limits, Prepared};
pub use quantize::Values;
pub use request::{
    EmbeddingInput, EmbeddingRequest, EmbeddingRequestBuilder, Field, Precision, SchemaBounds,
    TruncationSide,
};
pub use rerank::{RerankRequest, Reranker, Scores};
pub use source::ModelSource;
