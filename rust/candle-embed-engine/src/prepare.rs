//! The first stage: a request is checked and tokenized against one model's limits, and what to
//! do with its vectors is settled ([`Output`]). Everything after it — packing, the forward pass,
//! finishing — works on token ids, whether the caller is Python, the SDK or the server.

use crate::error::Result;
use crate::output::Output;
use crate::prompt::{self, Prompts};
use crate::request::EmbeddingRequest;
use crate::tokenize::{EmbeddingTokenizer, LengthLimit};

/// What a model accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest input, in tokens.
    pub max_length: usize,
    /// Token ids must lie below this.
    pub vocab_size: usize,
    /// Values per vector, the most `dimensions` may ask for.
    pub hidden_size: usize,
}

/// A request ready for the model: its token sequences, in input order, and its output plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub sequences: Vec<Vec<u32>>,
    pub output: Output,
}

impl Prepared {
    /// Tokens of each sequence (what `usage.prompt_tokens` adds up).
    pub fn token_counts(&self) -> Vec<usize> {
        self.sequences.iter().map(Vec::len).collect()
    }
}

/// Checks `request` against `limits` and tokenizes it: the request's instruction or named prompt
/// (from `prompts`) in front of each text, `<|endoftext|>` after it, its length limit applied.
pub fn prepare(
    request: &EmbeddingRequest,
    tokenizer: &EmbeddingTokenizer,
    prompts: Option<&Prompts>,
    limits: &Limits,
) -> Result<Prepared> {
    request.check()?;
    let output = Output::for_request(request, limits.hidden_size)?;
    let length = LengthLimit::for_request(request, limits.max_length)?;
    let prefix = prompt::prefix(request, prompts)?;
    let sequences = tokenizer.encode_inputs(
        &request.input,
        prefix.as_deref(),
        &length,
        limits.vocab_size,
    )?;
    Ok(Prepared { sequences, output })
}
