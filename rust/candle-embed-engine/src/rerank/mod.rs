//! Qwen3-Reranker: relevance scores for (query, document) pairs, through the embedding models'
//! stages — [`Reranker::prepare`] (the [`template`] around each pair) → the same [`Decoder`]
//! over packed pairs (so a score does not depend on its batch) → [`Reranker::finish`] (the two
//! rows of the [`head`]).

pub mod head;
pub mod request;
pub mod template;

use std::sync::Arc;

use crate::decoder::{forward_all_until, Decoder};
use crate::embedder::{EmbedderOptions, Loaded, ModelInfo};
use crate::error::Result;
use crate::pack::TokenBudget;
use crate::pool::Pooled;
use crate::tokenize::EmbeddingTokenizer;
use crate::EmbeddingArchitecture;
use head::Head;
pub use request::{rank, Ranked, RerankRequest};
use template::Template;

/// Longest pair when the caller sets no `max_length`: the recipe's 8,192 (or the model's
/// maximum, if smaller).
pub const DEFAULT_MAX_LENGTH: usize = 8192;

/// A loaded reranker.
pub struct Reranker {
    decoder: Arc<dyn Decoder>,
    tokenizer: EmbeddingTokenizer,
    template: Template,
    head: Head,
    info: ModelInfo,
}

/// A request's scores, in the order of its documents, with the tokens each pair took.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub scores: Vec<f32>,
    pub token_counts: Vec<usize>,
}

impl Scores {
    pub fn prompt_tokens(&self) -> usize {
        self.token_counts.iter().sum()
    }
}

impl Reranker {
    /// Loads a Qwen3-Reranker checkpoint (`options.arch` is ignored: it is one).
    pub fn load(options: &EmbedderOptions) -> Result<Self> {
        let loaded = Loaded::load(
            options,
            EmbeddingArchitecture::Qwen3Reranker,
            DEFAULT_MAX_LENGTH,
        )?;
        let template = Template::new(&loaded.tokenizer, loaded.info.max_length)?;
        let head = Head::load(&loaded.config, &loaded.weights, &loaded.tokenizer)?;
        Ok(Self {
            decoder: loaded.decoder,
            tokenizer: loaded.tokenizer,
            template,
            head,
            info: loaded.info,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn budget(&self) -> TokenBudget {
        TokenBudget::new(self.info.max_batch_tokens)
    }

    pub fn decoder(&self) -> Arc<dyn Decoder> {
        Arc::clone(&self.decoder)
    }

    /// Stage one: the request checked, each pair as the token sequence the model reads.
    pub fn prepare(&self, request: &RerankRequest) -> Result<Vec<Vec<u32>>> {
        request.check()?;
        request
            .documents
            .iter()
            .map(|document| {
                self.template.encode(
                    &self.tokenizer,
                    request.instruction.as_deref(),
                    &request.query,
                    document,
                )
            })
            .collect()
    }

    /// The last stage: each pair's score from its pooled row.
    pub fn finish(&self, pooled: &Pooled) -> Vec<f32> {
        self.head.scores(pooled)
    }

    /// Scores every document of `request`: prepare, forward in budget-sized passes, finish.
    pub fn rerank(&self, request: &RerankRequest) -> Result<Scores> {
        self.rerank_until(request, &|| true)
    }

    /// [`Self::rerank`], stopped with an error when `go_on` (asked before each pass) says no.
    pub fn rerank_until(
        &self,
        request: &RerankRequest,
        go_on: &(dyn Fn() -> bool + Sync),
    ) -> Result<Scores> {
        let sequences = self.prepare(request)?;
        let pooled = forward_all_until(&*self.decoder, &sequences, self.budget(), go_on)?;
        Ok(Scores {
            scores: self.finish(&pooled),
            token_counts: sequences.iter().map(Vec::len).collect(),
        })
    }

    /// The ids the model reads for each pair (for tests and token counting).
    pub fn tokenize(&self, request: &RerankRequest) -> Result<Vec<Vec<u32>>> {
        self.prepare(request)
    }
}
