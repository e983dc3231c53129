//! Request bodies: read under the payload limit, parsed once into the engine's typed request.
//!
//! The extractor replaces axum's `Json`, whose rejections are plain-text 415/422s: every failure
//! here is a 400 (or 413) in OpenAI's error shape. A body is read as JSON whatever its
//! `Content-Type` (curl's `-d` without `-H` sends a form type), with duplicate keys refused; each
//! typed part is then deserialized from the same object, and a type error names the field it
//! is in (`param`) from the parser's own path, never from the message's wording.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use candle_embed_engine::EmbeddingRequest;
use http_body_util::BodyExt;
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How vectors are written in the answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    // JSON arrays of numbers.
    #[default]
    Float,
    // Base64 of the little-endian float32 bytes (what the OpenAI client asks for by default).
    Base64,
}

impl<'de> Deserialize<'de> for EncodingFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("float") => Ok(Self::Float),
            Some("base64") => Ok(Self::Base64),
            Some(other) => Err(de::Error::custom(format!(
                "encoding_format must be \"float\" or \"base64\", got {other:?}"
            ))),
        }
    }
}

/// The fields of `POST /v1/embeddings` that are HTTP's own; the rest of the body is the engine's
/// [`EmbeddingRequest`], read from the same object.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
pub struct EmbeddingsBody {
    /// Served model name; "default" (or absent) picks the first.
    #[serde(default)]
    pub model: Option<String>,
    /// "float" (arrays of numbers) or "base64" (little-endian float32 bytes).
    #[serde(default)]
    #[schemars(default = "float", extend("nullable" = true))]
    pub encoding_format: EncodingFormat,
    /// End-user id: accepted for compatibility, not used.
    #[serde(default)]
    pub user: Option<String>,
}

fn float() -> EncodingFormat {
    EncodingFormat::Float
}

/// A parsed embeddings body: HTTP's fields and the engine request.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub http: EmbeddingsBody,
    pub request: EmbeddingRequest,
}

impl Embeddings {
    /// The parts of a body (a JSON object); the engine request takes the texts over without a
    /// copy.
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        if body.get("input").is_none() {
            return Err(ApiError::bad_request("missing required field `input`").with_param("input"));
        }
        Ok(Self {
            http: typed(&body)?,
            request: typed(body)?,
        })
    }
}

/// `T` from the body's object; unknown fields are left to the other parts (and ignored).
pub(crate) fn typed<'de, T, D>(body: D) -> Result<T, ApiError>
where
    T: Deserialize<'de>,
    D: Deserializer<'de, Error = serde_json::Error>,
{
    serde_path_to_error::deserialize(body).map_err(|err| {
        let param = match err.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
            _ => None,
        };
        let message = format!("`{}`: {}", err.path(), err.inner());
        match param {
            Some(param) => ApiError::bad_request(message).with_param(param),
            None => ApiError::bad_request(message),
        }
    })
}

/// A JSON value read with duplicate object keys noted: `serde_json::Value` keeps the last of
/// them silently, and a client that sent `input` twice should hear which one we did not use.
struct Strict {
    value: Value,
    duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl From<Value> for Strict {
    fn from(value: Value) -> Self {
        Self {
            value,
            duplicate: None,
        }
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Value::Bool(v).into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Value::from(v).into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Value::from(v).into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        Ok(Value::from(v).into())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Value::String(v.to_owned()).into())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Value::String(v).into())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Value::Null.into())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        let mut duplicate = None;
        while let Some(item) = seq.next_element::<Strict>()? {
            duplicate = duplicate.or(item.duplicate);
            items.push(item.value);
        }
        Ok(Strict {
            value: Value::Array(items),
            duplicate,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        let mut duplicate = None;
        while let Some((key, item)) = map.next_entry::<String, Strict>()? {
            duplicate = duplicate.or(item.duplicate);
            if object.contains_key(&key) {
                duplicate = duplicate.or(Some(key));
                continue;
            }
            object.insert(key, item.value);
        }
        Ok(Strict {
            value: Value::Object(object),
            duplicate,
        })
    }
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

/// The body length a request's `Content-Length` declares, if it gives a number.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A JSON object body read under the server's payload limit; see the module docs.
pub struct ApiJson(pub Value);

/// The `--payload-limit` and `--body-timeout` in force, put in the request's extensions by the
/// router.
#[derive(Clone, Copy, Debug)]
pub struct BodyRules {
    pub limit: usize,
    pub timeout: Duration,
}

impl Default for BodyRules {
    fn default() -> Self {
        Self {
            limit: crate::args::DEFAULT_PAYLOAD_LIMIT,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Bytes of request bodies held at once, read or being read (`--max-body-bytes-in-flight`):
/// memory that tokens in flight do not count, since a body is read before it is tokenized.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    limit: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Holds `bytes` (or the whole budget, for a body larger than it: such a body is read
    /// alone) until the permit drops; `None` when they are not free within the admission wait.
    pub async fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        crate::scheduler::reserve_within(&self.bytes, bytes, self.limit).await
    }
}

impl ApiJson {
    /// Parses a body's bytes: valid JSON, an object, no key twice.
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "the request body is empty; send a JSON object (Content-Type: application/json)",
            ));
        }
        let strict: Strict = serde_json::from_slice(bytes).map_err(|err| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON ({err}); send a JSON object with \
                 Content-Type: application/json"
            ))
        })?;
        if let Some(key) = strict.duplicate {
            return Err(ApiError::bad_request(format!(
                "the field `{key}` appears more than once in the request body"
            ))
            .with_param(key));
        }
        if strict.value.is_object() {
            Ok(Self(strict.value))
        } else {
            Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ))
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let rules = req
            .extensions()
            .get::<BodyRules>()
            .copied()
            .unwrap_or_default();
        let limit = rules.limit;
        // A compressed body would reach the JSON parser as bytes it cannot read; say why instead.
        if let Some(encoding) = req.headers().get(axum::http::header::CONTENT_ENCODING) {
            let encoding = encoding.to_str().unwrap_or("(not text)").trim();
            if !encoding.eq_ignore_ascii_case("identity") {
                return Err(ApiError::unsupported_encoding(encoding));
            }
        }
        if declared_length(req.headers()).is_some_and(|len| len > limit.saturating_add(DRAIN_CAP)) {
            return Err(ApiError::payload_too_large(limit));
        }
        // A client that stops sending (or declared more than it sends) gets a 408 and the
        // connection is closed; its unread rest could not be told from the next request.
        let bytes = tokio::time::timeout(rules.timeout, read_limited(req.into_body(), limit))
            .await
            .map_err(|_| ApiError::body_timeout(rules.timeout))??;
        Self::parse(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_embed_engine::{EmbeddingInput, TruncationSide};
    use serde_json::json;

    fn parse(value: Value) -> Result<Embeddings, ApiError> {
        let ApiJson(body) = ApiJson::parse(&serde_json::to_vec(&value).unwrap())?;
        Embeddings::parse(body)
    }

    #[test]
    fn the_seed_bodies_parse() {
        let body = parse(json!({
            "model": "Qwen/Qwen3-Embedding-4B",
            "input": ["a", "b"],
            "encoding_format": "float",
            "dimensions": 1024,
            "truncation_side": "left",
            "user": "user_123"
        }))
        .unwrap();
        assert_eq!(body.http.model.as_deref(), Some("Qwen/Qwen3-Embedding-4B"));
        assert_eq!(body.http.encoding_format, EncodingFormat::Float);
        assert_eq!(body.request.dimensions, Some(1024));
        assert_eq!(body.request.truncation_side, TruncationSide::Left);
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
                                "truncation_side": null, "user": null, "normalize": null}),
        )
        .unwrap();
        assert_eq!(body.http.encoding_format, EncodingFormat::Float);
        assert_eq!(body.request.dimensions, None);
        assert!(body.request.normalize);
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
            (json!({"input": "x", "dimensions": 1.5}), "dimensions"),
            (
                json!({"input": "x", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (
                json!({"input": "x", "truncation_side": "middle"}),
                "truncation_side",
            ),
            (json!({"input": "x", "model": 3}), "model"),
            (json!({"input": "x", "normalize": "yes"}), "normalize"),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(err.body.error.param.as_deref(), Some(param), "{body}");
        }
        assert!(parse(json!(["x"])).is_err());
    }

    #[test]
    fn duplicate_keys_are_refused_by_name() {
        let err = ApiJson::parse(br#"{"input": "a", "dimensions": 4, "input": "b"}"#)
            .err()
            .unwrap();
        assert_eq!(err.body.error.param.as_deref(), Some("input"));
        assert!(err.body.error.message.contains("more than once"));
    }

    /// A JSON value built from the request's own field names and the values that trip parsers:
    /// nesting, huge and negative numbers, floats where ints go, odd strings.
    fn draw(rng: &mut fastrand::Rng, depth: u32) -> Value {
        const KEYS: [&str; 14] = [
            "input",
            "model",
            "dimensions",
            "encoding_format",
            "normalize",
            "truncate_sequence",
            "truncate_prompt_tokens",
            "truncation_side",
            "instruction",
            "prompt_name",
            "precision",
            "ranges",
            "user",
            "",
        ];
        let leaf = |rng: &mut fastrand::Rng| match rng.u8(..9) {
            0 => Value::Null,
            1 => json!(rng.bool()),
            2 => json!(rng.u32(..2048)),
            3 => json!(-rng.i64(..1 << 40)),
            4 => json!(u64::MAX),
            5 => json!(f64::from_bits(rng.u64(..0x7ff0_0000_0000_0000))),
            6 => json!(""),
            7 => json!(
                ["float", "base64", "left", "right", "int8", "query", "\u{0}", "💥"]
                    [rng.usize(..8)]
            ),
            _ => json!("word ".repeat(rng.usize(..40))),
        };
        if depth == 0 || rng.u8(..3) == 0 {
            return leaf(rng);
        }
        match rng.u8(..2) {
            0 => Value::Array((0..rng.usize(..5)).map(|_| draw(rng, depth - 1)).collect()),
            _ => Value::Object(
                (0..rng.usize(..6))
                    .map(|_| {
                        let key = KEYS[rng.usize(..KEYS.len())].to_owned();
                        (key, draw(rng, depth - 1))
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn drawn_bodies_parse_or_get_a_400_never_a_panic() {
        let mut rng = fastrand::Rng::with_seed(0x00b0_d1e5);
        let mut accepted = 0;
        for round in 0..20_000 {
            let mut body = draw(&mut rng, 4);
            if round % 2 == 0 {
                // Half of them are objects with an input, to reach the typed fields.
                let input = draw(&mut rng, 2);
                if let Value::Object(map) = &mut body {
                    map.insert("input".into(), input);
                } else {
                    body = json!({ "input": input });
                }
            }
            let bytes = serde_json::to_vec(&body).unwrap();
            match ApiJson::parse(&bytes).and_then(|ApiJson(v)| Embeddings::parse(v)) {
                Ok(parsed) => {
                    accepted += 1;
                    // What parses also passes or fails the engine's own checks, without a panic.
                    let _ = parsed.request.check();
                }
                Err(err) => assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{body}"),
            }
            // The same bytes cut anywhere are refused, not a panic.
            let cut = rng.usize(..bytes.len());
            if let Ok(ApiJson(v)) = ApiJson::parse(&bytes[..cut]) {
                let _ = Embeddings::parse(v);
            }
        }
        assert!(
            accepted > 100,
            "the drawing reached the typed fields {accepted} times"
        );
    }
}
