//! `config.json` of a Qwen3 checkpoint, read once and checked once. Settings this engine does
//! not implement are rejected here, so the model code never has to second-guess them.

use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};
use crate::weights::WeightReader;

/// The longest context a config may declare: 2^20 positions, 32× Qwen3's.
pub const MAX_POSITIONS: usize = 1 << 20;

/// RoPE settings in the newer `rope_parameters` form.
#[derive(Clone, Debug, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_type: Option<String>,
}

/// Mirrors the fields of a Qwen3 `config.json` that the forward pass uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Absent in some exports; then hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// Older configs carry `rope_theta`, newer ones `rope_parameters.rope_theta`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_act() -> String {
    "silu".to_owned()
}

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => EngineError::FileNotFound {
                what: "config.json",
                path: path.to_owned(),
            },
            _ => EngineError::invalid_file(path, err),
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|err| {
            EngineError::invalid_file(path, format!("not a valid Qwen3 config: {err}"))
        })?;
        config
            .validate()
            .map_err(|message| EngineError::invalid_file(path, message))?;
        Ok(config)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .map(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(1_000_000.0)
    }

    /// Whether the config describes a Qwen3 decoder: `model_type` decides when present (as in
    /// transformers' `AutoConfig`), the architecture names only when it is missing.
    pub fn is_qwen3(&self) -> bool {
        match self.model_type.as_deref() {
            Some(model_type) => model_type == "qwen3",
            None => self
                .architectures
                .iter()
                .flatten()
                .any(|a| a.starts_with("Qwen3") && !a.contains("Moe") && !a.contains("VL")),
        }
    }

    /// The checks a config must pass before anything is sized from it.
    fn validate(&self) -> std::result::Result<(), String> {
        if !self.is_qwen3() {
            return Err(format!(
                "unsupported architecture (model_type {:?}, architectures {:?}); candle-embed runs \
                 Qwen3 decoders (model_type \"qwen3\"), e.g. Qwen/Qwen3-Embedding-0.6B",
                self.model_type, self.architectures
            ));
        }
        if self.hidden_act != "silu" {
            return Err(format!(
                "hidden_act {:?} is not supported (expected \"silu\")",
                self.hidden_act
            ));
        }
        if self.attention_bias {
            return Err(
                "attention_bias = true is not supported (Qwen3 projections have no bias)".into(),
            );
        }
        if self.use_sliding_window {
            return Err("use_sliding_window = true is not supported".into());
        }
        let scaling = self
            .rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .and_then(|v| v.get("rope_type").or_else(|| v.get("type")))
            .and_then(|v| v.as_str());
        let rope_type = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.rope_type.as_deref())
            .or(scaling);
        if let Some(kind) = rope_type.filter(|t| *t != "default") {
            return Err(format!(
                "rope_type {kind:?} is not supported (expected \"default\")"
            ));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        // RoPE's tables hold a row per position, so a hostile length would be an allocation
        // the process cannot survive; Qwen3 checkpoints declare 32,768 or 40,960.
        if self.max_position_embeddings > MAX_POSITIONS {
            return Err(format!(
                "max_position_embeddings {} is beyond what candle-embed runs (at most {MAX_POSITIONS})",
                self.max_position_embeddings
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            return Err(format!(
                "head_dim must be a positive even number, got {}",
                self.head_dim()
            ));
        }
        Ok(())
    }
}

/// Model families candle-embed can run: the Qwen3-Embedding models, and their sibling
/// Qwen3-Reranker (the same decoder, a chat prompt around each pair, two rows of the LM head).
/// The names are what users ask for (`arch="qwen3embedding"`, as in mistral.rs's selector files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum EmbeddingArchitecture {
    #[default]
    Qwen3Embedding,
    Qwen3Reranker,
}

impl EmbeddingArchitecture {
    pub const ALL: [Self; 2] = [Self::Qwen3Embedding, Self::Qwen3Reranker];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qwen3Embedding => "qwen3embedding",
            Self::Qwen3Reranker => "qwen3reranker",
        }
    }

    /// Checks that `config` describes a model of this architecture.
    pub fn check(self, config: &Config, path: &Path) -> Result<()> {
        if config.is_qwen3() {
            return Ok(());
        }
        Err(EngineError::invalid_file(
            path,
            format!(
                "arch {:?} was requested but the config describes model_type {:?}",
                self.as_str(),
                config.model_type
            ),
        ))
    }

    /// Checks that the checkpoint's tensors are this kind of model. A reranker is a saved
    /// `Qwen3ForCausalLM`: tensors under `model.` and a head (`lm_head.weight`, or tied to the
    /// embeddings). An embedding checkpoint has no head. (A tied reranker and an embedding model
    /// saved as a causal LM hold the same tensors; only the recipe used tells them apart.)
    pub fn check_weights(self, config: &Config, weights: &WeightReader) -> Result<()> {
        let head = weights.has("lm_head.weight");
        match self {
            Self::Qwen3Embedding if head => Err(EngineError::invalid(
                "this checkpoint has a language-model head (lm_head.weight): it is a \
                 Qwen3-Reranker or a chat model, not an embedding model; load a reranker with \
                 Which.Reranker (arch \"qwen3reranker\")",
            )),
            Self::Qwen3Reranker
                if !weights.under_model() || !(head || config.tie_word_embeddings) =>
            {
                Err(EngineError::invalid(
                    "this checkpoint has no language-model head (no lm_head.weight, and no \
                     model.-prefixed tensors with tie_word_embeddings): it is an embedding \
                     model such as Qwen3-Embedding, not a reranker; load it with Which.Embedding",
                ))
            }
            _ => Ok(()),
        }
    }
}

impl std::str::FromStr for EmbeddingArchitecture {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.replace(['-', '_'], "").to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == wanted)
            .ok_or_else(|| {
                EngineError::invalid(format!(
                    "unknown architecture {s:?}; supported: \"qwen3embedding\", \"qwen3reranker\""
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> std::result::Result<Config, String> {
        parse_as("qwen3", extra)
    }

    fn parse_as(model_type: &str, extra: &str) -> std::result::Result<Config, String> {
        let json = format!(
            r#"{{"model_type": "{model_type}", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                "max_position_embeddings": 32, "rms_norm_eps": 1e-6 {extra}}}"#
        );
        let config: Config = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    #[allow(clippy::float_cmp)] // parsed literals are exact
    fn rope_theta_comes_from_either_form() {
        assert_eq!(parse(r#", "rope_theta": 5.0"#).unwrap().rope_theta(), 5.0);
        let nested = parse(r#", "rope_parameters": {"rope_theta": 7.0, "rope_type": "default"}"#);
        assert_eq!(nested.unwrap().rope_theta(), 7.0);
    }

    #[test]
    fn head_dim_defaults_to_hidden_over_heads() {
        assert_eq!(parse("").unwrap().head_dim(), 4);
        assert_eq!(parse(r#", "head_dim": 16"#).unwrap().head_dim(), 16);
    }

    #[test]
    fn architecture_names() {
        for name in ["qwen3embedding", "Qwen3Embedding", "qwen3-embedding"] {
            assert_eq!(
                name.parse::<EmbeddingArchitecture>().unwrap(),
                EmbeddingArchitecture::Qwen3Embedding
            );
        }
        assert!("bert".parse::<EmbeddingArchitecture>().is_err());
    }

    #[test]
    fn unsupported_settings_are_rejected() {
        assert!(parse(r#", "hidden_act": "gelu""#)
            .unwrap_err()
            .contains("silu"));
        assert!(
            parse(r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#)
                .unwrap_err()
                .contains("yarn")
        );
        let mut config = parse("").unwrap();
        config.num_key_value_heads = 3;
        assert!(config.validate().unwrap_err().contains("multiple"));
        assert!(parse(r#", "head_dim": 3"#).unwrap_err().contains("even"));
        let bert = parse_as("bert", "").unwrap_err();
        assert!(bert.contains("unsupported architecture"), "{bert}");
        // model_type wins over a Qwen3 architecture name.
        let mislabelled = parse_as("bert", r#", "architectures": ["Qwen3Model"]"#).unwrap_err();
        assert!(
            mislabelled.contains("unsupported architecture"),
            "{mislabelled}"
        );
    }
}
