#!/usr/bin/env python3
"""Throughput over HTTP against the same inputs in-process, in one run.

    python3 benches/bench_http.py                                   # the gqa-bf16 test fixture
    python3 benches/bench_http.py --model bench-out/qwen3-0.6b-random --requests 64

Starts `candle-embed serve` on a free loopback port, then sends --requests POST /v1/embeddings
(each with --texts-per-request texts from a seeded corpus of mixed lengths) from 1, 16 and 64
concurrent clients (threads with keep-alive connections), and reports tokens/s (the server's
usage.prompt_tokens over wall time). The in-process baselines use candle_embed.Runner on the same
requests: one after another ("runner, sequential"), from the same number of threads as the widest
HTTP run ("runner, N threads"), and the whole corpus as one request ("runner, one call": the best
batching can do). Output: a table on stdout and JSON (--out, default bench-out/http.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from live_server import live_server

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "models" / "gqa-bf16"

WORDS = (
    "graphene carbon lattice conductivity superconductor electron phonon quantum capital "
    "gravity planet orbit retrieval embedding vector search index document query model "
    "language network training inference batch token sequence attention layer"
).split()


def make_requests(n: int, per_request: int, seed: int, max_words: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [
        [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, max_words))) for _ in range(per_request)]
        for _ in range(n)
    ]


def http_run(port: int, requests: list[list[str]], clients: int) -> dict:
    local = threading.local()

    def one(texts: list[str]) -> int:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        body = json.dumps({"model": "default", "input": texts, "encoding_format": "base64", "truncate_sequence": True})
        conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(answer)
        return answer["usage"]["prompt_tokens"]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        tokens = sum(pool.map(one, requests))
    elapsed = time.perf_counter() - started
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


def runner_run(runner, requests: list[list[str]], threads: int) -> dict:
    from candle_embed import EmbeddingRequest

    def one(texts: list[str]) -> int:
        runner.send_embedding_request(EmbeddingRequest(input=texts, truncate_sequence=True))
        return 0

    tokens = sum(len(ids) for texts in requests for ids in runner.tokenize(EmbeddingRequest(input=texts, truncate_sequence=True)))
    started = time.perf_counter()
    if threads == 1:
        for texts in requests:
            one(texts)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(one, requests))
    elapsed = time.perf_counter() - started
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


def runner_one_call(runner, requests: list[list[str]]) -> dict:
    from candle_embed import EmbeddingRequest

    everything = [t for texts in requests for t in texts]
    req = EmbeddingRequest(input=everything, truncate_sequence=True)
    tokens = sum(len(ids) for ids in runner.tokenize(req))
    started = time.perf_counter()
    runner.send_embedding_request(req)
    elapsed = time.perf_counter() - started
    return {"tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(FIXTURE))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--max-words", type=int, default=20, help="texts have 3..N words (cut to the model maximum)")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench-out" / "http.json"))
    args = parser.parse_args()

    from candle_embed import Runner, Which

    requests = make_requests(args.requests, args.texts_per_request, args.seed, args.max_words)
    clients = [int(c) for c in args.clients.split(",")]
    results: dict = {"model": args.model, "requests": args.requests, "texts_per_request": args.texts_per_request,
                     "cpus": os.cpu_count(), "max_batch_tokens": args.max_batch_tokens, "runs": {}}

    with live_server(args.model, "--max-batch-tokens", str(args.max_batch_tokens),
                     "--max-concurrent-requests", "4096") as (_, port):
        http_run(port, requests[: min(8, len(requests))], 1)  # warm-up
        for c in clients:
            results["runs"][f"http, {c} clients"] = http_run(port, requests, c)

    runner = Runner(which=Which.Embedding(model_id=args.model), max_batch_tokens=args.max_batch_tokens)
    runner_run(runner, requests[: min(8, len(requests))], 1)  # warm-up
    results["runs"]["runner, sequential"] = runner_run(runner, requests, 1)
    results["runs"][f"runner, {max(clients)} threads"] = runner_run(runner, requests, max(clients))
    results["runs"]["runner, one call"] = runner_one_call(runner, requests)

    print(f"model {args.model}; {args.requests} requests x {args.texts_per_request} texts; {os.cpu_count()} CPUs")
    print(f"{'run':<22} {'tokens':>9} {'seconds':>9} {'tokens/s':>10}")
    for name, r in results["runs"].items():
        print(f"{name:<22} {r['tokens']:>9} {r['seconds']:>9.2f} {r['tokens_per_s']:>10.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
