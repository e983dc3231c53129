"""Corpus jobs: files in, vectors out (`candle-embed embed-file`).

Inputs — `.jsonl`/`.ndjson`, `.csv`, `.parquet`, `.txt` (one text per line), or folders of them —
are read as a stream of rows numbered in order across the files (files sorted by name). Rows go to
the engine `batch_size` texts at a time (by default, as many as make a call of about two seconds),
with the same request options as `Runner.encode`.

The output is written in parts, each renamed into place only once complete: a Parquet output is a
folder of `part-NNNNN.parquet` files (one dataset to pyarrow, pandas, DuckDB, Spark), with the id
column and a fixed-size list column of vectors; a `.npy` output is assembled from its parts at the
end, with the ids beside it in `<name>.ids.parquet`. `_job.json` holds the job's settings (so a
resumed job is the same job); each part's metadata records how far the job got with it
(`_progress.json` repeats the latest): Ctrl-C flushes what is embedded and stops, a crash loses at
most the part being filled, and `--resume` goes on from the next row without recomputing or
repeating one. Rows with a missing, empty or non-text value are skipped, counted by reason, and
listed in `_skipped-NNNNN.jsonl` beside the part they belong to; over-long texts are truncated to
the model's maximum unless `truncate=False`, which skips them instead.

Memory stays bounded whatever the corpus size: one input batch (`READ_ROWS` rows), one engine call
(`batch_size` texts), and one part's vectors (`part_bytes`) are held at a time, beside the model.

Needs pyarrow (`pip install candle-embed[files]`).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._native import EmbeddingRequest

SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet", ".txt")
READ_ROWS = 4096  # rows read from a file at a time
JOB = "_job.json"
PROGRESS = "_progress.json"


def _pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:  # pragma: no cover - the message is the point
        raise ImportError("embed-file needs pyarrow: pip install 'candle-embed[files]'") from err
    import pyarrow as pa
    import pyarrow.csv  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    return pa


def input_files(inputs: Sequence[str]) -> List[Path]:
    """The files `inputs` name, folders expanded to their files with a known suffix (sorted)."""
    files: List[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise ValueError(f"{path}: unknown input type {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


@dataclass
class Rows:
    """A batch of input rows: their global numbers, ids and raw text values."""

    numbers: List[int]
    ids: List[Any]
    texts: List[Any]


def _columns_error(path: Path, column: str, present: Sequence[str]) -> ValueError:
    return ValueError(f"{path}: no column {column!r}; its columns are {', '.join(map(repr, present))}")


def read_rows(files: Sequence[Path], text_column: str, id_column: Optional[str], start: int = 0) -> Iterator[Rows]:
    """Every row of `files` from global row `start` on, in batches; a row's id is its id column's
    value, or its global row number."""
    number = 0
    for path in files:
        for numbers_texts_ids in _file_rows(path, text_column, id_column, skip=max(0, start - number)):
            first, texts, ids = numbers_texts_ids
            first += number
            count = len(texts)
            numbers = list(range(first, first + count))
            yield Rows(numbers, ids if ids is not None else list(numbers), texts)
        number += _row_count(path, text_column)


_COUNTS: Dict[Path, int] = {}


def _row_count(path: Path, text_column: str) -> int:
    """Rows in a file (read once, then remembered)."""
    if path not in _COUNTS:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            _COUNTS[path] = pq.ParquetFile(path).metadata.num_rows
        elif suffix == ".csv":
            _COUNTS[path] = sum(len(b) for b in _csv_batches(path, text_column, None))
        else:
            _COUNTS[path] = sum(1 for _ in _lines(path))
    return _COUNTS[path]


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="") as f:
        for line in f:
            yield line.rstrip("\r\n") if path.suffix.lower() == ".txt" else line


def _csv_batches(path: Path, text_column: str, id_column: Optional[str]):
    pa = _pyarrow()
    columns = [text_column] + ([id_column] if id_column else [])
    types = {c: pa.string() for c in columns}
    reader = pa.csv.open_csv(path, convert_options=pa.csv.ConvertOptions(column_types=types, include_columns=columns))
    for batch in reader:
        yield batch


def _file_rows(path: Path, text_column: str, id_column: Optional[str], skip: int):
    """(index of the first row in the file, texts, ids or None) for each batch of `path`'s rows
    from row `skip` on."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        for column in [text_column] + ([id_column] if id_column else []):
            if column not in names:
                raise _columns_error(path, column, names)
        at = 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            if at + rows <= skip:  # whole row groups before the resume point are not read
                at += rows
                continue
            for batch in parquet.iter_batches(batch_size=READ_ROWS, row_groups=[group],
                                              columns=[text_column] + ([id_column] if id_column else [])):
                yield from _slice(at, batch.column(0).to_pylist(),
                                  batch.column(1).to_pylist() if id_column else None, skip)
                at += batch.num_rows
    elif suffix == ".csv":
        at = 0
        try:
            for batch in _csv_batches(path, text_column, id_column):
                names = batch.schema.names
                yield from _slice(at, batch.column(names.index(text_column)).to_pylist(),
                                  batch.column(names.index(id_column)).to_pylist() if id_column else None, skip)
                at += batch.num_rows
        except Exception as err:  # pyarrow names a missing column in its own words
            if "include_columns" in str(err) or "not found" in str(err).lower():
                header = open(path, encoding="utf-8").readline().rstrip("\r\n").split(",")
                missing = next(c for c in [text_column, id_column] if c and c not in header)
                raise _columns_error(path, missing, header) from None
            raise
    else:
        jsonl = suffix in (".jsonl", ".ndjson")
        texts: List[Any] = []
        ids: List[Any] = []
        first = skip
        for at, line in enumerate(_lines(path)):
            if at < skip:
                continue
            if jsonl:
                text, ident = _json_row(line, text_column, id_column)
            else:
                text, ident = line, None
            texts.append(text)
            ids.append(ident)
            if len(texts) == READ_ROWS:
                yield first, texts, ids if id_column else None
                first, texts, ids = at + 1, [], []
        if texts:
            yield first, texts, ids if id_column else None


class _Bad:
    """A row value that is no text, and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _json_row(line: str, text_column: str, id_column: Optional[str]) -> Tuple[Any, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return _Bad(f"not valid JSON ({err.msg})"), None
    if not isinstance(row, dict):
        return _Bad(f"a JSON {type(row).__name__}, not an object"), None
    if text_column not in row:
        return _Bad(f"no {text_column!r} field"), row.get(id_column) if id_column else None
    return row[text_column], row.get(id_column) if id_column else None


def _slice(at: int, texts: List[Any], ids: Optional[List[Any]], skip: int):
    if at + len(texts) <= skip:
        return
    cut = max(0, skip - at)
    yield at + cut, texts[cut:], ids[cut:] if ids is not None else None


def skip_reason(text: Any) -> Optional[str]:
    """Why a row's value cannot be embedded, or None."""
    if isinstance(text, _Bad):
        return text.reason
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    if not text:
        return "empty text"
    return None


@dataclass
class Settings:
    """What makes two runs the same job (checked on --resume)."""

    inputs: List[str]
    text_column: str
    id_column: Optional[str]
    model: str
    output_format: str
    request: Dict[str, Any]


@dataclass
class Progress:
    rows_done: int = 0
    vectors: int = 0
    tokens: int = 0
    seconds: float = 0.0
    parts: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


PART_META = b"candle_embed.progress"


class _Parts:
    """The parts folder. A part is the job's one commit point: its Parquet metadata carries the
    progress up to and including it, and it is renamed into place only once written (after the
    list of rows it skipped), so whatever a crash interrupts, the parts on disk agree."""

    def __init__(self, folder: Path, progress: Progress, dtype: np.dtype, width: int) -> None:
        self.folder = folder
        self.progress = progress
        self.dtype = np.dtype(dtype)
        self.width = width
        self.ids: List[Any] = []
        self.vectors: List[np.ndarray] = []
        self.buffered = 0
        self.skipped: List[dict] = []

    def add(self, ids: List[Any], vectors: np.ndarray) -> None:
        self.ids.extend(ids)
        self.vectors.append(vectors)
        self.buffered += vectors.nbytes

    def skip(self, number: int, ident: Any, reason: str, kind: Optional[str] = None) -> None:
        """Lists the row with its exact reason; the summary counts rows by `kind` (the reason
        without its row-specific numbers) so it stays a short table."""
        self.skipped.append({"row": number, "id": ident, "reason": reason})
        kind = kind or reason
        self.progress.skipped[kind] = self.progress.skipped.get(kind, 0) + 1

    def flush(self, rows_done: int) -> None:
        """Writes what is buffered as the next part, recording that `rows_done` input rows are
        accounted for."""
        if rows_done == self.progress.rows_done:
            return
        pa = _pyarrow()
        import pyarrow.parquet as pq

        matrix = np.concatenate(self.vectors) if self.vectors else np.empty((0, self.width), self.dtype)
        try:
            ids = pa.array(self.ids)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # ids of mixed types: kept as their text
            ids = pa.array([None if i is None else str(i) for i in self.ids], pa.string())
        if len(ids) == 0:
            ids = pa.array([], pa.int64())
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), self.width)
        self.progress.rows_done = rows_done
        self.progress.vectors += len(matrix)
        name = f"part-{self.progress.parts:05d}"
        self.progress.parts += 1
        if self.skipped:
            with open(self.folder / f"_skipped-{name[5:]}.jsonl", "w", encoding="utf-8") as f:
                for row in self.skipped:
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        table = pa.table({"id": ids, "embedding": embedding})
        table = table.replace_schema_metadata({PART_META: json.dumps(asdict(self.progress)).encode()})
        tmp = self.folder / f"{name}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.folder / f"{name}.parquet")
        _write_json(self.folder / PROGRESS, asdict(self.progress))
        self.ids, self.vectors, self.buffered, self.skipped = [], [], 0, []


def embed_files(
    runner,
    inputs: Sequence[str],
    output: str,
    *,
    text_column: str = "text",
    id_column: Optional[str] = None,
    request: Optional[Dict[str, Any]] = None,
    batch_size: Optional[int] = None,
    part_bytes: int = 64 << 20,
    resume: bool = False,
    show_progress_bar: Optional[bool] = None,
    model: str = "",
    log=print,
) -> Progress:
    """Embeds the rows of `inputs` into `output` (a folder of Parquet parts, or a `.npy` file);
    `request`: the EmbeddingRequest options for every text. Returns the final progress."""
    files = input_files(inputs)
    out = Path(output)
    npy = out.suffix.lower() == ".npy"
    folder = out.with_name(out.name + ".parts") if npy else out
    options = dict(request or {})
    settings = Settings([str(p) for p in files], text_column, id_column, model,
                        "npy" if npy else "parquet", options)
    progress = _start(folder, out if npy else None, settings, resume)
    precision = options.get("precision", "float32")
    from .runner import DTYPES, _native_width, _Sizer

    sizer = _Sizer(batch_size)

    width = _native_width(runner, options.get("dimensions"), precision)
    parts = _Parts(folder, progress, DTYPES[precision], width)

    total = sum(_row_count(p, text_column) for p in files)
    bar = None
    import sys

    if show_progress_bar if show_progress_bar is not None else sys.stderr.isatty():
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=progress.rows_done, unit="row", desc="Embedding", file=sys.stderr)
        except ImportError:
            pass
    started = time.perf_counter() - progress.seconds
    rows_done = progress.rows_done
    try:
        for rows in read_rows(files, text_column, id_column, start=progress.rows_done):
            lo = 0
            while lo < len(rows.texts):
                hi = lo + sizer.size
                numbers = rows.numbers[lo:hi]
                call = time.perf_counter()
                _embed_batch(runner, parts, numbers, rows.ids[lo:hi], rows.texts[lo:hi], options)
                sizer.took(len(numbers), time.perf_counter() - call)
                lo = hi
                rows_done = numbers[-1] + 1
                progress.seconds = time.perf_counter() - started
                if bar is not None:
                    bar.update(len(numbers))
                    bar.set_postfix_str(f"{progress.tokens / max(progress.seconds, 1e-9):,.0f} tokens/s", refresh=False)
                if parts.buffered >= part_bytes:
                    parts.flush(rows_done)
    except KeyboardInterrupt:
        progress.seconds = time.perf_counter() - started
        parts.flush(rows_done)
        if bar is not None:
            bar.close()
        log(f"interrupted after {rows_done} of {total} rows; the output holds them. Run again with --resume to go on.")
        raise
    progress.seconds = time.perf_counter() - started
    parts.flush(rows_done)
    if bar is not None:
        bar.close()
    if npy:
        _assemble_npy(folder, out, progress, DTYPES[precision], width)
    return progress


def _embed_batch(runner, parts: _Parts, numbers, ids, texts, options) -> None:
    """One engine call for the batch's good rows; the rest (and any row the engine refuses) are
    skipped with the reason."""
    good = []
    for number, ident, text in zip(numbers, ids, texts):
        reason = skip_reason(text)
        if reason is None:
            good.append((number, ident, text))
        else:
            parts.skip(number, ident, reason)
    if not good:
        return
    try:
        vectors, tokens = runner._embed(EmbeddingRequest([t for _, _, t in good], **options))
    except ValueError:
        # One refused text (over-long without truncation, say) must not cost the others: find
        # it by embedding the rows one by one.
        kept, kept_vectors, tokens = [], [], 0
        for number, ident, text in good:
            try:
                v, t = runner._embed(EmbeddingRequest([text], **options))
            except ValueError as err:
                reason = str(err).split(";")[0].replace("input 0 ", "text ")
                parts.skip(number, ident, reason, re.sub(r"^text has \d+ tokens, more than", "text longer than", reason))
                continue
            kept.append(ident)
            kept_vectors.append(v)
            tokens += t
        if kept_vectors:
            parts.add(kept, np.concatenate(kept_vectors))
        parts.progress.tokens += tokens
        return
    parts.add([ident for _, ident, _ in good], vectors)
    parts.progress.tokens += tokens


def _start(folder: Path, npy: Optional[Path], settings: Settings, resume: bool) -> Progress:
    """A new job's empty folder, or a resumed job's progress (its settings checked)."""
    if npy is not None and npy.exists():
        if resume:
            raise ValueError(f"{npy} is complete already; nothing to resume")
        raise FileExistsError(f"{npy} exists; remove it or choose another output")
    job = folder / JOB
    if folder.exists() and any(folder.iterdir()):
        if not resume:
            raise FileExistsError(f"{folder} exists; pass --resume to go on with that job, or remove it")
        if not job.is_file():
            raise ValueError(f"{folder} is not a candle-embed job folder (no {JOB}); choose another output")
        before = json.loads(job.read_text(encoding="utf-8"))
        now = json.loads(json.dumps(asdict(settings)))
        changed = sorted(k for k in now if before.get(k) != now[k])
        if changed:
            raise ValueError(f"--resume: this job's {', '.join(changed)} differ from the one in {folder}; "
                             "resume it with the same inputs and options")
        return _resume_point(folder)
    if resume and not folder.exists():
        raise FileNotFoundError(f"--resume: there is no job at {folder} to resume")
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(job, asdict(settings))
    return Progress()


def _resume_point(folder: Path) -> Progress:
    """The progress the last complete part records; what a crash left half-done is removed."""
    import pyarrow.parquet as pq

    for stale in folder.glob("*.tmp"):
        stale.unlink()
    parts = sorted(folder.glob("part-*.parquet"))
    names = {p.name[len("part-"):-len(".parquet")] for p in parts}
    for orphan in folder.glob("_skipped-*.jsonl"):  # written before a part that never came
        if orphan.name[len("_skipped-"):-len(".jsonl")] not in names:
            orphan.unlink()
    if not parts:
        return Progress()
    meta = pq.read_schema(parts[-1]).metadata or {}
    return Progress(**json.loads(meta[PART_META]))


def _assemble_npy(folder: Path, out: Path, progress: Progress, dtype, width: int) -> None:
    """The parts, one after another, into `out` (memory-mapped, so memory stays bounded) and the
    ids into `<name>.ids.parquet`; the parts folder then goes."""
    import shutil

    import pyarrow.parquet as pq

    pa = _pyarrow()
    parts = sorted(folder.glob("part-*.parquet"))
    tmp = out.with_name(out.name + ".tmp.npy")
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(progress.vectors, width))
    at = 0
    writer = None
    ids_path = out.with_name(out.stem + ".ids.parquet")
    try:
        for part in parts:
            table = pq.read_table(part)
            values = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            rows = len(table)
            matrix[at : at + rows] = values.reshape(rows, width)
            at += rows
            ids = pa.table({"id": table.column("id")})
            if writer is None:
                writer = pq.ParquetWriter(ids_path, ids.schema)
            writer.write_table(ids)
    finally:
        if writer is not None:
            writer.close()
    matrix.flush()
    del matrix
    os.replace(tmp, out)
    skipped = sorted(folder.glob("_skipped-*.jsonl"))
    if skipped:
        with open(out.with_name(out.stem + ".skipped.jsonl"), "w", encoding="utf-8") as f:
            for path in skipped:
                f.write(path.read_text(encoding="utf-8"))
    shutil.rmtree(folder)
