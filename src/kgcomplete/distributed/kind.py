"""The sharded (BESS) run kind: more than one worker (``distributed.workers``, or torchrun's
``WORLD_SIZE``) trains here; a run folder with ``sharding.json`` opens here.

Light on purpose (imported by :func:`kgcomplete.api.run_kinds` for every run): ``torch.distributed``
and the rest of :mod:`kgcomplete.distributed` are imported only when a sharded run is trained or opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from ..runs.kinds import RunKind, register_run_kind
from .section import DistConfig  # noqa: F401  (registers the ``distributed`` config section)


def distributed_requested(cfg: Config) -> bool:
    """A KGE model with more than one worker asked for (``distributed.workers``), or launched by
    torchrun (KGT5 runs its own data parallelism through accelerate, which also sets WORLD_SIZE)."""
    if cfg.model.name.lower() == "kgt5":
        return False
    workers = int(cfg.section("distributed").workers or 1)
    return workers > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1


def _train(ds, folder, cfg, resume=False, evaluate_test=True):
    from .launch import train_distributed

    if cfg.model.storage_dtype != "float32":
        raise ValueError("model.storage_dtype other than float32 is not supported with distributed workers yet")
    return train_distributed(cfg, ds, folder.path, resume=resume, evaluate_test=evaluate_test)


def _load(path, **kwargs):
    from .run import ShardedRun

    return ShardedRun.load(path, **kwargs)


register_run_kind(RunKind("sharded", trains=distributed_requested, train=_train,
                          opens=lambda path: (Path(path) / "sharding.json").exists(), load=_load))
