"""Compact precisions against sentence-transformers' `quantize_embeddings`, recorded by
`scripts/make_quantize_fixtures.py`: our conversion of the same float32 vectors with the same ranges
gives the same integers and bytes, exactly; and a request's `precision=` is that conversion of its
float32 vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from candle_embed import EmbeddingRequest, calibration_ranges, quantize_embeddings

from fixture_models import embed

RECORDING = json.loads((Path(__file__).parent / "fixtures" / "expected" / "quantize.json").read_text(encoding="utf-8"))
TEXTS = ["Graphene conductivity", "Explain superconductors in simple terms.", "北京是中国的首都", "hello 😀"]


def floats(entry: dict) -> np.ndarray:
    """A recorded float32 array, from its bit patterns (the exact values)."""
    return np.asarray(entry["bits"], dtype=np.uint32).view(np.float32)


def inputs(name: str) -> np.ndarray:
    return floats(RECORDING["inputs"][name])


def recorded_cases(cases):
    return [pytest.param(c, id=c["id"]) for c in cases if "error" not in c]


@pytest.mark.parametrize("case", recorded_cases(RECORDING["cases"] + RECORDING["out_of_range_cases"]))
def test_equals_sentence_transformers(case):
    embeddings = inputs(case["input"])
    ranges = floats(case["ranges"]) if case["ranges"] is not None else None
    got = quantize_embeddings(embeddings, case["precision"], ranges=ranges)
    output = case["output"]
    want = floats(output) if isinstance(output, dict) else np.asarray(output).astype(case["output_dtype"])
    assert got.dtype == np.dtype(case["output_dtype"])
    assert got.shape == tuple(case["output_shape"])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", [c for c in RECORDING["cases"] if c["ranges_source"] == "calibration"], ids=lambda c: c["id"])
def test_calibration_ranges_are_sentence_transformers_ranges(case):
    np.testing.assert_array_equal(calibration_ranges(inputs(case["calibration"])), floats(case["ranges"]))


def test_float16_rounds_as_numpy():
    ref = RECORDING["float16_numpy"]
    got = quantize_embeddings(inputs(ref["input"]), "float16")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.view(np.uint16), np.asarray(ref["output_bits"], dtype=np.uint16).reshape(got.shape))


@pytest.mark.parametrize("precision", ["float16", "int8", "uint8", "binary", "ubinary"])
def test_request_precision_is_the_conversion_of_its_float32_vectors(gqa, precision):
    full = embed(gqa, input=TEXTS, dimensions=24)
    ranges = calibration_ranges(embed(gqa, input=["calibration text one", "another one", "x y z"], dimensions=24))
    ranged = ranges if precision in ("int8", "uint8") else None
    got = embed(gqa, input=TEXTS, dimensions=24, precision=precision, ranges=ranged)
    np.testing.assert_array_equal(got, quantize_embeddings(full, precision, ranges=ranged))
    # Alone or in a batch: the same bytes.
    alone = np.concatenate([embed(gqa, input=[t], dimensions=24, precision=precision, ranges=ranged) for t in TEXTS])
    np.testing.assert_array_equal(got, alone)
    assert got.shape == ((4, 3) if "binary" in precision else (4, 24))


@pytest.mark.parametrize(
    ("options", "parts"),
    [
        ({"precision": "int4"}, ["precision", '"int8"', '"int4"']),
        ({"precision": "int8"}, ["precision \"int8\" needs ranges", "[[min, ...], [max, ...]]"]),
        ({"precision": "binary", "ranges": [[0.0], [1.0]]}, ["ranges apply to precision", '"binary"']),
        ({"precision": "uint8", "ranges": [[0.0, 1.0]]}, ["two rows of equal length"]),
        ({"precision": "uint8", "ranges": [[1.0], [0.0]]}, ["dimension 0", "above max"]),
    ],
)
def test_bad_precision_options_are_refused(options, parts):
    with pytest.raises(ValueError) as err:
        EmbeddingRequest(input="a", **options)
    for part in parts:
        assert part in str(err.value), str(err.value)


def test_ranges_must_match_the_dimensions(gqa):
    with pytest.raises(ValueError) as err:
        embed(gqa, input="a", precision="int8", ranges=[[0.0] * 8, [1.0] * 8])
    assert "ranges has 8 dimensions, the vectors 64" in str(err.value)
