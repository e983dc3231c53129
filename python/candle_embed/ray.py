"""Scale-out on Ray Data: a corpus embedded by a pool of actors, one model loaded per actor.

    import ray
    from candle_embed.ray import embed_dataset

    ds = ray.data.read_parquet("s3://bucket/corpus/")
    embed_dataset(ds, "Qwen/Qwen3-Embedding-0.6B", concurrency=4).write_parquet("s3://bucket/vectors/")

`Embedder` is the callable class `Dataset.map_batches` runs: it loads the model in `__init__`,
takes a batch (a pyarrow table), and returns it with a vector column added, the other columns
passed through. Its engine uses as many threads as the CPUs Ray gives the actor, and the GPU Ray
assigns when it has one. A text's vector does not depend on the batch or the actor it lands in,
so Ray's retries and re-runs give the same vectors, bit for bit.

Needs Ray Data (`pip install candle-embed[ray]`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np


class Embedder:
    """For `Dataset.map_batches(Embedder, fn_constructor_args=(model_id,), batch_format="pyarrow",
    concurrency=N)`. Rows whose text is missing or empty get a null vector (the batch keeps every
    row); `request_options` are `Runner.encode`'s (prompt_name, instruction, dimensions,
    normalize, precision, ranges, truncate)."""

    def __init__(
        self,
        model_id: str,
        *,
        text_column: str = "text",
        output_column: str = "embedding",
        dtype: str = "auto",
        device: Optional[str] = None,
        **request_options: Any,
    ) -> None:
        import ray

        context = ray.get_runtime_context()
        cpus = context.get_assigned_resources().get("CPU")
        # The engine's thread pool starts with the first model: size it to this actor's share.
        if cpus and "RAYON_NUM_THREADS" not in os.environ:
            os.environ["RAYON_NUM_THREADS"] = str(max(1, int(cpus)))
        if device is None:
            gpus = ray.get_gpu_ids()
            device = "cuda:0" if gpus else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU
        from . import Runner, Which

        self.runner = Runner(which=Which.Embedding(model_id=model_id, dtype=dtype), device=device)
        self.text_column = text_column
        self.output_column = output_column
        self.options = request_options

    def __call__(self, batch):
        import pyarrow as pa

        if not isinstance(batch, pa.Table):
            batch = pa.Table.from_pydict({k: list(v) for k, v in batch.items()})
        if self.text_column not in batch.column_names:
            raise ValueError(f"no column {self.text_column!r} in the batch; it has {batch.column_names}")
        texts = batch.column(self.text_column).to_pylist()
        usable = [i for i, t in enumerate(texts) if isinstance(t, str) and t]
        vectors = self.runner.encode([texts[i] for i in usable], show_progress_bar=False, **self.options)
        width = vectors.shape[1] if vectors.ndim == 2 else 0
        full = np.zeros((len(texts), width), dtype=vectors.dtype)
        full[usable] = vectors
        mask = np.ones(len(texts), dtype=bool)
        mask[usable] = False
        column = pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), width, mask=pa.array(mask))
        if self.output_column in batch.column_names:
            batch = batch.drop_columns([self.output_column])
        return batch.append_column(self.output_column, column)


def embed_dataset(
    ds,
    model_id: str,
    *,
    text_column: str = "text",
    output_column: str = "embedding",
    concurrency: int = 1,
    num_cpus: Optional[float] = None,
    num_gpus: Optional[float] = None,
    batch_size: int = 1024,
    dtype: str = "auto",
    **request_options: Any,
):
    """`ds` with `output_column` added: the vectors of `text_column`, computed by `concurrency`
    actors of `num_cpus` CPUs (and `num_gpus` GPUs) each, `batch_size` rows a batch."""
    return ds.map_batches(
        Embedder,
        fn_constructor_args=(model_id,),
        fn_constructor_kwargs=dict(text_column=text_column, output_column=output_column, dtype=dtype,
                                   **request_options),
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=concurrency,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
