"""The training loop: batches, losses, optimizer, validation, early stopping, checkpoints.

One :class:`Trainer` serves all shallow models and three modes:

- ``1vsAll``: each triple gives a tail query ``(h, r, ?)`` and a head query ``(?, r, t)``
  (answered as ``(t, r^-1, ?)`` with reciprocal relations), each scored against every entity.
- ``KvsAll``: each distinct training query, with all its true answers as multi-hot targets.
- ``negatives``: each triple against ``N`` negatives shared by the batch, corrupting head,
  tail or both.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..config import TrainingConfig
from ..data.dataset import Dataset
from ..evaluation.evaluator import Evaluator
from ..evaluation.filter_index import CSRIndex, FilterIndex
from ..models.base import KGEModel
from .loss import kvsall_loss, negative_sampling_loss, one_vs_all_loss
from .negative_sampler import NegativeSampler
from .loop import EpochLoop
from .optimizers import build_optimizer

log = logging.getLogger(__name__)


class Trainer(EpochLoop):
    """Trains ``model`` on ``dataset.train`` (the epoch loop itself is :class:`EpochLoop`).

    Args:
        checkpoint: ``callback(trainer, reason)`` that persists state (the run folder passes one);
            called after validations, at the end, on interruption and every ``checkpoint_every_s``.
        log_epoch: ``callback(record: dict)`` called after every epoch (the run folder appends to log.jsonl).
    """

    def __init__(
        self,
        model: KGEModel,
        dataset: Dataset,
        cfg: TrainingConfig,
        eval_chunk_elements: int = 1 << 22,
        checkpoint: Optional[Callable[["Trainer", str], None]] = None,
        log_epoch: Optional[Callable[[dict], None]] = None,
        checkpoint_every_s: float = 120.0,
    ):
        self.model, self.dataset, self.cfg = model, dataset, cfg
        self._init_loop_state(checkpoint, log_epoch, checkpoint_every_s)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.optimizer = build_optimizer(cfg.optimizer, model, cfg.lr)
        self.base_lr = cfg.lr
        self.train = torch.as_tensor(dataset.train)
        self.mode = cfg.mode.lower()
        if self.mode not in ("1vsall", "kvsall", "negatives"):
            raise ValueError(f"training.mode={cfg.mode!r}: expected 1vsAll, KvsAll or negatives")
        if self.mode == "negatives":
            self.sampler = NegativeSampler(
                dataset.num_entities, cfg.num_negatives, cfg.negative_sampler, dataset.entity_types, self.generator
            )
        if self.mode == "kvsall":
            self._build_kvsall_queries()
        self._valid_evaluator: Optional[Evaluator] = None
        self.eval_chunk_elements = eval_chunk_elements

    # ----------------------------------------------------------------- batches
    def _build_kvsall_queries(self) -> None:
        """Distinct (anchor, relation') queries; relation' = r for tails, r + R (reciprocal) or
        -(r + 1) (head side, non-reciprocal) for heads. Answers in a CSR index."""
        tr = self.dataset.train.astype(np.int64)
        R = self.dataset.num_relations
        head_rel = tr[:, 1] + R if self.model.reciprocal else tr[:, 1] + 2 * R
        anchors = np.concatenate([tr[:, 0], tr[:, 2]])
        rels = np.concatenate([tr[:, 1], head_rel])
        answers = np.concatenate([tr[:, 2], tr[:, 0]])
        n_rel = 3 * R
        self.kvs_index = CSRIndex.build(anchors * n_rel + rels, answers)
        self.kvs_nrel = n_rel
        self.kvs_queries = torch.as_tensor(self.kvs_index.keys)

    def _epoch_batches(self):
        n = len(self.kvs_queries) if self.mode == "kvsall" else len(self.train)
        perm = torch.randperm(n, generator=self.generator)
        bs = self.cfg.batch_size
        for s in range(0, n, bs):
            yield perm[s : s + bs]

    # -------------------------------------------------------------------- loss
    def batch_loss(self, idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Loss of one batch of row indices; returns (loss, number of positive triples/queries)."""
        cfg, model = self.cfg, self.model
        if self.mode == "kvsall":
            keys = self.kvs_queries[idx]
            anchor, rel = keys // self.kvs_nrel, keys % self.kvs_nrel
            q, ent = self.kvs_index.lookup(keys.numpy())
            targets = torch.zeros(len(keys), model.num_entities)
            targets[torch.as_tensor(q), torch.as_tensor(ent)] = 1.0
            R = self.dataset.num_relations
            is_head = rel >= 2 * R
            scores = torch.empty(len(keys), model.num_entities)
            if (~is_head).any():
                scores[~is_head] = model.score_tails(anchor[~is_head], rel[~is_head])
            if is_head.any():
                scores[is_head] = model.score_heads(rel[is_head] - 2 * R, anchor[is_head])
            loss = kvsall_loss(scores, targets, cfg.loss if cfg.loss in ("bce", "ce") else "bce", cfg.label_smoothing)
            batch = None
            n = len(keys)
        else:
            batch = self.train[idx]
            h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
            n = len(batch)
            if self.mode == "1vsall":
                loss_kind = cfg.loss if cfg.loss in ("ce", "bce") else "ce"
                losses = []
                if model.reciprocal and cfg.corrupt == "both":
                    anchor = torch.cat([h, t])
                    rel = torch.cat([r, model.inverse(r)])
                    target = torch.cat([t, h])
                    losses.append(one_vs_all_loss(model.score_tails(anchor, rel), target, loss_kind, cfg.label_smoothing))
                else:
                    if cfg.corrupt in ("tail", "both"):
                        losses.append(one_vs_all_loss(model.score_tails(h, r), t, loss_kind, cfg.label_smoothing))
                    if cfg.corrupt in ("head", "both"):
                        losses.append(one_vs_all_loss(model.score_heads(r, t), h, loss_kind, cfg.label_smoothing))
                loss = sum(losses) / len(losses)
            else:
                loss = self._negatives_loss(h, r, t)
        if cfg.regularizer != "none" and cfg.reg_weight > 0:
            if batch is None:  # KvsAll: regularise the anchors and relations of the queries
                rel_ids = torch.where(rel >= 2 * self.dataset.num_relations, rel - 2 * self.dataset.num_relations, rel)
                batch = torch.stack([anchor, rel_ids, anchor], 1)
            loss = loss + cfg.reg_weight * model.regularizer(batch, cfg.regularizer)
        return loss, n

    def _negatives_loss(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Shared-negatives loss of a batch ``(B,)`` heads, relations, tails.

        Every entity row the step needs (heads, tails, both sides' negatives) is gathered with one
        lookup and every relation row with another, so the sparse gradients hold each batch row
        once per lookup and scoring runs on the gathered rows (BLAS for dot/L2 models).
        """
        cfg, model = self.cfg, self.model
        kw = dict(
            kind=cfg.loss if cfg.loss != "ce" else "softmax",
            margin=cfg.margin,
            adversarial_temperature=cfg.adversarial_temperature,
            label_smoothing=cfg.label_smoothing,
        )
        sides = [s for s in ("tail", "head") if cfg.corrupt in (s, "both")]
        negs = {s: self.sampler.sample(t if s == "tail" else h) for s in sides}  # same RNG order as before
        if type(model)._score_side is not KGEModel._score_side:  # model-specific candidate scoring
            pos = model.score_triples(torch.stack([h, r, t], 1))
            losses = []
            for side in sides:
                if side == "tail":
                    losses.append(negative_sampling_loss(pos, model.score_tails(h, r, negs[side]), **kw))
                else:
                    pos_h = model.score_emb(model.entities(t), model.relations(model.inverse(r)), model.entities(h)) \
                        if model.reciprocal else pos
                    losses.append(negative_sampling_loss(pos_h, model.score_heads(r, t, negs[side]), **kw))
            return sum(losses) / len(losses)
        B = len(h)
        ids = torch.cat([h, t] + [negs[s].reshape(-1) for s in sides])
        # split (not slicing): its backward is one concatenation, not a zero-filled buffer per slice
        h_e, t_e, *parts = model.entities(ids).split([B, B] + [negs[s].numel() for s in sides])
        cand = {s: p.view(*negs[s].shape, -1) for s, p in zip(sides, parts)}  # (N, W) or (B, N, W)
        inv_head = "head" in sides and model.reciprocal
        if inv_head:
            r_e, r_inv = model.relations(torch.cat([r, model.inverse(r)])).split([B, B])
        else:
            r_e = model.relations(r)
        pos = model.score_emb(h_e, r_e, t_e)
        losses = []
        for side in sides:
            if side == "tail":
                neg = model.score_side_emb(h_e, r_e, cand[side], tails=True)
                losses.append(negative_sampling_loss(pos, neg, **kw))
            elif inv_head:  # (t, r^-1, h') competes with (t, r^-1, h)
                neg = model.score_side_emb(t_e, r_inv, cand[side], tails=True)
                losses.append(negative_sampling_loss(model.score_emb(t_e, r_inv, h_e), neg, **kw))
            else:
                neg = model.score_side_emb(t_e, r_e, cand[side], tails=False)
                losses.append(negative_sampling_loss(pos, neg, **kw))
        return sum(losses) / len(losses)

    # -------------------------------------------------------------------- loop
    @property
    def training_cfg(self) -> TrainingConfig:
        return self.cfg

    def has_validation(self) -> bool:
        return len(self.dataset.valid) > 0

    def run_epoch(self) -> dict:
        """One pass over the training data; returns the epoch's log record."""
        self.model.train()
        lr = self._set_lr()
        total, count, t0 = 0.0, 0, time.perf_counter()
        n_rows = len(self.kvs_queries) if self.mode == "kvsall" else len(self.train)
        n_batches = -(-n_rows // self.cfg.batch_size)
        batches = self._epoch_batches()  # views of one permutation, made lazily
        bar = None
        if self.cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_batches, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", unit="batch", leave=False)
        for i, idx in enumerate(batches):
            self.optimizer.zero_grad(set_to_none=True)
            loss, n = self.batch_loss(idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {self.epoch + 1}, batch {i}; lower training.lr")
            loss.backward()
            self.optimizer.step()
            total += loss.item() * n
            count += n
            if bar is not None:
                bar.update(1)
                if i % 10 == 0 or i == n_batches - 1:
                    bar.set_postfix(loss=f"{total / max(count, 1):.4f}", triples_s=f"{count / (time.perf_counter() - t0):,.0f}")
        if bar is not None:
            bar.close()
        dt = time.perf_counter() - t0
        self.epoch += 1
        self.train_time_s += dt
        self.train_triples += count
        return {"epoch": self.epoch, "loss": total / max(count, 1), "lr": lr, "time_s": dt, "triples_per_s": count / dt}

    def validate(self) -> float:
        """Filtered MRR on the validation split."""
        if self._valid_evaluator is None:
            self._valid_evaluator = Evaluator(
                FilterIndex.from_dataset(self.dataset), self.eval_chunk_elements
            )
        res = self._valid_evaluator.rank(
            self.model, self.dataset.valid, self.dataset.num_entities, True, self.dataset.candidates.get("valid")
        )
        return float(res.metrics(per_relation=False)["mrr"])
