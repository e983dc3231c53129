//! The engine's one error type. Every failure a caller can act on names what was wrong and what
//! was expected; the bindings and the server map these variants onto their own error kinds.

use std::path::PathBuf;

use crate::request::Field;

/// Everything that can go wrong between a model id and a vector.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (empty input, dimensions out of range, too long, ...), or an
    /// option given at load is. `field` is the request field at fault, if it is one.
    #[error("{message}")]
    InvalidRequest {
        field: Option<Field>,
        message: String,
    },

    /// A required file is not where it should be.
    #[error("{what} not found: {}", path.display())]
    FileNotFound { what: &'static str, path: PathBuf },

    /// A file exists but cannot be used (unreadable, malformed JSON, unsupported settings).
    #[error("{}: {message}", path.display())]
    InvalidFile { path: PathBuf, message: String },

    /// The checkpoint's tensors do not fit the configuration.
    #[error("loading weights from {}: {}", dir.display(), without_backtrace(.source))]
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

    /// The hub could not be asked (offline, or unreachable) and the cache lacks the file.
    #[error("could not get `{file}` of model `{model_id}`: not in the Hugging Face cache at {} and {why}", cache.display())]
    NotCached {
        model_id: String,
        file: String,
        cache: PathBuf,
        why: &'static str,
    },

    /// The caller asked for something this build or machine cannot do (e.g. CUDA without the feature).
    #[error("{0}")]
    Unsupported(String),

    /// The tokenizer library failed on input it accepted as valid.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The caller stopped the call between two forward passes (Ctrl-C in Python).
    #[error("interrupted")]
    Interrupted,

    /// A tensor operation failed while running the model.
    #[error("model forward pass failed: {}", without_backtrace(.0))]
    Forward(#[from] candle_core::Error),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set:
/// users (and Python exception messages) get what went wrong, not 30 lines of Rust frames.
fn without_backtrace(err: &candle_core::Error) -> String {
    match err {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(inner),
        candle_core::Error::WithPath { inner, path } => {
            format!("{}: {}", path.display(), without_backtrace(inner))
        }
        candle_core::Error::Context { inner, context } => {
            format!("{context}\n{}", without_backtrace(inner))
        }
        other => other.to_string(),
    }
}

impl EngineError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: None,
            message: message.into(),
        }
    }

    /// The request's `field` is wrong.
    pub fn field(field: Field, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            field: Some(field),
            message: message.into(),
        }
    }

    /// The request field an error is about, if it is about one.
    pub fn request_field(&self) -> Option<Field> {
        match self {
            Self::InvalidRequest { field, .. } => *field,
            _ => None,
        }
    }

    pub(crate) fn invalid_file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Self::InvalidFile {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_leave_out_candle_backtraces() {
        let inner = candle_core::Error::Msg("cannot find tensor x.weight".into());
        let with_bt = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let err = EngineError::Weights {
            dir: PathBuf::from("/m"),
            source: with_bt.with_path("/m/model.safetensors"),
        };
        assert_eq!(
            err.to_string(),
            "loading weights from /m: /m/model.safetensors: cannot find tensor x.weight"
        );
    }
}
