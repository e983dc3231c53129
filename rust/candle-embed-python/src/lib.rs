//! The compiled module `candle_embed._native`: Python classes over the engine.

mod errors;
mod quantize;
mod request;
mod rerank;
mod runner;
mod serve;
mod tokenizer;
mod which;

use pyo3::prelude::*;

#[pymodule]
mod _native {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::errors::CandleEmbedError;
    #[pymodule_export]
    use crate::quantize::quantize;
    #[pymodule_export]
    use crate::request::PyEmbeddingRequest;
    #[pymodule_export]
    use crate::rerank::PyRerankRequest;
    #[pymodule_export]
    use crate::runner::PyRunner;
    #[pymodule_export]
    use crate::serve::serve;
    #[pymodule_export]
    use crate::tokenizer::PyTokenizer;
    #[pymodule_export]
    use crate::which::{PyEmbeddingArchitecture, PyWhich};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        super::init_logging();
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}

/// Log lines go to stderr, filtered by `CANDLE_EMBED_LOG` (default: warnings, plus the server's
/// own start/stop lines).
fn init_logging() {
    candle_embed_engine::logging::init("warn,candle_embed_server=info");
}
