"""Known answers per (head, relation) and (relation, tail), as CSR arrays.

``tails_of(h, r)`` / ``heads_of(r, t)`` for a batch of queries return *flat* (query index, entity)
pairs, so filtering a chunk of queries never needs a dense (queries x entities) mask.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

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
        """From parallel ``(N,)`` arrays; duplicate (key, value) pairs are dropped.

        Non-negative keys and values sort as one composite int64 ``key * bound + value`` in place
        (about 4 x 8 bytes per pair at the peak, not lexsort's index arrays and copies).
        """
        keys = np.asarray(keys, dtype=np.int64)
        values = np.asarray(values, dtype=np.int64)
        if len(keys) == 0:
            return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))
        bound = int(values.max()) + 1
        if keys.min() >= 0 and values.min() >= 0 and int(keys.max()) < (np.iinfo(np.int64).max - bound) // bound:
            comp = keys * bound
            comp += values
            comp.sort()
            keep = np.empty(len(comp), dtype=bool)
            keep[0] = True
            np.not_equal(comp[1:], comp[:-1], out=keep[1:])
            comp = comp[keep]
            k = comp // bound
            comp -= k * bound
            v = comp
        else:
            order = np.lexsort((values, keys))
            k, v = keys[order], values[order]
            keep = np.ones(len(k), dtype=bool)
            keep[1:] = (k[1:] != k[:-1]) | (v[1:] != v[:-1])
            k, v = k[keep], v[keep]
        new_key = np.empty(len(k), dtype=bool)
        new_key[0] = True
        np.not_equal(k[1:], k[:-1], out=new_key[1:])
        starts = np.flatnonzero(new_key)
        return cls(k[starts], np.append(starts, len(k)).astype(np.int64), v)

    def _runs(self, query_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(B,)`` keys -> each key's first flat position and number of values (0 if absent)."""
        pos = np.searchsorted(self.keys, query_keys)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        found = (pos < len(self.keys)) & (self.keys[pos_c] == query_keys) if len(self.keys) else np.zeros(len(query_keys), bool)
        start = np.where(found, self.indptr[pos_c], 0)
        return start, np.where(found, self.indptr[np.minimum(pos_c + 1, len(self.indptr) - 1)] - start, 0)

    def counts(self, query_keys: np.ndarray) -> np.ndarray:
        """``(B,)`` keys -> ``(B,)`` number of stored values of each (nothing gathered)."""
        return self._runs(np.asarray(query_keys, dtype=np.int64))[1].astype(np.int64)

    def lookup(self, query_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``(B,)`` keys: flat ``(query position, value)`` arrays of every stored value."""
        query_keys = np.asarray(query_keys, dtype=np.int64)
        start, count = self._runs(query_keys)
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

    def __init__(self, triples, num_relations: int, _indices: Optional[tuple[CSRIndex, CSRIndex]] = None):
        self.num_relations = int(num_relations)
        if _indices is not None:
            self.tails, self.heads = _indices
            return
        parts = [np.asarray(x) for x in triples] if isinstance(triples, (list, tuple)) else [np.asarray(triples)]
        self.tails = CSRIndex.build(*self._side(parts, 0, 2))
        self.heads = CSRIndex.build(*self._side(parts, 2, 0))

    def _side(self, parts: list[np.ndarray], anchor: int, answer: int, chunk: int = 1 << 22):
        """(anchor * R + relation, answer) int64 arrays over all parts, filled chunk by chunk."""
        n = sum(len(p) for p in parts)
        keys, vals = np.empty(n, np.int64), np.empty(n, np.int64)
        pos = 0
        for p in parts:  # memory-mapped splits are read in chunks, never stacked
            for s in range(0, len(p), chunk):
                blk = np.asarray(p[s : s + chunk], dtype=np.int64)
                m = len(blk)
                np.multiply(blk[:, anchor], self.num_relations, out=keys[pos : pos + m])
                keys[pos : pos + m] += blk[:, 1]
                vals[pos : pos + m] = blk[:, answer]
                pos += m
        return keys, vals

    @classmethod
    def from_dataset(cls, dataset) -> "FilterIndex":
        """All splits of a :class:`~kgcomplete.data.dataset.Dataset` (without stacking them)."""
        return cls(list(dataset.splits.values()), dataset.num_relations)

    def save(self, folder: str | Path) -> Path:
        """Write the CSR arrays as ``.npy`` files into ``folder``; :meth:`load` memory-maps them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tails.save(folder, "tails")
        self.heads.save(folder, "heads")
        (folder / "filter.json").write_text(json.dumps({"num_relations": self.num_relations}))
        return folder

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> "FilterIndex":
        """Open a saved index; with ``mmap`` only the pages a lookup touches are read."""
        folder = Path(folder)
        meta = json.loads((folder / "filter.json").read_text())
        return cls(None, meta["num_relations"],
                   (CSRIndex.load(folder, "tails", mmap), CSRIndex.load(folder, "heads", mmap)))

    def known(self, anchor: np.ndarray, relation: np.ndarray, head: bool) -> tuple[np.ndarray, np.ndarray]:
        """Known answers of a batch of queries, flat: (query position, entity).

        ``head=False``: tails of ``(anchor, relation, ?)``; ``head=True``: heads of ``(?, relation, anchor)``.
        """
        keys = np.asarray(anchor, np.int64) * self.num_relations + np.asarray(relation, np.int64)
        return (self.heads if head else self.tails).lookup(keys)

    def answer_counts(self, anchor: np.ndarray, relation: np.ndarray, head: bool) -> np.ndarray:
        """``(B,)`` number of known answers of each query (as :meth:`known`, without listing them)."""
        keys = np.asarray(anchor, np.int64) * self.num_relations + np.asarray(relation, np.int64)
        return (self.heads if head else self.tails).counts(keys)

    def contains(self, triples: np.ndarray) -> np.ndarray:
        """``(B, 3)`` -> ``(B,)`` bool: is the triple known."""
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        q, ent = self.known(triples[:, 0], triples[:, 1], head=False)
        hit = ent == triples[q, 2]
        out = np.zeros(len(triples), dtype=bool)
        out[q[hit]] = True
        return out
