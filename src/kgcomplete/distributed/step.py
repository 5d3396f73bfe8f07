"""One BESS step: the shared step plan, each worker's view of it, scoring through an exchange,
the loss, gradient sync of the replicated parameters, and a single-process reference.

Shapes: ``n`` workers, ``P`` triples per block, ``B = n * P`` triples per worker, ``k`` negatives
per shard, ``T`` negative types (1 when uniform), ``C = n * k`` negatives per side and triple,
``W`` entity width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ..models.base import KGEModel, _similarity
from ..training.loss import negative_sampling_loss
from .exchange import MASKED_SCORE, Comm, StepTimer
from .negative_sampler import NegativeDraw, ShardedNegativeSampler
from .sharding import Sharding


@dataclass
class StepPlan:
    """Everything random about a step; identical on every worker.

    ``triples``: ``(n, n, P, 3)`` global ids of block ``(head shard, tail shard)``;
    ``neg``: the step's :class:`NegativeDraw`; ``sides``: corrupted sides (``head``/``tail``).
    """

    triples: np.ndarray
    neg: NegativeDraw
    sides: tuple[str, ...]


def make_plan(triples: np.ndarray, sampler: ShardedNegativeSampler, rng: np.random.Generator) -> StepPlan:
    return StepPlan(triples, sampler.sample(rng, triples), sampler.sides)


@dataclass
class WorkerView:
    """Worker ``rank``'s slice of a :class:`StepPlan`, as tensors on ``device``."""

    rank: int
    h_local: Tensor  #: (B,) local rows of my triples' heads (on my shard)
    r: Tensor  #: (B,) relation ids of my triples
    r_all: Tensor  #: (n, B) relation ids of every worker's triples
    tail_send: Tensor  #: (n, P) local rows of the tails worker j needs from me (block (j, rank))
    neg_send: Tensor  #: (n, ns, T, k) local rows of the negatives I draw for worker j
    row_type: Optional[Tensor]  #: (ns, B) index into the step's types, or None
    mask: Optional[Tensor]  #: (T, n, k) bool, False where the source shard lacks the type
    h_flat: Tensor  #: (B,) heads as rows of the all-gathered table (shard * S + row)
    t_flat: Tensor  #: (B,) tails, same
    neg_flat: Tensor  #: (n_src, ns, T, k) negatives I receive, same
    sides: tuple[str, ...] = ("tail",)  #: corrupted sides, in ``ns`` order

    @property
    def touched(self) -> Tensor:
        """Local rows any worker reads from my shard this step."""
        return torch.unique(torch.cat([self.h_local, self.tail_send.reshape(-1), self.neg_send.reshape(-1)]))

    @classmethod
    def build(cls, plan: StepPlan, sharding: Sharding, sampler: ShardedNegativeSampler, rank: int, device="cpu") -> "WorkerView":
        n, S = sharding.n_shard, sharding.shard_size
        mine = plan.triples[rank].reshape(-1, 3)  # blocks (rank, j)
        to_idx, to_shard = sharding.entity_to_idx, sharding.entity_to_shard
        k = plan.neg.local.shape[-1]
        row_type = None
        if plan.neg.types is not None:
            cols = [0 if s == "head" else 2 for s in plan.sides]
            row_type = torch.as_tensor(np.stack([sampler.row_types(plan.neg, mine[:, c]) for c in cols]))
        mask = None
        if plan.neg.mask is not None:
            mask = torch.as_tensor(np.repeat(plan.neg.mask.T[:, :, None], k, axis=2))
        flat = lambda e: to_shard[e] * S + to_idx[e]  # noqa: E731
        neg_flat = np.arange(n)[:, None, None, None] * S + plan.neg.local[:, rank]
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=device)  # noqa: E731
        return cls(
            rank, t(to_idx[mine[:, 0]]), t(mine[:, 1]), t(plan.triples[..., 1].reshape(n, -1)),
            t(to_idx[plan.triples[:, rank, :, 2]]), t(plan.neg.local[rank]),
            None if row_type is None else row_type.to(device), None if mask is None else mask.to(device),
            t(flat(mine[:, 0])), t(flat(mine[:, 2])), t(neg_flat), tuple(plan.sides),
        )


# ---------------------------------------------------------------- scoring
def score_groups(model: KGEModel, anchor: Tensor, rel: Tensor, cand: Tensor, tails: bool) -> Tensor:
    """Score ``G`` groups of queries against their own candidates.

    anchor ``(G, B, We)``, rel ``(G, B, Wr)``, cand ``(G, C, We)`` -> ``(G, B, C)``. Uses the
    model's query/similarity fast path when it has one (one batched matrix product), otherwise
    its broadcasting ``score_emb`` over candidate chunks.
    """
    G, B = anchor.shape[:2]
    if model.similarity is not None:
        q = (model.tail_query(anchor.flatten(0, 1), rel.flatten(0, 1)) if tails
             else model.head_query(rel.flatten(0, 1), anchor.flatten(0, 1)))
        q = q.view(G, B, -1)
        vec, bias = model.candidate_features(cand)
        if G == 1:
            s = _similarity(q[0], vec[0], model.similarity).unsqueeze(0)
        elif model.similarity == "dot":
            s = torch.bmm(q, vec.transpose(1, 2))
        elif model.similarity == "l2":
            d2 = q.pow(2).sum(-1, keepdim=True) + vec.pow(2).sum(-1).unsqueeze(1) - 2.0 * torch.bmm(q, vec.transpose(1, 2))
            s = -torch.sqrt(d2.clamp_min(1e-12))
        else:
            s = -torch.cdist(q, vec, p=1.0)
        return s if bias is None else s + bias.unsqueeze(1)
    C, W = cand.shape[1], cand.shape[2]
    chunk = max(1, (1 << 24) // max(1, G * B * W))
    a, r = anchor.unsqueeze(2), rel.unsqueeze(2)
    out = []
    for s0 in range(0, C, chunk):
        c = cand[:, s0 : s0 + chunk].unsqueeze(1)  # (G, 1, c, W)
        out.append(model.score_emb(a, r, c) if tails else model.score_emb(c, r, a))
    return torch.cat(out, dim=2) if len(out) > 1 else out[0]


def query_side(model: KGEModel, h: Tensor, t: Tensor, r: Tensor, r_emb: Tensor, side: str):
    """(anchor embeddings, relation embeddings, score as tails?) for corrupting ``side``.

    Mirrors ``KGEModel.score_tails``/``score_heads`` (reciprocal models answer head queries as
    tail queries with the inverse relation).
    """
    if side == "tail":
        return h, r_emb, True
    if model.reciprocal:
        return t, model.relations(model.inverse(r)), True
    return t, r_emb, False


def positive_score(model: KGEModel, h: Tensor, r_emb: Tensor, t: Tensor, rel_side: Tensor, side: str) -> Tensor:
    """``(B,)`` positive scores in the same direction as that side's negatives: a reciprocal
    model's head corruption scores ``(t, r^-1, h)``, the other cases ``(h, r, t)``."""
    if side == "head" and model.reciprocal:
        return model.score_emb(t, rel_side, h)
    return model.score_emb(h, r_emb, t)


def finish_negatives(s: Tensor, view: WorkerView, si: int) -> Tensor:
    """``(B, T, n, k)`` scores -> ``(B, n*k)``: pick each triple's type, mask placeholders."""
    B = s.shape[0]
    if view.row_type is not None:
        rt = view.row_type[si]
        s = s[torch.arange(B, device=s.device), rt]
        if view.mask is not None:
            s = torch.where(view.mask[rt], s, torch.full_like(s, MASKED_SCORE))
    else:
        s = s[:, 0]
    return s.reshape(B, -1)


def forward_step(model: KGEModel, view: WorkerView, comm: Comm, exchange: str = "embeddings",
                 timer: Optional[StepTimer] = None, entity_rows: Optional[Callable[[Tensor], Tensor]] = None,
                 ) -> tuple[list[Tensor], list[Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Scores of worker ``view.rank``'s triples, per corrupted side: positives ``(B,)`` and
    negatives ``(B, C)``; and the ``(h, r, t)`` embeddings (for the regularizer).

    ``entity_rows``: looks up the shard's rows (default the model's sparse-gradient lookup; a
    :class:`~kgcomplete.training.row_gradients.RowLeaves` for the row-gradient step). Not used by
    the ``allgather`` exchange, which sends the whole shard.
    """
    n = comm.world
    B, P = view.h_local.shape[0], view.tail_send.shape[1]
    ns, T, k = view.neg_send.shape[1:]
    emb = model.entity_emb
    t0 = timer.now() if timer else 0.0
    if exchange == "allgather":
        local = emb(torch.arange(emb.num_embeddings, device=view.h_local.device))
        if timer:
            timer.add("gather", timer.now() - t0)
        table = comm.all_gather(local).flatten(0, 1)  # (n*S, W)
        h, t = table[view.h_flat], table[view.t_flat]
        negs = table[view.neg_flat]  # (n_src, ns, T, k, W)
    elif exchange in ("embeddings", "scores"):
        ids = torch.cat([view.h_local, view.tail_send.reshape(-1), view.neg_send.reshape(-1)])
        rows = (entity_rows or emb)(ids)
        if timer:
            timer.add("gather", timer.now() - t0)
        h, tails, neg_rows = rows[:B], rows[B : B + n * P], rows[B + n * P :]
        W = rows.shape[1]
        if exchange == "embeddings":  # one balanced all_to_all for tails and negatives
            send = torch.cat([tails.view(n, P, W), neg_rows.view(n, ns * T * k, W)], 1)
            recv = comm.all_to_all(send)
            t = recv[:, :P].reshape(B, W)
            negs = recv[:, P:].reshape(n, ns, T, k, W)
        else:
            t = comm.all_to_all(tails.view(n, P, W)).reshape(B, W)
            negs = neg_rows.view(n, ns, T, k, W)  # mine, for every destination
    else:
        raise ValueError(f"distributed.exchange={exchange!r}: expected one of embeddings, scores, allgather")
    r_emb = model.relations(view.r)
    pos, out = [], []
    for si, side in enumerate(view.sides):
        anchor, rel, tails_side = query_side(model, h, t, view.r, r_emb, side)
        pos.append(positive_score(model, h, r_emb, t, rel, side))
        if exchange == "scores":
            # queries of every worker against my negatives for that worker, scores sent back
            r_ids = view.r_all if (side == "tail" or not model.reciprocal) else model.inverse(view.r_all)
            s = score_groups(model, comm.all_gather(anchor), model.relations(r_ids),
                             negs[:, si].reshape(n, T * k, -1), tails_side)  # (n_dest, B, T*k)
            s = comm.all_to_all(s).view(n, B, T, k).permute(1, 2, 0, 3)  # (B, T, n_src, k)
        else:
            cand = negs[:, si].permute(1, 0, 2, 3).reshape(1, T * n * k, -1)
            s = score_groups(model, anchor.unsqueeze(0), rel.unsqueeze(0), cand, tails_side)[0].view(B, T, n, k)
        out.append(finish_negatives(s, view, si))
    return pos, out, (h, r_emb, t)


def loss_kwargs(tcfg) -> dict:
    """``negative_sampling_loss`` options from a ``TrainingConfig`` (as the core trainer maps them)."""
    return dict(kind=tcfg.loss if tcfg.loss != "ce" else "softmax", margin=tcfg.margin,
                adversarial_temperature=tcfg.adversarial_temperature, label_smoothing=tcfg.label_smoothing)


def worker_loss(pos: list[Tensor], negs: list[Tensor], tcfg, reg: Optional[Tensor] = None) -> Tensor:
    """Mean over sides of the core ``negative_sampling_loss`` (+ weighted regularizer)."""
    kw = loss_kwargs(tcfg)
    loss = sum(negative_sampling_loss(p, s, **kw) for p, s in zip(pos, negs)) / len(negs)
    if reg is not None:
        loss = loss + tcfg.reg_weight * reg
    return loss


def use_regularizer(tcfg) -> bool:
    return tcfg.regularizer != "none" and tcfg.reg_weight > 0


def sync_replicated_grads(model: KGEModel, comm: Comm, extra: Optional[Tensor] = None) -> Optional[Tensor]:
    """Sum the gradients of every parameter but the entity shard over workers (one ``all_reduce``).

    Sparse gradients are summed densely together with a touched-row mask, then made sparse again
    on the union of touched rows (so sparse optimizers update the same rows as one process would).
    ``extra`` (e.g. the loss) rides along and is returned summed. BatchNorm running statistics
    (:func:`running_stats`) ride along too and are replaced by their mean over workers, so the
    replicas stay identical buffer for buffer (a checkpoint's shards agree; gather/re-shard keep
    shard 0's).
    """
    params = [p for p in model.parameters() if p is not model.entity_emb.weight and p.requires_grad]
    if comm.world == 1:
        return extra
    stats = running_stats(model)
    parts, meta = [], []
    for p in params:
        g = p.grad
        if g is not None and g.is_sparse:
            g = g.coalesce()
            dense = torch.zeros_like(p).index_add_(0, g.indices()[0], g.values())
            touched = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
            touched[g.indices()[0]] = 1.0
            parts += [dense.reshape(-1), touched]
            meta.append("sparse")
        else:
            parts.append((g if g is not None else torch.zeros_like(p)).reshape(-1))
            meta.append("dense")
    parts += [b.detach().reshape(-1).to(params[0].dtype if params else torch.float32) for b in stats]
    if extra is not None:
        parts.append(extra.detach().reshape(-1).to(params[0].dtype if params else torch.float32))
    flat = torch.cat(parts) if parts else torch.zeros(0)
    comm.all_reduce_(flat)
    off = 0
    for p, kind in zip(params, meta):
        n_val = p.numel()
        dense = flat[off : off + n_val].view_as(p)
        off += n_val
        if kind == "sparse":
            touched = flat[off : off + p.shape[0]] > 0
            off += p.shape[0]
            rows = torch.nonzero(touched).squeeze(1)
            p.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), dense[rows], p.shape).coalesce()
        else:
            p.grad = dense.clone()
    with torch.no_grad():
        for b in stats:  # each worker updated them from its own triples: keep the mean everywhere
            b.copy_(flat[off : off + b.numel()].view_as(b) / comm.world)
            off += b.numel()
    return flat[off:] if extra is not None else None


def running_stats(model: torch.nn.Module) -> list[Tensor]:
    """Buffers that training updates on every worker from its own batch (BatchNorm running mean and
    variance, e.g. ConvE's): replicated state that gradient sync alone would let drift apart."""
    out = []
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            out += [b for b in (m.running_mean, m.running_var) if b is not None]
    return out


def restrict_entity_grad(model: KGEModel, rows: Tensor) -> None:
    """Keep only ``rows`` of the entity shard's (sparse) gradient (all-gather baseline)."""
    g = model.entity_emb.weight.grad
    if g is None:
        return
    dense = g.to_dense() if g.is_sparse else g
    model.entity_emb.weight.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), dense[rows], dense.shape).coalesce()


# --------------------------------------------------------------- reference
def reference_step(model: KGEModel, plan: StepPlan, sharding: Sharding, sampler: ShardedNegativeSampler, tcfg) -> dict:
    """What the workers compute, done in one process with the whole table and core scoring.

    Returns ``{"pos": [n x [per side (B,)]], "neg": [n x [per side (B, C)]], "loss": scalar}``; the loss is
    the mean of the workers' losses (= the loss of the whole step, blocks being equal-sized).
    """
    n = sharding.n_shard
    draw = plan.neg
    out = {"pos": [], "neg": [], "loss": 0.0}
    for i in range(n):
        tr = torch.as_tensor(plan.triples[i].reshape(-1, 3))
        h, r, t = tr[:, 0], tr[:, 1], tr[:, 2]
        pos, negs = [], []
        for si, side in enumerate(plan.sides):
            if side == "head" and model.reciprocal:  # (t, r^-1, h), as the head negatives
                pos.append(model.score_tails(t, model.inverse(r), h.unsqueeze(1))[:, 0])
            else:
                pos.append(model.score_triples(tr))
            # (T, n_src * k) global ids: k from every source shard, in source order
            loc = draw.local[:, i, si]  # (n_src, T, k)
            cand = sharding.shard_and_idx_to_entity[np.arange(n)[:, None, None], loc]
            cand = torch.as_tensor(cand.transpose(1, 0, 2).reshape(loc.shape[1], -1))
            if draw.types is None:
                c = cand[0]
            else:
                rt = torch.as_tensor(sampler.row_types(draw, (h if side == "head" else t).numpy()))
                c = cand[rt]  # (B, C)
            s = model.score_tails(h, r, c) if side == "tail" else model.score_heads(r, t, c)
            if draw.mask is not None:
                m = torch.as_tensor(np.repeat(draw.mask.T[:, :, None], loc.shape[-1], axis=2).reshape(loc.shape[1], -1))
                s = torch.where(m[rt], s, torch.full_like(s, MASKED_SCORE))
            negs.append(s)
        reg = model.regularizer(tr, tcfg.regularizer) if use_regularizer(tcfg) else None
        out["loss"] = out["loss"] + worker_loss(pos, negs, tcfg, reg) / n
        out["pos"].append(pos)
        out["neg"].append(negs)
    return out
