#!/usr/bin/env bash
# Proves the CUDA build on a GPU machine, in one command and under 8 minutes on an H100/H200:
#
#   bash scripts/gpu_check.sh
#
# It needs the wheel that scripts/build_cuda.sh wrote to target/wheels-cuda/ (built where Rust
# is; the GPU machine needs no Rust toolchain and no network), and a python3 with a CUDA build
# of PyTorch, transformers, safetensors, numpy, pytest and nvidia-ml-py. It runs:
#   1. the fixture parity suite on cuda in f32 (<= 1e-4 from transformers' f32 recording) and
#      tests/test_gpu.py: bf16 against transformers' bf16 on the same GPU, batch invariance;
#   2. benches/bench_gpu.py: tokens/s of the 0.6B and 8B shapes against transformers bf16 (sdpa),
#      with peak GPU memory.
# Results go to $OUT (or bench-out/gpu-check): gpu.txt (GPU, driver, versions), pytest.xml,
# gpu-tests.json (batch invariance), bench-gpu.json. Exit status 0 only if every part passed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-out/gpu-check}
mkdir -p "$out"
py=${PYTHON:-python3}

wheel=$(ls target/wheels-cuda/candle_embed-*.whl 2>/dev/null | head -1)
if [ -z "$wheel" ]; then
    echo "gpu_check: no wheel in target/wheels-cuda/; run scripts/build_cuda.sh first" >&2
    exit 2
fi
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
    echo "wheel $(basename "$wheel")"
} | tee "$out/gpu.txt"

# The wheel goes into a folder of its own: the machine's environment is left as it was.
site=$(mktemp -d)/site
"$py" -m pip install -q --no-deps --no-index --no-compile --target "$site" "$wheel" || exit 2
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
# cudarc opens cuBLAS, cuRAND and NVRTC when the first GPU is: the CUDA 13 libraries the PyTorch
# build installed (its nvidia-* packages), ahead of any others.
libs=$("$py" - <<'PY'
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = {os.path.dirname(p) for base in nvidia.__path__
        for p in glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

status=0
echo "== parity and batch invariance on cuda"
CANDLE_EMBED_TEST_DEVICE=cuda CANDLE_EMBED_REQUIRE_GPU=1 CANDLE_EMBED_GPU_REPORT="$out/gpu-tests.json" \
    timeout 240 "$py" -m pytest -q -ra -p no:cacheprovider tests/test_parity.py tests/test_gpu.py \
    --junitxml="$out/pytest.xml" || status=1
[ -f "$out/gpu-tests.json" ] && cat "$out/gpu-tests.json"

echo "== throughput: 0.6B and 8B shapes against transformers bf16 (sdpa)"
PYTHONUNBUFFERED=1 timeout 300 "$py" benches/bench_gpu.py --out "$out/bench-gpu.json" || status=1

echo "== gpu_check: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
