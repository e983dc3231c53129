"""Ctrl-C stops a long Python call between two forward passes, raises KeyboardInterrupt, and
leaves the Runner usable. Run in a child process, which gets a real SIGINT."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from fixture_models import GQA

SCRIPT = textwrap.dedent(f"""
    import os, signal, threading, time
    from candle_embed import EmbeddingRequest, Runner, Which

    # A parent that ignores SIGINT (a background job of a non-interactive shell does) passes
    # that on, and Python then installs no handler of its own: put Python's default back.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    # A budget of 16 tokens puts every 128-token input in a pass of its own.
    runner = Runner(which=Which.Embedding(model_id={str(GQA)!r}), max_batch_tokens=16)
    texts = ["word " * 100] * 200
    started = time.monotonic()
    runner.send_embedding_request(EmbeddingRequest(texts, truncate_sequence=True))
    short = time.monotonic() - started
    # A call 20 times as long; SIGINT arrives after about one short call's time.
    threading.Timer(short, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        runner.send_embedding_request(EmbeddingRequest(texts * 20, truncate_sequence=True))
        print("finished")
    except KeyboardInterrupt:
        print("interrupted after", round((time.monotonic() - started) / (20 * short), 3), "of the call")
    print("still usable", runner.send_embedding_request(EmbeddingRequest("after")).shape)
""")


def test_ctrl_c_stops_a_long_call_and_the_runner_stays_usable():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("interrupted after"), done.stdout
    # Stopped early in the call (the signal came at about 1/20 of it), not at its end.
    assert float(lines[0].split()[2]) < 0.5, done.stdout
    assert lines[1] == "still usable (1, 64)"
