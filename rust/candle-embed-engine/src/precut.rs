//! Never tokenize more text than can be used. A text far longer than the length limit is cut
//! before the tokenizer sees it — at a place where the tokens of the cut text are exactly the
//! first tokens of the whole text — so a 2 MB string costs the tokenizer a few kilobytes, and an
//! over-long text is refused after reading no more than shows it is too long.
//!
//! Why the cut is exact: Qwen3's tokenizer (like every byte-level BPE tokenizer) splits text into
//! pieces with its pre-tokenizer's regex and merges bytes only inside a piece, so the tokens of
//! whole pieces do not depend on what follows them. The cut is put at a piece boundary of the
//! head, two pieces back from its end (a piece's regex may look one character ahead, and NFC may
//! join a character with the next), and at least the longest special token's length back (a
//! special token cut in two is not one). The property test in `tokenize.rs`'s tests checks this on
//! adversarial text against tokenizing everything.

use tokenizers::{
    Encoding, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

use crate::error::{EngineError, Result};

/// Texts up to this many bytes per token of the limit are tokenized whole (cutting gains
/// nothing there, and the refusal of an over-long text can state its exact length).
pub const WHOLE_BYTES_PER_TOKEN: usize = 16;
/// The first guess of bytes per token; the head doubles until it holds enough tokens.
const GUESS_BYTES_PER_TOKEN: usize = 6;

/// The encoding of an exact head of `text` holding at least `need` tokens, and the head's length
/// in bytes; `None` when `text` is short enough to tokenize whole (or no cut holds `need`).
pub fn head(
    tokenizer: &Tokenizer,
    text: &str,
    need: usize,
    specials: &[String],
) -> Result<Option<(Encoding, usize)>> {
    if text.len() <= need.saturating_mul(WHOLE_BYTES_PER_TOKEN) {
        return Ok(None);
    }
    let mut bytes = need.saturating_mul(GUESS_BYTES_PER_TOKEN).max(1024);
    while bytes < text.len() {
        let head = &text[..floor_char_boundary(text, bytes)];
        if let Some(cut) = safe_cut(tokenizer, head, specials)? {
            let encoding = tokenizer
                .encode_fast(&text[..cut], false)
                .map_err(|err| EngineError::Tokenizer(err.to_string()))?;
            if encoding.len() >= need {
                return Ok(Some((encoding, cut)));
            }
        }
        bytes = bytes.saturating_mul(2);
    }
    Ok(None)
}

/// A byte offset in `head` where the tokens before it are final: the start of the piece two
/// before the last, not inside a special token, and far enough from the end that no special
/// token can reach across it.
fn safe_cut(tokenizer: &Tokenizer, head: &str, specials: &[String]) -> Result<Option<usize>> {
    let Some(pre_tokenizer) = tokenizer.get_pre_tokenizer() else {
        return Ok(None);
    };
    // Pieces as the tokenizer makes them: of the normalized text (NFC may join a letter and its
    // marks), with offsets back in `head`.
    let mut normalized = NormalizedString::from(head);
    if let Some(normalizer) = tokenizer.get_normalizer() {
        normalizer
            .normalize(&mut normalized)
            .map_err(|err| EngineError::Tokenizer(err.to_string()))?;
    }
    let mut pieces = PreTokenizedString::from(normalized);
    pre_tokenizer
        .pre_tokenize(&mut pieces)
        .map_err(|err| EngineError::Tokenizer(err.to_string()))?;
    let starts: Vec<usize> = pieces
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .iter()
        .map(|(_, (start, _), _)| *start)
        .collect();
    let longest = specials.iter().map(String::len).max().unwrap_or(0);
    let limit = head.len().saturating_sub(longest);
    let Some(kept) = starts.len().checked_sub(2).map(|n| &starts[..n]) else {
        return Ok(None);
    };
    let Some(cut) = kept.iter().rev().copied().find(|&s| s > 0 && s <= limit) else {
        return Ok(None);
    };
    // A special token is split off before normalizing: cutting inside one would break it, so
    // the cut moves to its start (always a boundary).
    let window = floor_char_boundary(head, cut.saturating_sub(longest));
    let end = ceil_char_boundary(head, cut + longest);
    let inside = specials
        .iter()
        .flat_map(|token| {
            head[window..end]
                .match_indices(token.as_str())
                .map(move |(at, t)| (window + at, t.len()))
        })
        .filter(|&(start, len)| start < cut && cut < start + len)
        .map(|(start, _)| start)
        .min();
    Ok(Some(inside.unwrap_or(cut)).filter(|&c| c > 0))
}

fn ceil_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
