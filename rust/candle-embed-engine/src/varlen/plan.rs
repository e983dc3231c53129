//! The kernel's work list: which query rows each block takes and which keys they see.

use std::ops::Range;
use std::sync::Arc;

use super::WARPS;

/// Up to [`WARPS`] consecutive query rows of one sequence. Row `r` of the task is query row
/// `q_row + r` and sees keys `first_key ..= last_key + r` (its sequence's start up to itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub q_row: u32,
    pub rows: u32,
    pub first_key: u32,
    pub last_key: u32,
}

impl Task {
    /// Key-row visits of the task: the work it stands for.
    pub(crate) fn cost(self) -> u64 {
        let span = u64::from(self.last_key - self.first_key) + 1;
        u64::from(self.rows) * span + u64::from(self.rows) * u64::from(self.rows) / 2
    }
}

/// Every task of one attention call, the heaviest first so no long task starts last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    tasks: Vec<Task>,
    /// The tasks as the kernel reads them, made once: a pass runs every layer on the same plan.
    words: Arc<[u32]>,
    /// Key rows the tasks read: one past the largest key.
    keys: usize,
}

impl Plan {
    /// Every token queries its own sequence up to itself (every layer but the last).
    pub fn all_rows(sequences: impl IntoIterator<Item = Range<usize>>) -> Self {
        let mut tasks = Vec::new();
        let mut keys = 0;
        for seq in sequences {
            keys = keys.max(seq.end);
            for start in seq.clone().step_by(WARPS) {
                tasks.push(Task {
                    q_row: to_u32(start),
                    rows: to_u32((seq.end - start).min(WARPS)),
                    first_key: to_u32(seq.start),
                    last_key: to_u32(start),
                });
            }
        }
        Self::sorted(tasks, keys)
    }

    /// Only each sequence's last token queries: query row `i` is sequence `i`'s last token (the
    /// last layer of an embedding model, where no other row is pooled).
    pub fn last_rows(sequences: impl IntoIterator<Item = Range<usize>>) -> Self {
        let mut keys = 0;
        let tasks = sequences
            .into_iter()
            .filter(|seq| !seq.is_empty())
            .enumerate()
            .map(|(i, seq)| {
                keys = keys.max(seq.end);
                Task {
                    q_row: to_u32(i),
                    rows: 1,
                    first_key: to_u32(seq.start),
                    last_key: to_u32(seq.end - 1),
                }
            })
            .collect();
        Self::sorted(tasks, keys)
    }

    fn sorted(mut tasks: Vec<Task>, keys: usize) -> Self {
        // Order changes when a block runs, never what it computes.
        tasks.sort_by_key(|t| std::cmp::Reverse(t.cost()));
        let words = tasks
            .iter()
            .flat_map(|t| [t.q_row, t.rows, t.first_key, t.last_key])
            .collect();
        Self { tasks, words, keys }
    }

    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The tasks as the kernel reads them: four u32 each.
    pub(crate) fn words(&self) -> Arc<[u32]> {
        Arc::clone(&self.words)
    }

    /// Refuses a plan that would read outside `q_rows` query rows or `tokens` keys, or leave a
    /// query row unwritten (the tasks never overlap, by construction).
    pub(crate) fn check(&self, q_rows: usize, tokens: usize) -> candle_core::Result<()> {
        let rows_end = self
            .tasks
            .iter()
            .map(|t| (t.q_row + t.rows) as usize)
            .max()
            .unwrap_or(0);
        let covered: usize = self.tasks.iter().map(|t| t.rows as usize).sum();
        if rows_end > q_rows || covered != q_rows || self.keys > tokens {
            candle_core::bail!(
                "varlen attention: the plan covers {covered} query rows (up to row {rows_end}) \
                 and reads {} keys; the tensors hold {q_rows} query rows and {tokens} keys",
                self.keys
            );
        }
        Ok(())
    }
}

fn to_u32(n: usize) -> u32 {
    // A forward pass is bounded by the token budget, far below 2^32 tokens.
    u32::try_from(n).expect("a packed batch holds fewer than 2^32 tokens")
}
