"""Normal requests beside slow ones: the latency of one-text requests from one client, first alone,
then while N connections send request heads a byte every half second (cut by --header-timeout)
and N more send bodies shorter than their Content-Length (408 at --body-timeout). Reports p50 /
p99 of the normal requests in both phases and how many slow connections the server closed.

    python benches/bench_slow_clients.py [--model tests/fixtures/models/gqa-bf16] [--slow 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import threading
import time
from pathlib import Path

from live_server import live_server

ROOT = Path(__file__).resolve().parent.parent


def latencies(port: int, seconds: float) -> list:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"input": "a short query about graphene"})
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        conn.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200, answer.status
        out.append(time.monotonic() - started)
    return sorted(out)


def pct(values: list, q: float) -> float:
    return round(1000 * values[min(int(len(values) * q), len(values) - 1)], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "tests" / "fixtures" / "models" / "gqa-bf16"))
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    with live_server(args.model, "--header-timeout", "5", "--body-timeout", "5") as (_, port):
        alone = latencies(port, args.seconds)
        closed = []
        stop = threading.Event()

        def slow(kind: str) -> None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=60)
            started = time.monotonic()
            try:
                if kind == "body":
                    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: b\r\nContent-Length: 1000\r\n\r\n{")
                    while not stop.is_set() and sock.recv(4096):
                        pass
                else:
                    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\n")
                    while not stop.is_set():
                        sock.sendall(b"x")
                        time.sleep(0.5)
            except OSError:
                pass
            # Ended before the bench stopped it: the server closed it.
            closed.append((kind, time.monotonic() - started, not stop.is_set()))
            sock.close()

        threads = [threading.Thread(target=slow, args=(kind,), daemon=True)
                   for kind in ("head", "body") for _ in range(args.slow)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        beside = latencies(port, args.seconds)
        stop.set()
        for thread in threads:
            thread.join(5)
        report = {
            "slow_connections": 2 * args.slow, "header_timeout_s": 5, "body_timeout_s": 5,
            "alone": {"requests": len(alone), "p50_ms": pct(alone, 0.5), "p99_ms": pct(alone, 0.99)},
            "beside_slow": {"requests": len(beside), "p50_ms": pct(beside, 0.5), "p99_ms": pct(beside, 0.99)},
            "closed_by_server": {kind: sum(1 for k, _, by_server in closed if k == kind and by_server)
                                 for kind in ("head", "body")},
            "longest_slow_connection_s": round(max((t for _, t, _ in closed), default=0), 2),
        }
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
