//! Engine errors as real Python exceptions, and the one place where Rust work leaves the GIL and
//! where a Rust panic is caught before it could abort the interpreter.

use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_embed_engine::EngineError;
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    candle_embed,
    CandleEmbedError,
    PyRuntimeError,
    "A failure inside candle-embed that is not the caller's input: hub access, the model run."
);

/// ValueError for what the caller can fix in their arguments or files, FileNotFoundError for
/// missing files, CandleEmbedError (a RuntimeError) for the rest.
pub fn to_pyerr(err: EngineError) -> PyErr {
    let message = err.to_string();
    match err {
        EngineError::InvalidRequest { .. }
        | EngineError::InvalidFile { .. }
        | EngineError::Weights { .. }
        | EngineError::Unsupported(_) => PyValueError::new_err(message),
        EngineError::FileNotFound { .. } | EngineError::NotCached { .. } => {
            PyFileNotFoundError::new_err(message)
        }
        EngineError::Hub { .. } | EngineError::Tokenizer(_) | EngineError::Forward(_) => {
            CandleEmbedError::new_err(message)
        }
    }
}

/// Runs `work` without the GIL; a panic becomes a CandleEmbedError instead of an abort.
pub fn without_gil<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> candle_embed_engine::Result<T> + Send,
{
    py.detach(|| catch_unwind(AssertUnwindSafe(work)))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            CandleEmbedError::new_err(format!(
                "internal error in candle-embed (please report it): {what}"
            ))
        })?
        .map_err(to_pyerr)
}
