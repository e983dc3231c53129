"""Soak: a live `candle-embed serve` on loopback under mixed legal and hostile traffic from many
clients for a fixed time. Every legal answer is checked against the in-process Runner; the report
counts requests, wrong answers, lost answers (a legal request with no answer), 5xx, and gives
p50/p99 latency of legal requests and the server's RSS over time.

    python benches/soak.py [--model tests/fixtures/models/gqa-bf16] [--clients 256] [--minutes 10]

Hostile traffic: malformed JSON, wrong types, over-long text without truncation (400) and with it
(200, checked), a body over the payload limit (413), a token id outside the vocabulary (400),
garbage bytes, a request head sent a byte at a time (closed by --header-timeout), a
Content-Length larger than the body (408 at --body-timeout), a client that sends a large request
and hangs up.

Exit status 1 if anything was wrong, lost or 5xx, or RSS grew by more than 10 % after the warm-up
(the first 30 % of the run, while connections, buffers and allocator arenas are first taken).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from live_server import live_server

ROOT = Path(__file__).resolve().parent.parent
ATOL = 1e-5


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Expected:
    """The in-process Runner's vectors for every legal body the clients send."""

    def __init__(self, model: str) -> None:
        from candle_embed import EmbeddingRequest, Runner, Which

        runner = Runner(which=Which.Embedding(model_id=model))
        rng = random.Random(7)
        words = "graphene carbon lattice electron band gap query passage relevant superconductor".split()
        self.texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(96)]
        self.long = "lattice " * 5000  # far over the fixture's 128 tokens
        self.vectors: Dict[Tuple[str, Optional[int]], np.ndarray] = {}
        for dims in (None, 32):
            vecs = runner.send_embedding_request(EmbeddingRequest(input=self.texts, dimensions=dims))
            for text, vec in zip(self.texts, vecs):
                self.vectors[(text, dims)] = vec
        self.long_vector = runner.send_embedding_request(EmbeddingRequest(input=[self.long], truncate_sequence=True))[0]


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.latencies: List[float] = []
        self.max_diff = 0.0
        self.problems: List[str] = []

    def add(self, key: str, latency: Optional[float] = None, problem: Optional[str] = None) -> None:
        with self.lock:
            self.counts[key] += 1
            if latency is not None:
                self.latencies.append(latency)
            if problem is not None and len(self.problems) < 20:
                self.problems.append(problem)


def decode(item: dict) -> np.ndarray:
    emb = item["embedding"]
    if isinstance(emb, str):
        return np.frombuffer(base64.b64decode(emb), dtype="<f4")
    return np.asarray(emb, dtype=np.float32)


class Client(threading.Thread):
    def __init__(self, port: int, expected: Expected, stats: Stats, deadline: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.expected, self.stats, self.deadline = port, expected, stats, deadline
        self.rng = random.Random(seed)
        self.conn: Optional[http.client.HTTPConnection] = None

    def http(self, body: bytes) -> Tuple[int, bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
                answer = self.conn.getresponse()
                data = answer.read()
                if answer.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return answer.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # An idle keep-alive connection the server closed: once more on a new one.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def legal(self) -> None:
        texts = self.rng.sample(self.expected.texts, self.rng.randint(1, 8))
        dims = self.rng.choice([None, 32])
        fmt = self.rng.choice(["float", "base64"])
        body = {"input": texts, "encoding_format": fmt, **({"dimensions": dims} if dims else {})}
        started = time.monotonic()
        try:
            status, data = self.http(json.dumps(body).encode())
        except OSError as err:
            self.stats.add("lost", problem=f"legal request lost: {err!r}")
            return
        latency = time.monotonic() - started
        if status == 429:
            self.stats.add("429")
            return
        if status >= 500:
            self.stats.add("5xx", problem=f"legal request got {status}: {data[:200]!r}")
            return
        if status != 200:
            self.stats.add("wrong", problem=f"legal request got {status}: {data[:200]!r}")
            return
        items = json.loads(data)["data"]
        worst = max(float(np.abs(decode(it) - self.expected.vectors[(t, dims)]).max()) for it, t in zip(items, texts))
        with self.stats.lock:
            self.stats.max_diff = max(self.stats.max_diff, worst)
        ok = len(items) == len(texts) and worst <= ATOL
        self.stats.add("ok" if ok else "wrong", latency, None if ok else f"vectors differ by {worst}")

    def expect(self, name: str, body: bytes, want: int) -> None:
        try:
            status, data = self.http(body)
        except OSError as err:
            self.stats.add("lost", problem=f"{name}: no answer ({err!r})")
            return
        if status >= 500:
            self.stats.add("5xx", problem=f"{name}: {status} {data[:200]!r}")
        elif status == want or status == 429:
            self.stats.add(f"hostile {name}")
        else:
            self.stats.add("wrong", problem=f"{name}: got {status}, expected {want}: {data[:200]!r}")

    def raw(self, name: str, payload: bytes, hold: float = 0.0, expect_close: bool = True) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                for i in range(0, len(payload), 1 if hold else len(payload) or 1):
                    sock.sendall(payload[i:i + (1 if hold else len(payload))])
                    if hold:
                        time.sleep(hold)
                    if time.monotonic() > self.deadline + 30:
                        break
                answer = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            if answer[9:12].startswith(b"5"):
                self.stats.add("5xx", problem=f"{name}: {answer[:120]!r}")
            else:
                self.stats.add(f"hostile {name}")
        except (ConnectionResetError, BrokenPipeError):
            self.stats.add(f"hostile {name}")  # closed on it, as intended
        except OSError as err:
            self.stats.add(f"hostile {name} (client error {type(err).__name__})")

    def hostile(self) -> None:
        kind = self.rng.randrange(10)
        if kind == 0:
            self.expect("malformed json", b'{"input": ["a", ', 400)
        elif kind == 1:
            self.expect("wrong type", json.dumps({"input": "x", "dimensions": "8"}).encode(), 400)
        elif kind == 2:
            self.expect("too long", json.dumps({"input": self.expected.long}).encode(), 400)
        elif kind == 3:
            started = time.monotonic()
            try:
                status, data = self.http(json.dumps({"input": [self.expected.long], "truncate_sequence": True}).encode())
            except OSError as err:
                self.stats.add("lost", problem=f"truncated request lost: {err!r}")
                return
            if status == 200:
                diff = float(np.abs(decode(json.loads(data)["data"][0]) - self.expected.long_vector).max())
                self.stats.add("ok" if diff <= ATOL else "wrong", time.monotonic() - started,
                               None if diff <= ATOL else f"truncated vector differs by {diff}")
            elif status == 429:
                self.stats.add("429")
            else:
                self.stats.add("5xx" if status >= 500 else "wrong", problem=f"truncated: {status} {data[:200]!r}")
        elif kind == 4:
            self.expect("over payload limit", json.dumps({"input": "x" * 2_100_000}).encode(), 413)
        elif kind == 5:
            self.expect("token id outside the vocabulary", json.dumps({"input": [[1, 2, 1 << 30]]}).encode(), 400)
        elif kind == 6:
            self.raw("garbage bytes", bytes(self.rng.randrange(256) for _ in range(200)) + b"\r\n\r\n")
        elif kind == 7:
            self.raw("slow head", b"POST /v1/embeddings HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"a" * 40, hold=0.5)
        elif kind == 8:
            self.raw("content-length lie", b"POST /v1/embeddings HTTP/1.1\r\nHost: soak\r\nContent-Length: 500\r\n\r\n"
                     b'{"input": "short"}')
        else:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    body = json.dumps({"input": self.expected.texts * 8}).encode()
                    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                self.stats.add("hostile hang-up")
            except OSError:
                self.stats.add("hostile hang-up")

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                if self.rng.random() < 0.8:
                    self.legal()
                else:
                    self.hostile()
            except Exception as err:  # a bug in the soak itself must not pass as success
                self.stats.add("client error", problem=f"{type(err).__name__}: {err}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "models" / "gqa-bf16"))
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", help="write the report here too")
    args = parser.parse_args()

    expected = Expected(args.model)
    with live_server(args.model, "--max-connections", str(4 * args.clients)) as (server, port):
        stats = Stats()
        started = time.monotonic()
        deadline = started + args.minutes * 60
        clients = [Client(port, expected, stats, deadline, seed) for seed in range(args.clients)]
        for client in clients:
            client.start()
        rss: List[Tuple[float, float]] = []
        while any(c.is_alive() for c in clients):
            rss.append((round(time.monotonic() - started, 1), round(rss_mb(server.pid), 1)))
            if server.poll() is not None:
                stats.add("server died", problem=f"exit status {server.returncode}")
                break
            time.sleep(5)
        for client in clients:
            client.join(timeout=180)
        alive = server.poll() is None

    latencies = sorted(stats.latencies)
    warm = [(t, mb) for t, mb in rss if t >= 0.3 * args.minutes * 60] or rss
    after_warmup = warm[0][1] if warm else float("nan")
    final = rss[-1][1] if rss else float("nan")
    slope = float(np.polyfit([t for t, _ in warm], [mb for _, mb in warm], 1)[0] * 60) if len(warm) > 2 else None
    report = {
        "model": args.model, "clients": args.clients, "minutes": args.minutes,
        "requests": sum(stats.counts.values()), "counts": dict(sorted(stats.counts.items())),
        "wrong": stats.counts["wrong"], "lost": stats.counts["lost"], "5xx": stats.counts["5xx"],
        "client_errors": stats.counts["client error"], "server_alive_at_end": alive,
        "max_abs_diff": stats.max_diff,
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "rss_mb_after_warmup": after_warmup, "rss_mb_at_end": final, "rss_mb_peak": max((mb for _, mb in rss), default=None),
        "rss_growth_after_warmup": round(final / after_warmup - 1, 3) if rss else None,
        "rss_slope_mb_per_min_after_warmup": round(slope, 3) if slope is not None else None,
        "rss_mb_every_5s": [mb for _, mb in rss],
        "problems": stats.problems,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    bad = report["wrong"] or report["lost"] or report["5xx"] or report["client_errors"] or not alive
    return 1 if bad or (report["rss_growth_after_warmup"] or 0) > 0.10 else 0


if __name__ == "__main__":
    sys.exit(main())
