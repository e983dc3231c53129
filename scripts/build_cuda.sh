#!/usr/bin/env bash
# Builds candle-embed for NVIDIA GPUs, on any Linux x86-64 machine (no GPU or driver needed):
# the Python wheel in target/wheels-cuda/ and the HTTP server binary beside it.
#
#   bash scripts/build_cuda.sh && pip install target/wheels-cuda/candle_embed-*.whl
#
# nvcc comes from PyPI (scripts/cuda_env.sh); at run time the wheel loads the driver and the
# CUDA 13 libraries (cuBLAS, cuRAND, NVRTC) that a CUDA build of PyTorch or the CUDA toolkit
# installs. CUDA_COMPUTE_CAP picks the GPU generation (default 90: H100/H200). A cold build
# takes 10-30 minutes, most of it candle compiling its kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda_env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}

rm -rf target/wheels-cuda
maturin build --release --features cuda -o target/wheels-cuda
cargo build --release -p candle-embed-server --features cuda
cp "$CARGO_TARGET_DIR/release/candle-embed-server" target/wheels-cuda/
ls -l target/wheels-cuda
