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
them. This module names no feature package.
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
from .models import build_model
from .models.base import KGEModel
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
class KGERun:
    """A trained shallow KGE model with its dataset: evaluate, predict, export.

    ``run.score_queries(anchor, r, candidates, head)`` makes it usable wherever a scorer is.
    """

    def __init__(self, path: Optional[Path], config: Config, model: KGEModel, dataset: Dataset):
        self.path = Path(path) if path else None
        self.config, self.model, self.dataset = config, model, dataset
        self.known = KnownTriples(dataset)

    def __repr__(self) -> str:
        return f"KGERun({self.path}, model={self.config.model.name}, dataset={self.dataset.name})"

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

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

    def filter_index(self, which: str = "all") -> FilterIndex:
        """Known triples of ``all`` splits or of one split (cached)."""
        return self.known.index(which)

    def resolve_entity(self, text: str) -> int:
        """Entity id from its label or (unique) name; KeyError with close matches otherwise."""
        return resolve(self.dataset.entities, self.dataset.entity_names, text, "entity")

    def resolve_relation(self, text: str) -> int:
        return resolve(self.dataset.relations, self.dataset.relation_names, text, "relation")

    def predict(
        self, head: Optional[str] = None, relation: Optional[str] = None, tail: Optional[str] = None, k: int = 10,
        exclude_known: bool = False,
    ) -> list[dict]:
        """Top-k tails of ``(head, relation, ?)`` or heads of ``(?, relation, tail)``.

        Returns ``[{"rank", "id", "entity", "name", "score", "known"}]``; ``known`` names the split
        that already holds the triple (``train``/``valid``/``test``) or is None.
        """
        if relation is None or (head is None) == (tail is None):
            raise ValueError("give a relation and exactly one of head or tail")
        r = self.resolve_relation(relation)
        is_head_query = head is None
        anchor = self.resolve_entity(tail if is_head_query else head)
        return self.predict_ids(np.array([anchor]), np.array([r]), is_head_query, k, exclude_known)[0]

    def predict_ids(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int = 10, exclude_known: bool = False) -> list[list[dict]]:
        """Batched top-k for ``(B,)`` anchors/relations (used by ``predict`` and the server)."""
        return top_k_predictions(self, self.dataset, self.known, anchor, r, head, k, exclude_known)

    def known_split(self, triples: np.ndarray) -> list[Optional[str]]:
        """For ``(B, 3)`` triples: the first split that contains each, or None."""
        return self.known.split_of(triples)

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
        np.save(files["entity_embeddings"], self.model.entity_emb.weight.detach().float().cpu().numpy())
        np.save(files["relation_embeddings"], self.model.relation_emb.weight.detach().cpu().numpy())
        import pandas as pd

        pd.DataFrame({"id": np.arange(self.dataset.num_entities), "label": self.dataset.entities.labels,
                      "name": self.dataset.entity_text(np.arange(self.dataset.num_entities))}).to_csv(
            files["entities"], sep="\t", index=False)
        pd.DataFrame({"id": np.arange(self.model.num_relations),
                      "label": _relation_labels(self.dataset, self.model.num_relations)}).to_csv(
            files["relations"], sep="\t", index=False)
        return files


class KnownTriples:
    """Lazily built :class:`FilterIndex` per split (``"all"`` = every split) of a dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._indexes: dict[str, FilterIndex] = {}

    def index(self, which: str = "all") -> FilterIndex:
        if which not in self._indexes:
            triples = self.dataset.all_triples() if which == "all" else self.dataset.splits[which]
            self._indexes[which] = FilterIndex(triples, self.dataset.num_relations)
        return self._indexes[which]

    def split_of(self, triples: np.ndarray) -> list[Optional[str]]:
        """For ``(B, 3)`` triples: the first split that contains each, or None."""
        status = np.full(len(triples), None, dtype=object)
        for split in self.dataset.splits:  # a handful of splits, each check vectorised
            hit = self.index(split).contains(triples) & (status == None)  # noqa: E711
            status[hit] = split
        return status.tolist()


def top_k_predictions(scorer, dataset: Dataset, known: KnownTriples, anchor: np.ndarray, r: np.ndarray,
                      head: bool, k: int = 10, exclude_known: bool = False) -> list[list[dict]]:
    """Top-k answers of ``(B,)`` queries from any scorer (``score_queries``), as rows
    ``{"rank", "id", "entity", "name", "score", "known"}``; answers scoring -inf (never generated
    by a text model) are left out, so a list may be shorter than k."""
    anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
    k = max(1, min(int(k), dataset.num_entities))
    with torch.no_grad():
        scores = torch.as_tensor(scorer.score_queries(torch.as_tensor(anchor), torch.as_tensor(r), None, head=head)).float()
        if exclude_known:
            q, ent = known.index("all").known(anchor, r, head=head)
            scores[torch.as_tensor(q), torch.as_tensor(ent)] = float("-inf")
        top = torch.topk(scores, k, dim=1)
    return prediction_rows(dataset, known, anchor, r, head, top.indices.numpy(), top.values.numpy())


def prediction_rows(dataset: Dataset, known: KnownTriples, anchor: np.ndarray, r: np.ndarray, head: bool,
                    ids: np.ndarray, vals: np.ndarray) -> list[list[dict]]:
    """Top-k ``ids``/``vals`` ``(B, k)`` of ``(B,)`` queries -> per query the rows ``{"rank", "id",
    "entity", "name", "score", "known"}``, non-finite scores left out."""
    keep = np.isfinite(vals)  # (B, k)
    q, rows, sc = np.nonzero(keep)[0], ids[keep], vals[keep]  # all queries' answers, query-major
    a_, r_ = anchor[q], r[q]
    triples = np.stack([rows, r_, a_], 1) if head else np.stack([a_, r_, rows], 1)
    status = known.split_of(triples) if len(rows) else []  # one lookup per split for the whole batch
    labels, names = dataset.entities.labels[rows], dataset.entity_text(rows)
    rank = np.cumsum(keep, axis=1)[keep]
    records = [{"rank": int(rank[i]), "id": int(rows[i]), "entity": str(labels[i]), "name": str(names[i]),
                "score": float(sc[i]), "known": status[i]} for i in range(len(rows))]
    bounds = np.cumsum(keep.sum(1))
    return [records[lo:hi] for lo, hi in zip(np.concatenate([[0], bounds[:-1]]), bounds)]


def _relation_labels(dataset: Dataset, n: int) -> np.ndarray:
    labels = dataset.relations.labels
    if n > len(labels):  # reciprocal relations
        labels = np.concatenate([labels, np.array([f"{x}^-1" for x in labels], dtype=object)])
    return labels


def resolve(vocab: Vocabulary, names: Optional[np.ndarray], text: str, kind: str) -> int:
    i = vocab.encode([text])[0]
    if i >= 0:
        return int(i)
    if names is not None:
        hits = np.flatnonzero(names == text)
        if len(hits) == 1:
            return int(hits[0])
        if len(hits) > 1:
            raise KeyError(f"{kind} name {text!r} is ambiguous: labels {vocab.labels[hits[:5]].tolist()}")
    close = vocab.close_matches(text)
    if names is not None and len(close) < 5:
        name_vocab = Vocabulary(np.unique(names.astype(str)))
        close += [n for n in name_vocab.close_matches(text) if n not in close][: 5 - len(close)]
    err = KeyError(f"unknown {kind} {text!r}; close matches: {close}")
    err.close_matches = close  # for callers that format their own message (the server)
    raise err


def make_model(config: Config, dataset: Dataset) -> KGEModel:
    m = config.model
    return build_model(
        m.name, dataset.num_entities, dataset.num_relations,
        dim=m.dim, reciprocal=m.reciprocal, init_scale=m.init_scale, p_norm=m.p_norm,
        storage_dtype=m.storage_dtype, **m.options,
    )


# ------------------------------------------------------------------- training
_STAGING, _COMMITTED = ".checkpoint.staging", ".checkpoint.committed"
_ORDER = "ORDER"  # in a staged checkpoint: its file names, in the order they are moved into place


def _fsync(path: Path) -> None:
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
        _fsync(stage / name)
    (stage / _ORDER).write_text("\n".join(writers) + "\n")
    _fsync(stage / _ORDER)
    _fsync(stage)
    os.replace(stage, folder / _COMMITTED)  # the commit
    _fsync(folder)
    recover_checkpoint(folder)


def recover_checkpoint(folder: str | Path) -> None:
    """Finish a committed checkpoint whose files were not all moved into place, or drop a staged
    one that was never committed (a run killed while saving). Safe next to a reader; a writer of
    the same folder must not be running."""
    folder = Path(folder)
    committed = folder / _COMMITTED
    if committed.is_dir():
        order = (committed / _ORDER).read_text().split() if (committed / _ORDER).exists() else []
        for name in order:
            if (committed / name).exists():
                os.replace(committed / name, folder / name)
        shutil.rmtree(committed)
        _fsync(folder)
    if (folder / _STAGING).exists():
        shutil.rmtree(folder / _STAGING)


def _save_checkpoint(folder: RunFolder, trainer: Trainer, reason: str) -> None:
    """Save parameters, best parameters, optimizer + RNG tensors and counters as one commit
    (:func:`commit_files`); ``best.safetensors`` is rewritten only when the best epoch changed."""
    def tensors_writer(tensors: dict[str, torch.Tensor]):
        return lambda p: save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, p)

    writers = {"checkpoint.safetensors": tensors_writer(trainer.model.state_dict())}
    best_saved = (getattr(trainer, "_saved_best_epoch", None) == trainer.best_epoch
                  and (folder / "best.safetensors").exists())
    if trainer.best_state is not None and not best_saved:
        writers["best.safetensors"] = tensors_writer(trainer.best_state)
    tensors, skeleton = optimizer_state_tensors(trainer.optimizer)
    tensors.update({f"__rng__/{k}": v for k, v in trainer.rng_state().items()})
    writers["trainer_state.safetensors"] = tensors_writer(tensors)
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
