"""Sharded checkpoints: every worker saves its own shard (and its optimizer state).

Layout added to a run folder (``RUN/``)::

    sharding.json, sharding.npz     the entity -> (shard, row) mapping
    shards/latest-{i}.safetensors   worker i's parameters: its entity shard + the replicas
    shards/best-{i}.safetensors     the same at the best validation
    shards/optim-{i}.safetensors    worker i's optimizer state (+ optim-{i}.json skeleton)
    trainer_state.json              counters, written by worker 0 once every worker has saved

A sharded run can be resumed with the same number of workers, gathered into a single-table run
(a normal :class:`~kgcomplete.runs.KGERun` folder) or re-sharded to another number of workers.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..config import Config
from ..models import build_model
from ..models.base import KGEModel
from ..runs import RunFolder, atomic_save_safetensors, atomic_write_json
from ..training.optimizers import optimizer_state_from_tensors, optimizer_state_tensors
from .sharding import Sharding

ENTITY_KEY = "entity_emb.weight"
#: optimizer tensors of the entity table: state of parameter 0 (the entity table is built first)
ENTITY_OPT_PREFIX = "optimizers/0/state/0/"


def shard_file(folder: Path, kind: str, rank: int) -> Path:
    return Path(folder) / "shards" / f"{kind}-{rank}.safetensors"


def make_shard_model(cfg: Config, num_relations: int, sharding: Sharding) -> KGEModel:
    """A core model whose entity table is one shard (``S`` rows)."""
    m = cfg.model
    return build_model(m.name, sharding.shard_size, num_relations, dim=m.dim, reciprocal=m.reciprocal,
                       init_scale=m.init_scale, p_norm=m.p_norm, **m.options)


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
    model.load_state_dict(load_file(path))
    return model.to(device).eval()


def save_worker(folder: RunFolder, trainer, reason: str) -> None:
    """Every worker writes its files; worker 0 writes ``trainer_state.json`` after all have."""
    rank = trainer.comm.rank
    (folder / "shards").mkdir(exist_ok=True)
    atomic_save_safetensors(trainer.model.state_dict(), shard_file(folder.path, "latest", rank))
    if trainer.best_state is not None:
        atomic_save_safetensors(trainer.best_state, shard_file(folder.path, "best", rank))
    tensors, skeleton = optimizer_state_tensors(trainer.optimizer)
    atomic_save_safetensors(tensors, shard_file(folder.path, "optim", rank))
    atomic_write_json(folder / "shards" / f"optim-{rank}.json", skeleton)
    trainer.comm.barrier()
    if rank == 0:
        state = trainer.state()
        state.update(reason=reason, saved_at=time.time(), n_shard=trainer.comm.world)
        atomic_write_json(folder / "trainer_state.json", state)
    trainer.comm.barrier()


def restore_worker(folder: RunFolder, trainer) -> bool:
    """Load worker ``rank``'s files into ``trainer``; False when there is nothing to resume."""
    rank = trainer.comm.rank
    if not (folder / "trainer_state.json").exists():
        return False
    state = json.loads((folder / "trainer_state.json").read_text())
    if int(state.get("n_shard", trainer.comm.world)) != trainer.comm.world:
        raise ValueError(f"{folder.path} was trained with {state['n_shard']} workers; re-shard it first "
                         f"(kgcomplete.distributed.checkpoint.reshard_run)")
    trainer.model.load_state_dict(load_file(shard_file(folder.path, "latest", rank)))
    skeleton = json.loads((folder / "shards" / f"optim-{rank}.json").read_text())
    opt_path = shard_file(folder.path, "optim", rank)
    trainer.optimizer.load_state_dict(optimizer_state_from_tensors(load_file(opt_path), skeleton))
    trainer.load_state(state)
    best = shard_file(folder.path, "best", rank)
    if best.exists():
        trainer.best_state = load_file(best)
    from ..runs import read_log

    trainer.history = read_log(folder.path)
    return True


def _copy_run_files(src: Path, out: Path, workers: int) -> Config:
    out.mkdir(parents=True, exist_ok=True)
    cfg = Config.load(src / "config.yaml")
    cfg.extra.setdefault("distributed", {})["workers"] = workers
    cfg.save(out / "config.yaml")
    for p in src.iterdir():
        if p.is_file() and (p.suffix in (".tsv", ".jsonl") or p.name in ("metrics.json",)):
            shutil.copy2(p, out / p.name)
    if (src / "splits").is_dir():
        shutil.copytree(src / "splits", out / "splits", dirs_exist_ok=True)
    return cfg


def gather_run(src: str | Path, out: str | Path) -> Path:
    """Write a single-table run folder (``checkpoint.safetensors``/``best.safetensors``) from a
    sharded run; open it with :func:`kgcomplete.load_run` like any other run."""
    src, out = Path(src), Path(out)
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
    one old and one new shard at a time; the copy can be evaluated or resumed with ``n_shard`` workers."""
    src, out = Path(src), Path(out)
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
    for kind in ("latest", "best", "optim"):
        if not shard_file(src, kind, 0).exists():
            continue
        with safe_open(shard_file(src, kind, 0), "pt") as f:
            keys = list(f.keys())
            first = {k: f.get_tensor(k) for k in keys}
        row_keys = [k for k in keys if (k == ENTITY_KEY if kind != "optim" else k.startswith(ENTITY_OPT_PREFIX))
                    and first[k].dim() >= 1 and first[k].shape[0] == old.shard_size]
        for s in range(n_shard):
            ents = new.shard_and_idx_to_entity[s, : new.shard_counts[s]]
            tensors = {k: v for k, v in first.items() if k not in row_keys}
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
    del cfg
    return out
