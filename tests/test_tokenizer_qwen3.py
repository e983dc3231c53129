"""Our tokenization on the real Qwen3 vocabulary equals the `tokenizers` library's.

The shared Qwen3 tokenizer.json is the base one (no post-processor appending <|endoftext|>); the
Qwen3-Embedding checkpoints add a TemplateProcessing post-processor. Both forms are checked: with
the post-processor the library's ids must equal ours exactly; without it, ours must be the
library's ids plus <|endoftext|>, which candle-embed appends itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")

from candle_embed import EmbeddingRequest, Tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "qwen3-tokenizer" / "tokenizer.json"
pytestmark = pytest.mark.skipif(not SHARED.is_file(), reason=f"needs the shared Qwen3 vocabulary at {SHARED}")

TEXTS = [
    "Graphene conductivity",
    "Explain superconductors in simple terms.",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:What is the capital of China?",
    "The capital of China is Beijing. 中国的首都是北京。",
    "日本語のテキストと한국어 텍스트가 섞여 있습니다.",
    "Emoji: 👩‍👩‍👧‍👦 🇯🇵 🏳️‍🌈 👍🏽 and text",
    "café vs cafe\u0301 — résumé, naïve, Ångström",
    "مرحبا بالعالم. שלום עולם.",
    "   leading and trailing spaces   ",
    "\n\nnew\r\nlines\tand\ttabs\n",
    "def f(x):\n    return x ** 2  # square\n",
    "numbers 1234567890 3.14159 1e-6 0xFF",
    "literal special token <|endoftext|> inside text <|im_start|>user",
    "It's they're we've I'm you'll he'd",
    "a" * 300,
    "Ünïcödé ſtrange ﬁ ligature ＦＵＬＬＷＩＤＴＨ",
    " ",
    "!",
    "https://example.com/path?query=1&b=2#frag",
    "The quick brown fox jumps over the lazy dog. " * 40,
]


def _with_embedding_postprocessor(src: Path, dst: Path) -> Path:
    spec = json.loads(src.read_text(encoding="utf-8"))
    eos_id = next(t["id"] for t in spec["added_tokens"] if t["content"] == "<|endoftext|>")
    spec["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            {
                "type": "TemplateProcessing",
                "single": [
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                ],
                "pair": [
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                    {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}},
                ],
                "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [eos_id], "tokens": ["<|endoftext|>"]}},
            },
        ],
    }
    dst.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def embed_json(tmp_path_factory) -> Path:
    return _with_embedding_postprocessor(SHARED, tmp_path_factory.mktemp("qwen3") / "tokenizer.json")


def test_embedding_tokenizer_matches_library(embed_json: Path) -> None:
    reference = tokenizers.Tokenizer.from_file(str(embed_json))
    ours = Tokenizer(embed_json)
    assert ours.appends_eos
    assert ours.eos_id == reference.token_to_id("<|endoftext|>")
    expected = [enc.ids for enc in reference.encode_batch(TEXTS)]
    assert ours.encode(EmbeddingRequest(input=TEXTS)) == expected
    assert all(ids[-1] == ours.eos_id for ids in expected)


def test_base_tokenizer_gets_eos_appended() -> None:
    reference = tokenizers.Tokenizer.from_file(str(SHARED))
    ours = Tokenizer(SHARED)
    assert not ours.appends_eos
    eos = reference.token_to_id("<|endoftext|>")
    expected = [enc.ids + [eos] for enc in reference.encode_batch(TEXTS)]
    assert ours.encode(EmbeddingRequest(input=TEXTS)) == expected


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("max_tokens", [1, 2, 7, 64])
def test_truncation_matches_library(embed_json: Path, side: str, max_tokens: int) -> None:
    reference = tokenizers.Tokenizer.from_file(str(embed_json))
    reference.enable_truncation(max_length=max_tokens, direction=side)
    ours = Tokenizer(embed_json)
    expected = [enc.ids for enc in reference.encode_batch(TEXTS)]
    request = EmbeddingRequest(input=TEXTS, truncate_prompt_tokens=max_tokens, truncation_side=side)
    got = ours.encode(request)
    assert got == expected
    assert all(len(ids) <= max_tokens and ids[-1] == ours.eos_id for ids in got)
