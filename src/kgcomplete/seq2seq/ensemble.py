"""KGT5 + KGE ensemble (the paper's KGT5-ComplEx ensemble).

Rule, per query, over all entities ``e``:

    p_KGE(e)  = softmax over all entities of the KGE scores
    p_KGT5(e) = exp(sequence log-prob) if KGT5 generated ``e`` (decoder candidates C), else 0
    score(e)  = p_KGE(e) + w * 1[e in C] * (1 + p_KGT5(e))

``w = 0`` is the KGE model alone; for ``w >= 1`` every KGT5 candidate ranks above every other
entity (KGT5 candidates first, ordered by ``p_KGE + w (1 + p_KGT5)``; the rest by KGE), which is
the paper's "KGT5 predictions first, KGE for the long tail"; small ``w`` is a soft bonus. ``w`` is
chosen on the validation split from :data:`WEIGHT_GRID` (ties -> the smaller ``w``); the KGT5 decoder
output for the validation queries is computed once and reused for every ``w``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..runs.protocol import RunBase
from .decoding import densify

WEIGHT_GRID = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def combine(kge_scores: Tensor, kgt5_logp: Tensor, weight: float) -> Tensor:
    """``(B, C)`` KGE scores and KGT5 log-probs (``-inf`` = not generated) -> ``(B, C)`` ensemble scores."""
    p_kge = torch.softmax(kge_scores.float(), dim=1)
    gen = torch.isfinite(kgt5_logp)
    bonus = torch.where(gen, 1.0 + torch.exp(kgt5_logp.float().clamp_max(0.0)), torch.zeros_like(p_kge))
    return p_kge + weight * bonus


class _SparseCache:
    """KGT5 decoder output ``(Q, K)`` for a fixed set of queries, looked up by query key (vectorised)."""

    def __init__(self, keys: np.ndarray, ents: Tensor, scores: Tensor):
        order = np.argsort(keys)
        self.keys, self.ents, self.scores = keys[order], ents[torch.as_tensor(order)], scores[torch.as_tensor(order)]

    def get(self, keys: np.ndarray) -> Optional[tuple[Tensor, Tensor]]:
        pos = np.searchsorted(self.keys, keys).clip(0, max(len(self.keys) - 1, 0))
        if len(self.keys) == 0 or not (self.keys[pos] == keys).all():
            return None
        p = torch.as_tensor(pos)
        return self.ents[p], self.scores[p]


class EnsembleRun(RunBase):
    """KGT5 run + KGE run with the run interface (:class:`~kgcomplete.runs.protocol.Run`).

    ``weight=None``: tuned on the validation split on first use (``self.tuning`` holds the grid).
    The ensemble shares the KGT5 run's dataset, folder (``path``) and known triples; it has no
    configuration of its own (``config_dict()`` is ``{}``) and no embedding table.
    """

    def __init__(self, kgt5_run, kge_run, weight: Optional[float] = None, grid=WEIGHT_GRID):
        from .run import KGT5Run

        if not isinstance(kgt5_run, KGT5Run):
            raise ValueError(f"an ensemble joins a KGT5 run with a KGE run; the first run is a {type(kgt5_run).__name__} "
                             f"(kgc evaluate/predict: RUN is the KGT5 run, --ensemble the KGE run)")
        self.kgt5, self.kge = kgt5_run, kge_run
        self.dataset = kgt5_run.dataset
        if not np.array_equal(kge_run.dataset.entities.labels, self.dataset.entities.labels) or \
                not np.array_equal(kge_run.dataset.relations.labels, self.dataset.relations.labels):
            raise ValueError("the KGT5 and KGE runs were trained on different entity/relation vocabularies")
        self._weight = weight
        self.grid = tuple(grid)
        self.tuning: dict = {}
        self._cache: Optional[_SparseCache] = None
        self.path = kgt5_run.path
        self.known = kgt5_run.known

    training = False

    def eval(self) -> "EnsembleRun":
        return self

    # ----------------------------------------------------------- scoring
    def _key(self, anchor: np.ndarray, r: np.ndarray, head: bool) -> np.ndarray:
        return (anchor.astype(np.int64) * self.dataset.num_relations + r) * 2 + int(head)

    def _kgt5_dense(self, anchor: Tensor, r: Tensor, head: bool) -> Tensor:
        hit = None
        if self._cache is not None:
            hit = self._cache.get(self._key(anchor.cpu().numpy(), r.cpu().numpy(), head))
        ents, sc = hit if hit is not None else self.kgt5.topk(anchor.cpu(), r.cpu(), head)
        return densify(ents, sc, self.dataset.num_entities)

    def _scores(self, anchor: Tensor, r: Tensor, candidates: Optional[Tensor], head: bool, weight: float) -> Tensor:
        kge = self.kge.score_queries(anchor, r, candidates, head=head).float().cpu()
        t5 = self._kgt5_dense(anchor, r, head)
        if candidates is not None:
            c = candidates.cpu()
            t5 = t5[:, c] if c.dim() == 1 else t5.gather(1, c)
        return combine(kge, t5, weight).to(anchor.device)

    @property
    def weight(self) -> float:
        if self._weight is None:
            self.tune()
        return self._weight

    def score_queries(self, anchor: Tensor, r: Tensor, candidates: Optional[Tensor] = None, head: bool = False) -> Tensor:
        """``(B,)`` -> ``(B, E)`` (or ``(B, C)``) ensemble scores (see the module rule)."""
        with torch.no_grad():
            return self._scores(anchor, r, candidates, head, self.weight)

    # --------------------------------------------------------- tuning
    def tune(self, split: str = "valid") -> float:
        """Pick ``w`` from the grid by filtered MRR on ``split`` (KGT5 decoded once)."""
        from ..evaluation.evaluator import evaluate

        tr = self.dataset.splits.get(split)
        if tr is None or not len(tr):
            self._weight = 1.0
            return self._weight
        keys, ents, scs = [], [], []
        for head in (True, False):
            anchor = tr[:, 2] if head else tr[:, 0]
            e, s = self.kgt5.topk(torch.as_tensor(anchor), torch.as_tensor(tr[:, 1]), head)
            keys.append(self._key(anchor, tr[:, 1], head))
            ents.append(e)
            scs.append(s)
        width = max(x.shape[1] for x in ents)
        pad_e = [torch.nn.functional.pad(x, (0, width - x.shape[1]), value=-1) for x in ents]
        pad_s = [torch.nn.functional.pad(x, (0, width - x.shape[1]), value=float("-inf")) for x in scs]
        keys = np.concatenate(keys)
        uniq, first = np.unique(keys, return_index=True)
        self._cache = _SparseCache(uniq, torch.cat(pad_e)[first], torch.cat(pad_s)[first])
        fi = self.known.index("all")
        try:
            for w in self.grid:
                scorer = _FixedWeight(self, w)
                self.tuning[w] = evaluate(scorer, self.dataset, split, per_relation=False, filter_index=fi)["mrr"]
        finally:
            self._cache = None
        best = max(self.tuning.values())
        self._weight = min(w for w, m in self.tuning.items() if m == best)
        return self._weight

    # --------------------------------------------------------- run interface
    def evaluate(self, split: str = "test", filtered: bool = True, progress: bool = False, **_) -> dict:
        from ..evaluation.evaluator import evaluate

        w = self.weight
        m = evaluate(_FixedWeight(self, w), self.dataset, split, filtered=filtered, progress=progress,
                     filter_index=self.filter_index("all") if filtered else None)
        m["ensemble"] = {"weight": w, "valid_mrr_by_weight": {str(k): v for k, v in self.tuning.items()},
                         "rule": "p_KGE + w * 1[generated by KGT5] * (1 + p_KGT5)"}
        return m

    def predict(self, head: Optional[str] = None, relation: Optional[str] = None, tail: Optional[str] = None,
                k: int = 10, exclude_known: bool = False) -> list[dict]:
        """Top-``k`` rows ``{rank, id, entity, name, score, known}`` under the ensemble score."""
        from .verbalize import resolve_entities, resolve_relations

        if (head is None) == (tail is None) or relation is None:
            raise ValueError("give a relation and exactly one of head / tail")
        name = head if head is not None else tail
        a = resolve_entities([name], self.dataset, self.kgt5.texts)[0]
        r = resolve_relations([relation], self.dataset, self.kgt5.texts)[0]
        if a < 0 or r < 0:
            raise KeyError(f"unknown {'entity ' + repr(name) if a < 0 else 'relation ' + repr(relation)}")
        return self.predict_ids(np.array([a]), np.array([r]), head is None, k, exclude_known)[0]


class _FixedWeight:
    """Scorer view of an :class:`EnsembleRun` with a fixed weight (used while tuning)."""

    training = False

    def __init__(self, ens: EnsembleRun, w: float):
        self.ens, self.w = ens, w

    def eval(self):
        return self

    def score_queries(self, anchor, r, candidates=None, head: bool = False) -> Tensor:
        with torch.no_grad():
            return self.ens._scores(anchor, r, candidates, head, self.w)
