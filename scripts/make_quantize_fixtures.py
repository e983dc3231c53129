#!/usr/bin/env python3
"""Record sentence-transformers' `quantize_embeddings` outputs in tests/fixtures/expected/quantize.json.

Run by hand, never in CI, after scripts/make_fixtures.py (its float32 reference embeddings in
tests/fixtures/expected/gqa-bf16.json are the inputs here):

    python3 scripts/make_quantize_fixtures.py

Needs numpy and sentence-transformers (>= 6; the function lives in
sentence_transformers.util.quantization, `sentence_transformers.quantization` is a deprecated alias).
Nothing is random, so running it twice gives the same file.

What sentence-transformers 6.2 does (read from its source, and re-derived below with plain numpy in
`by_formula`, which must match it bit for bit). Inputs are float32 (rows x dims):

  float32   embeddings.astype(float32): unchanged.
  float16   not supported: raises ValueError("Precision 'float16' is not supported"). Recorded as
            that error; a numpy `astype(float16)` (round to nearest, ties to even) is recorded beside
            it as a separate, clearly labelled reference.
  uint8     ranges (2 x dims, float32) = the given `ranges`, else per-dimension [min; max] of
  int8      `calibration_embeddings`, else of the embeddings themselves (an error for a single row);
            ranges are cast to float32, then, all in float32:
                starts = ranges[0]
                steps  = (ranges[1] - starts) / 255, and 1 where that is 0
                q      = clip(floor((x - starts) / steps), 0, 255)
            uint8 = q; int8 = q - 128. So x == min -> 0 (-128) and x == max -> 255 (127) or 254
            (126): (max - min) / ((max - min) / 255) is not always exactly 255 in float32.
  ubinary   bits = x > 0 (so 0.0 and -0.0 give 0, the smallest subnormal gives 1), packed 8 per
            byte along the last axis with numpy.packbits: big-endian bit order (dimension 8k is the
            byte's 0x80 bit, 8k+7 its 0x01 bit), the last byte zero-padded on the right; shape
            (rows, ceil(dims / 8)), dtype uint8.
  binary    the ubinary bytes minus 128 (uint8 arithmetic, values 128..255 -> 0..127 and 0..127 ->
            -128..-1), cast to int8; i.e. byte ^ 0x80 read as int8.

sentence-transformers 5.x computed the same, except that it did not cast `ranges` to float32 (float64
ranges made the arithmetic float64). All ranges here are float32, so both versions agree.

What it writes, one JSON object:

    {"sentence_transformers_version", "numpy_version", "source", "float_encoding", "formulas",
     "inputs": {<name>: {"description", "shape", "values", "bits"}},
     "cases": [{"id", "precision", "input", "calibration", "ranges_source", "ranges",
                "output", "output_dtype", "output_shape"}, ..., and for float16 {..., "error"}],
     "float16_numpy": {"input", "description", "output_bits", "output_dtype"},
     "out_of_range_note", "out_of_range_cases": [same fields as "cases"]}

"input" and "calibration" name entries of "inputs" (calibration null when none is passed);
"ranges_source" is "given" (passed as `ranges`), "calibration" or "embeddings" (derived by
sentence-transformers from those rows), null for precisions without ranges; "ranges" are the ranges
used, {"values", "bits"} of shape 2 x dims; "output" is a list of int rows for int8 / uint8 /
binary / ubinary, and {"bits"} for float32.

Floats: "values" are JSON numbers (the exact float32 value printed as the shortest float64 repr,
which parses back to the same float32), and "bits" the same numbers as float32 bit patterns
(uint32), which are authoritative (they keep -0.0 even where a parser would not). float16 outputs
are uint16 bit patterns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import sentence_transformers
from sentence_transformers.util.quantization import quantize_embeddings

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "fixtures" / "expected"
SOURCE = EXPECTED / "gqa-bf16.json"
OUT = EXPECTED / "quantize.json"

# Rows of gqa-bf16.json's float32 `embeddings`, by case id. The main matrix and the calibration set
# share no row.
MAIN_CASES = ["batch_mixed_lengths", "cjk", "emoji_zwj_flags", "combining_marks_nfc", "rtl_arabic_hebrew"]
CALIBRATION_CASES = [
    "token_ids_batch", "truncate_batch_left", "literal_endoftext_in_text", "single_space", "instruction",
    "truncate_5_right", "truncate_5_left", "token_ids_single", "truncate_longer_than_text",
    "truncate_2_right", "prompt_name_document",
]
F32 = np.float32


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def f32_values(a: np.ndarray) -> list:
    assert a.dtype == F32
    return [float(v) for v in a] if a.ndim == 1 else [f32_values(r) for r in a]


def f32_bits(a: np.ndarray) -> list:
    assert a.dtype == F32
    return a.view(np.uint32).tolist()


def f32_record(a: np.ndarray) -> dict:
    rec = {"values": f32_values(a), "bits": f32_bits(a)}
    # The decimals parse back to the same float32 (bar the sign of zero, which the bits keep).
    assert np.array_equal(np.array(rec["values"], dtype=F32), a)
    assert np.array_equal(np.array(rec["bits"], dtype=np.uint32), a.view(np.uint32))
    return rec


# ---------------------------------------------------------------------------------------------
# The formulas, re-derived
# ---------------------------------------------------------------------------------------------


def by_formula(x: np.ndarray, precision: str, ranges: np.ndarray | None) -> np.ndarray:
    """The documented formulas in plain numpy; must equal sentence-transformers' output exactly."""
    if precision == "float32":
        return x.copy()
    if precision in ("int8", "uint8"):
        starts = ranges[0].astype(F32)
        steps = (ranges[1].astype(F32) - starts) / F32(255)
        steps = np.where(steps == 0, F32(1), steps).astype(F32)
        q = np.clip(np.floor((x - starts) / steps), 0, 255).astype(np.int64)
        return (q - 128).astype(np.int8) if precision == "int8" else q.astype(np.uint8)
    if precision in ("binary", "ubinary"):
        rows, dims = x.shape
        out = np.zeros((rows, (dims + 7) // 8), dtype=np.int64)
        for j in range(dims):
            out[:, j // 8] |= (x[:, j] > 0).astype(np.int64) << (7 - j % 8)
        return (out - 128).astype(np.int8) if precision == "binary" else out.astype(np.uint8)
    raise ValueError(precision)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def reference_rows(source: dict, case_ids: list[str], dims: int | None = 64) -> np.ndarray:
    by_id = {c["id"]: c for c in source["cases"]}
    rows = [r for cid in case_ids for r in by_id[cid]["embeddings"]]
    a = np.array(rows, dtype=F32)
    assert dims is None or a.shape[1] == dims
    return a


def build_inputs(source: dict) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    main_real = reference_rows(source, MAIN_CASES)
    calib_real = reference_rows(source, CALIBRATION_CASES)
    assert not any((main_real == r).all(axis=1).any() for r in calib_real), "calibration shares a row"
    # The calibration set: other rows, plus the per-dimension envelope (min and max) of the main
    # rows, so that every main row lies inside the ranges it gives, some values exactly on them.
    calibration = np.vstack([calib_real, main_real.min(axis=0), main_real.max(axis=0)]).astype(F32)
    ranges = np.vstack([calibration.min(axis=0), calibration.max(axis=0)]).astype(F32)
    dims = main_real.shape[1]
    steps = (ranges[1] - ranges[0]) / F32(255)
    j = np.arange(dims)
    tiny = np.float32(np.finfo(F32).smallest_subnormal)
    crafted = np.array(
        [
            np.zeros(dims, dtype=F32),  # zeros
            np.full(dims, -0.0, dtype=F32),  # negative zeros
            np.where(j % 4 == 0, tiny, np.where(j % 4 == 1, -tiny, np.where(j % 4 == 2, F32(0.0), F32(-0.0)))),
            ranges[0],  # every value exactly a range minimum
            ranges[1],  # every value exactly a range maximum
            # bucket edges computed in float32: start + step * k, k = 4 * dimension = 0, 4, ..., 252
            ranges[0] + steps * (4 * j).astype(F32),
        ],
        dtype=F32,
    )
    main = np.vstack([main_real, crafted]).astype(F32)
    assert (main >= ranges[0]).all() and (main <= ranges[1]).all()
    assert (main == ranges[0]).any() and (main == ranges[1]).any()

    # Given ranges, wider than every main value by 0.01 .. 0.05 (different per dimension).
    widen = (F32(0.01) * (1 + j % 5)).astype(F32)
    wide = np.vstack([main.min(axis=0) - widen, main.max(axis=0) + widen[::-1]]).astype(F32)
    assert (main > wide[0]).all() and (main < wide[1]).all()

    dims16 = reference_rows(source, ["dimensions_16"], dims=16)
    dims8 = reference_rows(source, ["dimensions_8"], dims=8)
    dims12 = np.ascontiguousarray(dims16[:, :12])
    # A constant column: its range is empty, so its step becomes 1.
    const = dims16.copy()
    const[:, 5] = dims16[0, 5]

    arrays = {
        "main": main, "calibration": calibration, "dims16": dims16, "dims12": dims12, "dims8": dims8,
        "dims16_constant_column": const,
    }
    n_real = len(main_real)
    descriptions = {
        "main": (
            f"rows 0..{n_real - 1}: gqa-bf16.json embeddings of cases {', '.join(MAIN_CASES)} in order; "
            f"then crafted rows: {n_real} zeros, {n_real + 1} negative zeros, {n_real + 2} smallest "
            f"subnormal / -smallest subnormal / 0.0 / -0.0 by dimension mod 4, {n_real + 3} the "
            f"calibration minimums, {n_real + 4} the calibration maximums, {n_real + 5} the float32 "
            "bucket edges min + step * (4 * dimension)"
        ),
        "calibration": (
            f"rows 0..{len(calib_real) - 1}: gqa-bf16.json embeddings of cases "
            f"{', '.join(CALIBRATION_CASES)} in order; then the per-dimension min and max of the "
            f"{n_real} real rows of `main`"
        ),
        "dims16": "gqa-bf16.json embeddings of case dimensions_16 (16 dimensions)",
        "dims12": "the first 12 values of each dims16 row (12 dimensions: the last packed byte is half padding)",
        "dims8": "gqa-bf16.json embeddings of case dimensions_8 (8 dimensions: one packed byte)",
        "dims16_constant_column": "dims16 with column 5 set to row 0's value in every row",
    }
    derived = {"calibration_ranges": ranges, "wide_ranges": wide}
    return arrays, descriptions, derived


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def run(arrays: dict, case_id: str, precision: str, input_name: str, calibration: str | None = None,
        given: np.ndarray | None = None) -> dict:
    x = arrays[input_name]
    cal = arrays[calibration] if calibration else None
    out = quantize_embeddings(x, precision=precision, ranges=given, calibration_embeddings=cal)
    ranges, ranges_source = None, None
    if precision in ("int8", "uint8"):
        if given is not None:
            ranges, ranges_source = given, "given"
        else:
            ranges_source = "calibration" if cal is not None else "embeddings"
            source = cal if cal is not None else x
            ranges = np.vstack([source.min(axis=0), source.max(axis=0)]).astype(F32)
    want = by_formula(x, precision, ranges)
    assert out.dtype == want.dtype and np.array_equal(out.view(np.uint8), want.view(np.uint8)), case_id
    return {
        "id": case_id,
        "precision": precision,
        "input": input_name,
        "calibration": calibration,
        "ranges_source": ranges_source,
        "ranges": None if ranges is None else f32_record(ranges),
        # float32 output is the input unchanged: its bits only
        "output": {"bits": f32_bits(out)} if out.dtype == F32 else out.tolist(),
        "output_dtype": str(out.dtype),
        "output_shape": list(out.shape),
    }


def cases(arrays: dict, derived: dict) -> list[dict]:
    wide = derived["wide_ranges"]
    out = []
    for p in ("int8", "uint8"):
        out.append(run(arrays, f"{p}_calibration", p, "main", calibration="calibration"))
        out.append(run(arrays, f"{p}_given_ranges", p, "main", given=wide))
        out.append(run(arrays, f"{p}_self_ranges_dims16", p, "dims16"))
        out.append(run(arrays, f"{p}_constant_column", p, "dims16_constant_column"))
    for p in ("binary", "ubinary"):
        for name in ("main", "dims16", "dims12", "dims8"):
            out.append(run(arrays, f"{p}_{name}", p, name))
    out.append(run(arrays, "float32_main", "float32", "main"))
    out.append(run(arrays, "float32_dims12", "float32", "dims12"))
    # The recorded ranges are those sentence-transformers derives (checked against the formula).
    for rec in out:
        if rec["ranges_source"] == "calibration":
            assert rec["ranges"]["bits"] == f32_bits(derived["calibration_ranges"])
    return out


def float16_case(arrays: dict) -> tuple[dict, dict]:
    try:
        quantize_embeddings(arrays["main"], precision="float16")
    except ValueError as e:
        error = f"ValueError: {e}"
    else:
        raise AssertionError("sentence-transformers now supports float16: record its output instead")
    rec = {"id": "float16_main", "precision": "float16", "input": "main", "calibration": None,
           "ranges_source": None, "ranges": None, "error": error}
    half = arrays["main"].astype(np.float16)
    numpy_ref = {
        "input": "main",
        "description": "NOT sentence-transformers: numpy astype(float16) (round to nearest, ties to even), as uint16 bits",
        "output_bits": half.view(np.uint16).tolist(),
        "output_dtype": "float16",
    }
    return rec, numpy_ref


OUT_OF_RANGE_NOTE = (
    "sentence-transformers 6.2 (and 5.x) clips floor((x - start) / step) to [0, 255] before the "
    "integer cast, so values below a range's min give uint8 0 / int8 -128 and values above its max "
    "give uint8 255 / int8 127; those outputs are recorded in out_of_range_cases. Releases that cast "
    "without that clip relied on numpy's float-to-int8/uint8 cast of out-of-range values, which is "
    "platform-dependent (undefined in C), so these rows are kept out of the main cases. NaN is not "
    "recorded: floor and clip keep it NaN and its integer cast is platform-dependent."
)


def out_of_range_rows(derived: dict) -> np.ndarray:
    """Rows with values outside the calibration ranges (each row has some)."""
    ranges = derived["calibration_ranges"]
    dims = ranges.shape[1]
    j = np.arange(dims)
    below = np.nextafter(ranges[0], F32(-np.inf)).astype(F32)
    above = np.nextafter(ranges[1], F32(np.inf)).astype(F32)
    rows = np.array(
        [
            below,  # one float32 step below every minimum
            above,  # one float32 step above every maximum
            ranges[0] - F32(0.1),
            ranges[1] + F32(0.1),
            np.where(j % 2 == 0, F32(-10.0), F32(10.0)),
            np.where(j % 3 == 0, below, np.where(j % 3 == 1, above, ranges[0])),
        ],
        dtype=F32,
    )
    assert ((rows < ranges[0]) | (rows > ranges[1])).any(axis=1).all()
    return rows


FORMULAS = {
    "int8/uint8": (
        "ranges = given, else [min; max] per dimension of calibration_embeddings, else of the "
        "embeddings; cast to float32; starts = ranges[0]; steps = (ranges[1] - starts) / 255, 1 where "
        "0; q = clip(floor((x - starts) / steps), 0, 255), all in float32; uint8 = q, int8 = q - 128"
    ),
    "ubinary": "numpy.packbits(x > 0, axis=-1): big-endian bits (dimension 8k -> 0x80), last byte zero-padded",
    "binary": "(ubinary - 128) as int8, i.e. byte ^ 0x80",
    "float32": "x.astype(float32)",
    "float16": "unsupported: ValueError",
}


def main() -> None:
    # Quiet the "ranges from fewer than 100 embeddings" warning: those small cases are deliberate.
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    source = json.loads(SOURCE.read_text())
    arrays, descriptions, derived = build_inputs(source)
    arrays["out_of_range"] = out_of_range_rows(derived)
    descriptions["out_of_range"] = (
        "only for out_of_range_cases: 0 one float32 step below every calibration minimum, 1 one step "
        "above every maximum, 2 minimums - 0.1, 3 maximums + 0.1, 4 -10 / 10 alternating, 5 below / "
        "above / exactly the minimum by dimension mod 3"
    )
    main_cases = cases(arrays, derived)
    f16, f16_numpy = float16_case(arrays)
    main_cases.append(f16)
    assert len({c["id"] for c in main_cases}) == len(main_cases)
    expected = {
        "sentence_transformers_version": sentence_transformers.__version__,
        "numpy_version": np.__version__,
        "source": str(SOURCE.relative_to(ROOT)),
        "float_encoding": (
            "float32 arrays as {'values': JSON numbers (exact float32 values), 'bits': uint32 bit "
            "patterns (authoritative)}; float16 as uint16 bit patterns"
        ),
        "formulas": FORMULAS,
        "inputs": {
            name: {"description": descriptions[name], "shape": list(a.shape), **f32_record(a)}
            for name, a in arrays.items()
        },
        "cases": main_cases,
        "float16_numpy": f16_numpy,
        "out_of_range_note": OUT_OF_RANGE_NOTE,
        "out_of_range_cases": [
            run(arrays, f"{p}_out_of_range", p, "out_of_range", given=derived["calibration_ranges"])
            for p in ("int8", "uint8")
        ],
    }
    OUT.write_text(json.dumps(expected, ensure_ascii=False) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size / 1e3:.1f} kB): {len(main_cases)} cases")
    for c in main_cases:
        shape = c.get("output_shape", c.get("error"))
        print(f"  {c['id']}: {shape}")


if __name__ == "__main__":
    main()
