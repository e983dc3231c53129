//! The server's flags, parsed by clap; the `candle-embed-server` binary and the Python
//! `candle-embed serve` command share this one parser.

use std::path::PathBuf;

use candle_embed_engine::DEFAULT_MAX_BATCH_TOKENS;
use clap::Parser;

/// Default cap on one request body: 2 MB.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 2_000_000;

/// Serve Qwen3-Embedding models over an OpenAI-compatible `/v1/embeddings` endpoint.
#[derive(Clone, Debug, Parser)]
#[command(name = "candle-embed serve", version, about)]
pub struct ServeArgs {
    /// Model to serve: a local directory or a Hugging Face hub id.
    #[arg(short = 'm', long = "model-id", required_unless_present = "config")]
    pub model_id: Option<String>,

    /// Serve several models, listed in a JSON selector file:
    /// {"NAME": {"Embedding": {"model_id": "...", "arch": "qwen3embedding"}}}.
    #[arg(long, value_name = "FILE", conflicts_with = "model_id")]
    pub config: Option<PathBuf>,

    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = 1234)]
    pub port: u16,

    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Name clients use in the request's "model" field (default: the model id).
    #[arg(long)]
    pub served_model_name: Option<String>,

    /// Require `Authorization: Bearer KEY` on /v1 routes.
    #[arg(long, env = "CANDLE_EMBED_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Token budget of one forward pass; requests are merged and split to fill it.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH_TOKENS)]
    pub max_batch_tokens: usize,

    /// Requests admitted at once per model (queued or running); more get 429.
    #[arg(long, default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Tokens of input queued or running at once per model; a request that does not fit within a
    /// second gets 429 with Retry-After (default: 32 forward passes, 32 × --max-batch-tokens).
    #[arg(long)]
    pub max_tokens_in_flight: Option<usize>,

    /// Longest accepted input in tokens (default: the model's max_position_embeddings).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,

    /// Most inputs one request may carry.
    #[arg(long, default_value_t = 2048)]
    pub max_client_batch_size: usize,

    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = DEFAULT_PAYLOAD_LIMIT)]
    pub payload_limit: usize,

    /// Bytes of request bodies read or being read at once (all models); a request whose body
    /// does not fit within a second gets 429 with Retry-After (default: 32 × --payload-limit).
    #[arg(long)]
    pub max_body_bytes_in_flight: Option<usize>,

    /// Open connections at once; more wait in the listen backlog until one closes.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,

    /// Seconds a request head may take to arrive, from its first byte; slower connections are
    /// closed.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub header_timeout: f64,

    /// Seconds a request body may take to arrive, from the end of its head; slower ones get 408.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    pub body_timeout: f64,

    /// Seconds a connection may stay open with no request running and no bytes moving.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    pub keep_alive_timeout: f64,

    /// auto, f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,

    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// A timeout flag: a positive, finite number of seconds (at most a day).
fn seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {text:?}"))?;
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(value)
    } else {
        Err(format!(
            "expected seconds above 0 and at most 86400, got {text}"
        ))
    }
}

impl ServeArgs {
    /// `--max-body-bytes-in-flight`, or its default.
    pub fn body_bytes_in_flight(&self) -> usize {
        self.max_body_bytes_in_flight
            .unwrap_or_else(|| self.payload_limit.saturating_mul(32))
    }

    /// The connection flags.
    pub fn connection_limits(&self) -> crate::connections::ConnectionLimits {
        crate::connections::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            header_timeout: std::time::Duration::from_secs_f64(self.header_timeout),
            keep_alive_timeout: std::time::Duration::from_secs_f64(self.keep_alive_timeout),
        }
    }

    /// `--body-timeout`.
    pub fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.body_timeout)
    }

    /// `--max-tokens-in-flight`, or its default.
    pub fn tokens_in_flight(&self) -> usize {
        self.max_tokens_in_flight
            .unwrap_or_else(|| self.max_batch_tokens.saturating_mul(32))
    }

    /// Parses `argv` (without the program name) the way the binary parses its command line.
    pub fn try_parse_args<I, S>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let program = std::iter::once(std::ffi::OsString::from("candle-embed serve"));
        Self::try_parse_from(program.chain(argv.into_iter().map(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = ServeArgs::try_parse_args(["-m", "m"]).unwrap();
        assert_eq!(args.port, 1234);
        assert_eq!(args.host, "127.0.0.1");
        assert_eq!(args.max_client_batch_size, 2048);
        assert_eq!(args.payload_limit, DEFAULT_PAYLOAD_LIMIT);
        assert_eq!(args.max_batch_tokens, DEFAULT_MAX_BATCH_TOKENS);
        assert_eq!(args.body_bytes_in_flight(), 32 * DEFAULT_PAYLOAD_LIMIT);
        let limits = args.connection_limits();
        assert_eq!(limits.header_timeout, std::time::Duration::from_secs(10));
        assert_eq!(
            limits.keep_alive_timeout,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(args.body_timeout(), std::time::Duration::from_secs(30));
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        for bad in ["0", "-1", "nan", "inf", "1e9", "soon"] {
            let flag = format!("--body-timeout={bad}");
            let err = ServeArgs::try_parse_args(["-m", "m", flag.as_str()]).unwrap_err();
            assert!(err.to_string().contains("seconds"), "{bad}: {err}");
        }
        let args = ServeArgs::try_parse_args(["-m", "m", "--header-timeout", "0.5"]).unwrap();
        assert_eq!(
            args.connection_limits().header_timeout,
            std::time::Duration::from_millis(500)
        );
    }

    #[test]
    fn a_model_or_a_config_is_required() {
        assert!(ServeArgs::try_parse_args(Vec::<String>::new()).is_err());
        assert!(ServeArgs::try_parse_args(["--config", "x.json"]).is_ok());
        assert!(ServeArgs::try_parse_args(["-m", "a", "--config", "x.json"]).is_err());
    }
}
