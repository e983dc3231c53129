"""The engines the end-to-end benchmark compares, each loaded in a child process of its own:
candle_embed's Runner, transformers (sentence-transformers' way: length-sorted batches, left
padding, last token, L2), ONNX Runtime on the same model exported by sentence-transformers' ONNX
backend, in f32 and with its dynamic int8 quantization, and OpenVINO on its export by the OpenVINO
backend, at its default precision, in f32, and with int8 weights."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np

# Each loader returns (embed, count_tokens, info): embed(texts) -> (unit vectors, tokens computed,
# padding included), count_tokens(texts) -> real tokens, info -> what was loaded and how long it took.


def rss_now_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_candle(model_dir: Path, args, dtype: str):
    import candle_embed as ce

    start = time.perf_counter()
    runner = ce.Runner(
        ce.Which.Embedding(str(model_dir), dtype=dtype),
        device="cpu",
        max_batch_tokens=args.max_batch_tokens,
    )
    load_s = time.perf_counter() - start

    def count_tokens(texts: list[str]) -> int:
        return sum(len(ids) for ids in runner.tokenize(ce.EmbeddingRequest(texts)))

    def embed(texts: list[str]) -> tuple[np.ndarray, int | None]:
        return np.asarray(runner.send_embedding_request(ce.EmbeddingRequest(texts)), dtype=np.float32), None

    info = {"load_s": load_s, "rss_after_load_mb": rss_now_mb(), "max_batch_tokens": args.max_batch_tokens,
            "requested_dtype": dtype, "runner_info": {k: str(v) for k, v in dict(runner.info).items()}}
    return embed, count_tokens, info


def load_hf(model_dir: Path, args, dtype_name: str):
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModel.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").eval()
    load_s = time.perf_counter() - start

    def count_tokens(texts: list[str]) -> int:
        return sum(len(ids) for ids in tokenizer(texts)["input_ids"])

    def embed(texts: list[str]) -> tuple[np.ndarray, int]:
        # sentence-transformers order: longest text (in characters) first.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        padded = 0
        for lo in range(0, len(order), args.batch_size):
            idx = order[lo : lo + args.batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, return_tensors="pt")
            padded += enc["input_ids"].numel()
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
                # Left padding: every row's last position is its last real token.
                pooled = F.normalize(hidden[:, -1].float(), p=2, dim=1)
            out[idx] = pooled.numpy()
        return out, padded

    info = {"load_s": load_s, "rss_after_load_mb": rss_now_mb(), "batch_size": args.batch_size,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "torch_dtype": str(dtype).removeprefix("torch.")}
    return embed, count_tokens, info


def left_padded(tokenizer, batch_size: int, forward):
    """embed and count_tokens for a runtime driven as sentence-transformers drives one: texts
    sorted longest first (in characters), batches of `batch_size` left-padded by `tokenizer` (which
    appends <|endoftext|>), `forward(encoding) -> (batch, positions, hidden)` hidden states, the
    last position's row L2-normalized."""

    def count_tokens(texts: list[str]) -> int:
        return sum(len(ids) for ids in tokenizer(texts)["input_ids"])

    def embed(texts: list[str]) -> tuple[np.ndarray, int]:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        padded = 0
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, return_tensors="np")
            padded += enc["input_ids"].size
            pooled = np.array(forward(enc)[:, -1], dtype=np.float32)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        assert out is not None
        return out, padded

    return embed, count_tokens


def onnx_export(model_dir: Path) -> Path:
    """The model exported to ONNX the way sentence-transformers' `backend="onnx"` does it (optimum),
    plus its dynamic int8 quantization for this CPU (`export_dynamic_quantized_onnx_model`); made
    once, into bench-out/onnx/<model>, and reused."""
    out = Path(__file__).resolve().parent.parent / "bench-out" / "onnx" / model_dir.name
    flags = cpu_flags()
    config = "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"
    # The file is named model_qint8_<config>.onnx, or model_quint8_avx2.onnx for AVX2.
    if any((out / "onnx").glob(f"model_q*int8_{config}.onnx")):
        return out
    import shutil

    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, out)
    # Loading with the ONNX backend exports model.onnx when the directory has none.
    model = SentenceTransformer(str(out), backend="onnx", model_kwargs={"provider": "CPUExecutionProvider"})
    model.save(str(out))
    export_dynamic_quantized_onnx_model(model, config, str(out))
    return out


def load_onnx(model_dir: Path, args, variant: str):
    """ONNX Runtime on the exported model (f32, or dynamic int8), batched and pooled as the
    transformers engine is. The session is driven directly: the exported Qwen3 graph takes
    position_ids, which sentence-transformers' ONNX path does not pass (it fails on this model), so
    they are computed here from the left-padded attention mask, as transformers does."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    start = time.perf_counter()
    out = onnx_export(model_dir)
    export_s = time.perf_counter() - start
    path = out / "onnx" / "model.onnx"
    if variant == "int8":
        path = next((out / "onnx").glob("model_q*int8_*.onnx"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(out, padding_side="left")
    load_s = time.perf_counter() - start
    names = {i.name for i in session.get_inputs()}

    def forward(enc: dict) -> np.ndarray:
        feed = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "position_ids" in names:
            feed["position_ids"] = np.clip(np.cumsum(enc["attention_mask"], axis=1) - 1, 0, None)
        return session.run(None, feed)[0]

    embed, count_tokens = left_padded(tokenizer, args.batch_size, forward)
    info = {"load_s": load_s, "export_s": export_s, "rss_after_load_mb": rss_now_mb(),
            "batch_size": args.batch_size, "onnxruntime": ort.__version__, "onnx_file": path.name,
            "onnx_threads": args.threads}
    return embed, count_tokens, info


def openvino_export(model_dir: Path) -> Path:
    """The model as sentence-transformers' `backend="openvino"` exports it (optimum-intel, f32 weights
    in openvino/openvino_model.xml), plus a copy with int8 weights (openvino_model_int8.xml) compressed
    the way optimum-intel's `--weight-format int8` does it (nncf, INT8_ASYM per output channel); made
    once, into bench-out/openvino/<model>, and reused."""
    out = Path(__file__).resolve().parent.parent / "bench-out" / "openvino" / model_dir.name
    if (out / "openvino" / "openvino_model_int8.xml").is_file():
        return out
    import shutil

    import nncf
    import openvino as ov
    from sentence_transformers import SentenceTransformer

    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, out)
    # Loading with the OpenVINO backend exports the IR when the directory has none.
    SentenceTransformer(str(out), backend="openvino").save(str(out))
    ir = out / "openvino" / "openvino_model.xml"
    compressed = nncf.compress_weights(ov.Core().read_model(ir), mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(compressed, ir.with_name("openvino_model_int8.xml"), compress_to_fp16=False)
    return out


def load_openvino(model_dir: Path, args, variant: str):
    """OpenVINO's CPU plugin on the exported IR, batched and pooled as the transformers engine is.
    "auto" compiles with OpenVINO's defaults, which compute in bf16 on CPUs with bf16 instructions
    (AVX512_BF16, AMX) and f32 elsewhere; "f32" asks for f32 throughout; "int8" is the int8-weight
    IR at the defaults. Under --peer-isa (a stand-in for an AVX2 or AVX-512F CPU, which OpenVINO
    cannot be held to) every variant computes in f32, the default such a CPU gets. optimum-intel's
    own default hint (LATENCY) is kept; threads are pinned to --threads like every other engine's."""
    import openvino as ov
    from transformers import AutoTokenizer

    start = time.perf_counter()
    out = openvino_export(model_dir)
    export_s = time.perf_counter() - start
    path = out / "openvino" / ("openvino_model_int8.xml" if variant == "int8" else "openvino_model.xml")
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}
    if variant == "f32" or args.peer_isa != "native":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    start = time.perf_counter()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    tokenizer = AutoTokenizer.from_pretrained(out, padding_side="left")
    load_s = time.perf_counter() - start
    names = {i.get_any_name() for i in compiled.inputs}

    def forward(enc: dict) -> np.ndarray:
        return request.infer({k: v for k, v in enc.items() if k in names})[compiled.outputs[0]]

    embed, count_tokens = left_padded(tokenizer, args.batch_size, forward)
    info = {"load_s": load_s, "export_s": export_s, "rss_after_load_mb": rss_now_mb(),
            "batch_size": args.batch_size, "openvino": ov.get_version(), "openvino_file": path.name,
            "openvino_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "openvino_threads": args.threads}
    return embed, count_tokens, info


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


KERNELS = ("amx", "avx512bf16", "avx512", "avx2")


def load_engine(engine: str, args):
    family, variant = engine.split("-", 1)
    if family == "candle":
        # candle-<kernel> (amx, avx512bf16, avx512, avx2): bf16 on that kernel, forced.
        if variant in KERNELS:
            os.environ["CANDLE_EMBED_CPU_KERNEL"] = variant
            variant = "bf16"
        elif variant == "f32-matmul":
            # candle-f32-matmul: f32 on candle's ops, as on a CPU without AVX2.
            os.environ["CANDLE_EMBED_CPU_KERNEL"] = "none"
            variant = "f32"
        return load_candle(args.model_dir, args, variant)
    if family == "onnx":
        return load_onnx(args.model_dir, args, variant)
    if family == "openvino":
        return load_openvino(args.model_dir, args, variant)
    return load_hf(args.model_dir, args, variant)
