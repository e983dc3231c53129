"""Qwen3-Reranker against transformers' recordings (scripts/make_reranker_fixtures.py): the token
ids of every pair (the model card's prompt, the middle truncated), the scores in f32 (≤ 1e-5 on
probabilities) and on every bf16 kernel this CPU runs (at least as close to the f32 reference as
transformers' own bf16 run, over the suite), the ranking, and scores that do not depend on
the batch. Tied and untied heads both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from candle_embed import RerankRequest, Runner, Which

from fixture_models import GQA, MODELS, runnable_cpu_kernels

EXPECTED = Path(__file__).parent / "fixtures" / "expected"
NAMES = ["reranker-tied", "reranker-untied"]
RECORDINGS = {name: json.loads((EXPECTED / f"{name}.json").read_text(encoding="utf-8")) for name in NAMES}
F32_TOL = 1e-5

_runners: dict = {}


def runner(name: str, dtype: str, max_length: int, kernel: str | None = None) -> Runner:
    key = (name, dtype, max_length, kernel)
    if key not in _runners:
        import os

        before = os.environ.get("CANDLE_EMBED_CPU_KERNEL")
        if kernel is not None:
            os.environ["CANDLE_EMBED_CPU_KERNEL"] = kernel
        try:
            _runners[key] = Runner(which=Which.Reranker(model_id=str(MODELS / name), dtype=dtype), max_length=max_length)
        finally:
            if kernel is not None:
                if before is None:
                    del os.environ["CANDLE_EMBED_CPU_KERNEL"]
                else:
                    os.environ["CANDLE_EMBED_CPU_KERNEL"] = before
    return _runners[key]


def cases():
    return [pytest.param(name, case, id=f"{name}-{case['id']}") for name in NAMES for case in RECORDINGS[name]["cases"]]


def request(case) -> RerankRequest:
    return RerankRequest(case["query"], case["documents"], instruction=case["instruction"])


@pytest.mark.parametrize("name, case", cases())
def test_token_ids_follow_the_model_card(name, case):
    model = runner(name, "f32", case["max_length"])
    assert model.tokenize_pairs(request(case)) == case["token_ids"]


@pytest.mark.parametrize("name, case", cases())
def test_f32_scores_and_ranking(name, case):
    model = runner(name, "f32", case["max_length"])
    result = model.send_rerank_request(request(case))
    np.testing.assert_allclose(result.scores, case["scores"], atol=F32_TOL, rtol=0)
    assert result.tokens == sum(len(ids) for ids in case["token_ids"])
    want = sorted(range(len(case["scores"])), key=lambda i: (-case["scores"][i], i))
    got = [r["index"] for r in result.results]
    # Scores closer than the tolerance may swap; every other pair keeps transformers' order.
    for a, b in zip(got, want):
        assert a == b or abs(case["scores"][a] - case["scores"][b]) <= 2 * F32_TOL


BF16_KERNELS = runnable_cpu_kernels()  # the portable reference at least, on any CPU


@pytest.mark.parametrize("kernel", BF16_KERNELS)
@pytest.mark.parametrize("name", NAMES)
def test_bf16_scores_are_as_close_as_transformers_bf16(name, kernel):
    # Over the whole suite (one pair's rounding luck says little): our largest and mean
    # distance from the f32 reference may not exceed transformers' own bf16 run's.
    ours, theirs = [], []
    for case in RECORDINGS[name]["cases"]:
        model = runner(name, "bf16", case["max_length"], kernel)
        reference = np.asarray(case["scores"])
        ours += list(np.abs(model.send_rerank_request(request(case)).scores - reference))
        theirs += list(np.abs(np.asarray(case["scores_bf16"]) - reference))
    assert max(ours) <= max(theirs) and np.mean(ours) <= np.mean(theirs), (max(ours), max(theirs))


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_scores_do_not_depend_on_the_batch(dtype):
    case = RECORDINGS["reranker-tied"]["cases"][0]
    model = runner("reranker-tied", dtype, 128)
    together = model.send_rerank_request(request(case)).scores
    alone = [model.rerank(case["query"], [d]).scores[0] for d in case["documents"]]
    reversed_ = model.rerank(case["query"], case["documents"][::-1]).scores[::-1]
    assert together.tolist() == alone == reversed_.tolist()


def test_results_top_n_and_documents():
    model = runner("reranker-tied", "f32", 128)
    docs = ["Beijing is the capital of China.", "Paris is in France.", "Tea grows in Yunnan."]
    result = model.rerank("What is the capital of China?", docs, top_n=2, return_documents=True)
    assert len(result.results) == 2 and len(result.scores) == 3
    assert result.results[0]["relevance_score"] >= result.results[1]["relevance_score"]
    for r in result.results:
        assert r["document"] == docs[r["index"]] and r["relevance_score"] == pytest.approx(float(result.scores[r["index"]]))
    assert "document" not in model.rerank("q", docs).results[0]


def test_wrong_kind_of_checkpoint_is_a_clear_error():
    with pytest.raises(ValueError, match="embedding model.*Which.Embedding"):
        Runner(which=Which.Reranker(model_id=str(GQA)))
    with pytest.raises(ValueError, match="language-model head.*Which.Reranker"):
        Runner(which=Which.Embedding(model_id=str(MODELS / "reranker-untied")))
    reranker = runner("reranker-tied", "f32", 128)
    with pytest.raises(ValueError, match="holds a reranker"):
        reranker.encode(["text"])


@pytest.mark.parametrize("kwargs, message", [
    ({"documents": []}, "at least one document"),
    ({"documents": ["d"], "top_n": 0}, "top_n must be at least 1"),
    ({"documents": ["d"], "top_n": -2}, "top_n must be at least 1"),
])
def test_bad_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RerankRequest("q", **kwargs)
