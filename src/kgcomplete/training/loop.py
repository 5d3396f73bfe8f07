"""The epoch loop shared by the single-process :class:`~kgcomplete.training.Trainer` and the BESS
trainer: learning-rate schedule, validation with early stopping, best parameters, checkpoints.

A subclass provides ``training_cfg`` (:class:`~kgcomplete.config.TrainingConfig`), ``model``,
``optimizer``, ``base_lr``, ``run_epoch() -> dict`` (increments ``epoch``), ``validate() -> float``
(filtered validation MRR) and ``has_validation() -> bool``; it calls :meth:`_init_loop_state`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from typing import Callable, Optional

import torch

log = logging.getLogger(__name__)


class EpochLoop:
    #: counters saved in ``trainer_state.json`` and restored on resume
    state_keys: tuple[str, ...] = ("epoch", "best_mrr", "best_epoch", "bad_validations", "train_time_s", "train_triples")
    #: save a checkpoint when training is interrupted (off where saving needs every worker)
    checkpoint_on_interrupt = True

    def _init_loop_state(
        self,
        checkpoint: Optional[Callable[["EpochLoop", str], None]],
        log_epoch: Optional[Callable[[dict], None]],
        checkpoint_every_s: Optional[float],
    ) -> None:
        self.checkpoint_cb, self.log_cb, self.checkpoint_every_s = checkpoint, log_epoch, checkpoint_every_s
        self.epoch = 0  # epochs completed
        self.best_mrr, self.best_epoch, self.bad_validations = -1.0, 0, 0
        self.best_state: Optional[dict] = None
        self.history: list[dict] = []
        self.train_time_s, self.train_triples = 0.0, 0

    def _set_lr(self) -> float:
        cfg = self.training_cfg
        if cfg.lr_schedule == "cosine":
            lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * self.epoch / max(1, cfg.epochs)))
        elif cfg.lr_schedule == "exponential":
            lr = self.base_lr * cfg.lr_decay**self.epoch
        elif cfg.lr_schedule in ("none", "plateau"):
            lr = self.optimizer.param_groups[0]["lr"]
        else:
            raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}: none | cosine | exponential | plateau")
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _emit(self, record: dict) -> None:
        if self.log_cb:
            self.log_cb(record)

    def _validate_epoch(self, record: dict) -> bool:
        """Validate, keep the best parameters, apply the plateau schedule; True = stop early."""
        cfg = self.training_cfg
        t0 = time.perf_counter()
        mrr = self.validate()
        record.update(valid_mrr=mrr, valid_time_s=time.perf_counter() - t0)
        if mrr > self.best_mrr:
            self.best_mrr, self.best_epoch, self.bad_validations = mrr, self.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        self.bad_validations += 1
        if cfg.lr_schedule == "plateau":
            for g in self.optimizer.param_groups:
                g["lr"] *= cfg.lr_decay
        return cfg.patience > 0 and self.bad_validations >= cfg.patience

    def fit(self):
        """Train until ``epochs`` (continuing from ``self.epoch`` after a resume) or early stop."""
        cfg = self.training_cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        has_valid = self.has_validation()
        last_save = time.perf_counter()
        try:
            while self.epoch < cfg.epochs:
                record = self.run_epoch()
                due = cfg.eval_every > 0 and (self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs)
                stop = self._validate_epoch(record) if has_valid and due else False
                self.history.append(record)
                self._emit(record)
                log.info("epoch %s", json.dumps(record))
                timed = self.checkpoint_every_s is not None and time.perf_counter() - last_save > self.checkpoint_every_s
                if self.checkpoint_cb and ("valid_mrr" in record or timed):
                    self.checkpoint_cb(self, "epoch")
                    last_save = time.perf_counter()
                if stop:
                    log.info("early stop at epoch %d (best valid MRR %.4f at epoch %d)", self.epoch, self.best_mrr,
                             self.best_epoch)
                    break
        except KeyboardInterrupt:
            if self.checkpoint_cb and self.checkpoint_on_interrupt:
                self.checkpoint_cb(self, "interrupted")
            raise
        if self.checkpoint_cb:
            self.checkpoint_cb(self, "end")
        return self

    def load_best(self) -> None:
        """Put the best validated parameters back into the model (no-op without validation)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def state(self) -> dict:
        """JSON-able counters (RNG and optimizer tensors are saved separately)."""
        out = {k: getattr(self, k) for k in self.state_keys}
        out.update(lr=self.optimizer.param_groups[0]["lr"], config=asdict(self.training_cfg))
        return out

    def load_state(self, state: dict) -> None:
        for k in self.state_keys:
            setattr(self, k, state.get(k, getattr(self, k)))
        for g in self.optimizer.param_groups:
            g["lr"] = state["lr"]
