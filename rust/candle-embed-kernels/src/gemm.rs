//! `gemm`: `C (+)= A · Wᵀ` with A in bf16 ([`BfMatrix`]), W packed ([`PackedWeight`]), C in f32.
//!
//! The work is cut into rectangles of C — [`row_chunk`] rows × a run of 32-column panels — spread
//! over rayon's threads. Inside a rectangle the panel is the outer loop, so a panel (K × 32 bf16,
//! 64–192 KB) is read from memory once and reused from cache by every row block, while the rows of
//! A stay in L2 across panels.
//!
//! Every output row goes through the same instructions in the same order whatever the other rows
//! are, so a text's vector does not depend on the batch it is in. That is also why an AMX CPU uses
//! tiles even for a single row: mixing in another kernel for small batches would change the
//! summation order, and a single row is limited by reading the weights anyway.

use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use crate::aligned::Aligned;
#[cfg(target_arch = "x86_64")]
use crate::aligned::AlignedVec;
use crate::isa::Isa;
use crate::matrix::{BfMatrix, BLOCK};
use crate::pack::{PackedWeight, BLOCK_ELEMS, TILE_ELEMS};
use crate::tiles::{self, Tiles};

/// Rows of C per task: the task's rows of A (about 1 MiB of bf16) stay in the core's L2 while
/// every panel of its column range streams past them once. Tuned on the 0.6B shapes
/// (`examples/gemm_gflops.rs`): 256 rows for K = 1024 and 2048, 160 for K = 3072.
fn row_chunk(k: usize) -> usize {
    ((1 << 20) / (2 * k.max(1))).clamp(64, 256) / BLOCK * BLOCK
}

/// `C[m, n] (+)= Σ_k A[m, k] · W[n, k]` for the `A.rows() × W.n()` block of `c`, whose rows are
/// `ldc` elements apart. With `accumulate` the product is added to what `c` holds (a residual).
pub fn gemm(isa: Isa, a: &BfMatrix, w: &PackedWeight, c: &mut [f32], ldc: usize, accumulate: bool) {
    assert!(
        isa.is_supported(),
        "gemm: the {isa} kernel cannot run on this CPU"
    );
    run(kernel_for(isa), a, w, c, ldc, accumulate);
}

/// Floating-point operations of one `gemm` call, for throughput figures.
pub fn flops(m: usize, n: usize, k: usize) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Amx,
    /// The AMX block loop on the software tile model (tests only: it is slow).
    #[cfg_attr(not(test), allow(dead_code))]
    SoftAmx,
    Avx512,
    Avx2,
    Reference,
}

/// Where finished blocks of `A · Wᵀ` go; shared by tasks that write disjoint rectangles of it.
#[derive(Clone, Copy)]
enum Sink {
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
}
// SAFETY: tasks only write their own rectangles (disjoint rows × panels), see `run`.
unsafe impl Send for Sink {}
// SAFETY: as above.
unsafe impl Sync for Sink {}

impl Sink {
    fn accumulates(self) -> bool {
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
    unsafe fn preload(self, scratch: &mut [f32], r: usize, nb: usize, valid: usize, cols: usize) {
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
    unsafe fn finish(self, scratch: &[f32], r: usize, nb: usize, valid: usize, cols: usize) {
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
            Sink::SiluMul { out, ldo, n_out } => {
                let first = nb * 16;
                let count = n_out.saturating_sub(first).min(16);
                // SAFETY: per the contract; `count` keeps to the rows' real outputs.
                unsafe {
                    crate::elementwise::silu_mul_block(
                        scratch,
                        valid,
                        out.add(r * ldo + first),
                        ldo,
                        count,
                    );
                }
            }
        }
    }
}

fn run(
    kernel: Kernel,
    a: &BfMatrix,
    w: &PackedWeight,
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
    assert!(
        isa.is_supported(),
        "gemm: the {isa} kernel cannot run on this CPU"
    );
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
    run_into(kernel_for(isa), a, w, sink);
}

fn kernel_for(isa: Isa) -> Kernel {
    match isa {
        Isa::Amx => Kernel::Amx,
        Isa::Avx512Bf16 => Kernel::Avx512,
        Isa::Avx2 => Kernel::Avx2,
        Isa::Reference => Kernel::Reference,
    }
}

fn run_into(kernel: Kernel, a: &BfMatrix, w: &PackedWeight, sink: Sink) {
    let m = a.rows();
    assert_eq!(
        a.cols(),
        w.k(),
        "gemm: A has {} columns, W has {} inputs",
        a.cols(),
        w.k()
    );

    let threads = rayon::current_num_threads().max(1);
    let chunk = row_chunk(w.k());
    let row_chunks = m.div_ceil(chunk);
    // Rows alone give too few tasks for small batches; then the panels are split too.
    let col_splits = if row_chunks >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(row_chunks).min(w.n_blocks())
    };
    let tasks: Vec<(Range<usize>, Range<usize>)> = (0..row_chunks)
        .flat_map(|r| {
            let rows = r * chunk..((r + 1) * chunk).min(m);
            (0..col_splits).map(move |s| {
                let panels = s * w.n_blocks() / col_splits..(s + 1) * w.n_blocks() / col_splits;
                (rows.clone(), panels)
            })
        })
        .collect();
    let task = |(rows, panels): &(Range<usize>, Range<usize>)| {
        // SAFETY: `rows × panels` rectangles are disjoint between tasks and lie inside the sink
        // (checked by the callers); A and W are padded to whole blocks.
        unsafe { rectangle(kernel, a, w, sink, rows.clone(), panels.clone()) };
    };
    if tasks.len() == 1 {
        task(&tasks[0]);
    } else {
        tasks.par_iter().for_each(task);
    }
}

/// One task: rows × panels of the result.
///
/// # Safety
/// The sink is valid for `A.rows()` rows; the rectangle is not written concurrently.
unsafe fn rectangle(
    kernel: Kernel,
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    // SAFETY: forwarded.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => tiled(&mut tiles::Amx::new(), a, w, sink, rows, panels),
            Kernel::SoftAmx => tiled(&mut tiles::SoftTiles::new(), a, w, sink, rows, panels),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512_rows(a, w, sink, rows, panels),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => avx2_rows(a, w, sink, rows, panels),
            Kernel::Reference => reference(a, w, sink, rows, panels),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel on another architecture"),
        }
    }
}

/// The AMX loop: 32-row blocks (16 for a last odd half); full f32 blocks go straight into C,
/// edge blocks and fused epilogues through a scratch block in L1.
unsafe fn tiled<T: Tiles>(
    tiles: &mut T,
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    tiles.configure();
    let (lda, k_blocks, n) = (a.stride(), w.k_blocks(), w.n());
    let mut scratch = Aligned([0f32; BLOCK * BLOCK]);
    for nb in panels {
        let panel = w.panel(nb).as_ptr();
        let cols = (n - nb * BLOCK).min(BLOCK);
        let mut r = rows.start;
        while r < rows.end {
            let block_rows = if rows.end - r > 16 { BLOCK } else { 16 };
            let valid = block_rows.min(rows.end - r);
            // SAFETY: A is padded to whole 32-row blocks and r is a multiple of 16 (32 unless
            // this is the last block), so `block_rows` rows from r exist; the sink's cells are
            // inside the caller's rectangle; the scratch block holds 32 × 32.
            unsafe {
                let a_ptr = a.padded().as_ptr().add(r * lda);
                match sink {
                    Sink::F32 { c, ldc, accumulate } if valid == block_rows && cols == BLOCK => {
                        let c_ptr = c.add(r * ldc + nb * BLOCK);
                        tiles::block(
                            tiles, block_rows, a_ptr, lda, panel, k_blocks, c_ptr, ldc, accumulate,
                        );
                    }
                    _ => {
                        let accumulate = sink.accumulates();
                        if accumulate {
                            sink.preload(&mut scratch.0, r, nb, valid, cols);
                        }
                        let s = scratch.as_mut_ptr();
                        tiles::block(
                            tiles, block_rows, a_ptr, lda, panel, k_blocks, s, BLOCK, accumulate,
                        );
                        sink.finish(&scratch.0, r, nb, valid, cols);
                    }
                }
            }
            r += block_rows;
        }
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn avx512_rows(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    use crate::avx512::{block, MAX_ROWS};
    let (lda, k_blocks, n) = (a.stride(), w.k_blocks(), w.n());
    let mut scratch = [0f32; MAX_ROWS * BLOCK];
    for nb in panels {
        let panel = w.panel(nb).as_ptr();
        let cols = (n - nb * BLOCK).min(BLOCK);
        for r in rows.clone().step_by(MAX_ROWS) {
            let count = MAX_ROWS.min(rows.end - r);
            // SAFETY: AVX512-BF16 was checked by the caller; rows r..r+count of A and of the
            // sink exist, and the masked stores keep to `cols` columns.
            unsafe {
                let a_ptr = a.padded().as_ptr().add(r * lda);
                if let Sink::F32 { c, ldc, accumulate } = sink {
                    let c_ptr = c.add(r * ldc + nb * BLOCK);
                    block(
                        count, a_ptr, lda, panel, k_blocks, c_ptr, ldc, cols, accumulate,
                    );
                } else {
                    let s = scratch.as_mut_ptr();
                    block(count, a_ptr, lda, panel, k_blocks, s, BLOCK, BLOCK, false);
                    sink.finish(&scratch, r, nb, count, cols);
                }
            }
        }
    }
}

/// A task's rows of A widened to f32, and one panel of their results, for the AVX2 kernel.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct Avx2Scratch {
    a: AlignedVec<f32>,
    panel: AlignedVec<f32>,
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static AVX2_SCRATCH: std::cell::RefCell<Avx2Scratch> = std::cell::RefCell::default();
}

/// The AVX2 loop: the task's rows of A widened to f32 once, then panel by panel into a scratch
/// panel (rows × 32), which goes to the sink.
#[cfg(target_arch = "x86_64")]
unsafe fn avx2_rows(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let (lda, k_blocks, n) = (a.stride(), w.k_blocks(), w.n());
    let width = k_blocks * BLOCK;
    AVX2_SCRATCH.with_borrow_mut(|s| {
        s.a.resize_for_overwrite(rows.len() * width);
        s.panel.resize_for_overwrite(rows.len() * BLOCK);
        for (r, dst) in rows.clone().zip(s.a.chunks_exact_mut(width)) {
            crate::avx2::widen(&a.padded()[r * lda..][..width], dst);
        }
        for nb in panels {
            let cols = (n - nb * BLOCK).min(BLOCK);
            // SAFETY: the caller checked AVX2 and FMA; the widened rows, the panel and the
            // scratch panel have the sizes `panel` needs.
            unsafe {
                crate::avx2::panel(
                    rows.len(),
                    s.a.as_ptr(),
                    width,
                    w.panel(nb).as_ptr(),
                    k_blocks,
                    s.panel.as_mut_ptr(),
                );
            }
            match sink {
                Sink::F32 { c, ldc, accumulate } => {
                    for (i, sums) in s.panel.chunks_exact(BLOCK).enumerate() {
                        // SAFETY: row `rows.start + i`, panel nb's `cols` columns lie in C and
                        // in this task's rectangle.
                        unsafe {
                            let dst = c.add((rows.start + i) * ldc + nb * BLOCK);
                            for (j, &sum) in sums[..cols].iter().enumerate() {
                                *dst.add(j) = if accumulate { *dst.add(j) + sum } else { sum };
                            }
                        }
                    }
                }
                // SAFETY: as above; the scratch panel's rows are 32 apart.
                Sink::SiluMul { .. } => unsafe {
                    sink.finish(&s.panel, rows.start, nb, rows.len(), cols);
                },
            }
        }
    });
}

/// Scalar code with the same arithmetic: bf16 products summed in f32, K pair by pair.
unsafe fn reference(
    a: &BfMatrix,
    w: &PackedWeight,
    sink: Sink,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let (k_blocks, n, lda) = (w.k_blocks(), w.n(), a.stride());
    let a_all = a.padded();
    for nb in panels {
        let panel = w.panel(nb);
        let cols = (n - nb * BLOCK).min(BLOCK);
        for r in rows.clone() {
            let a_row = &a_all[r * lda..(r + 1) * lda];
            let mut sums = [0f32; BLOCK];
            if sink.accumulates() {
                // SAFETY: row r, panel nb lie in the caller's rectangle.
                unsafe { sink.preload(&mut sums, r, nb, 1, cols) };
            }
            for kb in 0..k_blocks {
                let blk = &panel[kb * BLOCK_ELEMS..(kb + 1) * BLOCK_ELEMS];
                for (col, sum) in sums.iter_mut().enumerate() {
                    let tile = &blk[(col / 16) * TILE_ELEMS..];
                    for pair in 0..16 {
                        let at = pair * 32 + (col % 16) * 2;
                        let k = kb * BLOCK + 2 * pair;
                        *sum += a_row[k].to_f32() * tile[at].to_f32()
                            + a_row[k + 1].to_f32() * tile[at + 1].to_f32();
                    }
                }
            }
            // SAFETY: as above.
            unsafe { sink.finish(&sums, r, nb, 1, cols) };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(count: usize, seed: u64) -> Vec<bf16> {
        crate::test_values(count, seed)
            .into_iter()
            .map(bf16::from_f32)
            .collect()
    }

    fn kernels() -> Vec<Kernel> {
        let mut all = vec![Kernel::Reference, Kernel::SoftAmx];
        if Isa::Avx512Bf16.is_supported() {
            all.push(Kernel::Avx512);
        }
        if Isa::Avx2.is_supported() {
            all.push(Kernel::Avx2);
        }
        if Isa::Amx.is_supported() {
            all.push(Kernel::Amx);
        }
        all
    }

    /// Runs `kernel` on an m×k by n×k problem and returns the largest error relative to the
    /// f64 result, measured against Σ|a·w| (the scale f32 rounding of a sum works at).
    fn check(kernel: Kernel, m: usize, n: usize, k: usize, accumulate: bool) {
        let (a_vals, w_vals) = (
            values(m * k, (m * 31 + k) as u64),
            values(n * k, (n * 17 + k) as u64),
        );
        let a = BfMatrix::from_f32(&a_vals.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, k);
        let w = PackedWeight::new(&w_vals, n, k);
        let ldc = n + 3;
        let start: Vec<f32> = (0..m * ldc).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut c = start.clone();
        run(kernel, &a, &w, &mut c, ldc, accumulate);
        let exact = f64_reference(&a_vals, &w_vals, m, n, k);
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j];
                if j >= n {
                    assert_eq!(
                        got.to_bits(),
                        start[i * ldc + j].to_bits(),
                        "{kernel:?} wrote outside C at ({i}, {j})"
                    );
                    continue;
                }
                let base = if accumulate {
                    f64::from(start[i * ldc + j])
                } else {
                    0.0
                };
                let want = base + exact[i * n + j];
                let magnitude: f64 = base.abs()
                    + (0..k)
                        .map(|p| {
                            f64::from(
                                (a_vals[i * k + p].to_f32() * w_vals[j * k + p].to_f32()).abs(),
                            )
                        })
                        .sum::<f64>();
                // Products of bf16 are exact in f32; only the f32 additions round, each by at
                // most 2^-24 of the running sum: k·2^-24·Σ|aw| bounds the error, 1e-6 rounds it up.
                let bound = (k as f64 * 6e-8).max(1e-6) * magnitude.max(1.0);
                assert!(
                    (f64::from(got) - want).abs() <= bound,
                    "{kernel:?} {m}×{n}×{k} at ({i}, {j}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn ragged_shapes_and_single_rows() {
        let shapes = [
            (1, 1, 1),
            (1, 32, 32),
            (1, 50, 70),
            (3, 17, 5),
            (16, 32, 64),
            (17, 33, 31),
            (32, 64, 96),
            (45, 40, 100),
            (130, 70, 64),
        ];
        for kernel in kernels() {
            for &(m, n, k) in &shapes {
                if kernel == Kernel::SoftAmx && m * n * k > 200_000 {
                    continue;
                }
                check(kernel, m, n, k, false);
                check(kernel, m, n, k, true);
            }
        }
    }

    #[test]
    fn larger_shapes_spread_over_threads() {
        for kernel in kernels().into_iter().filter(|k| *k != Kernel::SoftAmx) {
            check(kernel, 300, 200, 256, false);
            check(kernel, 257, 96, 1024, true);
        }
    }

    /// The model and the hardware agree bit for bit: same pairs, same f32 order per tile row
    /// (within the precision the model assumes, checked loosely where they might differ).
    #[test]
    fn software_tiles_match_the_hardware() {
        if !Isa::Amx.is_supported() {
            return;
        }
        let (m, n, k) = (40, 48, 96);
        let a_vals = values(m * k, 1);
        let a = BfMatrix::from_f32(&a_vals.iter().map(|v| v.to_f32()).collect::<Vec<_>>(), m, k);
        let w = PackedWeight::new(&values(n * k, 2), n, k);
        let (mut hw, mut soft) = (vec![0f32; m * n], vec![0f32; m * n]);
        run(Kernel::Amx, &a, &w, &mut hw, n, false);
        run(Kernel::SoftAmx, &a, &w, &mut soft, n, false);
        let worst = hw
            .iter()
            .zip(&soft)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "hardware and model differ by {worst}");
    }

    #[test]
    fn fused_silu_mul_matches_the_unfused_formula() {
        for kernel in kernels() {
            for &(m, inter, k) in &[(1, 16, 32), (3, 40, 64), (17, 80, 48), (45, 96, 96)] {
                let a_vals = values(m * k, 3);
                let (gate, up) = (values(inter * k, 4), values(inter * k, 5));
                let a = BfMatrix::from_f32(
                    &a_vals.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                    m,
                    k,
                );
                let w = PackedWeight::gate_up(&gate, &up, inter, k);
                let mut out = BfMatrix::default();
                let sink_out = |out: &mut BfMatrix| Sink::SiluMul {
                    out: out.padded_mut().as_mut_ptr(),
                    ldo: out.stride(),
                    n_out: inter,
                };
                out.reset(m, inter);
                run_into(kernel, &a, &w, sink_out(&mut out));
                let (g, u) = (
                    f64_reference(&a_vals, &gate, m, inter, k),
                    f64_reference(&a_vals, &up, m, inter, k),
                );
                for i in 0..m {
                    for j in 0..inter {
                        let (gv, uv) = (g[i * inter + j], u[i * inter + j]);
                        let want = gv / (1.0 + (-gv).exp()) * uv;
                        let got = f64::from(out.row(i)[j].to_f32());
                        // One bf16 rounding (2^-9 relative) plus f32 sums: 2^-8 of the value.
                        assert!(
                            (got - want).abs() <= want.abs() / 256.0 + 1e-5,
                            "{kernel:?} ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// A row's result is the same whatever rows surround it (batch invariance).
    #[test]
    fn rows_do_not_depend_on_their_neighbours() {
        let (n, k) = (96, 128);
        let w = PackedWeight::new(&values(n * k, 5), n, k);
        let row: Vec<f32> = values(k, 9).iter().map(|v| v.to_f32()).collect();
        for kernel in kernels() {
            let alone = BfMatrix::from_f32(&row, 1, k);
            let mut c1 = vec![0f32; n];
            run(kernel, &alone, &w, &mut c1, n, false);
            let m = 77;
            let mut many: Vec<f32> = values(m * k, 11).iter().map(|v| v.to_f32()).collect();
            many[50 * k..51 * k].copy_from_slice(&row);
            let batch = BfMatrix::from_f32(&many, m, k);
            let mut c2 = vec![0f32; m * n];
            run(kernel, &batch, &w, &mut c2, n, false);
            assert_eq!(c1, c2[50 * n..51 * n], "{kernel:?}");
        }
    }
}
