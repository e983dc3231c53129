//! `EmbeddingModelBuilder`: where the model comes from and how it runs.

use std::path::PathBuf;
use std::sync::Arc;

use candle_embed_engine::{Embedder, EmbedderOptions, EmbeddingArchitecture};

use crate::model::EmbeddingModel;
use crate::Result;

/// Configures and loads an [`EmbeddingModel`].
#[derive(Clone, Debug)]
pub struct EmbeddingModelBuilder {
    options: EmbedderOptions,
    logging: bool,
}

impl EmbeddingModelBuilder {
    /// A local directory or a hub id such as `Qwen/Qwen3-Embedding-0.6B`.
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            options: EmbedderOptions::new(model_id),
            logging: false,
        }
    }

    /// Print log lines to stderr, filtered by `CANDLE_EMBED_LOG` (default `info`), unless the
    /// application installed a logger of its own first.
    #[must_use]
    pub fn with_logging(mut self) -> Self {
        self.logging = true;
        self
    }

    /// `cpu` (default), `cuda`, `cuda:N`, `metal`.
    #[must_use]
    pub fn with_device(mut self, device: impl Into<String>) -> Self {
        self.options.device = device.into();
        self
    }

    /// `auto` (default), `f32`, `bf16`, `f16`.
    #[must_use]
    pub fn with_dtype(mut self, dtype: impl Into<String>) -> Self {
        self.options.dtype = dtype.into();
        self
    }

    #[must_use]
    pub fn with_arch(mut self, arch: EmbeddingArchitecture) -> Self {
        self.options.arch = Some(arch);
        self
    }

    /// Cap on input tokens, below the model's own maximum.
    #[must_use]
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.options.max_length = Some(max_length);
        self
    }

    /// Token budget of one forward pass.
    #[must_use]
    pub fn with_max_batch_tokens(mut self, tokens: usize) -> Self {
        self.options.max_batch_tokens = tokens;
        self
    }

    /// Hub branch, tag or commit.
    #[must_use]
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.options.source.revision = Some(revision.into());
        self
    }

    #[must_use]
    pub fn with_tokenizer_json(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.source.tokenizer_json = Some(path.into());
        self
    }

    #[must_use]
    pub fn with_hf_cache_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.source.hf_cache_path = Some(path.into());
        self
    }

    /// Finds or downloads the files and loads the model (on the blocking pool).
    pub async fn build(self) -> Result<EmbeddingModel> {
        if self.logging {
            candle_embed_engine::logging::init("info");
        }
        let options = self.options;
        let embedder = tokio::task::spawn_blocking(move || Embedder::load(&options)).await??;
        Ok(EmbeddingModel::new(Arc::new(embedder)))
    }
}
