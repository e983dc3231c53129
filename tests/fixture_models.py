"""The fixture models (written by scripts/make_fixtures.py) and the calls every test file makes."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from candle_embed import EmbeddingRequest, Runner, Which

MODELS = Path(__file__).parent / "fixtures" / "models"
# hidden_size 64, max_position_embeddings 128, vocab_size 1024; has config_sentence_transformers.json;
# its tokenizer.json appends <|endoftext|> itself.
GQA = MODELS / "gqa-bf16"
# hidden_size 48; no config_sentence_transformers.json; the tokenizer does not append
# <|endoftext|>, the engine does.
MQA = MODELS / "mqa-f16-prefix"
# hidden_size 32; weights in two shards; RoPE theta in the rope_parameters form.
SHARDED = MODELS / "mha-f32-sharded"


def load(model_dir: Union[Path, str], **kwargs) -> Runner:
    return Runner(which=Which.Embedding(model_id=str(model_dir)), **kwargs)


def embed(runner: Runner, **request) -> np.ndarray:
    return runner.send_embedding_request(EmbeddingRequest(**request))
