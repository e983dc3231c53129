//! Turning a text into what the model reads: the Qwen3-Embedding instruction format and the
//! named prompts of `config_sentence_transformers.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};
use crate::request::{EmbeddingRequest, Field};

/// Named prompts shipped with a checkpoint (e.g. `"query"` → `"Instruct: …\nQuery:"`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Prompts {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
}

impl Prompts {
    /// Reads the `prompts` table of a `config_sentence_transformers.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|err| EngineError::invalid_file(path, err))?;
        serde_json::from_str(&text).map_err(|err| EngineError::invalid_file(path, err))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.prompts.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prompts.keys().map(String::as_str)
    }
}

/// The prefix a request puts in front of every text, if any ([`EmbeddingRequest::check`] has
/// refused `instruction` and `prompt_name` together).
///
/// `instruction` follows Qwen's own `get_detailed_instruct`: no space after `Query:`.
pub fn prefix(request: &EmbeddingRequest, prompts: Option<&Prompts>) -> Result<Option<String>> {
    if let Some(instruction) = &request.instruction {
        return Ok(Some(format!("Instruct: {instruction}\nQuery:")));
    }
    let Some(name) = &request.prompt_name else {
        return Ok(None);
    };
    let prompts = prompts.ok_or_else(|| {
        EngineError::field(
            Field::PromptName,
            format!(
                "prompt_name {name:?} needs the model's config_sentence_transformers.json, which \
                 this model does not have; pass instruction=... instead"
            ),
        )
    })?;
    let prompt = prompts.get(name).ok_or_else(|| {
        let known: Vec<_> = prompts.names().collect();
        EngineError::field(
            Field::PromptName,
            format!("unknown prompt_name {name:?}; this model defines {known:?}"),
        )
    })?;
    Ok(Some(prompt.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(instruction: Option<&str>, prompt_name: Option<&str>) -> EmbeddingRequest {
        let mut req = EmbeddingRequest::new("x");
        req.instruction = instruction.map(str::to_owned);
        req.prompt_name = prompt_name.map(str::to_owned);
        req
    }

    #[test]
    fn instruction_uses_qwen_format() {
        let p = prefix(&request(Some("Find docs"), None), None)
            .unwrap()
            .unwrap();
        assert_eq!(format!("{p}what"), "Instruct: Find docs\nQuery:what");
        assert_eq!(prefix(&request(None, None), None).unwrap(), None);
    }

    #[test]
    fn prompt_name_needs_prompts() {
        let err = prefix(&request(None, Some("query")), None).unwrap_err();
        assert_eq!(err.request_field(), Some(Field::PromptName));
        assert!(
            err.to_string()
                .contains("config_sentence_transformers.json"),
            "{err}"
        );
        let prompts: Prompts =
            serde_json::from_str(r#"{"prompts": {"query": "Q:", "document": ""}}"#).unwrap();
        assert_eq!(
            prefix(&request(None, Some("query")), Some(&prompts))
                .unwrap()
                .as_deref(),
            Some("Q:")
        );
        let err = prefix(&request(None, Some("passage")), Some(&prompts))
            .unwrap_err()
            .to_string();
        assert!(err.contains("document") && err.contains("query"), "{err}");
    }
}
