"""Corpus jobs, measured: the same texts through one in-process `send_embedding_request` call (the
baseline), `Runner.encode`, `embed-file` (Parquet in, Parquet parts out), Ray Data with one and two
actors, and sentence-transformers' `encode` — each in its own process, for its peak RSS.

The corpus is real text nobody here wrote: the first N distinct lines (over 20 characters) of the
files under /usr/share/doc (Debian changelogs, READMEs, copyright files), written once to
bench-out/corpus/docs-N.parquet.

    # the fixture model, 100,000 texts (every mode but st):
    python benches/bench_corpus.py --model tests/fixtures/models/gqa-bf16 --n 100000 --modes call,encode,embed-file,ray1,ray2
    # the 0.6B shape, a slice, against sentence-transformers (its venv has torch):
    python benches/bench_corpus.py --model bench-out/qwen3-0.6b-random --n 500 --modes call,encode,embed-file,st

Prints one JSON line per mode and a table; --out writes them all.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = Path("/usr/share/doc")


def corpus_file(n: int) -> Path:
    out = ROOT / "bench-out" / "corpus" / f"docs-{n}.parquet"
    if out.exists():
        return out
    import pyarrow as pa
    import pyarrow.parquet as pq

    seen: dict[str, None] = {}
    for root, dirs, files in os.walk(DOCS):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink():
                continue
            try:
                if name.endswith(".gz"):
                    text = gzip.open(path, "rt", encoding="utf-8", errors="strict").read()
                elif path.stat().st_size < 5_000_000:
                    text = path.read_text(encoding="utf-8", errors="strict")
                else:
                    continue
            except (OSError, UnicodeDecodeError, EOFError):
                continue
            for line in text.splitlines():
                line = line.strip()
                if len(line) > 20:
                    seen.setdefault(line)
            if len(seen) >= n:
                break
        if len(seen) >= n:
            break
    texts = list(seen)[:n]
    if len(texts) < n:
        sys.exit(f"only {len(texts)} distinct lines under {DOCS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(n)], "text": texts}), out)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(mode: str, model: str, path: Path, batch_size: int) -> dict:
    """One mode in this process; returns its figures. batch_size 0: the library's default."""
    batch = batch_size or None
    import pyarrow.parquet as pq

    texts = pq.read_table(path).column("text").to_pylist()
    started = time.perf_counter()
    tokens = None
    if mode == "st":
        import torch
        from sentence_transformers import SentenceTransformer, models

        # Qwen3-Embedding's sentence-transformers setup: last-token pooling, normalized, left padding.
        # sentence-transformers 5.7 wraps plain text in the tokenizer's chat template when the
        # directory has no sentence-transformers config (ours has none; the published checkpoints
        # do): it reads a copy whose tokenizer_config.json has no template.
        plain = ROOT / "bench-out" / (Path(model).name + "-no-chat-template")
        if not plain.exists():
            plain.mkdir(parents=True)
            for item in Path(model).iterdir():
                if item.name == "tokenizer_config.json":
                    config = json.loads(item.read_text())
                    config.pop("chat_template", None)
                    (plain / item.name).write_text(json.dumps(config))
                else:
                    (plain / item.name).symlink_to(item.resolve())
        word = models.Transformer(str(plain), tokenizer_args={"padding_side": "left"})
        st = SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), "lasttoken"),
                                          models.Normalize()], device="cpu")
        st.max_seq_length = 8192
        loaded = time.perf_counter()
        vectors = st.encode(texts, batch_size=batch or 32, convert_to_numpy=True)
        ids = st.tokenizer(texts[:1])["input_ids"][0]
        extra = {"torch": torch.__version__, "eos_appended": ids[-1] == st.tokenizer.convert_tokens_to_ids("<|endoftext|>")}
    else:
        from candle_embed import EmbeddingRequest, Runner, Which

        runner = Runner(which=Which.Embedding(model_id=model))
        loaded = time.perf_counter()
        extra = {"kernel": runner.info["kernel"], "dtype": runner.info["dtype"]}
        if mode == "call":
            vectors, tokens = runner._embed(EmbeddingRequest(texts, truncate_sequence=True))
        elif mode == "encode":
            vectors = runner.encode(texts, batch_size=batch, truncate=True, show_progress_bar=False)
        elif mode == "embed-file":
            import shutil

            from candle_embed.files import embed_files

            out = ROOT / "bench-out" / "corpus" / f"out-{path.stem}"
            shutil.rmtree(out, ignore_errors=True)
            progress = embed_files(runner, [str(path)], str(out), id_column="id", batch_size=batch,
                                   request={"truncate_sequence": True}, show_progress_bar=False, log=lambda *_: None)
            vectors, tokens = None, progress.tokens
            extra["parts"] = progress.parts
        elif mode.startswith("ray"):
            import ray

            from candle_embed.ray import embed_dataset

            actors = int(mode[3:])
            # One logical CPU more than the machine has: Ray Data's read and write tasks each need
            # one, and the actors should get every core for their threads.
            cores = os.cpu_count() or 2
            ray.init(num_cpus=cores + 1, include_dashboard=False, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            out = ROOT / "bench-out" / "corpus" / f"ray-{path.stem}"
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            loaded = time.perf_counter()  # actors load their models inside the timed run
            ds = ray.data.read_parquet(str(path)).repartition(8 * actors)
            share = cores / actors
            embed_dataset(ds, model, concurrency=actors, num_cpus=share, batch_size=batch or 1024,
                          truncate=True).write_parquet(str(out))
            vectors = None
            extra["actors"], extra["threads_per_actor"] = actors, max(1, int(share))
        else:
            raise SystemExit(f"unknown mode {mode}")
        if tokens is None:
            tokens = sum(len(ids) for ids in runner.tokenize(EmbeddingRequest(texts, truncate_sequence=True)))
    seconds = time.perf_counter() - loaded
    result = {"mode": mode, "texts": len(texts), "tokens": tokens, "seconds": round(seconds, 2),
              "load_s": round(loaded - started, 2), "peak_rss_mb": round(peak_rss_mb()),
              "tokens_per_s": round(tokens / seconds, 1) if tokens else None, **extra}
    if vectors is not None:
        import numpy as np

        np.save(ROOT / "bench-out" / "corpus" / f"vectors-{mode}.npy", vectors)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=100_000, help="texts in the corpus")
    parser.add_argument("--modes", default="call,encode,embed-file")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="texts per call (0: each library's default; sentence-transformers' is 32)")
    parser.add_argument("--python-st", default=sys.executable, help="interpreter with sentence-transformers (st mode)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = corpus_file(args.n)
    if args.one:
        print(json.dumps(run_one(args.one, args.model, path, args.batch_size)))
        return
    results = []
    tokens = None
    for mode in args.modes.split(","):
        python = args.python_st if mode == "st" else sys.executable
        done = subprocess.run([python, __file__, "--model", args.model, "--n", str(args.n), "--batch-size",
                               str(args.batch_size), "--one", mode], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{mode} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["tokens"] is None and tokens:  # sentence-transformers: the same texts, so the same tokens
            result["tokens"] = tokens
            result["tokens_per_s"] = round(tokens / result["seconds"], 1)
        tokens = tokens or result["tokens"]
        results.append(result)
        print(json.dumps(result), flush=True)
    base = next((r for r in results if r["mode"] == "call"), None)
    print(f"\n{args.n} texts, {os.cpu_count()} CPUs, model {args.model}")
    print("| mode | tokens/s | vs one call | peak RSS MB |")
    print("| --- | --- | --- | --- |")
    for r in results:
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.3f}" if base and r["tokens_per_s"] else "–"
        print(f"| {r['mode']} | {r['tokens_per_s']} | {ratio} | {r['peak_rss_mb']} |")
    vectors = {r["mode"]: ROOT / "bench-out" / "corpus" / f"vectors-{r['mode']}.npy" for r in results}
    if "st" in vectors and "encode" in vectors:
        import numpy as np

        a, b = np.load(vectors["st"]), np.load(vectors["encode"])
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"st vs encode: min cos {cos.min():.6f}, max |diff| {np.abs(a - b).max():.2e}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
