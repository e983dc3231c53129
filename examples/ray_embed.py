"""A Parquet corpus embedded on a Ray cluster: `python examples/ray_embed.py MODEL INPUT OUTPUT`.

On a cluster (`ray start --head` on one node, `ray start --address=HEAD:6379` on the others) run
it on any node: `ray.init()` joins the cluster; on a machine without one it starts a local one.
Each actor loads the model once and computes with the CPUs (or the GPU) Ray gives it.
"""

import sys

import ray

from candle_embed.ray import embed_dataset


def main(model_id: str, inputs: str, output: str, actors: int = 2, cpus_per_actor: float = 1) -> None:
    ds = ray.data.read_parquet(inputs)  # needs a `text` column; the other columns pass through
    # Request options as in Runner.encode: prompt_name, instruction, dimensions, precision, ...
    ds = embed_dataset(ds, model_id, concurrency=actors, num_cpus=cpus_per_actor, precision="float32")
    ds.write_parquet(output)  # the input's columns plus `embedding`


if __name__ == "__main__":
    ray.init()
    main(*sys.argv[1:4])
