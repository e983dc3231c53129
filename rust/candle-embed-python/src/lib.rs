//! The compiled module `candle_embed._native`: Python classes over the engine.

mod errors;
mod request;
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
    use crate::request::PyEmbeddingRequest;
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

/// Log lines go to stderr, filtered by `CANDLE_EMBED_LOG` (e.g. "info"; default "warn", plus the
/// server's own start/stop lines at "info").
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CANDLE_EMBED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,candle_embed_server=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
