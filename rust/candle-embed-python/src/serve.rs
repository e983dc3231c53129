//! `_native.serve(argv)`: runs the HTTP server (candle-embed-server) for `candle-embed serve`,
//! with the GIL released, until Ctrl-C or SIGTERM. The flags are parsed by the server's own clap
//! parser, so the Python command and the `candle-embed-server` binary accept the same ones.

use candle_embed_server::ServeArgs;
use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;

use crate::errors::CandleEmbedError;

/// Runs the OpenAI-compatible embeddings server until Ctrl-C or SIGTERM.
///
/// argv: the flags after `serve`, e.g. `["-m", "Qwen/Qwen3-Embedding-0.6B", "-p", "1234"]`.
/// `--help` prints the flags. Bad flags raise SystemExit(2) after printing the usage error;
/// a model that fails to load or a port in use raise CandleEmbedError.
#[pyfunction]
#[pyo3(signature = (argv))]
pub fn serve(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    let parsed = match ServeArgs::try_parse_args(argv) {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = err.print();
            return Err(PySystemExit::new_err(err.exit_code()));
        }
    };
    let result = py.detach(|| candle_embed_server::run(parsed));
    // Ctrl-C was handled by the server (a clean stop); drop the KeyboardInterrupt Python's own
    // handler queued for it.
    let _ = py.check_signals();
    result.map_err(|err| CandleEmbedError::new_err(format!("{err:#}")))
}
