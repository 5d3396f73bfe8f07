"""Distributed filtered ranking and top-k: queries are shared, every shard scores them against its
own rows in windows, and the partial results (rank counts, top-k lists) are merged.

No worker ever holds the whole entity table: per chunk of ``Q`` queries a worker holds the anchor
and answer embeddings ``(Q, 2, W)`` (summed from their owners) and one ``(Q, window)`` score block.

Ranks follow the core evaluator: realistic tie handling, filtering of the other known answers.
The true answer's own column is left out of the counts explicitly (the core subtracts it from the
ties), so ranks equal the single-process ones except where another candidate's score lies within
float rounding of the answer's.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import Tensor

from ..evaluation.evaluator import RankingResult, rank_counts, realistic_rank
from ..evaluation.filter_index import FilterIndex
from ..models.base import KGEModel
from .exchange import Comm
from .section import DEFAULT_WINDOW  # ``distributed.window``
from .sharding import Sharding
from ..console import bars_wanted


# --------------------------------------------------------------- per shard
def owned_rows(model: KGEModel, sharding: Sharding, shard: int, ids: np.ndarray) -> Tensor:
    """``(...)`` global ids -> ``(..., W)`` embeddings of the ids on ``shard``, zeros elsewhere."""
    w = model.entity_emb.weight
    s, i = sharding.local(ids)
    out = torch.zeros(*np.shape(ids), w.shape[1], dtype=w.dtype, device=w.device)
    mine = torch.as_tensor(s == shard, device=w.device)
    out[mine] = w[torch.as_tensor(i, device=w.device)[mine]]
    return out


def gather_owned_rows(load_shard: "ShardLoader", sharding: Sharding, ids: np.ndarray) -> Tensor:
    """``(...)`` global ids -> ``(..., W)`` embeddings, each row from the shard that owns it."""
    return sum(owned_rows(load_shard(s), sharding, s, ids) for s in range(sharding.n_shard))


def query_parts(model: KGEModel, anchor: Tensor, r: np.ndarray, head: bool):
    """(anchor, relation embeddings, tails?) of ``(anchor, r, ?)`` / ``(?, r, anchor)`` queries
    (:meth:`~kgcomplete.models.base.KGEModel.query_direction`)."""
    rt = torch.as_tensor(np.asarray(r, np.int64), device=anchor.device)
    inverse, tails = model.query_direction(head)
    return anchor, model.relations(model.inverse(rt) if inverse else rt), tails


def window_scores(model: KGEModel, a: Tensor, rel: Tensor, lo: int, hi: int, tails: bool) -> Tensor:
    """Scores ``(Q, hi - lo)`` of the queries against the shard's rows ``lo .. hi - 1``."""
    rows = model.entities(torch.arange(lo, hi, device=a.device))
    return model.score_candidates(a, rel, rows, tails)


def target_scores(model: KGEModel, anchor: Tensor, answer: Tensor, r: np.ndarray, head: bool) -> Tensor:
    """Scores ``(Q,)`` of the true answers, from embeddings (same query convention as the windows)."""
    a, rel, tails = query_parts(model, anchor, r, head)
    return model.score_emb(a, rel, answer) if tails else model.score_emb(answer, rel, a)


def window_bounds(count: int, window: int) -> Iterable[tuple[int, int]]:
    return ((lo, min(lo + window, count)) for lo in range(0, count, window))


def shard_rank_counts(
    model: KGEModel, sharding: Sharding, shard: int, anchor: Tensor, r: np.ndarray, head: bool,
    target: Tensor, answer: np.ndarray, known: Optional[tuple[np.ndarray, np.ndarray]], window: int,
) -> Tensor:
    """``(2, Q)`` (#better, #tied) among the real rows of ``shard``, the answer itself excluded,
    the ``known`` (query, entity) pairs (other true answers) filtered out."""
    dev = anchor.device
    a, rel, tails = query_parts(model, anchor, r, head)
    Q = len(answer)
    counts = torch.zeros(2, Q, dtype=torch.long, device=dev)
    ans_s, ans_i = sharding.local(answer)
    own_q = np.flatnonzero(ans_s == shard)
    kq = ki = np.zeros(0, np.int64)
    if known is not None:
        q, ent = known
        s, i = sharding.local(ent)
        keep = s == shard
        kq, ki = q[keep], i[keep]
    for lo, hi in window_bounds(int(sharding.shard_counts[shard]), window):
        sc = window_scores(model, a, rel, lo, hi, tails)  # (Q, w)
        better, tied = rank_counts(sc, target)
        counts[0] += better
        counts[1] += tied
        for qq, ii in ((own_q[(ans_i[own_q] >= lo) & (ans_i[own_q] < hi)], None), (kq, ki)):
            if ii is None:
                ii = ans_i[qq]
            else:
                sel = (ii >= lo) & (ii < hi)
                qq, ii = qq[sel], ii[sel]
            if len(qq) == 0:
                continue
            qt, it = torch.as_tensor(qq, device=dev), torch.as_tensor(ii - lo, device=dev)
            v, tv = sc[qt, it], target[qt]
            counts[0].index_add_(0, qt, -(v > tv).long())
            counts[1].index_add_(0, qt, -(v == tv).long())
    return counts


def shard_topk(
    model: KGEModel, sharding: Sharding, shard: int, anchor: Tensor, r: np.ndarray, head: bool, k: int,
    exclude: Optional[tuple[np.ndarray, np.ndarray]], window: int,
) -> tuple[Tensor, Tensor]:
    """Running top-k over the windows of ``shard``: ``(Q, k)`` scores and global ids (padded with
    ``-inf`` / ``-1`` when the shard has fewer than ``k`` rows). ``exclude``: (query, entity) pairs
    scored ``-inf``."""
    dev = anchor.device
    a, rel, tails = query_parts(model, anchor, r, head)
    Q = anchor.shape[0]
    vals = torch.full((Q, k), float("-inf"), device=dev)
    ids = torch.full((Q, k), -1, dtype=torch.long, device=dev)
    eq = ei = np.zeros(0, np.int64)
    if exclude is not None:
        s, i = sharding.local(exclude[1])
        eq, ei = exclude[0][s == shard], i[s == shard]
    to_global = torch.as_tensor(sharding.shard_and_idx_to_entity[shard], device=dev)
    for lo, hi in window_bounds(int(sharding.shard_counts[shard]), window):
        sc = window_scores(model, a, rel, lo, hi, tails).float()
        sel = (ei >= lo) & (ei < hi)
        if sel.any():
            sc[torch.as_tensor(eq[sel], device=dev), torch.as_tensor(ei[sel] - lo, device=dev)] = float("-inf")
        top = torch.topk(sc, min(k, hi - lo), dim=1)
        vals, ids = merge_topk(torch.cat([vals, top.values], 1), torch.cat([ids, to_global[top.indices + lo]], 1), k)
    return vals, ids


def merge_topk(vals: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of concatenated partial lists ``(Q, m)``; ties broken by the smaller entity id."""
    # sort by id first so that a stable sort on scores keeps ids ascending among equal scores
    order = torch.argsort(torch.where(ids < 0, torch.iinfo(torch.long).max, ids), dim=1, stable=True)
    vals, ids = vals.gather(1, order), ids.gather(1, order)
    order = torch.argsort(vals, dim=1, descending=True, stable=True)[:, :k]
    return vals.gather(1, order), ids.gather(1, order)


# ------------------------------------------------------- distributed (SPMD)
def _known_pairs(filter_index, batch, head, answer):
    anchor_col = 2 if head else 0
    q, ent = filter_index.known(batch[:, anchor_col], batch[:, 1], head=head)
    other = ent != answer[q]
    return q[other], ent[other]


@torch.no_grad()
def distributed_rank(
    model: KGEModel, sharding: Sharding, comm: Comm, triples: np.ndarray, filter_index: Optional[FilterIndex],
    chunk_elements: int = 1 << 22, window: int = DEFAULT_WINDOW, progress: bool = False,
) -> RankingResult:
    """Filtered (``filter_index`` given) or raw ranks of ``triples (N, 3)``; every worker calls this
    with the same triples and gets the same :class:`RankingResult`."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    was_training = model.training
    model.eval()
    window = max(1, min(window, sharding.shard_size))
    qchunk = max(1, chunk_elements // window)
    ranks = {}
    try:
        for head in (True, False):
            anchor_col, answer_col = (2, 0) if head else (0, 2)
            out = np.empty(len(triples))
            for s, e in window_bounds(len(triples), qchunk):
                batch = triples[s:e]
                emb = owned_rows(model, sharding, comm.rank, batch[:, [anchor_col, answer_col]])
                comm.all_reduce_(emb)
                target = target_scores(model, emb[:, 0], emb[:, 1], batch[:, 1], head)
                known = _known_pairs(filter_index, batch, head, batch[:, answer_col]) if filter_index else None
                counts = shard_rank_counts(model, sharding, comm.rank, emb[:, 0], batch[:, 1], head, target,
                                           batch[:, answer_col], known, window)
                comm.all_reduce_(counts)
                c = counts.cpu().numpy()
                out[s:e] = realistic_rank(c[0], c[1])
            ranks[head] = out
    finally:
        model.train(was_training)
    return RankingResult(triples, ranks[True], ranks[False])


@torch.no_grad()
def distributed_topk(
    model: KGEModel, sharding: Sharding, comm: Comm, anchor: np.ndarray, r: np.ndarray, head: bool, k: int,
    filter_index: Optional[FilterIndex] = None, window: int = DEFAULT_WINDOW,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(Q, k)`` scores and entity ids on every worker; ``filter_index`` excludes known answers."""
    anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
    model.eval()
    emb = comm.all_reduce_(owned_rows(model, sharding, comm.rank, anchor))
    exclude = filter_index.known(anchor, r, head=head) if filter_index is not None else None
    vals, ids = shard_topk(model, sharding, comm.rank, emb, r, head, k, exclude, max(1, window))
    vals, ids = comm.all_gather_nograd(vals), comm.all_gather_nograd(ids)  # (n, Q, k)
    vals, ids = merge_topk(torch.cat(list(vals), 1), torch.cat(list(ids), 1), k)
    return vals.cpu().numpy(), ids.cpu().numpy()


# ------------------------------------------- one process, shards in turn
ShardLoader = Callable[[int], KGEModel]


@torch.no_grad()
def streamed_rank(
    load_shard: ShardLoader, sharding: Sharding, triples: np.ndarray, filter_index: Optional[FilterIndex],
    chunk_elements: int = 1 << 22, window: int = DEFAULT_WINDOW, progress: bool = False,
) -> RankingResult:
    """:func:`distributed_rank` in one process, holding one shard at a time (``load_shard(i)``)."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    n = sharding.n_shard
    emb = gather_owned_rows(load_shard, sharding, triples[:, [0, 2]])  # pass 1: (N, 2, W) heads and tails
    window = max(1, min(window, sharding.shard_size))
    qchunk = max(1, chunk_elements // window)
    counts = {h: torch.zeros(2, len(triples), dtype=torch.long) for h in (True, False)}
    targets = {}
    shards = range(n)
    if bars_wanted(progress):
        from tqdm.auto import tqdm

        shards = tqdm(shards, desc="ranking shards", unit="shard", leave=False)
    for s in shards:  # pass 2: rank counts, shard by shard
        m = load_shard(s)
        for head in (True, False):
            ai, aw = (1, 0) if head else (0, 1)
            answer_col = 0 if head else 2
            if head not in targets:
                targets[head] = torch.cat([target_scores(m, emb[a:b, ai], emb[a:b, aw], triples[a:b, 1], head)
                                           for a, b in window_bounds(len(triples), qchunk)]) if len(triples) else torch.zeros(0)
            for a, b in window_bounds(len(triples), qchunk):
                batch = triples[a:b]
                known = _known_pairs(filter_index, batch, head, batch[:, answer_col]) if filter_index else None
                counts[head][:, a:b] += shard_rank_counts(m, sharding, s, emb[a:b, ai], batch[:, 1], head,
                                                          targets[head][a:b], batch[:, answer_col], known, window).cpu()
    ranks = {h: realistic_rank(c[0].cpu().numpy(), c[1].cpu().numpy()) for h, c in counts.items()}
    return RankingResult(triples, ranks[True], ranks[False])


@torch.no_grad()
def streamed_topk(
    load_shard: ShardLoader, sharding: Sharding, anchor: np.ndarray, r: np.ndarray, head: bool, k: int,
    filter_index: Optional[FilterIndex] = None, window: int = DEFAULT_WINDOW,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`distributed_topk` in one process, one shard at a time."""
    anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
    emb = gather_owned_rows(load_shard, sharding, anchor)
    exclude = filter_index.known(anchor, r, head=head) if filter_index is not None else None
    vals, ids = [], []
    for s in range(sharding.n_shard):
        v, i = shard_topk(load_shard(s), sharding, s, emb, r, head, k, exclude, max(1, window))
        vals.append(v)
        ids.append(i)
    v, i = merge_topk(torch.cat(vals, 1), torch.cat(ids, 1), k)
    return v.cpu().numpy(), i.cpu().numpy()
