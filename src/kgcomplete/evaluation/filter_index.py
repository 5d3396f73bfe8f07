"""Known answers per (head, relation) and (relation, tail), as CSR arrays.

``tails_of(h, r)`` / ``heads_of(r, t)`` for a batch of queries return *flat* (query index, entity)
pairs, so filtering a chunk of queries never needs a dense (queries x entities) mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CSRIndex:
    """Maps an int64 key to a sorted run of int64 values.

    Attributes (all 1-D numpy arrays, memory-mappable):
        keys: ``(K,)`` sorted unique keys; indptr: ``(K + 1,)``; values: ``(N,)``.
    """

    def __init__(self, keys: np.ndarray, indptr: np.ndarray, values: np.ndarray):
        self.keys, self.indptr, self.values = keys, indptr, values

    @classmethod
    def build(cls, keys: np.ndarray, values: np.ndarray) -> "CSRIndex":
        """From parallel ``(N,)`` arrays; duplicate (key, value) pairs are dropped."""
        order = np.lexsort((values, keys))
        k, v = keys[order], values[order]
        if len(k):
            keep = np.ones(len(k), dtype=bool)
            keep[1:] = (k[1:] != k[:-1]) | (v[1:] != v[:-1])
            k, v = k[keep], v[keep]
        uniq, starts = np.unique(k, return_index=True)
        indptr = np.append(starts, len(k)).astype(np.int64)
        return cls(uniq.astype(np.int64), indptr, v.astype(np.int64))

    def lookup(self, query_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``(B,)`` keys: flat ``(query position, value)`` arrays of every stored value."""
        query_keys = np.asarray(query_keys, dtype=np.int64)
        pos = np.searchsorted(self.keys, query_keys)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = (pos < len(self.keys)) & (self.keys[pos_c] == query_keys) if len(self.keys) else np.zeros(len(query_keys), bool)
        start = np.where(found, self.indptr[pos_c], 0)
        count = np.where(found, self.indptr[np.minimum(pos_c + 1, len(self.indptr) - 1)] - start, 0)
        qidx = np.repeat(np.arange(len(query_keys)), count)
        # offsets within each run: global position minus the run's first flat position
        run_first = np.repeat(np.cumsum(count) - count, count)
        flat = np.repeat(start, count) + (np.arange(len(qidx)) - run_first)
        return qidx, self.values[flat]

    def save(self, folder: Path, prefix: str) -> None:
        for name in ("keys", "indptr", "values"):
            np.save(folder / f"{prefix}_{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path, prefix: str, mmap: bool = True) -> "CSRIndex":
        mode = "r" if mmap else None
        return cls(*(np.load(folder / f"{prefix}_{n}.npy", mmap_mode=mode) for n in ("keys", "indptr", "values")))


class FilterIndex:
    """All known triples, for filtered ranking.

    Args:
        triples: ``(N, 3)`` int array of (head, relation, tail) - usually train + valid + test.
        num_relations: number of (base) relations R; keys are ``entity * R + relation``.
    """

    def __init__(self, triples: np.ndarray, num_relations: int):
        triples = np.asarray(triples, dtype=np.int64)
        self.num_relations = int(num_relations)
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        self.tails = CSRIndex.build(h * self.num_relations + r, t)
        self.heads = CSRIndex.build(t * self.num_relations + r, h)

    def known(self, anchor: np.ndarray, relation: np.ndarray, head: bool) -> tuple[np.ndarray, np.ndarray]:
        """Known answers of a batch of queries, flat: (query position, entity).

        ``head=False``: tails of ``(anchor, relation, ?)``; ``head=True``: heads of ``(?, relation, anchor)``.
        """
        keys = np.asarray(anchor, np.int64) * self.num_relations + np.asarray(relation, np.int64)
        return (self.heads if head else self.tails).lookup(keys)

    def contains(self, triples: np.ndarray) -> np.ndarray:
        """``(B, 3)`` -> ``(B,)`` bool: is the triple known."""
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        q, ent = self.known(triples[:, 0], triples[:, 1], head=False)
        hit = ent == triples[q, 2]
        out = np.zeros(len(triples), dtype=bool)
        out[q[hit]] = True
        return out
