//! bf16 CPU kernels for candle-embed, with a small interface: pack a weight once
//! ([`PackedWeight`]), keep activations in [`BfMatrix`], multiply with [`gemm`], attend with
//! [`attention`]. Inputs are bf16, sums are f32. Which instructions run is chosen once per process
//! ([`isa::select`]): AMX tiles, AVX512-BF16, or portable reference code with the same arithmetic.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod elementwise;
pub mod gemm;
pub mod isa;
pub mod matrix;
pub mod pack;
mod tiles;

pub use gemm::{gemm, gemm_silu_mul};
pub use isa::{Isa, Selection, KERNEL_ENV};
pub use matrix::{f32_to_bf16, BfMatrix, BLOCK};
pub use pack::PackedWeight;
