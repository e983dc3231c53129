# Sourced by scripts/build_cuda.sh and .ci/run: a CUDA compiler from PyPI (no driver, no GPU and
# no system toolkit needed) and the variables candle's and our kernel builds read.
#
# The version is pinned to CUDA 13.0: PTX from a newer nvcc (ISA 9.5 from 13.5) is refused by
# a 13.0 driver (R580), which is what H100/H200 machines run today; a 13.0 PTX loads on any
# driver since. CUDA_COMPUTE_CAP=90 (H100/H200) unless set: with no GPU here nothing can be
# queried. Set it to 80 for an A100, 89 for an L4/L40S.
set -euo pipefail

CUDA_TOOLS=${CUDA_TOOLS:-$PWD/target/cuda-tools}
if [ ! -x "$CUDA_TOOLS/venv/bin/python" ]; then
    python3 -m venv "$CUDA_TOOLS/venv"
fi
"$CUDA_TOOLS/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-nvvm==13.0.88" "nvidia-cuda-crt==13.0.88" \
    "nvidia-cuda-runtime==13.0.88" "nvidia-cuda-cccl==13.0.85" "maturin>=1.7,<2"
CUDA_ROOT=$("$CUDA_TOOLS/venv/bin/python" -c \
    'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
export CUDA_ROOT CUDA_PATH=$CUDA_ROOT
export PATH=$CUDA_ROOT/bin:$CUDA_TOOLS/venv/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# cudarc's bindings for the CUDA 13.0 driver API: the oldest 13.x driver works.
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13000}
echo "cuda_env: $(nvcc --version | tail -1), compute capability $CUDA_COMPUTE_CAP, CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION"
