"""Reports whether a text's vector is bitwise the same alone, in a batch, and in a shuffled batch.

    python scripts/check_batch_invariance.py [MODEL_DIR] [--inputs N]

MODEL_DIR defaults to the random 0.6B-shaped model of scripts/make_bench_model.py. The test suite
asserts invariance within 1e-6 on the tiny fixtures; this script answers the stronger, bitwise
question at a real model's shapes, where it is too slow to run in CI.
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from candle_embed import EmbeddingRequest, Runner, Which

WORDS = (
    "graphene conductivity superconductors gravity planets capital china beijing search retrieval "
    "passages query document embedding vector 北京 引力 超导体 石墨烯"
).split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="?", default="bench-out/qwen3-0.6b-random")
    parser.add_argument("--inputs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 120))) for _ in range(args.inputs)]
    runner = Runner(which=Which.Embedding(model_id=args.model_dir))

    def embed(inputs: list[str]) -> np.ndarray:
        return runner.send_embedding_request(EmbeddingRequest(input=inputs))

    batch = embed(texts)
    order = list(range(len(texts)))
    rng.shuffle(order)
    shuffled = np.empty_like(batch)
    shuffled[order] = embed([texts[i] for i in order])
    alone = np.stack([embed([t])[0] for t in texts])

    for name, other in (("shuffled batch", shuffled), ("each text alone", alone)):
        equal = sum(np.array_equal(a, b) for a, b in zip(batch, other))
        diff = float(np.abs(batch - other).max())
        print(f"{name:>16} vs batch: bitwise equal {equal}/{len(texts)}, max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
