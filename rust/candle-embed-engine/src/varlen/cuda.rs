//! Launching `cuda/varlen_attention.cu`, compiled to PTX by build.rs and loaded once per device.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout};

use super::{VarlenAttention, KEYS, WARPS};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/varlen_attention.ptx"));
const MODULE: &str = "candle_embed_varlen_attention";

type Input<'a> = (&'a CudaStorage, &'a Layout);

fn view<'a, T>(
    (slice, layout): (&'a CudaSlice<T>, &Layout),
) -> candle_core::Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => candle_core::bail!("varlen attention: inputs must be contiguous"),
    }
}

pub(super) fn launch(
    op: &VarlenAttention,
    q: Input<'_>,
    k: Input<'_>,
    v: Input<'_>,
) -> candle_core::Result<CudaStorage> {
    let device = q.0.device().clone();
    let slice = match (&q.0.slice, &k.0.slice, &v.0.slice) {
        (CudaStorageSlice::F32(qs), CudaStorageSlice::F32(ks), CudaStorageSlice::F32(vs)) => {
            CudaStorageSlice::F32(run(
                op,
                &device,
                "varlen_attention_f32",
                (qs, q.1),
                (ks, k.1),
                (vs, v.1),
            )?)
        }
        (CudaStorageSlice::BF16(qs), CudaStorageSlice::BF16(ks), CudaStorageSlice::BF16(vs)) => {
            CudaStorageSlice::BF16(run(
                op,
                &device,
                "varlen_attention_bf16",
                (qs, q.1),
                (ks, k.1),
                (vs, v.1),
            )?)
        }
        _ => candle_core::bail!(
            "varlen attention: q, k and v must all be f32 or all bf16, got {:?} {:?} {:?}",
            q.0.dtype(),
            k.0.dtype(),
            v.0.dtype()
        ),
    };
    Ok(CudaStorage { slice, device })
}

fn run<T: DeviceRepr>(
    op: &VarlenAttention,
    device: &CudaDevice,
    kernel: &str,
    q: (&CudaSlice<T>, &Layout),
    k: (&CudaSlice<T>, &Layout),
    v: (&CudaSlice<T>, &Layout),
) -> candle_core::Result<CudaSlice<T>> {
    let out_len = q.1.shape().elem_count();
    let (qv, kv, vv) = (view(q)?, view(k)?, view(v)?);
    let tasks = device.clone_htod(&op.tasks[..])?;
    let n_tasks = u32::try_from(op.tasks.len() / 4)
        .map_err(|_| candle_core::Error::Msg("varlen attention: too many tasks".to_owned()))?;
    // SAFETY: every element is written by the kernel: each (query row, head) belongs to exactly one
    // (task, head) block of the plan, which covers all query rows.
    let out = unsafe { device.alloc::<T>(out_len)? };
    if n_tasks == 0 {
        return Ok(out);
    }
    let d = op.head_dim;
    let key_stride = if d.is_multiple_of(2) { d + 1 } else { d };
    let shared = (WARPS * d + KEYS * key_stride + KEYS * d) * std::mem::size_of::<f32>();
    let config = LaunchConfig {
        grid_dim: (n_tasks, op.heads as u32, 1),
        block_dim: ((WARPS * 32) as u32, 1, 1),
        shared_mem_bytes: shared as u32,
    };
    let func = device.get_or_load_custom_func(kernel, MODULE, PTX)?;
    let (heads, kv_heads, d) = (op.heads as i32, op.kv_heads as i32, d as i32);
    let scale_log2 = op.scale * std::f32::consts::LOG2_E;
    let mut builder = func.builder();
    builder.arg(&qv);
    builder.arg(&kv);
    builder.arg(&vv);
    builder.arg(&out);
    builder.arg(&tasks);
    builder.arg(&heads);
    builder.arg(&kv_heads);
    builder.arg(&d);
    builder.arg(&scale_log2);
    // SAFETY: the argument list matches the kernel's signature; the plan was checked against the
    // tensors' shapes, so every index the kernel forms is inside them.
    unsafe { builder.launch(config) }.w()?;
    Ok(out)
}
