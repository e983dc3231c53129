"""`candle-embed serve` on a free loopback port, for the HTTP benches: started, waited on until
/health says 200, and stopped with SIGTERM (so a bench also exercises the draining shutdown)."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Tuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(model: str, *flags: str, ready_within: float = 300) -> Iterator[Tuple[subprocess.Popen, int]]:
    """Yields (the server process, its port) once it is healthy; logs are dropped."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "candle_embed.cli", "serve", "-m", model, "-p", str(port), *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server did not become healthy in {ready_within} s")
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
