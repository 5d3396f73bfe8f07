"""KGT5 training: teacher-forced cross-entropy on (input ids, target entity) examples, on the shared
:class:`~kgcomplete.training.loop.EpochLoop` (:class:`KGT5Trainer`).

* Optimizers: Adafactor (the paper's default: relative step size, parameter scaling, no fixed lr)
  or AdamW (fixed lr with linear warm-up).
* Hugging Face ``accelerate``: mixed precision (bf16/fp16) and multi-GPU data parallelism when GPUs
  are present (launch with ``accelerate launch``); plain CPU otherwise. Each process takes every
  ``world``-th example of the same seeded permutation.
* Checkpoints: ``checkpoint.safetensors`` (weights) and ``checkpoint_state.pt`` (optimizer, epoch,
  RNG, best validation score) after every epoch; ``model.safetensors`` holds the best weights (best
  validation MRR, else the last epoch). A checkpoint is all-or-nothing
  (:func:`~kgcomplete.runs.commit_files`; ``recover_checkpoint`` finishes or undoes one a crash cut
  short). ``resume=True`` continues from it exactly as if training had not stopped (same weights,
  optimizer state, RNG and log) in one process; with several accelerate processes only the main
  process's RNG state is saved.
* ``log.jsonl``: one JSON object per epoch (epoch, loss, lr, time_s, examples_per_s, valid_mrr).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from ..config import TrainingConfig
from ..device import resolve_device
from ..runs.files import RunFolder, atomic_write_file, commit_files, recover_checkpoint, trim_log, verify
from ..training.loop import EpochLoop
from .section import TRAINING_DEFAULTS, KGT5Config
from .tokenizer import PAD_ID
from ..console import bars_wanted

CHECKPOINT = "checkpoint.safetensors"
STATE = "checkpoint_state.pt"
BEST = "model.safetensors"
LOG = "log.jsonl"
_KGT5 = KGT5Config()


@dataclass
class TrainOptions:
    """What :func:`fit` needs, taken from a resolved KGT5 config (:meth:`from_config`); the defaults
    are the config's (:data:`~kgcomplete.seq2seq.section.TRAINING_DEFAULTS`, ``KGT5Config``)."""

    epochs: int = TRAINING_DEFAULTS["epochs"]
    batch_size: int = TRAINING_DEFAULTS["batch_size"]
    optimizer: str = "adafactor"  #: adafactor | adamw (a resolved ``kgt5.optimizer``: no ``auto``)
    lr: Optional[float] = None  #: None: Adafactor relative step / AdamW 1e-3 (the config resolves it to 2e-3)
    warmup_steps: int = _KGT5.warmup_steps  #: AdamW linear warm-up
    weight_decay: float = _KGT5.weight_decay
    grad_clip: float = 1.0  #: AdamW only (Adafactor clips its updates itself); not a config key
    seed: int = TRAINING_DEFAULTS["seed"]
    eval_every: int = TRAINING_DEFAULTS["eval_every"]  #: epochs between validations (0 = never)
    patience: int = TRAINING_DEFAULTS["patience"]  #: validations without improvement before stopping (0 = never)
    time_budget_s: Optional[float] = None  #: stop after the epoch that crosses this wall time
    #: stop after the epoch that crosses this much process CPU time (e.g. 2 cores x 15 min = 1800;
    #: a machine-independent budget when the cores are shared with other work)
    cpu_budget_s: Optional[float] = None
    mixed_precision: str = _KGT5.mixed_precision  #: auto (bf16/fp16 on GPU, none on CPU) | no | fp16 | bf16
    progress: bool = TRAINING_DEFAULTS["progress"]
    device: str = TRAINING_DEFAULTS["device"]  #: auto | cpu | cuda | cuda:N (``training.device``)

    @classmethod
    def from_config(cls, cfg: dict) -> "TrainOptions":
        """From a resolved KGT5 config dict (``training`` and ``kgt5`` sections, see
        :func:`kgcomplete.seq2seq.run.resolve_config`)."""
        tr, k = cfg["training"], cfg["kgt5"]
        if k["optimizer"] not in ("adafactor", "adamw"):
            raise ValueError(f"kgt5.optimizer={k['optimizer']!r}: expected adafactor | adamw (resolve the config first)")
        return cls(
            epochs=int(tr["epochs"]), batch_size=int(tr["batch_size"]), optimizer=k["optimizer"], lr=k["lr"],
            warmup_steps=int(k["warmup_steps"]), weight_decay=float(k["weight_decay"]), seed=int(tr["seed"]),
            eval_every=int(tr["eval_every"] or 0), patience=int(tr["patience"] or 0),
            time_budget_s=k["time_budget_s"], cpu_budget_s=k["cpu_budget_s"], mixed_precision=k["mixed_precision"],
            progress=bool(tr["progress"]), device=str(tr.get("device") or "auto"),
        )


def write_weights(model, path: Path, metadata: Optional[dict] = None) -> None:
    """Safetensors weights (shared/tied tensors deduplicated); a checkpoint writer (not atomic by itself)."""
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})


def save_weights(model, path: Path, metadata: Optional[dict] = None) -> None:
    """:func:`write_weights`, atomically."""
    atomic_write_file(Path(path), lambda p: write_weights(model, p, metadata))


def load_weights(model, path: Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(model, str(path), strict=False)
    tied = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight", "shared.weight"}
    bad = [k for k in missing if k not in tied] + list(unexpected)
    if bad:
        raise ValueError(f"{path}: weights do not match the model: {bad[:5]}")
    model.tie_weights()


def _rng_state() -> dict:
    out = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_rng"] = torch.cuda.get_rng_state_all()  # dropout on the GPU draws from these
    return out


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["rng"])
    cuda = state.get("cuda_rng")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def make_optimizer(model, opts: TrainOptions):
    name = opts.optimizer.lower()
    if name == "adafactor":
        from transformers.optimization import Adafactor

        if opts.lr is None:
            return Adafactor(model.parameters(), lr=None, scale_parameter=True, relative_step=True,
                             warmup_init=False, weight_decay=opts.weight_decay)
        return Adafactor(model.parameters(), lr=opts.lr, scale_parameter=False, relative_step=False,
                         warmup_init=False, weight_decay=opts.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=opts.lr or 1e-3, weight_decay=opts.weight_decay)
    raise ValueError(f"unknown KGT5 optimizer {opts.optimizer!r}: adafactor | adamw")


def _current_lr(opts: TrainOptions, step: int) -> float:
    if opts.optimizer.lower() == "adafactor" and opts.lr is None:
        return min(1e-2, 1.0 / math.sqrt(max(step, 1)))  # relative step (times the parameter RMS)
    base = opts.lr or 1e-3
    return base * min(1.0, step / max(1, opts.warmup_steps)) if opts.optimizer.lower() == "adamw" else base


class KGT5Trainer(EpochLoop):
    """Teacher-forced training of a T5 on ``inputs (n, L)`` (right-padded input ids) -> ``targets
    (n,)`` entity ids, on the shared :class:`~kgcomplete.training.loop.EpochLoop` (validation, early
    stopping, checkpoints, interruption). ``encoder.targets(ids)`` gives the label ids;
    ``evaluate_fn(model) -> valid MRR`` validates (on the main process; the others receive it).

    Stops at ``epochs``, on patience, or after the epoch that crosses ``time_budget_s`` (wall time of
    this call) or ``cpu_budget_s`` (process CPU time over all resumes). A ``KeyboardInterrupt``
    keeps the last epoch's checkpoint (the model is mid-epoch then).
    """

    state_keys = (*EpochLoop.state_keys, "step", "cpu_s")
    checkpoint_on_interrupt = False  # mid-epoch weights cannot be resumed exactly: keep the last epoch's

    def __init__(self, model, inputs: Tensor, targets: Tensor, encoder, opts: TrainOptions, acc,
                 evaluate_fn: Optional[Callable[[object], float]] = None,
                 checkpoint: Optional[Callable[["KGT5Trainer", str], None]] = None,
                 log_epoch: Optional[Callable[[dict], None]] = None):
        self.opts, self.acc, self.encoder, self.evaluate_fn = opts, acc, encoder, evaluate_fn
        self.inputs, self.targets = inputs, targets
        self.training_cfg = TrainingConfig(epochs=opts.epochs, batch_size=opts.batch_size, seed=opts.seed,
                                           eval_every=opts.eval_every, patience=opts.patience, threads=0,
                                           progress=opts.progress, optimizer=opts.optimizer, lr=opts.lr)
        self.model, self.optimizer = model, make_optimizer(model, opts)
        self.base_lr = opts.lr
        self._init_loop_state(checkpoint, log_epoch, checkpoint_every_s=0.0)  # every epoch is saved
        self.step, self.cpu_s = 0, 0.0  # optimizer steps; process CPU seconds over all resumes
        self.scheduler = None
        self._started, self._cpu_mark = time.time(), time.process_time()

    # ------------------------------------------------------------- EpochLoop
    def fit(self):
        self._started, self._cpu_mark = time.time(), time.process_time()  # the budgets count from here
        return super().fit()

    def has_validation(self) -> bool:
        return self.evaluate_fn is not None

    def validate(self) -> float:
        acc = self.acc
        mrr = [float(self.evaluate_fn(acc.unwrap_model(self.model)))] if acc.is_main_process else [None]
        if acc.num_processes > 1:  # every process takes the same early-stopping decision
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(mrr)
        return mrr[0]

    def out_of_budget(self) -> Optional[str]:
        o = self.opts
        if o.time_budget_s is not None and time.time() - self._started >= o.time_budget_s:
            return f"time budget of {o.time_budget_s:g} s"
        if o.cpu_budget_s is not None and self._cpu_total() >= o.cpu_budget_s:
            return f"CPU budget of {o.cpu_budget_s:g} s"
        return None

    def run_epoch(self) -> dict:
        acc, opts, model = self.acc, self.opts, self.model
        if self.scheduler is None and opts.optimizer.lower() == "adamw":  # linear warm-up from the saved step
            step0 = self.step
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda s: min(1.0, (s + 1 + step0) / max(1, opts.warmup_steps)))
        model.train()
        t0, c0 = time.time(), time.process_time()
        world, rank, n = acc.num_processes, acc.process_index, len(self.inputs)
        per_rank = n // world
        g = torch.Generator().manual_seed(opts.seed * 100_003 + self.epoch)
        perm = torch.randperm(n, generator=g)[rank::world][:per_rank]
        starts = range(0, per_rank, opts.batch_size)
        if bars_wanted(opts.progress) and acc.is_local_main_process:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"kgt5 epoch {self.epoch + 1}/{opts.epochs}", unit="batch", leave=False)
        total, count = 0.0, 0
        for s in starts:
            idx = perm[s:s + opts.batch_size]
            ids = self.inputs[idx]
            mask = ids != PAD_ID
            width = int(mask.sum(1).max())
            ids, mask = ids[:, :width].to(acc.device), mask[:, :width].long().to(acc.device)
            labels = self.encoder.targets(self.targets[idx]).to(acc.device)
            with acc.autocast():
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            acc.backward(loss)
            if self.scheduler is not None and opts.grad_clip:
                acc.clip_grad_norm_(model.parameters(), opts.grad_clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if hasattr(starts, "set_postfix") and self.step % 10 == 0:
                starts.set_postfix(loss=f"{total / max(count, 1):.4f}")
        dt = time.time() - t0
        self.epoch += 1
        self.train_time_s += dt
        self.train_triples += count * world
        return {"epoch": self.epoch, "loss": total / max(count, 1), "lr": _current_lr(opts, self.step),
                "time_s": round(dt, 3), "cpu_s": round(time.process_time() - c0, 3),
                "examples_per_s": round(count * world / max(dt, 1e-9), 1)}

    # ------------------------------------------------------------- state
    def _cpu_total(self) -> float:
        return self.cpu_s + time.process_time() - self._cpu_mark

    def state(self) -> dict:
        self.cpu_s, self._cpu_mark = self._cpu_total(), time.process_time()
        return super().state()


def _save_checkpoint(folder: RunFolder, trainer: KGT5Trainer, reason: str) -> None:
    """One commit (:func:`~kgcomplete.runs.files.commit_files`): latest weights, the best ones when
    this epoch is the best (or nothing validates), and ``checkpoint_state.pt`` (optimizer, counters,
    RNG) moved into place last. Only the main process writes."""
    acc = trainer.acc
    if acc.is_main_process and (reason != "end" or getattr(trainer, "_saved_epoch", None) != trainer.epoch):
        model = acc.unwrap_model(trainer.model)
        done = trainer.epoch
        writers = {CHECKPOINT: lambda p: write_weights(model, p, {"epoch": done})}
        if not trainer.has_validation() or not trainer.opts.eval_every or trainer.best_epoch == done:
            writers[BEST] = lambda p: write_weights(model, p, {"epoch": done})
        counters = trainer.state()
        state = {"optimizer": trainer.optimizer.state_dict(), "epoch": done, "step": trainer.step,
                 "best": counters["best_mrr"], "best_epoch": counters["best_epoch"],
                 "train_time_s": counters["train_time_s"], "bad_evals": counters["bad_validations"],
                 "cpu_s": counters["cpu_s"], "train_triples": counters["train_triples"], **_rng_state()}
        writers[STATE] = lambda p: torch.save(state, p)  # moved into place last
        commit_files(folder.path, writers)
        trainer._saved_epoch = done
    acc.wait_for_everyone()


def _restore(folder: RunFolder, trainer: KGT5Trainer) -> None:
    """Load the last checkpoint into ``trainer`` (weights, optimizer, counters, RNG); ``log.jsonl``
    is cut back to its epoch."""
    acc = trainer.acc
    if acc.is_main_process:
        recover_checkpoint(folder.path)
    acc.wait_for_everyone()
    state = None
    if (folder / STATE).exists() and (folder / CHECKPOINT).exists():
        verify(folder / CHECKPOINT)
        verify(folder / STATE)
        state = torch.load(folder / STATE, map_location="cpu", weights_only=False)
    if acc.is_main_process:
        trim_log(folder.path, state["epoch"] if state is not None else 0)
    acc.wait_for_everyone()
    if state is None:
        return
    load_weights(trainer.model, folder / CHECKPOINT)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.epoch, trainer.step = int(state["epoch"]), int(state["step"])
    trainer.best_mrr, trainer.bad_validations = float(state["best"]), int(state.get("bad_evals", 0))
    trainer.best_epoch = int(state.get("best_epoch", 0))
    trainer.train_time_s, trainer.cpu_s = float(state.get("train_time_s", 0.0)), float(state.get("cpu_s", 0.0))
    trainer.train_triples = int(state.get("train_triples", 0))
    _set_rng_state(state)
    trainer._saved_epoch = trainer.epoch  # the checkpoint on disk is this epoch's: nothing to save at the end
    acc.print(f"resuming KGT5 training from epoch {trainer.epoch}")


def fit(model, inputs: Tensor, targets: Tensor, encoder, opts: TrainOptions, out_dir: Path,
        resume: bool = False, evaluate_fn: Optional[Callable[[object], float]] = None) -> dict:
    """Train ``model`` (see :class:`KGT5Trainer`) into the run folder ``out_dir``, resuming from its
    checkpoint with ``resume``. Returns ``{"epochs", "train_time_s", "examples_per_s",
    "best_valid_mrr", "steps", "cpu_s", "stopped"}``."""
    from accelerate import Accelerator

    folder = RunFolder(out_dir)
    device = resolve_device(opts.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    mp = opts.mixed_precision
    if mp == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    acc = Accelerator(mixed_precision=mp, cpu=not cuda)
    trainer = KGT5Trainer(model, inputs, targets, encoder, opts, acc, evaluate_fn,
                          checkpoint=lambda t, reason: _save_checkpoint(folder, t, reason),
                          log_epoch=folder.append_log if acc.is_main_process else None)
    if resume:
        _restore(folder, trainer)
    elif acc.is_main_process:
        trim_log(folder.path, 0)
    trainer.model, trainer.optimizer = acc.prepare(trainer.model, trainer.optimizer)
    trainer.fit()
    if acc.is_main_process and not (folder / BEST).exists():
        save_weights(acc.unwrap_model(trainer.model), folder / BEST, {"epoch": trainer.epoch})
    return {"epochs": trainer.epoch, "train_time_s": trainer.train_time_s,
            "examples_per_s": trainer.train_triples / max(trainer.train_time_s, 1e-9),
            "best_valid_mrr": trainer.best_mrr if trainer.best_mrr >= 0 else None, "steps": trainer.step,
            "cpu_s": trainer._cpu_total(), "stopped": trainer.stop_reason}
