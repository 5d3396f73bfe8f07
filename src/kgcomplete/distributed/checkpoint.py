"""Sharded checkpoints: every worker saves its own shard (and its optimizer state).

Layout added to a run folder (``RUN/``)::

    sharding.json, sharding.npz     the entity -> (shard, row) mapping
    shards/latest-{i}.safetensors   worker i's parameters: its entity shard + the replicas
    shards/best-{i}.safetensors     the same at the best validation
    shards/optim-{i}.safetensors    worker i's optimizer state and RNG (+ optim-{i}.json skeleton)
    trainer_state.json              counters, written by worker 0 once every worker has saved
    shards/next-{id}/               a checkpoint being written (see :func:`recover_shards`)

A sharded run can be resumed with the same number of workers, gathered into a single-table run
(a normal :class:`~kgcomplete.runs.KGERun` folder) or re-sharded to another number of workers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..config import Config
from ..models import from_config
from ..models.base import KGEModel
from ..runs.files import (RunFolder, atomic_save_safetensors, atomic_write_json, fsync_path, load_into, read_json,
                          read_tensors, sha256_file, trim_log)
from ..training.optimizers import build_optimizer, optimizer_state_from_tensors, optimizer_state_tensors
from .sharding import Sharding

log = logging.getLogger(__name__)
ENTITY_KEY = "entity_emb.weight"
#: per-worker RNG states stored next to the optimizer tensors in ``optim-{i}.safetensors``
RNG_PREFIX = "__rng__/"


def shard_file(folder: Path, kind: str, rank: int) -> Path:
    return Path(folder) / "shards" / f"{kind}-{rank}.safetensors"


def make_shard_model(cfg: Config, num_relations: int, sharding: Sharding) -> KGEModel:
    """A core model whose entity table is one shard (``S`` rows): :func:`kgcomplete.models.from_config`."""
    return from_config(cfg, sharding.shard_size, num_relations)


def entity_optimizer_prefix(cfg: Config) -> str:
    """Prefix of the entity table's tensors in a worker's ``optim-{i}.safetensors``: the state key
    (:meth:`~kgcomplete.training.optimizers.CombinedOptimizer.state_key`) that ``training.optimizer``
    gives the table of ``cfg``'s model (built on the meta device: no memory, no values)."""
    with torch.device("meta"):
        model = from_config(cfg, 1, 1)
        return build_optimizer(cfg.training.optimizer, model, cfg.training.lr).state_key(model.entity_emb.weight)



def init_shard_model(cfg: Config, num_relations: int, sharding: Sharding, rank: int) -> KGEModel:
    """Worker ``rank``'s initial model: replicas identical on every worker, entity rows per shard."""
    torch.manual_seed(cfg.training.seed)
    model = make_shard_model(cfg, num_relations, sharding)
    replicas = {k: v.clone() for k, v in model.state_dict().items() if k != ENTITY_KEY}
    torch.manual_seed(cfg.training.seed + 1_000_003 * (rank + 1))
    model.reset_parameters()
    model.load_state_dict({**model.state_dict(), **replicas})
    return model


def load_shard_model(folder: Path, cfg: Config, num_relations: int, sharding: Sharding, rank: int,
                     which: str = "best", device="cpu") -> KGEModel:
    """Worker ``rank``'s saved model (``best`` falls back to ``latest``)."""
    path = shard_file(folder, "best", rank)
    if which != "best" or not path.exists():
        path = shard_file(folder, "latest", rank)
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no checkpoint of shard {rank}")
    model = make_shard_model(cfg, num_relations, sharding)
    load_into(model, path)
    return model.to(device).eval()


def rng_state_tensors(device) -> dict[str, torch.Tensor]:
    """This worker's torch RNG states (dropout, e.g. ConvE's, draws from them; the step plan does not)."""
    out = {RNG_PREFIX + "torch": torch.get_rng_state()}
    device = torch.device(device)
    if device.type == "cuda":
        out[RNG_PREFIX + "cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng_state(tensors: dict[str, torch.Tensor], device) -> None:
    """Put back (and remove from ``tensors``) the RNG states saved by :func:`rng_state_tensors`."""
    cpu, cuda = tensors.pop(RNG_PREFIX + "torch", None), tensors.pop(RNG_PREFIX + "cuda", None)
    if cpu is not None:
        torch.set_rng_state(cpu)
    device = torch.device(device)
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def checkpoint_id(trainer) -> str:
    """Names one checkpoint of a run (identical on every worker): ``{epoch}-{steps}``."""
    return f"{trainer.epoch}-{trainer.steps}"


def worker_files(rank: int) -> tuple[str, ...]:
    """The files of worker ``rank`` under ``shards/``."""
    return (f"latest-{rank}.safetensors", f"best-{rank}.safetensors", f"optim-{rank}.safetensors",
            f"optim-{rank}.json", f"checksums-{rank}.json")  # the checksums move last


def _committed_id(folder: Path) -> Optional[str]:
    p = Path(folder) / "trainer_state.json"
    if not p.exists():
        return None
    return json.loads(p.read_text()).get("checkpoint")


def _move_or_drop(pending: Path, move=(), drop=()) -> None:
    """Move files of ``pending`` (``shards/next-{id}``) into ``shards/`` or delete them; remove the
    folder once it is empty."""
    for name in move:
        try:
            os.replace(pending / name, pending.parent / name)
        except FileNotFoundError:  # not written (no best yet), or another process moved it first
            pass
    for name in drop:
        (pending / name).unlink(missing_ok=True)
    try:
        pending.rmdir()  # once every worker's files are gone
    except OSError:
        pass


def recover_shards(folder: str | Path, rank: Optional[int] = None, roll_back: bool = False) -> None:
    """Finish or undo a checkpoint that a crash (e.g. ``kill -9``) interrupted.

    A checkpoint is written in three phases: every worker writes its files into
    ``shards/next-{id}/``; worker 0 then writes ``trainer_state.json`` naming ``id`` (the commit);
    finally every worker moves its files into ``shards/``. Files of the committed id still pending
    are moved into place (roll forward); with ``roll_back``, pending files of any other id (a
    checkpoint that never committed) are deleted. ``rank``: only that worker's files (None: all).
    Rolling forward is safe at any time, also next to a running training (``ShardedRun`` does it);
    rolling back only when no worker is writing (on resume).
    """
    shards = Path(folder) / "shards"
    if not shards.is_dir():
        return
    committed = _committed_id(folder)
    for pending in sorted(shards.glob("next-*")):
        ours = pending.name[len("next-"):] == committed
        if not pending.is_dir() or not (ours or roll_back):
            continue
        names = [p.name for p in pending.iterdir()]
        if rank is not None:
            mine = worker_files(rank)
            names = [n for n in names if n in mine or any(n.startswith(f".{m}.") for m in mine)]
        tmp = [n for n in names if n.startswith(".")]  # temporary files of a write cut short
        done = sorted((n for n in names if not n.startswith(".")), key=lambda n: n.startswith("checksums-"))
        try:
            # only a resume (roll_back, nothing writing) drops temporary files: a reader next to a running
            # training must not delete the files of a save in progress
            _move_or_drop(pending, move=done if ours else (), drop=(tmp if ours else tmp + done) if roll_back else ())
        except OSError as e:  # e.g. a read-only copy of a run: read what is there
            log.warning("could not recover the interrupted checkpoint in %s: %s", pending, e)


def save_worker(folder: RunFolder, trainer, reason: str) -> None:
    """Write one checkpoint of every worker, all-or-nothing (see :func:`recover_shards`): the
    files of worker ``i`` go to ``shards/next-{id}/``, worker 0 commits with ``trainer_state.json``,
    then every worker moves its files into ``shards/``."""
    rank = trainer.comm.rank
    cid = checkpoint_id(trainer)
    pending = Path(folder.path) / "shards" / f"next-{cid}"
    pending.mkdir(parents=True, exist_ok=True)
    latest, best, optim, skel, sums = (pending / name for name in worker_files(rank))
    atomic_save_safetensors(trainer.model.state_dict(), latest)
    if trainer.best_state is not None:
        atomic_save_safetensors(trainer.best_state, best)
    tensors, skeleton = optimizer_state_tensors(trainer.optimizer)
    tensors.update(rng_state_tensors(trainer.device))
    atomic_save_safetensors(tensors, optim)
    atomic_write_json(skel, skeleton)
    atomic_write_json(sums, {f.name: sha256_file(f) for f in (latest, best, optim, skel) if f.exists()})
    for f in (latest, best, optim, skel, sums, pending):  # on disk before the commit names them (power loss)
        if f.exists():
            fsync_path(f)
    trainer.comm.barrier()
    if rank == 0:
        state = trainer.state()
        state.update(reason=reason, saved_at=time.time(), n_shard=trainer.comm.world, checkpoint=cid)
        atomic_write_json(folder / "trainer_state.json", state)  # the commit
    trainer.comm.barrier()
    _move_or_drop(pending, move=worker_files(rank))
    trainer.comm.barrier()


def restore_worker(folder: RunFolder, trainer) -> bool:
    """Load worker ``rank``'s files into ``trainer``; False when there is nothing to resume.

    An interrupted checkpoint is finished or undone first (:func:`recover_shards`), and epochs
    logged after the restored checkpoint are dropped from ``log.jsonl`` (they are trained again)."""
    rank = trainer.comm.rank
    recover_shards(folder.path, rank, roll_back=True)
    state = None
    if (folder / "trainer_state.json").exists():
        state = json.loads((folder / "trainer_state.json").read_text())
    done = int(state["epoch"]) if state is not None else 0
    history = trim_log(folder.path, done, write=rank == 0)
    trainer.comm.barrier()  # every worker has recovered its files (and worker 0 the log)
    if state is None:
        return False
    if int(state.get("n_shard", trainer.comm.world)) != trainer.comm.world:
        raise ValueError(f"{folder.path} was trained with {state['n_shard']} workers; re-shard it first "
                         f"(kgc shards reshard {folder.path} --workers N --out NEW)")
    load_into(trainer.model, shard_file(folder.path, "latest", rank))  # every file verified (checksums-{rank})
    skeleton = read_json(folder / "shards" / f"optim-{rank}.json")
    tensors = read_tensors(shard_file(folder.path, "optim", rank))
    restore_rng_state(tensors, trainer.device)
    trainer.optimizer.load_state_dict(optimizer_state_from_tensors(tensors, skeleton))
    trainer.load_state(state)
    best = shard_file(folder.path, "best", rank)
    if best.exists():
        trainer.best_state = read_tensors(best)
    trainer.history = history
    return True


def _copy_run_files(src: Path, out: Path, workers: int) -> Config:
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config.load(src / "config.yaml")
    cfg.distributed.workers = workers
    cfg.save(out / "config.yaml")
    for p in src.iterdir():
        if p.is_file() and (p.suffix in (".tsv", ".jsonl") or p.name in ("metrics.json",)):
            shutil.copy2(p, out / p.name)
    if (src / "splits").is_dir():
        shutil.copytree(src / "splits", out / "splits", dirs_exist_ok=True)
    return cfg


def gather_run(src: str | Path, out: str | Path) -> Path:
    """Write a single-table run folder (``checkpoint.safetensors``/``best.safetensors``) from a
    sharded run; open it with :func:`kgcomplete.load_run` like any other run. ``out`` must be new or
    empty; it is locked while it is written."""
    RunFolder(out).check_target()
    with RunFolder(out).lock():
        return _gather_run(Path(src), Path(out))


def _gather_run(src: Path, out: Path) -> Path:
    recover_shards(src)
    sharding = Sharding.load(src)
    _copy_run_files(src, out, 1)
    for kind, name in (("latest", "checkpoint"), ("best", "best")):
        if not shard_file(src, kind, 0).exists():
            continue
        full, rest = None, {}
        for s in range(sharding.n_shard):
            sd = load_file(shard_file(src, kind, s))
            rows = torch.as_tensor(sharding.shard_and_idx_to_entity[s, : sharding.shard_counts[s]])
            if full is None:
                w = sd[ENTITY_KEY]
                full = torch.zeros(sharding.num_entities, w.shape[1], dtype=w.dtype)
                rest = {k: v for k, v in sd.items() if k != ENTITY_KEY}
            full[rows] = sd[ENTITY_KEY][: len(rows)]
        atomic_save_safetensors({ENTITY_KEY: full, **rest}, out / f"{name}.safetensors")
    return out


def reshard_run(src: str | Path, n_shard: int, out: str | Path, seed: Optional[int] = None) -> Path:
    """Copy a sharded run to ``n_shard`` shards (parameters and entity optimizer state), holding
    one old and one new shard at a time; the copy can be evaluated or resumed with ``n_shard`` workers.
    ``out`` must be new or empty; it is locked while it is written."""
    RunFolder(out).check_target()
    with RunFolder(out).lock():
        return _reshard_run(Path(src), n_shard, Path(out), seed)


def _reshard_run(src: Path, n_shard: int, out: Path, seed: Optional[int]) -> Path:
    recover_shards(src)
    old = Sharding.load(src)
    cfg = _copy_run_files(src, out, n_shard)
    types = old.entity_types
    new = Sharding.create(old.num_entities, n_shard, old.seed if seed is None else seed, types)
    new.save(out)
    (out / "shards").mkdir(exist_ok=True)
    if (src / "trainer_state.json").exists():
        state = json.loads((src / "trainer_state.json").read_text())
        state["n_shard"] = n_shard
        atomic_write_json(out / "trainer_state.json", state)
    old_s, old_i = old.entity_to_shard, old.entity_to_idx
    opt_prefix = entity_optimizer_prefix(cfg)
    for kind in ("latest", "best", "optim"):
        if not shard_file(src, kind, 0).exists():
            continue
        with safe_open(shard_file(src, kind, 0), "pt") as f:
            keys = list(f.keys())
            first = {k: f.get_tensor(k) for k in keys}
        row_keys = [k for k in keys if (k == ENTITY_KEY if kind != "optim" else k.startswith(opt_prefix))
                    and first[k].dim() >= 1 and first[k].shape[0] == old.shard_size]
        for s in range(n_shard):
            ents = new.shard_and_idx_to_entity[s, : new.shard_counts[s]]
            # not the RNG states: worker s of the new sharding is not worker s of the old one
            tensors = {k: v for k, v in first.items() if k not in row_keys and not k.startswith(RNG_PREFIX)}
            for k in row_keys:
                tensors[k] = torch.zeros(new.shard_size, *first[k].shape[1:], dtype=first[k].dtype)
            for o in range(old.n_shard):  # rows of new shard s that live on old shard o
                sel = np.flatnonzero(old_s[ents] == o)
                if len(sel) == 0:
                    continue
                with safe_open(shard_file(src, kind, o), "pt") as f:
                    for k in row_keys:
                        tensors[k][torch.as_tensor(sel)] = f.get_tensor(k)[torch.as_tensor(old_i[ents[sel]])]
            atomic_save_safetensors(tensors, shard_file(out, kind, s))
            if kind == "optim":
                shutil.copy2(src / "shards" / "optim-0.json", out / "shards" / f"optim-{s}.json")
    return out
