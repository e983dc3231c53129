//! The one request type, shared by the Python bindings, the Rust SDK and the HTTP server. Its
//! fields are the OpenAI / vLLM `/v1/embeddings` body, plus mistral.rs's `truncate_sequence` and
//! the Qwen3-Embedding `instruction` / `prompt_name` conveniences.
//!
//! Everything about a field lives here: its JSON parse (serde, `null` taken as absent, as OpenAI
//! clients send it), its description and limits in the API schema (schemars, from the same
//! attributes), and the checks that need no model ([`EmbeddingRequest::check`]). The checks that
//! need the model (lengths, vocabulary, hidden size) run in [`crate::prepare`]. Every refusal
//! names its [`Field`], so HTTP can say which `param` is wrong without reading the message.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

mod builder;
mod json;

pub use builder::EmbeddingRequestBuilder;
pub(crate) use json::null_as_default as null_is_default;
pub use json::{admit_null_in_nullable_enums, schema, SchemaBounds, INPUT_SHAPES};
use json::{
    always_false, always_true, float32, input_schema, null_as_default, null_as_true, right,
    token_limit_schema,
};

/// What to embed: text or token ids, one or many.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatch(Vec<Vec<u32>>),
}

/// A request field, as its JSON name says it: what an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Input,
    TruncateSequence,
    Dimensions,
    Normalize,
    Instruction,
    PromptName,
    TruncatePromptTokens,
    TruncationSide,
    Precision,
    Ranges,
    // The rerank request's fields.
    Query,
    Documents,
    TopN,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::TruncateSequence => "truncate_sequence",
            Self::Dimensions => "dimensions",
            Self::Normalize => "normalize",
            Self::Instruction => "instruction",
            Self::PromptName => "prompt_name",
            Self::TruncatePromptTokens => "truncate_prompt_tokens",
            Self::TruncationSide => "truncation_side",
            Self::Precision => "precision",
            Self::Ranges => "ranges",
            Self::Query => "query",
            Self::Documents => "documents",
            Self::TopN => "top_n",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which end of an over-long input is cut off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TruncationSide {
    // Keep the first tokens.
    #[default]
    Right,
    // Keep the last tokens.
    Left,
}

impl std::str::FromStr for TruncationSide {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "right" => Ok(Self::Right),
            "left" => Ok(Self::Left),
            other => Err(EngineError::field(
                Field::TruncationSide,
                format!("truncation_side must be \"left\" or \"right\", got {other:?}"),
            )),
        }
    }
}

impl TruncationSide {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Right => "right",
            Self::Left => "left",
        }
    }
}

/// The number type vectors are returned in, as sentence-transformers' `quantize_embeddings`
/// defines them (see [`crate::quantize`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Float32,
    Float16,
    Int8,
    Uint8,
    Binary,
    Ubinary,
}

impl Precision {
    pub const ALL: [Self; 6] = [
        Self::Float32,
        Self::Float16,
        Self::Int8,
        Self::Uint8,
        Self::Binary,
        Self::Ubinary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Float16 => "float16",
            Self::Int8 => "int8",
            Self::Uint8 => "uint8",
            Self::Binary => "binary",
            Self::Ubinary => "ubinary",
        }
    }

    /// Whether the precision maps each dimension through a `[min, max]` range.
    pub fn needs_ranges(self) -> bool {
        matches!(self, Self::Int8 | Self::Uint8)
    }
}

impl std::str::FromStr for Precision {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                EngineError::field(
                    Field::Precision,
                    format!(
                        "precision must be \"float32\", \"float16\", \"int8\", \"uint8\", \
                         \"binary\" or \"ubinary\", got {s:?}"
                    ),
                )
            })
    }
}

/// A request for embeddings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddingRequest {
    /// Text, texts, token ids, or lists of token ids. Texts get the prompt (if any) in front and
    /// `<|endoftext|>` at the end; token ids are fed as given.
    #[schemars(schema_with = "input_schema")]
    pub input: EmbeddingInput,
    /// Truncate inputs longer than the model maximum instead of rejecting them.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(default = "always_false", with = "bool", extend("nullable" = true))]
    pub truncate_sequence: bool,
    /// Keep the first N values (Matryoshka), then normalize. At most the model's hidden size.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub dimensions: Option<i64>,
    /// L2-normalize each vector.
    #[serde(default = "always_true", deserialize_with = "null_as_true")]
    #[schemars(default = "always_true", with = "bool", extend("nullable" = true))]
    pub normalize: bool,
    /// Task description: each text becomes `Instruct: {instruction}\nQuery:{text}`. Not
    /// together with `prompt_name`.
    #[serde(default)]
    pub instruction: Option<String>,
    /// A prompt from the model's `config_sentence_transformers.json`, e.g. "query".
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Keep at most N tokens per input, `<|endoftext|>` included; -1 means the model maximum.
    #[serde(default)]
    #[schemars(schema_with = "token_limit_schema")]
    pub truncate_prompt_tokens: Option<i64>,
    /// "right" keeps an over-long input's first tokens, "left" its last.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(default = "right", extend("nullable" = true))]
    pub truncation_side: TruncationSide,
    /// The vectors' number type: "float32", "float16", "int8" and "uint8" (each dimension mapped
    /// through its `ranges` onto 256 steps), "binary" (sign bits, 8 dimensions a byte, as int8)
    /// or "ubinary" (the same bytes as uint8).
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(default = "float32", extend("nullable" = true))]
    pub precision: Precision,
    /// For "int8" and "uint8": `[[min, ...], [max, ...]]`, each dimension's range (after
    /// `dimensions`), fixed for a whole job so that a vector never depends on its batch.
    #[serde(default)]
    #[schemars(length(min = 2, max = 2))]
    pub ranges: Option<Vec<Vec<f32>>>,
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
            precision: Precision::Float32,
            ranges: None,
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

    /// The checks that need no model: inputs present and non-empty, options in their ranges.
    /// [`crate::prepare`] runs them first, then those that need the model's limits.
    pub fn check(&self) -> Result<()> {
        self.check_options()?;
        let input = |message: String| Err(EngineError::field(Field::Input, message));
        if self.is_empty() {
            return input("input is empty; give at least one text or token list".into());
        }
        match &self.input {
            EmbeddingInput::Text(text) if text.is_empty() => return input(empty_text(0)),
            EmbeddingInput::Texts(texts) => {
                if let Some(i) = texts.iter().position(String::is_empty) {
                    return input(empty_text(i));
                }
            }
            EmbeddingInput::Tokens(ids) if ids.is_empty() => return input(empty_tokens(0)),
            EmbeddingInput::TokenBatch(batch) => {
                if let Some(i) = batch.iter().position(Vec::is_empty) {
                    return input(empty_tokens(i));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The options' part of [`Self::check`]: what Python refuses when a request is built (an
    /// empty request may be built, and is refused when sent).
    pub fn check_options(&self) -> Result<()> {
        if let Some(d) = self.dimensions.filter(|&d| d < 1) {
            return Err(EngineError::field(
                Field::Dimensions,
                format!("dimensions must be a positive integer, got {d}"),
            ));
        }
        if let Some(k) = self.truncate_prompt_tokens.filter(|&k| k == 0 || k < -1) {
            return Err(EngineError::field(
                Field::TruncatePromptTokens,
                format!(
                    "truncate_prompt_tokens must be -1 or a positive number of tokens, got {k}"
                ),
            ));
        }
        if self.instruction.is_some() && self.prompt_name.is_some() {
            return Err(EngineError::field(
                Field::PromptName,
                "give either instruction or prompt_name, not both",
            ));
        }
        self.check_ranges()
    }

    /// `ranges` given exactly when the precision uses them, two rows of one length.
    fn check_ranges(&self) -> Result<()> {
        let error = |message: String| Err(EngineError::field(Field::Ranges, message));
        let precision = self.precision.as_str();
        match (&self.ranges, self.precision.needs_ranges()) {
            (None, true) => error(format!(
                "precision {precision:?} needs ranges: each dimension's [min, max], as \
                 [[min, ...], [max, ...]] (e.g. from a calibration sample of float32 vectors), so \
                 that a vector does not depend on the batch it is in"
            )),
            (Some(_), false) => error(format!(
                "ranges apply to precision \"int8\" and \"uint8\" only, not {precision:?}"
            )),
            (Some(ranges), true) => match ranges.as_slice() {
                [min, max] if min.len() == max.len() && !min.is_empty() => {
                    let bad =
                        |(lo, hi): (&f32, &f32)| !lo.is_finite() || !hi.is_finite() || lo > hi;
                    match min.iter().zip(max).position(bad) {
                        Some(d) => error(format!(
                            "ranges: dimension {d} has min {} and max {}; expected finite numbers, \
                             min not above max",
                            min[d], max[d]
                        )),
                        None => Ok(()),
                    }
                }
                _ => error(format!(
                    "ranges must be two rows of equal length ([[min, ...], [max, ...]]), got {} \
                     rows of lengths {:?}",
                    ranges.len(),
                    ranges.iter().map(Vec::len).collect::<Vec<_>>()
                )),
            },
            (None, false) => Ok(()),
        }
    }
}

fn empty_text(index: usize) -> String {
    format!("input {index} is an empty string; every input needs at least one character")
}

fn empty_tokens(index: usize) -> String {
    format!("input {index} is an empty list of token ids")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_their_field() {
        let field_of = |req: EmbeddingRequest| match req.check() {
            Err(EngineError::InvalidRequest { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field_of(EmbeddingRequest::new(Vec::<String>::new())),
            Some(Field::Input)
        );
        assert_eq!(
            field_of(EmbeddingRequest::new(vec!["a", ""])),
            Some(Field::Input)
        );
        assert_eq!(
            field_of(EmbeddingRequest::new(vec![vec![1], vec![]])),
            Some(Field::Input)
        );
        let mut req = EmbeddingRequest::new("x");
        req.dimensions = Some(0);
        assert_eq!(field_of(req.clone()), Some(Field::Dimensions));
        req.dimensions = None;
        req.truncate_prompt_tokens = Some(-2);
        assert_eq!(field_of(req.clone()), Some(Field::TruncatePromptTokens));
        req.truncate_prompt_tokens = Some(-1);
        assert!(req.check().is_ok());
        req.instruction = Some("i".into());
        req.prompt_name = Some("query".into());
        assert_eq!(field_of(req), Some(Field::PromptName));
    }
}
