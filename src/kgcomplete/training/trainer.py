"""The training loop: batches, losses, optimizer, validation, early stopping, checkpoints.

One :class:`Trainer` serves all shallow models and three modes:

- ``1vsAll``: each triple gives a tail query ``(h, r, ?)`` and a head query ``(?, r, t)``
  (answered as ``(t, r^-1, ?)`` with reciprocal relations), each scored against every entity.
- ``KvsAll``: each distinct training query, with all its true answers as multi-hot targets.
- ``negatives``: each triple against ``N`` negatives shared by the batch, corrupting head,
  tail or both.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
import warnings
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..config import ALL_ENTITY_MODES, TrainingConfig
from ..data.dataset import Dataset
from ..evaluation.evaluator import Evaluator
from ..evaluation.filter_index import CSRIndex, FilterIndex
from ..models.base import KGEModel
from .loss import kvsall_loss, one_vs_all_loss
from .negative_sampler import NegativeSampler
from ..console import EpochProgress
from .loop import EpochLoop
from .objective import corrupted_sides, negatives_loss
from .optimizers import build_optimizer
from .placement import HostRows
from .row_gradients import RowLeaves, supports_row_updates

log = logging.getLogger(__name__)


class Trainer(EpochLoop):
    """Trains ``model`` on ``dataset.train`` (the epoch loop itself is :class:`EpochLoop`).

    Interrupted mid-epoch (Ctrl-C is deferred to the next batch boundary), the trainer keeps its
    position in the epoch in :attr:`epoch_progress`: rows done, running loss sum, the generator
    state at the epoch's start (to draw the same permutation again) and the generator and global
    torch RNG states after the last finished batch. :meth:`state` and :meth:`rng_state` save it,
    :meth:`load_state` and :meth:`load_rng_state` restore it, and the next :meth:`run_epoch` skips
    the rows done, so an interrupted and resumed run equals an uninterrupted one bit for bit
    (``hogwild > 1``: no batch lost or repeated, but not reproducible).

    Args:
        checkpoint: ``callback(trainer, reason)`` that persists state (the run folder passes one);
            called after validations, at the end, on interruption and every ``checkpoint_every_s``.
        log_epoch: ``callback(record: dict)`` called after every epoch (the run folder appends to log.jsonl).
        host_table: the entity table and its optimizer state are in host memory and each step
            gathers its rows to the device (:class:`~kgcomplete.training.placement.HostRows`; the
            caller put the table there with :func:`~kgcomplete.training.placement.move_to_host`).
    """

    defer_interrupts = True
    pauses_mid_epoch = True

    def __init__(
        self,
        model: KGEModel,
        dataset: Dataset,
        cfg: TrainingConfig,
        eval_chunk_elements: int = 1 << 22,
        checkpoint: Optional[Callable[["Trainer", str], None]] = None,
        log_epoch: Optional[Callable[[dict], None]] = None,
        checkpoint_every_s: float = 120.0,
        host_table: bool = False,
    ):
        self.model, self.dataset, self.cfg = model, dataset, cfg
        #: where the model lives (the caller moves it); batches and targets are made there. Row
        #: orders and negative ids are drawn on the CPU (seeded ``generator``) and moved once per batch.
        self.device = model.relation_emb.weight.device  # (the entity table may be in host memory)
        self._init_loop_state(checkpoint, log_epoch, checkpoint_every_s)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.mode = cfg.mode.lower()
        # every entity row gets a gradient in these modes: dense ones (Adam keeps its sparse tables)
        model.dense_gradients = (self.mode in ALL_ENTITY_MODES and cfg.optimizer.lower() in ("adagrad", "sgd")
                                 and not host_table)
        self.optimizer = build_optimizer(cfg.optimizer, model, cfg.lr)
        self.base_lr = cfg.lr
        self.train = torch.as_tensor(dataset.train).to(self.device)
        if self.mode not in ("1vsall", "kvsall", "negatives"):
            raise ValueError(f"training.mode={cfg.mode!r}: expected 1vsAll, KvsAll or negatives")
        if self.mode == "negatives":
            self.sampler = NegativeSampler(
                dataset.num_entities, cfg.num_negatives, cfg.negative_sampler, dataset.entity_types, self.generator
            )
        if self.mode == "kvsall":
            self._build_kvsall_queries()
        if cfg.relation_prediction > 0 and self.mode == "kvsall":
            raise ValueError("training.relation_prediction needs the batch's (h, r, t) triples: mode 1vsAll or "
                             "negatives, not KvsAll")
        # relation prediction scores every relation row: the autograd path (the row step gathers rows per batch)
        self.row_updates = supports_row_updates(model, cfg.optimizer, self.mode) and cfg.relation_prediction == 0
        self.hogwild = max(1, int(cfg.hogwild))
        if self.hogwild > 1 and self.device.type != "cpu":
            raise ValueError(f"training.hogwild={cfg.hogwild} is a CPU feature (threads sharing tables in host "
                             f"memory); on {self.device} train with hogwild 1")
        if self.hogwild > 1 and not self.row_updates:
            raise ValueError(
                f"training.hogwild={cfg.hogwild} needs training.mode=negatives, training.optimizer=rowadagrad and "
                f"a model whose only parameters are its embedding tables ({model.name} in mode {cfg.mode} with "
                f"{cfg.optimizer} is not)")
        self.host_rows: Optional[HostRows] = None
        if host_table:
            if self.hogwild > 1:
                raise ValueError(f"training.entity_table=host trains one batch at a time; training.hogwild="
                                 f"{cfg.hogwild} needs the table on the device")
            if not self.row_updates:
                raise ValueError(f"training.entity_table=host needs the row-gradient step: mode negatives, optimizer "
                                 f"rowadagrad and a model whose only parameters are its tables ({model.name} in mode "
                                 f"{cfg.mode} with {cfg.optimizer} is not)")
            if cfg.average_epochs:
                raise ValueError("training.average_epochs needs the entity table on the device; "
                                 "training.entity_table=host keeps it in host memory")
            self.host_rows = HostRows(model.entity_emb.weight, self.optimizer, self.device)
        autocast = str(cfg.autocast).lower()
        if autocast not in ("none", "bf16"):
            raise ValueError(f"training.autocast={cfg.autocast!r}: expected none or bf16")
        self.autocast = autocast == "bf16"
        self._valid_evaluator: Optional[Evaluator] = None
        self.eval_chunk_elements = eval_chunk_elements
        #: position in an interrupted epoch (see the class docs); None between epochs
        self.epoch_progress: Optional[dict] = None
        self._segment_s = 0.0  # training seconds of the last run_epoch call (its part of the epoch)
        self._loaded_epoch_start: Optional[Tensor] = None  # from load_rng_state, for load_state

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

    def _epoch_rows(self) -> int:
        return len(self.kvs_queries) if self.mode == "kvsall" else len(self.train)

    def steps_per_epoch(self) -> int:
        return -(-self._epoch_rows() // self.cfg.batch_size)

    def _to_device(self, x: Tensor) -> Tensor:
        """A host tensor on the training device; to a GPU through page-locked memory, so the copy
        runs while the host prepares the next step (``x`` already there: itself)."""
        if self.device.type != "cuda" or x.device == self.device:
            return x.to(self.device)
        return (x if x.is_pinned() else x.pin_memory()).to(self.device, non_blocking=True)

    def _epoch_batches(self, perm: Optional[Tensor] = None, start: int = 0):
        """Batches of row indices of one epoch: ``perm`` (default: a new permutation) from row ``start``
        (page-locked for a GPU: each batch's slice copies to it asynchronously)."""
        if perm is None:
            perm = torch.randperm(self._epoch_rows(), generator=self.generator)
        if self.device.type == "cuda":
            perm = perm.pin_memory()
        bs = self.cfg.batch_size
        for s in range(start, len(perm), bs):
            yield perm[s : s + bs]

    # -------------------------------------------------------------------- loss
    def batch_loss(self, idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Loss of one batch of row indices; returns (loss, number of positive triples/queries)."""
        cfg, model = self.cfg, self.model
        if self.mode == "kvsall":
            keys = self.kvs_queries[idx]
            q, ent = self.kvs_index.lookup(keys.numpy())
            dev = self.device
            keys = keys.to(dev)
            anchor, rel = keys // self.kvs_nrel, keys % self.kvs_nrel
            targets = torch.zeros(len(keys), model.num_entities, device=dev)
            targets[torch.as_tensor(q, device=dev), torch.as_tensor(ent, device=dev)] = 1.0
            R = self.dataset.num_relations
            is_head = rel >= 2 * R
            scores = torch.empty(len(keys), model.num_entities, device=dev)
            if (~is_head).any():
                scores[~is_head] = model.score_tails(anchor[~is_head], rel[~is_head])
            if is_head.any():
                scores[is_head] = model.score_heads(rel[is_head] - 2 * R, anchor[is_head])
            loss = kvsall_loss(scores, targets, cfg.loss if cfg.loss in ("bce", "ce") else "bce", cfg.label_smoothing)
            batch = None
            n = len(keys)
        else:
            batch = self.train[self._to_device(idx)]
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
                return self._with_relation_prediction(self._negatives_loss(h, r, t, self.sampler), h, r, t), n
            loss = self._with_relation_prediction(loss, h, r, t)
        if cfg.regularizer != "none" and cfg.reg_weight > 0:
            if batch is None:  # KvsAll: regularise each query's anchor and relation once
                rel_ids = torch.where(rel >= 2 * self.dataset.num_relations, rel - 2 * self.dataset.num_relations, rel)
                a = model.entities(anchor)
                reg = model.regularizer_emb(a, model.relations(rel_ids), a[:0], cfg.regularizer)
            else:
                reg = model.regularizer(batch, cfg.regularizer)
            loss = loss + cfg.reg_weight * reg
        return loss, n

    def _with_relation_prediction(self, loss: Tensor, h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """``loss + training.relation_prediction x CE(score_relations(h, t), r)`` (Chen et al. 2021),
        or ``loss`` when the weight is 0. ``h, r, t (B,)``."""
        w = self.cfg.relation_prediction
        if w <= 0:
            return loss
        return loss + w * one_vs_all_loss(self.model.score_relations(h, t), r, "ce", self.cfg.label_smoothing)

    def _negatives_loss(
        self,
        h: Tensor,
        r: Tensor,
        t: Tensor,
        sampler: NegativeSampler,
        entity_rows: Optional[Callable[[Tensor], Tensor]] = None,
        relation_rows: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> Tensor:
        """Shared-negatives loss (+ regularizer) of a batch ``(B,)`` heads, relations, tails.

        Draws each corrupted side's negatives from ``sampler`` (tail side first), then computes the
        negatives objective (:func:`~kgcomplete.training.objective.negatives_loss`, the one the
        BESS workers compute too) from rows gathered with one call of ``entity_rows`` and one of
        ``relation_rows`` (defaults: the model's sparse-gradient lookups).
        """
        negs = {s: self._to_device(sampler.sample(t if s == "tail" else h)) for s in corrupted_sides(self.cfg.corrupt)}
        return negatives_loss(self.model, self.cfg, h, r, t, negs, entity_rows, relation_rows)

    def train_batch(self, idx: Tensor, sampler: Optional[NegativeSampler] = None) -> tuple[float, int]:
        """One optimisation step on the training rows ``idx (B,)``; returns (mean loss, positives).

        Runs on :class:`~kgcomplete.training.row_gradients.RowLeaves` (distinct rows, no sparse
        ``.grad``) where :func:`supports_row_updates` allows, else through autograd and the optimizer.
        ``sampler``: the negative sampler to draw from (Hogwild threads each have their own).
        """
        if not self.row_updates:
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, n = self.batch_loss(idx)
            value = self._finite(loss)
            loss.backward()
            with warnings.catch_warnings():  # torch's sparse Adagrad warns once per process about a debug check
                warnings.filterwarnings("ignore", message="Sparse invariant checks")
                self.optimizer.step()
            return value, n
        model = self.model
        batch = self.train[self._to_device(idx)]
        ents = self.host_rows.leaves() if self.host_rows else RowLeaves(model.entity_emb.weight)
        rels = RowLeaves(model.relation_emb.weight)
        with self._autocast():
            loss = self._negatives_loss(batch[:, 0], batch[:, 1], batch[:, 2], sampler or self.sampler, ents, rels)
        value = self._finite(loss)
        grad_e, grad_r = torch.autograd.grad(loss, [ents.leaf, rels.leaf])
        if self.host_rows:
            self.host_rows.update(ents, grad_e)
        else:
            self.optimizer.update_rows(model.entity_emb.weight, ents.rows, grad_e)
        self.optimizer.update_rows(model.relation_emb.weight, rels.rows, grad_r)
        return value, len(idx)

    def _autocast(self):
        """bfloat16 autocast for the scoring of a batch (``training.autocast=bf16``), else nothing:
        matrix products run in bf16, the loss is reduced in float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def _finite(self, loss: Tensor) -> float:
        """The loss as a float (one host sync per batch), or FloatingPointError when it diverged."""
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at epoch {self.epoch + 1}; lower training.lr")
        return value

    # -------------------------------------------------------------------- loop
    @property
    def training_cfg(self) -> TrainingConfig:
        return self.cfg

    def has_validation(self) -> bool:
        return len(self.dataset.valid) > 0

    def _start_epoch(self) -> Tensor:
        """The epoch's permutation; sets :attr:`epoch_progress` (continuing an interrupted epoch)."""
        n_rows = self._epoch_rows()
        p = self.epoch_progress
        if p is not None and p["rows_total"] != n_rows:
            log.warning("the interrupted epoch had %d rows, this one has %d: starting the epoch over",
                        p["rows_total"], n_rows)
            p = None
        if p is None:
            start = self.generator.get_state()
            perm = torch.randperm(n_rows, generator=self.generator)
            p = {"rows": 0, "rows_total": n_rows, "loss_sum": 0.0, "time_s": 0.0, "start_generator": start,
                 "generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        else:  # the same permutation, then the RNG states after the last finished batch
            self.generator.set_state(p["start_generator"])
            perm = torch.randperm(n_rows, generator=self.generator)
            self.generator.set_state(p["generator"])
            torch.set_rng_state(p["torch"])
        self.epoch_progress = p
        return perm

    def run_epoch(self) -> dict:
        """One pass over the training data (or the rest of an interrupted one); returns the epoch's
        log record. With a validation cadence within epochs (``training.eval_every`` 0.25 or "10m")
        it stops at the batch boundary where a validation is due and returns the record of the epoch
        so far: ``epoch`` = the position (e.g. 3.25), ``rows`` = rows done; the epoch's position is
        kept (:attr:`epoch_progress`) and the next call continues it."""
        self.model.train()
        lr = self._set_lr()
        t0 = time.perf_counter()
        perm = self._start_epoch()
        p = self.epoch_progress
        time0, bs = p["time_s"], self.cfg.batch_size
        n_batches = -(-len(perm) // bs)
        bar = EpochProgress(self.cfg.progress, n_batches, f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                            initial=-(-p["rows"] // bs))

        def batch_done(total: float, count: int) -> None:  # after every batch: the position to resume from
            p.update(rows=count, loss_sum=total, generator=self.generator.get_state(), torch=torch.get_rng_state(),
                     time_s=time0 + time.perf_counter() - t0)
            bar.update(1, lambda: {"loss": f"{total / max(count, 1):.4f}",  # best_mrr only once validated
                                   **({"best_mrr": f"{self.best_mrr:.4f}"} if self.best_mrr >= 0 else {}),
                                   "triples_s": f"{count / max(p['time_s'], 1e-9):,.0f}"})

        def batches() -> Iterator[Tensor]:  # stops where a validation is due inside the epoch
            rows = p["rows"]
            for idx in self._epoch_batches(perm, p["rows"]):
                yield idx
                before, rows = rows, p["rows"]
                clock = self.elapsed_s + p["time_s"] - p.get("counted_s", 0.0)
                if self._due_after_batch(before, rows, len(perm), clock) and rows < len(perm):
                    return

        total, count = self.train_batches(batches(), batch_done, (p["loss_sum"], p["rows"]))
        self._checkpointable = False  # trained, but neither counted nor logged yet
        bar.close()
        if p["rows"] < p["rows_total"]:  # paused for a validation inside the epoch
            self._segment_s = p["time_s"] - p.get("counted_s", 0.0)
            p["counted_s"] = p["time_s"]
            position = math.floor((self.epoch + p["rows"] / p["rows_total"]) * 1e4) / 1e4
            return {"epoch": position, "rows": p["rows"], "loss": total / max(count, 1), "lr": lr,
                    "time_s": p["time_s"], "triples_per_s": p["rows"] / max(p["time_s"], 1e-9)}
        dt = time0 + time.perf_counter() - t0
        self._segment_s = dt - p.get("counted_s", 0.0)
        self.epoch_progress = None
        self.epoch += 1
        self.train_time_s += dt
        self.train_triples += count
        return {"epoch": self.epoch, "loss": total / max(count, 1), "lr": lr, "time_s": dt, "triples_per_s": count / dt}

    def _new_train_seconds(self, record: dict) -> float:
        """Seconds of the last :meth:`run_epoch` call (a record of an epoch continued after a
        validation inside it counts only its own part)."""
        return self._segment_s

    def train_batches(self, batches: Iterable[Tensor], progress: Optional[Callable[[float, int], None]] = None,
                      start: tuple[float, int] = (0.0, 0)) -> tuple[float, int]:
        """Train on batches of training-row indices, one at a time or with ``hogwild`` threads.

        Returns (sum over batches of mean loss x positives, positives), added to ``start``.
        ``progress(total, count)`` is called after every batch with the running sums. A deferred
        Ctrl-C (:meth:`_check_interrupt`) stops it between batches.
        """
        total, count = start
        lock = threading.Lock()

        def done(loss: float, n: int) -> None:  # called after every batch (by every Hogwild thread)
            nonlocal total, count
            with lock:
                self._average_step()
                total += loss * n
                count += n
                if progress is not None:
                    progress(total, count)

        if self.hogwild > 1:
            self._run_hogwild(iter(batches), done)
        elif self.host_rows is not None:
            try:
                for idx in batches:
                    self._check_interrupt()
                    done(*self.train_batch(idx))
            finally:  # the last write-back lands before anything reads the table
                self.host_rows.flush()
        else:
            buffers = [b for b in self.model.buffers() if b.numel()]  # e.g. BatchNorm statistics
            for idx in batches:
                self._check_interrupt()
                before = [b.clone() for b in buffers]
                try:
                    result = self.train_batch(idx)
                except KeyboardInterrupt:
                    # raised inside the batch (not a deferred Ctrl-C): undo the buffer updates of its
                    # forward pass (the RNG states are rolled back from epoch_progress)
                    with torch.no_grad():
                        for b, v in zip(buffers, before):
                            b.copy_(v)
                    raise
                done(*result)
        return total, count

    def _run_hogwild(self, batches: Iterator[Tensor], done: Callable[[float, int], None]) -> None:
        """Train ``batches`` with ``hogwild`` threads that update the shared tables without locks.

        Each thread draws its own negatives (seeded from the trainer's generator) and runs
        single-threaded torch ops, so the threads together keep every core busy; torch releases the
        GIL inside its kernels. Ctrl-C stops the threads after their current batch.
        """
        k = self.hogwild
        seeds = torch.randint(0, 2**62, (k,), generator=self.generator).tolist()
        next_lock, stop, errors = threading.Lock(), threading.Event(), []

        def work(seed: int) -> None:
            sampler = copy.copy(self.sampler)
            sampler.generator = torch.Generator().manual_seed(seed)
            try:
                while not stop.is_set():
                    with next_lock:
                        idx = next(batches, None)
                    if idx is None:
                        return
                    done(*self.train_batch(idx, sampler))
            except BaseException as e:  # re-raised by the main thread
                errors.append(e)
                stop.set()

        threads_before = torch.get_num_threads()
        torch.set_num_threads(max(1, threads_before // k))
        workers = [threading.Thread(target=work, args=(s,), daemon=True) for s in seeds]
        try:
            for w in workers:
                w.start()
            for w in workers:
                while w.is_alive():
                    w.join(timeout=0.2)
                    self._check_interrupt()  # a deferred Ctrl-C: the threads finish their batches
        except KeyboardInterrupt:
            stop.set()
            for w in workers:
                w.join()
            raise
        finally:
            torch.set_num_threads(threads_before)
        if errors:
            raise errors[0]

    # ------------------------------------------------------------ checkpoint state
    def state(self) -> dict:
        """Counters (:meth:`EpochLoop.state`) plus, mid-epoch, ``epoch_progress`` (rows done, loss sum)."""
        out = super().state()
        p = self.epoch_progress
        if p is not None:
            out["epoch_progress"] = {k: p[k] for k in ("rows", "rows_total", "loss_sum", "time_s")}
            out["epoch_progress"]["counted_s"] = p.get("counted_s", 0.0)  # time_s already in elapsed_s
        return out

    def rng_state(self) -> dict[str, Tensor]:
        """RNG states to save: ``generator`` and the global ``torch`` RNG (after the last finished
        batch when interrupted mid-epoch) and, mid-epoch, ``epoch_start_generator``."""
        p = self.epoch_progress
        out = ({"generator": self.generator.get_state(), "torch": torch.get_rng_state()} if p is None else
               {"generator": p["generator"], "torch": p["torch"], "epoch_start_generator": p["start_generator"]})
        if self.device.type == "cuda":  # dropout on the GPU draws from the device's generator
            out["cuda"] = torch.cuda.get_rng_state(self.device)
        return out

    def load_rng_state(self, states: dict[str, Tensor]) -> None:
        """Restore :meth:`rng_state`'s output (call before :meth:`load_state`)."""
        self.generator.set_state(states["generator"])
        torch.set_rng_state(states["torch"])
        if self.device.type == "cuda" and "cuda" in states:  # a run saved on a CPU has none: fresh is fine
            torch.cuda.set_rng_state(states["cuda"], self.device)
        self._loaded_epoch_start = states.get("epoch_start_generator")

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        p, start = state.get("epoch_progress"), self._loaded_epoch_start
        self._loaded_epoch_start = None
        if p is not None and start is None:
            log.warning("the checkpoint is %d rows into an epoch but holds no epoch-start RNG state: the epoch "
                        "starts over", p["rows"])
            p = None
        self.epoch_progress = None if p is None else {
            **p, "start_generator": start, "generator": self.generator.get_state(), "torch": torch.get_rng_state()}

    def validate(self) -> float:
        """Filtered MRR on the validation split."""
        if self._valid_evaluator is None:
            self._valid_evaluator = Evaluator(
                FilterIndex.from_dataset(self.dataset), self.eval_chunk_elements, device=self.device
            )
        res = self._valid_evaluator.rank(
            self.model, self.dataset.valid, self.dataset.num_entities, True, self.dataset.candidates.get("valid")
        )
        return float(res.metrics(per_relation=False)["mrr"])
