//! Turning a text into what the model reads: the Qwen3-Embedding instruction format and the
//! named prompts of `config_sentence_transformers.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};

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

/// The prefix a request puts in front of every text, if any.
///
/// `instruction` follows Qwen's own `get_detailed_instruct`: no space after `Query:`.
pub fn prefix(
    instruction: Option<&str>,
    prompt_name: Option<&str>,
    prompts: Option<&Prompts>,
) -> Result<Option<String>> {
    match (instruction, prompt_name) {
        (Some(_), Some(_)) => Err(EngineError::invalid(
            "give either instruction or prompt_name, not both",
        )),
        (Some(instruction), None) => Ok(Some(format!("Instruct: {instruction}\nQuery:"))),
        (None, Some(name)) => {
            let prompts = prompts.ok_or_else(|| {
                EngineError::invalid(format!(
                    "prompt_name {name:?} needs the model's config_sentence_transformers.json, \
                     which this model does not have; pass instruction=... instead"
                ))
            })?;
            let prompt = prompts.get(name).ok_or_else(|| {
                let known: Vec<_> = prompts.names().collect();
                EngineError::invalid(format!(
                    "unknown prompt_name {name:?}; this model defines {known:?}"
                ))
            })?;
            Ok(Some(prompt.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_uses_qwen_format() {
        let p = prefix(Some("Find docs"), None, None).unwrap().unwrap();
        assert_eq!(format!("{p}what"), "Instruct: Find docs\nQuery:what");
    }

    #[test]
    fn prompt_name_needs_prompts() {
        let err = prefix(None, Some("query"), None).unwrap_err().to_string();
        assert!(err.contains("config_sentence_transformers.json"), "{err}");
        let prompts: Prompts =
            serde_json::from_str(r#"{"prompts": {"query": "Q:", "document": ""}}"#).unwrap();
        assert_eq!(
            prefix(None, Some("query"), Some(&prompts))
                .unwrap()
                .as_deref(),
            Some("Q:")
        );
        let err = prefix(None, Some("passage"), Some(&prompts))
            .unwrap_err()
            .to_string();
        assert!(err.contains("document") && err.contains("query"), "{err}");
    }

    #[test]
    fn both_is_an_error() {
        assert!(prefix(Some("a"), Some("query"), None).is_err());
    }
}
