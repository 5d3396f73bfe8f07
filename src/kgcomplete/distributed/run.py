""":class:`ShardedRun`: a BESS run folder opened for evaluation, prediction and export.

It offers :class:`~kgcomplete.runs.KGERun`'s interface without assembling the entity table:
evaluation and top-k stream the shards through one process (one shard in memory at a time) with
the same per-shard code the workers use; only :meth:`ShardedRun.score_queries` against all
entities returns full ``(B, E)`` score rows (built shard by shard).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..data.dataset import Dataset
from ..evaluation.evaluator import Evaluator
from ..models.base import KGEModel
from ..runs.protocol import prediction_rows, relation_labels
from ..device import resolve_device
from ..runs.files import RunFolder
from ..runs.kge import ConfigRun, KGERun
from .checkpoint import ENTITY_KEY, gather_run, load_shard_model, recover_shards, reshard_run
from .inference import DEFAULT_WINDOW, gather_owned_rows, query_parts, streamed_rank, streamed_topk, window_scores
from .sharding import Sharding


class ShardedRun(KGERun):
    """A sharded KGE run. ``model`` is None; shards are loaded on demand (``cache`` shards kept).

    A :class:`KGERun` (its folder, configuration, names and ``predict``) whose model-bound members
    are all replaced: scoring, evaluation, top-k and export go through the shards.
    """

    #: no single model: :meth:`shard` loads one shard's model at a time
    model = None

    @property
    def device(self) -> torch.device:
        """Where the shards' models go when they are loaded."""
        return self._device

    def __init__(self, path: Path, config: Config, dataset: Dataset, sharding: Sharding, which: str = "best",
                 device="cpu", cache: int = 1):
        ConfigRun.__init__(self, path, config, dataset)  # not KGERun.__init__: there is no single model
        self.sharding, self.which, self._device, self.cache = sharding, which, resolve_device(device), cache
        self._shards: dict[int, KGEModel] = {}
        self.window = int(config.distributed.window or DEFAULT_WINDOW)

    def __repr__(self) -> str:
        return f"ShardedRun({self.path}, model={self.config.model.name}, shards={self.sharding.n_shard})"

    @classmethod
    def load(cls, path: str | Path, dataset: Optional[Dataset] = None, which: str = "best", device="auto",
             cache: int = 1) -> "ShardedRun":
        folder = RunFolder(path)
        recover_shards(folder.path)  # finish a checkpoint a crash left half moved into place
        config = Config.load(folder / "config.yaml")
        dataset = dataset if dataset is not None else folder.dataset(config)
        return cls(folder.path, config, dataset, Sharding.load(folder.path), which, device, cache)

    def shard(self, i: int) -> KGEModel:
        """Shard ``i``'s model (entity rows of that shard + replicas)."""
        if i not in self._shards:
            if len(self._shards) >= max(1, self.cache):
                self._shards.pop(next(iter(self._shards)))
            self._shards[i] = load_shard_model(self.path, self.config, self.dataset.num_relations, self.sharding, i,
                                               self.which, self.device)
        return self._shards[i]

    # ---------------------------------------------------------- scoring
    def entity_rows(self, ids) -> torch.Tensor:
        """Embeddings ``(..., W)`` of global ids, fetched from their shards."""
        return gather_owned_rows(self.shard, self.sharding, np.asarray(ids, np.int64))

    @torch.no_grad()
    def score_queries(self, anchor, r, candidates=None, head: bool = False):
        """``(B,)`` queries -> ``(B, C)`` scores (all entities when ``candidates`` is None)."""
        anchor = np.asarray(torch.as_tensor(anchor).cpu(), np.int64)
        r = np.asarray(torch.as_tensor(r).cpu(), np.int64)
        n = self.sharding.n_shard
        if candidates is None:
            emb = self.entity_rows(anchor)
            out = torch.empty(len(anchor), self.sharding.num_entities)
            for s in reversed(range(n)):  # the last shard is still cached from entity_rows
                ms = self.shard(s)
                cnt = int(self.sharding.shard_counts[s])
                a, rel, tails = query_parts(ms, emb, r, head)
                cols = torch.as_tensor(self.sharding.shard_and_idx_to_entity[s, :cnt])
                out[:, cols] = window_scores(ms, a, rel, 0, cnt, tails).float().cpu()
            return out
        cand = np.asarray(torch.as_tensor(candidates).cpu(), np.int64)
        rows = self.entity_rows(np.concatenate([anchor, cand.ravel()]))  # one pass over the shards
        emb, ce = rows[: len(anchor)], rows[len(anchor):].reshape(*cand.shape, -1)
        m = self.shard(n - 1)  # relations are replicated: use the shard left in the cache
        a, rel, tails = query_parts(m, emb, r, head)
        return m.score_candidates(a, rel, ce, tails)  # ce: (C, We) shared or (B, C, We) per query

    def score_triples(self, triples) -> np.ndarray:
        t = np.asarray(triples, np.int64).reshape(-1, 3)
        with torch.no_grad():
            return self.score_queries(t[:, 0], t[:, 1], t[:, 2:3])[:, 0].cpu().numpy()

    # ------------------------------------------------------- evaluation
    def evaluate(self, split: str = "test", filtered: bool = True, progress: bool = False) -> dict:
        """Filtered (default) or raw ranking metrics, streaming the shards."""
        ds, ev = self.dataset, self.config.evaluation
        cand = ds.candidates.get(split) if ds.candidates else None
        if cand is not None:  # OGB protocol: a few candidates per query, scored by gathering them
            res = Evaluator(None, ev.batch_elements, self.device).rank(self, ds.splits[split], ds.num_entities, False,
                                                                       cand, progress)
        else:
            res = streamed_rank(self.shard, self.sharding, ds.splits[split],
                                self.filter_index("all") if filtered else None, ev.batch_elements, self.window, progress)
        m = res.metrics(ds.relations.labels, per_relation=ev.per_relation)
        m["filtered"] = bool(filtered)
        m["protocol"] = "candidates" if cand is not None else "all-entities"
        return m

    def predict_ids(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int = 10, exclude_known: bool = False) -> list[list[dict]]:
        """Batched top-k, merged from per-shard top-k lists."""
        anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
        k = max(1, min(int(k), self.dataset.num_entities))
        vals, ids = streamed_topk(self.shard, self.sharding, anchor, r, head, k,
                                  self.filter_index("all") if exclude_known else None, self.window)
        vals = np.where(ids >= 0, vals, -np.inf)  # missing entries (fewer than k candidates)
        return prediction_rows(self.dataset, self.known, anchor, r, head, ids, vals)

    # ----------------------------------------------------------- export
    def entity_embeddings(self) -> None:
        """None: the entity table is never assembled in memory (:meth:`export` writes it shard by shard)."""
        return None

    def relation_embeddings(self) -> None:
        return None

    def export(self, out: Optional[str | Path] = None) -> dict[str, Path]:
        """Like :meth:`KGERun.export`; the entity matrix is written shard by shard into a memmap."""
        out = Path(out) if out else self.path / "export"
        out.mkdir(parents=True, exist_ok=True)
        files = {k: out / f for k, f in (("entity_embeddings", "entity_embeddings.npy"),
                                         ("relation_embeddings", "relation_embeddings.npy"),
                                         ("entities", "entities.tsv"), ("relations", "relations.tsv"))}
        m0 = self.shard(0)
        w = m0.entity_emb.weight
        mm = np.lib.format.open_memmap(files["entity_embeddings"], mode="w+", dtype=np.float32,
                                       shape=(self.sharding.num_entities, w.shape[1]))
        for s in range(self.sharding.n_shard):
            cnt = int(self.sharding.shard_counts[s])
            mm[self.sharding.shard_and_idx_to_entity[s, :cnt]] = self.shard(s).entity_emb.weight[:cnt].detach().cpu().numpy()
        mm.flush()
        del mm
        rel = self.shard(0).relation_emb.weight.detach().cpu().numpy()
        np.save(files["relation_embeddings"], rel)
        n = self.dataset.num_entities
        pd.DataFrame({"id": np.arange(n), "label": self.dataset.entities.labels,
                      "name": self.dataset.entity_text(np.arange(n))}).to_csv(files["entities"], sep="\t", index=False)
        pd.DataFrame({"id": np.arange(len(rel)), "label": relation_labels(self.dataset, len(rel))}).to_csv(
            files["relations"], sep="\t", index=False)
        return files

    # -------------------------------------------------------- conversions
    def gather(self, out: str | Path) -> KGERun:
        """Single-table copy of this run (a normal :class:`KGERun` folder)."""
        return KGERun.load(gather_run(self.path, out), dataset=self.dataset)

    def reshard(self, n_shard: int, out: str | Path) -> "ShardedRun":
        """Copy re-sharded to ``n_shard`` workers (resumable with that many)."""
        return ShardedRun.load(reshard_run(self.path, n_shard, out), dataset=self.dataset)


__all__ = ["ShardedRun", "ENTITY_KEY"]
