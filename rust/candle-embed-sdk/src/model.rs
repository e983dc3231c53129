//! `EmbeddingModel`: a loaded model answering requests asynchronously.

use std::sync::Arc;

use candle_embed_engine::{Embedder, EmbeddingRequest, Embeddings, ModelInfo};

use crate::Result;

/// A loaded embedding model; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct EmbeddingModel {
    embedder: Arc<Embedder>,
}

impl EmbeddingModel {
    pub(crate) fn new(embedder: Arc<Embedder>) -> Self {
        Self { embedder }
    }

    /// One vector per input, in input order.
    pub async fn generate_embeddings(
        &self,
        request: impl Into<EmbeddingRequest>,
    ) -> Result<Vec<Vec<f32>>> {
        Ok(self.embed(request).await?.to_vecs())
    }

    /// Vectors plus the number of tokens each input was embedded with.
    pub async fn embed(&self, request: impl Into<EmbeddingRequest>) -> Result<Embeddings> {
        let request = request.into();
        let embedder = Arc::clone(&self.embedder);
        Ok(tokio::task::spawn_blocking(move || embedder.embed(&request)).await??)
    }

    pub fn info(&self) -> &ModelInfo {
        self.embedder.info()
    }

    /// The synchronous engine underneath, for callers that manage their own threads.
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }
}
