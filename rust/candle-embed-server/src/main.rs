//! `candle-embed-server -m MODEL -p PORT`: the HTTP server as a standalone binary
//! (the same flags as `candle-embed serve`).

use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CANDLE_EMBED_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let matches = candle_embed_server::ServeArgs::command()
        .name("candle-embed-server")
        .get_matches();
    let args = match candle_embed_server::ServeArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(err) => err.exit(),
    };
    match candle_embed_server::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("candle-embed-server: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
