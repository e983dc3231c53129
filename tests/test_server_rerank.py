"""Reranking over HTTP, beside embeddings in one server (a selector file): Cohere's and Jina's
`/rerank` bodies and vLLM's `/score`, scores checked against transformers' recordings; errors in
the OpenAI shape; mixed embedding and rerank traffic under load, every answer checked."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fixture_models import GQA, MODELS
from test_server import ATOL, Server, assert_error, post, request, runner_embed

RECORDING = json.loads((Path(__file__).parent / "fixtures" / "expected" / "reranker-tied.json").read_text(encoding="utf-8"))
CASE = next(c for c in RECORDING["cases"] if c["id"] == "plain_english")
DEFAULT_CASE = [c for c in RECORDING["cases"] if c["instruction"] is None and c["max_length"] == 128]
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tmp_path_factory.mktemp("rerank") / "selector.json"
    config.write_text(json.dumps({
        "embed": {"Embedding": {"model_id": str(GQA)}},
        "rerank": {"Reranker": {"model_id": str(MODELS / "reranker-tied"), "dtype": "f32"}},
    }))
    srv = Server("--config", str(config))
    yield srv
    srv.stop()


def rerank(server, body, path="/v1/rerank"):
    return request(server, "POST", path, body)


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_cohere_body(server, path):
    status, body = rerank(server, {"model": "rerank", "query": CASE["query"], "documents": CASE["documents"],
                                   "top_n": 2, "return_documents": True}, path)
    assert status == 200, body
    want = sorted(range(len(CASE["scores"])), key=lambda i: -CASE["scores"][i])[:2]
    assert [r["index"] for r in body["results"]] == want
    for r in body["results"]:
        assert abs(r["relevance_score"] - CASE["scores"][r["index"]]) <= 1e-5
        assert r["document"] == {"text": CASE["documents"][r["index"]]}
    assert body["model"] == "rerank" and body["id"].startswith("rerank-")
    assert body["usage"]["total_tokens"] == sum(len(t) for t in CASE["token_ids"])


def test_jina_body_documents_as_objects_and_any_model_name(server):
    # Jina clients send their own model names and documents as {"text": ...}; one reranker is served.
    for case in DEFAULT_CASE:
        status, body = rerank(server, {"model": "jina-reranker-v2-base-multilingual", "query": case["query"],
                                       "documents": [{"text": d} for d in case["documents"]]})
        assert status == 200, body
        got = {r["index"]: r["relevance_score"] for r in body["results"]}
        assert len(got) == len(case["documents"]) and "document" not in body["results"][0]
        np.testing.assert_allclose([got[i] for i in range(len(got))], case["scores"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", ["/v1/score", "/score"])
def test_vllm_score_body(server, path):
    status, body = request(server, "POST", path, {"model": "rerank", "text_1": CASE["query"], "text_2": CASE["documents"]})
    assert status == 200, body
    assert [d["index"] for d in body["data"]] == list(range(len(CASE["documents"])))
    assert all(d["object"] == "score" for d in body["data"])
    np.testing.assert_allclose([d["score"] for d in body["data"]], CASE["scores"], atol=1e-5, rtol=0)
    # Pairs by position: the same pairs, each query repeated.
    n = len(CASE["documents"])
    status, pairwise = request(server, "POST", path, {"text_1": [CASE["query"]] * n, "text_2": CASE["documents"]})
    assert status == 200 and [d["score"] for d in pairwise["data"]] == [d["score"] for d in body["data"]]


@pytest.mark.parametrize("path, body, param", [
    ("/v1/rerank", {"query": "q", "documents": []}, "documents"),
    ("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": [3]}, "documents"),
    ("/v1/rerank", {"documents": ["d"]}, "query"),
    ("/v1/rerank", {"query": "q", "documents": ["d"], "model": "embed"}, "model"),
    ("/v1/embeddings", {"input": "x", "model": "rerank"}, "model"),
    ("/v1/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}, "text_1"),
    ("/v1/score", {"text_1": "a", "text_2": []}, "text_2"),
    ("/v1/score", {"text_1": "a"}, "text_2"),
])
def test_bad_requests_are_400_with_the_param(server, path, body, param):
    assert_error(*request(server, "POST", path, body), 400, param)


def test_mixed_embedding_and_rerank_traffic(server, gqa):
    texts = [f"text number {i} " * (1 + i % 5) for i in range(24)]
    expected_vectors = runner_embed(gqa, input=texts)
    _, alone = rerank(server, {"query": CASE["query"], "documents": CASE["documents"]})
    expected_scores = {r["index"]: r["relevance_score"] for r in alone["results"]}

    def one(i):
        if i % 2:
            status, body = post(server, {"model": "embed", "input": texts[i % 24]})
            assert status == 200, body
            np.testing.assert_allclose(body["data"][0]["embedding"], expected_vectors[i % 24], atol=ATOL)
        else:
            docs = CASE["documents"][i % 4:] + CASE["documents"][: i % 4]  # rotated: other batches
            status, body = rerank(server, {"query": CASE["query"], "documents": docs})
            assert status == 200, body
            for r in body["results"]:
                original = (r["index"] + i % 4) % 4
                assert r["relevance_score"] == expected_scores[original]  # bit for bit, whatever the batch
        return True

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(one, range(96)))


def test_openapi_lists_the_rerank_routes(server):
    _, doc = request(server, "GET", "/openapi.json")
    for path in ("/v1/rerank", "/rerank", "/v1/score", "/score"):
        assert "post" in doc["paths"][path]
    assert "documents" in doc["components"]["schemas"]["RerankRequest"]["properties"]


def test_readme_curl_rerank_body(server):
    # The README's curl example, its JSON body sent as written.
    text = README.read_text(encoding="utf-8")
    start = text.index("curl http://localhost:1234/v1/rerank")
    body = text[text.index("-d '", start) + 4 : text.index("'", text.index("-d '", start) + 4)]
    status, answer = rerank(server, json.loads(body))
    assert status == 200, answer
    sent = json.loads(body)
    assert answer["results"] and all(r["document"]["text"] == sent["documents"][r["index"]] for r in answer["results"])


def test_cli_rerank():
    done = subprocess.run(
        [sys.executable, "-m", "candle_embed.cli", "rerank", "-m", str(MODELS / "reranker-tied"), "--dtype", "f32",
         "-q", CASE["query"], *CASE["documents"]],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["index"] for r in results] == sorted(range(4), key=lambda i: -CASE["scores"][i])
    assert all(abs(r["relevance_score"] - CASE["scores"][r["index"]]) <= 1e-5 for r in results)
