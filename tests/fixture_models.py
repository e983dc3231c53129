"""The fixture models (written by scripts/make_fixtures.py) and the calls every test file makes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from candle_embed import EmbeddingRequest, Runner, Which

MODELS = Path(__file__).parent / "fixtures" / "models"
# hidden_size 64, max_position_embeddings 128, vocab_size 1024; has config_sentence_transformers.json;
# its tokenizer.json appends <|endoftext|> itself.
GQA = MODELS / "gqa-bf16"
# hidden_size 48; no config_sentence_transformers.json; the tokenizer does not append
# <|endoftext|>, the engine does.
MQA = MODELS / "mqa-f16-prefix"
# hidden_size 32; weights in two shards; RoPE theta in the rope_parameters form.
SHARDED = MODELS / "mha-f32-sharded"


def load(model_dir: Union[Path, str], **kwargs) -> Runner:
    return Runner(which=Which.Embedding(model_id=str(model_dir)), **kwargs)


def embed(runner: Runner, **request) -> np.ndarray:
    return runner.send_embedding_request(EmbeddingRequest(**request))


# What the tests take the CPU to be. Under an emulated CPU (scripts/emulated_cpu.sh) /proc/cpuinfo
# shows the host's, so the script names a file that describes the emulated one.
CPUINFO = Path(os.environ.get("CANDLE_EMBED_TEST_CPUINFO", "/proc/cpuinfo"))


def cpuinfo_field(name: str) -> str:
    """The first value of a field of the CPU's description (CPUINFO); empty where there is none."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return ""
    line = next((line for line in text.splitlines() if line.split(":")[0].strip() == name), "")
    return line.partition(":")[2].strip()


def cpu_flags() -> set[str]:
    return set(cpuinfo_field("flags").split())


def expected_cpu_kernel(explicit_bf16: bool = False) -> Optional[str]:
    """The bf16 CPU kernel dtype="auto" (or, with `explicit_bf16`, dtype="bf16") should pick on
    this machine, read independently of the engine: from /proc/cpuinfo's flags and
    CANDLE_EMBED_CPU_KERNEL. None means f32 (candle) for "auto", an error for "bf16"."""
    forced = os.environ.get("CANDLE_EMBED_CPU_KERNEL", "auto").strip()
    if forced in ("none", "f32"):
        return None
    if forced not in ("", "auto"):
        return forced
    # "auto" and "bf16" both take the fastest family the CPU has. Intel's cores run vdpbf16ps at
    # half their f32 FMA rate, so there the widened avx512 kernels come before avx512bf16.
    del explicit_bf16
    runnable = runnable_cpu_kernels()
    if cpuinfo_field("vendor_id") == "GenuineIntel":
        order = ("amx", "avx512", "avx512bf16", "avx2")
    else:
        order = ("amx", "avx512bf16", "avx512", "avx2")
    return next((k for k in order if k in runnable), None)


def runnable_cpu_kernels() -> list[str]:
    """Every bf16 kernel family this CPU can run, by /proc/cpuinfo's flags, fastest first; the
    portable reference always."""
    flags = cpu_flags()
    needs = {
        "amx": {"amx_bf16", "amx_tile", "avx512_bf16"},
        "avx512bf16": {"avx512_bf16", "avx512bw", "avx512vl", "avx512f"},
        "avx512": {"avx512f", "avx2", "fma"},
        "avx2": {"avx2", "fma"},
    }
    return [k for k, need in needs.items() if need <= flags] + ["reference"]


# The family whose f32 loops run dtype="f32" where a bf16 family is chosen: CPUs with AMX or
# AVX512-BF16 all have AVX-512F.
F32_LOOP = {"amx": "avx512", "avx512bf16": "avx512", "avx512": "avx512", "avx2": "avx2", "reference": "reference"}


def f32_cpu_kernel() -> str:
    """What dtype="f32" should report as its kernel here, read independently of the engine: our
    f32 loops of the family the CPU (or CANDLE_EMBED_CPU_KERNEL) gives, or "candle" (candle's
    ops) where there is none."""
    kernel = expected_cpu_kernel()
    return F32_LOOP[kernel] if kernel else "candle"


def runnable_f32_kernels() -> list[str]:
    """Every f32 path this CPU can run, fastest first: our loops, then candle's ops."""
    return list(dict.fromkeys(F32_LOOP[k] for k in runnable_cpu_kernels())) + ["candle"]


def bf16_cpu_kernel() -> Optional[str]:
    """The kernel dtype="bf16" runs on here; None where it is refused (tests then force the
    portable reference kernels)."""
    return expected_cpu_kernel(explicit_bf16=True)
