//! bf16 CPU kernels for candle-embed, with a small interface: pack a weight once
//! ([`PackedWeight`]), keep activations in [`BfMatrix`], multiply with [`gemm()`], attend with
//! [`attention`]. Inputs are bf16, sums are f32. Which instructions run is chosen once per process
//! ([`isa::select`]): AMX tiles, AVX512-BF16, AVX-512F or AVX2 (bf16 widened to f32), or portable
//! reference code with the same arithmetic. The widened loops also multiply f32 by f32 weights
//! ([`gemm_f32`]), for the exact path.

// The crate's own lint settings, beside the workspace's. Kernel loops index several buffers
// with one counter, name operands as the math does (a, w, c, m, n, k), take the raw operands a
// BLAS call would, and inline tiny helpers into `#[target_feature]` loops; SIMD loads here are
// the unaligned kinds. Every unsafe block says why it is sound.
#![allow(
    clippy::needless_range_loop,
    clippy::many_single_char_names,
    clippy::too_many_arguments,
    clippy::inline_always,
    clippy::cast_ptr_alignment
)]
#![deny(unsafe_op_in_unsafe_fn)]
// Elsewhere than x86-64 only the portable reference runs; the x86 loops' shared parts (blocking,
// prefetching, the micro-kernel plumbing) still compile, for the software models, unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_macros))]
#![warn(clippy::undocumented_unsafe_blocks)]

// Unsafe code is denied workspace-wide; these modules need it (SIMD intrinsics, inline asm,
// raw allocation, a syscall) and allow it one by one.
#[allow(unsafe_code)]
pub mod aligned;
#[allow(unsafe_code)]
pub mod attention;
#[allow(unsafe_code)]
pub mod elementwise;
#[allow(unsafe_code)]
pub mod gemm;
#[allow(unsafe_code)]
pub mod isa;
#[allow(unsafe_code)]
pub mod matrix;
pub mod pack;
#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod spills;
#[allow(unsafe_code)]
mod tiles;
#[allow(unsafe_code)]
mod widest;

pub use aligned::{Aligned, AlignedVec};
pub use gemm::{gemm, gemm_f32, gemm_f32_silu_mul, gemm_silu_mul};
pub use isa::{Isa, Selection, KERNEL_ENV};
pub use matrix::{f32_to_bf16, BfMatrix, BLOCK};
pub use pack::PackedWeight;

/// The mask of the first `n` of 16 lanes (all of them from 16 on): the masked loads and stores
/// of a row's last, partial register.
#[inline(always)]
pub(crate) fn first_lanes(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

/// Deterministic test data: values in [-1, 1) from a 64-bit LCG, one stream per seed.
#[cfg(test)]
pub(crate) fn test_values(count: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
