"""The KGE run kind: :func:`train_kge` trains a shallow KGE model into a run folder, :class:`KGERun`
opens one. Layout of ``RUN/``::

    config.yaml               full configuration (defaults filled in)
    entities.tsv, relations.tsv   vocabularies (id<TAB>label)
    entity_names.tsv ...      dataset metadata copies (names for predictions)
    splits/{train,valid,test}.npy  only when the dataset was given in code (no name/folder to reload)
    checkpoint.safetensors    latest model parameters
    best.safetensors          best-on-validation parameters
    trainer_state.safetensors + trainer_state.json   optimizer, RNG and counters for --resume
                              (the checkpoint files are committed together: see _save_checkpoint)
    log.jsonl                 one JSON record per epoch (loss, lr, time, triples/s, valid MRR)
    metrics.json              {"valid": {...}, "test": {...}, "train_time_s": ..., ...}
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..config import ALL_ENTITY_MODES, Config, parse_cadence, parse_duration, reciprocal_scoring_weight
from ..device import describe, resolve_device
from ..data.dataset import Dataset
from ..evaluation.evaluator import evaluate as evaluate_scorer
from ..models.base import KGEModel
from ..console import Console
from .observers import observers_for
from ..training.memory import MemoryBudgetError, check_memory, estimate_for_dataset, fmt_bytes, parse_memory, physical_memory
from ..training.optimizers import optimizer_state_from_tensors, optimizer_state_tensors
from ..training.placement import choose_placement, device_memory_available, move_to_host
from ..training.trainer import Trainer
from .files import (DamagedFileError, RunFolder, commit_files, load_into, read_json, read_tensors,
                    recover_checkpoint, save_tensors, trim_log)
from .kinds import RunKind
from .protocol import KnownTriples, RunBase, embedding_matrix, relation_labels

log = logging.getLogger(__name__)


class ConfigRun(RunBase):
    """What the KGE run kinds share (:class:`KGERun` and the sharded run): a :class:`Config`, the
    run folder and the dataset. Scoring is up to the subclass (:class:`~kgcomplete.runs.protocol.Run`)."""

    def __init__(self, path: Optional[Path], config: Config, dataset: Dataset):
        self.path = Path(path) if path else None
        self.config, self.dataset = config, dataset
        self.known = KnownTriples(dataset)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    def config_dict(self) -> dict:
        return self.config.to_dict()

    @property
    def eval_batch_elements(self) -> int:
        return self.config.evaluation.batch_elements


class KGERun(ConfigRun):
    """A trained shallow KGE model with its dataset: evaluate, predict, export.

    ``run.score_queries(anchor, r, candidates, head)`` makes it usable wherever a scorer is.
    """

    def __init__(self, path: Optional[Path], config: Config, model: KGEModel, dataset: Dataset):
        super().__init__(path, config, dataset)
        self.model = model

    def __repr__(self) -> str:
        return f"KGERun({self.path}, model={self.config.model.name}, dataset={self.dataset.name})"

    @classmethod
    def load(cls, path: str | Path, dataset: Optional[Dataset] = None, which: str = "best",
             device: str | torch.device = "auto", entity_table: str = "auto") -> "KGERun":
        """Open a run folder; ``which``: ``best`` (falls back to latest) or ``latest`` parameters;
        ``device``: where the model goes (``auto`` | ``cpu`` | ``cuda[:N]``, whatever it trained on);
        ``entity_table``: ``host`` keeps the entity table in host memory (scored in blocks on the
        device), ``auto`` does so when it would take more than half of a GPU's free memory."""
        folder = RunFolder(path)
        recover_checkpoint(folder.path, roll_back=False)  # finish a checkpoint a crash left half moved
        if not (folder / "config.yaml").exists():
            raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
        config = Config.load(folder / "config.yaml")
        dataset = dataset if dataset is not None else folder.dataset(config)
        model = make_model(config, dataset)
        model.reciprocal_scoring = chosen_reciprocal_scoring(folder, config)
        load_parameters(folder, model, which)
        target = resolve_device(device)
        table = model.entity_emb.weight
        free = device_memory_available(target)
        host = entity_table == "host" or (
            entity_table == "auto" and free is not None and table.numel() * table.element_size() > free // 2)
        if entity_table not in ("auto", "host", "device"):
            raise ValueError(f"entity_table={entity_table!r}: expected auto, device or host")
        if host and target.type != "cpu":
            rows, table.data = table.data, table.data[:0]  # the rest of the model moves, the table stays
            model.to(target)
            table.data = rows
            move_to_host(table)
            log.info("%s: entity table kept in host memory, scored in blocks on %s", path, target)
        else:
            model.to(target)
        model.eval()
        return cls(folder.path, config, model, dataset)

    # ----------------------------------------------------------- scoring API
    @property
    def device(self) -> torch.device:
        """Where the model lives (``load(..., device=)``; the run's files hold CPU tensors)."""
        return self.model.relation_emb.weight.device  # (the entity table may be in host memory)

    def score_queries(self, anchor, r, candidates=None, head: bool = False):
        dev = self.device
        anchor, r = torch.as_tensor(anchor).to(dev), torch.as_tensor(r).to(dev)
        if candidates is not None:
            candidates = torch.as_tensor(candidates).to(dev)
        return self.model.score_queries(anchor, r, candidates, head=head)

    def score_triples(self, triples) -> np.ndarray:
        """``(B, 3)`` ids -> ``(B,)`` scores."""
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(triples, np.int64), device=self.device)
            return self.model.score_triples(t).float().cpu().numpy()

    def evaluate(self, split: str = "test", filtered: bool = True, progress: bool = False) -> dict:
        """Filtered (default) or raw ranking metrics on a split."""
        return evaluate_scorer(
            self.model,
            self.dataset,
            split,
            filtered=filtered,
            chunk_elements=self.config.evaluation.batch_elements,
            per_relation=self.config.evaluation.per_relation,
            progress=progress,
            filter_index=self.filter_index("all") if filtered else None,
            device=self.device,
        )

    def entity_embeddings(self) -> np.ndarray:
        return embedding_matrix(self.model.entity_emb.weight)

    def relation_embeddings(self) -> np.ndarray:
        return embedding_matrix(self.model.relation_emb.weight)

    def export(self, out: Optional[str | Path] = None) -> dict[str, Path]:
        """Write ``entity_embeddings.npy``, ``relation_embeddings.npy`` and vocabulary TSVs."""
        out = Path(out) if out else self.path / "export"
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "entity_embeddings": out / "entity_embeddings.npy",
            "relation_embeddings": out / "relation_embeddings.npy",
            "entities": out / "entities.tsv",
            "relations": out / "relations.tsv",
        }
        np.save(files["entity_embeddings"], self.entity_embeddings())
        np.save(files["relation_embeddings"], self.relation_embeddings())
        import pandas as pd

        pd.DataFrame({"id": np.arange(self.dataset.num_entities), "label": self.dataset.entities.labels,
                      "name": self.dataset.entity_text(np.arange(self.dataset.num_entities))}).to_csv(
            files["entities"], sep="\t", index=False)
        pd.DataFrame({"id": np.arange(self.model.num_relations),
                      "label": relation_labels(self.dataset, self.model.num_relations)}).to_csv(
            files["relations"], sep="\t", index=False)
        return files


def make_model(config: Config, dataset: Dataset) -> KGEModel:
    """The model ``config`` describes, sized for ``dataset`` (:func:`kgcomplete.models.from_config`)."""
    from ..models import from_config

    return from_config(config, dataset.num_entities, dataset.num_relations)



def _save_checkpoint(folder: RunFolder, trainer: Trainer, reason: str) -> None:
    """Save parameters, best parameters, optimizer + RNG tensors and counters as one commit
    (:func:`commit_files`); ``best.safetensors`` is rewritten only when the best epoch changed."""
    writers = {"checkpoint.safetensors": partial(save_tensors, trainer.model.state_dict())}
    best_saved = (getattr(trainer, "_saved_best_epoch", None) == trainer.best_epoch
                  and (folder / "best.safetensors").exists())
    if trainer.best_state is not None and not best_saved:
        writers["best.safetensors"] = partial(save_tensors, trainer.best_state)
    tensors, skeleton = optimizer_state_tensors(trainer.optimizer)
    tensors.update({f"__rng__/{k}": v for k, v in trainer.rng_state().items()})
    state = trainer.state()
    if trainer.average is not None:
        tensors.update({f"__average__/{k}": v for k, v in trainer.average.state_dict().items()})
        state["average_steps"] = trainer.average.steps
    writers["trainer_state.safetensors"] = partial(save_tensors, tensors)
    state.update(optimizer=skeleton, reason=reason, saved_at=time.time())
    writers["trainer_state.json"] = lambda p: p.write_text(json.dumps(state, indent=2) + "\n")
    commit_files(folder.path, writers)
    trainer._saved_best_epoch = trainer.best_epoch


def load_parameters(folder: RunFolder, model: KGEModel, which: str = "best") -> Path:
    """Load ``best`` or ``latest`` parameters into ``model``; returns the file used. A missing best
    falls back to the latest; a damaged file (checksum, truncation, shapes) falls back to the other
    one with a warning that names both, and is an error when both are damaged."""
    if which not in ("best", "latest"):
        raise ValueError(f"which={which!r}: expected best | latest")
    order = ["best.safetensors", "checkpoint.safetensors"]
    order = order if which == "best" else order[::-1]
    files = [folder / name for name in order if (folder / name).exists()]
    if not files:
        raise FileNotFoundError(f"{folder.path}: no checkpoint (training never saved one)")
    errors = []
    for f in files:
        try:
            load_into(model, f)
        except DamagedFileError as e:
            errors.append(str(e))
            continue
        if errors:
            log.warning("%s; loaded %s instead", errors[0], f.name)
        return f
    raise DamagedFileError("; ".join(errors) + ("" if len(errors) > 1 else " (and no other checkpoint to fall back to)"))


def _restore(folder: RunFolder, trainer: Trainer) -> None:
    """Load the checkpoint (model, optimizer, RNG states, counters, position in an interrupted
    epoch, best parameters) into ``trainer``, every file verified against its checksum (a damaged
    one is an error naming it: resuming from other files would not continue the run exactly); the
    log is cut back to the checkpoint's epoch."""
    load_into(trainer.model, folder / "checkpoint.safetensors")
    state = read_json(folder / "trainer_state.json")
    tensors = read_tensors(folder / "trainer_state.safetensors")
    rng = {k.removeprefix("__rng__/"): tensors.pop(k) for k in list(tensors) if k.startswith("__rng__/")}
    average = {k.removeprefix("__average__/"): tensors.pop(k) for k in list(tensors) if k.startswith("__average__/")}
    if average:
        trainer.restore_average(average, int(state["average_steps"]))
    trainer.load_rng_state(rng)
    trainer.optimizer.load_state_dict(optimizer_state_from_tensors(tensors, state["optimizer"]))
    trainer.load_state(state)
    if (folder / "best.safetensors").exists():
        trainer.best_state = read_tensors(folder / "best.safetensors")
        trainer._saved_best_epoch = trainer.best_epoch
    trainer.history = trim_log(folder.path, int(state["epoch"]), rows=int((state.get("epoch_progress") or {}).get("rows", 0)))


#: the weights ``model.reciprocal_scoring: auto`` chooses from (0 first: it wins ties)
RECIPROCAL_SCORING_GRID = (0.0, 0.25, 0.5)


def fit_reciprocal_scoring(cfg: Config, trainer: Trainer, console: Console) -> Optional[dict]:
    """``model.reciprocal_scoring: auto`` once training has ended: the weight of
    :data:`RECIPROCAL_SCORING_GRID` whose ranking of the validation split, with the best parameters
    loaded, has the highest filtered MRR (0's is the best validation's; training validated at 0). The
    choice is set on the model and returned, ``{"valid_mrr": {weight: MRR}, "chosen": weight}``, for
    ``metrics.json``, where :meth:`KGERun.load` finds it; None where there is nothing to choose (a set
    weight, no second reading, no validation)."""
    model = trainer.model
    if (reciprocal_scoring_weight(cfg.model.reciprocal_scoring) is not None or not model.reads_both_ways
            or trainer.best_state is None or trainer.best_mrr < 0):
        return None
    mrr = {RECIPROCAL_SCORING_GRID[0]: trainer.best_mrr}
    for weight in RECIPROCAL_SCORING_GRID[1:]:
        model.reciprocal_scoring = weight
        mrr[weight] = trainer.validate()
    model.reciprocal_scoring = chosen = max(mrr, key=mrr.get)
    table = ", ".join(f"{w:g}: {m:.4f}" for w, m in mrr.items())
    log.info("model.reciprocal_scoring=%g chosen on the validation split (MRR %s)", chosen, table)
    console.say(f"chosen on the validation split: model.reciprocal_scoring={chosen:g} (validation MRR by weight: {table})")
    return {"valid_mrr": {f"{w:g}": m for w, m in mrr.items()}, "chosen": chosen}


def chosen_reciprocal_scoring(folder: RunFolder, cfg: Config) -> float:
    """The weight a run ranks with: ``model.reciprocal_scoring`` when set, else (``auto``) the one its
    training chose (``metrics.json``), else 0 (not chosen yet)."""
    weight = reciprocal_scoring_weight(cfg.model.reciprocal_scoring)
    if weight is not None:
        return weight
    return folder.chosen_weight("reciprocal_scoring", "the second reading of each triple")


def _bf16_gflops(cfg: Config, device: torch.device) -> Optional[float]:
    """bfloat16 matrix-product speed on ``device`` when bf16 autocast is open to the fitted defaults
    (the user left ``training.autocast`` at none and the model scores by dot products, whose products
    autocast runs in bf16; distance kernels stay float32), else None."""
    from ..models import resolve_model
    from ..training.autoconfig import measured_gflops, user_set

    model_cls, _ = resolve_model(cfg.model.name)
    if (str(cfg.training.autocast).lower() != "none" or user_set(cfg, "training.autocast")
            or getattr(model_cls, "similarity", None) != "dot"):
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None
    try:
        return measured_gflops(device, dtype=torch.bfloat16)
    except RuntimeError:  # no bf16 products on this device
        return None


def fit_to_graph(cfg: Config, ds: Dataset) -> list[str]:
    """The defaults the user did not set, fitted to the graph and the device
    (:func:`~kgcomplete.training.autoconfig.fit_defaults`); the changes, one line each."""
    from ..training.autoconfig import SLOW_GFLOPS, fit_defaults, measured_gflops
    from ..training.memory import entity_width

    import copy

    if cfg.training.mode.lower() not in ALL_ENTITY_MODES:
        return []
    args = (ds.num_entities, len(ds.train))
    kw = dict(time_budget_s=parse_duration(cfg.training.time_budget, "training.time_budget"),
              entity_width=entity_width(cfg))
    if not fit_defaults(copy.deepcopy(cfg), *args, gflops=SLOW_GFLOPS, **kw):
        return []  # the defaults fit even a slow device: no need to measure this one
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    device = resolve_device(cfg.training.device)
    changes = fit_defaults(cfg, *args, gflops=measured_gflops(device), bf16_gflops=_bf16_gflops(cfg, device), **kw)
    for line in changes:
        log.info("defaults fitted to this graph: %s", line)
    return changes


def _banner(console: Console, folder: RunFolder, start: str, ds: Dataset, cfg: Config, kge, device,
            placement, estimate) -> None:
    """The start of a run on stderr: folder, data, model, schedule, device, memory (the table of
    parts only when the estimate comes near the machine's RAM or ``max_memory``)."""
    tc = cfg.training
    params = sum(p.numel() for p in kge.parameters())
    splits = ", ".join(f"{k} {len(v):,}" for k, v in ds.splits.items())
    console.say(f"run folder: {folder.path} ({start})")
    console.say(f"data: {ds.name}: {ds.num_entities:,} entities, {ds.num_relations:,} relations; {splits}")
    schedule = (f"up to {tc.epochs} epochs, validation every {parse_cadence(tc.eval_every)}"
                + (f", early stop after {tc.patience} without gain" if tc.patience else "")
                if not parse_cadence(tc.eval_every).never and len(ds.valid) else f"{tc.epochs} epochs, no validation")
    console.say(f"model: {cfg.model.name} dim {cfg.model.dim} ({params:,} parameters); {tc.mode}, {tc.optimizer} "
                f"lr {tc.lr:g}, batch {tc.batch_size:,}; {schedule}")
    plain = device.type == "cpu" and not placement.host_table and not tc.max_device_memory
    console.say(f"device: {describe(device)}" + ("" if plain else f"; {placement.reason}"))
    limit, ram = parse_memory(tc.max_memory), physical_memory()
    near = (limit and estimate.total > 0.8 * limit) or (ram and estimate.total > 0.5 * ram)
    console.say(estimate.table(limit) if near else
                f"memory: about {fmt_bytes(estimate.total)} (the parts: kgc train --dry-run)")


def train_kge(ds: Dataset, folder: RunFolder, cfg: Config, resume: bool = False, evaluate_test: bool = True,
              on_epoch: Optional[Callable[[dict], Optional[str]]] = None) -> "KGERun":
    """Train a shallow KGE model of ``cfg`` on ``ds`` into ``folder`` (the KGE run kind; see
    :func:`kgcomplete.train` for the public entry point) and return its :class:`KGERun`.
    ``on_epoch(record)`` sees each epoch's log record; a string it returns stops training (the reason)."""
    out = folder.path
    if folder.path.is_dir():
        recover_checkpoint(folder.path)
    fitted = fit_to_graph(cfg, ds) if not resume and cfg.sources is not None else []
    estimate = estimate_for_dataset(cfg, ds)
    log.info("%s", estimate.table())
    try:
        check_memory(estimate, cfg.training.max_memory)  # before anything is written or allocated
    except MemoryBudgetError:  # the parts, above the one-line error
        print(estimate.table(parse_memory(cfg.training.max_memory)), file=sys.stderr, flush=True)
        raise
    observers = observers_for(cfg)  # an unknown tracker or a missing library: refused before writing
    if not resume:
        if (folder / "checkpoint.safetensors").exists():
            raise FileExistsError(f"{out} already holds a trained run; use resume or another --out")
        folder.create(cfg, ds)
        trim_log(folder.path, 0)  # records of an earlier attempt that never saved a checkpoint
    console = Console(cfg.training.progress, folder.path)
    device = resolve_device(cfg.training.device)
    log.info("training on %s", describe(device))
    placement = choose_placement(cfg, estimate, device)
    if placement.tight:
        log.warning("%s", placement.reason)
    log.info("%s", placement.reason)
    torch.manual_seed(cfg.training.seed)
    kge = make_model(cfg, ds).to(device)
    if placement.host_table:
        move_to_host(kge.entity_emb.weight)
    trainer = Trainer(
        kge, ds, cfg.training, cfg.evaluation.batch_elements,
        checkpoint=lambda t, reason: _save_checkpoint(folder, t, reason),
        log_epoch=lambda record: (folder.append_log(record), observers.epoch(record)),
        host_table=placement.host_table,
    )
    trainer.console = console
    start = "new"
    if resume and (folder / "checkpoint.safetensors").exists():
        _restore(folder, trainer)  # every file checked before config.yaml changes
        rows = (trainer.epoch_progress or {}).get("rows", 0)
        start = f"resumed at epoch {trainer.epoch}" + (f" + {rows:,} rows" if rows else "")
        log.info("%s %s", start, out)
    elif resume:
        trim_log(folder.path, 0)  # killed before the first checkpoint: start over
        start = "resumed: no checkpoint yet, starting over"
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)  # (fit sets it too) so that the banner says it
    _banner(console, folder, start, ds, cfg, kge, device, placement, estimate)
    for line in fitted:
        console.say(f"fitted to this graph: {line} (set the key to keep your value)")
    if resume:
        cfg.save(folder / "config.yaml")  # e.g. raised epochs
        if "reciprocal_scoring" in folder.metrics():  # chosen for the weights training goes on from
            folder.update_metrics(reciprocal_scoring=None)
    try:
        observers.start(cfg, folder.path)
        trainer.on_epoch = on_epoch
        trainer.fit()
        trainer.load_best()
        scoring = fit_reciprocal_scoring(cfg, trainer, console)
        run = KGERun(folder.path, cfg, kge, ds)
        info = {
            "dataset": ds.summary(),
            "model": cfg.model.name,
            "epochs": trainer.epoch,
            "best_epoch": trainer.best_epoch,
            "stopped": trainer.stop_reason,
            "train_time_s": trainer.train_time_s,
            "train_triples_per_s": trainer.train_triples / max(trainer.train_time_s, 1e-9),
            "num_parameters": int(sum(p.numel() for p in kge.parameters())),
            "memory_estimate": estimate.as_dict(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "device": str(device),
            "entity_table": placement.entity_table,
            "auto_defaults": fitted,
        }
        if scoring is not None:
            info["reciprocal_scoring"] = scoring
        if evaluate_test:
            if len(ds.valid):
                info["valid"] = run.evaluate("valid")
            if len(ds.test):
                t0 = time.perf_counter()
                info["test"] = run.evaluate("test")
                info["test_eval_time_s"] = time.perf_counter() - t0
        folder.update_metrics(**info)
        observers.end(info, folder.path)
        return run
    finally:
        observers.close()


KGE_RUN = RunKind("kge", trains=lambda cfg: True, train=train_kge, opens=lambda path: True,
                  load=lambda path, **kw: KGERun.load(path, **kw))
