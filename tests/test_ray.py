"""`candle_embed.ray` on a real local Ray cluster: a Parquet corpus read with Ray Data, embedded by
two actors, written back as Parquet, every vector compared with `Runner.encode` in this process.
Ray splits the rows into blocks and batches as it likes; the vectors must not care."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from candle_embed.ray import Embedder, embed_dataset

from corpus import TEXTS, vectors_of
from fixture_models import GQA


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    # Progress bars off: the test log should hold the test's output only.
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    ids = [f"doc-{i}" for i in range(len(TEXTS))]
    # Three files with uneven row groups, so blocks and batches cut the corpus at odd places.
    for k, (lo, hi) in enumerate([(0, 50), (50, 51), (51, len(TEXTS))]):
        pq.write_table(pa.table({"id": ids[lo:hi], "text": TEXTS[lo:hi], "n": list(range(lo, hi))}),
                       folder / f"part-{k}.parquet", row_group_size=13)
    return folder


def read_back(folder) -> pa.Table:
    table = pq.read_table(folder)
    return table.sort_by("n")


def test_two_actors_give_encode_vectors(cluster, corpus, gqa, tmp_path):
    ds = ray.data.read_parquet(str(corpus)).repartition(6)  # blocks enough for both actors
    out = tmp_path / "vectors"
    # Two actors of half a CPU each leave one CPU of the two for Ray Data's read and write tasks
    # (actors holding every CPU would starve them).
    embed_dataset(ds, str(GQA), concurrency=2, num_cpus=0.5, batch_size=16).write_parquet(str(out))
    table = read_back(out)
    assert table.column("id").to_pylist() == [f"doc-{i}" for i in range(len(TEXTS))]
    assert table.column_names == ["id", "text", "n", "embedding"]  # other columns passed through
    np.testing.assert_array_equal(vectors_of(table), gqa.encode(TEXTS))


def test_batching_does_not_change_vectors_and_options_reach_the_engine(cluster, corpus, gqa, tmp_path):
    ds = ray.data.read_parquet(str(corpus))
    out = tmp_path / "binary"
    embed_dataset(ds, str(GQA), concurrency=1, num_cpus=1, batch_size=7,
                  output_column="bits", precision="ubinary", dimensions=32).write_parquet(str(out))
    table = read_back(out)
    column = table.column("bits").combine_chunks()
    bits = column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), column.type.list_size)
    assert bits.dtype == np.uint8
    np.testing.assert_array_equal(bits, gqa.encode(TEXTS, precision="ubinary", dimensions=32))


def test_rows_without_text_get_null_vectors(gqa):
    embedder = Embedder.__new__(Embedder)  # the actor's work without an actor around it
    embedder.runner, embedder.text_column, embedder.output_column, embedder.options = gqa, "text", "embedding", {}
    out = embedder(pa.table({"text": ["a text", None, "", "another"]}))
    vectors = out.column("embedding").to_pylist()
    assert vectors[1] is None and vectors[2] is None
    np.testing.assert_array_equal(np.array([vectors[0], vectors[3]], dtype=np.float32), gqa.encode(["a text", "another"]))
    with pytest.raises(ValueError, match="no column 'text'"):
        embedder(pa.table({"body": ["x"]}))


def test_readme_ray_example(cluster, corpus, gqa, tmp_path):
    import runpy

    example = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "ray_embed.py"))
    # Half a CPU per actor: this test cluster has two CPUs, and Ray Data's readers need one.
    example["main"](str(GQA), str(corpus), str(tmp_path / "out"), actors=2, cpus_per_actor=0.5)
    np.testing.assert_array_equal(vectors_of(read_back(tmp_path / "out")), gqa.encode(TEXTS))
