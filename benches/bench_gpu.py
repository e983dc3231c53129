#!/usr/bin/env python3
"""GPU throughput: candle_embed (cuda, bf16) against transformers bf16 with sdpa, same GPU, same run.

    python3 benches/bench_gpu.py [--shapes 0.6b,8b] [--out bench-out/gpu.json]

Run by scripts/gpu_check.sh on a GPU machine; needs torch, transformers and safetensors there, and
the CUDA build of candle_embed (scripts/build_cuda.sh).

For each shape, a random-weight model with the exact Qwen3-Embedding shape is made on the GPU
(speed does not depend on the values) and saved as bf16 safetensors. Both engines get the same
inputs: token ids (random ids, each row ending with <|endoftext|>), lengths drawn as in
benches/e2e_corpus.py (log-normal, median 60, 5 to 500 tokens), so tokenization is out of the
comparison on both sides and no tokenizer has to travel with the script. Each engine runs in a
subprocess of its own after a warm-up call; the parent samples the GPU's used memory through NVML
every 20 ms, so each engine's peak is its own (minus what was in use before it started).

    candle         Runner(device="cuda", dtype="bf16"): every input in one request, packed into
                   passes of --max-batch-tokens, no padding
    hf-sdpa-bf16   transformers AutoModel, bfloat16, attn_implementation="sdpa", inputs sorted by
                   length and left-padded in batches of --hf-batch-size (sentence-transformers'
                   default 32), last token, L2-normalized

Reported per engine: tokens/s, seconds, peak GPU memory, and model FLOP/s as a share of the GPU's
bf16 dense peak (--peak-tflops, 989 for an H100/H200 SXM): 2 x parameters x tokens, a lower bound
on what the matmuls reach. Agreement: min cosine between the two engines' vectors.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EOS = 151643
SHAPES = {
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
               num_attention_heads=32, num_key_value_heads=8),
}
DEFAULT_INPUTS = {"0.6b": 8192, "8b": 2048}


def config(shape: str) -> dict:
    return {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 128,
        "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000, "tie_word_embeddings": shape == "0.6b", "vocab_size": 151669,
        "bos_token_id": EOS, "eos_token_id": EOS, "attention_bias": False, "torch_dtype": "bfloat16",
        **SHAPES[shape],
    }


def make_model(shape: str, out: Path) -> int:
    """Writes config.json, model.safetensors and a tokenizer.json; returns the parameter count."""
    import torch
    import transformers
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    cfg = config(shape)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    # The engine loads a tokenizer with every model; token-id inputs never use it.
    shutil.copy(ROOT / "tests/fixtures/models/gqa-bf16/tokenizer.json", out / "tokenizer.json")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.Qwen3Model(transformers.Qwen3Config(**cfg)).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, out / "model.safetensors")
    del model
    torch.cuda.empty_cache()
    return params


def corpus(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = int(round(math.exp(rng.gauss(math.log(60), 0.8))))
        length = min(max(length, 5), 500)
        rows.append([rng.randrange(0, 150000) for _ in range(length - 1)] + [EOS])
    return rows


def run_candle(model_dir: str, rows, args, queue) -> None:
    import numpy as np
    from candle_embed import EmbeddingRequest, Runner, Which

    r = Runner(which=Which.Embedding(model_id=model_dir, dtype="bf16"), device="cuda",
               max_batch_tokens=args.max_batch_tokens)
    r.send_embedding_request(EmbeddingRequest(input=rows[:64]))
    started = time.perf_counter()
    out = r.send_embedding_request(EmbeddingRequest(input=rows))
    seconds = time.perf_counter() - started
    np.save(args.scratch / "candle.npy", out)
    queue.put({"seconds": seconds, "kernel": r.info["kernel"]})


def run_hf(model_dir: str, rows, args, queue) -> None:
    import numpy as np
    import torch
    import transformers

    model = transformers.AutoModel.from_pretrained(
        model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").to("cuda").eval()

    def embed(batch_rows):
        width = max(len(r) for r in batch_rows)
        ids = torch.full((len(batch_rows), width), EOS, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(batch_rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        with torch.inference_mode():
            h = model(input_ids=ids.cuda(), attention_mask=mask.cuda()).last_hidden_state[:, -1]
            return torch.nn.functional.normalize(h.float(), dim=-1).cpu()

    embed(rows[:args.hf_batch_size])
    torch.cuda.synchronize()
    started = time.perf_counter()
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out = [None] * len(rows)
    for start in range(0, len(order), args.hf_batch_size):
        idx = order[start:start + args.hf_batch_size]
        for i, v in zip(idx, embed([rows[i] for i in idx])):
            out[i] = v
    seconds = time.perf_counter() - started
    np.save(args.scratch / "hf.npy", torch.stack(out).numpy())
    queue.put({"seconds": seconds})


def measure(target, model_dir: str, rows, args) -> dict:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    before = pynvml.nvmlDeviceGetMemoryInfo(handle).used
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=target, args=(model_dir, rows, args, queue))
    proc.start()
    try:
        result = queue.get(timeout=args.engine_timeout)
    except Exception as err:  # noqa: BLE001 - an engine that fails is reported, the other still runs
        result = {"error": repr(err)}
    proc.join(timeout=60)
    done.set()
    sampler.join()
    result["peak_gpu_mib"] = round((peak[0] - before) / 2**20)
    if proc.exitcode not in (0, None):
        result.setdefault("error", f"exit code {proc.exitcode}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="0.6b,8b")
    ap.add_argument("--n-inputs", type=int, default=0, help="0: 8192 for 0.6b, 2048 for 8b")
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument("--hf-batch-size", type=int, default=32)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--engine-timeout", type=float, default=300.0)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/candle-embed-bench-gpu"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "gpu.json")
    args = ap.parse_args()
    import numpy as np
    import torch

    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "shapes": {}}
    for shape in args.shapes.split(","):
        model_dir = args.scratch / f"qwen3-{shape}-random"
        started = time.perf_counter()
        params = make_model(shape, model_dir)
        rows = corpus(args.n_inputs or DEFAULT_INPUTS[shape])
        tokens = sum(len(r) for r in rows)
        entry = {"parameters": params, "inputs": len(rows), "tokens": tokens,
                 "model_written_s": round(time.perf_counter() - started, 1), "engines": {}}
        for name, target in (("candle", run_candle), ("hf-sdpa-bf16", run_hf)):
            res = measure(target, str(model_dir), rows, args)
            if "seconds" in res:
                res["tokens_per_s"] = round(tokens / res["seconds"], 1)
                res["model_tflops"] = round(2 * params * tokens / res["seconds"] / 1e12, 1)
                res["share_of_peak"] = round(res["model_tflops"] / args.peak_tflops, 3)
            entry["engines"][name] = res
            print(shape, name, res, flush=True)
        a, b = args.scratch / "candle.npy", args.scratch / "hf.npy"
        if a.exists() and b.exists():
            x, y = np.load(a), np.load(b)
            entry["min_cosine_candle_vs_hf"] = float(np.min(np.sum(x * y, axis=1)))
        c, h = entry["engines"]["candle"], entry["engines"]["hf-sdpa-bf16"]
        if "tokens_per_s" in c and "tokens_per_s" in h:
            entry["candle_over_hf"] = round(c["tokens_per_s"] / h["tokens_per_s"], 2)
        report["shapes"][shape] = entry
        shutil.rmtree(model_dir, ignore_errors=True)
        for f in (a, b):
            f.unlink(missing_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\n| shape | engine | tokens/s | peak GPU MiB | model TFLOP/s (share of peak) |")
    print("|---|---|---|---|---|")
    for shape, entry in report["shapes"].items():
        for name, res in entry["engines"].items():
            print(f"| {shape} | {name} | {res.get('tokens_per_s', res.get('error'))} | "
                  f"{res['peak_gpu_mib']} | {res.get('model_tflops')} ({res.get('share_of_peak')}) |")
        print(f"| {shape} | candle / hf | {entry.get('candle_over_hf')} | | min cos "
              f"{entry.get('min_cosine_candle_vs_hf')} |")
    sys.stdout.flush()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
