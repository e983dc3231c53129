"""The Python quickstart (the seed example): `python examples/quickstart.py [MODEL]`.

MODEL is a local directory or a hub id (default Qwen/Qwen3-Embedding-0.6B).
"""

import sys

from candle_embed import EmbeddingArchitecture, EmbeddingRequest, Runner, Which

model_id = sys.argv[1] if len(sys.argv) > 1 else "Qwen/Qwen3-Embedding-0.6B"

runner = Runner(
    which=Which.Embedding(
        model_id=model_id,
        arch=EmbeddingArchitecture.Qwen3Embedding,
    )
)

request = EmbeddingRequest(
    input=["Graphene conductivity", "Explain superconductors in simple terms."],
    truncate_sequence=True,
)

embeddings = runner.send_embedding_request(request)
print(len(embeddings), len(embeddings[0]))
