"""OGB link-property-prediction KGs (ogbl-biokg, ogbl-wikikg2) in their released layout.

Extracted ``biokg.zip`` / ``wikikg-v2.zip``::

    <root>/split/<scheme>/{train,valid,test}.pt    torch-saved dicts of NumPy arrays:
        head, relation, tail              (n,) int64
        head_type, tail_type              (n,) entity-type names (biokg; ids are per type)
        head_neg, tail_neg                (n, 500) int64 negatives (valid/test only)
    <root>/mapping/<type>_entidx2name.csv.gz   "ent idx","ent name" (biokg, one per type)
    <root>/mapping/relidx2relname.csv.gz       "rel idx","rel name" (biokg)
    <root>/mapping/nodeidx2entityid.csv.gz     "node idx","entity id" (wikikg2)
    <root>/mapping/reltype2relid.csv.gz        "reltype","rel id" (wikikg2)
    <root>/raw/num-node-dict.csv.gz            per-type node counts (biokg; fallback)

Typed ids become global ids: types sorted by name, ``global = offset[type] + local``;
``entity_types`` records each entity's type. Negatives become ``Dataset.candidates`` (the true
entity is not among them; the evaluator adds it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..compact import save_compact
from ..dataset import Dataset
from ..readers import DataFormatError
from ..vocabulary import Vocabulary

SPLIT_FILES = ("train", "valid", "test")


def _numpy_safe_globals() -> list:
    """Globals a torch-saved dict of NumPy arrays needs under ``weights_only=True`` (both NumPy
    1.x ``numpy.core`` and 2.x ``numpy._core`` module names, since OGB files were saved with 1.x)."""
    core = getattr(np, "_core", None) or np.core  # type: ignore[attr-defined]
    rec = core.multiarray._reconstruct
    scalar = core.multiarray.scalar
    dtypes = {type(np.dtype(t)) for t in (np.int64, np.int32, np.int16, np.int8, np.uint8, np.float32,
                                           np.float64, np.float16, np.bool_, np.str_, np.object_)}
    return [rec, scalar, np.ndarray, np.dtype, *dtypes,
            (rec, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar"),
            (rec, "numpy._core.multiarray._reconstruct"), (scalar, "numpy._core.multiarray.scalar")]


def load_ogb_dict(path: str | Path, trusted: bool = False) -> dict[str, Any]:
    """Load one OGB ``*.pt`` split dict with ``torch.load(weights_only=True)`` plus NumPy globals.

    Torch tensors are converted to NumPy. If the safe loader refuses the file and ``trusted`` is
    True (a verified official download), it falls back to ``weights_only=False``; otherwise raises
    :class:`DataFormatError`.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as e:
        if not trusted:
            raise DataFormatError(path, None, f"not loadable as a plain dict of arrays ({str(e).splitlines()[0]})") from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, dict):
        raise DataFormatError(path, None, f"expected a dict of arrays, found {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            v = v.numpy()
        out[k] = v
    return out


def _find_root(raw: Path) -> tuple[Path, Path]:
    """(dataset root, split folder) under ``raw``: the folder holding ``split/<scheme>/train.pt``."""
    hits = sorted(raw.rglob("train.pt"), key=lambda p: (len(p.parts), str(p)))
    for p in hits:
        if p.parent.parent.name == "split":
            return p.parent.parent.parent, p.parent
    raise FileNotFoundError(f"{raw}: no split/<scheme>/train.pt (OGB layout) found")


def _int_column(d: dict, key: str, path: Path, n: Optional[int] = None) -> np.ndarray:
    if key not in d:
        raise DataFormatError(path, None, f"missing key {key!r} (has {sorted(d)})")
    a = np.asarray(d[key])
    if not np.issubdtype(a.dtype, np.integer):
        raise DataFormatError(path, None, f"{key!r} has dtype {a.dtype}, expected integers")
    a = a.astype(np.int64, copy=False)
    if n is not None and len(a) != n:
        raise DataFormatError(path, None, f"{key!r} has {len(a)} rows, 'head' has {n}")
    return a


def _mapping(root: Path, fname: str) -> Optional[pd.DataFrame]:
    p = root / "mapping" / fname
    if not p.exists():
        return None
    df = pd.read_csv(p, dtype={0: np.int64}, keep_default_na=False)
    df.columns = ["idx", "name"] + list(df.columns[2:])
    df = df.sort_values("idx")
    if not np.array_equal(df["idx"].to_numpy(), np.arange(len(df))):
        raise DataFormatError(p, None, "index column is not 0..n-1")
    return df


def read_ogb(raw: str | Path, name: str = "ogb", trusted: bool = False) -> Dataset:
    """Read an extracted OGB KG (biokg or wikikg2 layout; detected from the files) into memory."""
    root, split_dir = _find_root(Path(raw))
    parts = {}
    for s in SPLIT_FILES:
        p = split_dir / f"{s}.pt"
        if p.exists():
            parts[s] = (p, load_ogb_dict(p, trusted=trusted))
    typed = "head_type" in parts["train"][1]

    # ---- entities (and types)
    ent_df = None
    if typed:
        type_files = sorted((root / "mapping").glob("*_entidx2name.csv.gz"))
        if type_files:
            type_names = sorted(f.name[: -len("_entidx2name.csv.gz")] for f in type_files)
            frames = [_mapping(root, f"{t}_entidx2name.csv.gz") for t in type_names]
            counts = np.array([len(f) for f in frames], dtype=np.int64)
            names = np.concatenate([f["name"].astype(str).to_numpy(dtype=object) for f in frames])
        else:
            nd = root / "raw" / "num-node-dict.csv.gz"
            if not nd.exists():
                raise FileNotFoundError(f"{root}: neither mapping/*_entidx2name.csv.gz nor raw/num-node-dict.csv.gz")
            df = pd.read_csv(nd)
            type_names = sorted(df.columns)
            counts = np.array([int(df[t].iloc[0]) for t in type_names], dtype=np.int64)
            names = None
        type_vocab = Vocabulary(np.array(type_names, dtype=object))
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        num_entities = int(counts.sum())
        entity_types = np.repeat(np.arange(len(type_names), dtype=np.int64), counts)
        if names is None:
            labels = np.char.add(type_vocab.labels[entity_types].astype(str),
                                 np.char.add(":", (np.arange(num_entities) - offsets[entity_types]).astype(str)))
            labels = labels.astype(object)
        elif pd.Index(names).is_unique:
            labels = names
        else:  # the same identifier under two types: qualify every label with its type
            labels = (pd.Series(type_vocab.labels[entity_types]) + ":" + pd.Series(names)).to_numpy(dtype=object)
    else:
        type_vocab, entity_types, offsets = None, None, None
        ent_df = _mapping(root, "nodeidx2entityid.csv.gz")
        if ent_df is not None:
            labels = ent_df["name"].astype(str).to_numpy(dtype=object)
        else:
            m = max(int(max(d["head"].max(), d["tail"].max())) for _, d in parts.values()) + 1
            labels = np.arange(m).astype(str).astype(object)
        num_entities = len(labels)

    # ---- relations
    rel_df = _mapping(root, "relidx2relname.csv.gz") if typed else _mapping(root, "reltype2relid.csv.gz")
    if rel_df is not None:
        rel_labels = rel_df["name"].astype(str).to_numpy(dtype=object)
    else:
        m = max(int(d["relation"].max()) for _, d in parts.values()) + 1
        rel_labels = np.arange(m).astype(str).astype(object)

    # ---- triples and candidates
    def offset_of(d: dict, key: str, path: Path, n: int) -> np.ndarray:
        if type_vocab is None:
            return np.zeros(n, dtype=np.int64)
        t = np.asarray(d[key], dtype=object)
        if len(t) != n:
            raise DataFormatError(path, None, f"{key!r} has {len(t)} rows, 'head' has {n}")
        code = type_vocab.encode(t)
        if (code < 0).any():
            bad = t[np.flatnonzero(code < 0)[0]]
            raise DataFormatError(path, None, f"{key!r} has unknown entity type {bad!r} (known: {list(type_vocab.labels)})")
        return offsets[code]

    splits, candidates = {}, {}
    for s, (path, d) in parts.items():
        h = _int_column(d, "head", path)
        n = len(h)
        r = _int_column(d, "relation", path, n)
        t = _int_column(d, "tail", path, n)
        ho, to = offset_of(d, "head_type", path, n), offset_of(d, "tail_type", path, n)
        tri = np.stack([h + ho, r, t + to], axis=1)
        if n and (tri[:, [0, 2]].max() >= num_entities or tri.min() < 0 or r.max() >= len(rel_labels)):
            raise DataFormatError(path, None, f"ids out of range ({num_entities} entities, {len(rel_labels)} relations)")
        splits[s] = np.ascontiguousarray(tri)
        if "head_neg" in d and "tail_neg" in d:
            hn = _int_column(d, "head_neg", path, n).reshape(n, -1) + ho[:, None]
            tn = _int_column(d, "tail_neg", path, n).reshape(n, -1) + to[:, None]
            candidates[s] = {"head": np.ascontiguousarray(hn), "tail": np.ascontiguousarray(tn)}

    ds = Dataset(name=name, entities=Vocabulary(labels), relations=Vocabulary(rel_labels), splits=splits,
                 entity_types=entity_types, type_vocab=type_vocab, candidates=candidates)
    return ds


def build_ogb(raw: str | Path, out: str | Path, name: str, unknown: str = "error", trusted: bool = True,
              progress: bool = False) -> Path:
    """Read the OGB layout under ``raw`` and write the compact folder ``out`` (ids are given, so
    ``unknown`` does not apply)."""
    ds = read_ogb(raw, name=name, trusted=trusted)
    return save_compact(ds, out)
