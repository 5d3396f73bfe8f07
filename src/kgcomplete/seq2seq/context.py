"""KGT5-context's neighbourhoods (Kochsiek et al., RepL4NLP 2023): the query entity's 1-hop
neighbourhood in the *training* graph, as CSR arrays, and seeded per-entity samples of it.

Every training triple ``(h, r, t)`` (row ``i`` of the triples the index is built from) is an edge
of both its entities: at ``h`` the fact ``r | t`` (relation code ``r``), at ``t`` the fact
``reverse of r | h`` (code ``r + R``); both edges remember ``i``, so removing a target triple from a
context is one comparison (a self-loop's two edges go together). Built from ``dataset.train`` only,
a context can never show a validation or test triple.

A sample (:meth:`Neighbourhood.sample`) puts each entity's edges in a seeded random order and keeps
the first ``size + 1`` (one spare, so that dropping the target edge still leaves ``size``): one
``argsort`` over all edges, no Python loop per entity. Training draws a new sample every epoch
(seed, epoch); evaluation uses one fixed sample (:data:`EVAL_STREAM`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the random stream of the evaluation sample (training epochs use streams 0, 1, 2, ...)
EVAL_STREAM = -1


@dataclass(frozen=True)
class ContextSample:
    """Per-entity ordered edge lists: entity ``e``'s sampled edges are ``edge[ptr[e]:ptr[e + 1]]``
    (``ptr (E + 1,)`` int64, ``edge (S,)`` int64 indexes into the :class:`Neighbourhood` arrays)."""

    ptr: np.ndarray
    edge: np.ndarray


class Neighbourhood:
    """CSR adjacency of a triple set, both directions.

    Attributes (``M = 2 n`` edges, sorted by entity):
        ptr: ``(E + 1,)`` entity ``e``'s edges are ``ptr[e]:ptr[e + 1]``.
        rel: ``(M,)`` relation code: ``r`` (``e -r-> nb``) or ``r + R`` (``nb -r-> e``, "reverse of r").
        nb: ``(M,)`` the neighbour entity.
        triple: ``(M,)`` the row of the triple the edge comes from.
    """

    def __init__(self, triples: np.ndarray, num_entities: int, num_relations: int):
        t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        n = len(t)
        self.num_entities, self.num_relations = int(num_entities), int(num_relations)
        owner = np.concatenate([t[:, 0], t[:, 2]])
        order = np.argsort(owner, kind="stable")
        self.rel = np.concatenate([t[:, 1], t[:, 1] + num_relations])[order]
        self.nb = np.concatenate([t[:, 2], t[:, 0]])[order]
        self.triple = np.concatenate([np.arange(n), np.arange(n)])[order]
        self.owner = owner[order]
        self.ptr = np.zeros(self.num_entities + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=self.num_entities), out=self.ptr[1:])

    def __len__(self) -> int:
        return len(self.nb)

    @property
    def degree(self) -> np.ndarray:
        """``(E,)`` edges per entity (in + out)."""
        return np.diff(self.ptr)

    def edges(self, entity: int) -> np.ndarray:
        """``(d, 3)`` ``[relation code, neighbour, triple row]`` of one entity (tests, inspection)."""
        s = slice(self.ptr[entity], self.ptr[entity + 1])
        return np.stack([self.rel[s], self.nb[s], self.triple[s]], 1)

    def sample(self, size: int, seed: int, stream: int = EVAL_STREAM) -> ContextSample:
        """A seeded random order of every entity's edges, the first ``size + 1`` kept (the spare
        replaces a removed target edge). Same ``(seed, stream)`` -> same sample."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(stream) + 1 if stream >= 0 else 0,
                                     0 if stream >= 0 else 1])
        keys = self.owner + rng.random(len(self.owner))  # entity + U[0,1): sorts by entity, shuffled within
        order = np.argsort(keys, kind="stable")
        rank = np.arange(len(order)) - self.ptr[self.owner]  # owner is sorted, so owner[order] == owner
        keep = rank < int(size) + 1
        counts = np.minimum(self.degree, int(size) + 1)
        ptr = np.zeros(self.num_entities + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return ContextSample(ptr, order[keep])


__all__ = ["ContextSample", "EVAL_STREAM", "Neighbourhood"]
