//! Causal grouped-query attention over packed sequences, bf16 products with f32 softmax.
//!
//! Flash-style: a task takes up to 128 positions of one sequence for the `q/kv` query heads that
//! share one K/V head, and walks the sequence's 32-key blocks up to the diagonal with a running
//! maximum and sum per row, rescaling its f32 accumulator; no L×L score matrix exists, and a
//! task's scratch is its rows' state (rows × head_dim). Q, K and V are first rounded to bf16 in
//! one sweep over `qkv` (a bf16 copy half the size of the f32 input), K and V straight into the
//! layouts the kernels multiply, so each K/V block is converted once and then read by every
//! query head of its group.
//!
//! Four kernels, one arithmetic: Q, K, V and the probabilities P are rounded to bf16 (nearest
//! even), products are summed in f32, the softmax runs in f32 in base 2 (`exp2` of
//! `scale·log2 e·q·k`), and the output is rounded to bf16 once at the end. [`Isa::Reference`] is
//! portable scalar code; [`Isa::Avx512Bf16`] does the same operations in the same order with
//! `vdpbf16ps` (bit for bit equal), [`Isa::Avx2`] with f32 fused multiply-adds on bf16 widened in
//! registers (bit for bit equal too: every product is exact); [`Isa::Amx`] computes the two
//! products with tiles, which sum a 32-wide dot product in their own order, and takes its softmax
//! steps 64 keys at a time. A
//! row's result depends only on its own sequence (blocks start at the sequence's first token,
//! and no reduction crosses rows), so a text gets the same bits whatever it is packed with.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::isa::Isa;
use crate::matrix::{f32_to_bf16, BfMatrix};

/// Head counts of a grouped-query attention layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub q: usize,
    /// Key/value heads; each serves `q / kv` consecutive query heads.
    pub kv: usize,
    /// Elements per head.
    pub dim: usize,
}

/// Keys per block: two 16-lane registers, or two 16-column tiles, of scores per query row.
const KEYS: usize = 32;
/// Lanes of the per-row partial sums (one register).
const LANES: usize = 16;
/// Query rows of the largest kernel pass (AMX: two 16-row tiles).
const MAX_ROWS: usize = 32;

/// Causal attention inside each packed sequence.
///
/// `qkv` is f32, `tokens × (q + 2·kv)·dim`, each row holding the q heads, then the k heads, then
/// the v heads (RMS-normed and rotated already). `sequences` are the token ranges of the packed
/// sequences, in order, covering `0..tokens`. `scale` (usually `1/√dim`) must be positive.
/// Writes the `tokens × q·dim` result into `out` (reset to that shape), which is the o_proj
/// input. `buffers` holds the bf16 copies of Q, K and V; reusing it across calls saves
/// allocating (and page-faulting) them for every layer.
///
/// `prepare(token, row, qk)` writes the query and key heads of a token's f32 row (its first
/// `(q + kv)·dim` values) as they are to be rounded into `qk`: the model's per-head norms and
/// rotary embedding go there, so `qkv` is read once in all instead of being rewritten in place
/// by a pass of its own. [`unprepared`] copies them as they are.
pub fn causal_attention(
    isa: Isa,
    heads: Heads,
    qkv: &[f32],
    sequences: &[Range<usize>],
    scale: f32,
    prepare: Prepare<'_>,
    buffers: &mut AttentionBuffers,
    out: &mut BfMatrix,
) {
    assert!(
        isa.is_supported(),
        "attention: the {isa} kernel cannot run on this CPU"
    );
    let choice = match isa {
        Isa::Amx => Choice::Amx,
        Isa::Avx512Bf16 => Choice::Avx512,
        Isa::Avx2 => Choice::Avx2,
        Isa::Reference => Choice::Reference,
    };
    attend(choice, heads, qkv, sequences, scale, prepare, buffers, out);
}

/// What [`causal_attention`] applies to the query and key heads of each token's qkv row before
/// rounding them: `(token, row, qk)`, see there.
pub type Prepare<'a> = &'a (dyn Fn(usize, &[f32], &mut [f32]) + Sync);

/// A [`Prepare`] that leaves rows unchanged.
pub fn unprepared(_token: usize, row: &[f32], qk: &mut [f32]) {
    qk.copy_from_slice(&row[..qk.len()]);
}

/// Floating-point operations of causal attention (QKᵀ and PV over the lower triangle), for
/// throughput figures.
pub fn flops(heads: Heads, sequences: &[Range<usize>]) -> f64 {
    let squares: f64 = sequences.iter().map(|s| (s.len() as f64).powi(2)).sum();
    2.0 * squares * heads.dim as f64 * heads.q as f64
}

/// The same attention from the f32 inputs in f64, without any rounding: the yardstick for the
/// kernels. Returns `tokens × q·dim` values.
pub fn f64_reference(
    heads: Heads,
    qkv: &[f32],
    sequences: &[Range<usize>],
    scale: f32,
) -> Vec<f64> {
    let tokens = check_shapes(heads, qkv, sequences);
    let Heads { q, kv, dim } = heads;
    let width = (q + 2 * kv) * dim;
    let at = |token: usize, col: usize| f64::from(qkv[token * width + col]);
    let mut out = vec![0f64; tokens * q * dim];
    for seq in sequences {
        for h in 0..q {
            let (k_col, v_col) = ((q + h / (q / kv)) * dim, (q + kv + h / (q / kv)) * dim);
            for i in seq.clone() {
                let scores: Vec<f64> = (seq.start..=i)
                    .map(|j| {
                        let dot: f64 = (0..dim)
                            .map(|d| at(i, h * dim + d) * at(j, k_col + d))
                            .sum();
                        dot * f64::from(scale)
                    })
                    .collect();
                let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                let total: f64 = weights.iter().sum();
                for (j, w) in (seq.start..=i).zip(&weights) {
                    for d in 0..dim {
                        out[(i * q + h) * dim + d] += w / total * at(j, v_col + d);
                    }
                }
            }
        }
    }
    out
}

/// Validates the arguments; returns the token count.
fn check_shapes(heads: Heads, qkv: &[f32], sequences: &[Range<usize>]) -> usize {
    assert!(
        heads.kv > 0 && heads.q.is_multiple_of(heads.kv),
        "attention: {} query heads cannot share {} K/V heads",
        heads.q,
        heads.kv
    );
    let mut tokens = 0;
    for seq in sequences {
        assert!(
            seq.start == tokens && seq.end >= seq.start,
            "attention: sequences must be contiguous from 0; got {seq:?} after token {tokens}"
        );
        tokens = seq.end;
    }
    let width = (heads.q + 2 * heads.kv) * heads.dim;
    assert_eq!(
        qkv.len(),
        tokens * width,
        "attention: qkv holds {} values, {tokens} tokens of {width} need {}",
        qkv.len(),
        tokens * width
    );
    tokens
}

/// A head's length as the kernels store it: whole 32-element tile rows (zeros added).
fn padded_dim(dim: usize) -> usize {
    dim.next_multiple_of(32)
}

/// Which kernel runs the passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    Amx,
    /// The AMX pass on the software tile model (tests; needs AVX512-BF16 for the softmax).
    #[cfg(test)]
    SoftAmx,
    Avx512,
    Avx2,
    Reference,
}

/// [`causal_attention`] on the chosen kernel.
fn attend(
    choice: Choice,
    heads: Heads,
    qkv: &[f32],
    sequences: &[Range<usize>],
    scale: f32,
    prepare: Prepare<'_>,
    buffers: &mut AttentionBuffers,
    out: &mut BfMatrix,
) {
    // The AVX512 and AMX kernels (and their packing) need AVX512-BF16, the tiles' softmax
    // included; AVX2 packs with the portable code.
    let vector = !matches!(choice, Choice::Reference | Choice::Avx2);
    assert!(!vector || Isa::Avx512Bf16.is_supported());
    assert!(choice != Choice::Amx || Isa::Amx.is_supported());
    assert!(choice != Choice::Avx2 || Isa::Avx2.is_supported());
    // With c > 0 the largest scaled score is the largest score, scaled (see the softmax).
    assert!(
        scale > 0.0 && scale.is_finite(),
        "attention: scale {scale} is not positive"
    );
    let tokens = check_shapes(heads, qkv, sequences);
    // Every real output is written by a task.
    out.reshape_for_overwrite(tokens, heads.q * heads.dim);
    if tokens == 0 || heads.q == 0 || heads.dim == 0 {
        return;
    }
    let job = Job {
        choice,
        heads,
        sequences,
        packed: Packed::new(
            heads,
            qkv,
            sequences,
            prepare,
            std::mem::take(buffers),
            vector,
        ),
        c: scale * std::f32::consts::LOG2_E,
    };
    tasks(heads, sequences, out)
        .into_par_iter()
        .with_max_len(1)
        .for_each(|task| job.run(task));
    let Packed { q, k, v, .. } = job.packed;
    *buffers = AttentionBuffers { q, k, v };
}

/// Storage for [`causal_attention`]'s packed bf16 Q, K and V (about half the size of its f32
/// `qkv` input), kept by the caller between calls.
#[derive(Default)]
pub struct AttentionBuffers {
    q: AlignedVec<bf16>,
    k: AlignedVec<u32>,
    v: AlignedVec<u32>,
}

impl AttentionBuffers {
    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.q.capacity_bytes() + self.k.capacity_bytes() + self.v.capacity_bytes()
    }
}

/// Q, K and V rounded to bf16 once, in one sweep over `qkv` token by token, and laid out for
/// the kernels, in blocks of 32 tokens (a sequence's blocks start at its first token).
///
/// Q: per block, the 32 tokens' rows of `q · dp`, as in `qkv` (heads padded to `dp`), so one
/// query head's positions are `q · dp` apart.
///
/// K: per block and K/V head, for each dimension pair p the 32 keys' pairs `(k[2p], k[2p+1])`:
/// per half one 16-key register, or one row of a 16-key B tile. V: per block and K/V head, for
/// each key pair j and dimension d the pair `(v[2j][d], v[2j+1][d])`: 16 dimensions of them make
/// one register, or one B-tile row, that probability pairs turn into 16 output sums. Pairs are
/// stored as the 32-bit word they make in memory.
///
/// Tokens past the end of a sequence and dimensions past `dim` are zero.
struct Packed {
    q: AlignedVec<bf16>,
    k: AlignedVec<u32>,
    v: AlignedVec<u32>,
    /// Index of each sequence's first block.
    first_block: Vec<usize>,
    heads: Heads,
    dp: usize,
}

impl Packed {
    fn new(
        heads: Heads,
        qkv: &[f32],
        sequences: &[Range<usize>],
        prepare: Prepare<'_>,
        buffers: AttentionBuffers,
        vector: bool,
    ) -> Self {
        let dp = padded_dim(heads.dim);
        let (q_len, kv_len) = (KEYS * heads.q * dp, heads.kv * KEYS * dp / 2);
        // (first token, tokens) of every block, sequence after sequence.
        let spans: Vec<(usize, usize)> = sequences
            .iter()
            .flat_map(|s| {
                (s.start..s.end)
                    .step_by(KEYS)
                    .map(|t| (t, (s.end - t).min(KEYS)))
            })
            .collect();
        let first_block = sequences
            .iter()
            .scan(0, |next, s| {
                let first = *next;
                *next += s.len().div_ceil(KEYS);
                Some(first)
            })
            .collect();
        let AttentionBuffers {
            mut q,
            mut k,
            mut v,
        } = buffers;
        // Every element is written below; reused buffers are only resized, not cleared.
        q.resize_for_overwrite(spans.len() * q_len);
        k.resize_for_overwrite(spans.len() * kv_len);
        v.resize_for_overwrite(spans.len() * kv_len);
        q.par_chunks_mut(q_len)
            .zip(k.par_chunks_mut(kv_len))
            .zip(v.par_chunks_mut(kv_len))
            .zip(&spans)
            .for_each_init(
                || KvRows::new(heads),
                |rows, (((q, k), v), &(first, len))| {
                    rows.load(heads, qkv, first..first + len, prepare, q);
                    rows.pack(heads, k, v, vector);
                },
            );
        Self {
            q,
            k,
            v,
            first_block,
            heads,
            dp,
        }
    }

    /// Block `b` of sequence `seq`: its query rows, and K/V head `head`'s K and V.
    fn block(&self, seq: usize, b: usize, head: usize) -> (&[bf16], &[u32], &[u32]) {
        let block = self.first_block[seq] + b;
        let q_len = KEYS * self.heads.q * self.dp;
        let kv_len = KEYS * self.dp / 2;
        let at = block * self.heads.kv + head;
        (
            &self.q[block * q_len..(block + 1) * q_len],
            &self.k[at * kv_len..(at + 1) * kv_len],
            &self.v[at * kv_len..(at + 1) * kv_len],
        )
    }
}

/// One block's K and V rows in bf16, token-major (32 rows of `kv · dp`), and the prepared
/// query and key heads of a token: scratch for packing.
struct KvRows {
    k: Vec<bf16>,
    v: Vec<bf16>,
    qk: Vec<f32>,
}

impl KvRows {
    fn new(heads: Heads) -> Self {
        let len = KEYS * heads.kv * padded_dim(heads.dim);
        Self {
            k: vec![bf16::ZERO; len],
            v: vec![bf16::ZERO; len],
            qk: vec![0.0; (heads.q + heads.kv) * heads.dim],
        }
    }

    /// Prepares and converts `tokens` (at most 32): each token's query and key heads prepared
    /// (into L1), then Q rounded straight into its packed place `q`, K and V into the scratch
    /// rows.
    fn load(
        &mut self,
        heads: Heads,
        qkv: &[f32],
        tokens: Range<usize>,
        prepare: Prepare<'_>,
        q: &mut [bf16],
    ) {
        let Heads {
            q: q_heads,
            kv,
            dim,
        } = heads;
        let (width, dp) = ((q_heads + 2 * kv) * dim, padded_dim(dim));
        let (k, v, qk) = (&mut self.k, &mut self.v, &mut self.qk);
        let rows = q
            .chunks_exact_mut(q_heads * dp)
            .zip(k.chunks_exact_mut(kv * dp))
            .zip(v.chunks_exact_mut(kv * dp));
        for (t, ((q, k), v)) in rows.enumerate() {
            if t >= tokens.len() {
                q.fill(bf16::ZERO);
                k.fill(bf16::ZERO);
                v.fill(bf16::ZERO);
                continue;
            }
            let src = &qkv[(tokens.start + t) * width..][..width];
            prepare(tokens.start + t, src, qk);
            let (src_q, src_k) = qk.split_at(q_heads * dim);
            convert_heads(src_q, q, dim, dp);
            convert_heads(src_k, k, dim, dp);
            convert_heads(&src[(q_heads + kv) * dim..], v, dim, dp);
        }
    }

    /// Writes one block's K and V chunks (every K/V head) in the packed layout, with AVX512 where
    /// `vector` says the CPU has it (the same words either way).
    fn pack(&self, heads: Heads, k: &mut [u32], v: &mut [u32], vector: bool) {
        let dp = padded_dim(heads.dim);
        let stride = heads.kv * dp;
        assert!(self.k.len() == KEYS * stride && self.v.len() == KEYS * stride);
        assert!(k.len() == heads.kv * KEYS * dp / 2 && v.len() == k.len());
        #[cfg(target_arch = "x86_64")]
        if vector {
            // SAFETY: `vector` is only set where AVX512-BF16 was checked; sizes asserted above.
            unsafe { vector::pack(&self.k, &self.v, stride, dp, k, v) };
            return;
        }
        let _ = vector;
        for (h, k) in k.chunks_exact_mut(KEYS * dp / 2).enumerate() {
            for (t, row) in self.k.chunks_exact(stride).enumerate() {
                for (p, values) in row[h * dp..(h + 1) * dp].chunks_exact(2).enumerate() {
                    k[p * KEYS + t] = pair(values[0], values[1]);
                }
            }
        }
        for (h, v) in v.chunks_exact_mut(KEYS * dp / 2).enumerate() {
            for (j, v) in v.chunks_exact_mut(dp).enumerate() {
                let even = &self.v[2 * j * stride + h * dp..][..dp];
                let odd = &self.v[(2 * j + 1) * stride + h * dp..][..dp];
                for ((v, &e), &o) in v.iter_mut().zip(even).zip(odd) {
                    *v = pair(e, o);
                }
            }
        }
    }
}

/// Rounds consecutive heads of `dim` values into rows of `dp` (zeros after `dim`).
fn convert_heads(src: &[f32], dst: &mut [bf16], dim: usize, dp: usize) {
    if dim == dp {
        f32_to_bf16(src, dst);
        return;
    }
    for (src, dst) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dp)) {
        f32_to_bf16(src, &mut dst[..dim]);
        dst[dim..].fill(bf16::ZERO);
    }
}

/// Two bf16 as the 32-bit word they make in memory.
fn pair(lo: bf16, hi: bf16) -> u32 {
    u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16)
}

/// The bf16 halves of a pair as f32: (lower, upper).
fn unpair(word: u32) -> (f32, f32) {
    (
        f32::from_bits(word << 16),
        f32::from_bits(word & 0xFFFF_0000),
    )
}

/// One task: the positions of blocks `block..` of sequence `seq` (`out.len()` of them, at most
/// `TASK_BLOCKS · 32`), for the query heads of K/V head `head`. `out` holds each position's
/// `q/kv · dim` output columns.
struct Task<'a> {
    seq: usize,
    block: usize,
    head: usize,
    out: Vec<&'a mut [bf16]>,
}

/// Query blocks per task: each K/V block read serves up to this many blocks of queries.
const TASK_BLOCKS: usize = 4;

/// Cuts the work into tasks, each handed its own columns of its own rows of `out`; the most
/// expensive (latest) blocks first, so the cheap ones fill in at the end.
fn tasks<'a>(heads: Heads, sequences: &[Range<usize>], out: &'a mut BfMatrix) -> Vec<Task<'a>> {
    let group = heads.q / heads.kv;
    let mut rows = out.rows_mut();
    let mut tasks = Vec::new();
    for (seq, range) in sequences.iter().enumerate() {
        for block in (0..range.len().div_ceil(KEYS)).step_by(TASK_BLOCKS) {
            let n = (TASK_BLOCKS * KEYS).min(range.len() - block * KEYS);
            let mut parts: Vec<Vec<&mut [bf16]>> =
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
struct Job<'a> {
    choice: Choice,
    heads: Heads,
    sequences: &'a [Range<usize>],
    packed: Packed,
    /// `scale · log2 e`: scores in base 2.
    c: f32,
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

impl Job<'_> {
    fn run(&self, task: Task<'_>) {
        match self.choice {
            Choice::Reference => self.run_with(&mut Reference, task),
            #[cfg(target_arch = "x86_64")]
            Choice::Avx2 => {
                // SAFETY: `attend` checked AVX2 and FMA.
                self.run_with(&mut unsafe { avx2::Avx2::new() }, task);
            }
            #[cfg(target_arch = "x86_64")]
            Choice::Avx512 => {
                // SAFETY: `attend` checked AVX512-BF16.
                self.run_with(&mut unsafe { vector::Avx512::new() }, task);
            }
            #[cfg(target_arch = "x86_64")]
            Choice::Amx => {
                // SAFETY: `attend` checked AMX (granted to the process) and AVX512-BF16.
                let mut kernel = unsafe { vector::AmxPasses::new(crate::tiles::Amx::new()) };
                self.run_with(&mut kernel, task);
            }
            #[cfg(all(test, target_arch = "x86_64"))]
            Choice::SoftAmx => {
                // SAFETY: `attend` checked AVX512-BF16; the tile model needs nothing.
                let mut kernel = unsafe { vector::AmxPasses::new(crate::tiles::SoftTiles::new()) };
                self.run_with(&mut kernel, task);
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel on another architecture"),
        }
    }

    fn run_with<K: Kernel>(&self, kernel: &mut K, mut task: Task<'_>) {
        STATE.with_borrow_mut(|state| self.attend_task(kernel, &mut task, state));
    }

    /// Rows go by query block, then head, then position: row `(qb · group + t) · 32 + i` is
    /// query head t of the group at position i of the task's query block qb, so a pass is one
    /// head at consecutive positions, `q · dp` apart in the packed Q. Positions past the
    /// sequence's end are zero rows whose results are dropped; they see the keys of its last
    /// position.
    fn attend_task<K: Kernel>(&self, kernel: &mut K, task: &mut Task<'_>, state: &mut State) {
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
    fn key_blocks<K: Kernel>(&self, task: &Task<'_>, b: usize) -> ([&[u32]; 2], [&[u32]; 2]) {
        let blocks = self.sequences[task.seq].len().div_ceil(KEYS);
        let (mut k, mut v) = ([&[][..]; 2], [&[][..]; 2]);
        for i in 0..K::BLOCKS.min(blocks - b) {
            (_, k[i], v[i]) = self.packed.block(task.seq, b + i, task.head);
        }
        (k, v)
    }

    /// Divides each row by its probability sum and rounds it into the task's output columns.
    fn write_out<K: Kernel>(&self, kernel: &K, task: &mut Task<'_>, state: &State) {
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

/// A kernel: `ROWS` query rows against up to `BLOCKS` key blocks per pass.
trait Kernel {
    const ROWS: usize;
    const BLOCKS: usize = 1;
    fn pass(&mut self, pass: &mut Pass<'_>);

    /// `dst = bf16(o · inv)`: a finished output row.
    fn finish(&self, o: &[f32], inv: f32, dst: &mut [bf16]) {
        for (d, o) in dst.iter_mut().zip(o) {
            *d = bf16::from_f32(o * inv);
        }
    }
}

/// One kernel step: a few query rows against one or two key blocks, updating their running
/// state.
struct Pass<'a> {
    /// `rows` bf16 queries of `dp`, `q_stride` apart.
    q: &'a [bf16],
    q_stride: usize,
    /// `rows × dp` f32 output sums, relative to the running maximum.
    o: &'a mut [f32],
    /// Running maximum of each row's base-2 scores.
    m: &'a mut [f32],
    /// `rows × 16` running sums of the rounded probabilities, key `j` in lane `j % 16`.
    l: &'a mut [f32],
    /// Keys of the blocks each row may see (causal mask and sequence end): a prefix, possibly
    /// beyond the blocks of the pass.
    valid: &'a [usize],
    /// The sequence's first key block: the state is to be set, not updated (its contents are
    /// left from earlier tasks).
    first: bool,
    /// Key blocks in this pass (1, or 2 for AMX), and their packed K and V (see [`Packed`]).
    blocks: usize,
    k: [&'a [u32]; 2],
    v: [&'a [u32]; 2],
    dp: usize,
    c: f32,
}

impl Pass<'_> {
    /// The sizes the kernels rely on (the vector kernels read through raw pointers).
    fn check(&self, rows: usize) {
        let dp = self.dp;
        assert!(dp.is_multiple_of(32));
        assert!(self.q_stride >= dp && self.q.len() >= (rows - 1) * self.q_stride + dp);
        assert!(self.o.len() == rows * dp);
        assert!(self.m.len() == rows && self.l.len() == rows * LANES);
        assert!(self.valid.len() == rows && (1..=2).contains(&self.blocks));
        for (k, v) in self.k.iter().zip(&self.v).take(self.blocks) {
            assert!(k.len() == KEYS * dp / 2 && v.len() == KEYS * dp / 2);
        }
    }
}

/// `2^x` for `x ≤ 0`: round to an integer n, a degree-6 Taylor polynomial of `2^f` on
/// `|f| ≤ 1/2` (relative error below 2e-7, far under bf16's 4e-3), scaled by `2^n`. Inputs are
/// clamped at -125, which keeps every result a normal float (subnormals are slow, and
/// `vdpbf16ps` flushes them) and is negligible against the row maximum's 1.
const EXP2_POLY: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_5,
    0.055_504_11,
    0.009_618_129,
    0.001_333_356,
    0.000_154_035_3,
];
const EXP2_MIN: f32 = -125.0;

/// The scalar twin of the vector `exp2`, operation for operation (fused multiply-adds, one
/// rounding in the final scaling), so both kernels produce the same probabilities.
fn exp2(x: f32) -> f32 {
    let x = x.max(EXP2_MIN);
    let n = x.round_ties_even();
    let f = x - n;
    let poly = EXP2_POLY[..6]
        .iter()
        .rev()
        .fold(EXP2_POLY[6], |acc, &c| acc.mul_add(f, c));
    // 2^n exactly (n ≥ -125 is well inside f64), then one rounding to f32.
    let scale = f64::from_bits(((1023 + n as i64) as u64) << 52);
    (f64::from(poly) * scale) as f32
}

/// Portable kernel with the AVX512-BF16 kernel's arithmetic: each bf16 pair product added odd
/// element first, as `vdpbf16ps` does, and the same softmax steps; the two agree bit for bit.
struct Reference;

impl Kernel for Reference {
    const ROWS: usize = 8;

    fn pass(&mut self, pass: &mut Pass<'_>) {
        pass.check(Self::ROWS);
        let dp = pass.dp;
        for r in 0..Self::ROWS {
            let q = &pass.q[r * pass.q_stride..][..dp];
            let valid = pass.valid[r];
            let mut scores = [f32::NEG_INFINITY; KEYS];
            for (key, score) in scores.iter_mut().enumerate().take(valid) {
                let mut s = 0f32;
                for p in 0..dp / 2 {
                    let (even, odd) = unpair(pass.k[0][p * KEYS + key]);
                    s += q[2 * p + 1].to_f32() * odd;
                    s += q[2 * p].to_f32() * even;
                }
                *score = s;
            }
            // c > 0, so the largest scaled score is the largest score, scaled.
            let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) * pass.c;
            let m = pass.m[r].max(top);
            let alpha = exp2(pass.m[r] - m);
            pass.m[r] = m;
            let mut p = [0f32; KEYS];
            for (p, s) in p.iter_mut().zip(&scores).take(valid) {
                *p = bf16::from_f32(exp2(s.mul_add(pass.c, -m))).to_f32();
            }
            for (lane, l) in pass.l[r * LANES..(r + 1) * LANES].iter_mut().enumerate() {
                let sum = p[lane] + p[lane + LANES];
                *l = if pass.first {
                    sum
                } else {
                    l.mul_add(alpha, sum)
                };
            }
            let o = &mut pass.o[r * dp..(r + 1) * dp];
            for (d, o) in o.iter_mut().enumerate() {
                let mut acc = if pass.first { 0.0 } else { *o * alpha };
                for j in 0..KEYS / 2 {
                    let (even, odd) = unpair(pass.v[0][j * dp + d]);
                    acc += p[2 * j + 1] * odd;
                    acc += p[2 * j] * even;
                }
                *o = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod vector;

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-amp, amp).
    fn values(count: usize, seed: u64, amp: f32) -> Vec<f32> {
        crate::test_values(count, seed)
            .into_iter()
            .map(|v| v * amp)
            .collect()
    }

    /// Random q, k, v for `lens` packed sequences; queries scaled by `sharp` (larger = peakier
    /// softmax).
    fn inputs(
        heads: Heads,
        lens: &[usize],
        seed: u64,
        sharp: f32,
    ) -> (Vec<f32>, Vec<Range<usize>>) {
        let tokens: usize = lens.iter().sum();
        let width = (heads.q + 2 * heads.kv) * heads.dim;
        let mut qkv = values(tokens * width, seed, 1.0);
        for row in qkv.chunks_exact_mut(width) {
            row[..heads.q * heads.dim]
                .iter_mut()
                .for_each(|x| *x *= sharp);
        }
        let sequences = lens
            .iter()
            .scan(0, |at, len| {
                *at += len;
                Some(*at - len..*at)
            })
            .collect();
        (qkv, sequences)
    }

    /// Every kernel this CPU can run; the tile model only in the cheaper tests.
    fn choices(with_model: bool) -> Vec<Choice> {
        let mut all = vec![Choice::Reference];
        if Isa::Avx2.is_supported() {
            all.push(Choice::Avx2);
        }
        if Isa::Avx512Bf16.is_supported() {
            all.push(Choice::Avx512);
            if with_model {
                all.push(Choice::SoftAmx);
            }
        }
        if Isa::Amx.is_supported() {
            all.push(Choice::Amx);
        }
        all
    }

    fn run(choice: Choice, heads: Heads, qkv: &[f32], sequences: &[Range<usize>]) -> BfMatrix {
        let mut out = BfMatrix::zeros(3, 5);
        let scale = 1.0 / (heads.dim as f32).sqrt();
        let mut buffers = AttentionBuffers::default();
        attend(
            choice,
            heads,
            qkv,
            sequences,
            scale,
            &unprepared,
            &mut buffers,
            &mut out,
        );
        out
    }

    /// Largest |kernel − f64| over the output, divided by max |v|.
    fn relative_error(choice: Choice, heads: Heads, lens: &[usize], sharp: f32) -> f64 {
        let seed = lens.len() as u64 * 7 + heads.dim as u64;
        let (qkv, sequences) = inputs(heads, lens, seed, sharp);
        let out = run(choice, heads, &qkv, &sequences);
        let exact = f64_reference(heads, &qkv, &sequences, 1.0 / (heads.dim as f32).sqrt());
        let cols = heads.q * heads.dim;
        assert_eq!((out.rows(), out.cols()), (lens.iter().sum(), cols));
        let width = (heads.q + 2 * heads.kv) * heads.dim;
        let v_max = qkv
            .chunks_exact(width)
            .flat_map(|row| &row[(heads.q + heads.kv) * heads.dim..])
            .fold(0f32, |m, v| m.max(v.abs()));
        let mut worst = 0f64;
        for (t, want) in exact.chunks_exact(cols).enumerate() {
            for (got, want) in out.row(t).iter().zip(want) {
                worst = worst.max((f64::from(got.to_f32()) - want).abs());
            }
        }
        worst / f64::from(v_max)
    }

    const fn heads(q: usize, kv: usize, dim: usize) -> Heads {
        Heads { q, kv, dim }
    }

    /// Head dims 16, 32 and 128 (the model's), and 20 (padded inside the pair and tile
    /// layouts); groups of 1, 2, 4 and 8 query heads per K/V head.
    const SHAPES: [Heads; 7] = [
        heads(1, 1, 16),
        heads(2, 2, 32),
        heads(4, 2, 32),
        heads(8, 2, 16),
        heads(8, 1, 32),
        heads(4, 1, 128),
        heads(2, 1, 20),
    ];

    #[test]
    fn matches_f64_attention() {
        let lens: [&[usize]; 5] = [&[1], &[1, 1, 1], &[5], &[33], &[17, 1, 64, 200]];
        for choice in choices(true) {
            let mut worst = 0f64;
            for heads in SHAPES {
                for lens in lens {
                    for sharp in [1.0, 4.0] {
                        let err = relative_error(choice, heads, lens, sharp);
                        worst = worst.max(err);
                        // Q, K, V, P and the output are each rounded to bf16 (2^-9 relative):
                        // scores move by ~|s|·2^-8, the output by ~2^-8 of max|v| from each
                        // rounding; measured worst 5.7e-3, so 1e-2 leaves room to spare.
                        assert!(
                            err <= 1e-2,
                            "{choice:?} {heads:?} {lens:?} sharp {sharp}: error {err:.2e} × max|v|"
                        );
                    }
                }
            }
            eprintln!("{choice:?}: worst error {worst:.2e} × max|v|");
        }
    }

    #[test]
    fn long_sequence_matches_f64_attention() {
        let heads = heads(2, 1, 128);
        for choice in choices(false) {
            let err = relative_error(choice, heads, &[700], 4.0);
            // As above (measured 4.5e-3).
            assert!(err <= 1e-2, "{choice:?}: error {err:.2e} × max|v|");
            eprintln!("{choice:?}: 700 tokens, error {err:.2e} × max|v|");
        }
    }

    /// The AVX512-BF16 and AVX2 kernels do the reference's operations in the same order
    /// (products of bf16 are exact in f32, so `vdpbf16ps` and an FMA round where the reference's
    /// add does; the odd product is added first; the exp2 polynomial is the same fused chain),
    /// so they agree with it bit for bit. The AMX kernel sums a
    /// 32-wide dot product in the tiles' own order and takes its softmax steps 64 keys at a
    /// time, so its probabilities are rounded relative to other maxima: a probability can
    /// differ by a bf16 step (2^-9 relative) and an output by a bf16 step or two.
    #[test]
    fn kernels_agree() {
        for heads in SHAPES {
            let (qkv, sequences) = inputs(heads, &[17, 1, 64, 200], 3, 4.0);
            let reference = run(Choice::Reference, heads, &qkv, &sequences);
            for choice in choices(true) {
                let out = run(choice, heads, &qkv, &sequences);
                if matches!(choice, Choice::Reference | Choice::Avx512 | Choice::Avx2) {
                    assert_eq!(out.padded(), reference.padded(), "{choice:?} {heads:?}");
                    continue;
                }
                let worst = out
                    .padded()
                    .iter()
                    .zip(reference.padded())
                    .map(|(a, b)| (a.to_f32() - b.to_f32()).abs())
                    .fold(0f32, f32::max);
                // |v| < 1, so outputs are below 1 and one bf16 step there is 2^-8 at most;
                // measured worst 2^-8. A wrong index or mask would be off by far more.
                eprintln!("{choice:?} {heads:?}: differs from the reference by {worst:.2e}");
                assert!(worst <= 2.0f32.powi(-7), "{choice:?} {heads:?}: {worst:e}");
            }
        }
    }

    /// A sequence's rows are the same alone and packed between others.
    #[test]
    fn sequences_do_not_depend_on_their_neighbours() {
        let heads = heads(4, 2, 32);
        let width = (heads.q + 2 * heads.kv) * heads.dim;
        let (a, b, c) = (45, 70, 9);
        let (all, _) = inputs(heads, &[b, a, c], 5, 2.0);
        let alone = &all[b * width..(b + a) * width];
        for choice in choices(true) {
            let single = run(choice, heads, alone, std::slice::from_ref(&(0..a)));
            let packed = run(choice, heads, &all, &[0..b, b..b + a, b + a..b + a + c]);
            for t in 0..a {
                assert_eq!(single.row(t), packed.row(b + t), "{choice:?} row {t}");
            }
        }
    }

    /// Preparing rows while packing equals preparing `qkv` beforehand, bit for bit, with the
    /// token index passed being the row's; buffers reused across calls of other shapes.
    #[test]
    fn prepare_applies_to_each_row_as_packed() {
        let heads = heads(4, 2, 32);
        let (qkv, sequences) = inputs(heads, &[37, 5, 64], 9, 1.0);
        let width = (heads.q + 2 * heads.kv) * heads.dim;
        // Something token-dependent and not linear, on q and k only.
        let change = |token: usize, x: f32, i: usize| {
            (x * (1.0 + token as f32 * 0.01) + i as f32 * 1e-3).sin()
        };
        let prepare = |token: usize, row: &[f32], qk: &mut [f32]| {
            for (i, (out, &x)) in qk.iter_mut().zip(row).enumerate() {
                *out = change(token, x, i);
            }
        };
        let mut before = qkv.clone();
        for (token, row) in before.chunks_exact_mut(width).enumerate() {
            for (i, x) in row[..(heads.q + heads.kv) * heads.dim]
                .iter_mut()
                .enumerate()
            {
                *x = change(token, *x, i);
            }
        }
        let isa = crate::isa::best().unwrap_or(Isa::Reference);
        let mut buffers = AttentionBuffers::default();
        let mut expected = BfMatrix::default();
        let (other, other_sequences) = inputs(heads, &[100], 3, 1.0);
        causal_attention(
            isa,
            heads,
            &other,
            &other_sequences,
            0.2,
            &unprepared,
            &mut buffers,
            &mut expected,
        );
        causal_attention(
            isa,
            heads,
            &before,
            &sequences,
            0.2,
            &unprepared,
            &mut buffers,
            &mut expected,
        );
        let mut prepared = BfMatrix::default();
        causal_attention(
            isa,
            heads,
            &qkv,
            &sequences,
            0.2,
            &prepare,
            &mut buffers,
            &mut prepared,
        );
        assert_eq!(expected.padded(), prepared.padded());
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let heads = heads(2, 1, 16);
        for isa in [Isa::Reference, Isa::Avx2, Isa::Avx512Bf16, Isa::Amx] {
            if isa.is_supported() {
                let mut out = BfMatrix::zeros(3, 5);
                let mut buffers = AttentionBuffers::default();
                causal_attention(
                    isa,
                    heads,
                    &[],
                    &[],
                    0.25,
                    &unprepared,
                    &mut buffers,
                    &mut out,
                );
                assert_eq!((out.rows(), out.cols()), (0, 32));
            }
        }
    }

    /// GFLOP/s at Qwen3-Embedding-0.6B's attention shape (16 query heads, 8 K/V heads of 128),
    /// for single sequences and a batch of short texts:
    /// `cargo test --release -p candle-embed-kernels attention::tests::throughput -- --ignored
    /// --nocapture` (`CANDLE_EMBED_CPU_KERNEL=amx` etc. times one kernel only; the reference
    /// takes minutes on the longest sequence).
    #[test]
    #[ignore = "timing, run in release"]
    fn throughput() {
        let heads = heads(16, 8, 128);
        let only = std::env::var(crate::KERNEL_ENV).ok();
        let cases: [(&str, Vec<usize>); 4] = [
            ("1 × 128", vec![128]),
            ("1 × 1024", vec![1024]),
            ("1 × 8192", vec![8192]),
            ("32 × 60", vec![60; 32]),
        ];
        for (name, lens) in cases {
            let (qkv, sequences) = inputs(heads, &lens, 1, 1.0);
            let work = flops(heads, &sequences);
            for isa in [Isa::Reference, Isa::Avx2, Isa::Avx512Bf16, Isa::Amx] {
                if !isa.is_supported() || only.as_deref().is_some_and(|name| name != isa.name()) {
                    continue;
                }
                let (mut out, mut buffers) = (BfMatrix::default(), AttentionBuffers::default());
                let mut run = || {
                    causal_attention(
                        isa,
                        heads,
                        &qkv,
                        &sequences,
                        0.088,
                        &unprepared,
                        &mut buffers,
                        &mut out,
                    );
                };
                // A warm-up call (thread pool, buffers), then about a second of calls; one call
                // where that is minutes (the reference on long sequences).
                let slow = isa == Isa::Reference && work > 1e10;
                let repeats = if slow {
                    1
                } else {
                    run();
                    (4e11 / work).clamp(3.0, 200.0) as usize
                };
                let start = std::time::Instant::now();
                for _ in 0..repeats {
                    run();
                }
                let secs = start.elapsed().as_secs_f64() / repeats as f64;
                eprintln!(
                    "{name:>9} tokens {isa:>10}: {:7.1} GFLOP/s ({:.3} ms, {} threads)",
                    work / secs / 1e9,
                    secs * 1e3,
                    rayon::current_num_threads()
                );
            }
        }
    }
}
