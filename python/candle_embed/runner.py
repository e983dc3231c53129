"""`Runner`: the compiled model handle, plus `encode`, sentence-transformers' call shape for many
texts (any iterable, a progress bar, compact precisions), built on the same engine calls."""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _native
from ._native import EmbeddingRequest, RerankRequest

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8,
          "binary": np.int8, "ubinary": np.uint8}
# Texts per engine call when `batch_size` is not given: the first call takes DEFAULT_BATCH, then
# the size adapts so that a call lasts about CALL_SECONDS — long enough that per-call costs (the
# last, partly filled forward pass of each call) vanish on a small model, short enough that the
# progress bar moves and Ctrl-C is answered within seconds on a large one. Vectors do not depend
# on how texts are grouped, so this changes nothing but speed.
DEFAULT_BATCH = 256
CALL_SECONDS = 2.0
MIN_BATCH, MAX_BATCH = 16, 16384
# Where a progress bar is shown by default: on a terminal, for more texts than this.
PROGRESS_FROM = 1000


def calibration_ranges(calibration_embeddings: np.ndarray) -> np.ndarray:
    """Each dimension's [min, max] over float32 calibration vectors, as sentence-transformers'
    `quantize_embeddings` derives them: a (2, dimensions) float32 array."""
    cal = np.asarray(calibration_embeddings, dtype=np.float32)
    if cal.ndim != 2 or cal.shape[0] == 0:
        raise ValueError(f"calibration_embeddings must be a non-empty (n, dimensions) array, got shape {cal.shape}")
    return np.vstack((cal.min(axis=0), cal.max(axis=0)))


def quantize_embeddings(
    embeddings: np.ndarray,
    precision: str,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
) -> np.ndarray:
    """float32 vectors converted to `precision` exactly as `encode(..., precision=...)` does, with
    sentence-transformers' `quantize_embeddings` semantics: int8 / uint8 ranges are `ranges`, else
    the per-dimension min and max of `calibration_embeddings`, else of `embeddings` themselves."""
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be a (rows, dimensions) array, got shape {matrix.shape}")
    if precision in ("int8", "uint8") and ranges is None:
        ranges = calibration_ranges(matrix if calibration_embeddings is None else calibration_embeddings)
    elif precision not in ("int8", "uint8"):
        ranges = None
    if ranges is not None:
        ranges = np.asarray(ranges, dtype=np.float32).tolist()
    return _native.quantize(matrix, precision, ranges)


class _Sizer:
    """The number of texts for the next engine call: fixed when the caller chose it, else sized
    from the last call's seconds per text toward CALL_SECONDS."""

    def __init__(self, batch_size: Optional[int]) -> None:
        self.fixed = batch_size is not None
        self.size = DEFAULT_BATCH if batch_size is None else int(batch_size)
        if self.size < 1:
            raise ValueError(f"batch_size must be a positive number of texts, got {batch_size}")

    def took(self, texts: int, seconds: float) -> None:
        if self.fixed or texts < self.size:
            return
        per_text = max(seconds, 1e-6) / texts
        target = int(CALL_SECONDS / per_text)
        # At most doubling, so one fast call of short texts does not make the next one huge.
        self.size = max(MIN_BATCH, min(MAX_BATCH, 2 * self.size, target))


def _batches(texts: Iterable[str], sizer: _Sizer) -> Iterator[List[str]]:
    it = iter(texts)
    while True:
        chunk = list(itertools.islice(it, sizer.size))
        if not chunk:
            return
        yield chunk


class _Progress:
    """A tqdm bar counting texts, with tokens/s beside it; nothing when not shown."""

    def __init__(self, show: bool, total: Optional[int]) -> None:
        self.bar = None
        self.tokens = 0
        self.started = time.perf_counter()
        if show:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # the bar is a nicety: without tqdm, none
                return
            self.bar = tqdm(total=total, unit="text", desc="Embedding", file=sys.stderr)

    def update(self, texts: int, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} tokens/s", refresh=False)
            self.bar.update(texts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True)
class RerankResult:
    """A rerank call's answer: `scores` in the order of the documents given (float32, each in
    [0, 1]); `results` best first (ties in input order), cut to `top_n`, each with its `index`
    among the documents, its `relevance_score` and (with return_documents) its `document`;
    `tokens`: what the pairs took, prompt included."""

    scores: np.ndarray
    results: List[Dict[str, Any]]
    tokens: int


class Runner(_native.Runner):
    __doc__ = _native.Runner.__doc__

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: Optional[str] = None,
        top_n: Optional[int] = None,
        return_documents: bool = False,
    ) -> RerankResult:
        """Scores each document's relevance to `query` with a Qwen3-Reranker (a Runner loaded
        with `Which.Reranker`): the model card's prompt, `instruction` defaulting to its
        web-search one, documents truncated (never the prompt) to the model's maximum."""
        request = RerankRequest(query, list(documents), instruction=instruction, top_n=top_n,
                                return_documents=return_documents)
        return self.send_rerank_request(request)

    def send_rerank_request(self, request: RerankRequest) -> RerankResult:
        """`rerank` for a prepared `RerankRequest`."""
        scores, tokens = self._rerank(request)
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        if request.top_n is not None:
            order = order[: request.top_n]
        documents = request.documents if request.return_documents else None
        results = []
        for i in order:
            result: Dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if documents is not None:
                result["document"] = documents[i]
            results.append(result)
        return RerankResult(scores=scores, results=results, tokens=tokens)

    def encode(
        self,
        texts: Union[str, Iterable[str]],
        *,
        batch_size: Optional[int] = None,
        prompt_name: Optional[str] = None,
        instruction: Optional[str] = None,
        dimensions: Optional[int] = None,
        normalize: bool = True,
        precision: str = "float32",
        ranges: Optional[np.ndarray] = None,
        calibration_embeddings: Optional[np.ndarray] = None,
        show_progress_bar: Optional[bool] = None,
        truncate: bool = False,
    ) -> np.ndarray:
        """Embeds `texts` (a string, or any iterable of strings: a generator is read batch by
        batch, never whole) and returns one row per text; a single string gives one vector.

        batch_size: texts per engine call; the engine packs them into forward passes by tokens, so
        this sets how often progress is shown and Ctrl-C is checked. None: calls of about two
        seconds each.
        precision: "float32", "float16", "int8", "uint8", "binary" or "ubinary", as
        sentence-transformers' `quantize_embeddings`; int8 and uint8 need `ranges` (a (2,
        dimensions) array of each dimension's min and max) or `calibration_embeddings` (float32
        vectors they are taken from), fixed for the whole call so that a vector never depends on
        the texts around it. show_progress_bar: None shows one on a terminal for over 1,000 texts.
        truncate: cut texts longer than the model maximum instead of raising.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}, got {precision!r}")
        if ranges is not None and calibration_embeddings is not None:
            raise ValueError("give ranges or calibration_embeddings, not both")
        if calibration_embeddings is not None:
            ranges = calibration_ranges(calibration_embeddings)
        if ranges is not None:
            ranges = np.asarray(ranges, dtype=np.float32).tolist()
        sizer = _Sizer(batch_size)

        single = isinstance(texts, str)
        items: Iterable[str] = [texts] if single else texts
        total = len(items) if isinstance(items, Sequence) else None
        if show_progress_bar is None:
            show_progress_bar = sys.stderr.isatty() and (total is None or total > PROGRESS_FROM)
        options = dict(prompt_name=prompt_name, instruction=instruction, dimensions=dimensions,
                       normalize=normalize, truncate_sequence=truncate, precision=precision, ranges=ranges)

        progress = _Progress(bool(show_progress_bar), total)
        parts: List[np.ndarray] = []
        out: Optional[np.ndarray] = None
        done = 0
        try:
            for chunk in _batches(items, sizer):
                for i, text in enumerate(chunk):
                    if not isinstance(text, str):
                        raise TypeError(f"texts[{done + i}] is {type(text).__name__}, expected str")
                started = time.perf_counter()
                vectors, tokens = self._embed(EmbeddingRequest(chunk, **options))
                sizer.took(len(chunk), time.perf_counter() - started)
                if total is not None:
                    if out is None:
                        out = np.empty((total, vectors.shape[1]), dtype=vectors.dtype)
                    out[done : done + len(chunk)] = vectors
                else:
                    parts.append(vectors)
                done += len(chunk)
                progress.update(len(chunk), tokens)
        finally:
            progress.close()
        if out is None:
            width = _native_width(self, dimensions, precision)
            out = np.concatenate(parts) if parts else np.empty((0, width), dtype=DTYPES[precision])
        return out[0] if single else out


def _native_width(runner: Runner, dimensions: Optional[int], precision: str) -> int:
    dims = dimensions or runner.hidden_size
    return (dims + 7) // 8 if precision in ("binary", "ubinary") else dims
