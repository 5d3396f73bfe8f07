"""One BESS step: the shared step plan, each worker's view of it, scoring through an exchange,
gradient sync of the replicated parameters. The loss is the negatives objective of the core
trainer (training/objective.py): the same side queries, positives, loss options and regulariser;
only the candidates' rows (or scores) travel through the exchange.

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

from ..models.base import KGEModel
from ..training.objective import relation_rows, side_queries, sides_loss
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
    r_emb, r_inv = relation_rows(model, view.sides, view.r)
    pos, out = [], []
    for si, q in enumerate(side_queries(model, view.sides, h, r_emb, t, r_inv)):
        pos.append(q.positive)
        if exchange == "scores":
            # queries of every worker against my negatives for that worker, scores sent back
            r_ids = model.inverse(view.r_all) if q.inverse else view.r_all
            s = model.score_candidates(comm.all_gather(q.anchor), model.relations(r_ids),
                                       negs[:, si].reshape(n, T * k, -1), q.tails)  # (n_dest, B, T*k)
            s = comm.all_to_all(s).view(n, B, T, k).permute(1, 2, 0, 3)  # (B, T, n_src, k)
        else:
            cand = negs[:, si].permute(1, 0, 2, 3).reshape(T * n * k, -1)
            s = model.score_candidates(q.anchor, q.rel, cand, q.tails).view(B, T, n, k)
        out.append(finish_negatives(s, view, si))
    return pos, out, (h, r_emb, t)


#: a worker's loss from :func:`forward_step`'s scores (mean over sides + weighted regularizer):
#: the core objective's :func:`~kgcomplete.training.objective.sides_loss`
worker_loss = sides_loss


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
