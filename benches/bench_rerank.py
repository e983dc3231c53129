"""Reranking speed on the Qwen3-Reranker-0.6B shape: candle-embed (`dtype="auto"`, and f32)
against transformers running the model card's recipe (f32; bf16 too where the CPU has bf16
instructions), the same pairs, each engine in its own process, one after the other.

    python benches/bench_rerank.py [--pairs 32]      # needs torch + transformers (run by hand)

The model is the random-weight 0.6B embedding shape (scripts/make_bench_model.py) saved as a
reranker checkpoint: tensors under `model.`, tied head, the base Qwen3 tokenizer (which adds no
special tokens), written once to bench-out/qwen3-reranker-0.6b-random. Queries and documents are
lines of /usr/share/doc (8 documents per query, each 3 to 8 lines joined). transformers is given its best case: the
head computed at the last position only (`logits_to_keep=1`), pairs sorted by length and batched
by 8 with left padding. Prints pairs/s, tokens/s, and how far each engine's scores are from
transformers' f32.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBEDDING_MODEL = ROOT / "bench-out" / "qwen3-0.6b-random"
MODEL = ROOT / "bench-out" / "qwen3-reranker-0.6b-random"
TOKENIZER = ROOT.parent / "shared" / "qwen3-tokenizer"
PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
          "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def make_model() -> None:
    if (MODEL / "model.safetensors").exists():
        return
    from safetensors.torch import load_file, save_file

    if not EMBEDDING_MODEL.exists():
        sys.exit("run scripts/make_bench_model.py first")
    MODEL.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(EMBEDDING_MODEL / "model.safetensors"))
    save_file({f"model.{k}": v for k, v in tensors.items()}, str(MODEL / "model.safetensors"))
    config = json.loads((EMBEDDING_MODEL / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (MODEL / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        if (TOKENIZER / name).exists():
            shutil.copy(TOKENIZER / name, MODEL / name)


def pairs(n: int) -> list[tuple[str, str]]:
    import gzip

    lines: list[str] = []
    for path in sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz")):
        for line in gzip.open(path, "rt", encoding="utf-8", errors="replace").read().splitlines():
            line = line.strip(" *-")
            if len(line) > 30:
                lines.append(line)
        if len(lines) > 20 * n:
            break
    rng = random.Random(0)
    # As reranking runs in a search: a few queries, each with its candidates (8 per query).
    queries = [rng.choice(lines) for _ in range((n + 7) // 8)]
    return [(queries[i // 8], " ".join(rng.sample(lines, rng.randint(3, 8)))) for i in range(n)]


def run_one(engine: str, n: int) -> dict:
    work = pairs(n)
    started = time.perf_counter()
    if engine.startswith("candle"):
        from candle_embed import RerankRequest, Runner, Which

        dtype = engine.split("-")[1]
        runner = Runner(which=Which.Reranker(model_id=str(MODEL), dtype=dtype))
        loaded = time.perf_counter()
        scores, tokens = [], 0
        by_query: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(work):
            by_query.setdefault(q, []).append(i)
        out = [0.0] * n
        for q, idx in by_query.items():
            s, t = runner._rerank(RerankRequest(q, [work[i][1] for i in idx]))
            tokens += t
            for i, v in zip(idx, s):
                out[i] = float(v)
        scores = out
        extra = {"kernel": runner.info["kernel"], "dtype": runner.info["dtype"]}
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = {"hf-f32": torch.float32, "hf-bf16": torch.bfloat16}[engine]
        tok = AutoTokenizer.from_pretrained(str(MODEL), padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=dtype).eval()
        loaded = time.perf_counter()
        prefix = tok.encode(PREFIX, add_special_tokens=False)
        suffix = tok.encode(SUFFIX, add_special_tokens=False)
        yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        middles = [f"<Instruct>: {INSTRUCTION}\n<Query>: {q}\n<Document>: {d}" for q, d in work]
        ids = [prefix + tok(m, add_special_tokens=False, truncation=True,
                            max_length=8192 - len(prefix) - len(suffix))["input_ids"] + suffix for m in middles]
        tokens = sum(map(len, ids))
        order = sorted(range(n), key=lambda i: len(ids[i]))
        scores = [0.0] * n
        with torch.inference_mode():
            for lo in range(0, n, 8):
                chunk = order[lo : lo + 8]
                batch = tok.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
                logits = model(**batch, logits_to_keep=1).logits[:, -1, :]
                pair = torch.stack([logits[:, no], logits[:, yes]], dim=1).float()
                for i, s in zip(chunk, torch.log_softmax(pair, dim=1)[:, 1].exp().tolist()):
                    scores[i] = s
        extra = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    seconds = time.perf_counter() - loaded
    return {"engine": engine, "pairs": n, "tokens": tokens, "seconds": round(seconds, 2),
            "pairs_per_s": round(n / seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "scores": scores, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--engines", default="candle-auto,candle-f32,hf-f32")
    parser.add_argument("--python-hf", default=sys.executable, help="interpreter with torch + transformers")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.pairs)))
        return
    make_model()
    results = []
    for engine in args.engines.split(","):
        python = args.python_hf if engine.startswith("hf") else sys.executable
        done = subprocess.run([python, __file__, "--pairs", str(args.pairs), "--one", engine],
                              capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if done.returncode != 0:
            print(f"{engine} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    import numpy as np

    reference = next((np.array(r["scores"]) for r in results if r["engine"] == "hf-f32"), None)
    base = next((r for r in results if r["engine"].startswith("hf")), None)
    print(f"{args.pairs} pairs, {os.cpu_count()} CPUs")
    print("| engine | pairs/s | tokens/s | × transformers | peak RSS MB | max \\|score − transformers f32\\| |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        diff = f"{np.abs(np.array(r['scores']) - reference).max():.1e}" if reference is not None else "–"
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "–"
        print(f"| {r['engine']} | {r['pairs_per_s']} | {r['tokens_per_s']} | {ratio} | {r['peak_rss_mb']} | {diff} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
