"""`candle-embed embed-file`: every input format, ids, bad rows, Ctrl-C and --resume, .npy output —
each vector checked against `Runner.encode` on the same text (the corpus: tests/corpus.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
from candle_embed.files import embed_files

from corpus import TEXTS, vectors_of
from fixture_models import GQA


def read_parts(folder: Path) -> pa.Table:
    return pq.read_table(folder)


def write_inputs(tmp: Path, texts: list[str]) -> dict[str, Path]:
    ids = [f"doc-{i}" for i in range(len(texts))]
    paths = {}
    paths["jsonl"] = tmp / "in.jsonl"
    paths["jsonl"].write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for t, i in zip(texts, ids)), encoding="utf-8")
    paths["parquet"] = tmp / "in.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), paths["parquet"], row_group_size=17)
    paths["csv"] = tmp / "in.csv"
    pyarrow.csv.write_csv(pa.table({"id": ids, "text": texts}), paths["csv"])
    paths["txt"] = tmp / "in.txt"
    paths["txt"].write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return paths


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "csv", "txt"])
def test_every_format_gives_the_encode_vectors(gqa, tmp_path, kind):
    path = write_inputs(tmp_path, TEXTS)[kind]
    out = tmp_path / "out"
    id_column = None if kind == "txt" else "id"
    progress = embed_files(gqa, [str(path)], str(out), id_column=id_column, batch_size=16, part_bytes=4096)
    table = read_parts(out)
    assert progress.vectors == len(table) == len(TEXTS) and progress.parts > 1
    np.testing.assert_array_equal(vectors_of(table), gqa.encode(TEXTS))
    expected_ids = list(range(len(TEXTS))) if kind == "txt" else [f"doc-{i}" for i in range(len(TEXTS))]
    assert table.column("id").to_pylist() == expected_ids


def test_a_folder_is_its_files_in_name_order(gqa, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "b.txt").write_text("".join(t + "\n" for t in TEXTS[40:60]), encoding="utf-8")
    (folder / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:40]), encoding="utf-8")
    out = tmp_path / "out"
    embed_files(gqa, [str(folder)], str(out))
    table = read_parts(out)
    np.testing.assert_array_equal(vectors_of(table), gqa.encode(TEXTS[:60]))
    assert table.column("id").to_pylist() == list(range(60))


def test_bad_rows_are_skipped_and_reported(gqa, tmp_path):
    lines = [json.dumps({"text": "good one"}), json.dumps({"text": ""}), "{not json", json.dumps({"other": 1}),
             json.dumps({"text": None}), json.dumps({"text": 42}), json.dumps([1, 2]), json.dumps({"text": "good two"})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    progress = embed_files(gqa, [str(path)], str(out))
    assert progress.vectors == 2 and progress.rows_done == 8
    assert progress.skipped == {"empty text": 1, "not valid JSON (Expecting property name enclosed in double quotes)": 1,
                                "no 'text' field": 1, "missing text": 1, "text is int, not a string": 1,
                                "a JSON list, not an object": 1}
    table = read_parts(out)
    assert table.column("id").to_pylist() == [0, 7]
    skipped = [json.loads(line) for p in sorted(out.glob("_skipped-*.jsonl")) for line in p.read_text().splitlines()]
    assert [s["row"] for s in skipped] == [1, 2, 3, 4, 5, 6]


def test_over_long_texts_are_truncated_or_skipped(gqa, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("short\n" + "word " * 400 + "\nalso short\n", encoding="utf-8")
    out = tmp_path / "truncated"
    assert embed_files(gqa, [str(path)], str(out), request={"truncate_sequence": True}).vectors == 3
    out = tmp_path / "skipped"
    progress = embed_files(gqa, [str(path)], str(out), request={"truncate_sequence": False})
    assert progress.vectors == 2 and progress.skipped == {"text longer than the maximum of 128": 1}
    [row] = [json.loads(line) for line in (out / "_skipped-00000.jsonl").read_text().splitlines()]
    assert row["row"] == 1 and row["reason"].startswith("text has ") and row["reason"].endswith("more than the maximum of 128")
    np.testing.assert_array_equal(vectors_of(read_parts(out)), gqa.encode(["short", "also short"]))


class Interrupting:
    """A runner that raises KeyboardInterrupt (as Ctrl-C does) on its `after`-th call."""

    def __init__(self, runner, after: int) -> None:
        self.runner, self.after, self.calls = runner, after, 0
        self.hidden_size = runner.hidden_size

    def _embed(self, request):
        self.calls += 1
        if self.calls == self.after:
            raise KeyboardInterrupt
        return self.runner._embed(request)


def test_ctrl_c_keeps_what_is_done_and_resume_goes_on(gqa, tmp_path):
    path = write_inputs(tmp_path, TEXTS)["parquet"]
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        embed_files(Interrupting(gqa, after=4), [str(path)], str(out), id_column="id", batch_size=10, part_bytes=1 << 30)
    done = read_parts(out)
    # Three engine calls were done and flushed on the interrupt: batches of ten within Parquet
    # row groups of 17 rows are 10 + 7 + 10.
    assert len(done) == 27
    # A crash mid-part leaves a temporary file and maybe a skipped list: both are cleared.
    (out / "part-00009.parquet.tmp").write_bytes(b"half a part")
    (out / "_skipped-00009.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match="--resume"):
        embed_files(gqa, [str(path)], str(out), id_column="id")
    progress = embed_files(gqa, [str(path)], str(out), id_column="id", batch_size=10, resume=True)
    table = read_parts(out)
    assert progress.vectors == len(table) == len(TEXTS)
    assert table.column("id").to_pylist() == [f"doc-{i}" for i in range(len(TEXTS))]
    np.testing.assert_array_equal(vectors_of(table), gqa.encode(TEXTS))
    assert not list(out.glob("*.tmp")) and not (out / "_skipped-00009.jsonl").exists()


def test_resume_refuses_another_job(gqa, tmp_path):
    path = write_inputs(tmp_path, TEXTS[:10])["txt"]
    out = tmp_path / "out"
    embed_files(gqa, [str(path)], str(out))
    with pytest.raises(ValueError, match="request differ"):
        embed_files(gqa, [str(path)], str(out), request={"dimensions": 8}, resume=True)


def test_npy_output_with_ids_and_compact_precision(gqa, tmp_path):
    path = write_inputs(tmp_path, TEXTS)["jsonl"]
    out = tmp_path / "vectors.npy"
    embed_files(gqa, [str(path)], str(out), id_column="id", request={"precision": "ubinary"}, part_bytes=256)
    matrix = np.load(out)
    assert matrix.dtype == np.uint8 and matrix.shape == (len(TEXTS), 8)
    np.testing.assert_array_equal(matrix, gqa.encode(TEXTS, precision="ubinary"))
    assert pq.read_table(tmp_path / "vectors.ids.parquet").column("id").to_pylist()[:2] == ["doc-0", "doc-1"]
    assert not (tmp_path / "vectors.npy.parts").exists()


def test_missing_column_names_the_columns_there(gqa, tmp_path):
    path = write_inputs(tmp_path, TEXTS[:5])["parquet"]
    with pytest.raises(ValueError, match="no column 'body'.*'id', 'text'"):
        embed_files(gqa, [str(path)], str(tmp_path / "out"), text_column="body")


def test_command_line(tmp_path):
    path = write_inputs(tmp_path, TEXTS[:20])["csv"]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "candle_embed.cli", "embed-file", str(path), "-o", str(out), "-m", str(GQA),
               "--id-column", "id", "--precision", "int8", "--calibration-rows", "10", "--dimensions", "32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert "20 texts" in done.stderr and "tokens/s" in done.stderr and "0 rows skipped" in done.stderr
    table = read_parts(out)
    assert table.column("embedding").type.value_type == pa.int8() and table.column("embedding").type.list_size == 32
    job = json.loads((out / "_job.json").read_text())
    assert job["request"]["precision"] == "int8" and len(job["request"]["ranges"]) == 2
