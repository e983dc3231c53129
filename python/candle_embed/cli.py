"""The `candle-embed` command line: `candle-embed embed -m MODEL TEXT...` prints vectors as JSON;
`candle-embed serve -m MODEL -p 1234` runs the OpenAI-compatible embeddings server."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-0.6B"


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
    embed.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or metal")
    embed.add_argument("--dtype", default="auto", help="auto, f32, bf16 or f16")
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
    )
    vectors = runner.send_embedding_request(request)
    json.dump(vectors.tolist(), sys.stdout)
    sys.stdout.write("\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["serve"]:
        return _serve(words[1:])
    args = _parser().parse_args(words)
    try:
        if args.command == "embed":
            return _embed(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"candle-embed: error: {err}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
