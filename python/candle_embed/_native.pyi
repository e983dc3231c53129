"""Type stubs for the compiled module candle_embed._native."""

import os
import pathlib
from typing import Any, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

Input = Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]]]
Precision = Literal["float32", "float16", "int8", "uint8", "binary", "ubinary"]

class CandleEmbedError(RuntimeError):
    """A failure that is not the caller's input: hub access, the model run."""

class EmbeddingArchitecture:
    """Model families candle-embed can run."""

    Qwen3Embedding: "EmbeddingArchitecture"

class Which:
    """Which model a Runner loads."""

    class Embedding(Which):
        """An embedding model: a local directory or a hub id such as "Qwen/Qwen3-Embedding-0.6B"."""

        model_id: str
        arch: Optional[EmbeddingArchitecture]
        tokenizer_json: Optional[pathlib.Path]
        dtype: str
        revision: Optional[str]
        hf_cache_path: Optional[pathlib.Path]

        def __init__(
            self,
            model_id: str,
            arch: Optional[EmbeddingArchitecture] = None,
            tokenizer_json: Optional[Union[str, os.PathLike[str]]] = None,
            dtype: str = "auto",
            revision: Optional[str] = None,
            hf_cache_path: Optional[Union[str, os.PathLike[str]]] = None,
        ) -> None: ...

    class Reranker(Which):
        """A Qwen3-Reranker: a local directory or a hub id such as "Qwen/Qwen3-Reranker-0.6B"."""

        model_id: str
        tokenizer_json: Optional[pathlib.Path]
        dtype: str
        revision: Optional[str]
        hf_cache_path: Optional[pathlib.Path]

        def __init__(
            self,
            model_id: str,
            tokenizer_json: Optional[Union[str, os.PathLike[str]]] = None,
            dtype: str = "auto",
            revision: Optional[str] = None,
            hf_cache_path: Optional[Union[str, os.PathLike[str]]] = None,
        ) -> None: ...

class RerankRequest:
    """Documents to score against a query with a Qwen3-Reranker."""

    def __init__(
        self,
        query: str,
        documents: Sequence[str],
        instruction: Optional[str] = None,
        top_n: Optional[int] = None,
        return_documents: bool = False,
    ) -> None: ...
    @property
    def query(self) -> str: ...
    @property
    def documents(self) -> List[str]: ...
    @property
    def instruction(self) -> Optional[str]: ...
    @property
    def top_n(self) -> Optional[int]: ...
    @property
    def return_documents(self) -> bool: ...
    def __len__(self) -> int: ...

class EmbeddingRequest:
    """What to embed and how."""

    def __init__(
        self,
        input: Input,
        truncate_sequence: bool = False,
        dimensions: Optional[int] = None,
        normalize: bool = True,
        instruction: Optional[str] = None,
        prompt_name: Optional[str] = None,
        truncate_prompt_tokens: Optional[int] = None,
        truncation_side: str = "right",
        precision: Precision = "float32",
        ranges: Optional[Union[Sequence[Sequence[float]], npt.NDArray[np.float32]]] = None,
    ) -> None:
        """`precision`: "float32", "float16", "int8", "uint8", "binary" or "ubinary" (the
        sentence-transformers `quantize_embeddings` semantics); int8 and uint8 need `ranges`, a
        (2, dimensions) array of each dimension's min and max, fixed for a whole job."""
    @property
    def input(self) -> Union[str, List[str], List[int], List[List[int]]]: ...
    @property
    def truncate_sequence(self) -> bool: ...
    @property
    def dimensions(self) -> Optional[int]: ...
    @property
    def normalize(self) -> bool: ...
    @property
    def instruction(self) -> Optional[str]: ...
    @property
    def prompt_name(self) -> Optional[str]: ...
    @property
    def truncate_prompt_tokens(self) -> Optional[int]: ...
    @property
    def truncation_side(self) -> str: ...
    @property
    def precision(self) -> Precision: ...
    @property
    def ranges(self) -> Optional[List[List[float]]]: ...
    def __len__(self) -> int: ...

class Runner:
    """A loaded model (an embedding model, or a reranker); calls release the GIL and may run
    concurrently."""

    def __init__(
        self,
        which: Which,
        device: str = "cpu",
        max_length: Optional[int] = None,
        max_batch_tokens: int = 8192,
    ) -> None: ...
    def send_embedding_request(self, request: EmbeddingRequest) -> npt.NDArray[Any]:
        """Embeds the request's inputs: an array of shape (inputs, dimensions) in the request's
        precision (float32 by default; binary and ubinary pack 8 dimensions a byte)."""
    def _embed(self, request: EmbeddingRequest) -> Tuple[npt.NDArray[Any], int]:
        """`send_embedding_request` plus the number of tokens the inputs took."""
    def tokenize(self, request: EmbeddingRequest) -> List[List[int]]:
        """The token ids the model would be fed, one list per input."""
    def _rerank(self, request: RerankRequest) -> Tuple[npt.NDArray[np.float32], int]:
        """A reranker's scores in document order, and the tokens the pairs took."""
    def tokenize_pairs(self, request: RerankRequest) -> List[List[int]]:
        """The token ids a reranker reads for each (query, document) pair."""
    @property
    def hidden_size(self) -> int: ...
    @property
    def max_length(self) -> int: ...
    @property
    def info(self) -> dict[str, Any]:
        """What was loaded and how it runs: model_id, architecture, hidden_size, max_length,
        vocab_size, dtype (compute), storage_dtype, kernel ("amx", "avx512bf16", "avx512", "avx2",
        "reference": our CPU kernels' family, in bf16, or in f32 ("avx512", "avx2", "reference")
        their f32 loops; "candle": candle's own ops; "candle+varlen": with our packed attention
        kernel, on CUDA), device, max_batch_tokens, tokenizer_appends_eos, prompt_names."""

class Tokenizer:
    """A tokenizer.json used the way the Runner uses it: every text ends with <|endoftext|>."""

    def __init__(self, path: Union[str, os.PathLike[str]]) -> None: ...
    def encode(self, request: EmbeddingRequest, max_length: Optional[int] = None) -> List[List[int]]: ...
    @property
    def eos_id(self) -> int: ...
    @property
    def appends_eos(self) -> bool: ...

def quantize(
    embeddings: npt.NDArray[np.float32],
    precision: Precision,
    ranges: Optional[Sequence[Sequence[float]]] = None,
) -> npt.NDArray[Any]:
    """float32 (rows, dimensions) vectors converted to `precision` by the engine's own finishing
    step; int8 and uint8 take `ranges`."""

def serve(argv: List[str]) -> None:
    """Runs the OpenAI-compatible embeddings server (the flags of `candle-embed serve --help`)
    until Ctrl-C or SIGTERM; the GIL is released meanwhile."""
