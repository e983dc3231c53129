"""Reranking with Qwen3-Reranker (the README's example): `python examples/rerank.py [MODEL]`.

MODEL is a local directory or a hub id (default Qwen/Qwen3-Reranker-0.6B).
"""

import sys

from candle_embed import Runner, Which

model_id = sys.argv[1] if len(sys.argv) > 1 else "Qwen/Qwen3-Reranker-0.6B"
reranker = Runner(which=Which.Reranker(model_id=model_id))
result = reranker.rerank(
    "What is the capital of China?",
    ["Beijing is the capital of China.", "Gravity pulls objects together."],
    top_n=1, return_documents=True,
)
print(result.scores.dtype, len(result.scores), len(result.results), sorted(result.results[0]))
