//! Packing: a batch of token sequences becomes one token stream with no padding. Every linear
//! layer then runs on `(total_tokens, hidden)`, positions restart at 0 for each sequence, and the
//! sequence boundaries tell attention where it may look and pooling which rows to take.

use std::ops::Range;

/// Token sequences laid end to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedBatch {
    /// All tokens, sequence after sequence.
    pub input_ids: Vec<u32>,
    /// Position of each token inside its own sequence.
    pub positions: Vec<u32>,
    /// `offsets[i]..offsets[i + 1]` are the rows of sequence `i` (length `sequences + 1`).
    pub offsets: Vec<usize>,
}

impl PackedBatch {
    pub fn new<S: AsRef<[u32]>>(sequences: &[S]) -> Self {
        let total = sequences.iter().map(|s| s.as_ref().len()).sum();
        let mut input_ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(sequences.len() + 1);
        offsets.push(0);
        for seq in sequences {
            let seq = seq.as_ref();
            input_ids.extend_from_slice(seq);
            positions.extend(0..seq.len() as u32);
            offsets.push(input_ids.len());
        }
        Self {
            input_ids,
            positions,
            offsets,
        }
    }

    pub fn total_tokens(&self) -> usize {
        self.input_ids.len()
    }

    pub fn num_sequences(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Row range of each sequence.
    pub fn ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.offsets.windows(2).map(|w| w[0]..w[1])
    }

    /// Row of each sequence's last token (the pooled one).
    pub fn last_rows(&self) -> Vec<u32> {
        self.offsets[1..]
            .iter()
            .map(|&end| end as u32 - 1)
            .collect()
    }
}

/// The token budget of one forward pass, and the one rule for filling it: sequences join a
/// batch in order while the batch stays within the budget; a sequence longer than the whole
/// budget gets a batch of its own. [`crate::Embedder`] plans a request's passes with it, and the
/// server's scheduler fills passes from many requests with the same rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBudget(usize);

impl TokenBudget {
    /// A budget of `max_tokens` (at least 1).
    pub fn new(max_tokens: usize) -> Self {
        Self(max_tokens.max(1))
    }

    pub fn max_tokens(self) -> usize {
        self.0
    }

    /// Whether a sequence of `len` tokens joins a batch already holding `used`.
    pub fn admits(self, used: usize, len: usize) -> bool {
        used == 0 || used + len <= self.0
    }

    /// Splits sequences of `lengths` (in order) into consecutive batches.
    pub fn plan(self, lengths: &[usize]) -> Vec<Range<usize>> {
        let mut groups = Vec::new();
        let (mut start, mut used) = (0, 0);
        for (i, &len) in lengths.iter().enumerate() {
            if !self.admits(used, len) {
                groups.push(start..i);
                (start, used) = (i, 0);
            }
            used += len;
        }
        if start < lengths.len() {
            groups.push(start..lengths.len());
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_restart_per_sequence() {
        let batch = PackedBatch::new(&[vec![7, 8, 9], vec![5], vec![1, 2]]);
        assert_eq!(batch.input_ids, [7, 8, 9, 5, 1, 2]);
        assert_eq!(batch.positions, [0, 1, 2, 0, 0, 1]);
        assert_eq!(batch.ranges().collect::<Vec<_>>(), [0..3, 3..4, 4..6]);
        assert_eq!(batch.last_rows(), [2, 3, 5]);
        assert_eq!(batch.num_sequences(), 3);
    }

    #[test]
    fn batches_respect_the_token_budget() {
        let plan = |lengths: &[usize], max| TokenBudget::new(max).plan(lengths);
        assert_eq!(plan(&[3, 3, 3], 6), [0..2, 2..3]);
        assert_eq!(plan(&[10, 1, 1], 4), [0..1, 1..3]);
        assert_eq!(plan(&[1, 10, 1], 4), [0..1, 1..2, 2..3]);
        assert!(plan(&[], 4).is_empty());
        assert!(TokenBudget::new(4).admits(0, 9) && !TokenBudget::new(4).admits(1, 4));
    }
}
