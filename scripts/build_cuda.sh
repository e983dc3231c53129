#!/usr/bin/env bash
# Builds candle-embed for NVIDIA GPUs, on any Linux x86-64 machine (no GPU or driver needed):
# the Python wheel in target/wheels-cuda/ and the HTTP server binary beside it.
#
#   bash scripts/build_cuda.sh && pip install target/wheels-cuda/candle_embed-*.whl
#
# nvcc comes from PyPI (scripts/cuda_env.sh); at run time the wheel loads the driver and the
# CUDA 13 libraries (cuBLAS, cuRAND, NVRTC, the runtime) that a CUDA 13 build of PyTorch or the
# CUDA toolkit installs: they must be on the loader's path (LD_LIBRARY_PATH), as gpu_check.sh sets. CUDA_COMPUTE_CAP picks the GPU generation (default 90: H100/H200). A cold build
# takes 10-30 minutes, most of it candle compiling its kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda_env.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}

# Linking. candle links the CUDA libraries directly (cudarc's dynamic-linking), so the linker wants
# libcublas, libcublasLt, libcurand, libnvrtc, libcudart and the driver's libcuda. The first five
# come from PyPI at the CUDA 13.0 versions, for their names only: at run time the GPU machine's own
# CUDA 13 libraries are loaded (same sonames). libcuda ships with the driver, never in a wheel, so
# a stub with the driver API's names (the ones cudarc declares) and its soname stands in; it is not
# in the wheel: `--auditwheel skip` keeps every CUDA library out of it, to be found on the GPU
# machine.
"$CUDA_TOOLS/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35" "nvidia-cuda-nvrtc==13.0.88"
for name in cublas cublasLt curand nvrtc cudart; do
    real=$(cd "$CUDA_ROOT/lib" && ls "lib$name.so."[0-9]* | grep -E "^lib$name\.so\.[0-9]+$" | head -1)
    ln -sf "$real" "$CUDA_ROOT/lib/lib$name.so"
done
cargo fetch -q
cudarc_sys=$(cargo metadata -q --format-version 1 --features candle-embed-engine/cuda | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
pkg = next(p for p in meta["packages"] if p["name"] == "cudarc")
print(os.path.join(os.path.dirname(pkg["manifest_path"]), "src", "driver", "sys", "mod.rs"))')
grep -oE "^pub unsafe fn cu[A-Za-z0-9_]+" "$cudarc_sys" | sed -E 's/^pub unsafe fn (.*)/void \1(void) {}/' \
    | sort -u > "$CUDA_TOOLS/libcuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA_ROOT/lib/libcuda.so" "$CUDA_TOOLS/libcuda_stub.c"

rm -rf target/wheels-cuda
maturin build --release --features cuda --auditwheel skip -o target/wheels-cuda
cargo build --release -p candle-embed-server --features cuda
cp "$CARGO_TARGET_DIR/release/candle-embed-server" target/wheels-cuda/
ls -l target/wheels-cuda
