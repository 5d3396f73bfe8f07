"""The KGT5 run kind: ``model.name: kgt5`` trains here; a run folder whose config names kgt5 opens here
(a folder ``kgc kgt5 import`` wrote, with its ``pretrained.json``, as a
:class:`~kgcomplete.seq2seq.pretrained.PretrainedKGT5Run`).

Light on purpose (imported by :func:`kgcomplete.api.run_kinds` for every run): transformers and the
rest of :mod:`kgcomplete.seq2seq` are imported only when a KGT5 run is trained or opened.
"""

from __future__ import annotations

from pathlib import Path

from ..runs.kinds import RunKind, register_run_kind
from .section import KGT5Config  # noqa: F401  (registers the ``kgt5`` config section)


def _is_kgt5(path: Path) -> bool:
    from ..config import read_yaml

    model = read_yaml(Path(path) / "config.yaml").get("model")
    return isinstance(model, dict) and str(model.get("name", "")).lower() == "kgt5"


def _train(ds, folder, cfg, resume=False, evaluate_test=True):
    from .run import train_kgt5

    return train_kgt5(ds, folder.path, cfg, resume=resume, evaluate_test=evaluate_test)  # resolve_config: KGT5's defaults, no KGE keys


def _load(path, **kwargs):
    if (Path(path) / "pretrained.json").exists():  # an imported checkpoint (seq2seq.pretrained.PRETRAINED_FILE)
        from .pretrained import PretrainedKGT5Run

        return PretrainedKGT5Run.load(path, **kwargs)
    from .run import KGT5Run

    return KGT5Run.load(path, **kwargs)


register_run_kind(RunKind("kgt5", trains=lambda cfg: cfg.model.name.lower() == "kgt5", train=_train,
                          opens=_is_kgt5, load=_load))
