//! The server end to end in Rust: `serve` on a loopback port with the gqa-bf16 fixture, called
//! over raw HTTP/1.1; vectors compared with `Embedder::embed` on the same request.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_embed_engine::{Embedder, EmbedderOptions, EmbeddingRequest};
use candle_embed_server::ServeArgs;
use serde_json::{json, Value};

fn fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models/gqa-bf16")
        .to_string_lossy()
        .into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One request on a fresh connection; returns (status, body).
fn call(port: u16, method: &str, path: &str, body: Option<&[u8]>, extra: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8(response).unwrap();
    let status = text[9..12].parse().unwrap();
    let (_, rest) = text.split_once("\r\n\r\n").unwrap();
    (status, rest.to_owned())
}

fn post(port: u16, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let (status, text) = call(
        port,
        "POST",
        "/v1/embeddings",
        Some(&bytes),
        "Content-Type: application/json\r\n",
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn start(
    extra: &[&str],
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let port = free_port();
    let port_text = port.to_string();
    let model = fixture();
    let mut flags = vec!["-m", &model, "-p", &port_text];
    flags.extend_from_slice(extra);
    let args = ServeArgs::try_parse_args(flags).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(candle_embed_server::serve(args, async {
                let _ = stopped.await;
            }))
            .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && call(port, "GET", "/health", None, "").0 == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "server not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    (port, stop, server)
}

#[test]
fn embeddings_match_the_engine_and_errors_have_openai_shape() {
    let (port, stop, server) = start(&["--max-batch-tokens", "32", "--max-client-batch-size", "8"]);
    let embedder = Embedder::load(&EmbedderOptions::new(fixture())).unwrap();

    let texts = [
        "Graphene conductivity",
        "Explain superconductors in simple terms.",
        "hi",
    ];
    let (status, body) = post(
        port,
        &json!({"model": "default", "input": texts, "dimensions": 16}),
    );
    assert_eq!(status, 200, "{body}");
    let mut request = EmbeddingRequest::new(texts.to_vec());
    request.dimensions = Some(16);
    let expected = embedder.embed(&request).unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], expected.prompt_tokens());
    for (item, want) in body["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected.to_vecs())
    {
        let got: Vec<f32> = serde_json::from_value(item["embedding"].clone()).unwrap();
        assert_eq!(got.len(), 16);
        // Batched with a 32-token budget vs the engine's own batching: float32 rounding only.
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5, "{g} vs {w}");
        }
    }

    for (bad, status_wanted) in [
        (json!({"input": ""}), 400),
        (json!({"input": "x", "dimensions": 65}), 400),
        (json!({"input": [2000]}), 400),
        (json!({"input": vec!["x"; 9]}), 400),
        (json!({"input": 3}), 400),
    ] {
        let (status, body) = post(port, &bad);
        assert_eq!(status, status_wanted, "{bad}: {body}");
        let error = &body["error"];
        assert!(
            error["message"].is_string() && error["type"].is_string(),
            "{body}"
        );
    }
    let (status, text) = call(port, "POST", "/v1/embeddings", Some(b"{oops"), "");
    assert_eq!(status, 400, "{text}");

    let (status, text) = call(port, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(text.contains("candle_embed_batches_total"), "{text}");

    stop.send(()).unwrap();
    server.join().unwrap();
}
