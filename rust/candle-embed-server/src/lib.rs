//! candle-embed's HTTP server: an OpenAI-compatible `/v1/embeddings` (plus vLLM's and
//! mistral.rs's extra fields) over the engine, with dynamic batching. `serve` runs it until a
//! shutdown signal; the `candle-embed-server` binary and the Python `candle-embed serve` command
//! both call [`run`] with the same flags ([`ServeArgs`]).

mod api;
mod args;
mod body;
mod connections;
mod docs;
mod error;
mod metrics;
mod models;
mod rerank;
mod scheduler;
mod server;

pub use args::ServeArgs;
pub use body::{EmbeddingsBody, EncodingFormat};
pub use connections::ConnectionLimits;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use metrics::Metrics;
pub use models::ModelSpec;
pub use scheduler::Scheduler;
pub use server::{run, serve, shutdown_signal};
