"""Run folders: everything a training run writes, and the objects that reopen them.

Layout of ``RUN/``::

    config.yaml               full configuration (defaults filled in)
    entities.tsv, relations.tsv   vocabularies (id<TAB>label)
    entity_names.tsv ...      dataset metadata copies (names for predictions)
    splits/{train,valid,test}.npy  only when the dataset was given in code (no name/folder to reload)
    checkpoint.safetensors    latest model parameters (written atomically)
    best.safetensors          best-on-validation parameters
    trainer_state.safetensors + trainer_state.json   optimizer, RNG and counters for --resume
                              (the four checkpoint files are committed together: see _save_checkpoint)
    log.jsonl                 one JSON record per epoch (loss, lr, time, triples/s, valid MRR)
    metrics.json              {"valid": {...}, "test": {...}, "train_time_s": ..., ...}

The KGE run kind lives here (:func:`train_kge`, :class:`KGERun`); other kinds (KGT5, sharded BESS
runs) register a :class:`RunKind`, and :mod:`kgcomplete.api` (``train`` / ``load_run``) dispatches to
them. Every run kind implements :class:`~kgcomplete.run_protocol.Run` (the run interface; shared
parts such as :class:`KnownTriples` and :func:`top_k_predictions` live there and are re-exported
here). This module names no feature package.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import Config
from .data.dataset import Dataset
from .data.registry import load_dataset
from .data.vocabulary import Vocabulary
from .evaluation.evaluator import evaluate as evaluate_scorer
from .evaluation.filter_index import FilterIndex
from .models.base import KGEModel
from .run_protocol import KnownTriples, RunBase, embedding_matrix, relation_labels
from .training.memory import check_memory, estimate_for_dataset, parse_memory
from .training.optimizers import optimizer_state_from_tensors, optimizer_state_tensors
from .training.trainer import Trainer

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ file helpers
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace`` (never a torn file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: Optional[dict] = None) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of ``log.jsonl`` (a line torn by a kill while it was appended is skipped)."""
    return trim_log(run_dir, None, write=False)


def trim_log(run_dir: str | Path, epochs: Optional[int], write: bool = True) -> list[dict]:
    """The records of the first ``epochs`` epochs of ``log.jsonl`` (None: all), skipping a line torn
    by a kill. With ``write``, rewrite the file atomically when that drops anything: records of epochs
    logged after the checkpoint a resume starts from, which are trained (and logged) again."""
    p = Path(run_dir) / "log.jsonl"
    if not p.exists():
        return []
    text = p.read_text()
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # empty, or torn by a kill while it was appended
        if isinstance(rec, dict) and (epochs is None or int(rec.get("epoch", 0)) <= epochs):
            records.append(rec)
    kept = "".join(json.dumps(r) + "\n" for r in records)
    if write and kept != text:
        log.info("%s: kept the %d records up to epoch %s (of %d lines)", p, len(records), epochs, len(text.splitlines()))
        atomic_write_bytes(p, kept.encode())
    return records


# ----------------------------------------------------------------- run folder
class RunFolder:
    """Paths and writers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def create(self, config: Config, dataset: Dataset) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        config.save(self / "config.yaml")
        dataset.entities.save(self / "entities.tsv")
        dataset.relations.save(self / "relations.tsv")
        for fname, frame in dataset.metadata_frames().items():
            frame.to_csv(self / fname, sep="\t", header=False, index=False)
        if config.data.source is None:
            (self / "splits").mkdir(exist_ok=True)
            for k, v in dataset.splits.items():
                np.save(self / "splits" / f"{k}.npy", v)

    def append_log(self, record: dict) -> None:
        with open(self / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> dict:
        p = self / "metrics.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def update_metrics(self, **parts) -> dict:
        m = self.metrics()
        m.update(parts)
        atomic_write_json(self / "metrics.json", m)
        return m

    def dataset(self, config: Config) -> Dataset:
        """Reload the run's dataset (by name/folder, or from the saved splits) and check vocabularies."""
        if config.data.source is None:
            splits = {p.stem: np.load(p) for p in sorted((self / "splits").glob("*.npy"))}
            ds = Dataset(
                name=self.path.name,
                entities=Vocabulary.load(self / "entities.tsv"),
                relations=Vocabulary.load(self / "relations.tsv"),
                splits=splits,
            )
            ds.attach_metadata_folder(self.path)
            return ds
        ds = load_dataset(config.data.source, unknown=config.data.unknown)
        ents = Vocabulary.load(self / "entities.tsv")
        if len(ents) != ds.num_entities or not np.array_equal(ents.labels, ds.entities.labels):
            raise ValueError(
                f"{self.path}: dataset {config.data.source!r} no longer matches the run's entities.tsv "
                f"({ds.num_entities} vs {len(ents)} entities)"
            )
        return ds


# ----------------------------------------------------------------- KGE runs
class ConfigRun(RunBase):
    """What the KGE run kinds share (:class:`KGERun` and the sharded run): a :class:`Config`, the
    run folder and the dataset. Scoring is up to the subclass (:class:`~kgcomplete.run_protocol.Run`)."""

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

    def filter_index(self, which: str = "all") -> FilterIndex:
        """Known triples of ``all`` splits or of one split (cached)."""
        return self.known.index(which)


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
    def load(cls, path: str | Path, dataset: Optional[Dataset] = None, which: str = "best", device="cpu") -> "KGERun":
        """Open a run folder; ``which``: ``best`` (falls back to latest) or ``latest`` parameters."""
        folder = RunFolder(path)
        if not (folder / "config.yaml").exists():
            raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
        config = Config.load(folder / "config.yaml")
        dataset = dataset if dataset is not None else folder.dataset(config)
        model = make_model(config, dataset)
        ckpt = folder / "best.safetensors"
        if which != "best" or not ckpt.exists():
            ckpt = folder / "checkpoint.safetensors"
        if not ckpt.exists():
            raise FileNotFoundError(f"{path}: no checkpoint (training never saved one)")
        model.load_state_dict(load_file(ckpt))
        model.to(device).eval()
        return cls(folder.path, config, model, dataset)

    # ----------------------------------------------------------- scoring API
    def score_queries(self, anchor, r, candidates=None, head: bool = False):
        return self.model.score_queries(anchor, r, candidates, head=head)

    def score_triples(self, triples) -> np.ndarray:
        """``(B, 3)`` ids -> ``(B,)`` scores."""
        with torch.no_grad():
            return self.model.score_triples(torch.as_tensor(np.asarray(triples, np.int64))).numpy()

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
    from .models import from_config

    return from_config(config, dataset.num_entities, dataset.num_relations)


# ------------------------------------------------------------------- training
_STAGING, _COMMITTED = ".checkpoint.staging", ".checkpoint.committed"
_ORDER = "ORDER"  # in a staged checkpoint: its file names, in the order they are moved into place


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (best effort: not every platform opens folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


def commit_files(folder: str | Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Write the files of one checkpoint into ``folder`` as one commit: ``writers`` maps a file name
    to ``write(path)``. The files are written to ``.checkpoint.staging/``, which is renamed to
    ``.checkpoint.committed/`` (the commit: one atomic rename) and then moved into place in the
    writers' order (put the counters last), so a kill at any point leaves either the previous
    checkpoint or the new one (:func:`recover_checkpoint` finishes or undoes it). Single writer:
    every file of the checkpoint comes from this process."""
    folder = Path(folder)
    recover_checkpoint(folder)
    stage = folder / _STAGING
    stage.mkdir()
    for name, write in writers.items():
        write(stage / name)
        fsync_path(stage / name)
    (stage / _ORDER).write_text("\n".join(writers) + "\n")
    fsync_path(stage / _ORDER)
    fsync_path(stage)
    os.replace(stage, folder / _COMMITTED)  # the commit
    fsync_path(folder)
    recover_checkpoint(folder)


def recover_checkpoint(folder: str | Path, roll_back: bool = True) -> None:
    """Finish a committed checkpoint whose files were not all moved into place (a run killed after
    the commit) and, with ``roll_back``, drop a staged one that was never committed. Readers pass
    ``roll_back=False``: finishing is safe next to a running writer (whoever moves a file first
    wins), dropping its staging folder is not."""
    folder = Path(folder)
    committed = folder / _COMMITTED
    if committed.is_dir():
        try:
            order = (committed / _ORDER).read_text().split()
        except FileNotFoundError:  # moved and removed by another process meanwhile
            order = []
        for name in order:
            try:
                os.replace(committed / name, folder / name)
            except FileNotFoundError:  # already moved (by another process)
                pass
        shutil.rmtree(committed, ignore_errors=True)
        fsync_path(folder)
    if roll_back and (folder / _STAGING).exists():
        shutil.rmtree(folder / _STAGING)


def _save_checkpoint(folder: RunFolder, trainer: Trainer, reason: str) -> None:
    """Save parameters, best parameters, optimizer + RNG tensors and counters as one commit
    (:func:`commit_files`); ``best.safetensors`` is rewritten only when the best epoch changed."""
    writers = {"checkpoint.safetensors": partial(atomic_save_safetensors, trainer.model.state_dict())}
    best_saved = (getattr(trainer, "_saved_best_epoch", None) == trainer.best_epoch
                  and (folder / "best.safetensors").exists())
    if trainer.best_state is not None and not best_saved:
        writers["best.safetensors"] = partial(atomic_save_safetensors, trainer.best_state)
    tensors, skeleton = optimizer_state_tensors(trainer.optimizer)
    tensors.update({f"__rng__/{k}": v for k, v in trainer.rng_state().items()})
    writers["trainer_state.safetensors"] = partial(atomic_save_safetensors, tensors)
    state = trainer.state()
    state.update(optimizer=skeleton, reason=reason, saved_at=time.time())
    writers["trainer_state.json"] = lambda p: p.write_text(json.dumps(state, indent=2) + "\n")
    commit_files(folder.path, writers)
    trainer._saved_best_epoch = trainer.best_epoch


def _restore(folder: RunFolder, trainer: Trainer) -> None:
    """Load the checkpoint (model, optimizer, RNG states, counters, position in an interrupted
    epoch, best parameters) into ``trainer``; the log is cut back to the checkpoint's epoch."""
    trainer.model.load_state_dict(load_file(folder / "checkpoint.safetensors"))
    state = json.loads((folder / "trainer_state.json").read_text())
    tensors = load_file(folder / "trainer_state.safetensors")
    rng = {k.removeprefix("__rng__/"): tensors.pop(k) for k in list(tensors) if k.startswith("__rng__/")}
    trainer.load_rng_state(rng)
    trainer.optimizer.load_state_dict(optimizer_state_from_tensors(tensors, state["optimizer"]))
    trainer.load_state(state)
    if (folder / "best.safetensors").exists():
        trainer.best_state = load_file(folder / "best.safetensors")
        trainer._saved_best_epoch = trainer.best_epoch
    trainer.history = trim_log(folder.path, int(state["epoch"]))


def train_kge(ds: Dataset, folder: RunFolder, cfg: Config, resume: bool = False, evaluate_test: bool = True) -> "KGERun":
    """Train a shallow KGE model of ``cfg`` on ``ds`` into ``folder`` (the KGE run kind; see
    :func:`kgcomplete.train` for the public entry point) and return its :class:`KGERun`."""
    out = folder.path
    if folder.path.is_dir():
        recover_checkpoint(folder.path)
    if not resume:
        if (folder / "checkpoint.safetensors").exists():
            raise FileExistsError(f"{out} already holds a trained run; use resume or another --out")
        folder.create(cfg, ds)
        trim_log(folder.path, 0)  # records of an earlier attempt that never saved a checkpoint
    else:
        cfg.save(folder / "config.yaml")
    estimate = estimate_for_dataset(cfg, ds)
    if cfg.training.progress or cfg.training.max_memory:
        print(estimate.table(parse_memory(cfg.training.max_memory)), file=sys.stderr, flush=True)
    log.info("%s", estimate.table())
    check_memory(estimate, cfg.training.max_memory)  # before any table is allocated
    torch.manual_seed(cfg.training.seed)
    kge = make_model(cfg, ds)
    trainer = Trainer(
        kge, ds, cfg.training, cfg.evaluation.batch_elements,
        checkpoint=lambda t, reason: _save_checkpoint(folder, t, reason),
        log_epoch=folder.append_log,
    )
    if resume and (folder / "checkpoint.safetensors").exists():
        _restore(folder, trainer)
        rows = (trainer.epoch_progress or {}).get("rows", 0)
        log.info("resumed %s at epoch %d%s", out, trainer.epoch, f" + {rows} rows" if rows else "")
    elif resume:
        trim_log(folder.path, 0)  # killed before the first checkpoint: start over
    trainer.fit()
    trainer.load_best()
    run = KGERun(folder.path, cfg, kge, ds)
    info = {
        "dataset": ds.summary(),
        "model": cfg.model.name,
        "epochs": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "train_time_s": trainer.train_time_s,
        "train_triples_per_s": trainer.train_triples / max(trainer.train_time_s, 1e-9),
        "num_parameters": int(sum(p.numel() for p in kge.parameters())),
        "memory_estimate": estimate.as_dict(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if evaluate_test:
        if len(ds.valid):
            info["valid"] = run.evaluate("valid")
        if len(ds.test):
            t0 = time.perf_counter()
            info["test"] = run.evaluate("test")
            info["test_eval_time_s"] = time.perf_counter() - t0
    folder.update_metrics(**info)
    return run


# ------------------------------------------------------------------ run kinds
@dataclass(frozen=True)
class RunKind:
    """One kind of run: how to tell that it trains a config or owns a folder, how to train and open it.

    ``train(dataset, folder: RunFolder, cfg: Config, resume: bool, evaluate_test: bool) -> run`` and
    ``load(path, **kwargs) -> run``. Feature packages register theirs (:func:`register_run_kind`);
    :mod:`kgcomplete.api` asks them in order, with the KGE kind (:data:`KGE_RUN`) last.
    """

    name: str
    trains: Callable[[Config], bool]
    train: Callable[..., Any]
    opens: Callable[[Path], bool]
    load: Callable[..., Any]


RUN_KINDS: list[RunKind] = []


def register_run_kind(kind: RunKind) -> None:
    """Add (or replace, by name) a run kind that :func:`kgcomplete.train` / ``load_run`` consider."""
    RUN_KINDS[:] = [k for k in RUN_KINDS if k.name != kind.name] + [kind]


KGE_RUN = RunKind("kge", trains=lambda cfg: True, train=train_kge, opens=lambda path: True,
                  load=lambda path, **kw: KGERun.load(path, **kw))
