"""KGT5 training loop: teacher-forced cross-entropy on (input ids, target entity) examples.

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

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import Tensor

from ..runs.files import commit_files, recover_checkpoint, trim_log
from .section import TRAINING_DEFAULTS, KGT5Config
from .tokenizer import PAD_ID

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
            progress=bool(tr["progress"]),
        )


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


def save_weights(model, path: Path, metadata: Optional[dict] = None) -> None:
    """Safetensors weights (shared/tied tensors deduplicated), atomically."""
    from safetensors.torch import save_model

    _atomic(Path(path), lambda p: save_model(model, p, metadata={k: str(v) for k, v in (metadata or {}).items()}))


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


def fit(model, inputs: Tensor, targets: Tensor, encoder, opts: TrainOptions, out_dir: Path,
        resume: bool = False, evaluate_fn: Optional[Callable[[object], float]] = None) -> dict:
    """Train ``model`` on ``inputs (n, L)`` (right-padded input ids) -> ``targets (n,)`` entity ids.

    ``encoder.targets(ids)`` gives the label ids. ``evaluate_fn(model) -> valid MRR`` runs every
    ``eval_every`` epochs. Returns ``{"epochs", "train_time_s", "examples_per_s", "best_valid_mrr", ...}``.
    """
    from accelerate import Accelerator

    out_dir = Path(out_dir)
    cuda = torch.cuda.is_available()
    mp = opts.mixed_precision
    if mp == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    acc = Accelerator(mixed_precision=mp, cpu=not cuda)
    n = len(inputs)
    optimizer = make_optimizer(model, opts)
    start_epoch, step, best, spent, bad_evals, cpu_used = 0, 0, -1.0, 0.0, 0, 0.0
    log_path = out_dir / LOG
    state = None
    if resume:
        if acc.is_main_process:
            recover_checkpoint(out_dir)
        acc.wait_for_everyone()
        if (out_dir / STATE).exists() and (out_dir / CHECKPOINT).exists():
            state = torch.load(out_dir / STATE, map_location="cpu", weights_only=False)
        if acc.is_main_process:
            trim_log(out_dir, state["epoch"] if state is not None else 0)
        acc.wait_for_everyone()
    if state is not None:
        load_weights(model, out_dir / CHECKPOINT)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, best = state["epoch"], state["step"], state["best"]
        spent, bad_evals = state.get("train_time_s", 0.0), state.get("bad_evals", 0)
        cpu_used = state.get("cpu_s", 0.0)
        _set_rng_state(state)
        acc.print(f"resuming KGT5 training from epoch {start_epoch}")
    model, optimizer = acc.prepare(model, optimizer)
    scheduler = None
    if opts.optimizer.lower() == "adamw":
        step0 = step
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1 + step0) / max(1, opts.warmup_steps)))
    world, rank = acc.num_processes, acc.process_index
    per_rank = n // world
    if not resume and acc.is_main_process and log_path.exists():
        log_path.unlink()
    t_start, cpu_start = time.time(), time.process_time()
    done = start_epoch  # epochs completed
    # a resumed run that had already stopped (patience, CPU budget) stays stopped, as it would have
    stopped = bool((opts.patience and bad_evals >= opts.patience)
                   or (opts.cpu_budget_s is not None and cpu_used >= opts.cpu_budget_s))
    for epoch in range(start_epoch, opts.epochs if not stopped else start_epoch):
        model.train()
        t0, c0 = time.time(), time.process_time()
        g = torch.Generator().manual_seed(opts.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g)[rank::world][:per_rank]
        starts = range(0, per_rank, opts.batch_size)
        if opts.progress and acc.is_local_main_process:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"kgt5 epoch {epoch + 1}/{opts.epochs}", unit="batch", leave=False)
        total, count = 0.0, 0
        for s in starts:
            idx = perm[s:s + opts.batch_size]
            ids = inputs[idx]
            mask = (ids != PAD_ID)
            width = int(mask.sum(1).max())
            ids, mask = ids[:, :width].to(acc.device), mask[:, :width].long().to(acc.device)
            labels = encoder.targets(targets[idx]).to(acc.device)
            with acc.autocast():
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            acc.backward(loss)
            if scheduler is not None and opts.grad_clip:
                acc.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if hasattr(starts, "set_postfix") and step % 10 == 0:
                starts.set_postfix(loss=f"{total / max(count, 1):.4f}")
        dt = time.time() - t0
        spent += dt
        entry = {"epoch": epoch + 1, "loss": total / max(count, 1), "lr": _current_lr(opts, step),
                 "time_s": round(dt, 3), "cpu_s": round(time.process_time() - c0, 3), "examples_per_s": round(count * world / max(dt, 1e-9), 1)}
        last = (epoch + 1 >= opts.epochs
                or (opts.time_budget_s is not None and time.time() - t_start >= opts.time_budget_s)
                or (opts.cpu_budget_s is not None and cpu_used + time.process_time() - cpu_start >= opts.cpu_budget_s))
        improved = False
        if evaluate_fn is not None and opts.eval_every and ((epoch + 1) % opts.eval_every == 0 or last):
            if acc.is_main_process:
                mrr = float(evaluate_fn(acc.unwrap_model(model)))
                entry["valid_mrr"] = mrr
                improved = mrr > best
                best = max(best, mrr)
                bad_evals = 0 if improved else bad_evals + 1
        done = epoch + 1
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            writers = {CHECKPOINT: lambda p: save_weights(unwrapped, p, {"epoch": done})}
            if improved or evaluate_fn is None or not opts.eval_every:
                writers[BEST] = lambda p: save_weights(unwrapped, p, {"epoch": done})
            with open(log_path, "a") as f:  # dropped on resume unless the checkpoint commits
                f.write(json.dumps(entry) + "\n")
            state = {"optimizer": optimizer.state_dict(), "epoch": done, "step": step, "best": best,
                     "train_time_s": spent, "bad_evals": bad_evals,
                     "cpu_s": cpu_used + time.process_time() - cpu_start, **_rng_state()}
            writers[STATE] = lambda p: torch.save(state, p)  # moved into place last
            commit_files(out_dir, writers)
        acc.wait_for_everyone()
        if last or (opts.patience and bad_evals >= opts.patience):
            break
    if acc.is_main_process and not (out_dir / BEST).exists():
        save_weights(acc.unwrap_model(model), out_dir / BEST, {"epoch": done})
    return {"epochs": done, "train_time_s": spent, "examples_per_s": n * done / max(spent, 1e-9),
            "best_valid_mrr": best if best >= 0 else None, "steps": step,
            "cpu_s": cpu_used + time.process_time() - cpu_start}
