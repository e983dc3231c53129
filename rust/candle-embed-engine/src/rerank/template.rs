//! Qwen3-Reranker's prompt: each (query, document) pair becomes one sequence — a fixed chat
//! prefix, `<Instruct>: …\n<Query>: …\n<Document>: …`, a fixed suffix that opens the assistant's
//! (empty) thinking — and the model's next token is judged "yes" or "no". Only the middle is ever
//! truncated, from the right, so the prefix and suffix always stay (the model card's recipe).

use crate::error::{EngineError, Result};
use crate::tokenize::EmbeddingTokenizer;

const PREFIX: &str = "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
const SUFFIX: &str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
/// The instruction when a request gives none.
pub const DEFAULT_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";

/// The prompt's fixed ids, tokenized once at load.
#[derive(Clone, Debug)]
pub struct Template {
    prefix: Vec<u32>,
    suffix: Vec<u32>,
    /// Longest sequence, prefix and suffix included.
    max_length: usize,
}

impl Template {
    pub fn new(tokenizer: &EmbeddingTokenizer, max_length: usize) -> Result<Self> {
        let prefix = tokenizer.encode_plain(PREFIX)?;
        let suffix = tokenizer.encode_plain(SUFFIX)?;
        if prefix.len() + suffix.len() >= max_length {
            return Err(EngineError::invalid(format!(
                "max_length {max_length} leaves no room for the document: the reranker's prompt \
                 alone takes {} tokens",
                prefix.len() + suffix.len()
            )));
        }
        Ok(Self {
            prefix,
            suffix,
            max_length,
        })
    }

    /// The token sequence for one pair.
    pub fn encode(
        &self,
        tokenizer: &EmbeddingTokenizer,
        instruction: Option<&str>,
        query: &str,
        document: &str,
    ) -> Result<Vec<u32>> {
        let instruction = instruction.unwrap_or(DEFAULT_INSTRUCTION);
        let middle = format!("<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}");
        let mut ids = tokenizer.encode_plain(&middle)?;
        ids.truncate(self.max_length - self.prefix.len() - self.suffix.len());
        let mut sequence = Vec::with_capacity(self.prefix.len() + ids.len() + self.suffix.len());
        sequence.extend_from_slice(&self.prefix);
        sequence.extend_from_slice(&ids);
        sequence.extend_from_slice(&self.suffix);
        Ok(sequence)
    }
}
