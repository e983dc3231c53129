"""The OpenAPI document against the live server: schemathesis (`--checks all`) draws bodies from
`/openapi.json` and fails on any valid body refused, invalid body accepted, response that breaks
its schema, undeclared status or 5xx. Once with the embedding model and a reranker served and no
key, once with an API key (security declared, 401 listed).

The seed is fixed so that a CI run is repeatable; CANDLE_EMBED_SCHEMATHESIS_SEED and
CANDLE_EMBED_SCHEMATHESIS_EXAMPLES widen a run by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixture_models import GQA, MODELS
from test_server import Server

HERE = Path(__file__).resolve().parent
SEED = os.environ.get("CANDLE_EMBED_SCHEMATHESIS_SEED", "20261202")
EXAMPLES = int(os.environ.get("CANDLE_EMBED_SCHEMATHESIS_EXAMPLES", "60"))


def schemathesis_cli() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    # scripts/test.sh installs it; a missing tool is a broken setup, not a reason to skip.
    assert found, "schemathesis is not installed (pip install schemathesis; scripts/test.sh does)"
    return found


def run_schemathesis(server: Server, workdir: Path, examples: int, *extra: str) -> None:
    env = dict(os.environ, SCHEMATHESIS_HOOKS="schemathesis_hooks", CANDLE_EMBED_SCHEMATHESIS_MODEL=str(GQA),
               PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [schemathesis_cli(), "run", f"{server.base}/openapi.json", "--checks", "all",
           "--max-examples", str(examples), "--seed", SEED, "--no-color", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=900, check=False)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-20000:]
    assert "No issues found" in report, report[-5000:]


@pytest.fixture(scope="module")
def selector(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("schemathesis") / "selector.json"
    path.write_text(json.dumps({
        "embed": {"Embedding": {"model_id": str(GQA)}},
        "rerank": {"Reranker": {"model_id": str(MODELS / "reranker-tied"), "dtype": "f32"}},
    }))
    return path


def test_the_document_matches_the_server(selector, tmp_path):
    server = Server("--config", str(selector))
    try:
        run_schemathesis(server, tmp_path, EXAMPLES)
    finally:
        server.stop()


def test_the_document_matches_the_server_with_a_key(selector, tmp_path):
    server = Server("--config", str(selector), "--api-key", "sekret")
    try:
        run_schemathesis(server, tmp_path, max(EXAMPLES // 3, 10), "-H", "Authorization: Bearer sekret")
    finally:
        server.stop()
