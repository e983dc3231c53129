#!/usr/bin/env python3
"""End-to-end embedding throughput and latency: candle_embed against transformers, same weights.

    python3 scripts/make_bench_model.py            # once: bench-out/qwen3-0.6b-random
    python3 benches/bench_e2e.py [--n-inputs 256]
                                 [--engines candle-auto,candle-f32,hf-f32,onnx-f32,onnx-int8,openvino-auto,openvino-int8]
                                 [--threads 2] [--by-length 16,64,256,1024 [--by-length-tokens 8192]]
    python3 benches/plot_e2e.py                    # bench-out/e2e.json -> docs/e2e-throughput.png

Needs, in one interpreter, candle_embed (the wheel from dist/), torch + transformers, for the
onnx engines sentence-transformers[onnx] (optimum-onnx, onnxruntime), and for the openvino engines
sentence-transformers[openvino] (optimum-intel, openvino, nncf). Any model
directory with config.json and tokenizer.json works (--model-dir tests/fixtures/models/gqa-bf16 for a
quick check); texts are kept within the model's max_position_embeddings.

Engines (each one runs in a subprocess of its own, so its peak RSS is its own):

    candle-bf16   candle_embed.Runner, dtype "bf16", CPU; the whole corpus in one request (the engine
                  packs it into forward passes of at most max_batch_tokens tokens, no padding)
    candle-f32    the same with dtype "f32" ("candle" is accepted as another name for it): our
                  f32 kernels where the CPU has AVX2
    candle-f32-matmul  dtype "f32" on candle's ops (CANDLE_EMBED_CPU_KERNEL=none), as a CPU
                  without AVX2 runs it
    candle-auto   the same with dtype "auto" (not run unless named in --engines)
    candle-avx512 (and -amx, -avx512bf16, -avx2): dtype "bf16" with CANDLE_EMBED_CPU_KERNEL forcing
                  that kernel family, for the families a CPU can run beside the one auto picks
    hf-f32        transformers AutoModel (Qwen3Model) in float32, sdpa attention, torch.inference_mode
    hf-bf16       the same in bfloat16
    onnx-f32      ONNX Runtime on the model as sentence-transformers' backend="onnx" exports it
                  (optimum), same batching and pooling as hf-*; exported once to bench-out/onnx/
    onnx-int8     the same with sentence-transformers' export_dynamic_quantized_onnx_model for this
                  CPU (avx2 / avx512 / avx512_vnni): int8 weights, not the reference's numbers
    openvino-auto OpenVINO's CPU plugin at its defaults on the model as sentence-transformers'
                  backend="openvino" exports it (optimum-intel): bf16 compute on CPUs with bf16
                  instructions, f32 elsewhere; same batching and pooling as hf-*; exported once to
                  bench-out/openvino/
    openvino-f32  the same held to f32 (INFERENCE_PRECISION_HINT)
    openvino-int8 the same export with int8 weights (nncf, as optimum-intel's --weight-format int8),
                  at OpenVINO's default precision: not the reference's numbers

--peer-isa avx2 (or avx512) holds transformers to that instruction family (ATen, MKL and oneDNN each
have an environment switch): a stand-in for an AVX2-only or a Skylake-class CPU when the machine
is newer, beside a forced candle kernel of the same family. ONNX Runtime and OpenVINO have no
such switch and run native, except that OpenVINO then computes in f32, as it does by default on
CPUs of either family (neither has bf16 instructions); the figures of a real CPU of that family
are what count.

The transformers side does what sentence-transformers does for Qwen3-Embedding: sort the texts by
length, batches of --batch-size, AutoTokenizer with left padding (the tokenizer appends
<|endoftext|>), last token's hidden state, L2-normalize. Timings cover tokenization, the model and
pooling, after a warm-up call; the model load is timed apart. An engine whose child process fails
(e.g. a dtype the installed build rejects) is reported as a row with its error; the others still run.

Measurements, per engine:

    throughput    tokens/s over the corpus: deterministic (seeded RNG over built-in word lists, ~85%
                  English and ~15% Chinese), about 60 tokens at the median and 5 to 500 tokens in all
    latency       p50 and p90 of --latency-reps calls embedding one 16-token query (<|endoftext|>
                  included), after 3 warm-up calls
    agreement     every engine returns all its vectors, each compared with hf-f32 (cosine and max abs
                  difference per input; the worst input is reported)
    by length     with --by-length: for each length L, texts of L tokens each (exactly, where the
                  word lists allow), about --by-length-tokens tokens per length, in one more child
                  process per engine; its warm-up is one text of the length

Output: tables on stdout (plain and markdown) and a JSON file (--out, default bench-out/e2e.json)
with the machine (CPU model, cores, threads, the kernel families its flags allow), the model's bf16
weight bytes (each engine's peak RSS is also given as a multiple of them), the corpus, the best
peer (the fastest engine that is not candle_embed; every engine's tokens/s is also given as a
multiple of it), each engine's results ("engines") and, with --by-length, "by_length".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from e2e_corpus import MAX_TOKENS, TokenCounter, latency_query, make_corpus, make_length_corpus, model_max_tokens
from e2e_engines import cpu_flags, load_engine, peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "bench-out" / "qwen3-0.6b-random"
DEFAULT_OUT = ROOT / "bench-out" / "e2e.json"
ENGINES = ("candle-bf16", "candle-f32", "candle-f32-matmul", "candle-auto", "candle-amx", "candle-avx512bf16", "candle-avx512",
           "candle-avx2", "hf-bf16", "hf-f32", "onnx-f32", "onnx-int8", "openvino-auto", "openvino-f32",
           "openvino-int8")
# The peers a CPU user would pick instead: transformers (bf16 only where the CPU has bf16
# instructions; elsewhere it crawls), ONNX Runtime in f32 and int8, OpenVINO at its defaults and
# with int8 weights.
DEFAULT_ENGINES = ("candle-auto", "candle-f32", "hf-f32", "onnx-f32", "onnx-int8", "openvino-auto", "openvino-int8")
PEER_FAMILIES = ("hf", "onnx", "openvino")
ALIASES = {"candle": "candle-f32"}
REFERENCE = "hf-f32"
RATIO_BASES = ("hf-bf16", "hf-f32", "onnx-int8")
WARMUP_INPUTS = 8
NOTE_HEADER = "dtype / kernel"  # the summary table's text column: dtype and kernel, or the error
LATENCY_WARMUP = 3


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu_families(flags: set[str]) -> list[str]:
    """candle_embed's CPU kernel families these /proc/cpuinfo flags allow, fastest first as `auto`
    ranks them off Intel (the detection in rust/candle-embed-kernels/src/isa.rs, which a Rust test
    holds to the same flags)."""
    avx2 = {"avx2", "fma"} <= flags
    checks = {
        "amx": {"amx_bf16", "amx_tile", "avx512_bf16"} <= flags,
        "avx512bf16": "avx512_bf16" in flags,
        "avx512": avx2 and "avx512f" in flags,
        "avx2": avx2,
    }
    return [family for family, has in checks.items() if has] + ["reference"]


def bf16_weight_bytes(model_dir: Path) -> int:
    """Bytes of the checkpoint's tensors at 2 bytes a value, whatever dtype they are stored in: the
    memory a bf16 engine cannot go below."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        total += sum(2 * math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def time_corpus(embed, count_tokens, texts: list[str], warmup: int) -> tuple[np.ndarray, dict]:
    tokens = count_tokens(texts)
    embed(texts[:warmup])
    start = time.perf_counter()
    vectors, computed = embed(texts)
    seconds = time.perf_counter() - start
    run = {"inputs": len(texts), "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
           "peak_rss_mb": peak_rss_mb()}
    if computed is not None:
        run["padded_tokens"] = computed
    return vectors, run


def time_latency(embed, query: str, reps: int) -> dict:
    for _ in range(LATENCY_WARMUP):
        embed([query])
    ms = []
    for _ in range(reps):
        start = time.perf_counter()
        embed([query])
        ms.append((time.perf_counter() - start) * 1000)
    return {"reps": reps, "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(min(ms)), "mean_ms": float(np.mean(ms))}


def child_main(args) -> None:
    """One job for one engine: load it, time each named corpus, then (if asked) the query latency."""
    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    result_dir = Path(args.result_dir)
    info: dict = {}
    try:
        embed, count_tokens, info = load_engine(args.child, args)
        info["runs"] = {}
        for name, texts in job["corpora"].items():
            vectors, info["runs"][name] = time_corpus(embed, count_tokens, texts, job["warmup"])
            np.save(result_dir / f"{name}.npy", vectors)
        if job.get("query"):
            info["latency"] = time_latency(embed, job["query"], job["latency_reps"])
    except Exception as e:  # noqa: BLE001 - reported to the driver, which carries on with other engines
        traceback.print_exc()
        info["error"] = f"{type(e).__name__}: {e}"
    info["peak_rss_mb"] = peak_rss_mb()
    (result_dir / "info.json").write_text(json.dumps(info), encoding="utf-8")
    sys.exit(1 if "error" in info else 0)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


# What transformers may use, for a stand-in of an older CPU on a newer one: ATen's vector kernels,
# MKL (its f32 GEMM) and oneDNN (its bf16 GEMM) each held to the named family. ONNX Runtime has no
# such switch (MLAS picks its kernels from CPUID), nor has OpenVINO (which ignores oneDNN's), so
# both run native; OpenVINO is only held to f32, its default on CPUs of both families.
PEER_ISA_ENV = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    # Skylake-SP to Ice Lake: AVX-512F/BW/DQ/VL, no VNNI on Skylake, no bf16 instructions.
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}


def run_job(engine: str, job: dict, args, workdir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Runs `job` in a child process for `engine`: its info (with "error" on failure) and vectors."""
    job_dir = workdir / f"{engine}-{len(list(workdir.iterdir()))}"
    job_dir.mkdir()
    job_path = job_dir / "job.json"
    job_path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
    env = dict(os.environ)
    # Both thread pools get the same number of threads: rayon/gemm for candle, OpenMP for torch.
    env.update(RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    if engine.startswith("hf-"):
        env.update(PEER_ISA_ENV[args.peer_isa])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--job", str(job_path),
           "--result-dir", str(job_dir), "--model-dir", str(args.model_dir), "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--max-batch-tokens", str(args.max_batch_tokens),
           "--peer-isa", args.peer_isa]
    code = subprocess.run(cmd, env=env, check=False).returncode
    info_path = job_dir / "info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    if code != 0 and "error" not in info:
        info["error"] = f"child process exited with status {code}"
    vectors = {name: np.load(job_dir / f"{name}.npy") for name in job["corpora"]
               if (job_dir / f"{name}.npy").is_file()}
    return info, vectors


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-input cosine and max abs difference of two sets of unit vectors; worst and mean."""
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    diff = np.max(np.abs(a - b), axis=1)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "max_abs_diff": float(diff.max()), "mean_max_abs_diff": float(diff.mean()),
            "worst_input": int(np.argmax(diff))}


def corpus_stats(lengths: list[int]) -> dict:
    arr = np.asarray(lengths)
    return {"inputs": len(lengths), "tokens": int(arr.sum()), "min": int(arr.min()),
            "median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)), "max": int(arr.max())}


def compare(results: dict, vectors: dict[str, np.ndarray], name: str) -> None:
    """Adds agreement with hf-f32 and hf-bf16 to every other engine that has vectors for `name`."""
    for base in RATIO_BASES:
        if base not in vectors:
            continue
        for engine, r in results.items():
            if engine != base and engine in vectors:
                r["agreement_vs_" + base] = agreement(vectors[engine], vectors[base])


def render(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A table with the engine and note columns left-aligned and the numbers right-aligned."""
    left = {0} | {i for i, h in enumerate(headers) if h == NOTE_HEADER}
    if markdown:
        align = [":---" if i in left else "---:" for i in range(len(headers))]
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows])
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), "-" * len(line(headers))] + [line(row) for row in rows])


def summary_rows(results: dict, weight_bytes: int) -> tuple[list[str], list[list[str]]]:
    headers = ["engine", "tokens/s", "x hf-bf16", "x hf-f32", "x onnx-int8", "x best peer", "peak RSS MB",
               "x bf16 weights",
               "p50 ms (16 tok)", "p90 ms", f"min cos vs {REFERENCE}", "max abs diff", NOTE_HEADER]
    rows = []
    for engine, r in results.items():
        if "error" in r:
            rows.append([engine, "failed"] + ["-"] * (len(headers) - 3) + [r["error"]])
            continue
        ratios = [f"{r[f'tokens_per_s_vs_{b}']:.2f}" if f"tokens_per_s_vs_{b}" in r else "-"
                  for b in (*RATIO_BASES, "best_peer")]
        lat = r.get("latency", {})
        agree = r.get("agreement_vs_" + REFERENCE)
        if "runner_info" in r:
            ri = r["runner_info"]
            kind = f"{ri.get('dtype', '?')} / {ri.get('kernel', '-')}"
        elif "onnx_file" in r:
            kind = f"onnxruntime {r['onnxruntime']}, {r['onnx_file']}"
        elif "openvino_file" in r:
            kind = f"openvino {r['openvino'].split('-')[0]}, {r['openvino_file']}, {r['openvino_precision']}"
        else:
            kind = f"torch {r.get('torch_dtype', '?')}"
        rss = f"{r['peak_rss_mb'] * 2**20 / weight_bytes:.2f}" if weight_bytes else "-"
        rows.append([engine, f"{r['tokens_per_s']:.1f}", *ratios, f"{r['peak_rss_mb']:.0f}", rss,
                     f"{lat['p50_ms']:.1f}" if lat else "-", f"{lat['p90_ms']:.1f}" if lat else "-",
                     f"{agree['min_cosine']:.7f}" if agree else "-",
                     f"{agree['max_abs_diff']:.2e}" if agree else "-", kind])
    return headers, rows


def detail_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    # tokens: real tokens (tokens/s counts these); computed: what the model ran on, padding included.
    headers = ["engine", "tokens", "computed", "seconds", "load s", "RSS load MB", "peak RSS MB"]
    rows = [[e, str(r["tokens"]), str(r.get("padded_tokens", r["tokens"])), f"{r['seconds']:.2f}",
             f"{r['load_s']:.1f}", f"{r['rss_after_load_mb']:.0f}", f"{r['peak_rss_mb']:.0f}"]
            for e, r in results.items() if "error" not in r]
    return headers, rows


def by_length_rows(by_length: dict) -> tuple[list[str], list[list[str]]]:
    lengths = [str(n) for n in by_length["lengths"]]
    headers = ["engine"] + [f"L={n} tok/s" for n in lengths]
    rows = []
    for engine, per_length in by_length["engines"].items():
        if "error" in per_length:
            rows.append([engine] + ["failed"] * len(lengths))
        else:
            rows.append([engine] + [f"{per_length[n]['tokens_per_s']:.1f}" if n in per_length else "-"
                                    for n in lengths])
    return headers, rows


def print_report(report: dict, results: dict) -> None:
    stats, machine = report["corpus"], report["machine"]
    print(f"\ncorpus: {stats['inputs']} inputs, {stats['tokens']} tokens (min {stats['min']}, median "
          f"{stats['median']:.0f}, p90 {stats['p90']:.0f}, max {stats['max']}); {machine['cpu_model']}, "
          f"{machine['threads']} threads of {machine['cpu_count']} cores; load avg {os.getloadavg()[0]:.2f}")
    print(f"kernel families the CPU's flags allow: {', '.join(machine['cpu_families'])}; the model's bf16 "
          f"weights {report['model']['bf16_weight_bytes'] / 1e9:.2f} GB")
    print(f"latency: one {report['latency_query']['tokens']}-token query, p50/p90 of "
          f"{report['latency_query']['reps']} calls")
    if "best_peer" in report:
        best = report["best_peer"]
        print(f"best peer (the fastest engine not ours): {best}, {results[best]['tokens_per_s']:.1f} tokens/s")
    if report.get("peer_isa", "native") != "native":
        print(f"transformers held to {report['peer_isa']} ({PEER_ISA_ENV[report['peer_isa']]}); "
              "ONNX Runtime and OpenVINO native, OpenVINO computing in f32")
    print()
    tables = [summary_rows(results, report["model"]["bf16_weight_bytes"])]
    if "by_length" in report:
        tables.append(by_length_rows(report["by_length"]))
    for headers, rows in tables:
        print(render(headers, rows, markdown=False) + "\n")
    print(render(*detail_rows(results), markdown=False) + "\n")
    for engine, r in report.get("by_length", {}).get("engines", {}).items():
        if "error" in r:
            print(f"{engine} failed by length: {r['error']}")
    print("\nmarkdown:\n")
    for headers, rows in tables:
        print(render(headers, rows, markdown=True) + "\n")


def default_engines() -> list[str]:
    flags = cpu_flags()
    bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return list(DEFAULT_ENGINES) + (["hf-bf16"] if bf16 else [])


def parse_engines(text: str, parser) -> list[str]:
    engines = [ALIASES.get(e.strip(), e.strip()) for e in text.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engines {unknown}; choose from {ENGINES} (or {sorted(ALIASES)})")
    return list(dict.fromkeys(engines))


def main() -> None:
    parser = argparse.ArgumentParser(description="candle_embed vs transformers, end to end")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--n-inputs", type=int, default=256)
    parser.add_argument("--engines", default=",".join(default_engines()),
                        help=f"comma-separated, from {ENGINES}; 'candle' means candle-f32")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads / RAYON_NUM_THREADS")
    parser.add_argument("--batch-size", type=int, default=32, help="transformers batch size")
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="candle_embed token budget per pass")
    parser.add_argument("--latency-reps", type=int, default=30, help="timed calls for the 16-token latency")
    parser.add_argument("--by-length", default="", help="comma-separated token lengths, e.g. 16,64,256,1024")
    parser.add_argument("--by-length-tokens", type=int, default=8192, help="about this many tokens per length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-isa", choices=sorted(PEER_ISA_ENV), default="native",
                        help="hold transformers to this instruction family (a stand-in for an older CPU; "
                             "ONNX Runtime and OpenVINO cannot be held and run native, OpenVINO in f32)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    # Internal: one job for one engine in a child process.
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    engines = parse_engines(args.engines, parser)
    try:
        lengths = sorted({int(n) for n in args.by_length.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--by-length takes comma-separated integers, not {args.by_length!r}")
    if not (args.model_dir / "config.json").is_file():
        parser.error(f"{args.model_dir} has no config.json; run scripts/make_bench_model.py first")
    max_tokens = model_max_tokens(args.model_dir)
    too_long = [n for n in lengths if n > max_tokens or n < 2]
    if too_long:
        print(f"skipping lengths {too_long}: the model takes 2 to {max_tokens} tokens", file=sys.stderr)
        lengths = [n for n in lengths if n not in too_long]

    from tokenizers import Tokenizer

    counter = TokenCounter(Tokenizer.from_file(str(args.model_dir / "tokenizer.json")))
    texts = make_corpus(args.n_inputs, args.seed, counter, min(MAX_TOKENS, max_tokens))
    query = latency_query(args.seed, counter)
    length_corpora = {str(n): make_length_corpus(n, args.by_length_tokens, args.seed, counter) for n in lengths}

    report: dict = {
        "model_dir": str(args.model_dir), "seed": args.seed,
        "machine": {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "threads": args.threads,
                    "cpu_families": cpu_families(cpu_flags())},
        "model": {"bf16_weight_bytes": bf16_weight_bytes(args.model_dir)},
        "threads": args.threads, "cpu_count": os.cpu_count(), "peer_isa": args.peer_isa,
        "corpus": corpus_stats([counter.text(t) for t in texts]),
        "latency_query": {"text": query, "tokens": counter.text(query), "reps": args.latency_reps},
    }
    main_job = {"corpora": {"main": texts}, "warmup": WARMUP_INPUTS, "query": query,
                "latency_reps": args.latency_reps}
    length_job = {"corpora": length_corpora, "warmup": 1}

    results: dict[str, dict] = {}
    vectors: dict[str, np.ndarray] = {}
    by_length: dict[str, dict] = {}
    length_vectors: dict[str, dict[str, np.ndarray]] = {n: {} for n in length_corpora}
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        workdir = Path(tmp)
        for engine in engines:
            print(f"[{engine}] running ...", file=sys.stderr, flush=True)
            info, out = run_job(engine, main_job, args, workdir)
            runs = info.pop("runs", {})
            if "error" in info or "main" not in runs:
                info.setdefault("error", "no result")
                results[engine] = {"error": info["error"]}
                print(f"[{engine}] failed: {info['error']}", file=sys.stderr, flush=True)
            else:
                results[engine] = {**info, **runs["main"]}  # the main run's peak RSS, not the latency loop's
                vectors[engine] = out["main"]
                print(f"[{engine}] {runs['main']['tokens']} tokens in {runs['main']['seconds']:.2f} s",
                      file=sys.stderr, flush=True)
            if length_corpora:
                print(f"[{engine}] by length {lengths} ...", file=sys.stderr, flush=True)
                info, out = run_job(engine, length_job, args, workdir)
                if "error" in info:
                    by_length[engine] = {"error": info["error"]}
                else:
                    by_length[engine] = info["runs"]
                for n, v in out.items():
                    length_vectors[n][engine] = v

    # Each ratio's name and the engine it divides by.
    bases = {base: base for base in RATIO_BASES}
    peers = [e for e, r in results.items() if e.split("-")[0] in PEER_FAMILIES and "error" not in r]
    if peers:
        report["best_peer"] = bases["best_peer"] = max(peers, key=lambda e: results[e]["tokens_per_s"])
    for name, base in bases.items():
        if base in results and "error" not in results[base]:
            for r in results.values():
                if "error" not in r:
                    r[f"tokens_per_s_vs_{name}"] = r["tokens_per_s"] / results[base]["tokens_per_s"]
    compare(results, vectors, "main")
    for n, per_engine in length_vectors.items():
        compare({e: by_length[e][n] for e in per_engine if n in by_length[e]}, per_engine, n)

    report["engines"] = results
    if length_corpora:
        report["by_length"] = {
            "lengths": lengths, "target_tokens": args.by_length_tokens,
            "corpora": {n: corpus_stats([counter.text(t) for t in c]) for n, c in length_corpora.items()},
            "engines": by_length,
        }
    print_report(report, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
