"""The HTTP server as clients call it: `candle-embed serve` started as a subprocess on 127.0.0.1,
called through the official `openai` package and through plain HTTP (the seeds' curl requests).

Every vector is checked against the in-process Runner on the same input (the numbers must not
depend on the transport or on which requests were batched together).

Over 600 lines on purpose: most tests here share one live server process, started once per
module; splitting the file would start it again for each part.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest

from candle_embed import EmbeddingRequest, Runner
from fixture_models import GQA, MQA

# GQA: hidden_size 64, max_position_embeddings 128, vocab 1024. MQA: hidden_size 48, maximum 256.
HIDDEN = 64
MAX_LEN = 128
# Vectors over HTTP equal the Runner's up to float32 batching noise; stated tolerance.
ATOL = 1e-5
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def _console_script() -> str:
    script = Path(sys.executable).parent / "candle-embed"
    if script.exists():
        return str(script)
    found = shutil.which("candle-embed")
    assert found, "the candle-embed console script is not installed"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `candle-embed serve` subprocess on a free loopback port."""

    def __init__(self, *flags: str, env: Optional[Dict[str, str]] = None) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [_console_script(), "serve", "--host", "127.0.0.1", "-p", str(self.port), *flags]
        full_env = {k: v for k, v in os.environ.items() if k != "CANDLE_EMBED_API_KEY"}
        full_env.update(env or {})
        # Logs go to a file: a pipe nobody reads could fill up and stall the server.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                out = self.log.read().decode(errors="replace")
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{out}")
            try:
                status, _ = request(self, "GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not become healthy in 60 s")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def request(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    headers: Optional[Dict[str, str]] = None,
    raw: Optional[bytes] = None,
    timeout: float = 60,
    response_headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, Any]:
    """One HTTP call; returns (status, parsed JSON or text). `response_headers`, when given, is
    filled with the answer's headers."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(server.base + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, text, headers = resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as err:
        status, text, headers = err.code, err.read().decode(), err.headers
    ctype = headers.get("content-type", "")
    if response_headers is not None:
        response_headers.update({k.lower(): v for k, v in headers.items()})
    return status, json.loads(text) if "json" in ctype else text


def post(server: Server, body: Any, **kwargs: Any) -> Tuple[int, Any]:
    return request(server, "POST", "/v1/embeddings", body, **kwargs)


def assert_error(status: int, body: Any, expected_status: int, param: Optional[str] = None) -> str:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    if param is not None:
        assert err["param"] == param, err
    return err["message"]


def assert_embedding_response(body: Any, n: int, dims: int) -> np.ndarray:
    assert set(body) == {"id", "object", "created", "model", "data", "usage"}, body.keys()
    assert body["id"].startswith("embd-") and len(body["id"]) > 5
    assert body["object"] == "list"
    assert isinstance(body["created"], int) and body["created"] > 1_600_000_000
    assert isinstance(body["model"], str)
    assert [d["index"] for d in body["data"]] == list(range(n))
    assert all(d["object"] == "embedding" for d in body["data"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert vectors.shape == (n, dims)
    return vectors


@pytest.fixture(scope="module")
def runner(gqa) -> Runner:
    """The in-process reference: the session's Runner on the model the servers serve."""
    return gqa


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server("-m", str(GQA), "--max-client-batch-size", "16", "--payload-limit", "100000")
    yield srv
    assert srv.stop() == 0


def runner_embed(runner: Runner, **req: Any) -> np.ndarray:
    return runner.send_embedding_request(EmbeddingRequest(**req))


def token_count(runner: Runner, **req: Any) -> int:
    return sum(len(ids) for ids in runner.tokenize(EmbeddingRequest(**req)))


# --- the official OpenAI client ----------------------------------------------------------------


def test_openai_client_base64_and_float(server, runner):
    import openai
    client = openai.OpenAI(base_url=server.base + "/v1", api_key="EMPTY", max_retries=0)
    texts = ["Graphene conductivity", "Explain superconductors in simple terms."]
    expected = runner_embed(runner, input=texts)
    # Without encoding_format the client asks for base64 and decodes it itself.
    default = client.embeddings.create(model="Qwen/Qwen3-Embedding-0.6B", input=texts)
    as_float = client.embeddings.create(model="default", input=texts, encoding_format="float")
    for result in (default, as_float):
        got = np.array([d.embedding for d in result.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=ATOL)
        assert result.usage.prompt_tokens == token_count(runner, input=texts)
    small = client.embeddings.create(model="default", input="hello", dimensions=8)
    np.testing.assert_allclose(
        np.array(small.data[0].embedding, dtype=np.float32), runner_embed(runner, input="hello", dimensions=8)[0], atol=ATOL
    )


def test_base64_is_little_endian_float32(server, runner):
    status, body = post(server, {"input": ["hello", "world"], "encoding_format": "base64"})
    assert status == 200
    got = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]])
    np.testing.assert_allclose(got, runner_embed(runner, input=["hello", "world"]), atol=ATOL)


@pytest.mark.parametrize("precision, dtype", [("float16", "<f2"), ("int8", "i1"), ("uint8", "u1"), ("binary", "i1"), ("ubinary", "u1")])
def test_compact_precisions_as_numbers_and_base64(server, runner, precision, dtype):
    texts = ["hello", "Graphene conductivity"]
    options = {"precision": precision}
    if precision in ("int8", "uint8"):
        options["ranges"] = [[-0.3] * 64, [0.3] * 64]
    expected = runner_embed(runner, input=texts, **options)
    status, body = post(server, {"input": texts, **options})
    assert status == 200, body
    got = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_array_equal(got.astype(expected.dtype), expected)
    if precision != "float16":
        assert got.dtype.kind == "i"  # JSON integers, not floats
    status, body = post(server, {"input": texts, "encoding_format": "base64", **options})
    assert status == 200, body
    raw = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype=dtype) for d in body["data"]])
    np.testing.assert_array_equal(raw, expected)


def test_int8_without_ranges_is_400(server):
    status, body = post(server, {"input": "hello", "precision": "int8"})
    assert "ranges" in assert_error(status, body, 400, param="ranges")


# --- the seeds' curl requests --------------------------------------------------------------------


def test_seed_000_mistralrs_curl(server, runner):
    texts = ["Graphene conductivity", "Explain superconductors in simple terms."]
    status, body = post(
        server,
        {"model": "default", "input": texts},
        headers={"Authorization": "Bearer EMPTY"},
    )
    assert status == 200, body
    vectors = assert_embedding_response(body, 2, HIDDEN)
    np.testing.assert_allclose(vectors, runner_embed(runner, input=texts), atol=ATOL)
    assert body["usage"]["prompt_tokens"] == token_count(runner, input=texts)


LONG_DOC = (
    "Gravity is a force that attracts two bodies toward each other. It gives weight to physical "
    "objects and is responsible for the movement of planets around the sun."
)
QUERY_CHINA = f"Instruct: {INSTRUCTION}\nQuery: What is the capital of China?"
# The seed's requests, adjusted to the fixture model: dimensions 1024 → 32 (hidden size 64),
# truncate_prompt_tokens 8192 → 100 (maximum 128), token ids taken below the 1024-id vocabulary.
SEED_002 = {
    "single": {"input": "Qwen3 Embedding models convert text into dense vectors for search, retrieval, clustering, and classification.", "encoding_format": "float"},
    "batch": {"input": ["The capital of China is Beijing.", "Gravity is a force that attracts two bodies toward each other.", "Qwen3 Embedding supports multilingual and code retrieval tasks."], "encoding_format": "float"},
    "query_instruction": {"input": QUERY_CHINA, "encoding_format": "float"},
    "documents": {"input": ["The capital of China is Beijing.", LONG_DOC], "encoding_format": "float"},
    "dimensions": {"input": "Embed this text into a smaller vector for retrieval indexing.", "encoding_format": "float", "dimensions": 32},
    "truncation": {"input": "This is a long document that may need to be truncated before embedding. Replace this string with your full document text.", "encoding_format": "float", "truncate_prompt_tokens": 100, "truncation_side": "right"},
    "token_ids": {"input": [838, 374, 279, 864, 315, 736, 30], "encoding_format": "float"},
    "pipeline_query": {"input": f"Instruct: {INSTRUCTION}\nQuery: Explain gravity", "encoding_format": "float", "dimensions": 32},
    "pipeline_documents": {"input": ["The capital of China is Beijing.", LONG_DOC], "encoding_format": "float", "dimensions": 32},
    "multiple_parameters": {"input": [f"Instruct: {INSTRUCTION}\nQuery: What is vLLM?", "vLLM is an inference and serving engine that provides OpenAI-compatible APIs for language and embedding models."], "encoding_format": "float", "dimensions": 32, "truncate_prompt_tokens": 100, "truncation_side": "right", "user": "user_123"},
}


@pytest.mark.parametrize("name", sorted(SEED_002))
def test_seed_002_vllm_curl(server, runner, name):
    body = dict(SEED_002[name], model="Qwen/Qwen3-Embedding-4B")
    status, answer = post(server, body, headers={"Authorization": "Bearer your-hexgrid-api-key"})
    assert status == 200, answer
    engine_req = {k: v for k, v in body.items() if k not in ("model", "encoding_format", "user")}
    expected = runner_embed(runner, **engine_req)
    vectors = assert_embedding_response(answer, len(expected), body.get("dimensions", HIDDEN))
    np.testing.assert_allclose(vectors, expected, atol=ATOL)
    assert answer["usage"]["prompt_tokens"] == token_count(runner, **engine_req)


def test_seed_002_values_the_fixture_cannot_take_are_400(server):
    # The seed's literal values exceed the tiny fixture model: each is a clear 400, not a 500.
    msg = assert_error(*post(server, {"input": [3838, 374, 279, 6864, 315, 5736, 30]}), 400, "input")
    assert "3838" in msg and "vocabulary" in msg
    msg = assert_error(*post(server, {"input": "x", "dimensions": 1024}), 400, "dimensions")
    assert "64" in msg and "1024" in msg
    msg = assert_error(*post(server, {"input": "x", "truncate_prompt_tokens": 8192}), 400, "truncate_prompt_tokens")
    assert "128" in msg


def test_truncation_counts_the_tokens_embedded(server, runner):
    long_text = "word " * 400
    for side in ("left", "right"):
        status, body = post(server, {"input": long_text, "truncate_prompt_tokens": 20, "truncation_side": side})
        assert status == 200, body
        assert body["usage"]["prompt_tokens"] == 20
        expected = runner_embed(runner, input=long_text, truncate_prompt_tokens=20, truncation_side=side)
        np.testing.assert_allclose(assert_embedding_response(body, 1, HIDDEN), expected, atol=ATOL)
    status, body = post(server, {"input": long_text, "truncate_sequence": True})
    assert status == 200 and body["usage"]["prompt_tokens"] == MAX_LEN


def test_extras_instruction_prompt_name_and_token_batches(server, runner):
    for req in (
        {"input": ["capital of France"], "instruction": INSTRUCTION},
        {"input": "capital of France", "prompt_name": "query"},
        {"input": [[5, 6, 7], [8, 9]]},
        {"input": ["hello"], "normalize": False},
    ):
        status, body = post(server, dict(req, model="anything"))
        assert status == 200, (req, body)
        np.testing.assert_allclose(assert_embedding_response(body, len(runner_embed(runner, **req)), HIDDEN), runner_embed(runner, **req), atol=ATOL)


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "default"}, "input"),
        ({"input": 5}, "input"),
        ({"input": [1, "a"]}, "input"),
        ({"input": [-4]}, "input"),
        ({"input": {"text": "x"}}, "input"),
        ({"input": "x", "dimensions": "8"}, "dimensions"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": 65}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "truncation_side": "middle"}, "truncation_side"),
        ({"input": "x", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": [[]]}, "input"),
        ({"input": [5000]}, "input"),
        ({"input": "x", "prompt_name": "nope"}, "prompt_name"),
    ],
)
def test_bad_requests_are_400(server, body, param):
    assert_error(*post(server, body), 400, param)


def test_too_long_input_states_the_maximum_and_its_length(server):
    msg = assert_error(*post(server, {"input": ["short", "word " * 300]}), 400, "input")
    assert "maximum of 128" in msg and "input 1" in msg
    length = int(msg.split(" has ")[1].split(" tokens")[0])
    assert length > 128


def test_too_many_inputs(server):
    msg = assert_error(*post(server, {"input": ["x"] * 17}), 400, "input")
    assert "17" in msg and "16" in msg
    assert post(server, {"input": ["x"] * 16})[0] == 200


def test_malformed_and_oversized_bodies(server):
    for raw in (b"{not json", b"\xff\xfe\x00{", b'{"input": "x"', b"[]", b"null", b""):
        assert_error(*post(server, None, raw=raw, headers={"Content-Type": "application/json"}), 400)
    status, body = post(server, None, raw=json.dumps({"input": "x" * 200_000}).encode())
    assert_error(status, body, 413)
    # Without a Content-Length (chunked upload) the limit holds too.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/v1/embeddings")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b'{"input": "' + b"y" * 50_000
    conn.send(b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["code"] == "payload_too_large"
    conn.close()


def test_compressed_bodies_are_refused_with_415(server):
    import gzip

    raw = gzip.compress(json.dumps({"input": "hello"}).encode())
    status, body = request(server, "POST", "/v1/embeddings", raw=raw,
                           headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert "gzip" in assert_error(status, body, 415)
    status, _ = request(server, "POST", "/v1/embeddings", raw=json.dumps({"input": "hello"}).encode(),
                        headers={"Content-Type": "application/json", "Content-Encoding": "identity"})
    assert status == 200


def test_booleans_and_huge_ids_are_named_over_http_as_in_python(server):
    for body, says in (({"input": [True]}, "true is a boolean, expected an integer token id"),
                       ({"input": [[1, False]]}, "false is a boolean"),
                       ({"input": [1.5]}, "1.5 is a fraction"),
                       ({"input": [2**64]}, f"{2**64} is not a valid token id")):
        status, answer = post(server, body)
        message = assert_error(status, answer, 400, "input")
        assert says in message, message


def test_content_type_is_not_required(server, runner):
    raw = json.dumps({"input": "hello"}).encode()
    for ctype in (None, "application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8"):
        headers = {"Content-Type": ctype} if ctype else {}
        status, body = post(server, None, raw=raw, headers=headers)
        assert status == 200, (ctype, body)
        np.testing.assert_allclose(assert_embedding_response(body, 1, HIDDEN), runner_embed(runner, input="hello"), atol=ATOL)


def test_unknown_routes_and_methods(server):
    assert_error(*request(server, "GET", "/v1/nope"), 404)
    assert_error(*request(server, "GET", "/v1/embeddings"), 405)


# --- the other routes --------------------------------------------------------------------------------


def test_models_health_info_docs(server):
    status, models = request(server, "GET", "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [(m["id"], m["max_model_len"], m["object"]) for m in models["data"]] == [(str(GQA), MAX_LEN, "model")]
    assert request(server, "GET", "/health") == (200, {"status": "ok"})
    status, info = request(server, "GET", "/info")
    assert status == 200
    assert info["models"][0]["dimensions"] == HIDDEN and info["models"][0]["max_input_tokens"] == MAX_LEN
    assert info["max_client_batch_size"] == 16 and info["max_batch_tokens"] > 0 and info["version"]
    status, spec = request(server, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.") and "/v1/embeddings" in spec["paths"]
    status, page = request(server, "GET", "/docs")
    assert status == 200 and "<html" in page and "/openapi.json" in page
    # Self-contained: no script or stylesheet from elsewhere (there is no internet).
    assert "src=" not in page and "href=\"http" not in page


def test_metrics_are_prometheus_text(server):
    post(server, {"input": "metrics please"})
    status, text = request(server, "GET", "/metrics")
    assert status == 200
    assert 'candle_embed_requests_total{route="/v1/embeddings",status="200"}' in text
    for name in ("request_duration_seconds", "queue_duration_seconds", "batch_size", "batch_requests", "batch_tokens"):
        assert f"# TYPE candle_embed_{name} histogram" in text
    assert int(metric(text, "candle_embed_tokens_embedded_total")) > 0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


# --- load: many concurrent clients, every answer exact ------------------------------------------------

WORDS = "graphene carbon lattice conductivity superconductor electron phonon quantum Beijing gravity planet orbit".split()


def test_load_many_clients_batched_and_exact(server, runner):
    rng = random.Random(1234)
    texts = sorted({" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(120)})
    token_lists = [[rng.randrange(1, 1000) for _ in range(rng.randint(1, 60))] for _ in range(30)]
    # Unbatched reference: every input alone.
    alone_text = {t: runner_embed(runner, input=t)[0] for t in texts}
    alone_tokens = [runner_embed(runner, input=ids)[0] for ids in token_lists]

    jobs = []
    for i in range(2000):
        if i % 5 == 4:
            picks = rng.sample(range(len(token_lists)), rng.randint(1, 4))
            jobs.append(("tokens", picks))
        else:
            jobs.append(("texts", rng.sample(texts, rng.choice([1, 1, 2, 3, 8, 16]))))
    before = request(server, "GET", "/metrics")[1]

    local = threading.local()
    failures: List[str] = []

    def run(job: Tuple[str, Any]) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        kind, picks = job
        body = {"input": [token_lists[p] for p in picks] if kind == "tokens" else picks}
        if len(picks) == 1 and kind == "texts":
            body["input"] = picks[0]
        conn.request("POST", "/v1/embeddings", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        if resp.status != 200:
            failures.append(f"{resp.status}: {answer}")
            return
        got = np.array([d["embedding"] for d in answer["data"]], dtype=np.float32)
        want = np.stack([alone_tokens[p] for p in picks] if kind == "tokens" else [alone_text[t] for t in picks])
        if got.shape != want.shape or not np.allclose(got, want, atol=ATOL, rtol=0):
            failures.append(f"mismatch for {body}")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        list(pool.map(run, jobs))
    elapsed = time.monotonic() - started
    assert not failures, failures[:3]
    after = request(server, "GET", "/metrics")[1]

    def merged(text: str) -> Tuple[float, float]:
        single = metric(text, 'candle_embed_batch_requests_bucket{le="1"}')
        return single, metric(text, "candle_embed_batch_requests_count")

    single0, count0 = merged(before)
    single1, count1 = merged(after)
    batches = count1 - count0
    assert batches > 0
    # Some forward passes carried more than one client request.
    assert (batches - (single1 - single0)) > 0, after
    assert batches < 2000, "every request ran alone: nothing was batched"
    ok = metric(after, 'candle_embed_requests_total{route="/v1/embeddings",status="200"}') - metric(
        before, 'candle_embed_requests_total{route="/v1/embeddings",status="200"}'
    )
    assert ok == 2000
    assert elapsed < 120


# --- overload, auth, several models, shutdown ------------------------------------------------------


def wait_in_flight(srv: Server, n: int) -> None:
    deadline = time.monotonic() + 30
    while metric(request(srv, "GET", "/metrics")[1], "candle_embed_requests_in_flight") < n:
        assert time.monotonic() < deadline, "the request was never admitted"
        time.sleep(0.01)


def test_overload_answers_429_quickly():
    srv = Server("-m", str(GQA), "--max-concurrent-requests", "1", "--max-batch-tokens", "16")
    try:
        # ~300 forward passes of 128 tokens (the budget of 16 puts each input alone): a second or so.
        slow_body = {"input": ["word " * 100] * 300, "truncate_sequence": True}
        slow_status: List[int] = []
        slow = threading.Thread(target=lambda: slow_status.append(post(srv, slow_body)[0]))
        slow.start()
        wait_in_flight(srv, 1)  # it holds the only slot
        seen_429 = []
        deadline = time.monotonic() + 20
        while slow.is_alive() and time.monotonic() < deadline and not seen_429:
            t0 = time.monotonic()
            headers: Dict[str, str] = {}
            status, body = post(srv, {"input": "quick"}, response_headers=headers)
            if status == 429:
                seen_429.append(time.monotonic() - t0)
                assert_error(status, body, 429)
                assert body["error"]["type"] == "rate_limit_error"
                assert int(headers["retry-after"]) >= 1
        slow.join()
        assert slow_status == [200]
        assert seen_429, "no 429 while the only slot was taken"
        assert seen_429[0] < 1.0
        assert post(srv, {"input": "after"})[0] == 200
    finally:
        assert srv.stop() == 0


def test_requests_larger_than_a_batch_are_split_and_reassembled(runner):
    # A budget of 24 tokens per forward pass: 20 texts of ~10-40 tokens run in many passes.
    srv = Server("-m", str(GQA), "--max-batch-tokens", "24")
    try:
        texts = [" ".join(WORDS[i % len(WORDS) :] + WORDS[: i % 5])[: 20 + 7 * i] for i in range(20)]
        status, body = post(srv, {"input": texts, "dimensions": 16})
        assert status == 200, body
        expected = runner_embed(runner, input=texts, dimensions=16)
        np.testing.assert_allclose(assert_embedding_response(body, 20, 16), expected, atol=ATOL)
        text = request(srv, "GET", "/metrics")[1]
        assert metric(text, "candle_embed_batches_total") > 1
    finally:
        assert srv.stop() == 0


def test_api_key():
    srv = Server("-m", str(GQA), "--api-key", "sekret")
    try:
        body = {"input": "hello"}
        msg = assert_error(*post(srv, body), 401)
        assert "Bearer" in msg
        assert_error(*post(srv, body, headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(*post(srv, body, headers={"Authorization": "Bearer sekret2"}), 401)
        assert_error(*request(srv, "GET", "/v1/models"), 401)
        assert post(srv, body, headers={"Authorization": "Bearer sekret"})[0] == 200
        # The scheme name is case-insensitive (RFC 7235); the key is not.
        assert post(srv, body, headers={"Authorization": "bearer sekret"})[0] == 200
        assert_error(*post(srv, body, headers={"Authorization": "bearer SEKRET"}), 401)
        assert request(srv, "GET", "/health")[0] == 200
        import openai
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="sekret", max_retries=0)
        assert len(client.embeddings.create(model="default", input="x").data[0].embedding) == HIDDEN
        bad = openai.OpenAI(base_url=srv.base + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model="default", input="x")
    finally:
        srv.stop()


def test_api_key_from_environment():
    srv = Server("-m", str(GQA), env={"CANDLE_EMBED_API_KEY": "from-env"})
    try:
        assert post(srv, {"input": "x"})[0] == 401
        assert post(srv, {"input": "x"}, headers={"Authorization": "Bearer from-env"})[0] == 200
    finally:
        srv.stop()


def test_selector_config_serves_two_models(tmp_path, runner):
    config = tmp_path / "selector.json"
    config.write_text(
        json.dumps(
            {
                "embed-qwen3": {"Embedding": {"model_id": str(GQA), "arch": "qwen3embedding"}},
                "small": {"Embedding": {"model_id": str(MQA)}},
            }
        )
    )
    srv = Server("--config", str(config))
    try:
        status, models = request(srv, "GET", "/v1/models")
        assert sorted((m["id"], m["max_model_len"]) for m in models["data"]) == [("embed-qwen3", 128), ("small", 256)]
        for name, dims in (("embed-qwen3", 64), ("small", 48), ("default", 64)):
            status, body = post(srv, {"model": name, "input": "hello"})
            assert status == 200, body
            assert len(body["data"][0]["embedding"]) == dims
        status, body = post(srv, {"model": "embed-qwen3", "input": ["a b", "c"]})
        np.testing.assert_allclose(assert_embedding_response(body, 2, 64), runner_embed(runner, input=["a b", "c"]), atol=ATOL)
        assert body["model"] == "embed-qwen3"
        msg = assert_error(*post(srv, {"model": "gpt-4", "input": "x"}), 404, "model")
        assert "gpt-4" in msg and "embed-qwen3" in msg
        assert srv.stop(signal.SIGINT) == 0
    finally:
        srv.stop()


def test_shutdown_finishes_accepted_requests_and_says_503_meanwhile():
    srv = Server("-m", str(GQA), "--max-batch-tokens", "16")
    results: List[int] = []
    # ~1,500 passes of one 128-token input: seconds of work to drain.
    body = {"input": ["word " * 100] * 1500, "truncate_sequence": True}
    slow = threading.Thread(target=lambda: results.append(post(srv, body)[0]))
    slow.start()
    wait_in_flight(srv, 1)  # accepted and being worked on
    srv.proc.send_signal(signal.SIGTERM)
    # Draining: still accepting connections, answering 503 to anything new, /health included.
    deadline = time.monotonic() + 10
    while True:
        status, health = request(srv, "GET", "/health")
        if status == 503:
            break
        assert status == 200 and time.monotonic() < deadline, (status, health)
        time.sleep(0.01)
    assert "shutting down" in assert_error(status, health, 503)
    assert "shutting down" in assert_error(*post(srv, {"input": "new"}), 503)
    assert srv.proc.poll() is None, "the accepted request is still running"
    assert srv.stop(signal.SIGTERM) == 0
    slow.join()
    assert results == [200]


def test_a_request_larger_than_the_token_limit_runs_alone():
    # The 429 side (room waited for in arrival order, then refused) is timing-dependent over HTTP;
    # scheduler.rs's tokens_in_flight_are_bounded_and_returned tests it deterministically.
    srv = Server("-m", str(GQA), "--max-batch-tokens", "16", "--max-tokens-in-flight", "300")
    try:
        big = {"input": ["word " * 100] * 400, "truncate_sequence": True}
        status, body = post(srv, big)
        assert status == 200 and body["usage"]["prompt_tokens"] > 300
        status, _ = post(srv, {"input": "after"})
        assert status == 200, "its tokens are given back"
    finally:
        srv.stop()


def test_serve_help_and_bad_flags():
    script = _console_script()
    out = subprocess.run([script, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--model-id", "--port", "--served-model-name", "--api-key", "--max-batch-tokens", "--payload-limit", "--config"):
        assert flag in out.stdout
    bad = subprocess.run([script, "serve", "-m", str(GQA), "--port", "notaport"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "notaport" in bad.stderr
    offline = dict(os.environ, HF_HUB_OFFLINE="1")
    missing = subprocess.run(
        [script, "serve", "-m", "/nonexistent/model", "-p", str(_free_port())], capture_output=True, text=True, timeout=60, env=offline
    )
    assert missing.returncode == 1 and "nonexistent" in missing.stderr
