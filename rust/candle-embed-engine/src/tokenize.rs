//! Text → token ids, the way Qwen3-Embedding expects them: the last token of every text is
//! `<|endoftext|>`, whether the checkpoint's tokenizer appends it (newer snapshots, through a
//! TemplateProcessing post-processor) or not (older ones, where we append it).

use std::path::Path;

use tokenizers::{PostProcessor, Tokenizer, TruncationDirection};

use crate::error::{EngineError, Result};
use crate::request::{EmbeddingInput, EmbeddingRequest, Field, TruncationSide};

/// The end-of-text token every text input must end with.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// How long each input of one request may be, and what to do when it is longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LengthLimit {
    pub max_tokens: usize,
    /// Cut to `max_tokens` (from `side`) instead of rejecting.
    pub truncate: bool,
    pub side: TruncationSide,
}

impl LengthLimit {
    /// The limit a request asks for, within the model's maximum `max_length`.
    pub fn for_request(request: &EmbeddingRequest, max_length: usize) -> Result<Self> {
        let (max_tokens, truncate) = match request.truncate_prompt_tokens {
            None => (max_length, request.truncate_sequence),
            Some(-1) => (max_length, true),
            Some(k) if k >= 1 => {
                let k = usize::try_from(k).unwrap_or(usize::MAX);
                if k > max_length {
                    return Err(EngineError::field(
                        Field::TruncatePromptTokens,
                        format!(
                            "truncate_prompt_tokens ({k}) is larger than the maximum input length \
                             ({max_length})"
                        ),
                    ));
                }
                (k, true)
            }
            // Refused by `EmbeddingRequest::check`.
            Some(k) => {
                return Err(EngineError::field(
                    Field::TruncatePromptTokens,
                    format!(
                        "truncate_prompt_tokens must be -1 or a positive number of tokens, got {k}"
                    ),
                ))
            }
        };
        Ok(Self {
            max_tokens,
            truncate,
            side: request.truncation_side,
        })
    }

    /// Applies the limit to an input of `len` tokens; `reserved` of the limit go to tokens added
    /// after truncation (the `<|endoftext|>`). Returns how many content tokens to keep.
    fn fit(&self, index: usize, len: usize, reserved: usize) -> Result<usize> {
        let total = len + reserved;
        if total <= self.max_tokens {
            return Ok(len);
        }
        if !self.truncate {
            return Err(EngineError::field(
                Field::Input,
                format!(
                    "input {index} has {total} tokens, more than the maximum of {}; shorten it, \
                     or truncate it with truncate_sequence or truncate_prompt_tokens",
                    self.max_tokens
                ),
            ));
        }
        Ok(self.max_tokens.saturating_sub(reserved))
    }
}

/// Cuts `ids` to `keep` tokens from the side the limit names.
fn cut(ids: &mut Vec<u32>, keep: usize, side: TruncationSide) {
    if ids.len() > keep {
        match side {
            TruncationSide::Right => ids.truncate(keep),
            TruncationSide::Left => {
                ids.drain(..ids.len() - keep);
            }
        }
    }
}

/// A `tokenizer.json` plus what we learned about its end-of-text handling at load.
#[derive(Clone, Debug)]
pub struct EmbeddingTokenizer {
    inner: Tokenizer,
    eos_id: u32,
    /// The post-processor already appends `<|endoftext|>`.
    appends_eos: bool,
    /// Tokens the post-processor adds to a single sequence (reserved from the length budget).
    added_tokens: usize,
    /// The special tokens' texts (a cut must not fall inside one).
    specials: Vec<String>,
}

impl EmbeddingTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(EngineError::FileNotFound {
                what: "tokenizer.json",
                path: path.to_owned(),
            });
        }
        let mut inner = Tokenizer::from_file(path).map_err(|err| {
            EngineError::invalid_file(path, format!("not a valid tokenizer.json: {err}"))
        })?;
        // Truncation and padding are ours to do; a tokenizer.json may carry its own settings.
        inner
            .with_truncation(None)
            .map_err(|err| EngineError::invalid_file(path, err))?;
        inner.with_padding(None);
        let eos_id = inner.token_to_id(EOS_TOKEN).ok_or_else(|| {
            EngineError::invalid_file(path, format!("the vocabulary has no {EOS_TOKEN} token"))
        })?;
        let probe = inner
            .encode_fast("a", true)
            .map_err(|err| EngineError::invalid_file(path, err))?;
        let appends_eos = probe.get_ids().last() == Some(&eos_id);
        let added_tokens = if appends_eos {
            inner
                .get_post_processor()
                .map_or(0, |p| p.added_tokens(false))
        } else {
            1
        };
        let specials = inner
            .get_added_tokens_decoder()
            .values()
            .map(|t| t.content.clone())
            .collect();
        tracing::debug!(appends_eos, eos_id, "loaded {}", path.display());
        Ok(Self {
            inner,
            eos_id,
            appends_eos,
            added_tokens,
            specials,
        })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Number of ids the tokenizer knows, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether the tokenizer itself appends `<|endoftext|>` (else the engine does).
    pub fn appends_eos(&self) -> bool {
        self.appends_eos
    }

    /// The ids of `text` alone: no special tokens, no `<|endoftext|>`.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode_fast(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|err| EngineError::Tokenizer(err.to_string()))
    }

    /// The id of the vocabulary entry `token` (as the tokenizer writes it), if there is one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The ids of the exact head [`crate::precut`] would tokenize for `text` when it needs `need`
    /// tokens, or `None` when it tokenizes the whole text (for the property tests).
    #[doc(hidden)]
    pub fn precut_head(&self, text: &str, need: usize) -> Result<Option<Vec<u32>>> {
        Ok(
            crate::precut::head(&self.inner, text, need, &self.specials)?
                .map(|(encoding, _)| encoding.get_ids().to_vec()),
        )
    }

    /// Tokenizes one text (already prefixed) so that it ends with `<|endoftext|>`.
    pub fn encode_text(&self, index: usize, text: &str, limit: &LengthLimit) -> Result<Vec<u32>> {
        // One token more than fits shows a text is too long: a long text is tokenized only that
        // far (see `precut`). Cutting from the left needs the text's end: it is tokenized whole.
        let room = limit.max_tokens.saturating_sub(self.added_tokens);
        let head = if limit.truncate && limit.side == TruncationSide::Left {
            None
        } else {
            crate::precut::head(&self.inner, text, room + 1, &self.specials)?
        };
        let mut encoding = match head {
            Some((_, cut)) if !limit.truncate => {
                return Err(EngineError::field(
                    Field::Input,
                    format!(
                        "input {index} has more than {} tokens (the first {cut} of its {} bytes \
                         hold more already); shorten it, or truncate it with truncate_sequence \
                         or truncate_prompt_tokens",
                        limit.max_tokens,
                        text.len()
                    ),
                ))
            }
            Some((encoding, _)) => encoding,
            None => self
                .inner
                .encode_fast(text, false)
                .map_err(|err| EngineError::Tokenizer(err.to_string()))?,
        };
        let keep = limit.fit(index, encoding.len(), self.added_tokens)?;
        if keep < encoding.len() {
            let direction = match limit.side {
                TruncationSide::Right => TruncationDirection::Right,
                TruncationSide::Left => TruncationDirection::Left,
            };
            encoding.truncate(keep, 0, direction);
        }
        if self.appends_eos {
            let encoding = self
                .inner
                .post_process(encoding, None, true)
                .map_err(|err| EngineError::Tokenizer(err.to_string()))?;
            Ok(encoding.get_ids().to_vec())
        } else {
            let mut ids = encoding.get_ids().to_vec();
            ids.push(self.eos_id);
            Ok(ids)
        }
    }

    /// The token sequences the model is fed for `input`, in input order ([`crate::prepare`]
    /// checked it is not empty).
    ///
    /// Texts get `prefix` and `<|endoftext|>`; token ids are taken as given (only truncated),
    /// and must lie below `vocab_size`.
    pub(crate) fn encode_inputs(
        &self,
        input: &EmbeddingInput,
        prefix: Option<&str>,
        limit: &LengthLimit,
        vocab_size: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let encode = |index: usize, text: &str| match prefix {
            Some(p) => self.encode_text(index, &format!("{p}{text}"), limit),
            None => self.encode_text(index, text, limit),
        };
        match input {
            EmbeddingInput::Text(text) => Ok(vec![encode(0, text)?]),
            EmbeddingInput::Texts(texts) => texts
                .iter()
                .enumerate()
                .map(|(i, text)| encode(i, text))
                .collect(),
            EmbeddingInput::Tokens(ids) => Ok(vec![Self::check_tokens(0, ids, limit, vocab_size)?]),
            EmbeddingInput::TokenBatch(batch) => batch
                .iter()
                .enumerate()
                .map(|(i, ids)| Self::check_tokens(i, ids, limit, vocab_size))
                .collect(),
        }
    }

    fn check_tokens(
        index: usize,
        ids: &[u32],
        limit: &LengthLimit,
        vocab_size: usize,
    ) -> Result<Vec<u32>> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(EngineError::field(
                Field::Input,
                format!(
                    "input {index} has token id {bad}, outside the vocabulary (ids 0..{vocab_size})"
                ),
            ));
        }
        let keep = limit.fit(index, ids.len(), 0)?;
        let mut ids = ids.to_vec();
        cut(&mut ids, keep, limit.side);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max_tokens: usize, truncate: bool, side: TruncationSide) -> LengthLimit {
        LengthLimit {
            max_tokens,
            truncate,
            side,
        }
    }

    #[test]
    fn fit_keeps_room_for_eos() {
        let l = limit(5, true, TruncationSide::Right);
        assert_eq!(l.fit(0, 3, 1).unwrap(), 3);
        assert_eq!(l.fit(0, 4, 1).unwrap(), 4);
        assert_eq!(l.fit(0, 9, 1).unwrap(), 4);
    }

    #[test]
    fn too_long_without_truncation_names_both_lengths() {
        let err = limit(5, false, TruncationSide::Right)
            .fit(2, 9, 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("input 2") && err.contains("10 tokens") && err.contains("maximum of 5"),
            "{err}"
        );
    }

    #[test]
    fn cut_keeps_the_named_side() {
        let mut right = vec![1, 2, 3, 4];
        cut(&mut right, 2, TruncationSide::Right);
        assert_eq!(right, [1, 2]);
        let mut left = vec![1, 2, 3, 4];
        cut(&mut left, 2, TruncationSide::Left);
        assert_eq!(left, [3, 4]);
    }

    #[test]
    fn request_limits() {
        let mut req = EmbeddingRequest::new("x");
        assert_eq!(
            LengthLimit::for_request(&req, 10).unwrap(),
            limit(10, false, TruncationSide::Right)
        );
        req.truncate_sequence = true;
        assert!(LengthLimit::for_request(&req, 10).unwrap().truncate);
        req.truncate_prompt_tokens = Some(4);
        req.truncation_side = TruncationSide::Left;
        assert_eq!(
            LengthLimit::for_request(&req, 10).unwrap(),
            limit(4, true, TruncationSide::Left)
        );
        req.truncate_prompt_tokens = Some(-1);
        assert_eq!(LengthLimit::for_request(&req, 10).unwrap().max_tokens, 10);
        for bad in [0, -2, 11] {
            req.truncate_prompt_tokens = Some(bad);
            assert!(LengthLimit::for_request(&req, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_ids_are_checked_against_the_vocabulary() {
        let l = limit(8, false, TruncationSide::Right);
        assert_eq!(
            EmbeddingTokenizer::check_tokens(0, &[1, 2], &l, 3).unwrap(),
            [1, 2]
        );
        let err = EmbeddingTokenizer::check_tokens(1, &[1, 3], &l, 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("token id 3") && err.contains("0..3"), "{err}");
    }
}
