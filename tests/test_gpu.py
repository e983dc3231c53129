"""The GPU path against transformers on the same GPU: parity in f32 and bf16, batch invariance.

Runs where this build has the `cuda` feature (scripts/build_cuda.sh) and a GPU answers; skipped,
with the reason, everywhere else (CI has neither). scripts/gpu_check.sh runs it with
tests/test_parity.py on the GPU, with CANDLE_EMBED_REQUIRE_GPU=1 so that there a missing device is
an error, not a skip.

- f32 on the GPU must match the fixtures' transformers f32 recording within 1e-4, like the CPU.
- bf16's yardstick is transformers' own bf16 run of the same fixture model on the same GPU (sdpa
  attention, left padding, last token), recomputed here: every case at least as close to the f32
  reference as it, or within BF16_FLOOR, and the mean over a model no further.
- Batch invariance: each input of a batch against the same input alone. Bitwise equality is
  recorded on the report (`bitwise_equal`) and the rows that are not bit-for-bit equal are counted
  in CANDLE_EMBED_GPU_REPORT (a JSON file) when set; the test bounds the difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from candle_embed import EmbeddingRequest, Runner, Which

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = ("gqa-bf16", "mqa-f16-prefix", "mha-f32-sharded")
BF16_FLOOR = 1e-2
DEVICE = os.environ.get("CANDLE_EMBED_GPU", "cuda")


def _gpu_reason() -> str | None:
    """Why the GPU tests cannot run here, or None when they can."""
    try:
        Runner(which=Which.Embedding(model_id=str(FIXTURES / "models" / MODELS[0])), device=DEVICE)
    except Exception as err:  # noqa: BLE001 - any failure to open the device is the reason to skip
        return f"no usable {DEVICE} device in this build/machine: {err}"
    return None


_REASON = _gpu_reason()
if _REASON is not None and os.environ.get("CANDLE_EMBED_REQUIRE_GPU"):
    # scripts/gpu_check.sh sets it: on the GPU machine a skip would hide a broken build.
    raise RuntimeError(f"CANDLE_EMBED_REQUIRE_GPU is set, but {_REASON}")
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def _cases(model: str) -> list[dict]:
    recording = json.loads((FIXTURES / "expected" / f"{model}.json").read_text(encoding="utf-8"))
    return recording["cases"]


@pytest.fixture(scope="module")
def runner():
    loaded: dict[tuple[str, str], Runner] = {}

    def get(model: str, dtype: str) -> Runner:
        if (model, dtype) not in loaded:
            which = Which.Embedding(model_id=str(FIXTURES / "models" / model), dtype=dtype)
            r = Runner(which=which, device=DEVICE)
            assert r.info["device"].startswith("cuda")
            assert r.info["kernel"] == "candle+varlen"
            loaded[(model, dtype)] = r
        return loaded[(model, dtype)]

    return get


class _TransformersBf16:
    """transformers' Qwen3Model in bfloat16 on the GPU, the Qwen3-Embedding recipe."""

    def __init__(self, model: str) -> None:
        torch = pytest.importorskip("torch")
        transformers = pytest.importorskip("transformers")
        self.torch = torch
        self.model = (
            transformers.AutoModel.from_pretrained(
                FIXTURES / "models" / model, dtype=torch.bfloat16, attn_implementation="sdpa"
            )
            .to(DEVICE)
            .eval()
        )
        self.pad = int(self.model.config.eos_token_id or 0)

    def embed(self, case: dict) -> np.ndarray:
        torch, rows = self.torch, case["token_ids"]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(DEVICE), attention_mask=mask.to(DEVICE))
        h = out.last_hidden_state[:, -1].float()
        request = case["request"]
        if request.get("dimensions") is not None:
            h = h[:, : request["dimensions"]]
        if request.get("normalize", True):
            h = torch.nn.functional.normalize(h, p=2, dim=-1)
        return h.cpu().numpy()


def _embed(r: Runner, request: dict) -> np.ndarray:
    return r.send_embedding_request(EmbeddingRequest(**request))


@pytest.mark.parametrize("model", MODELS)
def test_f32_matches_the_reference(runner, model):
    for case in _cases(model):
        got = _embed(runner(model, "f32"), case["request"])
        want = np.asarray(case["embeddings"], dtype=np.float32)
        diff = float(np.max(np.abs(got - want)))
        assert diff <= 1e-4, f"{case['id']}: max |diff| {diff:.3e}"


@pytest.mark.parametrize("model", MODELS)
def test_bf16_is_as_close_as_transformers_bf16_on_the_same_gpu(runner, model):
    hf = _TransformersBf16(model)
    ours, theirs = [], []
    for case in _cases(model):
        want = np.asarray(case["embeddings"], dtype=np.float32)
        got = _embed(runner(model, "bf16"), case["request"])
        o = float(np.max(np.abs(got - want)))
        t = float(np.max(np.abs(hf.embed(case) - want)))
        assert o <= max(t, BF16_FLOOR), f"{case['id']}: ours {o:.3e}, transformers bf16 {t:.3e}"
        ours.append(o)
        theirs.append(t)
    assert np.mean(ours) <= np.mean(theirs), f"mean: ours {np.mean(ours):.3e}, transformers {np.mean(theirs):.3e}"


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_a_row_of_a_batch_is_the_input_alone(runner, dtype, request):
    rows = bitwise = 0
    worst = 0.0
    for model in MODELS:
        for case in _cases(model):
            inputs = case["request"]["input"]
            if not isinstance(inputs, list) or len(inputs) < 2:
                continue
            r = runner(model, dtype)
            batch = _embed(r, case["request"])
            for i, item in enumerate(inputs):
                single = [item] if isinstance(item, list) else item
                alone = _embed(r, {**case["request"], "input": single})[0]
                rows += 1
                bitwise += int(np.array_equal(batch[i], alone))
                worst = max(worst, float(np.max(np.abs(batch[i] - alone))))
    request.node.user_properties.append(("bitwise_equal_rows", f"{bitwise}/{rows}"))
    report = os.environ.get("CANDLE_EMBED_GPU_REPORT")
    if report:
        path = Path(report)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[f"batch_invariance_{dtype}"] = {"rows": rows, "bitwise_equal": bitwise, "max_abs_diff": worst}
        path.write_text(json.dumps(data, indent=2))
    assert rows > 0
    # cuBLAS may pick another GEMM algorithm for another number of rows: bounded, not bitwise.
    assert worst <= (1e-5 if dtype == "f32" else BF16_FLOOR), f"max |diff| {worst:.3e}"
