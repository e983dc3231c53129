#!/usr/bin/env python3
"""End-to-end embedding throughput: candle_embed against transformers, same weights, same inputs.

    python3 scripts/make_bench_model.py            # once: bench-out/qwen3-0.6b-random
    python3 benches/bench_e2e.py [--n-inputs 256] [--engines candle,hf-f32,hf-bf16] [--threads 2]

Needs, in one interpreter, candle_embed (the wheel from dist/) and torch + transformers.

Engines (each one runs in a subprocess of its own, so its peak RSS is its own):

    candle    candle_embed.Runner, dtype f32, CPU; the whole corpus in one request (the engine
              packs it into forward passes of at most max_batch_tokens tokens, no padding)
    hf-f32    transformers AutoModel (Qwen3Model) in float32, sdpa attention, torch.inference_mode
    hf-bf16   the same in bfloat16

The transformers side does what sentence-transformers does for Qwen3-Embedding: sort the texts by
length, batches of --batch-size, AutoTokenizer with left padding (the tokenizer appends
<|endoftext|>), last token's hidden state, L2-normalize. Timings cover tokenization, the model and
pooling, after one warm-up call; the model load is timed apart.

The corpus is deterministic (seeded RNG over built-in word lists, ~85% English and ~15% Chinese),
about 60 tokens at the median and 5 to 500 tokens in all. Agreement: every engine returns all its
vectors, and each is compared with hf-f32 (cosine and max abs difference per input; the worst input
is reported). Output: a table on stdout and a JSON file (--out, default bench-out/e2e.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "bench-out" / "qwen3-0.6b-random"
DEFAULT_OUT = ROOT / "bench-out" / "e2e.json"
ENGINES = ("candle", "hf-f32", "hf-bf16")
REFERENCE = "hf-f32"
WARMUP_INPUTS = 8

# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------

ENGLISH = """
the of and to in is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if so no out up what about who
into them more than some could time these two may then first any my now such like our over man
me even most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see men
work long get here between both life being under never day same another know while last might us
great old year off come since against go came right used take three system water model data search
query document vector embedding language network memory engine token batch server request result
river mountain city market history science music garden kitchen winter summer ocean forest bridge
library student teacher doctor machine energy health policy company product customer price report
quickly slowly carefully simply clearly often rarely always usually together however therefore
retrieve compute measure improve compare describe explain answer question reason value number
""".split()

CHINESE = """
我们 今天 天气 非常 好 中国 北京 上海 学习 工作 时间 问题 发展 经济 社会 文化 历史 科学 技术
研究 数据 模型 向量 检索 语言 文本 系统 网络 计算 方法 结果 分析 信息 服务 用户 公司 市场 产品
城市 河流 山脉 音乐 图书馆 学生 老师 医生 机器 能源 健康 政策 我 你 他 是 的 了 在 有 和 不
这 那 一个 可以 因为 所以 但是 如果 已经 非常 重要 简单 快速 准确
""".split()

# Token lengths are drawn from a log-normal around this median and clipped to this range.
MEDIAN_TOKENS = 60
SIGMA = 0.8
MIN_TOKENS, MAX_TOKENS = 5, 500
CHINESE_SHARE = 0.15
CORPUS_BASE = 256  # the corpus for --n-inputs n < 256 is the first n of the 256


def make_corpus(n: int, seed: int, tokenizer) -> list[str]:
    """`max(n, 256)` texts from a seeded RNG, of which the first n are returned."""
    rng = random.Random(seed)
    cache: dict[str, int] = {}

    def count(piece: str) -> int:
        if piece not in cache:
            cache[piece] = len(tokenizer.encode(piece, add_special_tokens=False).ids)
        return cache[piece]

    texts = []
    for _ in range(max(n, CORPUS_BASE)):
        target = round(math.exp(rng.gauss(math.log(MEDIAN_TOKENS), SIGMA)))
        target = min(max(target, MIN_TOKENS), MAX_TOKENS)
        texts.append(_grow_text(rng, target, count))
    return texts[:n]


def _grow_text(rng: random.Random, target_tokens: int, count) -> str:
    """Words drawn until their token counts (plus <|endoftext|>) reach `target_tokens`."""
    chinese = rng.random() < CHINESE_SHARE
    words = CHINESE if chinese else ENGLISH
    parts: list[str] = []
    tokens, in_sentence, sentence_len = 1, 0, rng.randint(6, 18)
    while tokens < target_tokens:
        word = rng.choice(words)
        if not chinese and rng.random() < 0.03:
            word = str(rng.randint(0, 99999))
        if in_sentence == 0 and not chinese:
            word = word.capitalize()
        in_sentence += 1
        if in_sentence >= sentence_len:
            word += "。" if chinese else "."
            in_sentence, sentence_len = 0, rng.randint(6, 18)
        piece = word if chinese or not parts else " " + word
        parts.append(piece)
        tokens += count(piece)
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Engines (run in child processes)
# ---------------------------------------------------------------------------------------------


def rss_now_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_candle(model_dir: Path, texts: list[str], args) -> tuple[np.ndarray, dict]:
    import candle_embed as ce

    start = time.perf_counter()
    runner = ce.Runner(
        ce.Which.Embedding(str(model_dir), dtype="f32"),
        device="cpu",
        max_batch_tokens=args.max_batch_tokens,
    )
    load_s = time.perf_counter() - start
    rss_loaded = rss_now_mb()
    tokens = sum(len(ids) for ids in runner.tokenize(ce.EmbeddingRequest(texts)))

    runner.send_embedding_request(ce.EmbeddingRequest(texts[:WARMUP_INPUTS]))
    start = time.perf_counter()
    vectors = runner.send_embedding_request(ce.EmbeddingRequest(texts))
    seconds = time.perf_counter() - start
    info = {"load_s": load_s, "rss_after_load_mb": rss_loaded, "tokens": tokens, "seconds": seconds,
            "max_batch_tokens": args.max_batch_tokens}
    return np.asarray(vectors, dtype=np.float32), info


def run_hf(model_dir: Path, texts: list[str], args, dtype_name: str) -> tuple[np.ndarray, dict]:
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModel.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").eval()
    load_s = time.perf_counter() - start
    rss_loaded = rss_now_mb()
    tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])

    def embed(batch_texts: list[str]) -> tuple[np.ndarray, int]:
        # sentence-transformers order: longest text (in characters) first.
        order = sorted(range(len(batch_texts)), key=lambda i: -len(batch_texts[i]))
        out = np.empty((len(batch_texts), model.config.hidden_size), dtype=np.float32)
        padded = 0
        for lo in range(0, len(order), args.batch_size):
            idx = order[lo : lo + args.batch_size]
            enc = tokenizer([batch_texts[i] for i in idx], padding=True, return_tensors="pt")
            padded += enc["input_ids"].numel()
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
                # Left padding: every row's last position is its last real token.
                pooled = F.normalize(hidden[:, -1].float(), p=2, dim=1)
            out[idx] = pooled.numpy()
        return out, padded

    embed(texts[:WARMUP_INPUTS])
    start = time.perf_counter()
    vectors, padded = embed(texts)
    seconds = time.perf_counter() - start
    info = {"load_s": load_s, "rss_after_load_mb": rss_loaded, "tokens": tokens, "seconds": seconds,
            "padded_tokens": padded, "batch_size": args.batch_size, "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}
    return vectors, info


def child_main(args) -> None:
    texts = json.loads(Path(args.corpus).read_text(encoding="utf-8"))
    if args.child == "candle":
        vectors, info = run_candle(args.model_dir, texts, args)
    else:
        vectors, info = run_hf(args.model_dir, texts, args, args.child.removeprefix("hf-"))
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.vectors_out, vectors)
    Path(args.info_out).write_text(json.dumps(info), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def run_engine(engine: str, args, corpus_path: Path, workdir: Path) -> tuple[np.ndarray, dict]:
    vectors_out, info_out = workdir / f"{engine}.npy", workdir / f"{engine}.json"
    env = dict(os.environ)
    # Both thread pools get the same number of threads: rayon/gemm for candle, OpenMP for torch.
    env.update(RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--corpus", str(corpus_path),
           "--vectors-out", str(vectors_out), "--info-out", str(info_out), "--model-dir", str(args.model_dir),
           "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--max-batch-tokens", str(args.max_batch_tokens)]
    print(f"[{engine}] running ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, env=env, check=True)
    info = json.loads(info_out.read_text(encoding="utf-8"))
    info["tokens_per_s"] = info["tokens"] / info["seconds"]
    print(f"[{engine}] {info['tokens']} tokens in {info['seconds']:.2f} s", file=sys.stderr, flush=True)
    return np.load(vectors_out), info


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


def print_table(results: dict, stats: dict, args) -> None:
    print(f"\ncorpus: {stats['inputs']} inputs, {stats['tokens']} tokens (min {stats['min']}, median "
          f"{stats['median']:.0f}, p90 {stats['p90']:.0f}, max {stats['max']}); threads {args.threads}; "
          f"load avg {os.getloadavg()[0]:.2f}")
    header = f"{'engine':<9} {'tokens':>7} {'computed':>9} {'seconds':>8} {'tokens/s':>9} {'load s':>7} " \
             f"{'RSS load MB':>12} {'peak RSS MB':>12}  vs {REFERENCE}: min cos / max |diff|"
    print(header)
    print("-" * len(header))
    # tokens: real tokens (tokens/s counts these); computed: what the model ran on, padding included.
    for engine, r in results.items():
        agree = r.get("agreement_vs_" + REFERENCE)
        agree_text = f"{agree['min_cosine']:.7f} / {agree['max_abs_diff']:.2e}" if agree else "-"
        computed = r.get("padded_tokens", r["tokens"])
        print(f"{engine:<9} {r['tokens']:>7} {computed:>9} {r['seconds']:>8.2f} {r['tokens_per_s']:>9.1f} "
              f"{r['load_s']:>7.1f} {r['rss_after_load_mb']:>12.0f} {r['peak_rss_mb']:>12.0f}  {agree_text}")
    if "candle" in results and "hf-bf16" in results:
        a = agreement(results["candle"]["_vectors"], results["hf-bf16"]["_vectors"])
        print(f"candle vs hf-bf16: min cos {a['min_cosine']:.5f}, max |diff| {a['max_abs_diff']:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description="candle_embed vs transformers, end to end")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--n-inputs", type=int, default=256)
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads / RAYON_NUM_THREADS")
    parser.add_argument("--batch-size", type=int, default=32, help="transformers batch size")
    parser.add_argument("--max-batch-tokens", type=int, default=8192, help="candle_embed token budget per pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    # Internal: one engine in a child process.
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--vectors-out", help=argparse.SUPPRESS)
    parser.add_argument("--info-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engines {unknown}; choose from {ENGINES}")
    if not (args.model_dir / "config.json").is_file():
        parser.error(f"{args.model_dir} has no config.json; run scripts/make_bench_model.py first")

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    texts = make_corpus(args.n_inputs, args.seed, tokenizer)
    stats = corpus_stats([len(e.ids) for e in tokenizer.encode_batch(texts)])

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as tmp:
        workdir = Path(tmp)
        corpus_path = workdir / "corpus.json"
        corpus_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        for engine in engines:
            vectors, info = run_engine(engine, args, corpus_path, workdir)
            results[engine] = {**info, "_vectors": vectors}

    if REFERENCE in results:
        for engine, r in results.items():
            if engine != REFERENCE:
                r["agreement_vs_" + REFERENCE] = agreement(r["_vectors"], results[REFERENCE]["_vectors"])
    print_table(results, stats, args)

    report = {"model_dir": str(args.model_dir), "threads": args.threads, "cpu_count": os.cpu_count(),
              "corpus": stats, "seed": args.seed,
              "engines": {e: {k: v for k, v in r.items() if not k.startswith("_")} for e, r in results.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
