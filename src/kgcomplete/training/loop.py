"""The epoch loop shared by the single-process :class:`~kgcomplete.training.Trainer` and the BESS
trainer: learning-rate schedule, validation with early stopping, best parameters, checkpoints.

A subclass provides ``training_cfg`` (:class:`~kgcomplete.config.TrainingConfig`), ``model``,
``optimizer``, ``base_lr``, ``run_epoch() -> dict`` (increments ``epoch``), ``validate() -> float``
(filtered validation MRR) and ``has_validation() -> bool``; it calls :meth:`_init_loop_state`. It
may override :meth:`out_of_budget` (stop after the epoch that crosses a time budget).
After :meth:`fit`, ``stop_reason`` says why training stopped (also logged).

Validation cadence (``training.eval_every``, :func:`~kgcomplete.config.parse_cadence`): every N
epochs, or - for graphs where one epoch is long - every fraction of an epoch (``0.25``) or every
duration of training (``"10m"``). A trainer that can stop inside an epoch (``pauses_mid_epoch``:
the single-process trainer) asks :meth:`_due_after_batch` after every batch and, when a
validation is due before the epoch's end, returns a record of the epoch so far (``"epoch"``: the
position, e.g. 3.25, floored to 4 decimals; ``"rows"``: training rows done in the epoch) with its
position kept, as after a Ctrl-C; the loop validates, logs, checkpoints, and the next
``run_epoch`` continues the epoch. Other trainers validate at the end of each epoch in which a
fraction mark was crossed or the duration passed.

Weight averaging (``training.average_epochs`` > 0, :mod:`~kgcomplete.training.averaging`): the
trainer calls :meth:`_average_step` after every optimizer step; validation, the best weights and -
without validation - the weights a run ends with are the average's (:meth:`judged_weights`), while
training continues from its own weights. A trainer provides ``steps_per_epoch()`` (the average's
window is counted in steps) and saves :attr:`average` in its checkpoint (:meth:`restore_average`).

Interruptions: with ``defer_interrupts`` (the single-process trainer), Ctrl-C (SIGINT, when
:meth:`fit` runs in the main thread) only sets a flag; training stops at the next batch boundary
(:meth:`_check_interrupt`) or after the current epoch's validation and log record, saves an
``interrupted`` checkpoint there and raises ``KeyboardInterrupt``. A second Ctrl-C stops at once
without saving (the previous checkpoint stays). A ``KeyboardInterrupt`` raised otherwise is
checkpointed only where the state is consistent (see :attr:`_checkpointable`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import asdict
from typing import Callable, Iterator, Optional

import torch

from ..config import Cadence, parse_cadence, parse_duration
from ..console import Console
from .averaging import WeightAverage

log = logging.getLogger(__name__)

#: the clock of timed checkpoints (a seam for tests)
_clock = time.perf_counter


@contextlib.contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """``training.deterministic``: deterministic kernels while training (``torch.use_deterministic_algorithms``,
    ops without a deterministic implementation warn; cuBLAS gets the workspace it needs), then the
    previous setting back. The CPU kernels used here are deterministic either way."""
    if not on:
        yield
        return
    import os

    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if cublas is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


class EpochLoop:
    #: counters saved in ``trainer_state.json`` and restored on resume
    state_keys: tuple[str, ...] = ("epoch", "best_mrr", "best_epoch", "bad_validations", "train_time_s", "train_triples",
                                   "elapsed_s")
    #: save a checkpoint when training is interrupted (off where saving needs every worker)
    checkpoint_on_interrupt = True
    #: Ctrl-C sets a flag that ``run_epoch`` checks at batch boundaries (:meth:`_check_interrupt`)
    #: instead of raising wherever it lands (off unless ``run_epoch`` checks it)
    defer_interrupts = False
    #: ``run_epoch`` asks :meth:`_due_after_batch` after every batch and returns early, keeping its
    #: position, when a validation is due inside the epoch (see the module docs)
    pauses_mid_epoch = False

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
        self.elapsed_s = 0.0  #: seconds of training and validation so far (all sessions): the time budget's clock
        self.validated_at_s = 0.0  #: :attr:`elapsed_s` at the end of the last validation (a timed cadence)
        #: a validation is due at the end of the current ``run_epoch`` (set by :meth:`_due_after_batch`)
        self._validation_due = False
        #: False from the end of an epoch's training until its log record is written: a checkpoint
        #: then would hold a trained epoch whose validation/record resume would never redo
        self._checkpointable = True
        self._interrupt_requested = False  # a deferred Ctrl-C is pending
        self._interrupt_forced = False  # a second Ctrl-C: stop at once, save nothing
        self.stop_reason: Optional[str] = None  #: why :meth:`fit` stopped, in words
        #: called with each epoch's record after it is logged; a returned string stops training there
        #: with that reason (a tuner's pruner: "pruned by the tuner at epoch 10")
        self.on_epoch: Optional[Callable[[dict], Optional[str]]] = None
        #: lines for the person watching (validations, stop reason, interruption); silent by default
        self.console = Console(False)
        #: the running average of the weights (``training.average_epochs``), made at the first step
        self.average: Optional[WeightAverage] = None

    def averaged_module(self) -> torch.nn.Module:
        """The module whose weights are averaged (a trainer whose model is wrapped unwraps it)."""
        return self.model

    def _new_average(self) -> Optional[WeightAverage]:
        window = float(self.training_cfg.average_epochs)
        if window <= 0:
            return None
        return WeightAverage(self.averaged_module(), window * max(1, self.steps_per_epoch()))

    def _average_step(self) -> None:
        """After an optimizer step: move the weight average (nothing when averaging is off)."""
        if self.average is None:
            self.average = self._new_average()
            if self.average is None:
                return
        self.average.update()

    def restore_average(self, tensors: dict, steps: int) -> None:
        """Put a checkpoint's weight average (``WeightAverage.state_dict``, its update count) back."""
        self.average = self._new_average()
        if self.average is None:
            raise ValueError("the checkpoint holds a weight average but training.average_epochs is 0; "
                             "resume with the run's own config")
        self.average.load_state_dict(tensors, steps)

    def judged_weights(self) -> contextlib.AbstractContextManager:
        """The weights that are validated, kept as the best and saved as such: inside the block, the
        average's when averaging is on (the model's own weights come back after it), else the model's."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

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

    @property
    def cadence(self) -> Cadence:
        """``training.eval_every`` parsed (:func:`~kgcomplete.config.parse_cadence`)."""
        value = self.training_cfg.eval_every
        if getattr(self, "_cadence_of", None) != (value,):
            self._cadence, self._cadence_of = parse_cadence(value), (value,)
        return self._cadence

    def _due_after_batch(self, rows_before: int, rows_after: int, rows_total: int, clock_s: float) -> bool:
        """After a batch that took the epoch from ``rows_before`` to ``rows_after`` of ``rows_total``
        training rows, with ``clock_s`` on the :attr:`elapsed_s` clock: is a validation due (a
        fraction mark crossed in this batch, or the duration passed since the last validation)?
        Sets ``_validation_due``. Whole-epoch cadences are never due here."""
        c = self.cadence
        if not self.has_validation():
            return False
        if c.fraction is not None:
            mark = c.fraction * rows_total
            due = math.floor((self.epoch * rows_total + rows_after) / mark + 1e-9) > \
                math.floor((self.epoch * rows_total + rows_before) / mark + 1e-9)
        elif c.seconds is not None:
            due = clock_s - self.validated_at_s >= c.seconds
        else:
            return False
        self._validation_due = self._validation_due or due
        return due

    def _due_at_epoch_end(self, record: dict, last: bool) -> bool:
        """Whether the record that ``run_epoch`` returned is validated: the last one (``epochs`` or a
        budget reached), every ``epochs``-th epoch, or - with a cadence within epochs - when a trainer
        that pauses said so, else (other trainers) when a fraction mark was crossed in this epoch or
        the duration has passed."""
        c = self.cadence
        if c.never:
            return False
        if last or "rows" in record:  # the last record, or a pause for a validation inside the epoch
            return True
        if not c.within_epochs:
            return self.epoch % c.epochs == 0
        if self.pauses_mid_epoch:  # due after the epoch's last batch
            return self._validation_due
        if c.fraction is not None:
            return math.floor(self.epoch / c.fraction + 1e-9) > math.floor((self.epoch - 1) / c.fraction + 1e-9)
        return self.elapsed_s - self.validated_at_s >= c.seconds

    def _new_train_seconds(self, record: dict) -> float:
        """Seconds of training that ``record`` adds to :attr:`elapsed_s` (a trainer whose records
        overlap, e.g. mid-epoch records, overrides it)."""
        return float(record.get("time_s", 0.0))

    def _validate_epoch(self, record: dict) -> bool:
        """Validate, keep the best parameters, apply the plateau schedule; True = stop early."""
        cfg = self.training_cfg
        t0 = time.perf_counter()
        with self.judged_weights():
            mrr = self.validate()
            improved = mrr > self.best_mrr
            if improved:
                self.best_mrr, self.best_epoch, self.bad_validations = mrr, record.get("epoch", self.epoch), 0
                self.best_state = self._host_state()
        record.update(valid_mrr=mrr, valid_time_s=time.perf_counter() - t0)
        if improved:
            return False
        self.bad_validations += 1
        if cfg.lr_schedule == "plateau":
            for g in self.optimizer.param_groups:
                g["lr"] *= cfg.lr_decay
        return self._stopped_early()

    def _host_state(self) -> dict:
        # on the host: a second copy of the tables next to the model would halve what fits on a GPU
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _stopped_early(self) -> bool:
        cfg = self.training_cfg
        return cfg.patience > 0 and self.bad_validations >= cfg.patience

    def out_of_budget(self) -> Optional[str]:
        """A budget the run has used up (e.g. "time budget of 30m"), or None: training stops after
        the epoch that crosses it, validating that epoch (with validations inside epochs: at the
        first validation past it). Here: ``training.time_budget`` against
        :attr:`elapsed_s` (training and validation, summed over resumed sessions)."""
        text = getattr(self.training_cfg, "time_budget", "")
        limit = parse_duration(text, "training.time_budget")
        if limit is not None and self.elapsed_s >= limit:
            return f"time budget of {text} ({self.elapsed_s:,.0f} s trained and validated)"
        return None

    def _check_interrupt(self) -> None:
        """Raise the deferred Ctrl-C here, where the training state is consistent."""
        if self._interrupt_requested:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def _deferred_interrupts(self) -> Iterator[None]:
        """With ``defer_interrupts`` in the main thread: the first Ctrl-C sets a flag, the second raises."""
        self._interrupt_requested = self._interrupt_forced = False
        if not (self.defer_interrupts and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            yield
            return

        def handler(signum, frame):
            if self._interrupt_requested:
                self._interrupt_forced = True
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._interrupt_requested = True
            log.warning("interrupted: stopping after the current batch and saving a checkpoint "
                        "(Ctrl-C again to stop at once without saving)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def fit(self):
        """Train until ``epochs`` (continuing from ``self.epoch`` after a resume) or early stop."""
        cfg = self.training_cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        has_valid = self.has_validation()
        last_save = _clock()
        with self._deferred_interrupts(), deterministic_kernels(getattr(cfg, "deterministic", False)):
            try:
                self._checkpointable = True
                if has_valid and self._stopped_early():  # a resumed run that had stopped early
                    log.info("run stopped early at epoch %d (patience %d); nothing to train", self.epoch, cfg.patience)
                    self.console.nothing_to_train(self.epoch, cfg.patience, self.bad_validations)
                budget, told = self.out_of_budget(), None
                self.cadence  # noqa: B018 - a bad training.eval_every fails here, before training
                while self.epoch < cfg.epochs and not (has_valid and self._stopped_early()) and not budget:
                    self._check_interrupt()
                    self._validation_due = False
                    record = self.run_epoch()  # an epoch, or its part up to a validation due inside it
                    self._checkpointable = False  # until the epoch's record is written
                    self.elapsed_s += self._new_train_seconds(record)
                    budget = self.out_of_budget()
                    last = ("rows" not in record and self.epoch == cfg.epochs) or budget is not None
                    stop = self._validate_epoch(record) if has_valid and self._due_at_epoch_end(record, last) else False
                    self.elapsed_s += float(record.get("valid_time_s", 0.0))
                    if "valid_mrr" in record:
                        self.validated_at_s = self.elapsed_s
                    self.history.append(record)
                    self._emit(record)
                    self.console.validation(record, self.best_mrr, self.best_epoch)
                    self._checkpointable = True
                    log.info("epoch %s", json.dumps(record))
                    told = self.on_epoch(record) if self.on_epoch else None
                    timed = self.checkpoint_every_s is not None and _clock() - last_save > self.checkpoint_every_s
                    if self.checkpoint_cb and ("valid_mrr" in record or timed):
                        self.checkpoint_cb(self, "epoch")
                        last_save = _clock()
                    if stop or told:
                        break
                self.stop_reason = told or self._why_stopped(budget)
                log.info("training stopped at epoch %d: %s", self.epoch, self.stop_reason)
                self.console.stopped(self.stop_reason, self.epoch, self.best_epoch if has_valid else 0, self.best_mrr)
                self._check_interrupt()
            except KeyboardInterrupt:
                self.stop_reason = "interrupted"
                if self.checkpoint_cb and self.checkpoint_on_interrupt:
                    if self._interrupt_forced:
                        log.warning("stopped without saving; the last checkpoint is kept")
                        self.console.interrupted(self.epoch, saved=False)
                    elif not self._checkpointable:
                        log.warning("interrupted between the training up to epoch %s and its log record; the "
                                    "last checkpoint is kept", self._position())
                        self.console.interrupted(self.epoch, saved=False)
                    else:
                        self.checkpoint_cb(self, "interrupted")
                        self.console.interrupted(self.epoch, self._rows_into_epoch())
                raise
            if self.average is not None and self.best_state is None and not has_valid:
                with self.judged_weights():  # nothing validated: the run's weights are the average
                    self.best_state = self._host_state()
            if self.checkpoint_cb:
                self.checkpoint_cb(self, "end")
            self._check_interrupt()  # Ctrl-C during the last checkpoint: it is written, stop now
        return self

    def _position(self) -> str:
        """Where training is: ``3`` (epochs done) or ``3 + 512 rows``."""
        rows = self._rows_into_epoch()
        return f"{self.epoch}" + (f" + {rows:,} rows" if rows else "")

    def _rows_into_epoch(self) -> int:
        """Training rows done of an unfinished epoch (what an interrupted checkpoint holds beyond
        ``epoch``); 0 where the trainer does not track it."""
        progress = getattr(self, "epoch_progress", None)
        return int(progress["rows"]) if progress else 0

    def _why_stopped(self, budget: Optional[str]) -> str:
        cfg = self.training_cfg
        if self.has_validation() and self._stopped_early():
            return (f"early stop: no better validation MRR in {self.bad_validations} validations (patience "
                    f"{cfg.patience}); best {self.best_mrr:.4f} at epoch {self.best_epoch}")
        if budget:
            return f"{budget} used up"
        return f"all {cfg.epochs} epochs trained"

    def load_best(self) -> None:
        """Put the best validated parameters back into the model (no-op without validation)."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def state(self) -> dict:
        """JSON-able counters (RNG and optimizer tensors are saved separately); with a timed
        cadence also ``validated_at_s``."""
        out = {k: getattr(self, k) for k in self.state_keys}
        out.update(lr=self.optimizer.param_groups[0]["lr"], config=asdict(self.training_cfg))
        if self.cadence.seconds is not None:
            out["validated_at_s"] = self.validated_at_s
        return out

    def load_state(self, state: dict) -> None:
        for k in self.state_keys:
            setattr(self, k, state.get(k, getattr(self, k)))
        self.validated_at_s = float(state.get("validated_at_s", self.elapsed_s))
        for g in self.optimizer.param_groups:
            g["lr"] = state["lr"]
