//! What the CPU decoder's matmuls take: bf16 ([`Bf16`], `dtype="bf16"` and `"auto"`) or f32
//! ([`F32`], `dtype="f32"`, the exact path). The decoder is written once over [`Precision`];
//! each type says how weights are read, how normed rows are stored, and which kernels multiply
//! them. Either way the residual stream, the norms, RoPE and softmax are f32.

use candle_embed_kernels::attention::{
    causal_attention, causal_attention_f32, AttentionBuffers, Heads, Prepare, QkvRows, Stored,
};
use candle_embed_kernels::pack::Element;
use candle_embed_kernels::{
    f32_to_bf16, gemm, gemm_f32, gemm_f32_silu_mul, gemm_silu_mul, AlignedVec, BfMatrix, Isa,
    PackedWeight,
};
use half::bf16;

use crate::error::Result;
use crate::weights::WeightReader;

/// The matmul inputs' type, with its storage and kernels.
pub trait Precision: Send + Sync + 'static {
    /// Weights, matmul inputs, and attention's Q, K and V.
    type E: Element + Stored;
    /// Rows of matmul input.
    type Rows: Default + Send + Sync;

    /// Checkpoint tensor `name` of `shape`, as `E` (exact from bf16 either way).
    fn read(r: &WeightReader, name: &str, shape: &[usize]) -> Result<Vec<Self::E>>;

    /// `rows` reset to `n` rows of `width`, each to be overwritten: every row slice starts at
    /// its row and holds at least `width` values.
    fn reshape(rows: &mut Self::Rows, n: usize, width: usize) -> RowsMut<'_, Self::E>;

    /// Row `r` (its first `width` values).
    fn row(rows: &Self::Rows, r: usize, width: usize) -> &[Self::E];

    /// `f32` values stored as `E` (rounded to bf16, or copied).
    fn store(src: &[f32], dst: &mut [Self::E]);

    /// `c = a · wᵀ` (or `+=` when `accumulate`), `c` rows `ldc` apart.
    fn gemm(
        isa: Isa,
        a: &Self::Rows,
        w: &PackedWeight<Self::E>,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    );

    /// `silu(gate) · up` of `a` by the interleaved gate/up weight `w`, into `out`.
    fn gemm_silu_mul(
        isa: Isa,
        a: &Self::Rows,
        w: &PackedWeight<Self::E>,
        intermediate: usize,
        out: &mut Self::Rows,
    );

    /// Causal attention of `qkv` into `out` (`tokens × q·dim`).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        isa: Isa,
        heads: Heads,
        qkv: QkvRows<'_>,
        sequences: &[std::ops::Range<usize>],
        scale: f32,
        prepare: Prepare<'_>,
        buffers: &mut AttentionBuffers<Self::E>,
        out: &mut Self::Rows,
    );
}

/// Row slices to fill in parallel (rayon).
pub type RowsMut<'a, E> = rayon::slice::ChunksExactMut<'a, E>;

/// bf16 matmul inputs, f32 sums: the kernel family `isa` names.
#[derive(Debug, Clone, Copy)]
pub struct Bf16;

impl Precision for Bf16 {
    type E = bf16;
    type Rows = BfMatrix;

    fn read(r: &WeightReader, name: &str, shape: &[usize]) -> Result<Vec<bf16>> {
        r.bf16(name, shape)
    }

    fn reshape(rows: &mut BfMatrix, n: usize, width: usize) -> RowsMut<'_, bf16> {
        rows.reshape_for_overwrite(n, width);
        rows.par_rows_mut()
    }

    fn row(rows: &BfMatrix, r: usize, width: usize) -> &[bf16] {
        &rows.row(r)[..width]
    }

    fn store(src: &[f32], dst: &mut [bf16]) {
        f32_to_bf16(src, dst);
    }

    fn gemm(isa: Isa, a: &BfMatrix, w: &PackedWeight, c: &mut [f32], ldc: usize, accumulate: bool) {
        gemm(isa, a, w, c, ldc, accumulate);
    }

    fn gemm_silu_mul(
        isa: Isa,
        a: &BfMatrix,
        w: &PackedWeight,
        intermediate: usize,
        out: &mut BfMatrix,
    ) {
        gemm_silu_mul(isa, a, w, intermediate, out);
    }

    fn attention(
        isa: Isa,
        heads: Heads,
        qkv: QkvRows<'_>,
        sequences: &[std::ops::Range<usize>],
        scale: f32,
        prepare: Prepare<'_>,
        buffers: &mut AttentionBuffers,
        out: &mut BfMatrix,
    ) {
        causal_attention(isa, heads, qkv, sequences, scale, prepare, buffers, out);
    }
}

/// f32 throughout, on the f32 loops of `isa` ([`Isa::for_f32`]): the exact path.
#[derive(Debug, Clone, Copy)]
pub struct F32;

/// Row-major f32 rows; the width is the next kernel's (the GEMM's K, attention's `q·dim`).
#[derive(Default)]
pub struct F32Rows(AlignedVec<f32>);

impl Precision for F32 {
    type E = f32;
    type Rows = F32Rows;

    fn read(r: &WeightReader, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        r.f32(name, shape)
    }

    fn reshape(rows: &mut F32Rows, n: usize, width: usize) -> RowsMut<'_, f32> {
        rows.0.resize_for_overwrite(n * width);
        rayon::prelude::ParallelSliceMut::par_chunks_exact_mut(&mut rows.0[..], width.max(1))
    }

    fn row(rows: &F32Rows, r: usize, width: usize) -> &[f32] {
        &rows.0[r * width..][..width]
    }

    fn store(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }

    fn gemm(
        isa: Isa,
        a: &F32Rows,
        w: &PackedWeight<f32>,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        gemm_f32(isa, &a.0, w, c, ldc, accumulate);
    }

    fn gemm_silu_mul(
        isa: Isa,
        a: &F32Rows,
        w: &PackedWeight<f32>,
        intermediate: usize,
        out: &mut F32Rows,
    ) {
        out.0.resize_for_overwrite(a.0.len() / w.k() * intermediate);
        gemm_f32_silu_mul(isa, &a.0, w, intermediate, &mut out.0);
    }

    fn attention(
        isa: Isa,
        heads: Heads,
        qkv: QkvRows<'_>,
        sequences: &[std::ops::Range<usize>],
        scale: f32,
        prepare: Prepare<'_>,
        buffers: &mut AttentionBuffers<f32>,
        out: &mut F32Rows,
    ) {
        causal_attention_f32(
            isa, heads, qkv, sequences, scale, prepare, buffers, &mut out.0,
        );
    }
}
