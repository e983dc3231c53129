"""Loading by hub id, up to the network boundary: nothing here talks to the real hub.

A fake Hugging Face cache is laid out in tmp_path the way huggingface_hub writes it:

    <cache>/models--Qwen--Qwen3-Embedding-0.6B/refs/main          -> "<commit>"
    <cache>/models--Qwen--Qwen3-Embedding-0.6B/snapshots/<commit>/ -> symlinks into ../../blobs/
    <cache>/models--Qwen--Qwen3-Embedding-0.6B/blobs/<sha256>      -> the file contents

Environment variables are set with monkeypatch (os.environ reaches Rust's std::env and is restored
after each test); every HF_* variable of the surrounding environment is removed first.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from candle_embed import CandleEmbedError, EmbeddingRequest, Runner, Which

MODELS = Path(__file__).parent / "fixtures" / "models"
MODEL_ID = "Qwen/Qwen3-Embedding-0.6B"
SHARDED_ID = "tiny/sharded-embedding"
COMMIT = "4f2c1b9e0d8a7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
# A closed port: connections are refused at once, so "online" tests fail fast and never leave.
DEAD_ENDPOINT = "http://127.0.0.1:9"
TEXTS = ["hello", "What is the capital of France?"]


def add_to_cache(cache: Path, model_id: str, source: Path, commit: str = COMMIT, ref: str = "main") -> Path:
    """Puts the files of `source` into `cache` as huggingface_hub would; returns the snapshot dir."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit, encoding="utf-8")
    return snapshot


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf-cache")
    add_to_cache(root, MODEL_ID, MODELS / "gqa-bf16")
    add_to_cache(root, SHARDED_ID, MODELS / "mha-f32-sharded")
    return root


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("HF_"):
            monkeypatch.delenv(name)
    # Never the user's real cache or token, even where a test sets no cache of its own.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "unused-hf-home"))


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    """The vectors of TEXTS when the fixture directory is loaded directly."""
    runner = Runner(which=Which.Embedding(model_id=str(MODELS / "gqa-bf16")))
    return runner.send_embedding_request(EmbeddingRequest(input=TEXTS))


def embed_hub(model_id: str = MODEL_ID, **which) -> np.ndarray:
    runner = Runner(which=Which.Embedding(model_id=model_id, **which))
    assert runner.info["model_id"] == model_id
    return runner.send_embedding_request(EmbeddingRequest(input=TEXTS))


# --- offline, from the cache -----------------------------------------------------------------


def test_offline_with_hf_cache_path(monkeypatch, cache, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = Runner(which=Which.Embedding(model_id=MODEL_ID, hf_cache_path=str(cache)))
    # The same files through the cache: the very same vectors.
    np.testing.assert_array_equal(runner.send_embedding_request(EmbeddingRequest(input=TEXTS)), expected)
    # config_sentence_transformers.json was found in the snapshot too.
    assert runner.info["prompt_names"] == ["document", "query"]


def test_offline_with_hf_home(monkeypatch, tmp_path, expected):
    home = tmp_path / "hf-home"
    add_to_cache(home / "hub", MODEL_ID, MODELS / "gqa-bf16")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    np.testing.assert_array_equal(embed_hub(), expected)


def test_offline_with_hf_hub_cache(monkeypatch, cache, expected):
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    np.testing.assert_array_equal(embed_hub(), expected)


def test_hf_cache_path_wins_over_hf_hub_cache(monkeypatch, tmp_path, cache, expected):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    np.testing.assert_array_equal(embed_hub(hf_cache_path=cache), expected)


def test_offline_sharded_checkpoint(monkeypatch, cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    direct = Runner(which=Which.Embedding(model_id=str(MODELS / "mha-f32-sharded")))
    want = direct.send_embedding_request(EmbeddingRequest(input=TEXTS))
    # The index is read from the cache and both shards are found through it.
    np.testing.assert_array_equal(embed_hub(SHARDED_ID, hf_cache_path=cache), want)


def test_offline_named_revision(monkeypatch, tmp_path, expected):
    root = tmp_path / "cache"
    add_to_cache(root, MODEL_ID, MODELS / "gqa-bf16", ref="v1.0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    np.testing.assert_array_equal(embed_hub(hf_cache_path=root, revision="v1.0"), expected)


def test_offline_commit_revision(monkeypatch, cache, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    np.testing.assert_array_equal(embed_hub(hf_cache_path=cache, revision=COMMIT), expected)


def test_env_set_in_a_subprocess(cache, expected, tmp_path):
    """The same through a fresh interpreter whose environment is set before candle_embed loads."""
    script = (
        "import sys, numpy as np\n"
        "from candle_embed import EmbeddingRequest, Runner, Which\n"
        "runner = Runner(which=Which.Embedding(model_id=sys.argv[1]))\n"
        "np.save(sys.argv[2], runner.send_embedding_request(EmbeddingRequest(input=sys.argv[3:])))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = tmp_path / "vectors.npy"
    done = subprocess.run(
        [sys.executable, "-c", script, MODEL_ID, str(out), *TEXTS],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(out), expected)


# --- offline, not in the cache ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "revision"),
    [(MODEL_ID, "v2"), ("Qwen/Not-In-Cache", None)],
    ids=["unknown-revision", "unknown-model"],
)
def test_offline_missing_from_cache(monkeypatch, cache, model_id, revision):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        Runner(which=Which.Embedding(model_id=model_id, revision=revision, hf_cache_path=str(cache)))
    message = str(err.value)
    for part in ("`config.json`", f"`{model_id}`", "not in the Hugging Face cache", str(cache), "HF_HUB_OFFLINE"):
        assert part in message, message


def test_offline_missing_weights_in_cache(monkeypatch, tmp_path):
    root = tmp_path / "cache"
    snapshot = add_to_cache(root, MODEL_ID, MODELS / "gqa-bf16")
    (snapshot / "model.safetensors").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        Runner(which=Which.Embedding(model_id=MODEL_ID, hf_cache_path=str(root)))
    assert "`model.safetensors`" in str(err.value)
    assert "HF_HUB_OFFLINE" in str(err.value)


# --- online, with the hub unreachable --------------------------------------------------------


def test_unreachable_hub_and_empty_cache_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    started = time.monotonic()
    with pytest.raises(CandleEmbedError) as err:
        Runner(which=Which.Embedding(model_id=MODEL_ID, hf_cache_path=str(tmp_path / "empty")))
    # A refused connection is reported at once, not after retries or a long timeout.
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert f"`{MODEL_ID}`" in message and "Hugging Face hub" in message, message


def test_unreachable_hub_falls_back_to_the_cache(monkeypatch, cache, expected):
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    np.testing.assert_array_equal(embed_hub(hf_cache_path=cache), expected)


def test_offline_flag_values(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=0 is online (and so tries the dead endpoint), as in huggingface_hub."""
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(CandleEmbedError) as err:
        Runner(which=Which.Embedding(model_id=MODEL_ID, hf_cache_path=str(tmp_path / "empty")))
    assert "repository listing" in str(err.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        Runner(which=Which.Embedding(model_id=MODEL_ID, hf_cache_path=str(tmp_path / "empty")))
    assert "HF_HUB_OFFLINE is set" in str(err.value)


def test_a_path_that_is_not_a_hub_id_is_not_looked_up(monkeypatch, tmp_path):
    # "a/b/c" is no hub id: a missing local directory, whatever the hub settings.
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    missing = tmp_path / "a" / "b"
    with pytest.raises(FileNotFoundError) as err:
        Runner(which=Which.Embedding(model_id=str(missing)))
    assert str(missing) in str(err.value)


def test_cache_layout_helper_matches_huggingface_hub(cache):
    """The fake cache is read the same way by huggingface_hub itself, when it is installed."""
    hub = pytest.importorskip("huggingface_hub")
    found = hub.try_to_load_from_cache(MODEL_ID, "config.json", cache_dir=str(cache))
    assert isinstance(found, str)
    assert Path(found).read_bytes() == (MODELS / "gqa-bf16" / "config.json").read_bytes()
