//! Request bodies: the `/v1/embeddings` body type (the engine's request plus OpenAI's `model`,
//! `encoding_format` and `user`), and the extractor that reads it. The extractor replaces axum's
//! `Json`, whose rejections are plain-text 415/422s: every failure here is a 400 (or 413) in
//! OpenAI's error shape, naming the field at fault.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use candle_embed_engine::EmbeddingRequest;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// How vectors are written in the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON arrays of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian float32 bytes (what the OpenAI client asks for by default).
    Base64,
}

/// The body of `POST /v1/embeddings`.
#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingsBody {
    /// Served model name; "default" (or absent) picks the first.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// End-user id: accepted for compatibility, not used.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(flatten)]
    pub request: EmbeddingRequest,
}

/// The JSON type each known field must have, to name the field when a body is wrong.
const FIELD_TYPES: &[(&str, &str)] = &[
    ("model", "a string"),
    ("user", "a string"),
    ("encoding_format", "\"float\" or \"base64\""),
    ("dimensions", "a positive integer"),
    (
        "truncate_prompt_tokens",
        "an integer (-1 or a positive number)",
    ),
    ("truncation_side", "\"left\" or \"right\""),
    ("truncate_sequence", "a boolean"),
    ("normalize", "a boolean"),
    ("instruction", "a string"),
    ("prompt_name", "a string"),
];

const INPUT_TYPE: &str =
    "a string, an array of strings, an array of token ids, or an array of token-id arrays";

fn field_is_valid(field: &str, value: &Value) -> bool {
    match field {
        "model" | "user" | "instruction" | "prompt_name" => value.is_string(),
        "encoding_format" => matches!(value.as_str(), Some("float" | "base64")),
        "truncation_side" => matches!(value.as_str(), Some("left" | "right")),
        "dimensions" => value.as_u64().is_some(),
        "truncate_prompt_tokens" => value.as_i64().is_some(),
        "truncate_sequence" | "normalize" => value.is_boolean(),
        _ => true,
    }
}

fn input_is_valid(value: &Value) -> bool {
    let token = |v: &Value| v.as_u64().is_some_and(|id| u32::try_from(id).is_ok());
    match value {
        Value::String(_) => true,
        Value::Array(items) => {
            items.iter().all(Value::is_string)
                || items.iter().all(token)
                || items
                    .iter()
                    .all(|item| item.as_array().is_some_and(|ids| ids.iter().all(token)))
        }
        _ => false,
    }
}

/// Turns a parsed JSON body into the embeddings request, with a field-naming error when it does
/// not fit. `null` counts as absent, as OpenAI clients send it for unset options.
pub fn parse_embeddings_body(value: Value) -> Result<EmbeddingsBody, ApiError> {
    let Value::Object(mut object) = value else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    object.retain(|_, v| !v.is_null());
    let Some(input) = object.get("input") else {
        return Err(ApiError::bad_request("missing required field `input`").with_param("input"));
    };
    if !input_is_valid(input) {
        return Err(
            ApiError::bad_request(format!("`input` must be {INPUT_TYPE}")).with_param("input"),
        );
    }
    if let Some((field, expected)) = FIELD_TYPES.iter().find(|(field, _)| {
        object
            .get(*field)
            .is_some_and(|v| !field_is_valid(field, v))
    }) {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be {expected}, got {}",
            object[*field]
        ))
        .with_param(*field));
    }
    from_object(object)
}

fn from_object<T: DeserializeOwned>(object: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(object))
        .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))
}

/// How much of an over-limit body is still read (and dropped) before the 413 goes out. Closing a
/// connection with unread data makes the kernel reset it, and the client may then lose the 413.
const DRAIN_CAP: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The body's bytes if it fits in `limit`; else a 413, after draining what the client still sends
/// (up to `DRAIN_CAP` bytes or `DRAIN_TIME`).
async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    let mut over = false;
    let mut drained = 0;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        let frame = if over {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            }
        } else {
            body.frame().await
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|err| {
            if over {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::bad_request(format!("could not read the request body: {err}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if over {
            drained += data.len();
            if drained > DRAIN_CAP {
                break;
            }
        } else if bytes.len() + data.len() > limit {
            over = true;
            bytes = Vec::new();
        } else {
            bytes.extend_from_slice(&data);
        }
    }
    if over {
        Err(ApiError::payload_too_large(limit))
    } else {
        Ok(bytes)
    }
}

/// A JSON body read under the server's payload limit; see the module docs.
pub struct ApiJson(pub Value);

/// The `--payload-limit` in force, put in the request's extensions by the router.
#[derive(Clone, Copy, Debug)]
pub struct PayloadLimit(pub usize);

impl<S: Send + Sync> FromRequest<S> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let limit = req
            .extensions()
            .get::<PayloadLimit>()
            .map_or(crate::args::DEFAULT_PAYLOAD_LIMIT, |l| l.0);
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > (limit + DRAIN_CAP) as u64) {
            return Err(ApiError::payload_too_large(limit));
        }
        // The Content-Type is not checked: curl's `-d` without `-H` sends a form type, and the
        // body is JSON either way; a body that is not JSON gets a 400 below.
        let bytes = read_limited(req.into_body(), limit).await?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON object (Content-Type: application/json)",
            ));
        }
        serde_json::from_slice(&bytes).map(ApiJson).map_err(|err| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON ({err}); send a JSON object with \
                 Content-Type: application/json"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_embed_engine::{EmbeddingInput, TruncationSide};
    use serde_json::json;

    fn parse(value: Value) -> Result<EmbeddingsBody, ApiError> {
        parse_embeddings_body(value)
    }

    #[test]
    fn the_seed_bodies_parse() {
        let body = parse(json!({
            "model": "Qwen/Qwen3-Embedding-4B",
            "input": ["a", "b"],
            "encoding_format": "float",
            "dimensions": 1024,
            "truncate_prompt_tokens": 8192,
            "truncation_side": "right",
            "user": "user_123"
        }))
        .unwrap();
        assert_eq!(body.model.as_deref(), Some("Qwen/Qwen3-Embedding-4B"));
        assert_eq!(body.encoding_format, EncodingFormat::Float);
        assert_eq!(body.request.dimensions, Some(1024));
        assert_eq!(body.request.truncate_prompt_tokens, Some(8192));
        assert_eq!(body.request.truncation_side, TruncationSide::Right);
        let tokens = parse(json!({"model": "m", "input": [3838, 374, 279]})).unwrap();
        assert_eq!(
            tokens.request.input,
            EmbeddingInput::Tokens(vec![3838, 374, 279])
        );
        assert!(tokens.request.normalize);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let fits = read_limited(Body::from(vec![b'x'; 10]), 10).await.unwrap();
        assert_eq!(fits.len(), 10);
        let err = read_limited(Body::from(vec![b'x'; 11]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.body.error.code, Some("payload_too_large"));
    }

    #[test]
    fn nulls_count_as_absent() {
        let body = parse(
            json!({"input": "x", "encoding_format": null, "dimensions": null,
                                "truncation_side": null}),
        )
        .unwrap();
        assert_eq!(body.encoding_format, EncodingFormat::Float);
        assert_eq!(body.request.dimensions, None);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases = [
            (json!({"model": "m"}), "input"),
            (json!({"input": 5}), "input"),
            (json!({"input": [1, "a"]}), "input"),
            (json!({"input": [-1]}), "input"),
            (json!({"input": [[1], ["a"]]}), "input"),
            (json!({"input": "x", "dimensions": "8"}), "dimensions"),
            (json!({"input": "x", "dimensions": -3}), "dimensions"),
            (
                json!({"input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"input": "x", "truncation_side": "middle"}),
                "truncation_side",
            ),
            (json!({"input": "x", "model": 3}), "model"),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(err.body.error.param.as_deref(), Some(param), "{body}");
        }
        assert!(parse(json!(["x"])).is_err());
    }
}
