//! The request as JSON: `null` taken as absent, `input`'s four shapes told apart with messages
//! that say which item is wrong, and the schema (OpenAPI 3.0) of the whole body.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{EmbeddingInput, EmbeddingRequest, Field, Precision, TruncationSide};
use crate::prepare::Limits;

pub(super) fn always_true() -> bool {
    true
}

pub(super) fn always_false() -> bool {
    false
}

pub(super) fn right() -> TruncationSide {
    TruncationSide::Right
}

pub(super) fn float32() -> Precision {
    Precision::Float32
}

/// `null` or absent: the type's default.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub(super) fn null_as_true<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

impl<'de> Deserialize<'de> for TruncationSide {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Precision {
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

/// Why a JSON number that is not a u64 or i64 is no token id: too large for 64 bits (serde
/// reads it as a float) or a fraction. Said as Python says it of the same value.
fn float_is_no_token_id(v: f64) -> String {
    if v.fract() != 0.0 || !v.is_finite() {
        format!("{v} is a fraction, expected an integer token id")
    } else if v < 0.0 {
        format!("{v:.0} is not a valid token id (ids are >= 0)")
    } else {
        format!("{v:.0} is not a valid token id (ids are below the model's vocabulary size)")
    }
}

/// A JSON boolean where a token id or text goes (Python refuses `True` the same way).
fn bool_is_no_token_id(v: bool) -> String {
    format!("{v} is a boolean, expected an integer token id or a string")
}

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

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<u32, E> {
        Err(E::custom(float_is_no_token_id(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<u32, E> {
        Err(E::custom(bool_is_no_token_id(v)))
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

            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Item, E> {
                Err(E::custom(float_is_no_token_id(v)))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Item, E> {
                Err(E::custom(bool_is_no_token_id(v)))
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
pub(super) fn input_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
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
pub(super) fn token_limit_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
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
        props[Field::TruncatePromptTokens.name()]["oneOf"][1]["maximum"] = limits.max_length.into();
        let max_id = limits.vocab_size.saturating_sub(1);
        props["input"]["oneOf"][2]["items"]["maximum"] = max_id.into();
        props["input"]["oneOf"][3]["items"]["items"]["maximum"] = max_id.into();
    }
    if let Some(max) = bounds.max_inputs {
        props["input"]["oneOf"][1]["maxItems"] = max.into();
        props["input"]["oneOf"][3]["maxItems"] = max.into();
    }
    schema["allOf"] = cross_field_rules();
    admit_null_in_nullable_enums(&mut schema);
    schema
}

/// OpenAPI 3.0 reads `nullable` as allowing null only where an `enum` lists it; our parsers take
/// null (an absent field) for every nullable field, so every such enum in `schema` gets null.
pub fn admit_null_in_nullable_enums(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(object) => {
            let nullable = object.get("nullable") == Some(&Value::Bool(true));
            if let (true, Some(Value::Array(values))) = (nullable, object.get_mut("enum")) {
                if !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
            }
            object.values_mut().for_each(admit_null_in_nullable_enums);
        }
        Value::Array(items) => items.iter_mut().for_each(admit_null_in_nullable_enums),
        _ => {}
    }
}

/// The rules of [`EmbeddingRequest::check_options`] that tie two fields together, as far as
/// OpenAPI 3.0 can say them: not both `instruction` and `prompt_name`; `ranges` exactly with
/// precision "int8" or "uint8". (That both rows have one length, the vectors' dimensions, with
/// min ≤ max, it cannot say; the field's description does.)
fn cross_field_rules() -> serde_json::Value {
    let quantized: Vec<&str> = Precision::ALL
        .iter()
        .filter(|p| p.needs_ranges())
        .map(|p| p.as_str())
        .collect();
    let mut others: Vec<serde_json::Value> = Precision::ALL
        .iter()
        .filter(|p| !p.needs_ranges())
        .map(|p| p.as_str().into())
        .collect();
    others.push(serde_json::Value::Null);
    let (instruction, prompt_name, precision, ranges) = (
        Field::Instruction.name(),
        Field::PromptName.name(),
        Field::Precision.name(),
        Field::Ranges.name(),
    );
    serde_json::json!([
        {"not": {
            "required": [instruction, prompt_name],
            "properties": {instruction: {"type": "string"}, prompt_name: {"type": "string"}}
        }},
        {"anyOf": [
            {"required": [precision, ranges],
             "properties": {precision: {"enum": quantized}, ranges: {"type": "array"}}},
            {"properties": {precision: {"enum": others}, ranges: {"enum": [null]}}}
        ]}
    ])
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
            (
                r#"{"input": [true]}"#,
                "true is a boolean, expected an integer token id",
            ),
            (r#"{"input": [[1, false]]}"#, "false is a boolean"),
            (r#"{"input": [1.5]}"#, "1.5 is a fraction"),
            (
                r#"{"input": [-18446744073709551616]}"#,
                "-18446744073709551616 is not a valid token id (ids are >= 0)",
            ),
            (
                r#"{"input": [18446744073709551616]}"#,
                "18446744073709551616 is not a valid token id",
            ),
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
        // Nullable, so null is listed: OpenAPI 3.0 would otherwise read null as refused.
        assert_eq!(
            props["truncation_side"]["enum"],
            serde_json::json!(["right", "left", null])
        );
        assert_eq!(doc["required"], serde_json::json!(["input"]));
        let rules = doc["allOf"].as_array().unwrap();
        assert_eq!(
            rules[0]["not"]["required"],
            serde_json::json!(["instruction", "prompt_name"])
        );
        assert_eq!(
            rules[1]["anyOf"][0]["properties"]["precision"]["enum"],
            serde_json::json!(["int8", "uint8"])
        );
    }
}
