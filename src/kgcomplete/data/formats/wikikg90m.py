"""OGB-LSC WikiKG90Mv2: NumPy arrays plus the separately published text mapping.

Extracted ``wikikg90m-v2.zip`` and ``wikikg90mv2_mapping.zip``::

    wikikg90m-v2/processed/train_hrt.npy        (601M, 3) int64 (h, r, t)
    wikikg90m-v2/processed/val_hr.npy           (15000, 2) int64; val_t.npy (15000,) int64
    wikikg90m-v2/processed/test-dev_hr.npy ...  tails hidden (leaderboard) -> not loaded
    wikikg90m-v2/meta.pt                        {"num_entities": ..., "num_relations": ...}
    wikikg90mv2_mapping/entity.csv              idx, entity (Q-id), title, desc
    wikikg90mv2_mapping/relation.csv            idx, relation (P-id), title, desc

The compact copy is written in streaming fashion (array copies in row blocks, the mapping CSV in
chunks), so the 601M training triples never have to fit in RAM. Splits: ``train`` and ``valid``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..compact import FORMAT_VERSION, _finish, _tmp_for, _write_array
from ..readers import DataFormatError


def _find(raw: Path, fname: str, required: bool = True) -> Optional[Path]:
    hits = sorted(raw.rglob(fname), key=lambda p: (len(p.parts), str(p)))
    if not hits and required:
        raise FileNotFoundError(f"{raw}: {fname} not found (WikiKG90Mv2 layout)")
    return hits[0] if hits else None


def _clean(s: pd.Series) -> pd.Series:
    return s.fillna("").astype(str).str.replace(r"[\r\n]+", " ", regex=True)


def _stream_mapping(path: Path, n: int, out_labels: Path, out_names: Path, out_desc: Path,
                    chunk: int = 2_000_000) -> None:
    """entity.csv / relation.csv -> labels, names, descriptions text files (one line per id)."""
    expected = 0
    files = [open(p, "w", encoding="utf-8", newline="\n") for p in (out_labels, out_names, out_desc)]
    try:
        for df in pd.read_csv(path, chunksize=chunk, dtype=str, keep_default_na=False):
            if df.shape[1] < 4:
                raise DataFormatError(path, None, f"expected columns idx, id, title, desc; found {list(df.columns)}")
            idx = df.iloc[:, 0].astype(np.int64).to_numpy()
            if not np.array_equal(idx, np.arange(expected, expected + len(df))):
                bad = int(np.flatnonzero(idx != np.arange(expected, expected + len(df)))[0])
                raise DataFormatError(path, expected + bad + 2, f"idx {idx[bad]} out of order (expected {expected + bad})")
            cols = [_clean(df.iloc[:, 1]), _clean(df.iloc[:, 2]), _clean(df.iloc[:, 3])]
            cols[1] = cols[1].where(cols[1] != "", cols[0])  # missing title -> the Wikidata id
            for f, c in zip(files, cols):
                if expected:
                    f.write("\n")
                f.write("\n".join(c.tolist()))
            expected += len(df)
    finally:
        for f in files:
            f.close()
    if expected != n:
        raise DataFormatError(path, None, f"{expected} rows, expected {n}")


def build_wikikg90m(raw: str | Path, out: str | Path, name: str = "wikikg90m-v2", unknown: str = "error",
                    progress: bool = False) -> Path:
    """Write the compact folder ``out`` from an extracted WikiKG90Mv2 (+ mapping) under ``raw``."""
    raw, out = Path(raw), Path(out)
    train_p = _find(raw, "train_hrt.npy")
    proc = train_p.parent
    train = np.load(train_p, mmap_mode="r")
    if train.ndim != 2 or train.shape[1] != 3:
        raise DataFormatError(train_p, None, f"shape {train.shape}, expected (n, 3)")
    val_hr = np.load(proc / "val_hr.npy")
    val_t = np.load(proc / "val_t.npy")
    if val_hr.shape != (len(val_t), 2):
        raise DataFormatError(proc / "val_hr.npy", None, f"shape {val_hr.shape} does not match val_t {val_t.shape}")
    valid = np.concatenate([val_hr, val_t.reshape(-1, 1)], axis=1).astype(np.int64)

    ent_csv, rel_csv = _find(raw, "entity.csv"), _find(raw, "relation.csv")
    meta_pt = _find(raw, "meta.pt", required=False)
    if meta_pt is not None:
        from .ogb import load_ogb_dict

        m = load_ogb_dict(meta_pt)
        ne, nr = int(m["num_entities"]), int(m["num_relations"])
    else:  # count the mapping rows
        ne = sum(len(c) for c in pd.read_csv(ent_csv, usecols=[0], chunksize=4_000_000))
        nr = len(pd.read_csv(rel_csv, usecols=[0]))
    for arr, what in ((train, "train_hrt.npy"), (valid, "val_hr/val_t")):
        # block-wise range check (train may be 14 GB on disk)
        for s in range(0, len(arr), 20_000_000):
            blk = np.asarray(arr[s : s + 20_000_000])
            if len(blk) and (blk.min() < 0 or blk[:, [0, 2]].max() >= ne or blk[:, 1].max() >= nr):
                raise DataFormatError(proc / what, None, f"ids out of range ({ne} entities, {nr} relations)")

    tmp = _tmp_for(out)
    try:
        _write_array(tmp / "train.npy", train)
        _write_array(tmp / "valid.npy", valid)
        _stream_mapping(ent_csv, ne, tmp / "entities.txt", tmp / "entity_names.txt", tmp / "entity_descriptions.txt")
        _stream_mapping(rel_csv, nr, tmp / "relations.txt", tmp / "relation_names.txt", tmp / "relation_descriptions.txt")
        (tmp / "relation_descriptions.txt").unlink()  # the Dataset has no field for it
        meta = {
            "format": FORMAT_VERSION, "name": name, "num_entities": ne, "num_relations": nr, "num_types": 0,
            "splits": {"train": int(len(train)), "valid": int(len(valid))}, "dropped": {},
            "text": ["entity_names", "entity_descriptions", "relation_names"], "candidates": {},
            "source": {"note": "test-dev/test-challenge tails are hidden by OGB-LSC; not loaded"},
        }
        _finish(tmp, out, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["build_wikikg90m"]
