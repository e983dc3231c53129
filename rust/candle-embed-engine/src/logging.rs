//! The one way candle-embed sets up logging: lines to stderr, filtered by `CANDLE_EMBED_LOG`
//! (tracing's `EnvFilter` syntax, e.g. `info` or `warn,candle_embed_server=debug`). Libraries
//! never call it on their own: the server binary and the Python module do, and an application
//! using the Rust SDK does by asking for it (`EmbeddingModelBuilder::with_logging`).

/// The environment variable that filters log lines.
pub const LOG_ENV: &str = "CANDLE_EMBED_LOG";

/// Installs the stderr logger with `default` as the filter when `CANDLE_EMBED_LOG` is unset. A
/// logger the application installed first is kept.
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
