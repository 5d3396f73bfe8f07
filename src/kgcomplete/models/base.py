"""Shared machinery of the shallow KGE models.

A model owns an entity table ``(E, entity_width)`` and a relation table
``(R or 2R, relation_width)`` (2R with reciprocal relations: relation ``r + R`` is the inverse
of ``r``). Each subclass defines one broadcasting scoring function :meth:`KGEModel.score_emb`;
scoring against many candidates is derived from it in memory-bounded chunks. Models whose score
is a dot product or a distance between a *query vector* and the candidate embedding also define
``tail_query``/``head_query`` so that candidate scoring is a single matrix product (BLAS).

Distance models whose distance vector separates into query and candidate factors
(``separable``: PairRE, TripleRE, InterHT, TranS, TransH) define ``distance_terms``/``candidate_terms``;
their candidates are scored by the kernels of :mod:`kgcomplete.models.kernels` (a matrix product
for L2, cache-sized blocks with a hand-written backward for L1). Every other model without a query
vector is scored in cache-sized blocks too: BoxE (``boxes``) with its own backward pass, any other
in chunks recomputed in the backward pass.

Ranking (``score_queries``/``ranking_scores``: evaluation, prediction, serving) of a reciprocal model
may add the score of the same triple read the other way (:attr:`KGEModel.reciprocal_scoring`).

Every way of scoring candidates (``score_tails``/``score_heads``, both trainers' negatives
objective, BESS workers, distributed ranking) goes through one entry point,
:meth:`KGEModel.score_candidates`, on embeddings the caller has already looked up.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from .kernels import box_distances, recomputed_chunks, separable_scores

# Elements (batch x candidates x width) materialised at once by the plain broadcast path.
CHUNK_ELEMENTS = 1 << 24
#: Rows of a low-precision entity table converted to float32 at once when scoring all entities.
ENTITY_BLOCK_ROWS = 1 << 16
#: ``model.storage_dtype`` names -> torch dtypes of the entity table (math is always float32).
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class KGEModel(nn.Module):
    """Base class. Subclasses set ``entity_width``/``relation_width`` and implement ``score_emb``.

    Args:
        num_entities, num_relations: table sizes (relations before adding inverses).
        dim: embedding size per component (complex models: number of complex coordinates).
        reciprocal: learn a separate inverse relation ``r + R``; head queries ``(?, r, t)`` are then
            answered as tail queries ``(t, r + R, ?)``.
        init_scale: scale of the initial values (std of a normal / half-width of a uniform).
        sparse: entity/relation lookups produce sparse gradients (rows in the batch only).
        storage_dtype: dtype of the entity table, ``float32`` (default), ``float16`` or ``bfloat16``
            (half the memory); looked-up rows are converted to float32, so all math is float32.
    """

    name = "base"
    #: "dot", "l1", "l2" when ``tail_query``/``head_query`` give a query vector to compare with
    #: candidate embeddings; None when only the generic broadcast path applies.
    similarity: Optional[str] = None
    #: entity vectors are complex ([real | imaginary] halves) - affects N3 regularisation.
    complex_entities = False
    #: relation vectors are complex ([real | imaginary] halves).
    complex_relations = False
    #: needs reciprocal relations for head queries (ConvE).
    requires_reciprocal = False
    #: the model overrides :meth:`score_candidates` with its own computation (RotatE's rotation of
    #: the query) instead of the generic similarity / broadcast paths. Declared, never detected: a
    #: subclass that overrides the method without declaring it fails at class creation. Such models
    #: train through sparse autograd, not the row-gradient fast path (training/row_gradients.py),
    #: which is verified against autograd for the generic paths only. (ConvE specialises scoring
    #: through the declared hooks - ``similarity``, ``tail_query``, ``candidate_features`` with its
    #: bias column - and keeps the generic entry point.)
    custom_candidate_scoring = False
    #: lookups give dense gradients: set by the trainer for the modes that score every entity
    #: (1vsAll, KvsAll), whose table gradient is dense anyway; a sparse one there costs a coalesce of
    #: the whole table per step and keeps the optimizer off its fused kernel (training/optimizers.py)
    dense_gradients = False
    #: the distance vector separates: ``f = q + sum_j A_j * X_j`` with ``(q, A) = distance_terms(...)``
    #: from the query and ``X = candidate_terms(c)`` from the candidate; the score is ``-||f||_p``
    #: (:func:`~kgcomplete.models.kernels.separable_scores`). Declared by the model.
    separable = False
    #: the score is minus a sum of BoxE box distances of points ``tanh(u + v)`` (``box_terms``;
    #: :func:`~kgcomplete.models.kernels.box_distances`). Declared by the model.
    boxes = False
    init = "normal"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "score_candidates" in vars(cls) and not cls.custom_candidate_scoring:
            raise TypeError(f"{cls.__name__} overrides score_candidates: declare custom_candidate_scoring = True")

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        dim: int = 100,
        reciprocal: bool = False,
        init_scale: float = 1e-3,
        sparse: bool = True,
        p_norm: int = 1,
        storage_dtype: str = "float32",
        **kwargs,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected options {sorted(kwargs)}")
        self.num_entities = num_entities
        self.num_base_relations = num_relations
        self.dim = dim
        self.reciprocal = reciprocal or self.requires_reciprocal
        #: with reciprocal relations, ranking adds this weight x the score of the same triple read
        #: the other way (``model.reciprocal_scoring``; 0 = the query's own direction only)
        self.reciprocal_scoring = 0.0
        self.p_norm = p_norm
        self.init_scale = init_scale
        n_rel = num_relations * (2 if self.reciprocal else 1)
        if str(storage_dtype) not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype={storage_dtype!r}: expected one of {', '.join(STORAGE_DTYPES)}")
        self.storage_dtype = str(storage_dtype)
        self.entity_emb = nn.Embedding(num_entities, self.entity_width(), sparse=sparse,
                                       dtype=STORAGE_DTYPES[self.storage_dtype])
        self.relation_emb = nn.Embedding(n_rel, self.relation_width(), sparse=sparse)
        self.reset_parameters()

    # ------------------------------------------------------------ to override
    def entity_width(self) -> int:
        return self.dim

    def relation_width(self) -> int:
        return self.dim

    def reset_parameters(self) -> None:
        for emb in (self.entity_emb, self.relation_emb):
            if self.init == "normal":
                nn.init.normal_(emb.weight, std=self.init_scale)
            else:
                nn.init.uniform_(emb.weight, -self.init_scale, self.init_scale)

    def score_emb(self, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Scores of broadcastable embeddings: h ``(..., We)``, r ``(..., Wr)``, t ``(..., We)`` -> ``(...)``."""
        raise NotImplementedError

    def tail_query(self, h: Tensor, r: Tensor) -> Tensor:
        """``(B, We), (B, Wr) -> (B, Wq)`` query compared with tail candidates by ``similarity``."""
        raise NotImplementedError

    def head_query(self, r: Tensor, t: Tensor) -> Tensor:
        """``(B, Wr), (B, We) -> (B, Wq)`` query compared with head candidates by ``similarity``."""
        raise NotImplementedError

    def candidate_features(self, e: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Candidate embeddings ``(..., We)`` -> (vectors compared with a query, additive bias or None)."""
        return e, None

    def relation_query(self, h: Tensor, t: Tensor) -> Optional[Tensor]:
        """Models whose score is linear in the relation row: ``(B, We), (B, We) -> (B, Wr)`` such that
        the score of ``(h, r, t)`` is ``<relation_query(h, t), r>`` (:meth:`score_relations` is then one
        matrix product); None for the others."""
        return None

    def distance_terms(self, anchor: Tensor, rel: Tensor, tails: bool) -> tuple[Optional[Tensor], ...]:
        """``separable`` models: anchor ``(*Q, We)`` and relation ``(*Q, Wr)`` rows of queries whose
        candidates fill the tail (``tails``) or head slot -> ``q (*Q, W)`` and ``A (J, *Q, W)`` (None:
        ``J = 1``, ``A = -1``), and optionally ``V (*Q, W)``, such that the candidate ``c``'s distance
        vector is ``q + sum_j A_j * X_j (+ (V . X_0) V)`` with ``X = candidate_terms(c)``."""
        raise NotImplementedError

    def candidate_terms(self, e: Tensor) -> Tensor:
        """``separable`` models: candidate rows ``(..., C, We)`` -> ``X (J, ..., C, W)``."""
        raise NotImplementedError

    def box_terms(self, anchor: Tensor, rel: Tensor, cand: Tensor, tails: bool) -> list[tuple[Tensor, ...]]:
        """``boxes`` models: ``[(u (*Q, W), v (..., C, W), centre (*Q, W), width (*Q, W)), ...]``, one
        per box, the score being ``-sum ||box distance of tanh(u_b + v_c)||_p``."""
        raise NotImplementedError

    # ----------------------------------------------------------- public scoring
    @property
    def num_relations(self) -> int:
        """Number of relation embeddings (2R with reciprocal relations)."""
        return self.relation_emb.num_embeddings

    def entities(self, ids: Optional[Tensor] = None) -> Tensor:
        """Float32 entity rows ``(*ids.shape, We)``; all rows ``(E, We)`` when ids is None."""
        w = self.entity_emb.weight
        dense = self.dense_gradients and w.dtype == torch.float32
        if ids is None:
            if torch.is_grad_enabled() and not dense:  # through the lookup so gradients stay sparse
                ids = torch.arange(self.num_entities, device=w.device)
            else:
                return w.float()  # no copy for float32 tables
        if w.device != ids.device:  # a table in host memory (training.entity_table=host): gather there
            return w.detach()[ids.to(w.device)].to(ids.device, non_blocking=True).float()
        if w.dtype == torch.float32:
            return nn.functional.embedding(ids, w) if dense else self.entity_emb(ids)
        if torch.is_grad_enabled() and w.requires_grad:
            return _LowPrecisionLookup.apply(ids, w)
        return w[ids].float()

    def relations(self, ids: Tensor) -> Tensor:
        if self.dense_gradients:
            return nn.functional.embedding(ids, self.relation_emb.weight)
        return self.relation_emb(ids)

    def inverse(self, r: Tensor) -> Tensor:
        """Ids of the inverse relations (reciprocal models only)."""
        return r + self.num_base_relations

    def score_triples(self, triples: Tensor) -> Tensor:
        """``(B, 3)`` ids -> ``(B,)`` scores."""
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        return self.score_emb(self.entities(h), self.relations(r), self.entities(t))

    def score_tails(self, h: Tensor, r: Tensor, candidates: Optional[Tensor] = None) -> Tensor:
        """Score ``(h, r, ?)`` queries.

        Args:
            h, r: ``(B,)`` ids.
            candidates: None (all entities), ``(C,)`` ids shared by the batch, or ``(B, C)`` ids per query.
        Returns:
            ``(B, C)`` scores (C = E when candidates is None).
        """
        a, rel, tails = self.query_embeddings(h, r)
        return self._score_ids(a, rel, candidates, tails)

    def score_heads(self, r: Tensor, t: Tensor, candidates: Optional[Tensor] = None) -> Tensor:
        """Score ``(?, r, t)`` queries; same conventions as :meth:`score_tails`."""
        a, rel, tails = self.query_embeddings(t, r, head=True)
        return self._score_ids(a, rel, candidates, tails)

    def query_direction(self, head: bool = False) -> tuple[bool, bool]:
        """(the query uses the inverse relation, the candidates fill the tail slot) of a tail query
        ``(anchor, r, ?)`` or, with ``head``, a head query ``(?, r, anchor)``: with reciprocal
        relations a head query is the tail query ``(anchor, r^-1, ?)``."""
        inverse = head and self.reciprocal
        return inverse, inverse or not head

    def query_embeddings(self, anchor: Tensor, r: Tensor, head: bool = False) -> tuple[Tensor, Tensor, bool]:
        """Anchor ``(B, We)`` and relation ``(B, Wr)`` embeddings of ``(anchor, r, ?)`` queries (or, with
        ``head``, ``(?, r, anchor)``), and whether the candidates fill the tail slot
        (:meth:`query_direction`)."""
        inverse, tails = self.query_direction(head)
        return self.entities(anchor), self.relations(self.inverse(r) if inverse else r), tails

    def score_relations(self, h: Tensor, t: Tensor) -> Tensor:
        """Score ``(h, ?, t)``: every base relation for each pair, ``(B,)`` ids -> ``(B, R)`` (the
        relation-prediction objective, ``training.relation_prediction``): one matrix product for the
        models with a :meth:`relation_query`, else ``score_emb`` broadcast over blocks of relations of at
        most ``CHUNK_ELEMENTS`` elements."""
        he, te = self.entities(h), self.entities(t)  # (B, We)
        rels = self.relations(torch.arange(self.num_base_relations, device=h.device))  # (R, Wr)
        q = self.relation_query(he, te)
        if q is not None:
            return q @ rels.T
        he, te = he.unsqueeze(1), te.unsqueeze(1)  # (B, 1, We)
        chunk = max(1, CHUNK_ELEMENTS // max(1, len(h) * rels.shape[1]))
        return torch.cat([self.score_emb(he, rels[s : s + chunk].unsqueeze(0), te)
                          for s in range(0, len(rels), chunk)], dim=1)

    @property
    def reads_both_ways(self) -> bool:
        """Whether :attr:`reciprocal_scoring` applies: reciprocal relations, and candidates can be
        scored in the head slot (ConvE, which needs reciprocal relations, cannot)."""
        return self.reciprocal and not self.requires_reciprocal

    @property
    def second_reading_weight(self) -> float:
        """The weight ranking gives the other reading of each triple: :attr:`reciprocal_scoring`
        where it applies (:attr:`reads_both_ways`), else 0."""
        return self.reciprocal_scoring if self.reads_both_ways else 0.0

    def score_queries(self, anchor: Tensor, r: Tensor, candidates: Optional[Tensor] = None, head: bool = False) -> Tensor:
        """Tail queries ``(anchor, r, ?)`` or, with ``head=True``, head queries ``(?, r, anchor)``:
        the scores that rank candidates. With reciprocal relations and :attr:`reciprocal_scoring`
        ``w > 0``, a candidate's score is that of its triple read in the query's direction plus ``w``
        times the other reading, which training scores too: tail query ``s(anchor, r, c) + w s(c, r^-1,
        anchor)``, head query ``s(anchor, r^-1, c) + w s(c, r, anchor)``."""
        own = self.score_heads(r, anchor, candidates) if head else self.score_tails(anchor, r, candidates)
        w = self.second_reading_weight
        if not w:
            return own
        other = self.relations(r if head else self.inverse(r))  # c fills the head slot of this relation
        return own + w * self._score_ids(self.entities(anchor), other, candidates, tails=False)

    def ranking_scores(self, anchor: Tensor, r: Tensor, candidates: Tensor, head: bool = False) -> Tensor:
        """:meth:`score_queries` against shared ``candidates (C,)`` up to a strictly increasing
        transform per query, so ranks are unchanged: ``(B, C)``. For L2 distances that is
        ``2 q.c - ||c||^2`` (= ``||q||^2 - ||q - c||^2``), one matrix product with no square root;
        other models return their scores. The evaluator's streaming path ranks with it.
        """
        if self.similarity != "l2" or candidates.dim() != 1 or self.second_reading_weight:
            return self.score_queries(anchor, r, candidates, head=head)
        a, rel, tails = self.query_embeddings(anchor, r, head)
        c, bias = self.candidate_features(self.entities(candidates))
        if bias is not None:
            return self.score_queries(anchor, r, candidates, head=head)
        q = self.tail_query(a, rel) if tails else self.head_query(rel, a)
        return torch.addmm(c.pow(2).sum(-1).neg_(), q, c.T, alpha=2.0)

    def score_candidates(self, anchor: Tensor, rel: Tensor, cand: Tensor, tails: bool = True) -> Tensor:
        """Scores of queries against candidate entities, from embeddings: the one candidate-scoring
        entry point (:meth:`score_tails`/:meth:`score_heads`, the negatives objective of both
        trainers, BESS workers and distributed ranking all score candidates here).

        A query is an anchor entity and a relation; each candidate fills the other slot: the tail
        (``tails=True``, triples ``(anchor, rel, c)``) or the head (``tails=False``, ``(c, rel,
        anchor)``). Inputs are float32 rows as :meth:`entities`/:meth:`relations` return them, the
        relation already resolved (a reciprocal model's head query passes ``rel`` = the inverse
        relation's row and ``tails=True``, see :meth:`query_direction`). Shapes (``We``/``Wr``:
        entity/relation widths):

        - anchor ``(B, We)``, rel ``(B, Wr)``, cand ``(C, We)`` shared by the queries -> ``(B, C)``;
        - anchor ``(B, We)``, rel ``(B, Wr)``, cand ``(B, C, We)``, candidates per query -> ``(B, C)``;
        - anchor ``(G, B, We)``, rel ``(G, B, Wr)``, cand ``(G, C, We)``: ``G`` groups of queries,
          each with its own shared candidates -> ``(G, B, C)``.

        Models with a ``similarity`` compare a query vector (``tail_query``/``head_query``) with
        ``candidate_features`` in one (batched) matrix product; ``separable`` models go through
        :func:`~kgcomplete.models.kernels.separable_scores`; the others evaluate ``score_emb`` over
        chunks of candidates, recomputed in the backward pass. A model with its own computation
        overrides this method (all three shapes) and declares ``custom_candidate_scoring``.
        Inside :func:`broadcast_scoring` the models without a ``similarity`` broadcast ``score_emb`` instead.
        """
        if anchor.dim() == 3 and anchor.shape[0] == 1:  # one group: the shared-candidates path
            return self.score_candidates(anchor[0], rel[0], cand[0], tails).unsqueeze(0)
        if self.similarity is None and broadcasting():
            return self._broadcast_chunks(anchor, rel, cand, tails)
        per_query = cand.dim() > anchor.dim()
        if self.separable and self.p_norm in (1, 2):
            q, A, *projection = self.distance_terms(anchor, rel, tails)
            return separable_scores(q, A, self.candidate_terms(cand), self.p_norm, per_query, V=next(iter(projection), None))
        if self.boxes and self.p_norm in (1, 2):
            return -sum(box_distances(*terms, self.p_norm, per_query) for terms in self.box_terms(anchor, rel, cand, tails))
        if self.similarity is None:
            return self._recomputed_chunks(anchor, rel, cand, tails, per_query)
        if anchor.dim() == 2:
            q = self.tail_query(anchor, rel) if tails else self.head_query(rel, anchor)
        else:  # groups: one query batch (G * B, Wq)
            a, r = anchor.flatten(0, -2), rel.flatten(0, -2)
            q = self.tail_query(a, r) if tails else self.head_query(r, a)
            q = q.view(*anchor.shape[:-1], q.shape[-1])
        vec, bias = self.candidate_features(cand)
        s = _similarity(q, vec, self.similarity)
        if bias is None:
            return s
        return s + (bias if cand.dim() > anchor.dim() else bias.unsqueeze(-2))

    # -------------------------------------------------------------- internals
    def _score_ids(self, anchor: Tensor, rel: Tensor, candidates: Optional[Tensor], tails: bool) -> Tensor:
        """:meth:`score_candidates` against candidate ids: ``(C,)``, ``(B, C)`` or None (all entities;
        a low-precision table is converted in blocks of rows, never copied whole to float32)."""
        w = self.entity_emb.weight
        elsewhere = w.device != anchor.device  # a table in host memory: streamed to the device in blocks
        if candidates is None and not torch.is_grad_enabled() and (
                elsewhere or (w.dtype != torch.float32 and self.num_entities > ENTITY_BLOCK_ROWS)):
            return torch.cat([self.score_candidates(
                anchor, rel, w[s : s + ENTITY_BLOCK_ROWS].to(anchor.device, non_blocking=True).float(), tails)
                for s in range(0, self.num_entities, ENTITY_BLOCK_ROWS)], dim=1)
        return self.score_candidates(anchor, rel, self.entities(candidates), tails)

    def _recomputed_chunks(self, anchor: Tensor, rel: Tensor, cand: Tensor, tails: bool, per_query: bool) -> Tensor:
        """Generic path of :meth:`score_candidates`: ``score_emb`` over cache-sized chunks of
        candidates, recomputed in the backward pass
        (:func:`~kgcomplete.models.kernels.recomputed_chunks`), when ``score_emb`` can be: the
        model's only parameters are its tables and it has no other module (no dropout, no layer).
        Else the plain broadcast (:meth:`_broadcast_chunks`)."""
        if any(name not in ("entity_emb", "relation_emb") for name, _ in self.named_children()):
            return self._broadcast_chunks(anchor, rel, cand, tails)

        def score(a: Tensor, r: Tensor, c: Tensor) -> Tensor:
            a, r = a.unsqueeze(-2), r.unsqueeze(-2)
            if not per_query:
                c = c.unsqueeze(-3)
            return self.score_emb(a, r, c) if tails else self.score_emb(c, r, a)

        return recomputed_chunks(score, anchor, rel, cand, per_query)

    def _broadcast_chunks(self, anchor: Tensor, rel: Tensor, cand: Tensor, tails: bool) -> Tensor:
        """The plain path of :meth:`score_candidates`: ``score_emb`` broadcast over blocks of
        candidates (``(..., B, chunk, W)`` elements at a time), one autograd graph through all of
        them: the reference of the faster paths (:func:`broadcast_scoring`)."""
        per_query = cand.dim() > anchor.dim()
        b, w = anchor.shape[:-1].numel(), cand.shape[-1]
        n = cand.shape[-2]
        chunk = max(1, CHUNK_ELEMENTS // max(1, b * w))
        a, rr = anchor.unsqueeze(-2), rel.unsqueeze(-2)
        out = []
        for s in range(0, n, chunk):
            c = cand[..., s : s + chunk, :]
            if not per_query:
                c = c.unsqueeze(-3)
            out.append(self.score_emb(a, rr, c) if tails else self.score_emb(c, rr, a))
        return torch.cat(out, dim=-1) if len(out) > 1 else out[0]

    # --------------------------------------------------------- regularisation
    def regularizer(self, triples: Tensor, kind: str) -> Tensor:
        """Penalty on the embeddings of a batch ``(B, 3)``: ``"l2"`` (sum of squares) or ``"n3"``
        (sum of cubed absolute values / complex moduli), averaged over the batch."""
        return self.regularizer_emb(self.entities(triples[:, 0]), self.relations(triples[:, 1]),
                                    self.entities(triples[:, 2]), kind)

    def regularizer_emb(self, h: Tensor, r: Tensor, t: Tensor, kind: str) -> Tensor:
        """:meth:`regularizer` on looked-up embeddings ``(B, We)``, ``(B, Wr)``, ``(B, We)``."""
        B = h.shape[0]
        if kind == "l2":
            return (h.pow(2).sum() + r.pow(2).sum() + t.pow(2).sum()) / B
        if kind == "n3":
            total = 0.0
            for p, is_complex in zip((h, r, t), (self.complex_entities, self.complex_relations, self.complex_entities)):
                if is_complex:
                    re, im = self.complex_parts(p)
                    total = total + torch.sqrt(re * re + im * im + 1e-12).pow(3).sum()
                else:
                    total = total + p.abs().pow(3).sum()
            return total / B
        raise ValueError(f"unknown regularizer {kind!r}: expected 'l2' or 'n3'")

    def complex_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Real and imaginary parts of complex rows (stored as ``[re | im]`` halves)."""
        return x.chunk(2, dim=-1)

    def extra_repr(self) -> str:
        return (
            f"entities={self.num_entities}, relations={self.num_relations}, dim={self.dim}, "
            f"reciprocal={self.reciprocal}"
        )


_broadcast = threading.local()


def broadcasting() -> bool:
    """Inside :func:`broadcast_scoring` (in this thread)."""
    return getattr(_broadcast, "on", False)


@contextlib.contextmanager
def broadcast_scoring() -> Iterator[None]:
    """Score candidates, in this thread, by broadcasting ``score_emb`` (one autograd graph through
    ``(B, C, W)`` tensors) instead of the kernels of :mod:`kgcomplete.models.kernels`, for every
    model without a ``similarity`` (RotatE included): the
    formula the fast paths are tested against (tests/test_model_speed_algebra.py) and the "before"
    column of benchmarks/bench_models.py."""
    before = broadcasting()
    _broadcast.on = True
    try:
        yield
    finally:
        _broadcast.on = before


class _LowPrecisionLookup(torch.autograd.Function):
    """Rows ``weight[ids]`` of a float16/bfloat16 table as float32 ``(*ids.shape, W)``.

    Backward keeps the row gradients in float32 and queues them on the table
    (``weight.pending_row_grads``: list of ``(ids (n,), grads (n, W))``) instead of building a
    low-precision sparse ``.grad``; :class:`~kgcomplete.training.optimizers.RowAdagrad` consumes them.
    """

    @staticmethod
    def forward(ctx, ids: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.weight = weight
        return weight[ids].float()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        w = ctx.weight
        if not hasattr(w, "pending_row_grads"):
            w.pending_row_grads = []
        w.pending_row_grads.append((ids.reshape(-1), grad.reshape(-1, grad.shape[-1]).float()))
        return None, None


class _NegL2(torch.autograd.Function):
    """``-||q_b - c_j||_2`` for q ``(B, W)``, c ``(C, W)`` -> ``(B, C)`` through one matrix product
    (``||q||^2 + ||c||^2 - 2 q.c``), with a hand-written backward: two more matrix products and
    one elementwise pass, instead of autograd's chain of ``(B, C)`` temporaries."""

    EPS = 1e-12

    @staticmethod
    def forward(ctx, q: Tensor, c: Tensor) -> Tensor:
        d = torch.addmm(c.pow(2).sum(-1), q, c.T, beta=1.0, alpha=-2.0)  # ||c||^2 - 2 q.c
        s = d.add_(q.pow(2).sum(-1, keepdim=True)).clamp_min_(_NegL2.EPS).sqrt_().neg_()
        ctx.save_for_backward(q, c, s)
        return s

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, c, s = ctx.saved_tensors
        # d s / d d2 = 1 / (2 s); with d2 = ||q||^2 + ||c||^2 - 2 q.c and H = grad / s:
        # dq = q * sum_j H - H c,  dc = c * sum_b H - H^T q
        h = grad / s
        if s.max() >= -math.sqrt(_NegL2.EPS) * (1 + 1e-6):  # clamped distances pass no gradient
            h.masked_fill_(s >= -math.sqrt(_NegL2.EPS) * (1 + 1e-6), 0.0)
        dq = dc = None
        if ctx.needs_input_grad[0]:
            dq = torch.addmm(q * h.sum(1, keepdim=True), h, c, alpha=-1.0)
        if ctx.needs_input_grad[1]:
            dc = torch.addmm(c * h.sum(0).unsqueeze(1), h.T, q, alpha=-1.0)
        return dq, dc


def _similarity(q: Tensor, cand: Tensor, kind: str) -> Tensor:
    """q ``(B, W)`` vs cand ``(C, W)`` or ``(B, C, W)`` -> ``(B, C)``; q ``(G, B, W)`` vs cand
    ``(G, C, W)`` -> ``(G, B, C)`` (batched matrix products)."""
    if kind == "l2" and torch.is_autocast_enabled(q.device.type):
        # the expansion ||q||^2 + ||c||^2 - 2 q.c cancels: never in bf16 (nor through _NegL2's float32 backward)
        with torch.autocast(q.device.type, enabled=False):
            return _similarity(q.float(), cand.float(), kind)
    if q.dim() == 3:
        if kind == "dot":
            return torch.bmm(q, cand.transpose(1, 2))
        if kind == "l2":
            d2 = q.pow(2).sum(-1, keepdim=True) + cand.pow(2).sum(-1).unsqueeze(1) - 2.0 * torch.bmm(q, cand.transpose(1, 2))
            return -torch.sqrt(d2.clamp_min(1e-12))
        if kind == "l1":
            return -torch.cdist(q, cand, p=1.0)
        raise ValueError(kind)
    if kind == "dot":
        return q @ cand.T if cand.dim() == 2 else torch.einsum("bw,bcw->bc", q, cand)
    if kind == "l2":
        if cand.dim() == 2:
            # ||q - c||^2 = ||q||^2 + ||c||^2 - 2 q.c  (one matrix product)
            return _NegL2.apply(q, cand)
        return -torch.linalg.vector_norm(q.unsqueeze(1) - cand, ord=2, dim=-1)
    if kind == "l1":
        if cand.dim() == 2:
            return -torch.cdist(q.unsqueeze(0), cand.unsqueeze(0), p=1.0).squeeze(0)
        return -(q.unsqueeze(1) - cand).abs().sum(-1)
    raise ValueError(kind)


def complex_mul(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise product of complex vectors stored as ``[re | im]`` halves."""
    ar, ai = a.chunk(2, dim=-1)
    br, bi = b.chunk(2, dim=-1)
    return torch.cat([ar * br - ai * bi, ar * bi + ai * br], dim=-1)


def complex_conj(a: Tensor) -> Tensor:
    ar, ai = a.chunk(2, dim=-1)
    return torch.cat([ar, -ai], dim=-1)


def uniform_phase_(t: Tensor) -> Tensor:
    with torch.no_grad():
        return t.uniform_(-math.pi, math.pi)
