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
* Batches (:func:`bucketed_batches`): every epoch a seeded permutation of the examples is cut into
  groups of ``BUCKET_BATCHES`` batches, each group sorted by input length and cut into batches (the
  batch order shuffled again), and each batch padded only to its own longest input: the same
  examples every epoch with far less padding when the inputs differ in length (KGT5-context). The
  examples (:class:`QueryExamples`: assembled per batch from the encoder's token pieces, with the
  epoch's neighbourhood sample; :class:`TensorExamples`: ready input tensors) are prepared on a
  background thread (:func:`prefetch`) while the model trains on the previous batch.
* ``log.jsonl``: one JSON object per epoch (epoch, loss, lr, time_s, cpu_s, examples_per_s,
  tokens_per_s (input + target tokens), padding (padded share of the input positions), valid_mrr).
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from ..config import TrainingConfig
from ..device import resolve_device
from ..runs.files import RunFolder, atomic_write_file, commit_files, read_log, recover_checkpoint, trim_log, verify
from ..training.loop import EpochLoop
from .section import TRAINING_DEFAULTS, KGT5Config
from .tokenizer import PAD_ID
from ..console import EpochProgress

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
STATE = "checkpoint_state.pt"
BEST = "model.safetensors"
LOG = "log.jsonl"
_KGT5 = KGT5Config()
#: batches per length-sorted group (:func:`bucketed_batches`)
BUCKET_BATCHES = 50
#: batches prepared ahead by the background thread
PREFETCH = 4


@dataclass
class TrainOptions:
    """What :func:`fit` needs, taken from a resolved KGT5 config (:meth:`from_config`); the defaults
    are the config's (:data:`~kgcomplete.seq2seq.section.TRAINING_DEFAULTS`, ``KGT5Config``)."""

    epochs: int = TRAINING_DEFAULTS["epochs"]
    batch_size: int = TRAINING_DEFAULTS["batch_size"]
    optimizer: str = "adafactor"  #: adafactor | adamw (a resolved ``kgt5.optimizer``: no ``auto``)
    lr: Optional[float] = None  #: None: Adafactor relative step / AdamW 1e-3 (the config resolves it to 2e-3)
    warmup_steps: int = _KGT5.warmup_steps  #: AdamW linear warm-up
    lr_decay: str = _KGT5.lr_decay  #: AdamW: none | linear (to 0 at the last epoch or the end of a budget)
    weight_decay: float = _KGT5.weight_decay
    grad_clip: float = 1.0  #: AdamW only (Adafactor clips its updates itself); not a config key
    seed: int = TRAINING_DEFAULTS["seed"]
    eval_every: int = TRAINING_DEFAULTS["eval_every"]  #: epochs between validations (0 = never)
    patience: int = TRAINING_DEFAULTS["patience"]  #: validations without improvement before stopping (0 = never)
    time_budget_s: Optional[float] = None  #: stop after the epoch that crosses this wall time
    #: stop after the epoch that crosses this much process CPU time (e.g. 2 cores x 15 min = 1800;
    #: a machine-independent budget when the cores are shared with other work)
    cpu_budget_s: Optional[float] = None
    mixed_precision: str = _KGT5.mixed_precision  #: auto (bf16/fp16 on GPU, bf16 on CPUs that multiply it fast, else no) | no | fp16 | bf16
    progress: bool = TRAINING_DEFAULTS["progress"]
    device: str = TRAINING_DEFAULTS["device"]  #: auto | cpu | cuda | cuda:N (``training.device``)
    #: ``training.average_epochs``: validate and keep a moving average of the weights (0 = off)
    average_epochs: float = TRAINING_DEFAULTS["average_epochs"]

    @classmethod
    def from_config(cls, cfg: dict) -> "TrainOptions":
        """From a resolved KGT5 config dict (``training`` and ``kgt5`` sections, see
        :func:`kgcomplete.seq2seq.run.resolve_config`)."""
        tr, k = cfg["training"], cfg["kgt5"]
        if k["optimizer"] not in ("adafactor", "adamw"):
            raise ValueError(f"kgt5.optimizer={k['optimizer']!r}: expected adafactor | adamw (resolve the config first)")
        return cls(
            epochs=int(tr["epochs"]), batch_size=int(tr["batch_size"]), optimizer=k["optimizer"], lr=k["lr"],
            warmup_steps=int(k["warmup_steps"]), lr_decay=str(k["lr_decay"]), weight_decay=float(k["weight_decay"]), seed=int(tr["seed"]),
            eval_every=int(tr["eval_every"] or 0), patience=int(tr["patience"] or 0),
            time_budget_s=k["time_budget_s"], cpu_budget_s=k["cpu_budget_s"], mixed_precision=k["mixed_precision"],
            progress=bool(tr["progress"]), device=str(tr.get("device") or "auto"),
            average_epochs=float(tr.get("average_epochs") or 0.0),
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


def _adafactor_lr(opts: TrainOptions, step: int) -> float:
    """The lr Adafactor used at ``step`` (AdamW's is its scheduler's, read from the optimizer)."""
    if opts.lr is None:
        return min(1e-2, 1.0 / math.sqrt(max(step, 1)))  # relative step (times the parameter RMS)
    return opts.lr


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     bucket_batches: int = BUCKET_BATCHES) -> list[np.ndarray]:
    """``(n,)`` input lengths -> batches of example indices: a random permutation cut into groups
    of ``bucket_batches * batch_size``, each group sorted by length and cut into batches, the
    batches shuffled. Every example is in exactly one batch."""
    n = len(lengths)
    perm = rng.permutation(n)
    group = max(1, batch_size * bucket_batches)
    batches = []
    for s in range(0, n, group):  # one step per group of batches, not per example
        g = perm[s:s + group]
        g = g[np.argsort(lengths[g], kind="stable")]
        batches.extend(g[i:i + batch_size] for i in range(0, len(g), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def prefetch(items: Iterable, depth: int = PREFETCH) -> Iterator:
    """Iterate ``items`` on a background thread, ``depth`` ahead; its exceptions re-raise here. The
    thread stops when the consumer stops early."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def work():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=work, name="kgt5-batches", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class TensorExamples:
    """Ready examples: ``inputs (n, L)`` right-padded input ids, ``targets (n,)`` entity ids."""

    def __init__(self, inputs: Tensor, targets: Tensor, encoder):
        self.inputs, self.targets, self.encoder = inputs, torch.as_tensor(targets), encoder
        self._lengths = (inputs != PAD_ID).sum(1).numpy()

    def __len__(self) -> int:
        return len(self.targets)

    def epoch_state(self, epoch: int):
        return None

    def lengths(self, state) -> np.ndarray:
        return self._lengths

    def batch(self, idx: np.ndarray, state) -> tuple[Tensor, Tensor, Tensor]:
        """``(b,)`` example indices -> ``input_ids (b, W)``, ``attention_mask (b, W)`` (``W``: the
        batch's longest input) and ``labels (b, Lt)``."""
        idx = torch.as_tensor(idx)
        width = int(self._lengths[idx.numpy()].max())
        ids = self.inputs[idx, :width]
        return ids, (ids != PAD_ID).long(), self.encoder.targets(self.targets[idx])


class QueryExamples:
    """Link-prediction examples assembled per batch by a
    :class:`~kgcomplete.seq2seq.encoding.QueryEncoder`: ``anchor``, ``relation``, ``head`` (bool:
    predict the head), ``target`` and ``exclude`` (the row of the training triple predicted, whose
    edge stays out of the context), all ``(n,)``. With context, every epoch reads its own
    neighbourhood sample (seeded by the epoch)."""

    def __init__(self, encoder, anchor, relation, head, target, exclude):
        self.encoder = encoder
        self.anchor, self.relation = np.asarray(anchor, np.int64), np.asarray(relation, np.int64)
        self.head, self.target = np.asarray(head, np.int64), np.asarray(target, np.int64)
        self.exclude = np.asarray(exclude, np.int64)

    @classmethod
    def from_triples(cls, encoder, triples: np.ndarray) -> "QueryExamples":
        """Both directions of every triple ``i = (h, r, t)``: ``h | r -> t`` and ``t | reverse r -> h``,
        each excluding triple ``i`` from its context."""
        t = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        n = len(t)
        return cls(encoder, np.concatenate([t[:, 0], t[:, 2]]), np.concatenate([t[:, 1], t[:, 1]]),
                   np.repeat([0, 1], n), np.concatenate([t[:, 2], t[:, 0]]), np.tile(np.arange(n), 2))

    def __len__(self) -> int:
        return len(self.target)

    def epoch_state(self, epoch: int):
        """The epoch's neighbourhood sample (None without context)."""
        return self.encoder.sample(epoch) if self.encoder.context else None

    def lengths(self, state) -> np.ndarray:
        return self.encoder.input_lengths(self.anchor, self.relation, self.head, self.exclude, state)

    def batch(self, idx: np.ndarray, state) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask = self.encoder.queries(self.anchor[idx], self.relation[idx], self.head[idx], self.exclude[idx], state)
        return ids, mask, self.encoder.targets(self.target[idx])


class KGT5Trainer(EpochLoop):
    """Teacher-forced training of a T5 on ``examples`` (:class:`QueryExamples` or
    :class:`TensorExamples`) in length-bucketed batches, on the shared
    :class:`~kgcomplete.training.loop.EpochLoop` (validation, early stopping, checkpoints,
    interruption). ``evaluate_fn(model) -> valid MRR`` validates (on the main process; the others
    receive it).

    Stops at ``epochs``, on patience, or after the epoch that crosses ``time_budget_s`` (wall time of
    this call) or ``cpu_budget_s`` (process CPU time over all resumes). A ``KeyboardInterrupt``
    keeps the last epoch's checkpoint (the model is mid-epoch then).
    """

    checkpoint_on_interrupt = False  # mid-epoch weights cannot be resumed exactly: keep the last epoch's

    state_keys = (*EpochLoop.state_keys, "step", "cpu_s", "train_tokens")

    def __init__(self, model, examples, opts: TrainOptions, acc,
                 evaluate_fn: Optional[Callable[[object], float]] = None,
                 checkpoint: Optional[Callable[["KGT5Trainer", str], None]] = None,
                 log_epoch: Optional[Callable[[dict], None]] = None):
        self.opts, self.acc, self.examples, self.evaluate_fn = opts, acc, examples, evaluate_fn
        self.training_cfg = TrainingConfig(epochs=opts.epochs, batch_size=opts.batch_size, seed=opts.seed,
                                           eval_every=opts.eval_every, patience=opts.patience, threads=0,
                                           progress=opts.progress, optimizer=opts.optimizer, lr=opts.lr,
                                           average_epochs=opts.average_epochs)
        self.model, self.optimizer = model, make_optimizer(model, opts)
        self.base_lr = opts.lr
        self._init_loop_state(checkpoint, log_epoch, checkpoint_every_s=0.0)  # every epoch is saved
        self.step, self.cpu_s = 0, 0.0  # optimizer steps; process CPU seconds over all resumes
        self.train_tokens = 0  # input + target tokens trained on, over all resumes
        self.scheduler = None
        self._steps_per_epoch = 1  # batches per epoch (this process), set by run_epoch
        self._started, self._cpu_mark = time.time(), time.process_time()

    # ------------------------------------------------------------- EpochLoop
    def fit(self):
        self._started, self._cpu_mark = time.time(), time.process_time()  # the budgets count from here
        return super().fit()

    def has_validation(self) -> bool:
        return self.evaluate_fn is not None

    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.examples) // self.opts.batch_size) // self.acc.num_processes)

    def averaged_module(self):
        return self.acc.unwrap_model(self.model)

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

    def lr_factor(self, step: int) -> float:
        """AdamW's lr multiplier for optimizer step ``step`` (1-based): a linear warm-up over ``warmup_steps``; with
        ``lr_decay: linear``, times ``1 - progress``, where progress is the larger of the steps done of
        ``epochs`` epochs and the share of a wall-clock or CPU budget used (a budgeted run anneals to 0
        where the budget ends, not where the epochs would)."""
        o = self.opts
        factor = min(1.0, step / max(1, o.warmup_steps))
        if o.lr_decay == "linear":
            progress = (step - 1) / max(1, o.epochs * self._steps_per_epoch)  # the first step at the full lr
            if o.time_budget_s:
                progress = max(progress, (time.time() - self._started) / o.time_budget_s)
            if o.cpu_budget_s:
                progress = max(progress, self._cpu_total() / o.cpu_budget_s)
            factor *= max(0.0, 1.0 - progress)
        return factor

    def run_epoch(self) -> dict:
        acc, opts, model = self.acc, self.opts, self.model
        model.train()
        t0, c0 = time.time(), time.process_time()
        world, rank = acc.num_processes, acc.process_index
        data = self.examples
        state = data.epoch_state(self.epoch)
        rng = np.random.default_rng([opts.seed & 0xFFFFFFFF, self.epoch])
        batches = bucketed_batches(data.lengths(state), opts.batch_size, rng)
        batches = batches[rank::world][:len(batches) // world]
        self._steps_per_epoch = len(batches)
        if self.scheduler is None and opts.optimizer.lower() == "adamw":  # warm-up (and decay) from the saved step
            step0 = self.step
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: self.lr_factor(s + 1 + step0))
        pin = acc.device.type == "cuda"

        def prepared():
            for idx in batches:
                ids, mask, labels = data.batch(idx, state)
                if pin:
                    ids, mask, labels = ids.pin_memory(), mask.pin_memory(), labels.pin_memory()
                yield ids, mask, labels

        steps = prefetch(prepared())
        bar = EpochProgress(opts.progress and acc.is_local_main_process, len(batches),
                            f"kgt5 epoch {self.epoch + 1}/{opts.epochs}")
        total, count, tokens, real, padded = 0.0, 0, 0, 0, 0
        try:
            for ids, mask, labels in steps:
                n_in, n_out = int((mask > 0).sum()), int((labels != -100).sum())
                ids, mask = ids.to(acc.device, non_blocking=pin), mask.to(acc.device, non_blocking=pin)
                labels = labels.to(acc.device, non_blocking=pin)
                with acc.autocast():
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                acc.backward(loss)
                if self.scheduler is not None and opts.grad_clip:
                    acc.clip_grad_norm_(model.parameters(), opts.grad_clip)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self._average_step()
                self.step += 1
                total += float(loss.detach()) * len(ids)
                count += len(ids)
                tokens += n_in + n_out
                real, padded = real + n_in, padded + ids.numel()
                bar.update(1, lambda: {"loss": f"{total / max(count, 1):.4f}",
                                       "examples_s": f"{count / max(time.time() - t0, 1e-9):,.0f}"})
        finally:
            steps.close()
            bar.close()
        dt = time.time() - t0
        self.epoch += 1
        self.train_time_s += dt
        self.train_triples += count * world
        self.train_tokens += tokens * world
        lr = self.optimizer.param_groups[0]["lr"] if self.scheduler is not None else _adafactor_lr(opts, self.step)
        return {"epoch": self.epoch, "loss": total / max(count, 1), "lr": lr,
                "time_s": round(dt, 3), "cpu_s": round(time.process_time() - c0, 3),
                "examples_per_s": round(count * world / max(dt, 1e-9), 1),
                "tokens_per_s": round(tokens * world / max(dt, 1e-9), 1),
                "padding": round(1.0 - real / max(padded, 1), 4), "mixed_precision": str(acc.mixed_precision)}

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
            writers[BEST] = lambda p: _write_judged(trainer, model, p, {"epoch": done})
        counters = trainer.state()
        state = {"optimizer": trainer.optimizer.state_dict(), "epoch": done, "step": trainer.step,
                 "best": counters["best_mrr"], "best_epoch": counters["best_epoch"],
                 "train_time_s": counters["train_time_s"], "bad_evals": counters["bad_validations"],
                 "cpu_s": counters["cpu_s"], "train_triples": counters["train_triples"],
                 "train_tokens": counters["train_tokens"], **_rng_state()}
        if trainer.average is not None:
            state.update(average=trainer.average.state_dict(), average_steps=trainer.average.steps)
        writers[STATE] = lambda p: torch.save(state, p)  # moved into place last
        commit_files(folder.path, writers)
        trainer._saved_epoch = done
    acc.wait_for_everyone()


def _write_judged(trainer: KGT5Trainer, model, path: Path, metadata: dict) -> None:
    """Write the weights the trainer judges by (its weight average, when on) as ``path``."""
    with trainer.judged_weights():
        write_weights(model, path, metadata)


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
    trainer.train_tokens = int(state.get("train_tokens", 0))
    if "average" in state:
        trainer.restore_average(state["average"], int(state["average_steps"]))
    _set_rng_state(state)
    trainer._saved_epoch = trainer.epoch  # the checkpoint on disk is this epoch's: nothing to save at the end
    acc.print(f"resuming KGT5 training from epoch {trainer.epoch}")


def _accelerator(accelerator_cls, mixed_precision: str, cuda: bool):
    """An ``Accelerator``; accelerate keeps one state per process and refuses another mixed precision in
    it, so a process that trains runs of different precisions one after the other (a notebook, a
    sweep, the tests) starts that state again. The process group (``PartialState``) stays."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state()
    return accelerator_cls(mixed_precision=mixed_precision, cpu=not cuda)


@functools.cache
def _cpu_bf16_is_fast(device: torch.device) -> tuple[bool, float, float]:
    """Measured once per process (one answer for every run of a process)."""
    from ..training.autoconfig import bf16_is_fast, measured_gflops

    f32, bf16 = measured_gflops(device), measured_gflops(device, dtype=torch.bfloat16)
    return bf16_is_fast(f32, bf16), bf16, f32


def resolve_mixed_precision(setting: str, device: torch.device, log: Iterable[dict] = ()) -> str:
    """``kgt5.mixed_precision`` for accelerate: ``auto`` is bf16 on GPUs that have it (fp16 on older
    ones) and on CPUs whose bfloat16 matrix products are measured at least
    :data:`~kgcomplete.training.autoconfig.BF16_MIN_SPEEDUP` times as fast as float32 ones (AVX512-BF16,
    AMX; the KGE runs' rule), else ``no``. A resumed run keeps the choice its ``log`` records."""
    if setting != "auto":
        return setting
    kept = [r["mixed_precision"] for r in log if "mixed_precision" in r]
    if kept:
        return kept[-1]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu":
        return "no"
    fast, bf16, f32 = _cpu_bf16_is_fast(device)
    mode = "bf16" if fast else "no"
    logger.info("KGT5 mixed precision %s: bfloat16 products at %.0f GFLOP/s, float32 at %.0f", mode, bf16, f32)
    return mode


def fit(model, inputs, targets: Optional[Tensor], encoder, opts: TrainOptions, out_dir: Path,
        resume: bool = False, evaluate_fn: Optional[Callable[[object], float]] = None) -> dict:
    """Train ``model`` (see :class:`KGT5Trainer`) into the run folder ``out_dir``, resuming from its
    checkpoint with ``resume``. ``inputs``: :class:`QueryExamples` (``targets`` None) or ready
    ``(n, L)`` input ids with ``targets (n,)`` entity ids (:class:`TensorExamples`). Returns
    ``{"epochs", "train_time_s", "examples_per_s", "tokens_per_s", "best_valid_mrr", "steps",
    "cpu_s", "stopped", "mixed_precision"}``."""
    from accelerate import Accelerator

    folder = RunFolder(out_dir)
    device = resolve_device(opts.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    mp = resolve_mixed_precision(opts.mixed_precision, device, read_log(out_dir) if resume else [])
    acc = _accelerator(Accelerator, mp, cuda)
    examples = inputs if targets is None else TensorExamples(inputs, targets, encoder)
    trainer = KGT5Trainer(model, examples, opts, acc, evaluate_fn,
                          checkpoint=lambda t, reason: _save_checkpoint(folder, t, reason),
                          log_epoch=folder.append_log if acc.is_main_process else None)
    if resume:
        _restore(folder, trainer)
    elif acc.is_main_process:
        trim_log(folder.path, 0)
    trainer.model, trainer.optimizer = acc.prepare(trainer.model, trainer.optimizer)
    trainer.fit()
    if acc.is_main_process and not (folder / BEST).exists():
        with trainer.judged_weights():
            save_weights(acc.unwrap_model(trainer.model), folder / BEST, {"epoch": trainer.epoch})
    return {"epochs": trainer.epoch, "train_time_s": trainer.train_time_s,
            "examples_per_s": trainer.train_triples / max(trainer.train_time_s, 1e-9),
            "tokens_per_s": trainer.train_tokens / max(trainer.train_time_s, 1e-9),
            "best_valid_mrr": trainer.best_mrr if trainer.best_mrr >= 0 else None, "steps": trainer.step,
            "cpu_s": trainer._cpu_total(), "stopped": trainer.stop_reason, "mixed_precision": mp}
