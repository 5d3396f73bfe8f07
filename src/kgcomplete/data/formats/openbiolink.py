"""OpenBioLink2020 (high-quality, directed split: ``HQ_DIR.zip``).

``HQ_DIR/train_test_data/``::

    train_sample.csv, val_sample.csv, test_sample.csv     tab-separated, no header:
        node1 ID, edge type, node2 ID, quality score, TP/TN label (1/0), source
    negative_{train,val,test}_sample.csv                   same columns, label 0 (not loaded)
    train_val_nodes.csv, test_nodes.csv                    node ID<TAB>node type

Only positive rows (label 1) are kept. Node types (``GENE``, ``DRUG``, ...) become
``entity_types``; when the split's node files are absent, ``HQ_DIR/graph_files/nodes.csv`` is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..compact import add_parts, ingest_triples, load_compact
from ..dataset import Dataset
from ..readers import DataFormatError
from .text import find_split_folder

SPLIT_NAMES = {"train": ("train_sample.csv",), "valid": ("val_sample.csv",), "test": ("test_sample.csv",)}
POSITIVE = ("1", "1.0", "True", "true", "TP")
COLUMNS = 6


def _node_types(folder: Path) -> pd.Series:
    """Node id -> node type from the split's node files (or ``graph_files/nodes.csv``)."""
    files = [folder / "train_val_nodes.csv", folder / "test_nodes.csv"]
    files = [f for f in files if f.exists()]
    if not files:
        files = sorted(folder.parent.rglob("nodes.csv"))[:1]
    parts = []
    for f in files:
        df = pd.read_csv(f, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=3, usecols=[0, 1])
        if (df[0] == "").any() or (df[1] == "").any():
            line = int(np.flatnonzero(((df[0] == "") | (df[1] == "")).to_numpy())[0]) + 1
            raise DataFormatError(f, line, "expected 'node id<TAB>node type'")
        parts.append(pd.Series(df[1].to_numpy(), index=df[0].to_numpy(), dtype=object))
    if not parts:
        return pd.Series([], dtype=object)
    s = pd.concat(parts)
    return s[~s.index.duplicated()]


def _attach_types(ds: Dataset, types: pd.Series) -> None:
    if not types.empty:
        ds.set_entity_types(types)


def build_openbiolink(raw: str | Path, out: str | Path, name: str = "openbiolink2020", unknown: str = "error",
                      progress: bool = False) -> Path:
    """Stream the positive rows of the labeled sample files into compact ``out``; add node types."""
    files = find_split_folder(raw, SPLIT_NAMES)
    ingest_triples(files, out, name=name, unknown=unknown, columns=COLUMNS, usecols=(0, 1, 2),
                   keep_if=(4, POSITIVE), required=(0, 1, 2, 4), progress=progress)
    ds = load_compact(out)
    _attach_types(ds, _node_types(files["train"].parent))
    add_parts(out, ds)
    return Path(out)


def read_openbiolink(raw: str | Path, name: str = "openbiolink2020", unknown: str = "error") -> Dataset:
    """In-memory variant of :func:`build_openbiolink` (small files, tests)."""
    files = find_split_folder(raw, SPLIT_NAMES)
    splits = {}
    for k, p in files.items():
        df = pd.read_csv(p, sep="\t", header=None, names=list(range(COLUMNS)), dtype=str,
                         keep_default_na=False, quoting=3)
        df = df[df[4].isin(list(POSITIVE))]
        splits[k] = df[[0, 1, 2]].to_numpy(dtype=object)
    ds = Dataset.from_labeled(splits, name=name, unknown=unknown, sources={k: str(p) for k, p in files.items()})
    _attach_types(ds, _node_types(files["train"].parent))
    return ds
