"""The README's examples run as written (against a fixture model instead of the hub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "fixtures" / "models" / "gqa-bf16"


def _run(*args: str) -> subprocess.CompletedProcess:
    # Run outside the checkout so the installed package is imported, as a user would.
    return subprocess.run(
        [sys.executable, *args], cwd=Path(os.sep), capture_output=True, text=True, timeout=120, check=False
    )


def test_python_quickstart() -> None:
    done = _run(str(ROOT / "examples" / "quickstart.py"), str(MODEL))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "64"]


def test_readme_command_one() -> None:
    done = _run(
        "-m", "candle_embed.cli", "embed", "-m", str(MODEL),
        "Graphene conductivity", "Explain superconductors in simple terms.",
    )
    assert done.returncode == 0, done.stderr
    vectors = json.loads(done.stdout)
    assert len(vectors) == 2 and all(len(v) == 64 for v in vectors)


def test_encode_example() -> None:
    done = _run(str(ROOT / "examples" / "encode.py"), str(MODEL))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(1000, 64) float32 True", "(1000, 8) uint8", "(1000, 64) int8"]


def test_rerank_example() -> None:
    done = _run(str(ROOT / "examples" / "rerank.py"), str(ROOT / "tests" / "fixtures" / "models" / "reranker-tied"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split(maxsplit=3) == ["float32", "2", "1", "['document', 'index', 'relevance_score']"]
