"""Balanced random entity sharding.

``n`` shards of ``S = ceil(E / n)`` rows each (the last rows of some shards are padding). Entities
are dealt round-robin from a random permutation, grouped by type first, so that

- shard sizes differ by at most one entity, and every type is split over the shards as evenly as
  possible;
- inside each shard the entities of a type occupy one contiguous range of local rows
  (``type_offsets``), so type-constrained negatives are drawn with one offset + count per type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np


@dataclass
class Sharding:
    """Entity -> (shard, local row) mapping.

    Attributes:
        n_shard: number of shards (= workers).
        entity_to_shard, entity_to_idx: ``(E,)`` shard and local row of every entity.
        shard_and_idx_to_entity: ``(n_shard, S)`` global id of each local row, ``-1`` for padding.
        shard_counts: ``(n_shard,)`` real (non-padding) rows per shard; rows ``0..count-1`` are real.
        type_offsets: ``(n_shard, T + 1)`` start of each type's local range (types relabelled
            ``0..T-1`` with untyped entities as the last group), or None when untyped.
        seed: seed of the permutation.
    """

    n_shard: int
    entity_to_shard: np.ndarray
    entity_to_idx: np.ndarray
    shard_and_idx_to_entity: np.ndarray
    shard_counts: np.ndarray
    type_offsets: Optional[np.ndarray] = None
    seed: int = 0

    @property
    def num_entities(self) -> int:
        return int(len(self.entity_to_shard))

    @property
    def shard_size(self) -> int:
        """Rows per shard, padding included (``S``)."""
        return int(self.shard_and_idx_to_entity.shape[1])

    @property
    def entity_types(self) -> Optional[np.ndarray]:
        """``(E,)`` relabelled type of each entity (None when untyped)."""
        if self.type_offsets is None:
            return None
        n, t1 = self.type_offsets.shape
        span = self.shard_size + 1
        flat = (self.type_offsets + np.arange(n)[:, None] * span).ravel()  # sorted: one run per shard
        pos = np.searchsorted(flat, self.entity_to_shard * span + self.entity_to_idx, side="right") - 1
        return pos - self.entity_to_shard * t1

    @classmethod
    def create(cls, num_entities: int, n_shard: int, seed: int = 0, entity_types: Optional[np.ndarray] = None) -> "Sharding":
        """Random balanced sharding of ``num_entities`` over ``n_shard`` shards.

        ``entity_types``: ``(E,)`` type id per entity (-1 = untyped) to keep types contiguous.
        """
        if n_shard < 1:
            raise ValueError("n_shard must be >= 1")
        if num_entities < n_shard:
            raise ValueError(f"cannot shard {num_entities} entities over {n_shard} shards")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(num_entities)
        types = None
        if entity_types is not None:
            types = _relabel_types(np.asarray(entity_types, dtype=np.int64))
            perm = perm[np.argsort(types[perm], kind="stable")]  # grouped by type, random inside
        pos = np.arange(num_entities)
        to_shard = np.empty(num_entities, np.int64)
        to_idx = np.empty(num_entities, np.int64)
        # deal round-robin, starting each type where the previous type stopped (balanced counts)
        to_shard[perm] = pos % n_shard
        to_idx[perm] = pos // n_shard
        size = -(-num_entities // n_shard)
        table = np.full((n_shard, size), -1, np.int64)
        table[to_shard, to_idx] = np.arange(num_entities)
        counts = np.bincount(to_shard, minlength=n_shard).astype(np.int64)
        offsets = None
        if types is not None:
            n_types = int(types.max()) + 1
            per = np.bincount(to_shard * n_types + types, minlength=n_shard * n_types).reshape(n_shard, n_types)
            offsets = np.concatenate([np.zeros((n_shard, 1), np.int64), np.cumsum(per, 1)], 1)
        return cls(n_shard, to_shard, to_idx, table, counts, offsets, seed)

    # -------------------------------------------------------------- lookups
    def local(self, entities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global ids (any shape) -> (shard, local row), same shape."""
        e = np.asarray(entities, dtype=np.int64)
        return self.entity_to_shard[e], self.entity_to_idx[e]

    def global_ids(self, shard, idx) -> np.ndarray:
        """(shard, local row) -> global id (``-1`` for padding)."""
        return self.shard_and_idx_to_entity[np.asarray(shard), np.asarray(idx)]

    def type_counts(self) -> Optional[np.ndarray]:
        """``(n_shard, T)`` entities of each type per shard."""
        return None if self.type_offsets is None else np.diff(self.type_offsets, axis=1)

    # ---------------------------------------------------------------- files
    def save(self, folder: Path) -> None:
        """``sharding.json`` (summary) + ``sharding.npz`` (arrays) in ``folder``."""
        folder = Path(folder)
        arrays = {"entity_to_shard": self.entity_to_shard, "entity_to_idx": self.entity_to_idx,
                  "shard_and_idx_to_entity": self.shard_and_idx_to_entity, "shard_counts": self.shard_counts}
        if self.type_offsets is not None:
            arrays["type_offsets"] = self.type_offsets
        np.savez(folder / "sharding.npz", **arrays)
        info = {"n_shard": self.n_shard, "num_entities": self.num_entities, "shard_size": self.shard_size,
                "shard_counts": self.shard_counts.tolist(), "typed": self.type_offsets is not None, "seed": self.seed}
        (folder / "sharding.json").write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "Sharding":
        folder = Path(folder)
        info = json.loads((folder / "sharding.json").read_text())
        with np.load(folder / "sharding.npz") as z:
            arrays = {k: z[k] for k in z.files}
        return cls(int(info["n_shard"]), arrays["entity_to_shard"], arrays["entity_to_idx"],
                   arrays["shard_and_idx_to_entity"], arrays["shard_counts"], arrays.get("type_offsets"),
                   int(info.get("seed", 0)))


def _relabel_types(types: np.ndarray) -> np.ndarray:
    """Type ids -> dense ``0..T-1``; untyped (-1) entities become the last group."""
    out = types.copy()
    untyped = out < 0
    _, dense = np.unique(out[~untyped], return_inverse=True)
    out[~untyped] = dense
    out[untyped] = (dense.max() + 1) if len(dense) else 0
    return out
