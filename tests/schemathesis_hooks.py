"""Schemathesis hooks for tests/test_schemathesis.py: the rules of a valid /v1/embeddings body that
OpenAPI 3.0 cannot state, applied to the bodies schemathesis draws.

The document says everything a schema can (types, enums, bounds, which fields exclude each other,
`ranges` exactly with int8/uint8). Two rules depend on values it cannot relate, and the field
descriptions say them in words:

- an input's length in *tokens* (prompt and `<|endoftext|>` included) is at most the model's
  maximum unless truncation is asked for;
- `ranges` holds two rows as long as the vectors (`dimensions`, or the hidden size), finite as
  float32, with min <= max;
- in a /score body, `text_1` is one text or as many as `text_2`.

A body drawn as valid that breaks one of them is not sent: the server would rightly refuse it, and
schemathesis would call that a valid request rejected. Bodies that break a rule the schema states
are still drawn (negative testing) and must be refused. The model directory comes from
CANDLE_EMBED_SCHEMATHESIS_MODEL, so the token count is the model's own tokenizer's.
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import schemathesis

FLOAT32_MAX = 3.4028234663852886e38


@lru_cache(maxsize=1)
def _model():
    from tokenizers import Tokenizer

    root = Path(os.environ["CANDLE_EMBED_SCHEMATHESIS_MODEL"])
    config = json.loads((root / "config.json").read_text())
    prompts_file = root / "config_sentence_transformers.json"
    prompts = json.loads(prompts_file.read_text()).get("prompts", {}) if prompts_file.exists() else {}
    return Tokenizer.from_file(str(root / "tokenizer.json")), config, prompts


def _prefix(body: dict) -> str:
    _, _, prompts = _model()
    if isinstance(body.get("instruction"), str):
        return f"Instruct: {body['instruction']}\nQuery:"
    return prompts.get(body.get("prompt_name"), "") if isinstance(body.get("prompt_name"), str) else ""


def _fits(body: dict) -> bool:
    """Every input within the model's length, counted as an upper bound (one token for
    `<|endoftext|>` beyond what the tokenizer adds)."""
    if body.get("truncate_sequence") is True or isinstance(body.get("truncate_prompt_tokens"), int):
        return True
    tokenizer, config, _ = _model()
    limit = config["max_position_embeddings"]
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        return True
    if all(isinstance(x, int) for x in inputs):
        return len(inputs) <= limit
    prefix = _prefix(body)
    for item in inputs:
        if isinstance(item, list):
            if len(item) > limit:
                return False
        elif isinstance(item, str):
            if len(tokenizer.encode(prefix + item).ids) + 1 > limit:
                return False
    return True


def _ranges_match(body: dict) -> bool:
    ranges = body.get("ranges")
    if body.get("precision") not in ("int8", "uint8") or not isinstance(ranges, list) or len(ranges) != 2:
        return True
    _, config, _ = _model()
    dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else config["hidden_size"]
    low, high = ranges
    if not (isinstance(low, list) and isinstance(high, list) and len(low) == len(high) == dims):
        return False
    numbers = [x for x in low + high if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if len(numbers) != 2 * dims or any(not math.isfinite(x) or abs(x) > FLOAT32_MAX for x in numbers):
        return False
    return all(lo <= hi for lo, hi in zip(low, high))


def _pairs_match(body: dict) -> bool:
    queries, documents = body.get("text_1"), body.get("text_2")
    if not isinstance(queries, list) or len(queries) == 1:
        return True
    return len(queries) == (len(documents) if isinstance(documents, list) else 1)


@schemathesis.hook
def filter_case(ctx, case):
    # `filter_case`, not `filter_body`: the coverage phase applies only case hooks.
    body = case.body
    if not isinstance(body, dict) or (case.meta is not None and case.meta.generation.mode.name != "POSITIVE"):
        return True
    if case.operation.path == "/v1/embeddings":
        return _fits(body) and _ranges_match(body)
    if case.operation.path in ("/v1/score", "/score"):
        return _pairs_match(body)
    return True
