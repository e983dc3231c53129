//! The reranker's head: of the LM head's vocabulary-wide rows only two matter, those of the
//! tokens "yes" and "no". `score = softmax([no, yes])[yes] = sigmoid(yes − no)`, from two dot
//! products with the last position's final hidden state — never the whole vocabulary's logits.

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::pool::Pooled;
use crate::tokenize::EmbeddingTokenizer;
use crate::weights::WeightReader;

#[derive(Clone, Debug)]
pub struct Head {
    yes: Vec<f32>,
    no: Vec<f32>,
}

impl Head {
    /// The "yes" and "no" rows of `lm_head.weight`, or of the embeddings when the head is tied;
    /// the tokens are looked up by text in the tokenizer.
    pub fn load(
        config: &Config,
        weights: &WeightReader,
        tokenizer: &EmbeddingTokenizer,
    ) -> Result<Self> {
        let id = |token: &str| {
            tokenizer
                .token_id(token)
                .map(|id| id as usize)
                .ok_or_else(|| {
                    EngineError::invalid(format!(
                    "the reranker's tokenizer has no token {token:?}, which its score is read from"
                ))
                })
        };
        let (yes, no) = (id("yes")?, id("no")?);
        let matrix = if weights.has("lm_head.weight") {
            "lm_head.weight"
        } else {
            "model.embed_tokens.weight"
        };
        let mut rows = weights.rows_f32(matrix, &[yes, no], config.hidden_size)?;
        let no = rows.pop().unwrap_or_default();
        let yes = rows.pop().unwrap_or_default();
        Ok(Self { yes, no })
    }

    /// One relevance score in [0, 1] per pooled row. The dot products are summed in f64, so a
    /// score does not depend on how the rows were batched.
    pub fn scores(&self, pooled: &Pooled) -> Vec<f32> {
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum::<f64>()
        };
        (0..pooled.rows())
            .map(|i| {
                let h = pooled.row(i);
                let margin = dot(h, &self.yes) - dot(h, &self.no);
                (1.0 / (1.0 + (-margin).exp())) as f32
            })
            .collect()
    }
}
