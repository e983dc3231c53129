//! Causal grouped-query attention over packed sequences in one call: the GPU's attention
//! (`cuda/varlen_attention.cu`, one launch per layer whatever the number of sequences, no score
//! matrix stored), with a CPU model of the same kernel that the tests check everywhere.
//!
//! [`Plan`] cuts the batch into the kernel's tasks; `VarlenAttention` is the candle op. On CUDA
//! it launches the kernel; on CPU it runs `model`, which walks the kernel's loops lane by lane
//! (same tiles, same masking, same streaming softmax and warp reductions), so a mistake in the
//! kernel's indexing shows up in `cargo test` on a machine without a GPU.

// Allocating device memory and launching a kernel are unsafe in cudarc; each block says why it
// is sound.
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod cuda;
pub(crate) mod model;
mod plan;

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};

pub use plan::{Plan, Task};

/// Query rows (warps) of one task.
pub const WARPS: usize = 8;
/// Keys staged in shared memory at a time, one per lane.
pub const KEYS: usize = 32;
/// Largest head dimension the kernel holds (four values per lane).
pub const MAX_HEAD_DIM: usize = 128;

/// Causal attention of `q` `(q_rows, heads, d)` against `k`, `v` `(tokens, kv_heads, d)` as
/// [`Plan`] says which keys each query row sees; the output has `q`'s shape and dtype.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, plan: &Plan) -> candle_core::Result<Tensor> {
    let (q_rows, heads, d) = q.dims3()?;
    let (tokens, kv_heads, kd) = k.dims3()?;
    if k.dims() != v.dims() || kd != d {
        candle_core::bail!(
            "varlen attention: k {:?} and v {:?} must both be (tokens, kv_heads, {d})",
            k.dims(),
            v.dims()
        );
    }
    if d == 0 || d > MAX_HEAD_DIM || kv_heads == 0 || heads % kv_heads != 0 {
        candle_core::bail!(
            "varlen attention: head_dim {d} (at most {MAX_HEAD_DIM}), {heads} query heads and \
             {kv_heads} key/value heads (a divisor) are not supported"
        );
    }
    plan.check(q_rows, tokens)?;
    let op = VarlenAttention {
        tasks: plan.words(),
        heads,
        kv_heads,
        head_dim: d,
        scale: 1.0 / (d as f32).sqrt(),
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// The op itself: the plan's tasks as the kernel reads them, and the shapes.
struct VarlenAttention {
    tasks: Arc<[u32]>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl VarlenAttention {
    fn shapes(&self) -> model::Shapes {
        model::Shapes {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            scale_log2: self.scale * std::f32::consts::LOG2_E,
        }
    }
}

impl CustomOp3 for VarlenAttention {
    fn name(&self) -> &'static str {
        "varlen-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn view<'a, T>(values: &'a [T], layout: &Layout) -> candle_core::Result<&'a [T]> {
            match layout.contiguous_offsets() {
                Some((start, end)) => Ok(&values[start..end]),
                None => candle_core::bail!("varlen attention: inputs must be contiguous"),
            }
        }
        let shapes = self.shapes();
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(model::run(
                    view(q, ql)?,
                    view(k, kl)?,
                    view(v, vl)?,
                    &self.tasks,
                    shapes,
                ))
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                CpuStorage::BF16(model::run(
                    view(q, ql)?,
                    view(k, kl)?,
                    view(v, vl)?,
                    &self.tasks,
                    shapes,
                ))
            }
            _ => candle_core::bail!(
                "varlen attention: q, k and v must all be f32 or all bf16, got {:?} {:?} {:?}",
                q.dtype(),
                k.dtype(),
                v.dtype()
            ),
        };
        Ok((out, ql.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        ql: &Layout,
        k: &candle_core::CudaStorage,
        kl: &Layout,
        v: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let out = cuda::launch(self, (q, ql), (k, kl), (v, vl))?;
        Ok((out, ql.shape().clone()))
    }
}

/// The dtypes the kernel computes in.
pub fn supports(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16)
}

#[cfg(test)]
mod tests;
