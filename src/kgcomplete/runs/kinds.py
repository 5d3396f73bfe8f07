"""Run kinds: how :func:`kgcomplete.train` / :func:`kgcomplete.load_run` find the code of a run.

A feature registers its kind from its own folder's ``kind.py`` (found by
:mod:`kgcomplete.features`); :func:`kgcomplete.api.run_kinds` asks the registered kinds in order,
the KGE kind (:data:`kgcomplete.runs.kge.KGE_RUN`) last. Light: imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import Config


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

