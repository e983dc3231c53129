//! Engine errors as real Python exceptions, and the one place where Rust work leaves the GIL and
//! where a Rust panic is caught before it could abort the interpreter.

use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_embed_engine::EngineError;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyRuntimeError, PyValueError};
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
        EngineError::Interrupted => PyKeyboardInterrupt::new_err(message),
    }
}

/// Runs `work` without the GIL, giving it a `go_on` check that takes the GIL back for a moment
/// to run Python's signal handlers: Ctrl-C stops the call between two forward passes, with the
/// exception the handler raised (KeyboardInterrupt), and the Runner stays usable.
pub fn interruptible<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&(dyn Fn() -> bool + Sync)) -> candle_embed_engine::Result<T> + Send,
{
    let raised: std::sync::Mutex<Option<PyErr>> = std::sync::Mutex::new(None);
    // Clippy's suggested `Python::check_signals` path does not satisfy attach's lifetime bound.
    #[allow(clippy::redundant_closure_for_method_calls)]
    let go_on = || {
        Python::attach(|py| py.check_signals()).map_or_else(
            |err| {
                if let Ok(mut slot) = raised.lock() {
                    *slot = Some(err);
                }
                false
            },
            |()| true,
        )
    };
    let result = without_gil(py, || work(&go_on));
    match raised.into_inner().ok().flatten() {
        Some(err) => Err(err),
        None => result,
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
