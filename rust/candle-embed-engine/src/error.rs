//! The engine's one error type. Every failure a caller can act on names what was wrong and what
//! was expected; the bindings and the server map these variants onto their own error kinds.

use std::path::PathBuf;

/// Everything that can go wrong between a model id and a vector.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (empty input, dimensions out of range, too long, ...).
    #[error("{0}")]
    InvalidRequest(String),

    /// A required file is not where it should be.
    #[error("{what} not found: {}", path.display())]
    FileNotFound { what: &'static str, path: PathBuf },

    /// A file exists but cannot be used (unreadable, malformed JSON, unsupported settings).
    #[error("{}: {message}", path.display())]
    InvalidFile { path: PathBuf, message: String },

    /// The checkpoint's tensors do not fit the configuration.
    #[error("loading weights from {}: {source}", dir.display())]
    Weights {
        dir: PathBuf,
        #[source]
        source: candle_core::Error,
    },

    /// The model id names no local directory and the hub could not provide it.
    #[error("could not get `{file}` of model `{model_id}` from the Hugging Face hub: {message}")]
    Hub {
        model_id: String,
        file: String,
        message: String,
    },

    /// The caller asked for something this build or machine cannot do (e.g. CUDA without the feature).
    #[error("{0}")]
    Unsupported(String),

    /// The tokenizer library failed on input it accepted as valid.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A tensor operation failed while running the model.
    #[error("model forward pass failed: {0}")]
    Forward(#[from] candle_core::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }

    pub(crate) fn invalid_file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::InvalidFile {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
