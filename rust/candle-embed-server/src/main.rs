//! `candle-embed-server -m MODEL -p PORT`: the HTTP server as a standalone binary
//! (the same flags as `candle-embed serve`).

use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    candle_embed_engine::logging::init("info");
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
