//! `gemm`: `C (+)= A · Wᵀ` with A in bf16 ([`BfMatrix`]), W packed ([`PackedWeight`]), C in f32;
//! and [`gemm_f32`], the same with A and W in f32 for `dtype="f32"`, on the widened loops.
//!
//! The work is cut into rectangles of C — at most `row_chunk` rows, split evenly by
//! `row_ranges`, × a run of 32-column panels — spread over rayon's threads. Inside a rectangle
//! the panel is the outer loop, so a panel (K × 32 bf16, 64–192 KB) is read from memory once and
//! reused from cache by every row block, while the rows of A stay in L2 across panels.
//!
//! Every output row goes through the same instructions in the same order whatever the other rows
//! are, so a text's vector does not depend on the batch it is in. That is also why an AMX CPU uses
//! tiles even for a single row: mixing in another kernel for small batches would change the
//! summation order, and a single row is limited by reading the weights anyway.

use std::marker::PhantomData;
use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use crate::isa::{Isa, Kernel};
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::{Element, PackedWeight};

mod amx;
mod avx512;
mod reference;
#[cfg(test)]
mod tests;
mod widened;

#[cfg(target_arch = "x86_64")]
pub(crate) use widened::split;

/// How far ahead of the first pass over a bf16 panel its lines are requested, in bytes (twice
/// that for f32, the same number of K pairs ahead).
const STREAM_AHEAD: usize = 8 << 10;

/// Cache lines one K pair of a packed block takes (two tile rows of 32 elements): 2 in bf16,
/// 4 in f32.
const fn lines_per_pair<E>() -> usize {
    std::mem::size_of::<E>()
}

/// Requests the cache lines `STREAM_AHEAD` bytes (per bf16 byte) past pair `pair` of the K block
/// at `block`.
///
/// A K block is read as two tiles side by side: pair `p` of the first (its lines from `p`) with
/// pair `p` of the second (from half a block on). The hardware prefetcher does not follow that
/// zigzag: on AMD Zen 4 one thread read 10 GB/s of it against 26 GB/s in address order
/// (`examples/peak.rs`). So the first pass over a panel asks for the lines in address order
/// itself, 8 KiB ahead (4 and 16 measured slower); later passes find the panel in L2. A 16-row
/// GEMM over weights in memory (`examples/gemm_gflops.rs`, `cold` rows) went 1.3–1.6× faster on
/// every kernel with it, one row 1.1×, 256 rows 1.05×.
#[inline(always)]
pub(crate) fn stream_ahead<E>(block: *const E, pair: usize) {
    let lines = lines_per_pair::<E>();
    let first = block
        .cast::<i8>()
        .wrapping_add(STREAM_AHEAD * lines / 2 + 64 * lines * pair);
    for line in 0..lines {
        prefetch(first.wrapping_add(64 * line));
    }
}

/// What a pass over a panel of `E` requests from memory besides the lines it reads: the
/// panel's own lines ahead of itself on its first pass ([`stream_ahead`]), and, in small tasks,
/// a share of the next panel.
///
/// A panel is read once per block of rows. In a task of a few rows, the first pass waits on
/// memory and the others run from L2 while memory idles. So there every pass also requests an
/// equal share of the next panel, in address order, spread over its K loop, and the next
/// panel's first pass finds it in L2. On AMD Zen 4, over weights in memory
/// (`examples/gemm_gflops.rs`, `cold` rows; order-rotated rounds): AVX512-BF16 1 row
/// 1.1–1.2×, 8 rows up to 1.15×, 16 rows 1.1–1.35×, 32 rows 1.05–1.15×; AVX2 1 row 1.3–1.7×,
/// 8 rows 1.2–1.3×; the widened AVX-512 loop, which is slower than memory there from 16 rows
/// on, 1.0–1.2× below. A 16-token query's forward pass: 55–60 ms before, 43–47 ms after. From
/// 64 rows on the gain was 0–3%, and larger tasks (whose rows of A take most of L2) do not
/// request ahead.
pub(crate) struct Fetch<E = bf16> {
    own: bool,
    /// This pass's share of the next panel: `per_block` lines for each K block, from `next`.
    next: *const i8,
    per_block: usize,
    _element: PhantomData<E>,
}

// Derived, these would ask `E` for the same.
impl<E> Clone for Fetch<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Fetch<E> {}

/// Most passes over a panel (blocks of rows, or of rows and columns) that still request the
/// next panel ahead: 64 rows of the AVX512-BF16 kernel.
const MAX_FETCH_PASSES: usize = 8;

impl<E> Fetch<E> {
    /// Pass `pass` of `passes` over a panel `k_blocks` deep, followed in its task by `next`.
    pub(crate) fn new(next: Option<*const E>, k_blocks: usize, pass: usize, passes: usize) -> Self {
        let own = pass == 0;
        match next {
            Some(next) if passes <= MAX_FETCH_PASSES => {
                // 16 pairs' lines per K block in all, rounded up: the last pass may request a
                // few lines of the panel after, which costs nothing but the request.
                let per_block = (16 * lines_per_pair::<E>()).div_ceil(passes);
                Fetch {
                    own,
                    next: next
                        .cast::<i8>()
                        .wrapping_add(64 * per_block * pass * k_blocks),
                    per_block,
                    _element: PhantomData,
                }
            }
            _ => Fetch {
                own,
                next: std::ptr::null(),
                per_block: 0,
                _element: PhantomData,
            },
        }
    }

    /// The requests that go with pair `pair` of K block `kb`, whose elements start at `block`.
    ///
    /// A pair's lines of the next panel. Where a pass's share is a quarter of a K block or less
    /// (four passes or more), the first goes to L1 and the rest to L2; with fewer passes all go
    /// to L2. Of the mixes measured on Zen 4 (bf16) that was fastest at every row count: all to
    /// L1 lost 10–15% at 8 and 16 rows, all to L2 4–15% at 32.
    #[inline(always)]
    pub(crate) fn step(self, block: *const E, kb: usize, pair: usize) {
        self.step_beside(block, pair);
        let quarter = 4 * lines_per_pair::<E>();
        for (i, line) in self.next_lines(kb, pair).into_iter().enumerate() {
            if let Some(line) = line {
                if i == 0 && self.per_block <= quarter {
                    prefetch(line);
                } else {
                    prefetch_l2(line);
                }
            }
        }
    }

    /// The requests for a second panel read beside the first in the same pass: its own lines
    /// ahead on the first pass, no share of another.
    #[inline(always)]
    pub(crate) fn step_beside(self, block: *const E, pair: usize) {
        if self.own {
            stream_ahead(block, pair);
        }
    }

    /// The lines of the next panel requested at pair `pair` of K block `kb` (up to 4; the
    /// entries past a pair's lines are `None`).
    #[inline(always)]
    fn next_lines(self, kb: usize, pair: usize) -> [Option<*const i8>; 4] {
        let per_pair = lines_per_pair::<E>();
        std::array::from_fn(|j| {
            let i = per_pair * pair + j;
            (j < per_pair && i < self.per_block)
                .then(|| self.next.wrapping_add(64 * (kb * self.per_block + i)))
        })
    }
}

/// Where [`request`] asks for a line to go, numbered as x86's prefetch hints number them
/// (`_MM_HINT_T0`, `_MM_HINT_T1`, `_MM_HINT_ET0`).
const INTO_L1: i32 = 3;
const INTO_L2: i32 = 2;
const INTO_L1_FOR_WRITING: i32 = 7;

/// Asks for the cache line holding `p` to be brought where `HINT` says.
#[inline(always)]
fn request<const HINT: i32>(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT>(p);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the cache line holding `p` to be brought into L1.
#[inline(always)]
pub(crate) fn prefetch(p: *const i8) {
    request::<INTO_L1>(p);
}

/// Asks for the cache line holding `p` to be brought into L2 (and not L1).
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const i8) {
    request::<INTO_L2>(p);
}

/// Asks for the cache line holding `p` in L1, owned for writing.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const i8) {
    request::<INTO_L1_FOR_WRITING>(p);
}

/// The cells a block of the sink will write, as lines to request ahead of it: `lines` cache
/// lines from `first`, and as many from each of its next `rows - 1` rows, `stride` bytes apart.
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    first: *const i8,
    stride: usize,
    lines: usize,
    rows: usize,
}

impl Ahead {
    /// Requests row `row`'s lines, owned for writing; nothing past the block's rows, which may
    /// be another thread's.
    #[inline(always)]
    pub(crate) fn request(self, row: usize) {
        if row < self.rows {
            let at = self.first.wrapping_add(row * self.stride);
            for line in 0..self.lines {
                prefetch_write(at.wrapping_add(64 * line));
            }
        }
    }
}

/// The most rows of C per task ([`row_ranges`] may give fewer, to even the tasks out): the
/// task's rows of A stay in the core's L2 while every panel of its column range streams past
/// them once. AMX and AVX512-BF16 read A as bf16, about 1 MiB of it
/// (tuned on the 0.6B shapes with `examples/gemm_gflops.rs`: 256 rows at K = 1024 and 2048, 160
/// at K = 3072). The widened kernels read an f32 copy, twice the bytes, so they take 256 KiB of
/// it: 64 rows at K = 1024, 32 from K = 2048 on. The copy and a panel then fit the 512 KiB L2 of
/// AMD Zen 2 and 3 and half of Skylake-SP's 1 MiB; at 1 MiB per task the widened AVX-512 loop
/// ran 1.02–1.07× slower per GEMM at 8,192 rows and the model 1.02–1.05× slower (paired
/// batches) even with Emerald Rapids' 2 MiB L2.
fn row_chunk(kernel: Kernel, k: usize) -> usize {
    let widened = match kernel {
        Kernel::Avx512 | Kernel::Avx2 => true,
        #[cfg(test)]
        Kernel::SoftAvx512 | Kernel::SoftAvx2 => true,
        _ => false,
    };
    let k = k.max(1);
    let rows = if widened {
        ((1 << 18) / (4 * k)).clamp(BLOCK, 256)
    } else {
        ((1 << 20) / (2 * k)).clamp(64, 256)
    };
    rows / BLOCK * BLOCK
}

/// The row ranges of the tasks: at most `max_rows` each (see [`row_chunk`]), as many as a
/// multiple of `threads` where the rows allow, and equal to within one 32-row block, so
/// that no thread is left with a larger share than the others: with chunks of `max_rows`
/// and a short one at the end, 1,024 rows at K = 3,072 (160-row chunks) were seven tasks,
/// four for one thread and three for the other.
fn row_ranges(m: usize, max_rows: usize, threads: usize) -> Vec<Range<usize>> {
    let blocks = m.div_ceil(BLOCK);
    let tasks = m.div_ceil(max_rows).next_multiple_of(threads).min(blocks);
    let (each, extra) = (blocks / tasks, blocks % tasks);
    let mut start = 0;
    (0..tasks)
        .map(|t| {
            let end = (start + BLOCK * (each + usize::from(t < extra))).min(m);
            let rows = start..end;
            start = end;
            rows
        })
        .collect()
}

/// `C[m, n] (+)= Σ_k A[m, k] · W[n, k]` for the `A.rows() × W.n()` block of `c`, whose rows are
/// `ldc` elements apart. With `accumulate` the product is added to what `c` holds (a residual).
pub fn gemm(isa: Isa, a: &BfMatrix, w: &PackedWeight, c: &mut [f32], ldc: usize, accumulate: bool) {
    run(Kernel::supported(isa, "gemm"), a, w, c, ldc, accumulate);
}

/// [`gemm`] in f32: `a` holds `a.len() / W.k()` rows of `W.k()` values, row-major. Every output is
/// the sum of its K products one f32 FMA at a time in K order, whatever the kernel, the block or
/// the other rows: the same bits on `avx512`, `avx2` and `reference`, and for a row alone or in
/// any batch. For the exact path, on CPUs with AVX2 (`isa` from [`Isa::for_f32`]).
pub fn gemm_f32(
    isa: Isa,
    a: &[f32],
    w: &PackedWeight<f32>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (kernel, a) = f32_operand(isa, a, w);
    run(kernel, &a, w, c, ldc, accumulate);
}

/// The kernel of an f32 GEMM on `isa`, and `a` as its rows by `w`, checked.
fn f32_operand<'a>(isa: Isa, a: &'a [f32], w: &PackedWeight<f32>) -> (Kernel, F32Rows<'a>) {
    assert!(
        matches!(isa, Isa::Avx512 | Isa::Avx2 | Isa::Reference),
        "gemm_f32: the {isa} kernel has no f32 loop (see Isa::for_f32)"
    );
    let kernel = Kernel::supported(isa, "gemm_f32");
    let k = w.k().max(1);
    assert!(
        a.len().is_multiple_of(k),
        "gemm_f32: A holds {} values, not whole rows of {k}",
        a.len()
    );
    let rows = F32Rows {
        values: a,
        rows: a.len() / k,
        cols: w.k(),
    };
    (kernel, rows)
}

/// The A operand of a GEMM task: bf16 activations, or the exact path's f32 rows.
pub(crate) trait Operand: Sync {
    /// The element type of the weights it is multiplied by.
    type Weight: Element;

    fn rows(&self) -> usize;

    fn cols(&self) -> usize;

    /// Row `r` as f32 into `dst`, zero past its columns: `dst` spans whole K blocks.
    fn row_f32(&self, r: usize, dst: &mut [f32]);

    /// One task: the kernel's loop over `rows × panels` of the result.
    ///
    /// # Safety
    /// The CPU runs `kernel`; the sink is valid for `self.rows()` rows; the rectangle is not
    /// written concurrently.
    unsafe fn rectangle(
        &self,
        kernel: Kernel,
        w: &PackedWeight<Self::Weight>,
        sink: Sink,
        rows: Range<usize>,
        panels: Range<usize>,
    );
}

/// `rows` rows of `cols` f32, row-major: [`gemm_f32`]'s A.
pub(crate) struct F32Rows<'a> {
    pub(crate) values: &'a [f32],
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

/// Floating-point operations of one `gemm` call, for throughput figures.
pub fn flops(m: usize, n: usize, k: usize) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}

/// Where finished blocks of `A · Wᵀ` go; shared by tasks that write disjoint rectangles of it.
#[derive(Clone, Copy)]
pub(crate) enum Sink {
    /// f32 C, rows `ldc` apart; `accumulate` adds to what is there.
    F32 {
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    },
    /// `bf16(silu(gate) · up)`: W interleaves gate and up 16 columns at a time
    /// ([`PackedWeight::gate_up`]), so panel `nb` yields outputs `16·nb..16·nb + 16` of `n_out`.
    SiluMul {
        out: *mut bf16,
        ldo: usize,
        n_out: usize,
    },
    /// `silu(gate) · up` in f32, as [`Sink::SiluMul`] lays it out: the f32 path's epilogue.
    SiluMulF32 {
        out: *mut f32,
        ldo: usize,
        n_out: usize,
    },
}
// SAFETY: tasks only write their own rectangles (disjoint rows × panels), see `run`.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

impl Sink {
    /// Where the `rows` rows from `r`, panel `nb`, go: their lines, to be requested while the
    /// block before them is computed. A block's results are written in one burst at its end,
    /// and a line that is not in cache must first be fetched before it can be written. Waiting
    /// for those fetches cost the AMX GEMM a fifth of its time at K = 1024: requested ahead,
    /// the q/k/v and gate/up shapes ran 1.2–1.3× faster alone, the 0.6B model 1.10–1.15×
    /// (Xeon 5th gen).
    pub(crate) fn ahead(self, r: usize, nb: usize, rows: usize) -> Ahead {
        match self {
            Sink::F32 { c, ldc, .. } => Ahead {
                first: c.wrapping_add(r * ldc + nb * BLOCK).cast_const().cast(),
                stride: 4 * ldc,
                lines: 2,
                rows,
            },
            Sink::SiluMul { out, ldo, .. } => Ahead {
                first: out.wrapping_add(r * ldo + nb * 16).cast_const().cast(),
                stride: 2 * ldo,
                lines: 1,
                rows,
            },
            Sink::SiluMulF32 { out, ldo, .. } => Ahead {
                first: out.wrapping_add(r * ldo + nb * 16).cast_const().cast(),
                stride: 4 * ldo,
                lines: 1,
                rows,
            },
        }
    }

    pub(crate) fn accumulates(self) -> bool {
        matches!(
            self,
            Sink::F32 {
                accumulate: true,
                ..
            }
        )
    }

    /// Copies C's current values of a block into `scratch` (rows 32 apart) before accumulating.
    ///
    /// # Safety
    /// Rows `r..r + valid`, panel `nb`'s `cols` columns lie inside C.
    pub(crate) unsafe fn preload(
        self,
        scratch: &mut [f32],
        r: usize,
        nb: usize,
        valid: usize,
        cols: usize,
    ) {
        if let Sink::F32 { c, ldc, .. } = self {
            scratch.fill(0.0);
            for i in 0..valid {
                // SAFETY: per the contract.
                unsafe {
                    let src = c.add((r + i) * ldc + nb * BLOCK);
                    std::ptr::copy_nonoverlapping(src, scratch.as_mut_ptr().add(i * BLOCK), cols);
                }
            }
        }
    }

    /// Writes a finished block held in `scratch` (rows 32 apart) to its place.
    ///
    /// # Safety
    /// Rows `r..r + valid` and panel `nb` lie inside the sink; no other task writes them.
    pub(crate) unsafe fn finish(
        self,
        scratch: &[f32],
        r: usize,
        nb: usize,
        valid: usize,
        cols: usize,
    ) {
        match self {
            Sink::F32 { c, ldc, .. } => {
                for i in 0..valid {
                    // SAFETY: per the contract.
                    unsafe {
                        let dst = c.add((r + i) * ldc + nb * BLOCK);
                        std::ptr::copy_nonoverlapping(scratch.as_ptr().add(i * BLOCK), dst, cols);
                    }
                }
            }
            // Panel `nb` holds outputs `16·nb..`, of which `count` are real.
            Sink::SiluMul { out, ldo, n_out } => {
                let (first, count) = (nb * 16, n_out.saturating_sub(nb * 16).min(16));
                let out = out.wrapping_add(r * ldo + first);
                // SAFETY: per the contract; `count` keeps to the rows' real outputs.
                unsafe { crate::elementwise::silu_mul_block(scratch, valid, out, ldo, count) };
            }
            Sink::SiluMulF32 { out, ldo, n_out } => {
                let (first, count) = (nb * 16, n_out.saturating_sub(nb * 16).min(16));
                let out = out.wrapping_add(r * ldo + first);
                // SAFETY: as above.
                unsafe { crate::elementwise::silu_mul_block_f32(scratch, valid, out, ldo, count) };
            }
        }
    }
}

fn run<A: Operand>(
    kernel: Kernel,
    a: &A,
    w: &PackedWeight<A::Weight>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let (m, n) = (a.rows(), w.n());
    assert!(ldc >= n, "gemm: ldc {ldc} < n {n}");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c.len() >= (m - 1) * ldc + n,
        "gemm: C holds {} values, needs {m}×{n} at stride {ldc}",
        c.len()
    );
    let sink = Sink::F32 {
        c: c.as_mut_ptr(),
        ldc,
        accumulate,
    };
    run_into(kernel, a, w, sink);
}

/// `out = bf16(silu(A · Wgateᵀ) · (A · Wupᵀ))` with `W` from [`PackedWeight::gate_up`]: the
/// MLP's gate/up GEMM with SiLU and the product applied to each block while it is still in L1,
/// so the `rows × 2·intermediate` f32 result never goes to memory.
pub fn gemm_silu_mul(
    isa: Isa,
    a: &BfMatrix,
    w: &PackedWeight,
    intermediate: usize,
    out: &mut BfMatrix,
) {
    let kernel = Kernel::supported(isa, "gemm");
    assert_eq!(
        w.n(),
        32 * intermediate.div_ceil(16),
        "gemm_silu_mul: W is not a gate_up weight of {intermediate}"
    );
    // Every real output is written by the epilogue.
    out.reshape_for_overwrite(a.rows(), intermediate);
    if a.rows() == 0 {
        return;
    }
    let sink = Sink::SiluMul {
        out: out.padded_mut().as_mut_ptr(),
        ldo: out.stride(),
        n_out: intermediate,
    };
    run_into(kernel, a, w, sink);
}

/// [`gemm_silu_mul`] on the f32 path: `a` holds whole rows of `W.k()` f32, `W` is
/// [`PackedWeight::gate_up`] of f32 weights, and `out` receives `rows × intermediate` f32,
/// row-major. Each output is `silu(g) · u` of the sums [`gemm_f32`] gives.
pub fn gemm_f32_silu_mul(
    isa: Isa,
    a: &[f32],
    w: &PackedWeight<f32>,
    intermediate: usize,
    out: &mut [f32],
) {
    let (kernel, a) = f32_operand(isa, a, w);
    assert_eq!(
        w.n(),
        32 * intermediate.div_ceil(16),
        "gemm_f32_silu_mul: W is not a gate_up weight of {intermediate}"
    );
    assert_eq!(
        out.len(),
        a.rows * intermediate,
        "gemm_f32_silu_mul: out holds {} values, not {} rows of {intermediate}",
        out.len(),
        a.rows
    );
    if a.rows == 0 {
        return;
    }
    let sink = Sink::SiluMulF32 {
        out: out.as_mut_ptr(),
        ldo: intermediate,
        n_out: intermediate,
    };
    run_into(kernel, &a, w, sink);
}

fn run_into<A: Operand>(kernel: Kernel, a: &A, w: &PackedWeight<A::Weight>, sink: Sink) {
    let m = a.rows();
    assert_eq!(
        a.cols(),
        w.k(),
        "gemm: A has {} columns, W has {} inputs",
        a.cols(),
        w.k()
    );

    let threads = rayon::current_num_threads().max(1);
    let row_ranges = row_ranges(m, row_chunk(kernel, w.k()), threads);
    let row_chunks = row_ranges.len();
    // Rows alone give too few tasks for small batches; then the panels are split too.
    let col_splits = if row_chunks >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(row_chunks).min(w.n_blocks())
    };
    let tasks: Vec<(Range<usize>, Range<usize>)> = row_ranges
        .iter()
        .flat_map(|rows| {
            (0..col_splits).map(move |s| {
                let panels = s * w.n_blocks() / col_splits..(s + 1) * w.n_blocks() / col_splits;
                (rows.clone(), panels)
            })
        })
        .collect();
    let task = |(rows, panels): &(Range<usize>, Range<usize>)| {
        // SAFETY: `rows × panels` rectangles are disjoint between tasks and lie inside the sink
        // (checked by the callers); A and W are padded to whole blocks.
        unsafe { a.rectangle(kernel, w, sink, rows.clone(), panels.clone()) };
    };
    if tasks.len() == 1 {
        task(&tasks[0]);
    } else {
        tasks.par_iter().for_each(task);
    }
}

impl Operand for BfMatrix {
    type Weight = bf16;

    fn rows(&self) -> usize {
        BfMatrix::rows(self)
    }

    fn cols(&self) -> usize {
        BfMatrix::cols(self)
    }

    fn row_f32(&self, r: usize, dst: &mut [f32]) {
        // bf16 is the upper half of an f32, so widening is exact; the padding is zero.
        let src = &self.padded()[r * self.stride()..][..dst.len()];
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }

    unsafe fn rectangle(
        &self,
        kernel: Kernel,
        w: &PackedWeight,
        sink: Sink,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        let a = self;
        // SAFETY: forwarded.
        unsafe {
            if widened_rectangle(kernel, a, w, sink, rows.clone(), panels.clone()) {
                return;
            }
            match kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Amx => amx::rows(&mut crate::tiles::Amx::new(), a, w, sink, rows, panels),
                #[cfg(test)]
                Kernel::SoftAmx => {
                    amx::rows(
                        &mut crate::tiles::SoftTiles::new(),
                        a,
                        w,
                        sink,
                        rows,
                        panels,
                    );
                }
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Bf16 => avx512::avx512bf16_rows(a, w, sink, rows, panels),
                #[cfg(test)]
                Kernel::SoftAvx512Bf16 => avx512::rows::<avx512::Soft>(a, w, sink, rows, panels),
                Kernel::Reference => reference::rows(a, w, sink, rows, panels),
                other => unreachable!("{other:?} is a widened kernel"),
            }
        }
    }
}

/// The task on the widened loops, which take either operand; `false` for the other kernels.
///
/// # Safety
/// As [`Operand::rectangle`].
unsafe fn widened_rectangle<A: Operand>(
    kernel: Kernel,
    a: &A,
    w: &PackedWeight<A::Weight>,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) -> bool
where
    A::Weight: widened::Widened,
{
    // SAFETY: forwarded.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => widened::avx2_rows(a, w, sink, rows, panels),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => widened::avx512_rows(a, w, sink, rows, panels),
            #[cfg(test)]
            Kernel::SoftAvx512 => widened::rows::<widened::Soft<16>, _>(a, w, sink, rows, panels),
            #[cfg(test)]
            Kernel::SoftAvx2 => widened::rows::<widened::Soft<8>, _>(a, w, sink, rows, panels),
            _ => return false,
        }
    }
    true
}

impl Operand for F32Rows<'_> {
    type Weight = f32;

    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn row_f32(&self, r: usize, dst: &mut [f32]) {
        let (row, pad) = dst.split_at_mut(self.cols);
        row.copy_from_slice(&self.values[r * self.cols..][..self.cols]);
        pad.fill(0.0);
    }

    unsafe fn rectangle(
        &self,
        kernel: Kernel,
        w: &PackedWeight<f32>,
        sink: Sink,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        // SAFETY: forwarded.
        unsafe {
            if !widened_rectangle(kernel, self, w, sink, rows.clone(), panels.clone()) {
                match kernel {
                    Kernel::Reference => reference::rows_f32(self, w, sink, rows, panels),
                    other => unreachable!("no f32 loop for {other:?}"),
                }
            }
        }
    }
}

/// `A · Wᵀ` from unpacked row-major operands, in f64: the yardstick for the kernels.
pub fn f64_reference(a: &[bf16], w: &[bf16], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| f64::from(a[i * k + p].to_f32()) * f64::from(w[j * k + p].to_f32()))
                .sum();
        }
    }
    c
}
