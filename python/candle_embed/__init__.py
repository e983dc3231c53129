"""candle-embed: Qwen3-Embedding vectors from a Rust (candle) core.

>>> from candle_embed import EmbeddingArchitecture, EmbeddingRequest, Runner, Which
>>> runner = Runner(which=Which.Embedding(model_id="Qwen/Qwen3-Embedding-0.6B",
...                                       arch=EmbeddingArchitecture.Qwen3Embedding))
>>> runner.send_embedding_request(EmbeddingRequest(input=["a", "b"])).shape
(2, 1024)
"""

from ._native import (
    CandleEmbedError,
    EmbeddingArchitecture,
    EmbeddingRequest,
    RerankRequest,
    Tokenizer,
    Which,
    __version__,
)
from .runner import RerankResult, Runner, calibration_ranges, quantize_embeddings

__all__ = [
    "CandleEmbedError",
    "EmbeddingArchitecture",
    "EmbeddingRequest",
    "RerankRequest",
    "RerankResult",
    "Runner",
    "Tokenizer",
    "Which",
    "__version__",
    "calibration_ranges",
    "quantize_embeddings",
]
