//! The one request type, shared by the Python bindings, the Rust SDK and the HTTP server.
//! Field names and JSON shapes follow the OpenAI / vLLM `/v1/embeddings` body, plus mistral.rs's
//! `truncate_sequence` and the Qwen3-Embedding `instruction` / `prompt_name` conveniences.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// What to embed: text or token ids, one or many.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatch(Vec<Vec<u32>>),
}

/// Which end of an over-long input is cut off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TruncationSide {
    /// Keep the first tokens.
    #[default]
    Right,
    /// Keep the last tokens.
    Left,
}

impl std::str::FromStr for TruncationSide {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "right" => Ok(Self::Right),
            "left" => Ok(Self::Left),
            other => Err(EngineError::invalid(format!(
                "truncation_side must be \"left\" or \"right\", got {other:?}"
            ))),
        }
    }
}

/// A request for embeddings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    pub input: EmbeddingInput,
    /// Truncate inputs longer than the model maximum instead of rejecting them.
    #[serde(default)]
    pub truncate_sequence: bool,
    /// Matryoshka: keep the first `dimensions` values (before normalizing).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// L2-normalize each vector.
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// Task description: each text becomes `Instruct: {instruction}\nQuery:{text}`.
    #[serde(default)]
    pub instruction: Option<String>,
    /// A prompt from the model's `config_sentence_transformers.json` (e.g. "query").
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Keep at most this many tokens per input (`<|endoftext|>` included); -1 means the maximum.
    #[serde(default)]
    pub truncate_prompt_tokens: Option<i64>,
    #[serde(default)]
    pub truncation_side: TruncationSide,
}

fn default_true() -> bool {
    true
}

impl EmbeddingRequest {
    /// A request with default options for the given input.
    pub fn new(input: impl Into<EmbeddingInput>) -> Self {
        Self {
            input: input.into(),
            truncate_sequence: false,
            dimensions: None,
            normalize: true,
            instruction: None,
            prompt_name: None,
            truncate_prompt_tokens: None,
            truncation_side: TruncationSide::Right,
        }
    }

    /// Start an empty request and add inputs one by one (the Rust SDK's style).
    #[must_use]
    pub fn builder() -> EmbeddingRequestBuilder {
        EmbeddingRequestBuilder::default()
    }

    /// Number of inputs the request carries.
    #[must_use]
    pub fn len(&self) -> usize {
        match &self.input {
            EmbeddingInput::Text(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Texts(texts) => texts.len(),
            EmbeddingInput::TokenBatch(batch) => batch.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<String> for EmbeddingInput {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for EmbeddingInput {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<Vec<String>> for EmbeddingInput {
    fn from(texts: Vec<String>) -> Self {
        Self::Texts(texts)
    }
}

impl From<Vec<&str>> for EmbeddingInput {
    fn from(texts: Vec<&str>) -> Self {
        Self::Texts(texts.into_iter().map(str::to_owned).collect())
    }
}

impl From<Vec<u32>> for EmbeddingInput {
    fn from(ids: Vec<u32>) -> Self {
        Self::Tokens(ids)
    }
}

impl From<Vec<Vec<u32>>> for EmbeddingInput {
    fn from(batch: Vec<Vec<u32>>) -> Self {
        Self::TokenBatch(batch)
    }
}

/// Builds an [`EmbeddingRequest`] prompt by prompt.
#[derive(Clone, Debug)]
pub struct EmbeddingRequestBuilder {
    texts: Vec<String>,
    request: EmbeddingRequest,
}

impl Default for EmbeddingRequestBuilder {
    fn default() -> Self {
        Self {
            texts: Vec::new(),
            request: EmbeddingRequest::new(EmbeddingInput::Texts(Vec::new())),
        }
    }
}

impl EmbeddingRequestBuilder {
    #[must_use]
    pub fn add_prompt(mut self, text: impl Into<String>) -> Self {
        self.texts.push(text.into());
        self
    }

    #[must_use]
    pub fn add_prompts<I, S>(mut self, texts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.texts.extend(texts.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn with_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.request.instruction = Some(instruction.into());
        self
    }

    #[must_use]
    pub fn with_prompt_name(mut self, name: impl Into<String>) -> Self {
        self.request.prompt_name = Some(name.into());
        self
    }

    #[must_use]
    pub fn with_dimensions(mut self, dimensions: usize) -> Self {
        self.request.dimensions = Some(dimensions);
        self
    }

    #[must_use]
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.request.normalize = normalize;
        self
    }

    #[must_use]
    pub fn with_truncate_sequence(mut self, truncate: bool) -> Self {
        self.request.truncate_sequence = truncate;
        self
    }

    #[must_use]
    pub fn with_truncation(mut self, max_tokens: i64, side: TruncationSide) -> Self {
        self.request.truncate_prompt_tokens = Some(max_tokens);
        self.request.truncation_side = side;
        self
    }

    #[must_use]
    pub fn build(self) -> EmbeddingRequest {
        EmbeddingRequest {
            input: EmbeddingInput::Texts(self.texts),
            ..self.request
        }
    }
}

impl From<EmbeddingRequestBuilder> for EmbeddingRequest {
    fn from(builder: EmbeddingRequestBuilder) -> Self {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes_parse_from_json() {
        let parse = |s: &str| serde_json::from_str::<EmbeddingInput>(s).unwrap();
        assert_eq!(parse(r#""hi""#), EmbeddingInput::Text("hi".into()));
        assert_eq!(
            parse(r#"["a","b"]"#),
            EmbeddingInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse("[1,2,3]"), EmbeddingInput::Tokens(vec![1, 2, 3]));
        assert_eq!(
            parse("[[1],[2,3]]"),
            EmbeddingInput::TokenBatch(vec![vec![1], vec![2, 3]])
        );
    }

    #[test]
    fn defaults_fill_in_from_json() {
        let req: EmbeddingRequest = serde_json::from_str(r#"{"input": "x"}"#).unwrap();
        assert_eq!(req, EmbeddingRequest::new("x"));
        assert!(req.normalize);
    }

    #[test]
    fn builder_collects_prompts_in_order() {
        let req: EmbeddingRequest = EmbeddingRequest::builder()
            .add_prompt("a")
            .add_prompt("b")
            .with_dimensions(8)
            .into();
        assert_eq!(
            req.input,
            EmbeddingInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(req.dimensions, Some(8));
        assert_eq!(req.len(), 2);
    }
}
