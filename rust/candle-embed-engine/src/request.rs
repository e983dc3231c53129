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
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::prepare::Limits;

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
    #[schemars(schema_with = "truncate_prompt_tokens_schema")]
    pub truncate_prompt_tokens: Option<i64>,
    /// "right" keeps an over-long input's first tokens, "left" its last.
    #[serde(default, deserialize_with = "null_as_default")]
    #[schemars(default = "right", extend("nullable" = true))]
    pub truncation_side: TruncationSide,
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
        Ok(())
    }
}

fn empty_text(index: usize) -> String {
    format!("input {index} is an empty string; every input needs at least one character")
}

fn empty_tokens(index: usize) -> String {
    format!("input {index} is an empty list of token ids")
}

// --- JSON --------------------------------------------------------------------------------------

fn always_true() -> bool {
    true
}

fn always_false() -> bool {
    false
}

fn right() -> TruncationSide {
    TruncationSide::Right
}

/// `null` or absent: the type's default.
fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn null_as_true<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

impl<'de> Deserialize<'de> for TruncationSide {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// What `input` may be, for messages.
pub const INPUT_SHAPES: &str =
    "a string, an array of strings, an array of token ids, or an array of token-id arrays";

/// One element of an `input` array, before the array's kind is known.
enum Item {
    Text(String),
    Id(u32),
    Ids(Vec<u32>),
}

impl Item {
    fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "a string",
            Self::Id(_) => "a token id",
            Self::Ids(_) => "an array of token ids",
        }
    }
}

/// A token id: an integer in `0..2^32`.
struct TokenId;

impl Visitor<'_> for TokenId {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token id (an integer >= 0)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<u32, E> {
        u32::try_from(v)
            .map_err(|_| E::custom(format!("token id {v} is above the vocabulary size")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<u32, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "{v} is not a valid token id (ids are >= 0)"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = Item;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Item, E> {
                Ok(Item::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Item, E> {
                Ok(Item::Text(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Item, E> {
                TokenId.visit_u64(v).map(Item::Id)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Item, E> {
                TokenId.visit_i64(v).map(Item::Id)
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Item, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(id) = seq.next_element_seed(TokenIdSeed)? {
                    ids.push(id);
                }
                Ok(Item::Ids(ids))
            }
        }
        d.deserialize_any(ItemVisitor)
    }
}

struct TokenIdSeed;

impl<'de> de::DeserializeSeed<'de> for TokenIdSeed {
    type Value = u32;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<u32, D::Error> {
        d.deserialize_any(TokenId)
    }
}

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = EmbeddingInput;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(INPUT_SHAPES)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(EmbeddingInput::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(EmbeddingInput::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut items: Vec<Item> = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<Item>()? {
                    if let Some(first) = items.first() {
                        if first.kind() != item.kind() {
                            return Err(de::Error::custom(format!(
                                "input[{}] is {}, but input[0] is {}; input must be {INPUT_SHAPES}",
                                items.len(),
                                item.kind(),
                                first.kind()
                            )));
                        }
                    }
                    items.push(item);
                }
                Ok(match items.first() {
                    None | Some(Item::Text(_)) => EmbeddingInput::Texts(
                        items
                            .into_iter()
                            .filter_map(|i| if let Item::Text(t) = i { Some(t) } else { None })
                            .collect(),
                    ),
                    Some(Item::Id(_)) => EmbeddingInput::Tokens(
                        items
                            .into_iter()
                            .filter_map(|i| if let Item::Id(t) = i { Some(t) } else { None })
                            .collect(),
                    ),
                    Some(Item::Ids(_)) => EmbeddingInput::TokenBatch(
                        items
                            .into_iter()
                            .filter_map(|i| if let Item::Ids(t) = i { Some(t) } else { None })
                            .collect(),
                    ),
                })
            }
        }
        d.deserialize_any(InputVisitor)
    }
}

/// `input`'s four shapes, each non-empty ([`schema`] adds a server's limits).
fn input_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let text = serde_json::json!({"type": "string", "minLength": 1});
    let ids = serde_json::json!({
        "type": "array", "minItems": 1,
        "items": {"type": "integer", "minimum": 0, "maximum": u32::MAX}
    });
    schemars::json_schema!({
        "description": "Text, texts, token ids, or lists of token ids.",
        "oneOf": [
            text,
            {"type": "array", "minItems": 1, "items": text},
            ids,
            {"type": "array", "minItems": 1, "items": ids}
        ]
    })
}

/// -1, or a positive number of tokens ([`schema`] adds the model maximum).
fn truncate_prompt_tokens_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "integer",
        "nullable": true,
        "oneOf": [{"enum": [-1]}, {"minimum": 1}]
    })
}

/// What a server accepts, for [`schema`]: its models' limits (the largest of each, when it serves
/// several) and the most inputs one request may carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchemaBounds {
    pub limits: Option<Limits>,
    pub max_inputs: Option<usize>,
}

/// The OpenAPI 3.0 schema of a request body (subschemas inline), with `bounds` filled in.
pub fn schema(bounds: &SchemaBounds) -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.root_schema_for::<EmbeddingRequest>().to_value();
    let props = &mut schema["properties"];
    if let Some(limits) = bounds.limits {
        props["dimensions"]["maximum"] = limits.hidden_size.into();
        props["truncate_prompt_tokens"]["oneOf"][1]["maximum"] = limits.max_length.into();
        let max_id = limits.vocab_size.saturating_sub(1);
        props["input"]["oneOf"][2]["items"]["maximum"] = max_id.into();
        props["input"]["oneOf"][3]["items"]["items"]["maximum"] = max_id.into();
    }
    if let Some(max) = bounds.max_inputs {
        props["input"]["oneOf"][1]["maxItems"] = max.into();
        props["input"]["oneOf"][3]["maxItems"] = max.into();
    }
    schema
}

// --- building requests in Rust -----------------------------------------------------------------

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
        self.request.dimensions = Some(i64::try_from(dimensions).unwrap_or(i64::MAX));
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

    fn parse(s: &str) -> std::result::Result<EmbeddingRequest, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn input_shapes_parse_from_json() {
        let input = |s: &str| serde_json::from_str::<EmbeddingInput>(s).unwrap();
        assert_eq!(input(r#""hi""#), EmbeddingInput::Text("hi".into()));
        assert_eq!(
            input(r#"["a","b"]"#),
            EmbeddingInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(input("[1,2,3]"), EmbeddingInput::Tokens(vec![1, 2, 3]));
        assert_eq!(
            input("[[1],[2,3]]"),
            EmbeddingInput::TokenBatch(vec![vec![1], vec![2, 3]])
        );
        assert_eq!(input("[]"), EmbeddingInput::Texts(vec![]));
    }

    #[test]
    fn wrong_inputs_say_what_is_wrong() {
        for (body, says) in [
            (r#"{"input": 5}"#, "expected a string, an array of strings"),
            (
                r#"{"input": [1, "a"]}"#,
                "input[1] is a string, but input[0] is a token id",
            ),
            (
                r#"{"input": ["a", 1]}"#,
                "input[1] is a token id, but input[0] is a string",
            ),
            (r#"{"input": [-4]}"#, "-4 is not a valid token id"),
            (r#"{"input": [4294967296]}"#, "above the vocabulary size"),
            (r#"{"input": [[1], ["a"]]}"#, "expected a token id"),
            (r#"{"input": [true]}"#, "invalid type: boolean"),
            (r#"{"input": null}"#, "invalid type: null"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(says), "{body}: {err}");
        }
    }

    #[test]
    fn defaults_and_nulls() {
        let req = parse(r#"{"input": "x"}"#).unwrap();
        assert_eq!(req, EmbeddingRequest::new("x"));
        let nulls = parse(
            r#"{"input": "x", "normalize": null, "truncation_side": null, "dimensions": null,
                "truncate_sequence": null, "instruction": null}"#,
        )
        .unwrap();
        assert_eq!(nulls, EmbeddingRequest::new("x"));
        assert!(nulls.normalize);
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let err = parse(r#"{"input": "x", "input": "y"}"#).unwrap_err();
        assert!(err.contains("duplicate field `input`"), "{err}");
    }

    #[test]
    fn truncation_side_says_both_choices() {
        let err = parse(r#"{"input": "x", "truncation_side": "middle"}"#).unwrap_err();
        assert!(
            err.contains(r#"must be "left" or "right", got "middle""#),
            "{err}"
        );
    }

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

    #[test]
    fn the_schema_describes_every_field_with_its_bounds() {
        let bounds = SchemaBounds {
            limits: Some(Limits {
                max_length: 128,
                vocab_size: 1024,
                hidden_size: 64,
            }),
            max_inputs: Some(16),
        };
        let doc = schema(&bounds);
        let props = doc["properties"].as_object().unwrap();
        let fields = serde_json::to_value(EmbeddingRequest::new("x")).unwrap();
        for field in fields.as_object().unwrap().keys() {
            assert!(
                props[field].get("description").is_some(),
                "{field} undescribed"
            );
        }
        assert_eq!(props.len(), fields.as_object().unwrap().len());
        assert_eq!(props["dimensions"]["minimum"], 1);
        assert_eq!(props["dimensions"]["maximum"], 64);
        assert_eq!(props["input"]["oneOf"][1]["maxItems"], 16);
        assert_eq!(props["input"]["oneOf"][2]["items"]["maximum"], 1023);
        assert_eq!(
            props["input"]["oneOf"][3]["items"]["items"]["maximum"],
            1023
        );
        assert_eq!(
            props["truncation_side"]["enum"],
            serde_json::json!(["right", "left"])
        );
        assert_eq!(doc["required"], serde_json::json!(["input"]));
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
