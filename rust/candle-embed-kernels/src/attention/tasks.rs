//! The work of one attention call cut into tasks (a sequence's query blocks × one K/V head),
//! and the walk of a task over its key blocks with a running softmax state.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::ops::Range;

use half::bf16;

use super::kernel::{Pass, PassKernel};
use super::pack::Packed;
use super::reference::Reference;
#[cfg(target_arch = "x86_64")]
use super::widened::{self, Widened};
use super::Stored;
use super::{Heads, KEYS, LANES, MAX_ROWS};
use crate::aligned::AlignedVec;
use crate::isa::Kernel;

/// One task: the positions of blocks `block..` of sequence `seq` (`out.len()` of them, at most
/// `TASK_BLOCKS · 32`), for the query heads of K/V head `head`. `out` holds each position's
/// `q/kv · dim` output columns.
pub(super) struct Task<'a, E> {
    seq: usize,
    block: usize,
    head: usize,
    out: Vec<&'a mut [E]>,
}

/// Query blocks per task: each K/V block read serves up to this many blocks of queries.
const TASK_BLOCKS: usize = 4;

/// Cuts the work into tasks, each handed its own columns of its own rows of the output (`rows`,
/// a token's each, at least `q·dim` long); the most expensive (latest) blocks first, so the
/// cheap ones fill in at the end.
pub(super) fn tasks<'a, E>(
    heads: Heads,
    sequences: &[Range<usize>],
    mut rows: impl Iterator<Item = &'a mut [E]>,
) -> Vec<Task<'a, E>> {
    let group = heads.q / heads.kv;
    let mut tasks = Vec::new();
    for (seq, range) in sequences.iter().enumerate() {
        for block in (0..range.len().div_ceil(KEYS)).step_by(TASK_BLOCKS) {
            let n = (TASK_BLOCKS * KEYS).min(range.len() - block * KEYS);
            let mut parts: Vec<Vec<&mut [E]>> =
                (0..heads.kv).map(|_| Vec::with_capacity(n)).collect();
            for row in rows.by_ref().take(n) {
                let columns = row[..heads.q * heads.dim].chunks_exact_mut(group * heads.dim);
                for (part, cols) in parts.iter_mut().zip(columns) {
                    part.push(cols);
                }
            }
            tasks.extend(parts.into_iter().enumerate().map(|(head, out)| Task {
                seq,
                block,
                head,
                out,
            }));
        }
    }
    tasks.sort_by_key(|t| Reverse(t.out.len() * (t.block * KEYS + t.out.len())));
    tasks
}

/// What every task reads.
pub(super) struct Job<'a, E: Stored> {
    pub(super) kernel: Kernel,
    pub(super) heads: Heads,
    pub(super) sequences: &'a [Range<usize>],
    pub(super) packed: Packed<E>,
    /// `scale · log2 e`: scores in base 2.
    pub(super) c: f32,
}

/// A task's running state, kept per thread so that short tasks do not allocate.
#[derive(Default)]
struct State {
    /// Aligned: the AMX kernel loads and stores it as tiles.
    o: AlignedVec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

/// How a task runs on `job`'s kernel with Q, K and V stored as this type.
pub(super) trait Runs: Stored {
    fn run(job: &Job<'_, Self>, task: Task<'_, Self>);
}

impl Runs for bf16 {
    fn run(job: &Job<'_, bf16>, task: Task<'_, bf16>) {
        match job.kernel {
            Kernel::Reference => job.run_with(&mut Reference, task),
            // The lane models are the GEMM's; attention's reference has the same arithmetic.
            #[cfg(test)]
            Kernel::SoftAvx512Bf16 | Kernel::SoftAvx512 | Kernel::SoftAvx2 => {
                job.run_with(&mut Reference, task);
            }
            // SAFETY: `attend` checked AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { on_widened::<widened::Avx2, _>(job, task) },
            // SAFETY: `attend` checked AVX-512F (with AVX2 and FMA).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { on_widened::<widened::Avx512, _>(job, task) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => {
                // SAFETY: `attend` checked AVX512-BF16.
                job.run_with(&mut unsafe { super::avx512::Avx512::new() }, task);
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => {
                // SAFETY: `attend` checked AMX (granted to the process) and AVX512-BF16.
                let mut kernel = unsafe { super::amx::AmxPasses::new(crate::tiles::Amx::new()) };
                job.run_with(&mut kernel, task);
            }
            #[cfg(all(test, target_arch = "x86_64"))]
            Kernel::SoftAmx => {
                // SAFETY: `attend` checked AVX512-BF16; the tile model needs nothing.
                let mut kernel =
                    unsafe { super::amx::AmxPasses::new(crate::tiles::SoftTiles::new()) };
                job.run_with(&mut kernel, task);
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel on another architecture"),
        }
    }
}

/// The exact path: the reference, or the widened loops over f32 (the families with bf16
/// instructions come here as [`crate::Isa::for_f32`] maps them).
impl Runs for f32 {
    fn run(job: &Job<'_, f32>, task: Task<'_, f32>) {
        match job.kernel {
            Kernel::Reference => job.run_with(&mut Reference, task),
            // SAFETY: `attend` checked AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { on_widened::<widened::Avx2, _>(job, task) },
            // SAFETY: `attend` checked AVX-512F (with AVX2 and FMA).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { on_widened::<widened::Avx512, _>(job, task) },
            other => unreachable!("attention in f32 has no {other:?} kernel"),
        }
    }
}

/// Runs `task` on the widened loop over `W`'s registers.
///
/// # Safety
/// The CPU has `W`'s instructions.
#[cfg(target_arch = "x86_64")]
unsafe fn on_widened<W: widened::Wide, E: Stored>(job: &Job<'_, E>, task: Task<'_, E>)
where
    Widened<W>: PassKernel<E>,
{
    // SAFETY: per the contract.
    let mut kernel = unsafe { Widened::<W>::new() };
    job.run_with(&mut kernel, task);
}

impl<E: Stored> Job<'_, E> {
    fn run_with<K: PassKernel<E>>(&self, kernel: &mut K, mut task: Task<'_, E>) {
        STATE.with_borrow_mut(|state| self.attend_task(kernel, &mut task, state));
    }

    /// Rows go by query block, then head, then position: row `(qb · group + t) · 32 + i` is
    /// query head t of the group at position i of the task's query block qb, so a pass is one
    /// head at consecutive positions, `q · dp` apart in the packed Q. Positions past the
    /// sequence's end are zero rows whose results are dropped; they see the keys of its last
    /// position.
    fn attend_task<K: PassKernel<E>>(
        &self,
        kernel: &mut K,
        task: &mut Task<'_, E>,
        state: &mut State,
    ) {
        let Heads { q, kv, .. } = self.heads;
        let (group, dp) = (q / kv, self.packed.dp);
        let seq_len = self.sequences[task.seq].len();
        let n = task.out.len();
        let (first, blocks) = (task.block * KEYS, n.div_ceil(KEYS));

        // Not zeroed: a row's first key block sets its state.
        let rows = blocks * group * KEYS;
        state.o.resize_for_overwrite(rows * dp);
        state.l.resize(rows * LANES, 0.0);
        state.m.clear();
        state.m.resize(rows, f32::NEG_INFINITY);
        let mut valid = [0usize; MAX_ROWS];
        // Key blocks go K::BLOCKS at a time from the sequence start (so a row's steps do not
        // depend on the task it is in); a query block takes the ones up to its own.
        for b in (0..task.block + blocks).step_by(K::BLOCKS) {
            let first_key = b * KEYS;
            let (k, v) = self.key_blocks::<K>(task, b);
            kernel.key_blocks(k, v, dp);
            // Query blocks before key block b see none of it.
            for qb in b.saturating_sub(task.block)..blocks {
                let (queries, _, _) = self.packed.block(task.seq, task.block + qb, task.head);
                let in_block = (n - qb * KEYS).min(KEYS);
                for t in 0..group {
                    for i in (0..in_block).step_by(K::ROWS) {
                        for (j, valid) in valid[..K::ROWS].iter_mut().enumerate() {
                            let position = first + qb * KEYS + (i + j).min(in_block - 1);
                            *valid = (position + 1 - first_key).min(seq_len - first_key);
                        }
                        let r = (qb * group + t) * KEYS + i;
                        let mut pass = Pass {
                            q: &queries[i * q * dp + (task.head * group + t) * dp..],
                            q_stride: q * dp,
                            o: &mut state.o[r * dp..(r + K::ROWS) * dp],
                            m: &mut state.m[r..r + K::ROWS],
                            l: &mut state.l[r * LANES..(r + K::ROWS) * LANES],
                            valid: &valid[..K::ROWS],
                            first: b == 0,
                            blocks: K::BLOCKS.min(task.block + qb + 1 - b),
                            k,
                            v,
                            dp,
                            c: self.c,
                        };
                        kernel.pass(&mut pass);
                    }
                }
            }
        }
        self.write_out(kernel, task, state);
    }

    /// K and V of key blocks `b..b + K::BLOCKS` of the task's head (empty past the sequence).
    #[allow(clippy::type_complexity)]
    fn key_blocks<K: PassKernel<E>>(
        &self,
        task: &Task<'_, E>,
        b: usize,
    ) -> ([&[E::Word]; 2], [&[E::Word]; 2]) {
        let blocks = self.sequences[task.seq].len().div_ceil(KEYS);
        let (mut k, mut v) = ([&[][..]; 2], [&[][..]; 2]);
        for i in 0..K::BLOCKS.min(blocks - b) {
            (_, k[i], v[i]) = self.packed.block(task.seq, b + i, task.head);
        }
        (k, v)
    }

    /// Divides each row by its probability sum and stores it into the task's output columns.
    fn write_out<K: PassKernel<E>>(&self, kernel: &K, task: &mut Task<'_, E>, state: &State) {
        let Heads { q, kv, dim } = self.heads;
        let (group, dp) = (q / kv, self.packed.dp);
        for (p, dst) in task.out.iter_mut().enumerate() {
            let (qb, i) = (p / KEYS, p % KEYS);
            for (t, dst) in dst.chunks_exact_mut(dim).enumerate() {
                let r = (qb * group + t) * KEYS + i;
                let total: f32 = state.l[r * LANES..(r + 1) * LANES].iter().sum();
                kernel.finish(&state.o[r * dp..r * dp + dim], 1.0 / total, dst);
            }
        }
    }
}
