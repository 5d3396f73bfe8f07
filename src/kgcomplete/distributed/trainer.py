"""The BESS training loop of one worker (shared-negative mode, core losses and optimizers).

Each worker owns a core :class:`~kgcomplete.models.base.KGEModel` whose entity table is its shard
(``S`` rows) and whose relation table (and any dense layers) is a replica. A step:

1. ``sampling``: the shared step plan (same seed everywhere) and this worker's view of it;
2. ``gather``: local lookup of the rows any worker needs from this shard;
3. ``exchange``: the collectives (forward and backward);
4. ``compute``: scores, the core negatives objective (training/objective.py, + regularizer), backward;
5. ``update``: sum the replicated gradients over workers (one ``all_reduce``), optimizer step on
   the local shard rows and the replicas.

Every worker backpropagates ``loss_i / n``, so the summed gradients are those of the mean loss of
the whole step, exactly as one process computing the step would get them.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..config import Config, reciprocal_scoring_weight
from ..data.dataset import Dataset
from ..evaluation.filter_index import FilterIndex
from ..models.base import KGEModel
from ..training.loop import EpochLoop
from ..training.objective import regularization, sides_loss
from ..training.optimizers import build_optimizer
from ..training.row_gradients import RowLeaves
from .batch_sampler import PartitionedTriples, build_batch_sampler
from .exchange import Comm, StepTimer
from .inference import distributed_rank
from .negative_sampler import ShardedNegativeSampler
from .section import DistConfig  # the ``distributed`` config section (also imported from here)
from .sharding import Sharding
from .step import WorkerView, forward_step, make_plan, restrict_entity_grad, sync_replicated_grads
from ..console import EpochProgress

log = logging.getLogger(__name__)
PHASES = ("sampling", "gather", "exchange", "compute", "update")


class BessTrainer(EpochLoop):
    """Trains worker ``comm.rank``'s shard ``model`` (all workers call the same methods in step).

    The epoch loop (LR schedule, validation, early stopping) is the core :class:`EpochLoop`;
    checkpoints are written only after validations and at the end, when every worker is there.
    """

    state_keys = EpochLoop.state_keys + ("steps",)
    checkpoint_on_interrupt = False

    def __init__(self, cfg: Config, dataset: Dataset, sharding: Sharding, model: KGEModel, comm: Comm,
                 dcfg: Optional[DistConfig] = None, device="cpu",
                 checkpoint: Optional[Callable[["BessTrainer", str], None]] = None,
                 log_epoch: Optional[Callable[[dict], None]] = None):
        self.cfg, self.tcfg, self.dataset, self.sharding = cfg, cfg.training, dataset, sharding
        self.model, self.comm, self.device = model, comm, torch.device(device)
        self.dcfg = dcfg or DistConfig.from_config(cfg)
        self._init_loop_state(checkpoint, log_epoch, checkpoint_every_s=None)
        n = sharding.n_shard
        if comm.world != n:
            raise ValueError(f"{comm.world} workers for a sharding of {n} shards")
        if model.entity_emb.weight.dtype != torch.float32:
            raise ValueError("model.storage_dtype other than float32 is not supported with distributed workers yet")
        if reciprocal_scoring_weight(cfg.model.reciprocal_scoring):
            raise ValueError("model.reciprocal_scoring is not supported with distributed workers yet; set it to 0 or auto")
        if self.tcfg.average_epochs:
            raise ValueError("training.average_epochs is not supported with distributed workers yet "
                             "(each worker would average its own shard); set it to 0")
        if self.tcfg.mode.lower() != "negatives":
            log.info("BESS trains with shared negatives (training.mode=%s is ignored)", self.tcfg.mode)
        self.P, self.k = self.dcfg.sizes(cfg, n)
        self.parts = PartitionedTriples(dataset.train, sharding)
        self.batches = build_batch_sampler(self.dcfg.batch_sampler, self.parts, self.P, self.tcfg.seed)
        self.negatives = ShardedNegativeSampler(sharding, self.k, self.tcfg.corrupt, self.tcfg.negative_sampler)
        self.optimizer = build_optimizer(self.tcfg.optimizer, model, self.tcfg.lr)
        # row-wise Adagrad: the shard's rows are gathered once as a float32 leaf and updated from
        # its (U, W) gradient (training/row_gradients.py) instead of a sparse .grad
        self.row_updates = self.tcfg.optimizer.lower() == "rowadagrad" and self.dcfg.exchange != "allgather"
        self.base_lr = self.tcfg.lr
        self.timer = StepTimer(self.device)
        comm.timer = self.timer
        self.steps = 0
        self._filter: Optional[FilterIndex] = None

    # ---------------------------------------------------------------- step
    def train_step(self, idx: np.ndarray, rng: np.random.Generator) -> float:
        """One step on ``(n, n, P)`` block indices; returns the step's mean loss (all workers)."""
        T, n = self.timer, self.comm.world
        t0 = T.now()
        plan = make_plan(self.parts.triples[idx], self.negatives, rng)
        view = WorkerView.build(plan, self.sharding, self.negatives, self.comm.rank, self.device)
        t1 = T.now()
        T.add("sampling", t1 - t0)
        ex0, g0 = T.totals["exchange"], T.totals["gather"]
        self.optimizer.zero_grad(set_to_none=True)
        leaves = RowLeaves(self.model.entity_emb.weight) if self.row_updates else None
        pos, negs, (h, r, t) = forward_step(self.model, view, self.comm, self.dcfg.exchange, T, leaves)
        loss = sides_loss(pos, negs, self.tcfg, regularization(self.model, self.tcfg, h, r, t))
        (loss / n).backward()
        t2 = T.now()
        T.add("compute", (t2 - t1) - (T.totals["exchange"] - ex0) - (T.totals["gather"] - g0))
        ex1 = T.totals["exchange"]
        if self.dcfg.exchange == "allgather":
            restrict_entity_grad(self.model, view.touched)
        total = sync_replicated_grads(self.model, self.comm, loss.detach().reshape(1))
        self.optimizer.step()  # relations (+ the entity shard unless its rows come from the leaves)
        if leaves is not None and leaves.leaf.grad is not None:
            self.optimizer.update_rows(self.model.entity_emb.weight, leaves.rows, leaves.leaf.grad)
        T.add("update", T.now() - t2 - (T.totals["exchange"] - ex1))
        self.steps += 1
        return float(total[0]) / n

    # ---------------------------------------------------------------- loop
    @property
    def training_cfg(self):
        return self.tcfg

    def has_validation(self) -> bool:
        return len(self.dataset.valid) > 0

    def _emit(self, record: dict) -> None:
        if self.comm.rank == 0:
            super()._emit(record)

    def run_epoch(self, max_steps: Optional[int] = None) -> dict:
        self.model.train()
        lr = self._set_lr()
        rng = np.random.default_rng((self.tcfg.seed, self.epoch, 7))
        self.timer.reset()
        total, steps, t0 = 0.0, 0, time.perf_counter()
        bar = EpochProgress(self.tcfg.progress and self.comm.rank == 0, self.batches.steps_per_epoch,
                            f"epoch {self.epoch + 1}/{self.tcfg.epochs}", unit="step")
        for idx in self.batches.epoch(self.epoch):
            loss = self.train_step(idx, rng)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at epoch {self.epoch + 1}; lower training.lr")
            total += loss
            steps += 1
            bar.update(1, lambda: {"loss": f"{total / steps:.4f}"})
            if max_steps and steps >= max_steps:
                break
        bar.close()
        dt = time.perf_counter() - t0
        positives = steps * self.comm.world**2 * self.P
        self.epoch += 1
        self.train_time_s += dt
        self.train_triples += positives
        rec = {"epoch": self.epoch, "loss": total / max(steps, 1), "lr": lr, "time_s": dt,
               "triples_per_s": positives / dt, "steps": steps,
               "ms_per_step": {p: 1e3 * self.timer.totals[p] / max(steps, 1) for p in PHASES}}
        return rec

    def filter_index(self) -> FilterIndex:
        if self._filter is None:
            self._filter = FilterIndex.from_dataset(self.dataset)
        return self._filter

    def rank(self, triples: np.ndarray, filtered: bool = True):
        return distributed_rank(self.model, self.sharding, self.comm, triples,
                                self.filter_index() if filtered else None,
                                self.cfg.evaluation.batch_elements, self.dcfg.window)

    def validate(self) -> float:
        return float(self.rank(self.dataset.valid).metrics(per_relation=False)["mrr"])

    def memory(self) -> dict:
        """Bytes of this worker's entity shard and of the optimizer state attached to it."""
        w = self.model.entity_emb.weight
        opt = 0
        for t in self.optimizer.for_param(w).state.get(w, {}).values():
            if torch.is_tensor(t) and t.dim() >= 1 and t.shape[0] == w.shape[0]:  # per-row state
                opt += t.numel() * t.element_size()
        return {"entity_bytes": w.numel() * w.element_size(), "entity_optimizer_bytes": opt}
