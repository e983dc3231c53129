"""The benchmarks' corpus: deterministic texts (seeded RNG over built-in word lists, ~85% English
and ~15% Chinese), about 60 tokens at the median and 5 to 500 tokens in all; texts of exactly L
tokens for the by-length runs; a 16-token query for latency. Token counts use the model's own
tokenizer plus one <|endoftext|>, the convention every engine's tokens/s is counted in."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

# 16 tokens with the Qwen3 tokenizer, <|endoftext|> included; other tokenizers get a generated text.
QUERY = "How do I compute the cosine similarity between two embedding vectors in Python code?"
QUERY_TOKENS = 16

ENGLISH = """
the of and to in is that for it as was with be by on not he this are or his from at which but have
an they you were her she there been one all we their has would when if so no out up what about who
into them more than some could time these two may then first any my now such like our over man
me even most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see men
work long get here between both life being under never day same another know while last might us
great old year off come since against go came right used take three system water model data search
query document vector embedding language network memory engine token batch server request result
river mountain city market history science music garden kitchen winter summer ocean forest bridge
library student teacher doctor machine energy health policy company product customer price report
quickly slowly carefully simply clearly often rarely always usually together however therefore
retrieve compute measure improve compare describe explain answer question reason value number
""".split()

CHINESE = """
我们 今天 天气 非常 好 中国 北京 上海 学习 工作 时间 问题 发展 经济 社会 文化 历史 科学 技术
研究 数据 模型 向量 检索 语言 文本 系统 网络 计算 方法 结果 分析 信息 服务 用户 公司 市场 产品
城市 河流 山脉 音乐 图书馆 学生 老师 医生 机器 能源 健康 政策 我 你 他 是 的 了 在 有 和 不
这 那 一个 可以 因为 所以 但是 如果 已经 非常 重要 简单 快速 准确
""".split()

# Token lengths are drawn from a log-normal around this median and clipped to this range.
MEDIAN_TOKENS = 60
SIGMA = 0.8
MIN_TOKENS, MAX_TOKENS = 5, 500
CHINESE_SHARE = 0.15
CORPUS_BASE = 256  # the corpus for --n-inputs n < 256 is the first n of the 256


class TokenCounter:
    """Token counts with the bench's convention: the text's own tokens plus one <|endoftext|>."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, int] = {}

    def piece(self, piece: str) -> int:
        """Tokens of a word on its own, no <|endoftext|>; cached (the corpus reuses few words)."""
        if piece not in self.cache:
            self.cache[piece] = len(self.tokenizer.encode(piece, add_special_tokens=False).ids)
        return self.cache[piece]

    def text(self, text: str) -> int:
        return 1 + len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def make_corpus(n: int, seed: int, counter: TokenCounter, max_tokens: int = MAX_TOKENS) -> list[str]:
    """`max(n, 256)` texts from a seeded RNG, of which the first n are returned."""
    rng = random.Random(seed)
    texts = []
    for _ in range(max(n, CORPUS_BASE)):
        target = round(math.exp(rng.gauss(math.log(MEDIAN_TOKENS), SIGMA)))
        target = min(max(target, MIN_TOKENS), max_tokens)
        texts.append(_grow_text(rng, target, counter))
    return texts[:n]


def make_length_corpus(length: int, total_tokens: int, seed: int, counter: TokenCounter) -> list[str]:
    """About `total_tokens / length` texts of `length` tokens each, from an RNG seeded by both."""
    rng = random.Random(f"{seed}-{length}")
    return [fixed_length_text(rng, length, counter) for _ in range(max(1, round(total_tokens / length)))]


def _pieces(rng: random.Random, chinese: bool):
    """Endless words with spaces, capitals and sentence ends, as they are appended to a text."""
    words = CHINESE if chinese else ENGLISH
    first, in_sentence, sentence_len = True, 0, rng.randint(6, 18)
    while True:
        word = rng.choice(words)
        if not chinese and rng.random() < 0.03:
            word = str(rng.randint(0, 99999))
        if in_sentence == 0 and not chinese:
            word = word.capitalize()
        in_sentence += 1
        if in_sentence >= sentence_len:
            word += "。" if chinese else "."
            in_sentence, sentence_len = 0, rng.randint(6, 18)
        yield word if chinese or first else " " + word
        first = False


def _grow_text(rng: random.Random, target_tokens: int, counter: TokenCounter) -> str:
    """Words drawn until their token counts (plus <|endoftext|>) reach `target_tokens`."""
    pieces = _pieces(rng, chinese=rng.random() < CHINESE_SHARE)
    parts: list[str] = []
    tokens = 1
    while tokens < target_tokens:
        parts.append(next(pieces))
        tokens += counter.piece(parts[-1])
    return "".join(parts)


def fixed_length_text(rng: random.Random, length: int, counter: TokenCounter, tries: int = 200) -> str:
    """A text of `length` tokens, <|endoftext|> included; shorter only if no word fits the last gap.

    Words are added by their own token counts to a few tokens short of the length, then one at a
    time with the whole text re-tokenized (words can merge across boundaries, Chinese ones do).
    """
    pieces = _pieces(rng, chinese=rng.random() < CHINESE_SHARE)
    parts: list[str] = []
    estimate = 1
    while estimate < length - 4:
        parts.append(next(pieces))
        estimate += counter.piece(parts[-1])
    while parts and counter.text("".join(parts)) > length:
        parts.pop()
    for _ in range(tries):
        if counter.text("".join(parts)) >= length:
            break
        parts.append(next(pieces))
        if counter.text("".join(parts)) > length:
            parts.pop()
    return "".join(parts)


def latency_query(seed: int, counter: TokenCounter) -> str:
    """QUERY where the tokenizer makes 16 tokens of it, else a generated 16-token text."""
    if counter.text(QUERY) == QUERY_TOKENS:
        return QUERY
    return fixed_length_text(random.Random(f"{seed}-query"), QUERY_TOKENS, counter)


def model_max_tokens(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return int(config.get("max_position_embeddings", MAX_TOKENS))
