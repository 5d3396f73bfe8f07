"""Filtered / raw link-prediction ranking and metrics (MRR, MR, Hits@k).

Protocol: every test triple ``(h, r, t)`` gives a tail query ``(h, r, ?)`` and a head query
``(?, r, t)``. The true answer is ranked against all entities (or, OGB-style, against given
candidates). *Filtered*: other known answers (train/valid/test) are removed before ranking.
Ties are ranked realistically: the mean of the optimistic and pessimistic rank,
``1 + #better + #tied / 2``. Scores of ``-inf`` (e.g. entities a text model never generated) tie
with each other and take the mean rank of that tie.

Memory: queries are scored in chunks of ``max(1, chunk_elements // num_candidates)``; filtering
uses the flat known-answer pairs of the chunk (:class:`FilterIndex`), never a dense mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np
import torch
from torch import Tensor

from .filter_index import FilterIndex
from ..console import bars_wanted

HITS_AT = (1, 3, 10)
#: Below this many queries per chunk (``chunk_elements // E``), rank by streaming entity blocks.
STREAM_BELOW_QUERIES = 32
#: Queries per chunk and minimum entities per block of the streaming path.
STREAM_QUERIES = 1024
STREAM_MIN_BLOCK = 4096


class QueryScorer(Protocol):
    """Anything that scores queries against entities: KGE models, KGT5, ensembles."""

    def score_queries(self, anchor: Tensor, r: Tensor, candidates: Optional[Tensor] = None, head: bool = False) -> Tensor:
        """``(B,)`` anchors and relations -> ``(B, C)`` scores (C = all entities if candidates is None)."""


def rank_counts(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``scores (B, C)``, ``target (B,)`` scores of the true answers -> (#better, #tied) per row.

    ``#tied`` includes the true answer itself when it is among the columns; callers subtract it.
    NaN scores count as worse than everything.
    """
    t = target.unsqueeze(1)
    C = scores.shape[1]
    if scores.is_floating_point() and C < 2**24 and bool(torch.isfinite(target).all()):
        # sign(score - target): +1 better, 0 tied, -1 worse (NaN: worse). Two float sums of +-1
        # (exact below 2^24 columns) give both counts; summing comparison masks directly is
        # several times slower on CPU (bool -> int64 reductions).
        d = (scores - t).nan_to_num_(nan=-1.0).sign_()  # (torch.sign(NaN) is 0)
        better_minus_worse = d.sum(1)
        decided = d.abs_().sum(1)
        return ((better_minus_worse + decided) / 2).round_().long(), C - decided.round_().long()
    return (scores > t).sum(1), (scores == t).sum(1)  # infinite targets (e.g. KGT5's unscored answers)


def realistic_rank(better: np.ndarray, tied_others: np.ndarray) -> np.ndarray:
    """Mean of optimistic (``1 + better``) and pessimistic (``1 + better + tied``) ranks."""
    return 1.0 + better + 0.5 * tied_others


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        return {"mrr": float("nan"), "mr": float("nan"), **{f"hits@{k}": float("nan") for k in HITS_AT}, "count": 0}
    return {
        "mrr": float(np.mean(1.0 / ranks)),
        "mr": float(np.mean(ranks)),
        **{f"hits@{k}": float(np.mean(ranks <= k)) for k in HITS_AT},
        "count": int(len(ranks)),
    }


@dataclass
class RankingResult:
    """Ranks of every query. ``head_ranks[i]`` / ``tail_ranks[i]`` belong to ``triples[i]``."""

    triples: np.ndarray
    head_ranks: np.ndarray
    tail_ranks: np.ndarray

    def metrics(self, relation_labels: Optional[np.ndarray] = None, per_relation: bool = True) -> dict:
        """``{"mrr", "mr", "hits@1/3/10", "count", "head": {...}, "tail": {...}, "per_relation": {...}}``."""
        both = np.concatenate([self.head_ranks, self.tail_ranks])
        out = metrics_from_ranks(both)
        out["head"] = metrics_from_ranks(self.head_ranks)
        out["tail"] = metrics_from_ranks(self.tail_ranks)
        if per_relation and len(self.triples):
            rel = self.triples[:, 1]
            order = np.argsort(rel, kind="stable")
            uniq, starts = np.unique(rel[order], return_index=True)
            bounds = np.append(starts, len(order))
            per = {}
            for i, r in enumerate(uniq):  # one entry per relation, not per triple
                idx = order[bounds[i] : bounds[i + 1]]
                name = str(relation_labels[r]) if relation_labels is not None else str(int(r))
                m = metrics_from_ranks(np.concatenate([self.head_ranks[idx], self.tail_ranks[idx]]))
                m["head_mrr"] = float(np.mean(1.0 / self.head_ranks[idx]))
                m["tail_mrr"] = float(np.mean(1.0 / self.tail_ranks[idx]))
                per[name] = m
            out["per_relation"] = per
        return out


def fit_chunk(chunk_elements: int, device: torch.device, bytes_per_element: int = 16) -> int:
    """``chunk_elements``, lowered on a CUDA device to what a quarter of its free memory holds
    (a score, its comparison masks and temporaries: ``bytes_per_element`` each), so that evaluation
    does not run out of GPU memory next to the model; never below 2**16 for that reason."""
    if device.type != "cuda":
        return chunk_elements
    free, _ = torch.cuda.mem_get_info(device)
    return min(chunk_elements, max(1 << 16, free // 4 // bytes_per_element))


class Evaluator:
    """Ranks head and tail queries of a split.

    Args:
        filter_index: known triples for filtered ranking (None -> raw ranking only).
        chunk_elements: bound on the scores materialised at once (queries x candidates); on a GPU
            also at most what a quarter of its free memory holds (:func:`fit_chunk`).
        device: where scoring runs. The filter index stays on the host (CSR arrays); only the
            known (query, entity) pairs of a chunk go to the device.
    """

    def __init__(self, filter_index: Optional[FilterIndex] = None, chunk_elements: int = 1 << 22, device="cpu"):
        self.filter_index = filter_index
        self.device = torch.device(device)
        self.chunk_elements = fit_chunk(chunk_elements, self.device)

    @torch.no_grad()
    def rank(
        self,
        scorer: QueryScorer,
        triples: np.ndarray,
        num_entities: int,
        filtered: bool = True,
        candidates: Optional[dict[str, np.ndarray]] = None,
        progress: bool = False,
    ) -> RankingResult:
        """Rank the true head and tail of every triple ``(N, 3)``.

        ``candidates``: OGB protocol, ``{"head": (N, K), "tail": (N, K)}`` entity ids to rank
        against (the true answer is added; candidates equal to it are skipped; no other filtering).
        """
        if filtered and self.filter_index is None and candidates is None:
            raise ValueError("filtered ranking needs a filter_index")
        triples = np.asarray(triples, dtype=np.int64)
        was_training = getattr(scorer, "training", False)
        if hasattr(scorer, "eval"):
            scorer.eval()
        try:
            ranks = {}
            for head in (True, False):
                cand = None if candidates is None else candidates["head" if head else "tail"]
                ranks[head] = self._rank_side(scorer, triples, num_entities, head, filtered and cand is None, cand, progress)
        finally:
            if was_training:
                scorer.train()
        return RankingResult(triples, ranks[True], ranks[False])

    def _rank_side(self, scorer, triples, num_entities, head, filtered, cand, progress) -> np.ndarray:
        n = len(triples)
        width = num_entities if cand is None else cand.shape[1] + 1
        chunk = max(1, self.chunk_elements // max(1, width))
        if cand is None and chunk < STREAM_BELOW_QUERIES:
            return self._rank_side_streaming(scorer, triples, num_entities, head, filtered, progress)
        out = np.empty(n, dtype=np.float64)
        anchor_col, answer_col = (2, 0) if head else (0, 2)
        starts = range(0, n, chunk)
        if bars_wanted(progress):
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"ranking {'heads' if head else 'tails'}", unit="chunk", leave=False)
        for s in starts:
            batch = triples[s : s + chunk]
            anchor = torch.as_tensor(batch[:, anchor_col], device=self.device)
            rel = torch.as_tensor(batch[:, 1], device=self.device)
            answer = batch[:, answer_col]
            if cand is None:
                scores = scorer.score_queries(anchor, rel, None, head=head).float()
                target = scores[torch.arange(len(batch), device=self.device), torch.as_tensor(answer, device=self.device)]
                better, tied = rank_counts(scores, target)
                better, tied = better.cpu().numpy(), tied.cpu().numpy() - 1  # minus the answer itself
                if filtered:
                    q, ent = self.filter_index.known(batch[:, anchor_col], batch[:, 1], head=head)
                    other = ent != answer[q]
                    q, ent = q[other], ent[other]
                    ks = scores[torch.as_tensor(q, device=self.device), torch.as_tensor(ent, device=self.device)]
                    kt = target[torch.as_tensor(q, device=self.device)]
                    better -= np.bincount(q[(ks > kt).cpu().numpy()], minlength=len(batch))
                    tied -= np.bincount(q[(ks == kt).cpu().numpy()], minlength=len(batch))
            else:
                ids = np.concatenate([answer[:, None], cand[s : s + chunk]], axis=1)
                scores = scorer.score_queries(anchor, rel, torch.as_tensor(ids, device=self.device), head=head).float()
                target = scores[:, 0].unsqueeze(1)
                other = torch.as_tensor(ids[:, 1:] != answer[:, None], device=self.device)  # skip the answer itself
                better = ((scores[:, 1:] > target) & other).sum(1).cpu().numpy()
                tied = ((scores[:, 1:] == target) & other).sum(1).cpu().numpy()
            out[s : s + len(batch)] = realistic_rank(better, tied)
        return out


    def _rank_side_streaming(self, scorer, triples, num_entities, head, filtered, progress) -> np.ndarray:
        """Large graphs: chunks of ``STREAM_QUERIES`` queries against blocks of entities, so no
        ``(queries, E)`` score matrix exists; per block, counts of better / tied scores (and of
        known answers, from the CSR filter) accumulate per query.

        The answer's own score comes from the same shared-candidates scoring path as the blocks
        (the answers of the chunk as one candidate set); its column is skipped in the counts.
        Scorers with ``ranking_scores`` (a cheaper rank-preserving transform of the scores, e.g. no
        square root for L2 distances) are ranked with it.
        """
        score = getattr(scorer, "ranking_scores", scorer.score_queries)
        n = len(triples)
        q_chunk = min(max(n, 1), STREAM_QUERIES)
        block = max(STREAM_MIN_BLOCK, self.chunk_elements // q_chunk)
        out = np.empty(n, dtype=np.float64)
        anchor_col, answer_col = (2, 0) if head else (0, 2)
        dev = self.device
        starts = range(0, n, q_chunk)
        if bars_wanted(progress):
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"ranking {'heads' if head else 'tails'} (streaming)", unit="chunk", leave=False)
        for s in starts:
            batch = triples[s : s + q_chunk]
            b = len(batch)
            anchor = torch.as_tensor(batch[:, anchor_col], device=dev)
            rel = torch.as_tensor(batch[:, 1], device=dev)
            answer = batch[:, answer_col]
            ans = torch.as_tensor(answer, device=dev)
            target = score(anchor, rel, ans, head=head).float().diagonal().clone().unsqueeze(1)
            better = torch.zeros(b, dtype=torch.long, device=dev)
            tied = torch.zeros(b, dtype=torch.long, device=dev)
            if filtered:
                q, ent = self.filter_index.known(batch[:, anchor_col], batch[:, 1], head=head)
                other = ent != answer[q]
                q, ent = q[other], ent[other]
                order = np.argsort(ent, kind="stable")  # known answers by entity, sliced per block
                q, ent = q[order], ent[order]
            rows = torch.arange(b, device=dev)
            for lo in range(0, num_entities, block):
                hi = min(num_entities, lo + block)
                sc = score(anchor, rel, torch.arange(lo, hi, device=dev), head=head).float()
                inside = (ans >= lo) & (ans < hi)
                sc[rows[inside], ans[inside] - lo] = float("nan")  # the answer itself: neither better nor tied
                b_, t_ = rank_counts(sc, target[:, 0])
                better += b_
                tied += t_
                if filtered:
                    a, z = np.searchsorted(ent, [lo, hi])
                    if z > a:
                        kq = torch.as_tensor(q[a:z], device=dev)
                        ks = sc[kq, torch.as_tensor(ent[a:z] - lo, device=dev)]
                        kt = target[kq, 0]
                        better -= torch.bincount(kq[ks > kt], minlength=b)
                        tied -= torch.bincount(kq[ks == kt], minlength=b)
            out[s : s + b] = realistic_rank(better.cpu().numpy(), tied.cpu().numpy())
        return out


def evaluate(
    scorer: QueryScorer,
    dataset,
    split: str = "test",
    filtered: bool = True,
    chunk_elements: int = 1 << 22,
    per_relation: bool = True,
    progress: bool = False,
    device="cpu",
    filter_index: Optional[FilterIndex] = None,
) -> dict:
    """Metrics of ``scorer`` on ``dataset.splits[split]`` (filtered against all splits by default).

    Uses the dataset's evaluation candidates for that split when it has them (OGB protocol).
    """
    if filter_index is None and filtered:
        filter_index = FilterIndex.from_dataset(dataset)
    ev = Evaluator(filter_index, chunk_elements, device)
    cand = dataset.candidates.get(split) if dataset.candidates else None
    result = ev.rank(scorer, dataset.splits[split], dataset.num_entities, filtered, cand, progress)
    metrics = result.metrics(dataset.relations.labels, per_relation=per_relation)
    metrics["filtered"] = bool(filtered)
    metrics["protocol"] = "candidates" if cand is not None else "all-entities"
    return metrics
