//! Reranking over HTTP, in the shapes clients already send: `POST /v1/rerank` and `/rerank`
//! (Cohere, Jina: `query`, `documents`, `top_n`, `return_documents` → `results`), and vLLM's
//! `POST /v1/score` and `/score` (`text_1`, `text_2` → `data[].score`). The same stages as
//! embeddings: the reranker prepares the pairs, the model's scheduler batches them with other
//! requests, the head scores them.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use candle_embed_engine::rerank::{rank, RerankRequest};
use candle_embed_engine::Reranker;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{blocking, AppState, Kind, Served, ServedModel};
use crate::body::{typed, ApiJson};
use crate::error::ApiError;

/// The HTTP fields of a rerank or score body beside the engine request's.
#[derive(Deserialize, JsonSchema)]
pub struct ModelField {
    /// Served model name; "default" (or absent) picks the first reranker.
    #[serde(default)]
    pub model: Option<String>,
}

/// vLLM's score body: `text_1` (a query, or one per pair) against `text_2` (a document or a
/// list): one query against every document, or pairs by position when both are lists of one
/// length.
// OpenAPI cannot state the length rule; tests/schemathesis_hooks.py applies it to drawn bodies.
#[derive(Deserialize, JsonSchema)]
pub struct ScoreBody {
    /// Served model name; "default" (or absent) picks the first reranker.
    #[serde(default)]
    pub model: Option<String>,
    pub text_1: OneOrMany,
    pub text_2: OneOrMany,
    /// What relevance means (Qwen3-Reranker's `<Instruct>:`); absent: the web-search default.
    #[serde(default)]
    pub instruction: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(#[schemars(length(min = 1))] Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

#[derive(Serialize, JsonSchema)]
pub struct RerankResponse {
    id: String,
    model: String,
    /// Best first, cut to `top_n`.
    results: Vec<RerankResult>,
    usage: Usage,
}

#[derive(Serialize, JsonSchema)]
struct RerankResult {
    /// The document's position in the request.
    index: usize,
    /// sigmoid(logit("yes") − logit("no")), in [0, 1].
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentText>,
}

#[derive(Serialize, JsonSchema)]
struct DocumentText {
    text: String,
}

#[derive(Serialize, JsonSchema)]
pub struct ScoreResponse {
    id: String,
    object: &'static str,
    created: u64,
    model: String,
    /// One score per pair, in pair order.
    data: Vec<ScoreData>,
    usage: Usage,
}

#[derive(Serialize, JsonSchema)]
struct ScoreData {
    index: usize,
    object: &'static str,
    score: f32,
}

#[derive(Serialize, JsonSchema)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

impl Usage {
    fn new(tokens: usize) -> Self {
        Self {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }
    }
}

/// `POST /v1/rerank`, `/rerank`.
pub async fn rerank(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    for field in ["query", "documents"] {
        if body.get(field).is_none() {
            return Err(
                ApiError::bad_request(format!("missing required field `{field}`"))
                    .with_param(field),
            );
        }
    }
    let model: ModelField = typed(&body)?;
    let request: RerankRequest = typed(body)?;
    let served = state.select(model.model.as_deref(), Kind::Reranker)?;
    let reranker = reranker_of(served)?;
    check_count(&state, request.documents.len(), "documents")?;
    let prepare = {
        let reranker = Arc::clone(reranker);
        let request = request.clone();
        move || reranker.prepare(&request)
    };
    let (scores, tokens) = run(served, reranker, prepare).await?;
    let results = rank(&scores, request.top_n)
        .into_iter()
        .map(|r| RerankResult {
            index: r.index,
            relevance_score: r.score,
            document: request.return_documents.then(|| DocumentText {
                text: request.documents[r.index].clone(),
            }),
        })
        .collect();
    Ok(Json(RerankResponse {
        id: state.id_with("rerank"),
        model: served.name.clone(),
        results,
        usage: Usage::new(tokens),
    })
    .into_response())
}

/// `POST /v1/score`, `/score`.
pub async fn score(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    for field in ["text_1", "text_2"] {
        if body.get(field).is_none() {
            return Err(
                ApiError::bad_request(format!("missing required field `{field}`"))
                    .with_param(field),
            );
        }
    }
    let body: ScoreBody = typed(body)?;
    let served = state.select(body.model.as_deref(), Kind::Reranker)?;
    let reranker = reranker_of(served)?;
    let (queries, documents) = (body.text_1.into_vec(), body.text_2.into_vec());
    let pairs: Vec<(String, String)> = match (queries.len(), documents.len()) {
        (_, 0) => {
            return Err(
                ApiError::bad_request("text_2 must hold at least one text").with_param("text_2")
            )
        }
        (1, _) => documents
            .into_iter()
            .map(|d| (queries[0].clone(), d))
            .collect(),
        (q, d) if q == d => queries.into_iter().zip(documents).collect(),
        (q, d) => {
            return Err(ApiError::bad_request(format!(
                "text_1 has {q} texts and text_2 {d}: give one text_1, or as many as text_2"
            ))
            .with_param("text_1"))
        }
    };
    check_count(&state, pairs.len(), "text_2")?;
    let prepare = {
        let reranker = Arc::clone(reranker);
        let instruction = body.instruction;
        move || {
            let mut sequences = Vec::with_capacity(pairs.len());
            for (query, document) in pairs {
                let mut request = RerankRequest::new(query, vec![document]);
                request.instruction.clone_from(&instruction);
                sequences.append(&mut reranker.prepare(&request)?);
            }
            Ok(sequences)
        }
    };
    let (scores, tokens) = run(served, reranker, prepare).await?;
    let data = scores
        .into_iter()
        .enumerate()
        .map(|(index, score)| ScoreData {
            index,
            object: "score",
            score,
        })
        .collect();
    Ok(Json(ScoreResponse {
        id: state.id_with("score"),
        object: "list",
        created: state.created,
        model: served.name.clone(),
        data,
        usage: Usage::new(tokens),
    })
    .into_response())
}

fn reranker_of(served: &Served) -> Result<&Arc<Reranker>, ApiError> {
    match &served.model {
        ServedModel::Reranker(reranker) => Ok(reranker),
        ServedModel::Embedding(_) => Err(ApiError::internal("selected a model of the wrong kind")),
    }
}

fn check_count(state: &AppState, count: usize, param: &str) -> Result<(), ApiError> {
    if count > state.max_client_batch_size {
        return Err(ApiError::bad_request(format!(
            "too many {param}: {count} in one request, the maximum is {} (--max-client-batch-size)",
            state.max_client_batch_size
        ))
        .with_param(param));
    }
    Ok(())
}

/// Prepare (on the blocking pool), forward through the model's scheduler, score: the scores in
/// pair order and the tokens the pairs took.
async fn run(
    served: &Served,
    reranker: &Arc<Reranker>,
    prepare: impl FnOnce() -> candle_embed_engine::Result<Vec<Vec<u32>>> + Send + 'static,
) -> Result<(Vec<f32>, usize), ApiError> {
    let _admission = served.admit()?;
    let sequences = blocking(prepare).await?;
    let tokens = sequences.iter().map(Vec::len).sum();
    let pooled = served.forward(sequences).await?;
    Ok((reranker.finish(&pooled), tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_bodies_take_one_or_many() {
        let body: ScoreBody =
            serde_json::from_value(serde_json::json!({"text_1": "q", "text_2": ["a", "b"]}))
                .unwrap();
        assert_eq!(body.text_1.into_vec(), ["q"]);
        assert_eq!(body.text_2.into_vec(), ["a", "b"]);
    }
}
