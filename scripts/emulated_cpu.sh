#!/usr/bin/env bash
# The tests that decide what an AVX2-only CPU runs, on an emulated one: QEMU's EPYC-Milan model
# (AMD Zen 3: AVX2 and FMA, no AVX-512). Most laptops and the Zen 2/3 clouds are such CPUs, and
# none of the machines this project has been built on lately is. QEMU's emulator has no AVX-512
# instructions, so one reached without detection ends the run here with SIGILL, as it would end a
# user's program there. Under the emulator: the kernel crate's tests (every family the emulated
# CPU has, and its detection), the parity suite (`auto` on the AVX2 kernels, then each family it
# can run, forced in turn) and the refusal of forced kernels it lacks. Correctness only: an
# emulator's timings mean nothing.
#
# Needs what scripts/test.sh leaves (the wheel in .venv, the release build); installs qemu-user
# from Debian's packages where it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v qemu-x86_64 >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q qemu-user >/dev/null
fi

# /proc/cpuinfo describes the host, so the tests read the emulated CPU from this file instead:
# the fields they look at, as QEMU's model has them.
cpuinfo=$(mktemp)
trap 'rm -f "$cpuinfo"' EXIT
cat >"$cpuinfo" <<'EOF'
vendor_id	: AuthenticAMD
model name	: AMD EPYC-Milan (QEMU's model of Zen 3, emulated)
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 syscall nx mmxext pdpe1gb rdtscp lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand lahf_lm abm sse4a fsgsbase bmi1 avx2 smep bmi2 erms adx smap clflushopt clwb xsaveopt xgetbv1 umip pku vaes vpclmulqdq
EOF
export CANDLE_EMBED_TEST_CPUINFO="$cpuinfo"

# The model's features that the emulator lacks (none of them vector ones) are a warning each.
emulate() {
    qemu-x86_64 -cpu EPYC-Milan "$@" 2> >(grep -v "TCG doesn't support requested feature" >&2)
}

kernel_tests=$(cargo test --release -p candle-embed-kernels --no-run --message-format=json \
    2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["lib"] \
            and m.get("executable"):
        print(m["executable"])')
echo "   kernel tests on the emulated CPU"
(cd rust/candle-embed-kernels && emulate "$kernel_tests" -q)
echo "   parity, and the refusal of kernels it lacks, on the emulated CPU"
emulate .venv/bin/python -m pytest -q tests/test_parity.py \
    "tests/test_errors.py::test_forced_kernel_the_cpu_lacks"
