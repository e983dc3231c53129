#!/usr/bin/env python3
"""Regenerate the reranker fixtures: two tiny Qwen3-Reranker-style models and reference scores.

Run by hand, never in CI, after scripts/make_fixtures.py (which deletes tests/fixtures/ as a whole):

    python3 scripts/make_reranker_fixtures.py

Needs torch, transformers (>= 5), tokenizers, safetensors, numpy, and sentence-transformers (>= 6)
for the cross-check at the end. Everything is deterministic (fixed seeds, CPU, one thread, eager
attention), so running it twice gives the same files.

What it writes (only these folders and files are deleted and recreated):

    tests/fixtures/models/<name>/        config.json, model.safetensors (bfloat16),
                                         tokenizer_config.json (the real Qwen3 file), tokenizer.json
                                         (a link to ../shared/qwen3-tokenizer/tokenizer.json)
    tests/fixtures/expected/<name>.json  {"model", "yes_id", "no_id", "prefix_tokens", "suffix_tokens",
                                          "max_length",
                                          "cases": [{"id", "query", "documents", "instruction",
                                                     "max_length", "token_ids", "logits", "scores",
                                                     "scores_bf16"}]}

for <name> in reranker-tied (tie_word_embeddings, no lm_head tensor) and reranker-untied (its own
`lm_head.weight`). Both are random-weight `transformers.Qwen3ForCausalLM`s with the real Qwen3
vocabulary (151669 ids), saved as transformers saves a CausalLM (`model.` prefix).

The references follow the Qwen3-Reranker model card exactly:

  * a (query, document) pair becomes prefix + middle + suffix, where
      prefix = <|im_start|>system\\nJudge whether ... "yes" or "no".<|im_end|>\\n<|im_start|>user\\n
      middle = <Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}
      suffix = <|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n
    with instruction None -> "Given a web search query, retrieve relevant passages that answer the
    query" (an empty string stays empty);
  * prefix and suffix are `tokenizer.encode(..., add_special_tokens=False)`; the middles go through
    the card's `tokenizer(pairs, padding=False, truncation='longest_first',
    return_attention_mask=False, max_length=max_length - len(prefix) - len(suffix))`. Qwen3's
    tokenizer.json has a bare ByteLevel post-processor, so that call adds no special tokens: it is
    the same as `add_special_tokens=False` followed by keeping the first
    max_length - len(prefix) - len(suffix) ids (checked for every text below);
  * sequence = prefix_tokens + middle_tokens + suffix_tokens, left-padded with <|endoftext|> by
    `tokenizer.pad` into one batch per case, as the card does;
  * score = exp(log_softmax([logit_no, logit_yes]))[1] at the last position, i.e.
    softmax([no, yes])[1] = sigmoid(yes - no), with yes/no = tokenizer.convert_tokens_to_ids.

`logits` and `scores` come from the float32 model (weights exactly the stored bfloat16 values),
run as the card runs them: the whole case as one left-padded batch; every pair is also run alone and
must agree within SELF_CHECK_TOL. `scores_bf16` come from the same model cast to bfloat16 in
transformers (weights and activations), each pair run alone (no padding, positions from 0), with
the final two-way softmax taken in float32: the yardstick for a bf16 path.

At the end the scores are cross-checked, by hand, against sentence-transformers' CrossEncoder, both
through the published sequence-classification conversion (score weight = lm_head[yes] -
lm_head[no], sigmoid) and through sentence-transformers' own causal-LM route (LogitScore); see
`cross_check_cross_encoder` for what can and cannot be compared.

Over 600 lines on purpose: the models, the recipe's reference scores and the by-hand
sentence-transformers cross-check belong to one run of one script.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM, Qwen3ForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
QWEN3_TOKENIZER = ROOT.parent / "shared" / "qwen3-tokenizer"

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
PAD = "<|endoftext|>"  # the card pads with the tokenizer's pad token, <|endoftext|> in Qwen3

VOCAB_SIZE = 151669  # the real Qwen3 tokenizer's size, as in the published Qwen3-Reranker configs
MAX_LENGTH = 128  # = max_position_embeddings; the card's limit is 8192 for the real models

# How close a pair run alone must be to the same pair inside the left-padded batch (float32, eager).
SELF_CHECK_TOL = 1e-5
# How close sentence-transformers' CrossEncoder must come to the recorded float32 scores.
CROSS_ENCODER_TOL = 1e-5
# Every recorded float32 score lies strictly inside this interval (none saturated)...
SCORE_BOUNDS = (0.05, 0.95)
# ... and over all cases they spread at least this far (max - min).
MIN_SCORE_SPREAD = 0.5
# Knocking out one part of the model (a layer, the q/k norms, the final norm, the untied head) must
# move some score by at least this much, or that part could be loaded wrongly unnoticed.
MIN_ABLATION_EFFECT = 0.05

DTYPE = torch.bfloat16

# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

# Shared sizes. hidden_size 16 is possible because Qwen3's head_dim is independent of it
# (q_proj: 16 -> 2 x 16, k_proj/v_proj: 16 -> 16, o_proj: 32 -> 16).
SIZES = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
    intermediate_size=32, max_position_embeddings=MAX_LENGTH, rms_norm_eps=1e-6, rope_theta=1000000.0,
)

# Init scales, tuned by hand so that the scores spread without saturating (checked in main):
# every sequence ends in the same 9 suffix tokens, so with a plain init the last position's state is
# nearly the same for all inputs and the scores barely move. Sharp attention (q_norm/k_norm weights
# x qk_norm_scale) and small embeddings (embed_scale, so attention and MLP outputs dominate the
# residual stream) make the last position depend on the query and the document; final_norm_scale
# (and head_scale for the untied head) set the size of logit_yes - logit_no.
MODEL_SPECS = {
    # A transformers 4.x style export with a tied head: bare top-level rope_theta, `torch_dtype`.
    "reranker-tied": dict(
        tie_word_embeddings=True, seed=5, embed_scale=0.3, qk_norm_scale=3.0, final_norm_scale=0.75,
        head_scale=None, rope_form="top_level",
    ),
    # A transformers >= 5 export with its own head: `rope_parameters`, `dtype`, `lm_head.weight`.
    "reranker-untied": dict(
        tie_word_embeddings=False, seed=3, embed_scale=0.3, qk_norm_scale=3.0, final_norm_scale=0.3,
        head_scale=1.0, rope_form="rope_parameters",
    ),
}


def model_config(spec: dict, pad_id: int, eos_id: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=SIZES["hidden_size"],
        intermediate_size=SIZES["intermediate_size"],
        num_hidden_layers=SIZES["num_hidden_layers"],
        num_attention_heads=SIZES["num_attention_heads"],
        num_key_value_heads=SIZES["num_key_value_heads"],
        head_dim=SIZES["head_dim"],
        hidden_act="silu",
        max_position_embeddings=SIZES["max_position_embeddings"],
        rms_norm_eps=SIZES["rms_norm_eps"],
        rope_parameters={"rope_theta": SIZES["rope_theta"], "rope_type": "default"},
        attention_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=spec["tie_word_embeddings"],
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=SIZES["num_hidden_layers"],
        bos_token_id=pad_id,  # as in the published Qwen3 configs: bos <|endoftext|>, eos <|im_end|>
        eos_token_id=eos_id,
        attn_implementation="eager",
    )


def build_model(spec: dict, cfg: Qwen3Config) -> Qwen3ForCausalLM:
    torch.manual_seed(spec["seed"])
    model = Qwen3ForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(spec["seed"])
    names = []
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied head is not listed: it is embed_tokens
            names.append(name)
            if name == "model.embed_tokens.weight":
                p.copy_(torch.randn(p.shape, generator=gen) * spec["embed_scale"])
            elif name == "lm_head.weight":
                p.copy_(torch.randn(p.shape, generator=gen) * spec["head_scale"])
            elif name == "model.norm.weight":
                p.copy_((torch.rand(p.shape, generator=gen) + 0.5) * spec["final_norm_scale"])
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_((torch.rand(p.shape, generator=gen) + 0.5) * spec["qk_norm_scale"])
            elif name.endswith("layernorm.weight"):  # input / post_attention
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif name.endswith("proj.weight"):  # Linear: (out, in)
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            else:
                raise AssertionError(f"unexpected parameter {name}")
            # The reference computes with exactly the values the checkpoint stores.
            p.copy_(p.to(DTYPE).to(torch.float32))
    assert ("lm_head.weight" in names) != spec["tie_word_embeddings"], names
    if spec["tie_word_embeddings"]:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config._attn_implementation == "eager"
    return model


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
    data["architectures"] = ["Qwen3ForCausalLM"]
    data["transformers_version"] = transformers.__version__
    assert data["model_type"] == "qwen3"
    assert cfg.rope_parameters == {"rope_theta": SIZES["rope_theta"], "rope_type": "default"}
    if spec["rope_form"] == "top_level":
        data["rope_scaling"] = None
        data["rope_theta"] = SIZES["rope_theta"]
        data["torch_dtype"] = "bfloat16"
    else:
        data["rope_parameters"] = dict(cfg.rope_parameters)
        data["layer_types"] = list(cfg.layer_types)
        data["dtype"] = "bfloat16"
    return dict(sorted(data.items()))


def save_weights(model: Qwen3ForCausalLM, out: Path) -> None:
    """model.safetensors as transformers saves a CausalLM: `model.` prefix, lm_head only if untied."""
    tensors = {name: p.detach().to(DTYPE).contiguous() for name, p in model.named_parameters()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    loaded = load_file(out / "model.safetensors")
    assert set(loaded) == set(tensors)
    for name, p in model.named_parameters():
        assert loaded[name].dtype == DTYPE, name
        assert torch.equal(loaded[name].to(torch.float32), p.detach()), name


def load_reference_model(out: Path, built: Qwen3ForCausalLM, spec: dict) -> Qwen3ForCausalLM:
    """The written folder read back by transformers, in float32: the model the references come from.

    It must be the model that was built, parameter for parameter, with the head tied or not as
    config.json says and RoPE frequencies from the theta written there."""
    model = Qwen3ForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    assert model.config.rope_parameters["rope_theta"] == SIZES["rope_theta"]
    for (n1, p1), (n2, p2) in zip(built.named_parameters(), model.named_parameters(), strict=True):
        assert n1 == n2 and p2.dtype == torch.float32 and torch.equal(p1, p2), (out.name, n1, n2)
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tied == spec["tie_word_embeddings"], out.name
    d = SIZES["head_dim"]
    want = 1.0 / (SIZES["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, want, rtol=0, atol=0)
    return model


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------


def format_middle(instruction: str | None, query: str, document: str) -> str:
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class Reference:
    """The Qwen3-Reranker model card's recipe over one fixture model folder."""

    def __init__(self, model: Qwen3ForCausalLM, model_dir: Path):
        self.model = model
        # transformers in bf16 (weights and activations), the yardstick for a bf16 path. Run per pair:
        # in bf16 a left-padded batch (positions shifted by the padding) moves scores by ~0.03.
        self.model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.prefix = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix = self.tokenizer.encode(SUFFIX, add_special_tokens=False)
        assert self.prefix == self.raw.encode(PREFIX, add_special_tokens=False).ids
        assert self.suffix == self.raw.encode(SUFFIX, add_special_tokens=False).ids
        self.yes_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.no_id = self.tokenizer.convert_tokens_to_ids("no")
        self.pad_id = self.tokenizer.convert_tokens_to_ids(PAD)
        assert self.tokenizer.pad_token_id == self.pad_id
        assert len({self.yes_id, self.no_id, self.pad_id, self.tokenizer.unk_token_id}) == 4
        self.worst_self_check = 0.0  # largest alone-vs-batch difference seen (logits or scores)

    def middle_budget(self, max_length: int) -> int:
        return max_length - len(self.prefix) - len(self.suffix)

    def token_ids(self, case: dict) -> tuple[list[list[int]], list[bool]]:
        """Full sequences for each document, and whether each middle was truncated."""
        middles = [format_middle(case["instruction"], case["query"], d) for d in case["documents"]]
        budget = self.middle_budget(case["max_length"])
        assert budget > 0
        # The card's call, verbatim (its `pairs` are already-formatted strings).
        card = self.tokenizer(
            middles, padding=False, truncation="longest_first", return_attention_mask=False, max_length=budget
        )["input_ids"]
        seqs, truncated = [], []
        for text, ids in zip(middles, card, strict=True):
            # No special tokens added: the same ids as add_special_tokens=False, cut on the right.
            full = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            assert full == self.tokenizer(text)["input_ids"], text
            assert full == self.raw.encode(text, add_special_tokens=False).ids == self.raw.encode(text).ids
            assert ids == full[:budget], text
            truncated.append(len(full) > budget)
            seq = self.prefix + ids + self.suffix
            assert len(seq) <= case["max_length"]
            if not truncated[-1]:
                # Untruncated, the sequence is also the plain tokenization of the whole text (the
                # special tokens and newlines at the seams split the text the same way).
                assert seq == self.raw.encode(PREFIX + text + SUFFIX, add_special_tokens=False).ids, text
            seqs.append(seq)
        return seqs, truncated

    @torch.no_grad()
    def logits(self, seqs: list[list[int]], bf16: bool = False, model: Qwen3ForCausalLM | None = None) -> torch.Tensor:
        """[[no, yes], ...] at the last position of a left-padded batch, as the card computes them."""
        inputs = self.tokenizer.pad({"input_ids": seqs}, padding=True, return_tensors="pt")
        width = max(len(s) for s in seqs)
        for i, s in enumerate(seqs):  # left padding with <|endoftext|>, as the card gets it
            row = inputs["input_ids"][i].tolist()
            assert row == [self.pad_id] * (width - len(s)) + s
            assert inputs["attention_mask"][i].tolist() == [0] * (width - len(s)) + [1] * len(s)
        if model is None:
            model = self.model_bf16 if bf16 else self.model
        last = model(**inputs).logits[:, -1, :].to(torch.float32)
        return torch.stack([last[:, self.no_id], last[:, self.yes_id]], dim=1)

    @staticmethod
    def scores(logits: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.log_softmax(logits, dim=1)[:, 1].exp()

    def run_case(self, case: dict) -> tuple[dict, list[bool]]:
        seqs, truncated = self.token_ids(case)
        logits = self.logits(seqs)
        scores = self.scores(logits)
        assert torch.isfinite(logits).all()
        for i, seq in enumerate(seqs):
            alone = self.logits([seq])[0]
            diff = max((logits[i] - alone).abs().max().item(), (scores[i] - self.scores(alone[None])[0]).abs().item())
            assert diff <= SELF_CHECK_TOL, (case["id"], i, diff)
            self.worst_self_check = max(self.worst_self_check, diff)
        scores_bf16 = torch.cat([self.scores(self.logits([s], bf16=True)) for s in seqs])
        record = {
            "id": case["id"],
            "query": case["query"],
            "documents": case["documents"],
            "instruction": case["instruction"],
            "max_length": case["max_length"],
            "token_ids": seqs,
            "logits": [[float(v) for v in row] for row in logits.numpy()],
            "scores": [float(v) for v in scores.numpy()],
            "scores_bf16": [float(v) for v in scores_bf16.numpy()],
        }
        return record, truncated


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

CAPITAL_DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "Beijing, in northern China, has been the nation's capital for centuries.",
    "Paris is the capital of France.",
]
LONG_DOC = (  # well over the 80 tokens the middle may use at max_length 128
    "Gravity is the force by which a planet or other body draws objects toward its center. It keeps "
    "the Moon in orbit around the Earth and the Earth in orbit around the Sun; it shapes galaxies, "
    "bends light, slows clocks and, according to general relativity, is not a force at all but the "
    "curvature of spacetime caused by mass and energy. Newton described it with an inverse-square "
    "law; Einstein replaced that law with field equations that also predict gravitational waves."
)

CASES = [
    dict(id="plain_english", query="What is the capital of China?", documents=CAPITAL_DOCS),
    dict(
        id="cjk",
        query="中国的首都是哪里？",
        documents=["中国的首都是北京。", "東京は日本の首都です。", "서울은 한국의 수도입니다.", "今天天气很好，我们去公园散步吧。"],
    ),
    dict(
        id="emoji",
        query="Which emoji means a party? 🎉",
        documents=["🎉🎊 party time!", "👨‍👩‍👧‍👦 family dinner 🍝", "🇯🇵🇫🇷 flags 🏳️‍🌈", "I love this 😀👍"],
    ),
    dict(  # decomposed combining marks: NFC (in the tokenizer) composes them
        id="combining_marks",
        query="cafe\u0301 re\u0301sume\u0301",
        documents=["café résumé", "cafe\u0301 menu: cre\u0300me bru\u0302le\u0301e", "n\u0303 u\u0308ber A\u030angstro\u0308m"],
    ),
    dict(
        id="long_document_truncated",
        query="Explain gravity",
        documents=["Gravity is a force that attracts two bodies towards each other.", LONG_DOC],
        expect_truncated=[False, True],
    ),
    dict(
        id="empty_instruction",
        instruction="",
        query="What is the capital of China?",
        documents=CAPITAL_DOCS[:3],
    ),
    dict(
        id="custom_instruction",
        instruction="Given a question, retrieve documents that can help answer it",
        query="how do vaccines work?",
        documents=[
            "Vaccines train the immune system to recognise a pathogen without causing the disease.",
            "The stock market closed higher today.",
            "Antibodies are proteins that bind to specific antigens.",
        ],
    ),
    dict(
        id="query_with_newlines",
        query="first line\nsecond line\n\nafter a blank line\n",
        documents=["A text with\nseveral lines.", "one line only", "\nstarts with a newline"],
    ),
    dict(
        id="identical_documents",
        query="same or different?",
        documents=["same text", "A different document, about cooking pasta.", "same text", "same text"],
    ),
    dict(id="single_document", query="What is the capital of China?", documents=["The capital of China is Beijing."]),
    dict(  # a limit below the model's: the middle keeps 80 - 48 = 32 tokens
        id="max_length_80",
        instruction="Rank",
        query="capital of China",
        max_length=80,
        documents=[
            "Beijing is the capital of China and one of the largest cities in the world by population.",
            "Shanghai is the largest city in China by population and a global centre of finance, trade and shipping.",
            "Short.",
            "The quick brown fox jumps over the lazy dog, again and again, until it is tired.",
        ],
        expect_truncated=[True, True, False, True],
    ),
]


def normalized_cases() -> list[dict]:
    out = []
    for c in CASES:
        c = {"instruction": None, "max_length": MAX_LENGTH, **c}
        assert 1 <= len(c["documents"]) <= 6, c["id"]
        out.append(c)
    assert len({c["id"] for c in out}) == len(out)
    return out


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def ablation_effects(model: Qwen3ForCausalLM, ref: Reference, seqs: list[list[int]], spec: dict) -> dict:
    """How far the scores move when one part of the model is knocked out."""
    base = torch.cat([ref.scores(ref.logits([s])) for s in seqs])

    def effect(edit) -> float:
        edited = copy.deepcopy(model)
        edit(edited)
        moved = torch.cat([ref.scores(ref.logits([s], model=edited)) for s in seqs])
        return (moved - base).abs().max().item()

    def skip_layer(i):  # zero the layer's two residual writes: the layer becomes the identity
        def edit(m):
            m.model.layers[i].self_attn.o_proj.weight.zero_()
            m.model.layers[i].mlp.down_proj.weight.zero_()
        return edit

    def unit_qk_norms(m):
        for layer in m.model.layers:
            layer.self_attn.q_norm.weight.fill_(1.0)
            layer.self_attn.k_norm.weight.fill_(1.0)

    def unit_final_norm(m):
        m.model.norm.weight.fill_(1.0)

    effects = {f"layer {i}": effect(skip_layer(i)) for i in range(SIZES["num_hidden_layers"])}
    effects["q/k norms"] = effect(unit_qk_norms)
    effects["final norm"] = effect(unit_final_norm)
    if not spec["tie_word_embeddings"]:
        # A loader that ignores lm_head.weight and ties the head to the embeddings must fail.
        def tie(m):
            m.lm_head.weight = m.model.embed_tokens.weight
        effects["untied head"] = effect(tie)
    return effects


def cross_check_cross_encoder(model_dir: Path, model: Qwen3ForCausalLM, ref: Reference, records: list[dict]) -> None:
    """sentence-transformers' CrossEncoder must reproduce the recorded float32 scores.

    Two routes, fed the texts the way the published conversion's usage does: the pair
    (prefix + "<Instruct>: {i}\\n<Query>: {q}\\n", "<Document>: {d}" + suffix).

    * "seq-cls": the published conversion, a Qwen3ForSequenceClassification with one label whose
      score weight is lm_head[yes] - lm_head[no] (same body), read with a sigmoid:
      sigmoid((w_yes - w_no) . h) = softmax([no, yes])[1]. Saved in float32 so that the difference
      of the two bfloat16 rows is exact.
    * "causal-lm": sentence-transformers' own route for a *ForCausalLM folder (Transformer with
      text-generation + LogitScore: logit_yes - logit_no at the last position, then sigmoid).

    How CrossEncoder tokenizes (sentence_transformers/base/modules/transformer.py, `preprocess`):
    `tokenizer(texts_a, texts_b, padding=True, truncation="longest_first", return_tensors="pt")`,
    special tokens on (Qwen3's post-processor adds none, so a pair is the two encodings
    concatenated), max_length = tokenizer.model_max_length (131072 here, so no truncation); left
    padding for the causal-LM route, the tokenizer's side (right) for seq-cls, whose head takes the
    rightmost non-pad token. When the tokenizer has a chat template, sentence-transformers >= 6
    turns every pair into chat messages and renders them through it, which is not the card's
    recipe; both folders here therefore get a tokenizer_config.json without `chat_template`.

    The pair's two encodings, concatenated, are the card's tokens (checked for each pair): the seam
    sits between a newline and "<Document>", where Qwen's pre-tokenizer always splits. Truncated
    pairs cannot be compared, so they are skipped: CrossEncoder truncates the whole pair
    ("longest_first" cuts the longer text, i.e. the document *and* the suffix after it), while the
    card truncates only the middle and always keeps the prefix and the suffix.
    """
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)  # nothing random should happen; this keeps it so if something does
    cfg_text = json.loads((model_dir / "tokenizer_config.json").read_text())
    del cfg_text["chat_template"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {"seq-cls": tmp / "seq-cls", "causal-lm": tmp / "causal-lm"}
        for folder in folders.values():
            folder.mkdir()
            shutil.copyfile(model_dir / "tokenizer.json", folder / "tokenizer.json")
            (folder / "tokenizer_config.json").write_text(json.dumps(cfg_text, indent=2, ensure_ascii=False))
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(model_dir / f, folders["causal-lm"] / f)

        cls_cfg = copy.deepcopy(model.config)
        cls_cfg.architectures = ["Qwen3ForSequenceClassification"]
        cls_cfg.num_labels = 1
        cls_cfg.pad_token_id = ref.pad_id
        cls_cfg.tie_word_embeddings = False
        cls = Qwen3ForSequenceClassification(cls_cfg).eval()
        with torch.no_grad():
            cls.model.load_state_dict(model.model.state_dict())
            head = model.lm_head.weight
            w = (head[ref.yes_id] - head[ref.no_id])[None, :]
            assert torch.equal(w.to(torch.float64), (head[ref.yes_id].double() - head[ref.no_id].double())[None, :])
            cls.score.weight.copy_(w)
        cls.save_pretrained(folders["seq-cls"])

        for route, folder in folders.items():
            ce = CrossEncoder(
                str(folder),
                device="cpu",
                activation_fn=torch.nn.Sigmoid(),
                model_kwargs={"dtype": torch.float32, "attn_implementation": "eager"},
            )
            assert ce.num_labels == 1
            compared, skipped, worst = 0, [], 0.0
            for rec in records:
                instruction = DEFAULT_INSTRUCTION if rec["instruction"] is None else rec["instruction"]
                pairs = [
                    (f"{PREFIX}<Instruct>: {instruction}\n<Query>: {rec['query']}\n", f"<Document>: {d}{SUFFIX}")
                    for d in rec["documents"]
                ]
                features = ce.preprocess(pairs)
                keep = []
                for i, document in enumerate(rec["documents"]):
                    middle = format_middle(rec["instruction"], rec["query"], document)
                    middle_len = len(ref.tokenizer(middle, add_special_tokens=False)["input_ids"])
                    got_ids = features["input_ids"][i][features["attention_mask"][i].bool()].tolist()
                    if middle_len > ref.middle_budget(rec["max_length"]):
                        skipped.append(f"{rec['id']}[{i}]")
                    else:
                        assert got_ids == rec["token_ids"][i], (route, rec["id"], i)
                        keep.append(i)
                # Each pair alone, then the comparable pairs of the case as one padded batch.
                for i in keep:
                    score = float(ce.predict([pairs[i]], batch_size=1, show_progress_bar=False)[0])
                    diff = abs(score - rec["scores"][i])
                    assert diff <= CROSS_ENCODER_TOL, (route, rec["id"], i, score, rec["scores"][i])
                    worst = max(worst, diff)
                    compared += 1
                if len(keep) > 1:
                    batch = ce.predict([pairs[i] for i in keep], batch_size=len(keep), show_progress_bar=False)
                    for j, i in enumerate(keep):
                        diff = abs(float(batch[j]) - rec["scores"][i])
                        assert diff <= CROSS_ENCODER_TOL, (route, rec["id"], i, "batch", diff)
                        worst = max(worst, diff)
            assert compared >= 20, (route, compared)
            print(f"  CrossEncoder {route}: {compared} pairs, max |score diff| {worst:.2e}; skipped (truncated) {', '.join(skipped)}")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tokenizer_cfg = json.loads((QWEN3_TOKENIZER / "tokenizer_config.json").read_text())
    raw = Tokenizer.from_file(str(QWEN3_TOKENIZER / "tokenizer.json"))
    assert raw.get_vocab_size(with_added_tokens=True) == VOCAB_SIZE
    pad_id, eos_id = raw.token_to_id(PAD), raw.token_to_id(tokenizer_cfg["eos_token"])
    (FIXTURES / "models").mkdir(parents=True, exist_ok=True)
    (FIXTURES / "expected").mkdir(parents=True, exist_ok=True)
    cases = normalized_cases()

    for name, spec in MODEL_SPECS.items():
        out = FIXTURES / "models" / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir()
        shutil.copyfile(QWEN3_TOKENIZER / "tokenizer_config.json", out / "tokenizer_config.json")
        # The 11 MB vocabulary is not copied into the repository: a relative link to ../shared,
        # which CI has beside the checkout.
        (out / "tokenizer.json").symlink_to(Path("../../../../../shared/qwen3-tokenizer/tokenizer.json"))
        cfg = model_config(spec, pad_id, eos_id)
        built = build_model(spec, cfg)
        (out / "config.json").write_text(json.dumps(config_json(cfg, spec), indent=2) + "\n")
        save_weights(built, out)
        model = load_reference_model(out, built, spec)

        ref = Reference(model, out)
        records = []
        for case in cases:
            record, truncated = ref.run_case(case)
            # Truncated means the untruncated sequence would exceed the case's max_length.
            assert truncated == case.get("expect_truncated", [False] * len(case["documents"])), (case["id"], truncated)
            records.append(record)

        # Identical documents get identical scores (bit for bit: same tokens, same padding); the
        # other document does not.
        rec = next(r for r in records if r["id"] == "identical_documents")
        same = [i for i, d in enumerate(rec["documents"]) if d == "same text"]
        assert len({tuple(rec["logits"][i]) for i in same}) == 1, rec["logits"]
        assert abs(rec["scores"][same[0]] - rec["scores"][1]) > 0.01, rec["scores"]

        # The scores must test something: inside the bounds, spread out, and every part of the model
        # must matter.
        scores = [s for r in records for s in r["scores"]]
        lo, hi = min(scores), max(scores)
        assert SCORE_BOUNDS[0] < lo and hi < SCORE_BOUNDS[1], (name, lo, hi)
        assert hi - lo >= MIN_SCORE_SPREAD, (name, lo, hi)
        effects = ablation_effects(model, ref, [s for r in records for s in r["token_ids"]], spec)
        for part, moved in effects.items():
            assert moved >= MIN_ABLATION_EFFECT, (name, part, moved)
        bf16_diff = max(abs(a - b) for r in records for a, b in zip(r["scores"], r["scores_bf16"], strict=True))

        expected = {
            "model": name,
            "yes_id": ref.yes_id,
            "no_id": ref.no_id,
            "prefix_tokens": ref.prefix,
            "suffix_tokens": ref.suffix,
            "max_length": MAX_LENGTH,
            "cases": records,
        }
        (FIXTURES / "expected" / f"{name}.json").write_text(json.dumps(expected, ensure_ascii=False) + "\n")
        lens = [len(s) for r in records for s in r["token_ids"]]
        print(
            f"{name}: {len(records)} cases, {len(scores)} pairs, tokens {min(lens)}..{max(lens)}, "
            f"scores {lo:.3f}..{hi:.3f}, max |f32 - bf16| {bf16_diff:.3f}, "
            f"max |batch - alone| {ref.worst_self_check:.2e}"
        )
        print("  ablation (max |score change|): " + ", ".join(f"{k} {v:.3f}" for k, v in effects.items()))
        cross_check_cross_encoder(out, model, ref, records)

    total = sum(
        f.stat().st_size
        for name in MODEL_SPECS
        for f in [*(FIXTURES / "models" / name).iterdir(), FIXTURES / "expected" / f"{name}.json"]
    )
    print(f"wrote {', '.join(MODEL_SPECS)} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
