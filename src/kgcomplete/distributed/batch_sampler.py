"""Balanced batches: triples partitioned into ``n x n`` (head shard, tail shard) blocks.

Every step takes exactly ``P`` triples from every block, so each worker ``i`` (which processes the
blocks ``(i, j)``, heads on its own shard) scores ``n * P`` triples and sends ``P`` tails to every
other worker: the exchange is balanced by construction. All workers run the same seeded sampler
and read their own rows/columns of the step's ``(n, n, P)`` index array.
"""

from __future__ import annotations

import numpy as np

from .sharding import Sharding


class PartitionedTriples:
    """Triples ``(N, 3)`` sorted by block ``b = head_shard * n + tail_shard``.

    Attributes:
        triples: ``(N, 3)`` global ids, block-sorted.
        block_offsets: ``(n*n + 1,)``; block ``b`` is ``triples[block_offsets[b]:block_offsets[b+1]]``.
        block_sizes: ``(n*n,)``.
    """

    def __init__(self, triples: np.ndarray, sharding: Sharding):
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        n = sharding.n_shard
        block = sharding.entity_to_shard[triples[:, 0]] * n + sharding.entity_to_shard[triples[:, 2]]
        order = np.argsort(block, kind="stable")
        self.n_shard = n
        self.triples = triples[order]
        self.block = block[order]
        self.block_sizes = np.bincount(block, minlength=n * n).astype(np.int64)
        self.block_offsets = np.concatenate([[0], np.cumsum(self.block_sizes)]).astype(np.int64)
        empty = np.flatnonzero(self.block_sizes == 0)
        if len(empty):
            b = int(empty[0])
            raise ValueError(
                f"no training triple has its head on shard {b // n} and its tail on shard {b % n}: "
                f"too few triples for {n} workers"
            )

    def __len__(self) -> int:
        return len(self.triples)


class ShardedBatchSampler:
    """Base: yields ``(n, n, P)`` indices into ``PartitionedTriples.triples`` per step.

    Args:
        parts: the partitioned triples.
        positives_per_block: ``P``, triples taken from every block at every step.
        seed: epochs draw from ``np.random.default_rng((seed, epoch))`` (identical on all workers,
            reproducible after a resume).
    """

    def __init__(self, parts: PartitionedTriples, positives_per_block: int, seed: int = 0):
        if positives_per_block < 1:
            raise ValueError("positives_per_block must be >= 1")
        self.parts, self.P, self.seed = parts, int(positives_per_block), int(seed)

    @property
    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def epoch(self, epoch: int):
        """Iterator over the steps of ``epoch``: ``(n, n, P)`` int64 arrays."""
        raise NotImplementedError

    def step_triples(self, idx: np.ndarray) -> np.ndarray:
        """``(n, n, P)`` indices -> ``(n, n, P, 3)`` triples."""
        return self.parts.triples[idx]


class RigidBatchSampler(ShardedBatchSampler):
    """Walks every block in a per-epoch random order, ``P`` triples per step.

    An epoch has ``ceil(max block size / P)`` steps, so every triple is seen at least once; blocks
    smaller than the largest wrap around (their triples are seen more than once).
    """

    @property
    def steps_per_epoch(self) -> int:
        return int(-(-self.parts.block_sizes.max() // self.P))

    def epoch(self, epoch: int):
        rng = np.random.default_rng((self.seed, epoch))
        parts = self.parts
        # shuffled order inside each block: sort by (block, random key)
        order = np.lexsort((rng.random(len(parts)), parts.block))
        sizes, offsets = parts.block_sizes, parts.block_offsets[:-1]
        lane = np.arange(self.P)
        for s in range(self.steps_per_epoch):
            pos = (s * self.P + lane)[None, :] % sizes[:, None]  # (n*n, P)
            idx = order[offsets[:, None] + pos]
            yield idx.reshape(parts.n_shard, parts.n_shard, self.P)


class RandomBatchSampler(ShardedBatchSampler):
    """Draws ``P`` triples per block uniformly with replacement at every step.

    An epoch has ``ceil(N / (n*n*P))`` steps (as many positives as triples, on average once each).
    """

    @property
    def steps_per_epoch(self) -> int:
        n2 = self.parts.n_shard ** 2
        return int(-(-len(self.parts) // (n2 * self.P)))

    def epoch(self, epoch: int):
        rng = np.random.default_rng((self.seed, epoch))
        parts = self.parts
        n = parts.n_shard
        for _ in range(self.steps_per_epoch):
            u = rng.random((n * n, self.P))
            idx = parts.block_offsets[:-1, None] + (u * parts.block_sizes[:, None]).astype(np.int64)
            yield idx.reshape(n, n, self.P)


def build_batch_sampler(kind: str, parts: PartitionedTriples, positives_per_block: int, seed: int = 0) -> ShardedBatchSampler:
    """``rigid`` or ``random`` (with replacement)."""
    kinds = {"rigid": RigidBatchSampler, "random": RandomBatchSampler}
    if kind not in kinds:
        raise ValueError(f"distributed.batch_sampler={kind!r}: expected 'rigid' or 'random'")
    return kinds[kind](parts, positives_per_block, seed)
