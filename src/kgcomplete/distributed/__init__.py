"""BESS: balanced entity sampling and sharing over ``torch.distributed``.

The entity table is split into ``n`` equal shards (:mod:`.sharding`), one per worker; relation
parameters are replicated. Every training step takes the same number of triples from each of the
``n x n`` (head shard, tail shard) blocks (:mod:`.batch_sampler`) and the same number of negatives
from each shard (:mod:`.negative_sampler`); one balanced ``all_to_all`` moves the embeddings each
worker needs (:mod:`.exchange`). Inference scores shared queries against each shard and merges
(:mod:`.inference`). See ``docs/distributed.md``.
"""



def __getattr__(name: str):  # lazy: importing distributed.kind / .section (every config) pulls no numpy
    if name == "Sharding":
        from .sharding import Sharding

        return Sharding
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Sharding"]
