//! Which models the server serves and under which names: one from `--model-id`, or several from
//! a `--config` selector file in mistral.rs's shape,
//! `{"NAME": {"Embedding": {"model_id": "...", "arch": "qwen3embedding"}}}`, where a reranker
//! is `{"NAME": {"Reranker": {"model_id": "Qwen/Qwen3-Reranker-0.6B"}}}`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle_embed_engine::{EmbedderOptions, EmbeddingArchitecture};
use serde::Deserialize;

use crate::args::ServeArgs;

/// One model to load and the name clients ask for it by.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: String,
    pub options: EmbedderOptions,
}

/// A selector file entry: an embedding model or a reranker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
enum Selector {
    Embedding(EmbeddingSelector),
    Reranker(EmbeddingSelector),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingSelector {
    model_id: String,
    #[serde(default)]
    arch: Option<String>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    tokenizer_json: Option<std::path::PathBuf>,
    #[serde(default)]
    revision: Option<String>,
}

impl ModelSpec {
    /// The models `args` ask for, in the order clients see them (the first is "default").
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Vec<Self>> {
        let base = |model_id: &str| EmbedderOptions {
            device: args.device.clone(),
            dtype: args.dtype.clone(),
            max_length: args.max_input_tokens,
            max_batch_tokens: args.max_batch_tokens,
            ..EmbedderOptions::new(model_id)
        };
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --config {}", path.display()))?;
            return Self::from_selector(&text, path, &base);
        }
        let Some(model_id) = &args.model_id else {
            bail!("give --model-id or --config");
        };
        Ok(vec![Self {
            name: args
                .served_model_name
                .clone()
                .unwrap_or_else(|| model_id.clone()),
            options: base(model_id),
        }])
    }

    fn from_selector(
        text: &str,
        path: &Path,
        base: &dyn Fn(&str) -> EmbedderOptions,
    ) -> anyhow::Result<Vec<Self>> {
        // serde_json keeps object order only with a feature; names are sorted instead, so which
        // model is "default" does not depend on how the file was written.
        let entries: BTreeMap<String, Selector> =
            serde_json::from_str(text).with_context(|| {
                format!(
                    "{}: expected {{\"NAME\": {{\"Embedding\": {{\"model_id\": \"...\", \"arch\": \
                 \"qwen3embedding\"}}}}}}, or {{\"NAME\": {{\"Reranker\": {{\"model_id\": \"...\"}}}}}}",
                    path.display()
                )
            })?;
        if entries.is_empty() {
            bail!("{}: the selector file lists no model", path.display());
        }
        entries
            .into_iter()
            .map(|(name, selector)| {
                let (sel, reranker) = match selector {
                    Selector::Embedding(sel) => (sel, false),
                    Selector::Reranker(sel) => (sel, true),
                };
                let mut options = base(&sel.model_id);
                if reranker {
                    options.arch = Some(EmbeddingArchitecture::Qwen3Reranker);
                } else if let Some(arch) = &sel.arch {
                    options.arch = Some(
                        arch.parse::<EmbeddingArchitecture>()
                            .with_context(|| format!("model `{name}` in {}", path.display()))?,
                    );
                }
                if let Some(dtype) = sel.dtype {
                    options.dtype = dtype;
                }
                options.source.tokenizer_json = sel.tokenizer_json;
                options.source.revision = sel.revision;
                Ok(Self { name, options })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn base(model_id: &str) -> EmbedderOptions {
        EmbedderOptions::new(model_id)
    }

    #[test]
    fn selector_file_in_the_seed_shape() {
        let text = r#"{
            "embed-qwen3": {"Embedding": {"model_id": "Qwen/Qwen3-Embedding-0.6B", "arch": "qwen3embedding"}},
            "small": {"Embedding": {"model_id": "/models/small"}},
            "z-rerank": {"Reranker": {"model_id": "Qwen/Qwen3-Reranker-0.6B"}}
        }"#;
        let specs = ModelSpec::from_selector(text, Path::new("sel.json"), &base).unwrap();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["embed-qwen3", "small", "z-rerank"]);
        assert_eq!(
            specs[2].options.arch,
            Some(EmbeddingArchitecture::Qwen3Reranker)
        );
        assert_eq!(
            specs[0].options.arch,
            Some(EmbeddingArchitecture::Qwen3Embedding)
        );
        assert_eq!(specs[1].options.source.model_id, "/models/small");
    }

    #[test]
    fn bad_selector_files_are_rejected() {
        for text in [
            "{}",
            r#"{"x": {"Plain": {"model_id": "m"}}}"#,
            r#"{"x": {"Embedding": {"model_id": "m", "arch": "bert"}}}"#,
            "not json",
        ] {
            assert!(
                ModelSpec::from_selector(text, Path::new("s.json"), &base).is_err(),
                "{text}"
            );
        }
    }

    #[test]
    fn served_name_defaults_to_the_model_id() {
        let args = ServeArgs::parse_from(["serve", "-m", "Qwen/Qwen3-Embedding-0.6B"]);
        assert_eq!(
            ModelSpec::from_args(&args).unwrap()[0].name,
            "Qwen/Qwen3-Embedding-0.6B"
        );
        let args = ServeArgs::parse_from(["serve", "-m", "m", "--served-model-name", "emb"]);
        assert_eq!(ModelSpec::from_args(&args).unwrap()[0].name, "emb");
    }
}
