"""A corpus with `Runner.encode`, then compact vectors: `python examples/encode.py [MODEL]`.

MODEL is a local directory or a hub id (default Qwen/Qwen3-Embedding-0.6B).
"""

import sys

import numpy as np

from candle_embed import Runner, Which, quantize_embeddings

model_id = sys.argv[1] if len(sys.argv) > 1 else "Qwen/Qwen3-Embedding-0.6B"
runner = Runner(which=Which.Embedding(model_id=model_id))

documents = [f"Passage {i}: the mitochondria is the powerhouse of the cell." for i in range(1000)]
queries = ["What produces energy in a cell?"]

# Any iterable of strings; a generator is read batch by batch. A progress bar shows on a terminal.
doc_vectors = runner.encode(documents, batch_size=256)
query_vectors = runner.encode(queries, prompt_name="query")  # or instruction="..."
print(doc_vectors.shape, doc_vectors.dtype, float((query_vectors @ doc_vectors.T).max()) > 0)

# Binary: one sign bit per dimension, 32× smaller; compare with Hamming distance.
bits = runner.encode(documents, precision="ubinary")
print(bits.shape, bits.dtype)

# int8 with ranges fixed for the whole corpus (here from a calibration sample), so a vector never
# depends on which texts were embedded with it.
sample = runner.encode(documents[:200])
int8 = runner.encode(documents, precision="int8", calibration_embeddings=sample)
assert np.array_equal(int8, quantize_embeddings(doc_vectors, "int8", calibration_embeddings=sample))
print(int8.shape, int8.dtype)
