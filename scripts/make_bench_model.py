#!/usr/bin/env python3
"""Write a random-weight model with the exact shape of Qwen/Qwen3-Embedding-0.6B, for benchmarks.

    python3 scripts/make_bench_model.py [--out bench-out/qwen3-0.6b-random] [--seed 0]

Needs torch and safetensors. The directory it writes looks like the published checkpoint:

    config.json             Qwen3-Embedding-0.6B's config (28 layers, hidden 1024, 16 query / 8 KV
                            heads of 128, MLP 3072, vocab 151669, RoPE theta 1e6, tied embeddings)
    model.safetensors       bfloat16 weights (~1.2 GB), names without the "model." prefix
    tokenizer.json          the real Qwen3 tokenizer (../shared/qwen3-tokenizer) with the embedding
                            checkpoints' post-processor, which appends <|endoftext|> to every text
    tokenizer_config.json   copied, with padding_side "left" as in the embedding checkpoints

The weights are random (linears N(0, 0.02), embeddings N(0, 0.02), norms 1.0): speed does not
depend on the values, and no download is needed. The output directory is gitignored (bench-out/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench-out" / "qwen3-0.6b-random"
TOKENIZER_DIR = ROOT.parent / "shared" / "qwen3-tokenizer"
EOS = "<|endoftext|>"

# Qwen/Qwen3-Embedding-0.6B's config.json.
CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151669,
}


def weight_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint, by its name in Qwen3-Embedding's model.safetensors."""
    hidden, inter, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q_out, kv_out = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (cfg["vocab_size"], hidden)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (q_out, hidden),
            p + "self_attn.k_proj.weight": (kv_out, hidden),
            p + "self_attn.v_proj.weight": (kv_out, hidden),
            p + "self_attn.o_proj.weight": (hidden, q_out),
            p + "self_attn.q_norm.weight": (d,),
            p + "self_attn.k_norm.weight": (d,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        }
    shapes["norm.weight"] = (hidden,)
    return shapes


def random_weights(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """bfloat16 tensors, drawn one at a time so only the bf16 copy of the model stays in memory."""
    gen = torch.Generator().manual_seed(seed)
    std = cfg["initializer_range"]
    tensors = {}
    for name, shape in weight_shapes(cfg).items():
        if len(shape) == 1:  # RMSNorm scales
            tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensors[name] = (torch.randn(shape, generator=gen) * std).to(torch.bfloat16)
    return tensors


def embedding_tokenizer(source: Path) -> dict:
    """The Qwen3 tokenizer with the post-processor of the Qwen3-Embedding checkpoints."""
    tok = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    eos_ids = [t["id"] for t in tok["added_tokens"] if t["content"] == EOS]
    if len(eos_ids) != 1:
        raise SystemExit(f"{source / 'tokenizer.json'}: expected one added token {EOS}")
    eos = {"id": EOS, "type_id": 0}
    tok["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            {
                "type": "TemplateProcessing",
                "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": eos}],
                "pair": [
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": eos},
                    {"Sequence": {"id": "B", "type_id": 1}},
                    {"SpecialToken": {"id": EOS, "type_id": 1}},
                ],
                "special_tokens": {EOS: {"id": EOS, "ids": eos_ids, "tokens": [EOS]}},
            },
        ],
    }
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer-dir", type=Path, default=TOKENIZER_DIR, help="the base Qwen3 tokenizer")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n", encoding="utf-8")

    tokenizer = embedding_tokenizer(args.tokenizer_dir)
    (args.out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    tok_config = json.loads((args.tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_config["padding_side"] = "left"
    (args.out / "tokenizer_config.json").write_text(
        json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    tensors = random_weights(CONFIG, args.seed)
    params = sum(t.numel() for t in tensors.values())
    save_file(tensors, str(args.out / "model.safetensors"), metadata={"format": "pt"})
    size = (args.out / "model.safetensors").stat().st_size
    print(f"wrote {args.out}: {params / 1e6:.1f}M parameters, model.safetensors {size / 2**30:.2f} GiB (bf16)")


if __name__ == "__main__":
    main()
