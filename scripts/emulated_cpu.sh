#!/usr/bin/env bash
# The tests on CPUs older than the machines this project is built on, emulated by QEMU:
#
# - An AVX2-only CPU, QEMU's EPYC-Milan model (AMD Zen 3: AVX2 and FMA, no AVX-512), as most
#   laptops and the Zen 2/3 clouds are. The Rust tests (every kernel family the CPU has, and its
#   detection); the kernel `auto` and `bf16` pick; the parity suite (`auto` on the AVX2 kernels,
#   then each family it can run, forced in turn); the refusal of the families it lacks.
# - A CPU with AVX but not AVX2, QEMU's SandyBridge model (2011-2012 laptops and servers): the
#   same tests: `auto` on the f32 path, `bf16` refused, the portable kernels forced.
#
# QEMU's emulator has no AVX-512 instructions (nor AVX2 where the model lacks it), so an
# instruction reached without detection ends the run here with SIGILL, as it would end a user's
# program there. Correctness only: an emulator's timings mean nothing.
#
# Needs what scripts/test.sh leaves (the wheel in .venv, the release test binaries); installs
# qemu-user from Debian's packages where it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-x86_64 >/dev/null; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q qemu-user >/dev/null
fi

# /proc/cpuinfo describes the host, so the tests read the emulated CPU from a file instead: the
# fields they look at, as QEMU's model has them.
zen3=$(mktemp)
sandy=$(mktemp)
trap 'rm -f "$zen3" "$sandy"' EXIT
cat >"$zen3" <<'EOF'
vendor_id	: AuthenticAMD
model name	: AMD EPYC-Milan (QEMU's model of Zen 3, emulated)
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 syscall nx mmxext pdpe1gb rdtscp lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm abm sse4a fsgsbase bmi1 avx2 smep bmi2 erms adx smap clflushopt clwb xsaveopt xgetbv1 umip pku vaes vpclmulqdq
EOF
cat >"$sandy" <<'EOF'
vendor_id	: GenuineIntel
model name	: Intel Xeon E312xx (QEMU's SandyBridge model, emulated)
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 syscall nx rdtscp lm pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 x2apic popcnt tsc_deadline_timer aes xsave avx lahf_lm xsaveopt
EOF

# `emulate MODEL DESCRIPTION COMMAND...`: the command on QEMU's CPU model, the tests reading
# DESCRIPTION as the CPU's. The model's features that the emulator lacks (none of them vector
# ones) are a warning each.
emulate() {
    local cpu=$1 description=$2
    shift 2
    CANDLE_EMBED_TEST_CPUINFO=$description qemu-x86_64 -cpu "$cpu" "$@" \
        2> >(grep -v "TCG doesn't support requested feature" >&2)
}

# The release test binaries scripts/test.sh built, each after its package's directory.
mapfile -t binaries < <(cargo test --release --workspace --exclude candle-embed-python --no-run \
    --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(os.path.dirname(m["manifest_path"]), m["executable"])')
[ ${#binaries[@]} -gt 0 ] || { echo "no test binaries found" >&2; exit 1; }

rust_tests() {
    for entry in "${binaries[@]}"; do
        (cd "${entry%% *}" && emulate "$1" "$2" "${entry#* }" -q)
    done
}

declare -A describes=([EPYC-Milan]=$zen3 [SandyBridge]=$sandy)
for cpu in EPYC-Milan SandyBridge; do
    description=${describes[$cpu]}
    echo "   $cpu: Rust tests"
    rust_tests $cpu "$description"
    echo "   $cpu: the kernel auto, bf16 and f32 pick, parity, the refusal of the families it lacks"
    emulate $cpu "$description" .venv/bin/python -m pytest -q tests/test_parity.py \
        tests/test_api.py::test_runner_info tests/test_api.py::test_explicit_dtype_equals_auto \
        tests/test_api.py::test_forced_kernels_agree \
        tests/test_api.py::test_bf16_runs_on_the_best_kernel_the_cpu_has \
        tests/test_api.py::test_f32_runs_on_our_kernels_where_the_cpu_has_avx2 \
        tests/test_errors.py::test_forced_kernel_the_cpu_lacks
done
