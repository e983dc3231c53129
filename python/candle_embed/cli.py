"""The `candle-embed` command line: `candle-embed embed -m MODEL TEXT...` prints vectors as JSON;
`candle-embed embed-file INPUT... -o OUTPUT -m MODEL` embeds a corpus into Parquet or .npy;
`candle-embed rerank -m MODEL -q QUERY DOC...` ranks documents with a Qwen3-Reranker;
`candle-embed serve -m MODEL -p 1234` runs the OpenAI-compatible embeddings server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-0.6B"
DEFAULT_RERANKER = "Qwen/Qwen3-Reranker-0.6B"
PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="candle-embed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    embed = commands.add_parser("embed", help="embed texts and print the vectors as JSON")
    embed.add_argument("texts", nargs="+", metavar="TEXT", help="texts to embed")
    embed.add_argument("-m", "--model-id", default=DEFAULT_MODEL, help=f"local directory or hub id (default {DEFAULT_MODEL})")
    embed.add_argument("--instruction", help='task description; texts become "Instruct: ...\\nQuery:TEXT"')
    embed.add_argument("--prompt-name", help="a prompt from config_sentence_transformers.json, e.g. query")
    embed.add_argument("--dimensions", type=int, help="keep the first N values (Matryoshka)")
    embed.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
    embed.add_argument("--truncate", action="store_true", help="truncate inputs longer than the model maximum")
    embed.add_argument("--precision", default="float32", choices=PRECISIONS,
                       help="number type of the vectors (int8/uint8 need --ranges)")
    embed.add_argument("--ranges", type=Path, help="a .npy of shape (2, dimensions): each dimension's min and max")
    embed.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or metal")
    embed.add_argument("--dtype", default="auto", help="auto, f32, bf16 or f16")

    files = commands.add_parser(
        "embed-file",
        help="embed every row of JSONL / CSV / Parquet / text files (or folders) into Parquet or .npy",
        description="Embeds a corpus, streaming: memory stays bounded whatever its size. A Parquet "
        "output is a folder of parts (id, embedding); a .npy output is one matrix with "
        "<name>.ids.parquet beside it. Rows with no usable text are skipped and listed. Ctrl-C "
        "keeps what is done; --resume goes on from there.",
    )
    files.add_argument("inputs", nargs="+", metavar="INPUT", help=".jsonl, .csv, .parquet, .txt files or folders")
    files.add_argument("-o", "--output", required=True, help="a folder for Parquet parts, or a .npy file")
    files.add_argument("-m", "--model-id", default=DEFAULT_MODEL, help=f"local directory or hub id (default {DEFAULT_MODEL})")
    files.add_argument("--text-column", default="text", help="column (or JSON field) holding the text (default text)")
    files.add_argument("--id-column", help="column kept as each vector's id (default: the row number)")
    prompt = files.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-name", help="a prompt from config_sentence_transformers.json, e.g. query")
    prompt.add_argument("--instruction", help='task description; texts become "Instruct: ...\\nQuery:TEXT"')
    files.add_argument("--dimensions", type=int, help="keep the first N values (Matryoshka)")
    files.add_argument("--no-normalize", action="store_true", help="skip L2 normalization")
    files.add_argument("--precision", default="float32", choices=PRECISIONS, help="number type of the vectors")
    ranges = files.add_mutually_exclusive_group()
    ranges.add_argument("--ranges", type=Path, help="int8/uint8: a .npy of shape (2, dimensions), each dimension's min and max")
    ranges.add_argument("--calibration-rows", type=int, metavar="N",
                        help="int8/uint8: take the ranges from the float32 vectors of the first N rows")
    files.add_argument("--no-truncate", action="store_true",
                       help="skip texts longer than the model maximum instead of truncating them")
    files.add_argument("--batch-size", type=int,
                       help="texts per engine call (default: as many as take about two seconds)")
    files.add_argument("--resume", action="store_true", help="go on with the job already in OUTPUT")
    files.add_argument("--no-progress", action="store_true", help="no progress bar")
    files.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or metal")
    files.add_argument("--dtype", default="auto", help="auto, f32, bf16 or f16")
    rerank = commands.add_parser(
        "rerank",
        help="score documents against a query with a Qwen3-Reranker and print the ranking as JSON",
    )
    rerank.add_argument("documents", nargs="+", metavar="DOC", help="documents to score")
    rerank.add_argument("-m", "--model-id", default=DEFAULT_RERANKER,
                        help=f"local directory or hub id (default {DEFAULT_RERANKER})")
    rerank.add_argument("-q", "--query", required=True, help="the query")
    rerank.add_argument("--instruction", help="what relevance means (default: Qwen's web-search instruction)")
    rerank.add_argument("--top-n", type=int, help="print only the best N")
    rerank.add_argument("--max-length", type=int, help="longest pair in tokens (default 8192)")
    rerank.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or metal")
    rerank.add_argument("--dtype", default="auto", help="auto, f32, bf16 or f16")
    # The server's flags are parsed in Rust (the same parser as the candle-embed-server binary);
    # this entry only lists the command. `candle-embed serve --help` shows them.
    commands.add_parser(
        "serve",
        help="run the OpenAI-compatible /v1/embeddings server (see `candle-embed serve --help`)",
        add_help=False,
    )
    return parser


def _serve(argv: Sequence[str]) -> int:
    from . import _native

    try:
        _native.serve(list(argv))
    except RuntimeError as err:
        print(f"candle-embed serve: error: {err}", file=sys.stderr)
        return 1
    return 0


def _ranges(path: Optional[Path]):
    if path is None:
        return None
    import numpy as np

    return np.load(path).astype("float32").tolist()


def _embed(args: argparse.Namespace) -> int:
    from . import EmbeddingRequest, Runner, Which

    runner = Runner(which=Which.Embedding(model_id=args.model_id, dtype=args.dtype), device=args.device)
    request = EmbeddingRequest(
        input=list(args.texts),
        instruction=args.instruction,
        prompt_name=args.prompt_name,
        dimensions=args.dimensions,
        normalize=not args.no_normalize,
        truncate_sequence=args.truncate,
        precision=args.precision,
        ranges=_ranges(args.ranges),
    )
    vectors = runner.send_embedding_request(request)
    json.dump(vectors.tolist(), sys.stdout)
    sys.stdout.write("\n")
    return 0


def _rerank(args: argparse.Namespace) -> int:
    from . import Runner, Which

    runner = Runner(which=Which.Reranker(model_id=args.model_id, dtype=args.dtype), device=args.device,
                    max_length=args.max_length)
    result = runner.rerank(args.query, args.documents, instruction=args.instruction, top_n=args.top_n,
                           return_documents=True)
    json.dump(result.results, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def _embed_file(args: argparse.Namespace) -> int:
    from . import Runner, Which, calibration_ranges
    from .files import embed_files, input_files, read_rows, skip_reason

    def log(message: str) -> None:
        print(f"candle-embed: {message}", file=sys.stderr)

    runner = Runner(which=Which.Embedding(model_id=args.model_id, dtype=args.dtype), device=args.device)
    request = dict(instruction=args.instruction, prompt_name=args.prompt_name, dimensions=args.dimensions,
                   normalize=not args.no_normalize, truncate_sequence=not args.no_truncate,
                   precision=args.precision, ranges=_ranges(args.ranges))
    if args.calibration_rows:
        sample = []
        for rows in read_rows(input_files(args.inputs), args.text_column, args.id_column):
            sample.extend(t for t in rows.texts if skip_reason(t) is None)
            if len(sample) >= args.calibration_rows:
                break
        float_options = {**request, "precision": "float32", "ranges": None}
        vectors = runner.encode(sample[: args.calibration_rows], **_encode_options(float_options))
        request["ranges"] = calibration_ranges(vectors).tolist()
        log(f"ranges from the float32 vectors of {min(len(sample), args.calibration_rows)} rows")
    progress = embed_files(runner, args.inputs, args.output, text_column=args.text_column,
                           id_column=args.id_column, request=request, batch_size=args.batch_size,
                           resume=args.resume, show_progress_bar=False if args.no_progress else None,
                           model=args.model_id, log=log)
    rate = progress.tokens / progress.seconds if progress.seconds else 0.0
    skipped = sum(progress.skipped.values())
    log(f"{progress.vectors} texts, {progress.tokens} tokens in {progress.seconds:.1f} s ({rate:,.0f} tokens/s); "
        f"{skipped} rows skipped" + "".join(f"\n  {n} × {reason}" for reason, n in sorted(progress.skipped.items())))
    return 0


def _encode_options(request: dict) -> dict:
    """EmbeddingRequest options as Runner.encode names them."""
    out = {k: v for k, v in request.items() if k not in ("truncate_sequence",)}
    out["truncate"] = request.get("truncate_sequence", False)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["serve"]:
        return _serve(words[1:])
    args = _parser().parse_args(words)
    try:
        if args.command == "embed":
            return _embed(args)
        if args.command == "embed-file":
            return _embed_file(args)
        if args.command == "rerank":
            return _rerank(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, ImportError) as err:
        print(f"candle-embed: error: {err}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
