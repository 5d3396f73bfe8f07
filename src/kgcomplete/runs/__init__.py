"""Runs: what a training run writes, the interface of an opened run, and the run kinds.

* :mod:`.protocol` -- the :class:`Run` interface every opened run implements, and the shared parts
  behind it (known triples, top-k rows, name resolution);
* :mod:`.files` -- run-folder files: atomic writes, ``log.jsonl``, the common files, checkpoint commits;
* :mod:`.kinds` -- :class:`RunKind` and the registry that features add their kinds to;
* :mod:`.kge` -- the KGE run kind (:func:`train_kge`, :class:`KGERun`).

The names below are re-exported lazily (``from kgcomplete.runs import KGERun``), so importing a
light part (``runs.kinds`` from a feature's ``kind.py``) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "protocol": ("Run", "ExportableRun", "RunBase", "ScorerRun", "KnownTriples", "UnknownNameError", "as_run",
                 "top_k_predictions", "prediction_rows", "resolve", "relation_labels", "embedding_matrix"),
    "files": ("RunFolder", "save_tensors", "atomic_write_file", "atomic_write_text", "atomic_write_bytes", "atomic_write_json", "atomic_save_safetensors", "read_log",
              "trim_log", "commit_files", "recover_checkpoint", "fsync_path", "DamagedFileError", "RunLockedError",
              "read_tensors", "read_json", "load_into", "verify", "checksums", "LOCK_FILE", "CHECKSUMS"),
    "kinds": ("RunKind", "RUN_KINDS", "register_run_kind"),
    "kge": ("KGERun", "ConfigRun", "KGE_RUN", "train_kge", "make_model", "load_parameters"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = sorted(_WHERE)
