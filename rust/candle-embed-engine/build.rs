//! With the `cuda` feature, compiles our attention kernel (cuda/varlen_attention.cu) to PTX
//! with nvcc, as candle compiles its own kernels. Without it there is nothing to build.
//!
//! nvcc is `$NVCC`, else `$CUDA_ROOT/bin/nvcc` (or `$CUDA_PATH`, `$CUDA_HOME`), else the one on
//! PATH. The PTX targets `compute_$CUDA_COMPUTE_CAP` (default 80: A100 and newer; the driver
//! compiles PTX for newer GPUs when it loads it).

use std::path::PathBuf;
use std::process::Command;

const KERNEL: &str = "cuda/varlen_attention.cu";

fn main() {
    println!("cargo:rerun-if-changed={KERNEL}");
    for var in [
        "NVCC",
        "CUDA_ROOT",
        "CUDA_PATH",
        "CUDA_HOME",
        "CUDA_COMPUTE_CAP",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("varlen_attention.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_owned());
    let cap = cap.trim().replace('.', "");
    let nvcc = nvcc();
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg(KERNEL)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "the cuda feature needs nvcc, which could not be run as {}: {e}. Install the \
                 CUDA toolkit, or `pip install nvidia-cuda-nvcc nvidia-cuda-cccl` and set \
                 CUDA_ROOT (scripts/build_cuda.sh does both)",
                nvcc.display()
            )
        });
    assert!(status.success(), "nvcc failed on {KERNEL} ({status})");
}

fn nvcc() -> PathBuf {
    if let Some(path) = std::env::var_os("NVCC") {
        return path.into();
    }
    ["CUDA_ROOT", "CUDA_PATH", "CUDA_HOME"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|root| PathBuf::from(root).join("bin").join("nvcc"))
        .find(|path| path.exists())
        .unwrap_or_else(|| "nvcc".into())
}
