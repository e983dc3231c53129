//! `Which` and `EmbeddingArchitecture`: which model to load, in the seed API's shape
//! (`Which.Embedding(model_id=..., arch=EmbeddingArchitecture.Qwen3Embedding)`).

use std::path::PathBuf;

use candle_embed_engine::{EmbeddingArchitecture, ModelSource};
use pyo3::prelude::*;

/// Model families candle-embed can run.
#[pyclass(
    name = "EmbeddingArchitecture",
    module = "candle_embed._native",
    eq,
    frozen,
    hash,
    from_py_object
)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PyEmbeddingArchitecture {
    Qwen3Embedding,
}

impl From<PyEmbeddingArchitecture> for EmbeddingArchitecture {
    fn from(arch: PyEmbeddingArchitecture) -> Self {
        match arch {
            PyEmbeddingArchitecture::Qwen3Embedding => Self::Qwen3Embedding,
        }
    }
}

/// Which model a `Runner` loads.
#[pyclass(
    name = "Which",
    module = "candle_embed._native",
    frozen,
    from_py_object
)]
#[derive(Clone)]
pub enum PyWhich {
    /// An embedding model: a local directory or a hub id such as "Qwen/Qwen3-Embedding-0.6B".
    /// arch=None detects the architecture from config.json; tokenizer_json overrides the model's
    /// tokenizer; dtype is "auto", "f32", "bf16" or "f16"; revision picks a hub branch, tag or
    /// commit; hf_cache_path overrides the Hugging Face cache directory.
    #[pyo3(constructor = (model_id, arch=None, tokenizer_json=None, dtype="auto".to_owned(), revision=None, hf_cache_path=None))]
    Embedding {
        model_id: String,
        arch: Option<PyEmbeddingArchitecture>,
        tokenizer_json: Option<PathBuf>,
        dtype: String,
        revision: Option<String>,
        hf_cache_path: Option<PathBuf>,
    },
    /// A Qwen3-Reranker: a local directory or a hub id such as "Qwen/Qwen3-Reranker-0.6B".
    /// The checkpoint must be a reranker (a causal LM with its head); an embedding model is
    /// refused, and the reverse. The other arguments are Embedding's.
    #[pyo3(constructor = (model_id, tokenizer_json=None, dtype="auto".to_owned(), revision=None, hf_cache_path=None))]
    Reranker {
        model_id: String,
        tokenizer_json: Option<PathBuf>,
        dtype: String,
        revision: Option<String>,
        hf_cache_path: Option<PathBuf>,
    },
}

impl PyWhich {
    pub fn source(&self) -> ModelSource {
        let (Self::Embedding {
            model_id,
            tokenizer_json,
            revision,
            hf_cache_path,
            ..
        }
        | Self::Reranker {
            model_id,
            tokenizer_json,
            revision,
            hf_cache_path,
            ..
        }) = self;
        ModelSource {
            model_id: model_id.clone(),
            tokenizer_json: tokenizer_json.clone(),
            revision: revision.clone(),
            hf_cache_path: hf_cache_path.clone(),
        }
    }

    pub fn arch(&self) -> Option<EmbeddingArchitecture> {
        match self {
            Self::Embedding { arch, .. } => arch.map(Into::into),
            Self::Reranker { .. } => Some(EmbeddingArchitecture::Qwen3Reranker),
        }
    }

    pub fn dtype(&self) -> &str {
        let (Self::Embedding { dtype, .. } | Self::Reranker { dtype, .. }) = self;
        dtype
    }

    pub fn is_reranker(&self) -> bool {
        matches!(self, Self::Reranker { .. })
    }
}
