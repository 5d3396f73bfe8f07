"""Dataset lookup by name: bundled datasets, registered loaders, or a folder path.

Other modules (e.g. downloadable benchmark builders) add entries with :func:`register_dataset`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional

from .dataset import Dataset
from .readers import ReadOptions

BUNDLED_DIR = Path(str(resources.files("kgcomplete.data") / "bundled"))
#: Folders whose train.txt is at least this large load through :func:`compact.load_folder`.
LARGE_FOLDER_BYTES = 256 << 20

log = logging.getLogger(__name__)


@dataclass
class DatasetEntry:
    """A named dataset: ``loader(unknown=...) -> Dataset``, plus facts for ``kgc datasets``."""

    name: str
    loader: Callable[..., Dataset]
    description: str = ""
    source: str = "bundled"  # "bundled" or "download"
    licence: str = ""
    # Downloadable entries (kgcomplete.data.catalog): published files (download.RemoteFile: URLs,
    # expected size, sha256/md5 where published), home page, citation, published statistics.
    files: tuple = ()
    homepage: str = ""
    citation: str = ""
    stats: str = ""


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry) -> None:
    _REGISTRY[entry.name.lower()] = entry


def registered_datasets() -> list[DatasetEntry]:
    return sorted(_REGISTRY.values(), key=lambda e: (e.source != "bundled", e.name))


def _bundled_loader(name: str) -> Callable[..., Dataset]:
    def load(unknown: str = "error") -> Dataset:
        return Dataset.from_folder(BUNDLED_DIR / name, name=name, unknown=unknown)

    return load


for _name, _desc in {
    "umls": "Unified Medical Language System KG (135 entities, 46 relations, 6.5k triples; ConvE split)",
    "nations": "Nations (14 entities, 55 relations, 2k triples; ConvE split)",
}.items():
    register_dataset(
        DatasetEntry(_name, _bundled_loader(_name), _desc, "bundled", "research use; see data/bundled/ORIGIN.md")
    )


def load_dataset(name_or_path: str | Path, unknown: str = "error", columns: Optional[str] = None,
                 duplicates: str = "drop", whitespace: str = "error") -> Dataset:
    """Load a dataset by registered name (``umls``, ``nations``, ...) or from a folder path.

    ``unknown``: what to do with valid/test triples whose entities/relations are not in train
    (``"error"`` default, ``"drop"``, ``"keep"``). For a folder, ``columns`` (e.g.
    ``"head,relation,tail,weight"``), ``duplicates`` (``drop`` | ``keep``) and ``whitespace``
    (``error`` | ``strip``) say how its files are read (:class:`~kgcomplete.data.readers.ReadOptions`).
    """
    read = ReadOptions.parse(columns, duplicates, whitespace)
    key = str(name_or_path)
    path = Path(key).expanduser()
    if path.is_dir():
        train = path / "train.txt"
        warn_missing_splits(path)
        if train.exists() and train.stat().st_size >= LARGE_FOLDER_BYTES:
            # large folders go through a cached, memory-mapped compact copy (streamed once)
            from .compact import load_folder

            return load_folder(path, unknown=unknown)
        return Dataset.from_folder(path, unknown=unknown, read=read)
    entry = _REGISTRY.get(key.lower())
    if entry is not None:
        return entry.loader(unknown=unknown)
    known = ", ".join(e.name for e in registered_datasets())
    raise FileNotFoundError(f"no dataset named {key!r} and no folder at {path}; known datasets: {known}")


def warn_missing_splits(path: Path) -> list[str]:
    """Warn (logging) when a dataset folder with a train.txt has no valid.txt or test.txt, saying
    how to make them; returns the missing split names."""
    if not (path / "train.txt").exists():
        return []
    missing = [k for k in ("valid", "test") if not (path / f"{k}.txt").exists()]
    if missing:
        log.warning("%s: no %s split (%s): training runs without %s; draw them from your triples with "
                    "`kgc split ALL_TRIPLES.txt --out DIR` (every valid/test entity kept in train) and train on DIR",
                    path, " or ".join(missing), ", ".join(f"{k}.txt" for k in missing),
                    "validation or early stopping" if "valid" in missing else "test metrics")
    return missing


def load_configured(data: Any) -> Dataset:
    """The dataset a config's ``data`` section (:class:`~kgcomplete.config.DataConfig`) names."""
    return load_dataset(data.source, unknown=data.unknown, columns=data.columns, duplicates=data.duplicates,
                        whitespace=data.whitespace)
