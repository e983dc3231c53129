//! HTTP errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`. Engine errors
//! become these in one `From` impl, so handlers end in a single `?`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use candle_embed_engine::EngineError;
use schemars::JsonSchema;
use serde::Serialize;

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

/// An error answer: status plus body (and, for 429 and 503, when to retry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for the `Retry-After` header.
    pub retry_after: Option<u32>,
    /// Answer with `Connection: close` (the request's bytes were not all read).
    pub close: bool,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    message: message.into(),
                    kind,
                    param: None,
                    code,
                },
            },
            retry_after: None,
            close: false,
        }
    }

    /// The same error, with `message` in place of its own.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.body.error.message = message.into();
        self
    }

    #[must_use]
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.body.error.param = Some(param.into());
        self
    }

    /// 400: the request is malformed or asks for something impossible.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Some("invalid_api_key"),
            "missing or invalid API key; send it as `Authorization: Bearer KEY`",
        )
    }

    /// 404: the request names a model this server does not serve.
    pub fn model_not_found(model: &str, served: &[String]) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            format!(
                "the model `{model}` does not exist; this server serves: {}",
                served.join(", ")
            ),
        )
        .with_param("model")
    }

    /// 404 for routes that do not exist.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            format!("no route {path}"),
        )
    }

    /// 405 for a known route with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            Some("method_not_allowed"),
            "method not allowed on this route",
        )
    }

    /// 413: body larger than `--payload-limit`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("payload_too_large"),
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 429: the model's queue is full.
    pub fn overloaded(limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("queue_full"),
            format!("the server is busy ({limit} requests in flight); retry later"),
        )
        .retry_in(1)
    }

    /// 429: the request's tokens do not fit in the model's queue now (`--max-tokens-in-flight`).
    pub fn overloaded_tokens(tokens: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("queue_full"),
            format!(
                "the server is busy: this request's {tokens} tokens do not fit beside those \
                 already queued (at most {limit} in flight, --max-tokens-in-flight); retry later"
            ),
        )
        .retry_in(1)
    }

    /// 429: the request's body does not fit beside the bodies already held
    /// (`--max-body-bytes-in-flight`).
    pub fn overloaded_bytes(bytes: usize, limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("queue_full"),
            format!(
                "the server is busy: this request's body ({bytes} bytes) does not fit beside the \
                 bodies already held (at most {limit} bytes, --max-body-bytes-in-flight); retry \
                 later"
            ),
        )
        .retry_in(1)
    }

    /// 408: the body did not arrive within `--body-timeout`; the connection is closed.
    pub fn body_timeout(timeout: std::time::Duration) -> Self {
        let mut error = Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            Some("request_timeout"),
            format!(
                "the request body did not arrive within {:.1} s (--body-timeout); the \
                 connection is closed",
                timeout.as_secs_f64()
            ),
        );
        error.close = true;
        error
    }

    /// 503: the models are still loading, or the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            Some("service_unavailable"),
            message,
        )
    }

    /// 500: our fault, not the caller's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            None,
            message,
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        let message = err.to_string();
        match err {
            // The caller's input: bad options, too long, ids outside the vocabulary, text the
            // tokenizer cannot take.
            EngineError::InvalidRequest { field, .. } => {
                let error = Self::bad_request(message);
                match field {
                    Some(field) => error.with_param(field.name()),
                    None => error,
                }
            }
            EngineError::Tokenizer(_) => Self::bad_request(message).with_param("input"),
            // Loading, hub, device and forward-pass failures: ours, not the caller's. (Listed by
            // exclusion so new engine variants default to 500, never to a wrong 400.)
            _ => Self::internal(message),
        }
    }
}

impl ApiError {
    /// The same error, telling the client to retry after `seconds`.
    #[must_use]
    pub fn retry_in(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 415: a body encoding the server does not decode.
    pub fn unsupported_encoding(encoding: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            Some("unsupported_content_encoding"),
            format!(
                "Content-Encoding {encoding:?} is not supported; send the JSON body uncompressed"
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if self.close {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_embed_engine::Field;

    #[test]
    fn engine_input_errors_are_400_with_the_field_named() {
        let err = ApiError::from(EngineError::field(
            Field::Dimensions,
            "dimensions must be between 1 and 64 (the model's hidden size), got 65",
        ));
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.body.error.kind, "invalid_request_error");
        assert_eq!(err.body.error.param.as_deref(), Some("dimensions"));

        // The field comes from the error, not from its wording.
        let err = ApiError::from(EngineError::field(
            Field::Input,
            "dimensions and truncation are fine, but input 3 has 200 tokens",
        ));
        assert_eq!(err.body.error.param.as_deref(), Some("input"));
        assert_eq!(
            ApiError::from(EngineError::Tokenizer("bad".into())).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn engine_failures_are_500() {
        let err = ApiError::from(EngineError::Unsupported("no cuda".into()));
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn body_serializes_in_openai_shape() {
        let json = serde_json::to_value(ApiError::overloaded(4).body).unwrap();
        assert_eq!(json["error"]["type"], "rate_limit_error");
        assert_eq!(json["error"]["code"], "queue_full");
        assert!(json["error"]["param"].is_null());
        assert!(json["error"]["message"].as_str().unwrap().contains('4'));
    }
}
