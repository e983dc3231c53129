"""The Python API as users call it: the seed example, options, threads, batching and the CLI.

Numbers here are checked against the Runner itself (same input, another route); the parity with the
reference implementation lives in test_parity.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from candle_embed import EmbeddingArchitecture, EmbeddingRequest, Runner, Tokenizer, Which

from fixture_models import (
    GQA,
    MQA,
    bf16_cpu_kernel,
    embed,
    expected_cpu_kernel,
    f32_cpu_kernel,
    load,
    runnable_cpu_kernels,
)


TEXTS = [
    "Graphene is a single layer of carbon atoms.",
    "What is the capital of France?",
    "hello",
    "A somewhat longer sentence, with punctuation; numbers like 42 and 3.14; and words.",
]
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def eos_id(model_dir: Path) -> int:
    return Tokenizer(model_dir / "tokenizer.json").eos_id


# --- the seed example ------------------------------------------------------------------------


def test_seed_example_shape():
    runner = Runner(which=Which.Embedding(model_id=str(GQA), arch=EmbeddingArchitecture.Qwen3Embedding))
    request = EmbeddingRequest(input=["What is graphene?", "Graphene is a form of carbon."], truncate_sequence=True)
    embeddings = runner.send_embedding_request(request)
    assert isinstance(embeddings, np.ndarray)
    assert embeddings.dtype == np.float32
    assert embeddings.shape == (2, runner.hidden_size) == (2, 64)
    # The seed prints len(embeddings) and len(embeddings[0]).
    assert (len(embeddings), len(embeddings[0])) == (2, 64)
    assert embeddings.flags["C_CONTIGUOUS"]


def test_single_string_gives_one_row(gqa):
    one = embed(gqa, input="hello")
    assert one.shape == (1, 64)
    np.testing.assert_array_equal(one, embed(gqa, input=["hello"]))


# --- normalization and dimensions ------------------------------------------------------------


@pytest.mark.parametrize("runner_name", ["gqa", "mqa"])
def test_vectors_have_unit_norm(request, runner_name):
    runner = request.getfixturevalue(runner_name)
    vectors = embed(runner, input=TEXTS)
    # float32 sum of squares over <= 64 values: rounding stays well below 1e-5.
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_normalize_false_gives_the_raw_vector(gqa):
    raw = embed(gqa, input=TEXTS, normalize=False)
    unit = embed(gqa, input=TEXTS)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert not np.allclose(norms, 1.0, atol=1e-3)
    # Normalizing afterwards in float32 differs from the engine's only by rounding.
    np.testing.assert_allclose(raw / norms, unit, atol=1e-6)


@pytest.mark.parametrize("dimensions", [1, 8, 32, 63, 64])
def test_dimensions_keep_a_renormalized_prefix(gqa, dimensions):
    full = embed(gqa, input=TEXTS)
    cut = embed(gqa, input=TEXTS, dimensions=dimensions)
    assert cut.shape == (len(TEXTS), dimensions)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    prefix = full[:, :dimensions]
    # Matryoshka: the first d values of the full vector, renormalized; float32 rounding only.
    np.testing.assert_allclose(cut, prefix / np.linalg.norm(prefix, axis=1, keepdims=True), atol=1e-6)


def test_dimensions_without_normalize_is_the_raw_prefix(gqa):
    raw = embed(gqa, input=TEXTS, normalize=False)
    np.testing.assert_array_equal(embed(gqa, input=TEXTS, normalize=False, dimensions=8), raw[:, :8])


# --- Runner.info and properties --------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (GQA, {"hidden_size": 64, "max_length": 128, "storage_dtype": "bf16", "tokenizer_appends_eos": True,
               "prompt_names": ["document", "query"]}),
        (MQA, {"hidden_size": 48, "max_length": 256, "storage_dtype": "f16", "tokenizer_appends_eos": False,
               "prompt_names": []}),
    ],
    ids=["gqa-bf16", "mqa-f16-prefix"],
)
def test_runner_info(request, model, expected):
    runner = request.getfixturevalue("gqa" if model == GQA else "mqa")
    info = runner.info
    kernel = expected_cpu_kernel()
    # dtype="auto": bf16 on our kernels where the CPU has AMX, AVX512-BF16, AVX-512F or AVX2,
    # else candle's f32.
    assert info["dtype"] == ("bf16" if kernel else "f32")
    assert info["kernel"] == (kernel or "candle")
    assert info["device"] == "cpu"
    assert info["model_id"] == str(model)
    assert info["architecture"] == "qwen3embedding"
    assert info["vocab_size"] == 1024
    assert info["max_batch_tokens"] == 8192
    for key, value in expected.items():
        assert info[key] == value, key
    assert runner.hidden_size == info["hidden_size"]
    assert runner.max_length == info["max_length"]
    assert Tokenizer(model / "tokenizer.json").appends_eos is expected["tokenizer_appends_eos"]
    assert repr(runner) == (
        f'Runner(model_id="{model}", device="cpu", dtype="{info["dtype"]}", kernel="{info["kernel"]}")'
    )


# --- tokenization ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", [GQA, MQA], ids=["appends-eos", "engine-appends-eos"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"instruction": INSTRUCTION},
        {"truncate_prompt_tokens": 5},
        {"truncate_prompt_tokens": 5, "truncation_side": "left"},
    ],
    ids=["plain", "instruction", "truncated-right", "truncated-left"],
)
def test_every_text_ends_with_endoftext(request, model, options):
    runner = request.getfixturevalue("gqa" if model == GQA else "mqa")
    eos = eos_id(model)
    rows = runner.tokenize(EmbeddingRequest(input=TEXTS, **options))
    assert len(rows) == len(TEXTS)
    for row in rows:
        assert row[-1] == eos
        assert eos not in row[:-1]
        if "truncate_prompt_tokens" in options:
            assert len(row) <= options["truncate_prompt_tokens"]
    # The standalone Tokenizer gives the same ids as the Runner.
    assert Tokenizer(model / "tokenizer.json").encode(EmbeddingRequest(input=TEXTS, **options)) == rows


def test_truncation_sides_keep_the_named_end(gqa):
    full = gqa.tokenize(EmbeddingRequest(input=TEXTS[3]))[0]
    right = gqa.tokenize(EmbeddingRequest(input=TEXTS[3], truncate_prompt_tokens=6))[0]
    left = gqa.tokenize(EmbeddingRequest(input=TEXTS[3], truncate_prompt_tokens=6, truncation_side="left"))[0]
    # Five content tokens plus <|endoftext|>: the first five, or the last five.
    assert right == full[:5] + full[-1:]
    assert left == full[-6:]


def test_prompt_name_matches_the_prompt_text(gqa):
    by_name = gqa.tokenize(EmbeddingRequest(input=TEXTS, prompt_name="query"))
    by_instruction = gqa.tokenize(EmbeddingRequest(input=TEXTS, instruction=INSTRUCTION))
    # The fixture's "query" prompt is Qwen's instruction format with the same task.
    assert by_name == by_instruction
    assert gqa.tokenize(EmbeddingRequest(input=TEXTS, prompt_name="document")) == gqa.tokenize(
        EmbeddingRequest(input=TEXTS)
    )


@pytest.mark.parametrize("model", [GQA, MQA], ids=["gqa-bf16", "mqa-f16-prefix"])
def test_token_ids_are_fed_as_given(request, model):
    runner = request.getfixturevalue("gqa" if model == GQA else "mqa")
    assert runner.tokenize(EmbeddingRequest(input=[5, 6, 7])) == [[5, 6, 7]]
    assert runner.tokenize(EmbeddingRequest(input=[[5, 6], [7], [8, 9, 10]])) == [[5, 6], [7], [8, 9, 10]]
    # No <|endoftext|> added to ids: the ids of a text give exactly the text's vector.
    ids = runner.tokenize(EmbeddingRequest(input=TEXTS))
    np.testing.assert_array_equal(embed(runner, input=ids), embed(runner, input=TEXTS))


def test_tuple_inputs(gqa):
    assert EmbeddingRequest(input=("a", "b")).input == ["a", "b"]
    assert EmbeddingRequest(input=(5, 6, 7)).input == [5, 6, 7]
    assert EmbeddingRequest(input=((5, 6), (7,))).input == [[5, 6], [7]]
    assert EmbeddingRequest(input=[(5, 6), [7]]).input == [[5, 6], [7]]
    np.testing.assert_array_equal(embed(gqa, input=tuple(TEXTS)), embed(gqa, input=TEXTS))
    assert gqa.tokenize(EmbeddingRequest(input=((5, 6), (7,)))) == [[5, 6], [7]]


# --- concurrency and batching ----------------------------------------------------------------


def test_threads_share_one_runner(gqa):
    requests = [
        EmbeddingRequest(input=TEXTS),
        EmbeddingRequest(input=TEXTS[::-1], dimensions=16),
        EmbeddingRequest(input=TEXTS[:2], instruction=INSTRUCTION),
        EmbeddingRequest(input=[[5, 6, 7], [8, 9]]),
    ]
    expected = [gqa.send_embedding_request(r) for r in requests]
    rounds = 5
    barrier = threading.Barrier(len(requests))
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(requests))}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=30)  # every thread enters the Runner at the same moment
                results[i].append(gqa.send_embedding_request(requests[i]))
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for i, want in enumerate(expected):
        assert len(results[i]) == rounds
        for got in results[i]:
            # Same request, same kernels: only rounding noise could differ.
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_small_token_budget_gives_the_same_vectors(gqa):
    small = load(GQA, max_batch_tokens=16)
    assert small.info["max_batch_tokens"] == 16
    inputs = TEXTS * 3
    lengths = [len(row) for row in gqa.tokenize(EmbeddingRequest(input=inputs))]
    # Several forward passes are needed, and one input alone is longer than the budget.
    assert sum(lengths) > 3 * 16 and max(lengths) > 16
    # Packing other sequences next to a row must not change it beyond float32 rounding.
    np.testing.assert_allclose(
        small.send_embedding_request(EmbeddingRequest(input=inputs)), embed(gqa, input=inputs), atol=1e-6
    )


# --- EmbeddingRequest and Which --------------------------------------------------------------


def test_request_defaults():
    request = EmbeddingRequest(input="hello")
    assert request.input == "hello"
    assert request.truncate_sequence is False
    assert request.dimensions is None
    assert request.normalize is True
    assert request.instruction is None
    assert request.prompt_name is None
    assert request.truncate_prompt_tokens is None
    assert request.truncation_side == "right"
    assert len(request) == 1


def test_request_getters_and_repr():
    request = EmbeddingRequest(
        input=["a", "b", "c"],
        truncate_sequence=True,
        dimensions=8,
        normalize=False,
        instruction="Find it",
        truncate_prompt_tokens=12,
        truncation_side="left",
    )
    assert request.input == ["a", "b", "c"]
    assert request.truncate_sequence is True
    assert request.dimensions == 8
    assert request.normalize is False
    assert request.instruction == "Find it"
    assert request.truncate_prompt_tokens == 12
    assert request.truncation_side == "left"
    assert len(request) == 3
    assert EmbeddingRequest(input="x", prompt_name="query").prompt_name == "query"
    text = repr(request)
    assert text.startswith("EmbeddingRequest(")
    for part in ['"a"', "dimensions: Some(8)", "normalize: false", '"Find it"', "Left"]:
        assert part in text, part


@pytest.mark.parametrize(
    ("inputs", "length"), [("a", 1), (["a", "b"], 2), ([1, 2, 3], 1), ([[1], [2], [3]], 3), ([], 0)]
)
def test_request_len(inputs, length):
    assert len(EmbeddingRequest(input=inputs)) == length


def test_request_is_read_only():
    request = EmbeddingRequest(input="a")
    with pytest.raises(AttributeError):
        request.normalize = False  # type: ignore[misc]


def test_which_fields():
    plain = Which.Embedding(model_id="Qwen/Qwen3-Embedding-0.6B")
    assert isinstance(plain, Which)
    assert plain.model_id == "Qwen/Qwen3-Embedding-0.6B"
    assert plain.arch is None
    assert plain.tokenizer_json is None
    assert plain.dtype == "auto"
    assert plain.revision is None
    assert plain.hf_cache_path is None

    full = Which.Embedding(
        model_id=str(GQA),
        arch=EmbeddingArchitecture.Qwen3Embedding,
        tokenizer_json=MQA / "tokenizer.json",
        dtype="f32",
        revision="v1",
        hf_cache_path="/somewhere",
    )
    assert full.arch == EmbeddingArchitecture.Qwen3Embedding
    assert Path(full.tokenizer_json) == MQA / "tokenizer.json"
    assert full.dtype == "f32"
    assert full.revision == "v1"
    assert Path(full.hf_cache_path) == Path("/somewhere")


def test_tokenizer_json_override(gqa):
    runner = Runner(which=Which.Embedding(model_id=str(GQA), tokenizer_json=str(MQA / "tokenizer.json")))
    # The override's <|endoftext|> handling is used, and the ids come out the same here.
    assert runner.info["tokenizer_appends_eos"] is False
    assert runner.tokenize(EmbeddingRequest(input=TEXTS)) == gqa.tokenize(EmbeddingRequest(input=TEXTS))


def test_explicit_dtype_equals_auto(gqa):
    # "auto" is exactly one of the explicit choices: bf16 on our kernels where the CPU has them.
    dtype = "bf16" if expected_cpu_kernel() else "f32"
    runner = Runner(which=Which.Embedding(model_id=str(GQA), dtype=dtype), device="cpu")
    np.testing.assert_array_equal(embed(runner, input=TEXTS), embed(gqa, input=TEXTS))


def test_forced_kernels_agree(monkeypatch):
    """Every bf16 kernel the CPU can run (AVX512-BF16, AVX-512F, AVX2, the portable reference)
    gives the vectors of the kernel dtype="bf16" picks by itself, up to the effects of f32
    summation order."""
    if bf16_cpu_kernel() is None:
        monkeypatch.setenv("CANDLE_EMBED_CPU_KERNEL", "reference")
    want = embed(Runner(which=Which.Embedding(model_id=str(GQA), dtype="bf16")), input=TEXTS)
    for kernel in runnable_cpu_kernels():
        monkeypatch.setenv("CANDLE_EMBED_CPU_KERNEL", kernel)
        runner = Runner(which=Which.Embedding(model_id=str(GQA), dtype="bf16"))
        assert runner.info["kernel"] == kernel
        # Same arithmetic, f32 sums in another order. Sums ~1e-7 apart can round to different
        # bf16 values where activations are re-rounded (2^-9 relative), which moves a unit vector
        # by up to ~1e-3 (measured: 6.6e-4); a wrong kernel would be off by the vectors' scale.
        np.testing.assert_allclose(embed(runner, input=TEXTS), want, atol=2e-3, rtol=0)


def test_bf16_runs_on_the_best_kernel_the_cpu_has():
    # dtype="bf16" runs the fastest family the CPU has, as "auto" does.
    kernel = bf16_cpu_kernel()
    if kernel is None:
        with pytest.raises(ValueError):
            Runner(which=Which.Embedding(model_id=str(GQA), dtype="bf16"))
        return
    info = Runner(which=Which.Embedding(model_id=str(GQA), dtype="bf16")).info
    assert (info["dtype"], info["kernel"]) == ("bf16", kernel)


def test_f32_runs_on_our_kernels_where_the_cpu_has_avx2():
    # dtype="f32": our decoder on the f32 loops (AVX-512F's on CPUs with AMX or AVX512-BF16,
    # AVX2's on AVX2-only ones), candle's ops on CPUs without AVX2.
    info = Runner(which=Which.Embedding(model_id=str(GQA), dtype="f32")).info
    assert (info["dtype"], info["kernel"]) == ("f32", f32_cpu_kernel())


# --- the command line ------------------------------------------------------------------------


def console_script() -> str | None:
    beside = Path(sys.executable).parent / "candle-embed"
    return str(beside) if beside.is_file() else shutil.which("candle-embed")


def run_cli(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # Run from an unrelated directory, so the installed package is imported.
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def cli_vectors(done: subprocess.CompletedProcess) -> np.ndarray:
    assert done.returncode == 0, done.stderr
    return np.asarray(json.loads(done.stdout), dtype=np.float32)


@pytest.mark.parametrize("entry", ["module", "console-script"])
def test_cli_embeds_like_the_runner(gqa, tmp_path, entry):
    if entry == "module":
        prefix = [sys.executable, "-m", "candle_embed.cli"]
    else:
        script = console_script()
        if script is None:
            pytest.skip("the candle-embed console script is not installed")
        prefix = [script]
    got = cli_vectors(run_cli([*prefix, "embed", "-m", str(GQA), "hello", "world"], tmp_path))
    assert got.shape == (2, 64)
    # JSON holds the float32 values as Python floats (exact), so only rounding could differ.
    np.testing.assert_allclose(got, embed(gqa, input=["hello", "world"]), atol=1e-6)


def test_cli_options(gqa, tmp_path):
    base = [sys.executable, "-m", "candle_embed.cli", "embed", "-m", str(GQA)]
    short = cli_vectors(run_cli([*base, "--dimensions", "8", "hello", "world"], tmp_path))
    assert short.shape == (2, 8)
    np.testing.assert_allclose(short, embed(gqa, input=["hello", "world"], dimensions=8), atol=1e-6)

    instructed = cli_vectors(run_cli([*base, "--instruction", INSTRUCTION, "hello"], tmp_path))
    np.testing.assert_allclose(instructed, embed(gqa, input=["hello"], instruction=INSTRUCTION), atol=1e-6)
    assert not np.allclose(instructed, embed(gqa, input=["hello"]), atol=1e-3)

    named = cli_vectors(run_cli([*base, "--prompt-name", "query", "hello"], tmp_path))
    np.testing.assert_allclose(named, embed(gqa, input=["hello"], prompt_name="query"), atol=1e-6)

    raw = cli_vectors(run_cli([*base, "--no-normalize", "hello"], tmp_path))
    np.testing.assert_allclose(raw, embed(gqa, input=["hello"], normalize=False), atol=1e-6)


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["-m", "{missing}", "hello"], ["model directory not found", "{missing}"]),
        (["-m", str(GQA), "--dimensions", "0", "hello"], ["dimensions", "got 0"]),
        (["-m", str(GQA), "--device", "tpu", "hello"], ['"tpu"']),
        (["-m", str(GQA), ""], ["empty string"]),
    ],
    ids=["missing-model", "dimensions", "device", "empty-text"],
)
def test_cli_errors_are_one_line_without_traceback(tmp_path, args, parts):
    missing = str(tmp_path / "no-such-model")
    args = [a.replace("{missing}", missing) for a in args]
    done = run_cli([sys.executable, "-m", "candle_embed.cli", "embed", *args], tmp_path)
    assert done.returncode != 0
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("candle-embed: error: ")
    for part in parts:
        assert part.replace("{missing}", missing) in done.stderr, done.stderr


def test_cli_help_works(tmp_path):
    done = run_cli([sys.executable, "-m", "candle_embed.cli", "embed", "--help"], tmp_path)
    assert done.returncode == 0
    assert "--dimensions" in done.stdout
