"""Over-long texts against a live server: N concurrent bodies just under the payload limit, each
one ~2 MB string, without and with truncation; reports each answer's status and seconds, and the
server's RSS before (cold, and idle after one short request of each kind), at peak (VmHWM), and 1 s
and 12 s after.

    python benches/bench_long_bodies.py [--model tests/fixtures/models/gqa-bf16] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from live_server import live_server

ROOT = Path(__file__).resolve().parent.parent


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def post(port: int, body: bytes) -> tuple[int, float]:
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            status = answer.status
            answer.read()
    except urllib.error.HTTPError as err:
        status = err.code
        err.read()
    return status, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "models" / "gqa-bf16"))
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with live_server(args.model, "--max-concurrent-requests", str(args.clients * 2)) as (server, port):
        words = " ".join(f"w{i % 977}" for i in range(390_000))  # ~2 MB, no truncation point near
        cold = status_kb(server.pid, "VmRSS")
        # Idle as a server that has answered: one short request of each kind first (thread pools
        # and the tokenizer's caches exist from then on, whatever comes next).
        for extra in ({}, {"truncate_sequence": True}):
            post(port, json.dumps({"input": "warm up", **extra}).encode())
        time.sleep(1)
        idle = status_kb(server.pid, "VmRSS")
        results = {}
        for name, extra in (("refused", {}), ("truncated", {"truncate_sequence": True})):
            body = json.dumps({"input": words, **extra}).encode()
            with ThreadPoolExecutor(args.clients) as pool:
                answers = list(pool.map(lambda _: post(port, body), range(args.clients)))
            results[name] = {"statuses": sorted({s for s, _ in answers}),
                             "max_seconds": round(max(t for _, t in answers), 3),
                             "body_mb": round(len(body) / 1e6, 2)}
        time.sleep(1)
        after_1s = status_kb(server.pid, "VmRSS")
        # tokio's idle blocking threads exit after 10 s.
        time.sleep(11)
        after_12s = status_kb(server.pid, "VmRSS")
        figures = {"clients": args.clients, "cold_rss_mb": round(cold / 1024, 1), "idle_rss_mb": round(idle / 1024, 1),
                   "peak_hwm_mb": round(status_kb(server.pid, "VmHWM") / 1024, 1),
                   "after_1s_rss_mb": round(after_1s / 1024, 1), "after_12s_rss_mb": round(after_12s / 1024, 1),
                   "after_vs_idle": round(after_12s / idle, 3), **results}
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
