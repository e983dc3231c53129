"""Every way a call can go wrong raises the right exception type with a message a user can act on.

Bad arguments are ValueError (TypeError for an input of the wrong type), missing files are
FileNotFoundError, and each message names the offending value and what was expected. Broken model
directories are built in tmp_path by copying a fixture and editing one file.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import candle_embed
from candle_embed import CandleEmbedError, EmbeddingRequest, Runner, Tokenizer, Which

from fixture_models import GQA, MQA, SHARDED, bf16_cpu_kernel, cpu_flags, embed, load


LONG_TEXT = "the quick brown fox jumps over the lazy dog " * 40


def says(err: pytest.ExceptionInfo, *parts: str) -> None:
    """The exception's message contains every one of `parts`."""
    message = str(err.value)
    missing = [p for p in parts if p not in message]
    assert not missing, f"message {message!r} lacks {missing}"


def full_length(text: str) -> int:
    """Tokens `text` takes with <|endoftext|>, counted by the standalone tokenizer (no limit)."""
    return len(Tokenizer(GQA / "tokenizer.json").encode(EmbeddingRequest(input=text))[0])


# --- the exception classes -------------------------------------------------------------------


def test_candle_embed_error_is_an_exported_runtime_error():
    assert issubclass(CandleEmbedError, RuntimeError)
    assert "CandleEmbedError" in candle_embed.__all__
    assert candle_embed.CandleEmbedError is candle_embed._native.CandleEmbedError
    # Caller mistakes are not CandleEmbedError, so `except ValueError` and this stay apart.
    assert not issubclass(CandleEmbedError, ValueError)


# --- request input ---------------------------------------------------------------------------


def test_empty_input_list(gqa):
    with pytest.raises(ValueError) as err:
        embed(gqa, input=[])
    says(err, "input is empty", "at least one")


@pytest.mark.parametrize(
    ("inputs", "index"),
    [("", 0), ([""], 0), (["a", ""], 1)],
    ids=["alone", "only-item", "second-item"],
)
def test_empty_string(gqa, inputs, index):
    with pytest.raises(ValueError) as err:
        embed(gqa, input=inputs)
    says(err, f"input {index}", "empty string", "at least one character")


@pytest.mark.parametrize(("inputs", "index"), [([[]], 0), ([[1, 2], []], 1)], ids=["only", "second"])
def test_empty_token_list(gqa, inputs, index):
    with pytest.raises(ValueError) as err:
        embed(gqa, input=inputs)
    says(err, f"input {index}", "empty list of token ids")


@pytest.mark.parametrize(
    ("inputs", "parts"),
    [
        (3, ["got an int", "str"]),
        (None, ["got a NoneType"]),
        ({"text": "a"}, ["got a dict", "list of str"]),
        (b"bytes", ["got a bytes"]),
        (["a", 3], ["input[1] is an int", "input[0] is a str"]),
        ([1, "a"], ["input[1] is a str", "int token id"]),
        ([1.5], ["input[0] is a float", "int token id"]),
        ([[1], ["a"]], ["input[1][0] is a str", "int token id"]),
    ],
    ids=["int", "none", "dict", "bytes", "str-then-int", "int-then-str", "float", "nested-str"],
)
def test_wrong_input_type(inputs, parts):
    with pytest.raises(TypeError) as err:
        EmbeddingRequest(input=inputs)
    # Every message also spells out what input may be.
    says(err, *parts, "a list of lists of int")


@pytest.mark.parametrize(
    ("inputs", "where"), [([1, -2], "input[1] = -2"), ([[1], [2, -5]], "input[1][1] = -5")], ids=["flat", "batch"]
)
def test_negative_token_id(inputs, where):
    with pytest.raises(ValueError) as err:
        EmbeddingRequest(input=inputs)
    says(err, where, "not a valid token id", ">= 0")


@pytest.mark.parametrize(("inputs", "where"), [([True], "input[0]"), ([[1, False]], "input[0][1]")], ids=["flat", "batch"])
def test_bool_is_not_a_token_id(inputs, where):
    # bool is an int subclass in Python; HTTP refuses `true` as a token id, and so does Python.
    with pytest.raises(TypeError) as err:
        EmbeddingRequest(input=inputs)
    says(err, f"{where} is a bool", "int token id")


def test_token_id_beyond_64_bits_is_named_by_value():
    with pytest.raises(ValueError) as err:
        EmbeddingRequest(input=[2**64])
    says(err, f"input[0] = {2**64}", "not a valid token id")


def test_token_id_beyond_32_bits():
    with pytest.raises(ValueError) as err:
        EmbeddingRequest(input=[1, 2**40])
    says(err, f"input[1] = {2**40}", "not a valid token id", "vocabulary size")


@pytest.mark.parametrize(
    ("inputs", "index", "bad"), [([1, 1024], 0, 1024), ([[1], [5, 1500]], 1, 1500)], ids=["flat", "batch"]
)
def test_token_id_outside_vocabulary(gqa, inputs, index, bad):
    for call in (gqa.send_embedding_request, gqa.tokenize):
        with pytest.raises(ValueError) as err:
            call(EmbeddingRequest(input=inputs))
        says(err, f"input {index}", f"token id {bad}", "vocabulary", "0..1024")


# --- output options --------------------------------------------------------------------------


@pytest.mark.parametrize("dimensions", [0, -1, -64])
def test_dimensions_not_positive(dimensions):
    with pytest.raises(ValueError) as err:
        EmbeddingRequest(input="a", dimensions=dimensions)
    says(err, "dimensions", "positive", f"got {dimensions}")


def test_dimensions_above_hidden_size(gqa):
    with pytest.raises(ValueError) as err:
        embed(gqa, input="a", dimensions=65)
    says(err, "dimensions", "between 1 and 64", "hidden size", "got 65")


# --- length and truncation -------------------------------------------------------------------


def test_truncation_side_unknown():
    with pytest.raises(ValueError) as err:
        EmbeddingRequest(input="a", truncation_side="middle")
    says(err, "truncation_side", '"left"', '"right"', '"middle"')


@pytest.mark.parametrize("tokens", [0, -2])
def test_truncate_prompt_tokens_not_positive(gqa, tokens):
    with pytest.raises(ValueError) as err:
        embed(gqa, input="a", truncate_prompt_tokens=tokens)
    says(err, "truncate_prompt_tokens", "-1 or a positive", f"got {tokens}")


def test_truncate_prompt_tokens_above_maximum(gqa):
    with pytest.raises(ValueError) as err:
        embed(gqa, input="a", truncate_prompt_tokens=129)
    says(err, "truncate_prompt_tokens (129)", "maximum input length (128)")


def test_too_long_input_names_both_lengths(gqa):
    total = full_length(LONG_TEXT)
    assert total > 128
    for call in (gqa.send_embedding_request, gqa.tokenize):
        with pytest.raises(ValueError) as err:
            call(EmbeddingRequest(input=["short", LONG_TEXT]))
        says(err, "input 1", f"has {total} tokens", "maximum of 128", "truncate_sequence", "truncate_prompt_tokens")


def test_too_long_input_succeeds_when_truncation_is_asked_for(gqa):
    by_flag = embed(gqa, input=[LONG_TEXT], truncate_sequence=True)
    by_tokens = embed(gqa, input=[LONG_TEXT], truncate_prompt_tokens=-1)
    assert by_flag.shape == by_tokens.shape == (1, 64)
    # Both mean "cut to the model maximum": the very same token ids, so the same vector.
    np.testing.assert_array_equal(by_flag, by_tokens)
    ids = gqa.tokenize(EmbeddingRequest(input=LONG_TEXT, truncate_sequence=True))
    assert len(ids[0]) == 128


def test_runner_max_length_caps_inputs():
    runner = load(GQA, max_length=16)
    assert runner.max_length == 16
    assert runner.info["max_length"] == 16
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
    total = full_length(text)
    assert 16 < total <= 128
    with pytest.raises(ValueError) as err:
        embed(runner, input=text)
    says(err, f"has {total} tokens", "maximum of 16")
    with pytest.raises(ValueError) as err:
        embed(runner, input=text, truncate_prompt_tokens=17)
    says(err, "truncate_prompt_tokens (17)", "(16)")
    assert len(runner.tokenize(EmbeddingRequest(input=text, truncate_sequence=True))[0]) == 16


def test_runner_max_length_above_model_maximum():
    with pytest.raises(ValueError) as err:
        load(GQA, max_length=129)
    says(err, "max_length 129", "max_position_embeddings (128)")


@pytest.mark.parametrize("value", [0, -1])
def test_runner_max_length_not_positive(value):
    with pytest.raises(ValueError) as err:
        load(GQA, max_length=value)
    says(err, "max_length", "positive", str(value))


@pytest.mark.parametrize("value", [0, -1])
def test_runner_max_batch_tokens_not_positive(value):
    with pytest.raises(ValueError) as err:
        load(GQA, max_batch_tokens=value)
    says(err, "max_batch_tokens", "positive", str(value))


# --- prompts ---------------------------------------------------------------------------------


def test_instruction_and_prompt_name_together(gqa):
    with pytest.raises(ValueError) as err:
        embed(gqa, input="a", instruction="Find documents", prompt_name="query")
    says(err, "instruction", "prompt_name", "not both")


def test_prompt_name_without_prompts_file(mqa):
    with pytest.raises(ValueError) as err:
        embed(mqa, input="a", prompt_name="query")
    says(err, '"query"', "config_sentence_transformers.json", "instruction=")


def test_unknown_prompt_name_lists_the_known_ones(gqa):
    with pytest.raises(ValueError) as err:
        embed(gqa, input="a", prompt_name="passage")
    says(err, '"passage"', '"document"', '"query"')


# --- model directory -------------------------------------------------------------------------


def copy_model(tmp_path: Path, source: Path = GQA) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def test_model_dir_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError) as err:
        load(missing)
    says(err, "model directory not found", str(missing))


def test_model_id_is_a_file():
    with pytest.raises(ValueError) as err:
        load(GQA / "config.json")
    says(err, str(GQA / "config.json"), "is a file", "directory")


@pytest.mark.parametrize(
    ("source", "name", "what"),
    [
        (GQA, "config.json", "config.json not found"),
        (GQA, "tokenizer.json", "tokenizer.json not found"),
        (GQA, "model.safetensors", "weights file not found"),
        (SHARDED, "model-00002-of-00002.safetensors", "weights file not found"),
    ],
    ids=["config", "tokenizer", "weights", "one-shard"],
)
def test_missing_file(tmp_path, source, name, what):
    model = copy_model(tmp_path, source)
    (model / name).unlink()
    with pytest.raises(FileNotFoundError) as err:
        load(model)
    says(err, what, str(model / name))


def test_tokenizer_json_override_that_does_not_exist(tmp_path):
    missing = tmp_path / "tokenizer.json"
    with pytest.raises(FileNotFoundError) as err:
        Runner(which=Which.Embedding(model_id=str(GQA), tokenizer_json=missing))
    says(err, "tokenizer.json not found", str(missing))


# --- config.json -----------------------------------------------------------------------------


def edit_config(model: Path, **changes) -> None:
    path = model / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    path.write_text(json.dumps(config), encoding="utf-8")


def test_config_not_json(tmp_path):
    model = copy_model(tmp_path)
    (model / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load(model)
    says(err, str(model / "config.json"), "not a valid Qwen3 config", "line 1")


def test_config_missing_required_field(tmp_path):
    model = copy_model(tmp_path)
    edit_config(model, hidden_size=None)
    with pytest.raises(ValueError) as err:
        load(model)
    says(err, str(model / "config.json"), "missing field `hidden_size`")


def test_config_of_another_model_type(tmp_path):
    model = copy_model(tmp_path)
    # Only model_type changes: the Qwen3 architecture name must not override it.
    edit_config(model, model_type="bert")
    with pytest.raises(ValueError) as err:
        load(model)
    says(err, str(model / "config.json"), "unsupported architecture", '"bert"', '"qwen3"')


@pytest.mark.parametrize(
    ("changes", "parts"),
    [
        ({"hidden_act": "gelu"}, ['hidden_act "gelu"', '"silu"']),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, ['rope_type "yarn"', '"default"']),
        ({"use_sliding_window": True}, ["use_sliding_window"]),
        ({"num_key_value_heads": 3}, ["num_attention_heads (4)", "num_key_value_heads (3)"]),
    ],
    ids=["hidden_act", "rope_scaling", "sliding_window", "kv_heads"],
)
def test_config_with_unsupported_settings(tmp_path, changes, parts):
    model = copy_model(tmp_path)
    edit_config(model, **changes)
    with pytest.raises(ValueError) as err:
        load(model)
    says(err, str(model / "config.json"), *parts)


# --- tokenizer.json and config_sentence_transformers.json --------------------------------------


@pytest.mark.parametrize("text", ["not json at all", '{"version": "1.0", "model": {"type": "Nope"}}'])
def test_tokenizer_json_not_valid(tmp_path, text):
    model = copy_model(tmp_path)
    (model / "tokenizer.json").write_text(text, encoding="utf-8")
    for make in (lambda: load(model), lambda: Tokenizer(model / "tokenizer.json")):
        with pytest.raises(ValueError) as err:
            make()
        says(err, str(model / "tokenizer.json"), "not a valid tokenizer.json")


def test_tokenizer_without_endoftext(tmp_path):
    model = copy_model(tmp_path, MQA)
    path = model / "tokenizer.json"
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    for token in tokenizer["added_tokens"]:
        if token["content"] == "<|endoftext|>":
            token["content"] = "<|end|>"
    path.write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load(model)
    says(err, str(path), "no <|endoftext|> token")


def test_tokenizer_class_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        Tokenizer(tmp_path / "tokenizer.json")
    says(err, "tokenizer.json not found", str(tmp_path / "tokenizer.json"))


def test_prompts_file_not_valid(tmp_path):
    model = copy_model(tmp_path)
    (model / "config_sentence_transformers.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load(model)
    says(err, str(model / "config_sentence_transformers.json"))


# --- weights ---------------------------------------------------------------------------------
# safetensors by hand (the `safetensors` package is not a test dependency): an 8-byte little-endian
# header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw tensor bytes.

ITEM_TYPES = {"BF16": np.uint16, "F16": np.uint16, "F32": np.uint32}


def read_safetensors(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    blob = path.read_bytes()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    metadata = header.pop("__metadata__", {})
    data = blob[8 + header_len :]
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        # Raw bit patterns in an integer type of the same width: enough to slice and reshape.
        raw = np.frombuffer(data[start:end], dtype=ITEM_TYPES[entry["dtype"]])
        tensors[name] = (entry["dtype"], raw.reshape(entry["shape"]))
    return metadata, tensors


def write_safetensors(path: Path, metadata: dict, tensors: dict) -> None:
    header: dict = {"__metadata__": metadata} if metadata else {}
    chunks, offset = [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def test_rewritten_weights_are_unchanged(tmp_path, gqa):
    """The helpers above round-trip a checkpoint, so the failures below come from the edits."""
    model = copy_model(tmp_path)
    weights = model / "model.safetensors"
    write_safetensors(weights, *read_safetensors(weights))
    np.testing.assert_array_equal(embed(load(model), input="hello"), embed(gqa, input="hello"))


def edit_weights(tmp_path: Path, edit) -> Path:
    """A copy of the fixture model whose tensors (a name -> (dtype, array) dict) `edit` changed."""
    model = copy_model(tmp_path)
    weights = model / "model.safetensors"
    metadata, tensors = read_safetensors(weights)
    edit(tensors)
    write_safetensors(weights, metadata, tensors)
    return model


# Both loaders: candle's memory-mapped VarBuilder (f32) and the bf16 path's tensor reader (our
# kernels on CPUs with AMX, AVX512-BF16 or AVX2; the reference kernels elsewhere).
LOADERS = pytest.mark.parametrize("dtype", ["f32", "bf16"])


def load_as(model: Path, dtype: str, monkeypatch) -> Runner:
    if dtype == "bf16" and bf16_cpu_kernel() is None:
        monkeypatch.setenv("CANDLE_EMBED_CPU_KERNEL", "reference")
    return Runner(which=Which.Embedding(model_id=str(model), dtype=dtype))


@LOADERS
def test_weights_missing_a_tensor(tmp_path, dtype, monkeypatch):
    model = edit_weights(tmp_path, lambda tensors: tensors.pop("layers.1.self_attn.k_proj.weight"))
    with pytest.raises(ValueError) as err:
        load_as(model, dtype, monkeypatch)
    says(err, "loading weights", str(model), "layers.1.self_attn.k_proj.weight")


@LOADERS
def test_weights_with_a_wrong_shaped_tensor(tmp_path, dtype, monkeypatch):
    def narrow_up_proj(tensors):
        dtype, up = tensors["layers.0.mlp.up_proj.weight"]
        assert up.shape == (96, 64)
        tensors["layers.0.mlp.up_proj.weight"] = (dtype, up[:, :32])

    model = edit_weights(tmp_path, narrow_up_proj)
    with pytest.raises(ValueError) as err:
        load_as(model, dtype, monkeypatch)
    says(err, "layers.0.mlp.up_proj.weight", "[96, 64]", "[96, 32]")


@LOADERS
def test_weights_without_embed_tokens(tmp_path, dtype, monkeypatch):
    model = edit_weights(tmp_path, lambda tensors: tensors.pop("embed_tokens.weight"))
    with pytest.raises(ValueError) as err:
        load_as(model, dtype, monkeypatch)
    says(err, "embed_tokens.weight", "Qwen3 checkpoint")


@LOADERS
def test_weights_file_truncated(tmp_path, dtype, monkeypatch):
    model = copy_model(tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError) as err:
        load_as(model, dtype, monkeypatch)
    says(err, "loading weights", str(weights))


def test_weights_errors_leave_out_rust_backtraces(tmp_path):
    """With RUST_BACKTRACE=1 candle attaches a backtrace to its errors; it stays out of messages.

    A subprocess, because Rust reads RUST_BACKTRACE once per process.
    """
    model = copy_model(tmp_path)
    weights = model / "model.safetensors"
    metadata, tensors = read_safetensors(weights)
    del tensors["layers.1.self_attn.k_proj.weight"]
    write_safetensors(weights, metadata, tensors)
    script = (
        "import json, sys\n"
        "from candle_embed import Runner, Which\n"
        "try:\n"
        "    Runner(which=Which.Embedding(model_id=sys.argv[1]))\n"
        "except ValueError as err:\n"
        "    print(json.dumps(str(err)))\n"
    )
    env = {**os.environ, "RUST_BACKTRACE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(model)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout, "the broken checkpoint loaded without a ValueError"
    message = json.loads(done.stdout)
    assert "layers.1.self_attn.k_proj.weight" in message
    assert "\n" not in message and "candle_core::" not in message, message


# --- device and dtype ------------------------------------------------------------------------


def test_unknown_device():
    with pytest.raises(ValueError) as err:
        load(GQA, device="tpu")
    says(err, '"tpu"', '"cpu"', '"cuda:N"')


def test_device_ordinal_not_a_number():
    with pytest.raises(ValueError) as err:
        load(GQA, device="cuda:x")
    says(err, '"cuda:x"', "ordinal", '"cuda:0"')


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "metal"])
def test_gpu_device_on_a_cpu_only_build(device):
    # The wheels under test are built without the `cuda` / `metal` cargo features.
    with pytest.raises(ValueError) as err:
        load(GQA, device=device)
    kind = device.split(":")[0]
    says(err, f'"{device}"', f"no {kind} support", f"`{kind}` cargo feature")


@pytest.mark.parametrize("dtype", ["f16", "float16"])
def test_f16_on_cpu(dtype):
    with pytest.raises(ValueError) as err:
        Runner(which=Which.Embedding(model_id=str(GQA), dtype=dtype))
    says(err, f'"{dtype}"', "not supported on CPU", '"bf16"', '"f32"')


def test_bf16_on_cpu_without_a_bf16_kernel(monkeypatch):
    # "none" stands in for a CPU with none of AMX, AVX512-BF16, AVX-512F and AVX2.
    monkeypatch.setenv("CANDLE_EMBED_CPU_KERNEL", "none")
    with pytest.raises(ValueError) as err:
        Runner(which=Which.Embedding(model_id=str(GQA), dtype="bf16"))
    says(err, '"bf16"', "needs AMX, AVX512-BF16, AVX-512F or AVX2", '"f32"', "CANDLE_EMBED_CPU_KERNEL=reference")
    # dtype="auto" falls back to candle's f32 there.
    info = Runner(which=Which.Embedding(model_id=str(GQA))).info
    assert (info["dtype"], info["kernel"]) == ("f32", "candle")


def test_forced_kernel_that_is_not_a_kernel(monkeypatch):
    monkeypatch.setenv("CANDLE_EMBED_CPU_KERNEL", "sse9")
    with pytest.raises(ValueError) as err:
        Runner(which=Which.Embedding(model_id=str(GQA)))
    says(err, "CANDLE_EMBED_CPU_KERNEL", '"sse9"', '"amx"', '"avx512bf16"', '"avx512"', '"avx2"', '"reference"', '"none"')


@pytest.mark.parametrize("kernel", ["amx", "avx512bf16", "avx512", "avx2"])
def test_forced_kernel_the_cpu_lacks(monkeypatch, kernel):
    if {"amx": "amx_bf16", "avx512bf16": "avx512_bf16", "avx512": "avx512f", "avx2": "avx2"}[kernel] in cpu_flags():
        pytest.skip(f"this CPU has {kernel}; the refusal is for CPUs without it")
    monkeypatch.setenv("CANDLE_EMBED_CPU_KERNEL", kernel)
    with pytest.raises(ValueError) as err:
        Runner(which=Which.Embedding(model_id=str(GQA), dtype="bf16"))
    says(err, f"CANDLE_EMBED_CPU_KERNEL={kernel}", "cannot run")


def test_unknown_dtype():
    with pytest.raises(ValueError) as err:
        Runner(which=Which.Embedding(model_id=str(GQA), dtype="int8"))
    says(err, '"int8"', '"auto"', '"f32"', '"bf16"', '"f16"')
