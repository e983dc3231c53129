//! candle-embed's engine: Qwen3-Embedding vectors from text, with the reference implementation's
//! numbers. The pipeline, one module per stage:
//!
//! [`source`] (find files) → [`config`] / [`weights`] → [`tokenize`] (with [`prompt`]) →
//! [`pack`] → [`model`] (forward; [`cpu_bf16`] for bf16 on CPUs with AMX / AVX512-BF16 / AVX2) → [`pool`] (last token, Matryoshka, L2) → [`embedder`] (the whole).

pub mod config;
pub mod cpu_bf16;
pub mod device;
pub mod embedder;
pub mod error;
pub mod model;
pub mod pack;
pub mod pool;
pub mod prompt;
pub mod request;
pub mod source;
pub mod tokenize;
pub mod weights;

pub use config::{Config, EmbeddingArchitecture};
pub use embedder::{Embedder, EmbedderOptions, Embeddings, ModelInfo, DEFAULT_MAX_BATCH_TOKENS};
pub use error::{EngineError, Result};
pub use request::{EmbeddingInput, EmbeddingRequest, EmbeddingRequestBuilder, TruncationSide};
pub use source::ModelSource;
