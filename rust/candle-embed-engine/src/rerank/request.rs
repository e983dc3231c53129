//! The rerank request: one query, the documents to score against it. Its JSON is the body
//! Cohere's and Jina's `/rerank` take (documents as strings or `{"text": ...}` objects); the
//! server maps vLLM's `/score` body onto it.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{EngineError, Result};
use crate::request::{null_is_default, Field};

/// Score `documents` against `query` with a Qwen3-Reranker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RerankRequest {
    /// The search query.
    pub query: String,
    /// The candidates: strings, or objects with a `text` field (Cohere, Jina).
    #[serde(deserialize_with = "documents")]
    #[schemars(schema_with = "documents_schema")]
    pub documents: Vec<String>,
    /// What relevance means here (`<Instruct>:` in the prompt). Absent: Qwen's default, "Given
    /// a web search query, retrieve relevant passages that answer the query"; `""` stays empty.
    #[serde(default, deserialize_with = "null_is_default")]
    pub instruction: Option<String>,
    /// Return only the best `top_n` results (all when absent).
    #[serde(default, deserialize_with = "null_is_default")]
    #[schemars(range(min = 1, max = u64::MAX))]
    pub top_n: Option<usize>,
    /// Echo each result's document text.
    #[serde(default, deserialize_with = "null_is_default")]
    #[schemars(extend("nullable" = true))]
    pub return_documents: bool,
}

impl RerankRequest {
    pub fn new(query: impl Into<String>, documents: Vec<String>) -> Self {
        Self {
            query: query.into(),
            documents,
            instruction: None,
            top_n: None,
            return_documents: false,
        }
    }

    /// The checks that need no model.
    pub fn check(&self) -> Result<()> {
        if self.documents.is_empty() {
            return Err(EngineError::field(
                Field::Documents,
                "documents must hold at least one document",
            ));
        }
        if self.top_n == Some(0) {
            return Err(EngineError::field(
                Field::TopN,
                "top_n must be at least 1 (leave it out for every document)",
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Text(String),
    Object { text: String },
}

fn documents<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    let documents = Vec::<Document>::deserialize(d).map_err(|_| {
        serde::de::Error::custom("expected a list of strings or of objects with a \"text\" string")
    })?;
    Ok(documents
        .into_iter()
        .map(|d| match d {
            Document::Text(text) | Document::Object { text } => text,
        })
        .collect())
}

fn documents_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": [
            {"type": "string"},
            {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        ]}
    })
}

/// Where a document landed in the ranking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    /// Its position in the request's `documents`.
    pub index: usize,
    pub score: f32,
}

/// `scores` best first (ties keep input order), cut to `top_n`.
pub fn rank(scores: &[f32], top_n: Option<usize>) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| Ranked { index, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    ranked.truncate(top_n.unwrap_or(usize::MAX));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_as_strings_or_text_objects() {
        let body = r#"{"query": "q", "documents": ["a", {"text": "b"}], "top_n": null}"#;
        let request: RerankRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.documents, ["a", "b"]);
        assert_eq!(request.top_n, None);
        let bad = serde_json::from_str::<RerankRequest>(r#"{"query": "q", "documents": [1]}"#);
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("objects with a \"text\""));
    }

    #[test]
    fn ranking_is_best_first_ties_in_order_and_cut() {
        let ranked = rank(&[0.2, 0.9, 0.2, 0.5], Some(3));
        let order: Vec<usize> = ranked.iter().map(|r| r.index).collect();
        assert_eq!(order, [1, 3, 0]);
    }

    #[test]
    fn empty_documents_and_top_n_zero_are_refused() {
        let mut request = RerankRequest::new("q", vec![]);
        assert_eq!(
            request.check().unwrap_err().request_field(),
            Some(Field::Documents)
        );
        request.documents.push("d".into());
        request.top_n = Some(0);
        assert_eq!(
            request.check().unwrap_err().request_field(),
            Some(Field::TopN)
        );
    }
}
