#!/usr/bin/env python3
"""Regenerate tests/fixtures/: tiny Qwen3 models, their tokenizers and reference embeddings.

Run by hand, never in CI:

    python3 scripts/make_fixtures.py

Needs torch, transformers (>= 5), tokenizers, safetensors and numpy. Everything is deterministic
(fixed seeds, CPU, eager attention), so running it twice gives the same files. `embeddings` come
from the model in float32 (the reference); `embeddings_bf16` from the same model cast to bfloat16,
the yardstick for our bf16 path.

What it writes (its own models and recordings are deleted and recreated each run):

    tests/fixtures/models/<name>/      config.json, tokenizer.json, tokenizer_config.json,
                                       weights (*.safetensors [+ index]), maybe
                                       config_sentence_transformers.json
    tests/fixtures/expected/<name>.json  {"model", "cases": [{"id", "request", "token_ids",
                                                              "embeddings",
                                                              "embeddings_bf16"}]}

Each model is a random-weight `transformers.Qwen3Model`, scaled so that every layer moves the
output, and each checkpoint is laid out differently (dtype, `model.` prefix, sharding, RoPE config
form, tokenizer with or without the EOS post-processor) so the loader sees the variations real
Qwen3-Embedding exports have. The references follow the Qwen3-Embedding model card: format the text
(instruction or named prompt), tokenize so the last token is <|endoftext|>, left-pad with the EOS id,
run the model, take the last token's hidden state, keep the first `dimensions` values, L2-normalize.

One file over 600 lines on purpose: every fixture model and the transformers recordings it is
checked against are made in one run by one script, so they cannot drift apart.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# Qwen2/Qwen3's pre-tokenizer split pattern, verbatim.
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS, "<|im_start|>", "<|im_end|>", "<|fim_pad|>"]
TOKENIZER_VOCAB = 1000
QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"

# How close a padded-batch row must be to the same input run alone (float32, eager attention).
SELF_CHECK_TOL = 1e-5

# ---------------------------------------------------------------------------------------------
# Training corpus: a little of everything the tokenizer must handle.
# ---------------------------------------------------------------------------------------------

CORPUS = [
    # English prose
    "The quick brown fox jumps over the lazy dog. The dog didn't care; it's been sleeping all day.",
    "Embeddings map text to vectors so that similar meanings end up close together in space.",
    "A search engine retrieves relevant passages that answer the query, then ranks them by score.",
    "What is the capital of China? Beijing is the capital of China, and Shanghai is its largest city.",
    "Explain gravity: gravity is the force by which a planet or other body draws objects toward its center.",
    "We'll see what they've done, and I'm sure you're going to like what we'd planned for the weekend.",
    "Machine learning models learn patterns from data. Transformers use attention to mix information.",
    "The weather today is sunny with a high of 24 degrees, turning cloudy in the evening with light rain.",
    "Please summarize the following document in three sentences, keeping the most important facts.",
    "Given a web search query, retrieve relevant passages that answer the query.",
    "Instruct: Given a question, retrieve documents that can help answer it\nQuery: how do vaccines work?",
    "Retrieval-augmented generation combines a retriever with a generator to ground answers in sources.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman and his clever daughter.",
    "THE END. Thank you for reading! Questions? Comments? Send them to the editor before Friday.",
    # Code
    "def embed(texts: list[str]) -> np.ndarray:\n    return model.encode(texts, normalize=True)\n",
    "fn main() {\n    let v: Vec<f32> = vec![1.0, 2.0, 3.0];\n    println!(\"{:?}\", v.iter().sum::<f32>());\n}\n",
    "for (int i = 0; i < n; ++i) { total += values[i] * weights[i]; }  // dot product",
    "SELECT id, title FROM documents WHERE score > 0.75 ORDER BY score DESC LIMIT 10;",
    "import torch\nx = torch.randn(4, 8)\ny = x @ x.T\nprint(y.shape)  # torch.Size([4, 4])\n",
    "<div class=\"result\"><a href=\"https://example.com/page?id=42&lang=en\">Example</a></div>",
    '{"model": "Qwen3-Embedding-0.6B", "input": ["hello", "world"], "dimensions": 1024}',
    "if x != None and len(x) >= 3:\n\tprint('ok')\nelse:\n\traise ValueError(\"bad input\")\n",
    "$ cargo build --release && ./target/release/server --port 8080 --model-id Qwen/Qwen3-Embedding",
    # Numbers
    "3.14159 2.71828 1.41421 0.57721 1,000,000 42 007 2024-06-05 12:30:45 +1 (555) 010-9999",
    "Prices: $19.99, €25,00, £7.50, ¥1200, ₹999; totals 1234567890 and 9876543210.",
    "Version 1.2.3-rc.4, build #5678, 99.9% uptime, 0x1F600, 1e-6, -273.15°C.",
    # Chinese
    "今天天气很好，我们去公园散步吧。中国的首都是北京，上海是最大的城市。",
    "机器学习模型从数据中学习规律。文本嵌入把句子变成向量，用于检索和排序。",
    "请根据以下文档回答问题：什么是人工智能？人工智能是计算机科学的一个分支。",
    # Japanese
    "今日はいい天気ですね。東京は日本の首都です。ラーメンとすしが好きです。",
    "カタカナとひらがなと漢字を混ぜて書きます。埋め込みベクトルで検索します。",
    # Korean
    "안녕하세요. 오늘 날씨가 정말 좋네요. 서울은 한국의 수도입니다.",
    "한국어 문장을 벡터로 바꾸어 검색에 사용합니다. 감사합니다!",
    # Emoji, ZWJ sequences, flags, skin tones
    "I love this! 😀😂🥲❤️👍 Great job 🎉🎉 🚀 to the moon 🌕",
    "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍👨 technologist: 🧑🏽‍💻 wave: 👋🏿 👋🏻",
    "Flags: 🇯🇵 🇫🇷 🇺🇸 🇨🇳 🇰🇷 🇩🇪 🇧🇷 🏳️‍🌈 🏴‍☠️",
    # Arabic, Hebrew
    "مرحبا بالعالم. اللغة العربية تكتب من اليمين إلى اليسار.",
    "شكرا جزيلا، كيف حالك اليوم؟ أنا بخير والحمد لله.",
    "שלום עולם. עברית נכתבת מימין לשמאל.",
    "תודה רבה, מה שלומך היום?",
    # Accented and other scripts; decomposed combining marks (NFC composes them before training)
    "café naïve résumé façade jalapeño Ångström Straße Øresund Łódź Dvořák crème brûlée",
    "Ελληνικά: Καλημέρα κόσμε. Русский: Привет, мир! Українська: Добрий день.",
    "Cafe\u0301 and re\u0301sume\u0301 written with combining acute accents, plus n\u0303 and u\u0308.",
    "Tiếng Việt có nhiều dấu: Xin chào, cảm ơn bạn rất nhiều. हिन्दी: नमस्ते दुनिया। ไทย: สวัสดีครับ",
    # Whitespace variants
    "  leading spaces\tand\ttabs\r\nwindows line\r\nendings\n\n\nmany blank lines   trailing   ",
    "    indented block\n        more indented\n    back\n",
]


def build_tokenizer() -> Tokenizer:
    """Trains a byte-level BPE tokenizer assembled the way Qwen's is, then appends special tokens."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus a few times with small variations so frequent pairs are well defined.
    lines = []
    for i in range(3):
        for line in CORPUS:
            lines.append(line if i == 0 else f"{line} {i}")
    tok.train_from_iterator(lines, trainer=trainer)
    # Added after training so they get the last ids, as in Qwen (<|endoftext|> = 151643 there).
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


# Qwen's files spell every ByteLevel component (pre-tokenizer, post-processor, decoder) like this.
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}


def tokenizer_json(tok: Tokenizer, variant: str) -> str:
    """The tokenizer.json text for a variant: "embed" appends <|endoftext|>, "plain" does not."""
    tok = Tokenizer.from_str(tok.to_str())  # a copy
    if variant == "plain":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    elif variant == "embed":
        eos_id = tok.token_to_id(EOS)
        template = processors.TemplateProcessing(
            single=f"$A {EOS}",
            pair=f"$A {EOS} $B {EOS}",
            special_tokens=[(EOS, eos_id)],
        )
        tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
    else:
        raise ValueError(variant)
    data = json.loads(tok.to_str())
    # Match the field values of Qwen's tokenizer.json (none of these change the ids).
    data["pre_tokenizer"]["pretokenizers"][1] = BYTE_LEVEL
    data["decoder"] = BYTE_LEVEL
    if variant == "plain":
        data["post_processor"] = BYTE_LEVEL
    else:
        data["post_processor"]["processors"][0] = BYTE_LEVEL
    data["model"]["continuing_subword_prefix"] = ""
    data["model"]["end_of_word_suffix"] = ""
    text = json.dumps(data, ensure_ascii=False, indent=2)
    Tokenizer.from_str(text)  # a malformed file fails here, not in the tests
    return text


def tokenizer_config(max_length: int) -> dict:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {},  # filled by the caller
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": max_length,
        "pad_token": EOS,
        "padding_side": "left",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

MODEL_SPECS = {
    "gqa-bf16": dict(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        intermediate_size=96, rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=128,
        dtype=torch.bfloat16, prefix="", shards=1, tokenizer="embed", rope_form="top_level",
        architectures=["Qwen3Model"], sentence_transformers=True, seed=1001,
    ),
    "mqa-f16-prefix": dict(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        intermediate_size=80, rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=256,
        dtype=torch.float16, prefix="model.", shards=1, tokenizer="plain", rope_form="top_level",
        architectures=["Qwen3ForCausalLM"], sentence_transformers=False, seed=2002,
    ),
    # theta 50000 here, unlike transformers' default of 10000, so a loader that misses
    # `rope_parameters` and falls back to a default cannot pass by luck.
    "mha-f32-sharded": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
        intermediate_size=64, rope_theta=50000.0, tie_word_embeddings=False, max_position_embeddings=512,
        dtype=torch.float32, prefix="", shards=2, tokenizer="embed", rope_form="rope_parameters",
        architectures=["Qwen3Model"], sentence_transformers=False, seed=3003,
    ),
}

DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def model_vocab_size(tokenizer_size: int) -> int:
    """Tokenizer size rounded up to a multiple of 64, always leaving some ids the tokenizer lacks."""
    return (tokenizer_size // 64 + 1) * 64


def build_model(spec: dict, vocab_size: int, eos_id: int) -> tuple[Qwen3Model, Qwen3Config]:
    cfg = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        head_dim=spec["head_dim"],
        hidden_act="silu",
        max_position_embeddings=spec["max_position_embeddings"],
        rms_norm_eps=1e-6,
        rope_parameters={"rope_theta": spec["rope_theta"], "rope_type": "default"},
        attention_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=spec["tie_word_embeddings"],
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=spec["num_hidden_layers"],
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        attn_implementation="eager",
    )
    torch.manual_seed(spec["seed"])
    model = Qwen3Model(cfg).eval()
    gen = torch.Generator().manual_seed(spec["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name.endswith("norm.weight"):  # input/post_attention layernorm, q/k norm, final norm
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif name.endswith("proj.weight"):  # Linear: (out, in)
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            else:
                raise AssertionError(f"unexpected parameter {name}")
            # The reference computes with exactly the values the checkpoint stores.
            p.copy_(p.to(spec["dtype"]).to(torch.float32))
    assert model.config._attn_implementation == "eager"
    # The RoPE frequencies the model uses come from the theta written to config.json.
    d = spec["head_dim"]
    want = 1.0 / (spec["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    torch.testing.assert_close(model.rotary_emb.inv_freq, want)
    return model, cfg


def config_json(cfg: Qwen3Config, spec: dict) -> dict:
    """config.json with the keys the published Qwen3 checkpoints carry, read off the model's config."""
    keys = [
        "attention_bias", "attention_dropout", "bos_token_id", "eos_token_id", "head_dim", "hidden_act",
        "hidden_size", "initializer_range", "intermediate_size", "max_position_embeddings",
        "max_window_layers", "model_type", "num_attention_heads", "num_hidden_layers",
        "num_key_value_heads", "rms_norm_eps", "sliding_window", "tie_word_embeddings",
        "use_cache", "use_sliding_window", "vocab_size",
    ]
    data = {k: getattr(cfg, k) for k in keys}
    data["architectures"] = spec["architectures"]
    data["transformers_version"] = transformers.__version__
    assert cfg.rope_parameters == {"rope_theta": spec["rope_theta"], "rope_type": "default"}
    if spec["rope_form"] == "top_level":
        # The published Qwen3-Embedding configs (transformers 4.x): a bare top-level rope_theta.
        data["rope_scaling"] = None
        data["rope_theta"] = spec["rope_theta"]
        data["torch_dtype"] = DTYPE_NAMES[spec["dtype"]]
    else:
        # transformers >= 5 exports: RoPE settings grouped under rope_parameters, `dtype` renamed.
        data["rope_parameters"] = dict(cfg.rope_parameters)
        data["layer_types"] = list(cfg.layer_types)
        data["dtype"] = DTYPE_NAMES[spec["dtype"]]
    return dict(sorted(data.items()))


def save_weights(model: Qwen3Model, spec: dict, out: Path) -> None:
    tensors = {
        spec["prefix"] + name: p.detach().to(spec["dtype"]).contiguous()
        for name, p in model.named_parameters()
    }
    meta = {"format": "pt"}
    if spec["shards"] == 1:
        save_file(tensors, out / "model.safetensors", metadata=meta)
    else:
        names = list(tensors)  # parameter order: embeddings, layer 0, layer 1, ..., final norm
        n = spec["shards"]
        per = math.ceil(len(names) / n)
        weight_map = {}
        for i in range(n):
            fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            chunk = names[i * per : (i + 1) * per]
            save_file({k: tensors[k] for k in chunk}, out / fname, metadata=meta)
            weight_map.update({k: fname for k in chunk})
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    # Read the files back: what is on disk must be bit-for-bit what the reference uses.
    loaded = {}
    for f in sorted(out.glob("*.safetensors")):
        loaded.update(load_file(f))
    assert set(loaded) == set(tensors)
    for name, p in model.named_parameters():
        t = loaded[spec["prefix"] + name]
        assert t.dtype == spec["dtype"], name
        assert torch.equal(t.to(torch.float32), p.detach()), name


# ---------------------------------------------------------------------------------------------
# Reference computation
# ---------------------------------------------------------------------------------------------


class Reference:
    """The recipe from the Qwen3-Embedding model card, over one fixture model directory."""

    def __init__(self, name: str, spec: dict, model: Qwen3Model, model_dir: Path):
        self.name = name
        self.spec = spec
        self.model = model
        # transformers in bf16 (weights and activations), the yardstick for our bf16 path.
        self.model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
        self.hf = PreTrainedTokenizerFast(
            tokenizer_file=str(model_dir / "tokenizer.json"),
            eos_token=EOS,
            pad_token=EOS,
            padding_side="left",
        )
        self.raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.eos_id = self.hf.convert_tokens_to_ids(EOS)
        self.tokenizer_size = self.raw.get_vocab_size(with_added_tokens=True)
        st = model_dir / "config_sentence_transformers.json"
        self.prompts = json.loads(st.read_text())["prompts"] if st.exists() else {}

    def format(self, text: str, request: dict) -> str:
        if request.get("instruction") is not None:
            return f"Instruct: {request['instruction']}\nQuery:{text}"
        if request.get("prompt_name") is not None:
            return self.prompts[request["prompt_name"]] + text
        return text

    def tokenize_text(self, text: str, request: dict) -> list[int]:
        k = request.get("truncate_prompt_tokens")
        side = request.get("truncation_side", "right")
        content = self.raw.encode(text, add_special_tokens=False).ids
        if k is not None:
            assert k >= 2
            keep = k - 1  # room for the final <|endoftext|>
            if len(content) > keep:
                content = content[:keep] if side == "right" else content[len(content) - keep :]
        manual = content + [self.eos_id]

        self.hf.truncation_side = side
        if self.spec["tokenizer"] == "embed":
            # The post-processor appends <|endoftext|>; HF truncation reserves room for it.
            if k is None:
                ids = self.hf(text)["input_ids"]
            else:
                ids = self.hf(text, truncation=True, max_length=k)["input_ids"]
        else:
            # No EOS post-processor: Qwen's older recipe appends the EOS id by hand.
            ids = self.hf(text)["input_ids"]
            if k is not None and len(ids) > k - 1:
                ids = ids[: k - 1] if side == "right" else ids[len(ids) - (k - 1) :]
            ids = ids + [self.eos_id]
        assert ids == manual, (self.name, text, ids, manual)
        assert ids == self._raw_with_post_processor(text, k, side), (self.name, text)
        return ids

    def _raw_with_post_processor(self, text: str, k: int | None, side: str) -> list[int]:
        """The same ids through the bare `tokenizers` library, as the Rust side will get them."""
        tok = Tokenizer.from_str(self.raw.to_str())
        if k is not None and self.spec["tokenizer"] == "embed":
            tok.enable_truncation(max_length=k, direction=side)
        ids = tok.encode(text).ids
        if self.spec["tokenizer"] == "plain":
            if k is not None and len(ids) > k - 1:
                ids = ids[: k - 1] if side == "right" else ids[len(ids) - (k - 1) :]
            ids = ids + [self.eos_id]
        return ids

    def token_ids(self, request: dict) -> list[list[int]]:
        inp = request["input"]
        if isinstance(inp, str):
            inp = [inp]
        assert isinstance(inp, list) and inp
        if all(isinstance(x, int) for x in inp):  # one token-id input
            return [list(inp)]
        if all(isinstance(x, list) for x in inp):  # a batch of token-id inputs, fed as given
            for row in inp:
                assert row and all(0 <= t < self.tokenizer_size for t in row)
            return [list(row) for row in inp]
        assert all(isinstance(x, str) for x in inp)
        return [self.tokenize_text(self.format(t, request), request) for t in inp]

    @torch.no_grad()
    def hidden(self, batch: list[list[int]], bf16: bool = False) -> torch.Tensor:
        """Last-token hidden states of a left-padded batch (pad id = EOS id), as f32."""
        width = max(len(r) for r in batch)
        ids = torch.full((len(batch), width), self.eos_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        model = self.model_bf16 if bf16 else self.model
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        return out[:, -1].to(torch.float32)

    @staticmethod
    def finish(h: torch.Tensor, request: dict) -> torch.Tensor:
        if request.get("dimensions") is not None:
            h = h[:, : request["dimensions"]]
        if request.get("normalize", True):
            h = torch.nn.functional.normalize(h, p=2, dim=-1)
        return h

    def run_case(self, case_id: str, request: dict) -> dict:
        batch = self.token_ids(request)
        max_len = self.spec["max_position_embeddings"]
        assert all(len(r) <= max_len for r in batch), (self.name, case_id, [len(r) for r in batch])
        emb = self.finish(self.hidden(batch), request)
        for i, row in enumerate(batch):
            alone = self.finish(self.hidden([row]), request)[0]
            diff = (emb[i] - alone).abs().max().item()
            assert diff <= SELF_CHECK_TOL, (self.name, case_id, i, diff)
        assert torch.isfinite(emb).all()
        emb_bf16 = self.finish(self.hidden(batch, bf16=True), request)
        return {
            "id": case_id,
            "request": request,
            "token_ids": batch,
            "embeddings": [[float(v) for v in row] for row in emb.to(torch.float32).numpy()],
            "embeddings_bf16": [[float(v) for v in row] for row in emb_bf16.numpy()],
        }


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

LONG_TEXT = (  # ~100 tokens with the fixture tokenizer
    "Qwen3 Embedding turns a piece of text into a single vector: the hidden state of the final "
    "end-of-text token. Documents are embedded as they are, while queries get a short instruction "
    "in front."
)
MIXED_BATCH = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "def embed(texts):\n    return model.encode(texts)\n",
    LONG_TEXT,
]
CJK = ["今天天气很好，我们去公园散步吧。", "東京は日本の首都です。", "안녕하세요, 반갑습니다!", "混合 mixed 文本 テキスト 텍스트"]
EMOJI = ["I love this 😀🎉", "👨‍👩‍👧‍👦 family 🧑🏽‍💻 at work", "🇯🇵🇫🇷 flags 🏳️‍🌈"]
COMBINING = ["cafe\u0301 re\u0301sume\u0301", "café résumé", "n\u0303 u\u0308ber A\u030angstro\u0308m"]
RTL = ["مرحبا بالعالم", "שלום עולם", "Mixed: English then العربية then עברית."]
WHITESPACE = ["  leading and trailing  ", "\nnew lines\n\n", "\ttab\r\nCRLF line\r\n", "word   "]
QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
]
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def cases_for(name: str, ref: Reference) -> list[tuple[str, dict]]:
    # Token ids drawn from the tokenizer's vocabulary; one row ends in <|endoftext|>, the others not.
    rng = np.random.default_rng(ref.spec["seed"])
    size = ref.tokenizer_size
    ids_single = [int(x) for x in rng.integers(0, size, 9)]
    ids_batch = [
        [int(x) for x in rng.integers(0, size, 3)],
        [int(x) for x in rng.integers(0, size, 12)],
        [int(x) for x in rng.integers(0, size, 6)] + [ref.eos_id],
        [int(rng.integers(0, size))],
    ]

    common = [
        ("single_string", {"input": "The quick brown fox jumps over the lazy dog."}),
        ("batch_mixed_lengths", {"input": MIXED_BATCH}),
        ("cjk", {"input": CJK}),
        ("emoji_zwj_flags", {"input": EMOJI}),
        ("combining_marks_nfc", {"input": COMBINING}),
        ("rtl_arabic_hebrew", {"input": RTL}),
        ("whitespace_newlines", {"input": WHITESPACE}),
        ("literal_endoftext_in_text", {"input": ["before <|endoftext|> after", "<|endoftext|>"]}),
        ("single_space", {"input": " "}),
        ("instruction", {"input": QUERIES, "instruction": INSTRUCTION}),
        ("dimensions_8", {"input": QUERIES + DOCS, "dimensions": 8}),
        ("dimensions_16", {"input": QUERIES + DOCS, "dimensions": 16}),
        ("dimensions_full", {"input": QUERIES + DOCS, "dimensions": ref.spec["hidden_size"]}),
        ("normalize_false", {"input": DOCS, "normalize": False}),
        ("truncate_5_right", {"input": LONG_TEXT, "truncate_prompt_tokens": 5, "truncation_side": "right"}),
        ("truncate_5_left", {"input": LONG_TEXT, "truncate_prompt_tokens": 5, "truncation_side": "left"}),
        ("token_ids_single", {"input": ids_single}),
        ("token_ids_batch", {"input": ids_batch}),
        ("duplicates_in_batch", {"input": ["same text", "another one", "same text", "same text"]}),
    ]
    if name == "gqa-bf16":
        return common + [
            ("prompt_name_query", {"input": QUERIES, "prompt_name": "query"}),
            ("prompt_name_document", {"input": DOCS, "prompt_name": "document"}),
            ("instruction_dimensions_8", {"input": QUERIES, "instruction": INSTRUCTION, "dimensions": 8}),
            ("dimensions_16_normalize_false", {"input": DOCS, "dimensions": 16, "normalize": False}),
            ("truncate_batch_left", {"input": MIXED_BATCH, "truncate_prompt_tokens": 12, "truncation_side": "left"}),
            ("truncate_longer_than_text", {"input": "short text", "truncate_prompt_tokens": 64, "truncation_side": "right"}),
            ("truncate_2_right", {"input": LONG_TEXT, "truncate_prompt_tokens": 2, "truncation_side": "right"}),
        ]
    keep = {
        "single_string", "batch_mixed_lengths", "cjk", "emoji_zwj_flags", "combining_marks_nfc",
        "whitespace_newlines", "literal_endoftext_in_text", "instruction", "dimensions_8",
        "normalize_false", "truncate_5_right", "truncate_5_left", "token_ids_single",
        "token_ids_batch", "duplicates_in_batch",
    }
    if name == "mha-f32-sharded":
        keep |= {"rtl_arabic_hebrew", "single_space", "dimensions_16"}
    return [c for c in common if c[0] in keep]


# ---------------------------------------------------------------------------------------------


def check_roundtrip(model_dir: Path, ref: Reference) -> None:
    """Loading the written directory with transformers gives the same model as the in-memory one."""
    loaded = Qwen3Model.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    theta = loaded.config.rope_parameters["rope_theta"]
    assert theta == ref.spec["rope_theta"], (model_dir.name, theta)
    for (n1, p1), (n2, p2) in zip(ref.model.named_parameters(), loaded.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2), (model_dir.name, n1, n2)
    torch.testing.assert_close(loaded.rotary_emb.inv_freq, ref.model.rotary_emb.inv_freq, rtol=0, atol=0)


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    # Only this script's own models and recordings are replaced (make_reranker_fixtures.py and
    # make_quantize_fixtures.py write theirs beside them).
    for name in MODEL_SPECS:
        shutil.rmtree(FIXTURES / "models" / name, ignore_errors=True)
        (FIXTURES / "expected" / f"{name}.json").unlink(missing_ok=True)
    (FIXTURES / "models").mkdir(parents=True, exist_ok=True)
    (FIXTURES / "expected").mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer()
    tokenizer_size = tok.get_vocab_size(with_added_tokens=True)
    eos_id = tok.token_to_id(EOS)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(tokenizer_size - 4, tokenizer_size))
    vocab_size = model_vocab_size(tokenizer_size)
    print(f"tokenizer: {tokenizer_size} tokens, <|endoftext|> = {eos_id}, model vocab_size = {vocab_size}")

    for name, spec in MODEL_SPECS.items():
        out = FIXTURES / "models" / name
        out.mkdir()
        (out / "tokenizer.json").write_text(tokenizer_json(tok, spec["tokenizer"]) + "\n")
        tcfg = tokenizer_config(spec["max_position_embeddings"])
        tcfg["added_tokens_decoder"] = {
            str(tok.token_to_id(t)): {
                "content": t, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True,
            }
            for t in SPECIAL_TOKENS
        }
        (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2, ensure_ascii=False) + "\n")
        if spec["sentence_transformers"]:
            st = {
                "prompts": {"query": QUERY_PROMPT, "document": ""},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            }
            (out / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2) + "\n")

        model, cfg = build_model(spec, vocab_size, eos_id)
        (out / "config.json").write_text(json.dumps(config_json(cfg, spec), indent=2) + "\n")
        save_weights(model, spec, out)

        ref = Reference(name, spec, model, out)
        cases = [ref.run_case(cid, req) for cid, req in cases_for(name, ref)]
        assert len({c["id"] for c in cases}) == len(cases)
        check_roundtrip(out, ref)

        # Different texts must give clearly different vectors, or the fixtures test nothing.
        e = np.array(next(c for c in cases if c["id"] == "batch_mixed_lengths")["embeddings"])
        cos = e @ e.T
        off = cos[~np.eye(len(e), dtype=bool)]
        assert off.max() < 0.98, (name, off.max())

        expected = {"model": name, "cases": cases}
        (FIXTURES / "expected" / f"{name}.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n")
        lens = [len(r) for c in cases for r in c["token_ids"]]
        print(f"{name}: {len(cases)} cases, token lengths {min(lens)}..{max(lens)}, max cos between texts {off.max():.3f}")

    total = sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file())
    print(f"wrote {FIXTURES.relative_to(ROOT)} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
