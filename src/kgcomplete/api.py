"""The two entry points, :func:`train` and :func:`load_run`: configuration and dispatch to a run kind.

Run kinds (:class:`~kgcomplete.runs.RunKind`) come from the feature folders' ``kind.py`` (found and
imported on first use by :func:`run_kinds`, so this module names no feature
and the arrows point one way: features -> core), then the KGE kind of :mod:`kgcomplete.runs.kge`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
import os
import time
from pathlib import Path
from typing import Optional

from .config import Config, apply_override, build_config, validate
from .data.dataset import Dataset
from .device import describe, resolve_device
from .data.registry import load_configured
from .features import import_feature_modules
from .runs.files import RunFolder
from .runs.kge import KGE_RUN
from .runs.kinds import RUN_KINDS, RunKind


def run_kinds() -> list[RunKind]:
    """The registered run kinds in the order they are asked: every feature's ``kind.py`` is
    imported first (:func:`kgcomplete.features.import_feature_modules`), the KGE kind comes last."""
    import_feature_modules("kind")
    return [*RUN_KINDS, KGE_RUN]


def train(
    dataset: Dataset | str | None = None,
    model: Optional[str] = None,
    out: Optional[str | Path] = None,
    config: Optional[Config | str | Path] = None,
    resume: bool = False,
    evaluate_test: bool = True,
    on_epoch=None,
    dry_run: bool = False,
    **overrides,
):
    """Train a model and return its run (:class:`~kgcomplete.runs.KGERun`, a sharded run with
    ``distributed.workers > 1``, or a KGT5 run for ``model="kgt5"``).

    Args:
        dataset: a :class:`Dataset`, a registered name or a folder (default: the config's, i.e. umls).
        model: model name (default complex); its per-model defaults apply (``kgt5``: KGT5's
            training defaults, see :mod:`kgcomplete.seq2seq.section`).
        out: run folder; None -> ``runs/<dataset>-<model>-<time>``.
        config: a :class:`Config` (complete: no per-model defaults are added; build one with
            :func:`~kgcomplete.config.build_config`), a YAML file, or ``"published"``: the shipped
            published configuration for the dataset (and model), which cites its source. Unknown sections and keys
            (there, in ``overrides`` or in ``--set``) raise :class:`~kgcomplete.config.ConfigError`.
        resume: continue the run in ``out`` from its last checkpoint (its config.yaml wins;
            ``training.epochs`` may be raised through overrides).
        on_epoch: ``on_epoch(record) -> str | None`` sees each epoch's log record (loss, and
            ``valid_mrr`` after a validation); a string it returns stops training after that epoch
            with that reason (how a tuner prunes a trial). KGE runs only.
        dry_run: resolve the configuration, load the dataset and check ``out``, then return a
            :class:`TrainingPlan` (its ``describe()``: sizes, memory estimate, placement) without
            writing anything.
        overrides: dotted keys with ``__`` or ``.``, e.g. ``epochs=50``, ``dim=64`` (shortcuts) or
            ``**{"training.lr": 0.05}``.

    Example::

        run = kgcomplete.train("umls", model="complex", out="runs/umls")
        run.evaluate("test")["mrr"]
    """
    cfg = resolve_config(model, out, config, resume, dataset=dataset, **overrides)
    if isinstance(dataset, Dataset):
        ds = dataset
        if not resume:
            cfg.data.source = None
    else:
        if dataset is not None and not resume:
            cfg.data.source = str(dataset)
        ds = RunFolder(out).dataset(cfg) if resume else load_configured(cfg.data)
    if out is None:
        stem = Path("runs") / f"{Path(ds.name).name}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out, n = stem, 1
        while out.exists():
            n += 1
            out = stem.with_name(f"{stem.name}-{n}")
    kind = next(k for k in run_kinds() if k.trains(cfg))
    hooks = {}
    if on_epoch is not None:
        if kind is not KGE_RUN:
            raise ValueError(f"on_epoch is for single-process KGE runs; this config trains a {kind.name} run")
        hooks["on_epoch"] = on_epoch
    folder = RunFolder(out)
    if not resume:
        folder.check_target()
    if dry_run:
        return TrainingPlan(cfg, ds, Path(out), kind.name, resume)
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun/accelerate rank > 0: rank 0 holds the lock
        return kind.train(ds, folder, cfg, resume=resume, evaluate_test=evaluate_test, **hooks)
    with folder.lock():
        return kind.train(ds, folder, cfg, resume=resume, evaluate_test=evaluate_test, **hooks)


def resolve_config(model: Optional[str] = None, out: Optional[str | Path] = None,
                   config: Optional[Config | str | Path] = None, resume: bool = False,
                   dataset: Dataset | str | None = None, **overrides) -> Config:
    """The configuration :func:`train` would use (checked: values, device), without loading data or
    writing anything; ``cfg.sources`` says where non-default values came from. ``config="published"``
    is the shipped file for ``dataset`` (its name) and ``model``."""
    if isinstance(config, str) and config == "published":
        from .configs import published_config

        name = dataset.name if isinstance(dataset, Dataset) else (dataset or Config().data.source)
        config = published_config(name, model)
    ov = _expand_overrides(overrides)
    if resume:
        if out is None:
            raise ValueError("resume needs the run folder (out=...)")
        folder = RunFolder(out)
        if not (folder / "config.yaml").exists():
            raise FileNotFoundError(f"{out}: nothing to resume (no config.yaml)")
        cfg = Config.load(folder / "config.yaml")
        cfg.sources = {k: "flag" for k in ov}
        for k, v in ov.items():
            apply_override(cfg, k, v)
    elif isinstance(config, Config):
        cfg = config
        if model is not None:
            ov["model.name"] = model
        for k, v in ov.items():
            apply_override(cfg, k, v)
    else:
        if model is not None:
            ov["model.name"] = model
        cfg = build_config(model, config, ov)
    validate(cfg)
    resolve_device(cfg.training.device)  # a device that is not here: refused before anything is written
    return cfg


@dataclass
class TrainingPlan:
    """What :func:`train` with ``dry_run=True`` resolved: nothing was written."""

    config: Config
    dataset: Dataset
    out: Path
    kind: str  #: the run kind that would train it (kge, bess, kgt5, ...)
    resume: bool = False

    def describe(self) -> str:
        """Dataset, model, device and, for KGE runs, the memory estimate and the entity table's place."""
        cfg, ds = self.config, self.dataset
        device = resolve_device(cfg.training.device)
        lines = [f"{'resume' if self.resume else 'run folder'}: {self.out}",
                 f"data: {ds.name}: {ds.num_entities:,} entities, {ds.num_relations:,} relations, "
                 + ", ".join(f"{k} {len(v):,}" for k, v in ds.splits.items()),
                 f"model: {cfg.model.name} ({self.kind} run), device {describe(device)}"]
        if self.kind == KGE_RUN.name:
            import copy

            from .runs.kge import fit_to_graph
            from .training.memory import estimate_for_dataset
            from .training.placement import choose_placement

            if not self.resume and cfg.sources is not None:
                cfg = copy.deepcopy(cfg)
                lines += [f"fitted to this graph: {line}" for line in fit_to_graph(cfg, ds)]
            est = estimate_for_dataset(cfg, ds)
            lines += [est.table(), choose_placement(cfg, est, device).reason]
        return "\n".join(lines)


def load_run(path: str | Path, **kwargs):
    """Open any run folder (KGE, sharded KGE, KGT5, or a registered kind); ``device="auto"`` (a GPU
    when there is one) | ``"cpu"`` | ``"cuda[:N]"`` places the model, whatever device it trained on."""
    path = Path(path)
    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    kind = next(k for k in run_kinds() if k.opens(path))
    return kind.load(path, **kwargs)


_SHORTCUTS = {
    "dim": "model.dim", "reciprocal": "model.reciprocal", "init_scale": "model.init_scale", "p_norm": "model.p_norm",
    "epochs": "training.epochs", "batch_size": "training.batch_size", "lr": "training.lr",
    "optimizer": "training.optimizer", "loss": "training.loss", "mode": "training.mode",
    "num_negatives": "training.num_negatives", "corrupt": "training.corrupt", "seed": "training.seed",
    "margin": "training.margin", "regularizer": "training.regularizer", "reg_weight": "training.reg_weight",
    "eval_every": "training.eval_every", "patience": "training.patience", "progress": "training.progress",
    "negative_sampler": "training.negative_sampler", "lr_schedule": "training.lr_schedule",
    "adversarial_temperature": "training.adversarial_temperature", "label_smoothing": "training.label_smoothing",
    "threads": "training.threads", "unknown": "data.unknown", "max_memory": "training.max_memory",
    "storage_dtype": "model.storage_dtype", "hogwild": "training.hogwild", "device": "training.device",
}


def _expand_overrides(overrides: dict) -> dict:
    out = {}
    for k, v in overrides.items():
        if v is None:
            continue
        key = _SHORTCUTS.get(k, k.replace("__", "."))
        if "." not in key:
            close = difflib.get_close_matches(k, list(_SHORTCUTS), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}? Or" if close else "use"
            raise TypeError(f"unknown option {k!r}; {hint} a dotted config key like 'training.{k}'")
        out[key] = v
    return out

