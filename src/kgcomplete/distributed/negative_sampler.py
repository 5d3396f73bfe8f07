"""Flat sharded negatives: the same number from every shard, shared by a worker's whole batch.

Source shard ``s`` draws ``k`` local rows for every destination worker ``d`` and corrupted side;
after the exchange worker ``d`` holds ``n * k`` negatives per side (``k`` from each shard), shared by
all its ``n * P`` triples. Type-constrained (``strategy="type"``): ``k`` per shard for every type
that occurs among the step's corrupted entities, drawn from that type's contiguous local range;
a triple uses the negatives of its corrupted entity's type. A shard holding no entity of a type
sends a placeholder row, masked out of the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .sharding import Sharding

SIDES = {"tail": ("tail",), "head": ("head",), "both": ("head", "tail")}


@dataclass
class NegativeDraw:
    """Negatives of one step (identical on every worker).

    Attributes:
        local: ``(n_src, n_dest, n_sides, T, k)`` local rows on the source shard.
        types: ``(T,)`` relabelled type ids (None: uniform, T = 1).
        mask: ``(n_src, T)`` True where the source shard holds that type (None: all valid).
    """

    local: np.ndarray
    types: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None


class ShardedNegativeSampler:
    """Draws :class:`NegativeDraw` for a step.

    Args:
        sharding: the entity sharding (``type_offsets`` needed for ``strategy="type"``).
        negatives_per_shard: ``k``.
        corrupt: ``head`` | ``tail`` | ``both``.
        strategy: ``uniform`` | ``type``.
    """

    def __init__(self, sharding: Sharding, negatives_per_shard: int, corrupt: str = "both", strategy: str = "uniform"):
        if corrupt not in SIDES:
            raise ValueError(f"corrupt={corrupt!r}: expected head, tail or both")
        if strategy not in ("uniform", "type"):
            raise ValueError(f"negative sampler {strategy!r}: expected 'uniform' or 'type'")
        if strategy == "type" and sharding.type_offsets is None:
            raise ValueError("type-constrained negative sampling needs entity types (entity_types.tsv)")
        self.sharding, self.k, self.strategy = sharding, int(negatives_per_shard), strategy
        self.sides = SIDES[corrupt]
        self.entity_types = sharding.entity_types

    def sample(self, rng: np.random.Generator, triples: Optional[np.ndarray] = None) -> NegativeDraw:
        """Negatives for a step whose triples are ``(n, n, P, 3)`` (needed for ``type`` only)."""
        sh, n, k, ns = self.sharding, self.sharding.n_shard, self.k, len(self.sides)
        if self.strategy == "uniform":
            u = rng.random((n, n, ns, 1, k))
            local = (u * sh.shard_counts[:, None, None, None, None]).astype(np.int64)
            return NegativeDraw(local)
        cols = [0 if side == "head" else 2 for side in self.sides]
        types = np.unique(self.entity_types[triples[..., cols]])
        start = sh.type_offsets[:, types]  # (n, T)
        count = sh.type_offsets[:, types + 1] - start
        u = rng.random((n, n, ns, len(types), k))
        local = start[:, None, None, :, None] + (u * count[:, None, None, :, None]).astype(np.int64)
        mask = count > 0
        local = np.where(mask[:, None, None, :, None], local, 0)
        return NegativeDraw(local, types, mask)

    def row_types(self, draw: NegativeDraw, corrupted: np.ndarray) -> Optional[np.ndarray]:
        """Index into ``draw.types`` of each corrupted entity (any shape); None when uniform."""
        if draw.types is None:
            return None
        return np.searchsorted(draw.types, self.entity_types[corrupted])
