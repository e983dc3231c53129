//! The routes: `POST /v1/embeddings`, `GET /v1/models`, `/health`, `/info`, `/metrics`,
//! `/openapi.json` and `/docs`, plus the API-key check and the per-request metrics.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use candle_embed_engine::{
    Embedder, Embeddings, Limits, ModelInfo, Pooled, Prepared, Reranker, SchemaBounds, Values,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};

use crate::body::{self, ApiJson, BodyBudget, BodyRules, EncodingFormat};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;

/// A loaded model with its queue.
pub struct Served {
    pub name: String,
    pub model: ServedModel,
    pub scheduler: Scheduler,
}

/// What a served model answers: embeddings, or reranking and scores.
pub enum ServedModel {
    Embedding(Arc<Embedder>),
    Reranker(Arc<Reranker>),
}

/// The routes a model kind answers, for selecting and for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Embedding,
    Reranker,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Self::Embedding => "an embedding model: it answers /v1/embeddings",
            Self::Reranker => "a reranker: it answers /v1/rerank and /v1/score",
        }
    }
}

impl Served {
    pub(crate) fn info(&self) -> &ModelInfo {
        match &self.model {
            ServedModel::Embedding(embedder) => embedder.info(),
            ServedModel::Reranker(reranker) => reranker.info(),
        }
    }

    fn kind(&self) -> Kind {
        match self.model {
            ServedModel::Embedding(_) => Kind::Embedding,
            ServedModel::Reranker(_) => Kind::Reranker,
        }
    }

    /// A place in this model's queue, or 429.
    pub(crate) fn admit(&self) -> Result<crate::scheduler::Admission, ApiError> {
        self.scheduler
            .admit()
            .ok_or_else(|| ApiError::overloaded(self.scheduler.limits().requests))
    }

    /// The pooled rows of `sequences`, from this model's scheduler (batched with other requests);
    /// 429 when their tokens do not fit beside the tokens already queued.
    pub(crate) async fn forward(&self, sequences: Vec<Vec<u32>>) -> Result<Pooled, ApiError> {
        let tokens = sequences.iter().map(Vec::len).sum();
        let _reserved =
            self.scheduler.reserve(tokens).await.ok_or_else(|| {
                ApiError::overloaded_tokens(tokens, self.scheduler.limits().tokens)
            })?;
        self.scheduler
            .submit(sequences)
            .await
            .map_err(|_| ApiError::unavailable("the server is shutting down"))?
            .map_err(ApiError::internal)
    }
}

/// An engine stage run on the blocking pool (tokenizing is CPU work).
pub(crate) async fn blocking<T: Send + 'static>(
    stage: impl FnOnce() -> candle_embed_engine::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(stage)
        .await
        .map_err(|err| ApiError::internal(format!("preparing the request failed: {err}")))??)
}

/// What every handler shares.
pub struct AppState {
    /// Served names, known before the models are loaded.
    pub names: Vec<String>,
    /// Set once every model is loaded; until then the server answers 503.
    pub models: OnceLock<Vec<Served>>,
    pub shutting_down: AtomicBool,
    pub api_key: Option<String>,
    pub max_client_batch_size: usize,
    pub payload_limit: usize,
    pub body_timeout: std::time::Duration,
    /// Bytes of bodies held at once, every route together.
    pub body_budget: BodyBudget,
    pub max_batch_tokens: usize,
    pub max_concurrent_requests: usize,
    pub metrics: Arc<Metrics>,
    pub created: u64,
    ids: RandomState,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(names: Vec<String>, args: &crate::args::ServeArgs, metrics: Arc<Metrics>) -> Self {
        Self {
            names,
            models: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            max_client_batch_size: args.max_client_batch_size,
            payload_limit: args.payload_limit,
            body_timeout: args.body_timeout(),
            body_budget: BodyBudget::new(args.body_bytes_in_flight()),
            max_batch_tokens: args.max_batch_tokens,
            max_concurrent_requests: args.max_concurrent_requests,
            metrics,
            created: unix_now(),
            ids: RandomState::new(),
            next_id: AtomicU64::new(0),
        }
    }

    fn ready(&self) -> Result<&[Served], ApiError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        self.models
            .get()
            .map(Vec::as_slice)
            .ok_or_else(|| ApiError::unavailable("the model is still loading; retry shortly"))
    }

    /// The model of `kind` a request's `model` field names: a served name, "default" (the first
    /// of that kind), or, when one model of that kind is served, any name at all (clients copy
    /// names from other servers' docs). A model of the other kind, named, is a 400.
    pub(crate) fn select(&self, model: Option<&str>, kind: Kind) -> Result<&Served, ApiError> {
        let models = self.ready()?;
        let mut of_kind = models.iter().filter(|m| m.kind() == kind);
        let found = match model {
            None | Some("" | "default") => of_kind.next(),
            Some(name) => match models.iter().find(|m| m.name == name) {
                Some(named) if named.kind() != kind => {
                    return Err(ApiError::bad_request(format!(
                        "the model `{name}` is {}",
                        named.kind().describe()
                    ))
                    .with_param("model"))
                }
                Some(named) => Some(named),
                None => {
                    let first = of_kind.next();
                    first.filter(|_| of_kind.next().is_none())
                }
            },
        };
        found.ok_or_else(|| {
            let missing = ApiError::model_not_found(model.unwrap_or_default(), &self.names);
            if models.iter().any(|m| m.kind() == kind) {
                return missing;
            }
            missing.with_message(match kind {
                Kind::Embedding => "this server serves no embedding model",
                Kind::Reranker => {
                    "this server serves no reranker; serve one with --config \
                     {\"NAME\": {\"Reranker\": {\"model_id\": \"Qwen/Qwen3-Reranker-0.6B\"}}}"
                }
            })
        })
    }

    /// `embd-` and 24 random hex digits.
    fn response_id(&self) -> String {
        self.id_with("embd")
    }

    /// `kind-` and 24 random hex digits.
    pub(crate) fn id_with(&self, kind: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let a = self.ids.hash_one((n, unix_now()));
        let b = self.ids.hash_one((a, n));
        format!("{kind}-{a:016x}{:08x}", b as u32)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme name is
/// case-insensitive (RFC 7235).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("");
        if !constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
            return Err(ApiError::unauthorized());
        }
    }
    Ok(next.run(request).await)
}

/// Holds a POST body's bytes (as declared, or the payload limit when sent chunked) in the body
/// budget until its answer is ready; 429 when they do not fit within the admission wait.
async fn reserve_body_bytes(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.method() != axum::http::Method::POST {
        return Ok(next.run(request).await);
    }
    let bytes = body::declared_length(request.headers())
        .map_or(state.payload_limit, |n| n.min(state.payload_limit));
    let _held = state
        .body_budget
        .reserve(bytes)
        .await
        .ok_or_else(|| ApiError::overloaded_bytes(bytes, state.body_budget.limit()))?;
    Ok(next.run(request).await)
}

async fn record_metrics(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    request.extensions_mut().insert(BodyRules {
        limit: state.payload_limit,
        timeout: state.body_timeout,
    });
    let response = next.run(request).await;
    state
        .metrics
        .record_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The whole HTTP surface.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/rerank", post(crate::rerank::rerank))
        .route("/rerank", post(crate::rerank::rerank))
        .route("/v1/score", post(crate::rerank::score))
        .route("/score", post(crate::rerank::score))
        // The key is checked first (the outer layer), so only callers with it hold body bytes.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            reserve_body_bytes,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_api_key,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/docs", get(docs))
        .fallback(|uri: Uri| async move { ApiError::no_route(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            record_metrics,
        ))
        .with_state(state)
}

/// The answer, borrowing the vectors it writes.
#[derive(Serialize, JsonSchema)]
pub(crate) struct EmbeddingsResponse<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    data: Vec<EmbeddingData<'a>>,
    usage: Usage,
}

#[derive(Serialize, JsonSchema)]
struct EmbeddingData<'a> {
    /// Position of the input in the request.
    index: usize,
    object: &'static str,
    embedding: EmbeddingValue<'a>,
}

/// The vector, in the request's precision: numbers (float32, float16 written as the numbers it
/// holds, int8, uint8; binary precisions are their packed bytes), or base64 of those values'
/// little-endian bytes.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
enum EmbeddingValue<'a> {
    Float(&'a [f32]),
    Half(Vec<f32>),
    Int8(&'a [i8]),
    Uint8(&'a [u8]),
    Base64(String),
}

impl<'a> EmbeddingValue<'a> {
    /// Row `i` (of `width` values) of `values`, as `format` writes it.
    fn row(values: &'a Values, i: usize, width: usize, format: EncodingFormat) -> Self {
        let at = i * width..(i + 1) * width;
        if format == EncodingFormat::Base64 {
            let bytes = match values {
                Values::F32(v) => v[at].iter().flat_map(|x| x.to_le_bytes()).collect(),
                Values::F16(v) => v[at].iter().flat_map(|x| x.to_le_bytes()).collect(),
                Values::I8(v) => v[at].iter().map(|x| x.to_le_bytes()[0]).collect(),
                Values::U8(v) => v[at].to_vec(),
            };
            return Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        match values {
            Values::F32(v) => Self::Float(&v[at]),
            Values::F16(v) => Self::Half(v[at].iter().map(|x| x.to_f32()).collect()),
            Values::I8(v) => Self::Int8(&v[at]),
            Values::U8(v) => Self::Uint8(&v[at]),
        }
    }
}

/// Tokens embedded, after truncation, `<|endoftext|>` included.
#[derive(Serialize, JsonSchema)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// The engine's stages with the scheduler between them: prepare (on the blocking pool), the
/// forward pass (batched with other requests), finish.
async fn embeddings(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    let body::Embeddings { http, request } = body::Embeddings::parse(body)?;
    let served = state.select(http.model.as_deref(), Kind::Embedding)?;
    let ServedModel::Embedding(embedder) = &served.model else {
        return Err(ApiError::internal("selected a model of the wrong kind"));
    };
    if request.len() > state.max_client_batch_size {
        return Err(ApiError::bad_request(format!(
            "too many inputs: {} in one request, the maximum is {} (--max-client-batch-size)",
            request.len(),
            state.max_client_batch_size
        ))
        .with_param("input"));
    }
    let _admission = served.admit()?;

    let embedder = Arc::clone(embedder);
    let prepared = blocking(move || embedder.prepare(&request)).await?;
    let token_counts = prepared.token_counts();
    let Prepared { sequences, output } = prepared;
    let pooled = served.forward(sequences).await?;
    let embeddings = output.finish(pooled, token_counts);
    let response = EmbeddingsResponse::new(
        state.response_id(),
        served.name.clone(),
        &embeddings,
        http.encoding_format,
    );
    Ok(Json(response).into_response())
}

impl<'a> EmbeddingsResponse<'a> {
    fn new(id: String, model: String, embeddings: &'a Embeddings, format: EncodingFormat) -> Self {
        let data = (0..embeddings.len())
            .map(|index| EmbeddingData {
                index,
                object: "embedding",
                embedding: EmbeddingValue::row(
                    embeddings.values(),
                    index,
                    embeddings.width(),
                    format,
                ),
            })
            .collect();
        let prompt_tokens = embeddings.prompt_tokens();
        Self {
            id,
            object: "list",
            created: unix_now(),
            model,
            data,
            usage: Usage {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }
    }
}

async fn list_models(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let models = state.ready()?;
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": state.created,
                "owned_by": "candle-embed",
                "root": m.info().model_id,
                "max_model_len": m.info().max_length,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn health(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    state.ready()?;
    Ok(Json(json!({"status": "ok"})))
}

async fn info(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let models = state.ready()?;
    let described: Vec<Value> = models
        .iter()
        .map(|m| {
            let info = m.info();
            json!({
                "name": m.name,
                "model_id": info.model_id,
                "architecture": info.architecture.as_str(),
                "dimensions": info.hidden_size,
                "max_input_tokens": info.max_length,
                "vocab_size": info.vocab_size,
                "dtype": format!("{:?}", info.dtype).to_lowercase(),
                "kernel": info.kernel,
                "device": info.device,
                "prompt_names": info.prompt_names,
                "kind": match m.kind() { Kind::Embedding => "embedding", Kind::Reranker => "reranker" },
            })
        })
        .collect();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "models": described,
        "max_batch_tokens": state.max_batch_tokens,
        "max_concurrent_requests": state.max_concurrent_requests,
        "max_client_batch_size": state.max_client_batch_size,
        "payload_limit": state.payload_limit,
        "auth": state.api_key.is_some(),
    })))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn openapi(State(state): State<Arc<AppState>>) -> Json<Value> {
    // With several models, the largest of each limit: what some model accepts.
    let models = state.models.get().map(Vec::as_slice).unwrap_or_default();
    let limits = models
        .iter()
        .filter_map(|m| match &m.model {
            ServedModel::Embedding(embedder) => Some(embedder.limits()),
            ServedModel::Reranker(_) => None,
        })
        .reduce(|a, b| Limits {
            max_length: a.max_length.max(b.max_length),
            vocab_size: a.vocab_size.max(b.vocab_size),
            hidden_size: a.hidden_size.max(b.hidden_size),
        });
    let bounds = SchemaBounds {
        limits,
        max_inputs: Some(state.max_client_batch_size),
    };
    let catalog = state.models.get().map(|models| {
        let mut catalog = crate::docs::Catalog::default();
        for served in models {
            match &served.model {
                ServedModel::Embedding(embedder) => {
                    catalog.embedding.push(served.name.clone());
                    for name in &embedder.info().prompt_names {
                        if !catalog.prompt_names.contains(name) {
                            catalog.prompt_names.push(name.clone());
                        }
                    }
                }
                ServedModel::Reranker(_) => catalog.rerankers.push(served.name.clone()),
            }
        }
        catalog
    });
    Json(crate::docs::openapi(
        &bounds,
        catalog.as_ref(),
        state.api_key.is_some(),
    ))
}

async fn docs() -> Html<&'static str> {
    Html(crate::docs::DOCS_HTML)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer k"), Some("k"));
        assert_eq!(bearer_token("bearer k"), Some("k"));
        assert_eq!(bearer_token("BEARER  k"), Some(" k"));
        assert_eq!(bearer_token("Basic k"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn base64_is_little_endian() {
        let base64 =
            |values: &Values, i| match EmbeddingValue::row(values, i, 1, EncodingFormat::Base64) {
                EmbeddingValue::Base64(text) => text,
                _ => unreachable!(),
            };
        assert_eq!(base64(&Values::F32(vec![0.0, 1.0]), 1), "AACAPw==");
        assert_eq!(base64(&Values::I8(vec![-1]), 0), "/w==");
    }

    #[test]
    fn status_of_unready_server_is_503() {
        let args = <crate::args::ServeArgs as clap::Parser>::parse_from(["s", "-m", "m"]);
        let state = AppState::new(vec!["m".into()], &args, Arc::default());
        assert_eq!(
            state
                .select(Some("m"), Kind::Embedding)
                .err()
                .unwrap()
                .status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let id = state.response_id();
        assert!(id.starts_with("embd-") && id.len() == 5 + 24, "{id}");
    }
}
