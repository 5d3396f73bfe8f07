"""Compact, memory-mapped copies of datasets, and streaming ingestion of large triple files.

A compact folder holds::

    meta.json                    format version, counts, which optional parts exist (written last)
    entities.txt relations.txt   labels in id order, one per line
    train.npy valid.npy ...      (n, 3) int64 triples, opened with ``np.load(mmap_mode="c")``
    entity_names.txt ...         optional per-entity / per-relation text, one line per id
    entity_types.npy types.txt   optional (E,) int64 type ids and the type labels
    cand_<split>_<side>.npy      optional (n, K) int64 evaluation candidates (OGB protocol)

Loading one costs reading the label files (a few hundred MB for millions of entities) and nothing
for the triples until they are touched. :func:`ingest_triples` builds a compact folder from text
files larger than RAM: one chunked pandas pass encodes labels to ids with a growing vocabulary,
then ids are renumbered so the result equals :meth:`Dataset.from_labeled` (sorted vocabularies).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from .dataset import SPLITS, Dataset, UnknownLabelError
from .readers import DEFAULT_CHUNK_LINES, DataFormatError, iter_tsv_chunks  # noqa: F401  (re-exported)
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TEXT_ATTRS = ("entity_names", "entity_descriptions", "relation_names", "entity_aliases")


# ------------------------------------------------------------------------------------ text files
def _write_lines(path: Path, values: np.ndarray, what: str, strict: bool) -> None:
    """One value per line. ``strict``: a newline inside a value is an error, else it becomes a space."""
    s = pd.Series(np.asarray(values, dtype=object)).astype(str)
    bad = s.str.contains("[\r\n]", regex=True)
    if bad.any():
        if strict:
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{what} {i} contains a line break ({s.iloc[i]!r}); cannot store it compactly")
        s = s.str.replace(r"[\r\n]+", " ", regex=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(s.tolist()))


def _read_lines(path: Path, n: int) -> np.ndarray:
    """(n,) object array from a file written by :func:`_write_lines`."""
    if n == 0:
        return np.array([], dtype=object)
    with open(path, encoding="utf-8", newline="\n") as f:
        lines = f.read().split("\n")
    if len(lines) != n:
        raise DataFormatError(path, None, f"expected {n} lines, found {len(lines)} (damaged compact copy?)")
    return np.array(lines, dtype=object)


# ------------------------------------------------------------------------------------ save / load
def is_compact(folder: str | Path) -> bool:
    """True if ``folder`` holds a complete compact copy of this format version."""
    meta = Path(folder) / "meta.json"
    if not meta.exists():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT_VERSION
    except (OSError, json.JSONDecodeError):
        return False


def _write_array(path: Path, arr: np.ndarray, chunk: int = 4_000_000) -> None:
    """Write ``arr`` as .npy in row chunks (works for memory-mapped inputs larger than RAM)."""
    arr = np.asarray(arr) if not isinstance(arr, np.memmap) else arr
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=arr.shape)
    for s in range(0, len(arr), chunk):
        out[s : s + chunk] = arr[s : s + chunk]
    out.flush()
    del out


def _finish(tmp: Path, folder: Path, meta: dict) -> None:
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)


def _tmp_for(folder: Path) -> Path:
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _write_parts(ds: Dataset, tmp: Path, core: bool = True) -> dict:
    """Write ``ds`` into ``tmp`` (``core=False``: only the optional parts - names, types,
    candidates - not the labels and splits); returns the meta dict (without 'format')."""
    if core:
        _write_lines(tmp / "entities.txt", ds.entities.labels, "entity label", strict=True)
        _write_lines(tmp / "relations.txt", ds.relations.labels, "relation label", strict=True)
        for k, v in ds.splits.items():
            _write_array(tmp / f"{k}.npy", v)
    text = []
    for attr in TEXT_ATTRS:
        vals = getattr(ds, attr, None)
        if vals is not None:
            _write_lines(tmp / f"{attr}.txt", vals, attr, strict=False)
            text.append(attr)
    if ds.entity_types is not None:
        np.save(tmp / "entity_types.npy", np.asarray(ds.entity_types, dtype=np.int64))
        _write_lines(tmp / "types.txt", ds.type_vocab.labels, "type label", strict=True)
    cands = {}
    for split, sides in (ds.candidates or {}).items():
        cands[split] = sorted(sides)
        for side, arr in sides.items():
            _write_array(tmp / f"cand_{split}_{side}.npy", arr)
    return {
        "name": ds.name,
        "num_entities": ds.num_entities,
        "num_relations": ds.num_relations,
        "num_types": len(ds.type_vocab) if ds.type_vocab is not None else 0,
        "splits": {k: int(len(v)) for k, v in ds.splits.items()},
        "dropped": {k: int(v) for k, v in ds.dropped.items()},
        "text": text,
        "candidates": cands,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def save_compact(ds: Dataset, folder: str | Path, source: Optional[dict] = None) -> Path:
    """Write ``ds`` as a compact folder (atomically: a temp folder renamed at the end)."""
    folder = Path(folder)
    tmp = _tmp_for(folder)
    try:
        meta = _write_parts(ds, tmp)
        meta.update(format=FORMAT_VERSION, source=source or {})
        _finish(tmp, folder, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_compact(folder: str | Path, mmap: bool = True, name: Optional[str] = None) -> Dataset:
    """Open a compact folder; triples and candidates are memory-mapped (copy-on-write) if ``mmap``."""
    folder = Path(folder)
    if not is_compact(folder):
        raise FileNotFoundError(f"{folder}: no compact dataset (meta.json of format {FORMAT_VERSION} missing)")
    meta = json.loads((folder / "meta.json").read_text())
    mode = "c" if mmap else None
    entities = Vocabulary(_read_lines(folder / "entities.txt", meta["num_entities"]))
    relations = Vocabulary(_read_lines(folder / "relations.txt", meta["num_relations"]))
    splits = {k: np.load(folder / f"{k}.npy", mmap_mode=mode) for k in meta["splits"]}
    for k, n in meta["splits"].items():
        if splits[k].shape != (n, 3):
            raise DataFormatError(folder / f"{k}.npy", None, f"shape {splits[k].shape}, expected ({n}, 3)")
    ds = Dataset(name=name or meta["name"], entities=entities, relations=relations, splits=splits,
                 dropped=dict(meta.get("dropped", {})))
    for attr in meta.get("text", []):
        n = meta["num_relations"] if attr.startswith("relation") else meta["num_entities"]
        setattr(ds, attr, _read_lines(folder / f"{attr}.txt", n))
    if (folder / "entity_types.npy").exists():
        ds.entity_types = np.load(folder / "entity_types.npy")
        ds.type_vocab = Vocabulary(_read_lines(folder / "types.txt", meta["num_types"]))
    ds.candidates = {
        split: {side: np.load(folder / f"cand_{split}_{side}.npy", mmap_mode=mode) for side in sides}
        for split, sides in meta.get("candidates", {}).items()
    }
    return ds


# ------------------------------------------------------------------------------------ streaming
class _GrowingVocab:
    """Label -> id in first-seen order, grown chunk by chunk with vectorised hash lookups."""

    def __init__(self) -> None:
        self.index = pd.Index(np.array([], dtype=object), dtype=object)

    def encode(self, values: np.ndarray, grow: bool) -> np.ndarray:
        """Ids of ``values`` (-1 for labels not seen, when not growing); one hash pass over the
        chunk (``factorize``), then lookups of its distinct labels only."""
        codes, uniq = pd.factorize(values, use_na_sentinel=False)
        ids = self.index.get_indexer(uniq)
        if grow:
            new = ids < 0
            if new.any():
                ids[new] = len(self.index) + np.arange(int(new.sum()))
                self.index = self.index.append(pd.Index(np.asarray(uniq[new], dtype=object), dtype=object))
        return ids[codes].astype(np.int64)

    def sorted_remap(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted labels, old id -> new id) so that ids follow the sorted label order."""
        labels = self.index.to_numpy(dtype=object)
        order = np.argsort(labels, kind="stable")
        remap = np.empty(len(labels), dtype=np.int64)
        remap[order] = np.arange(len(labels), dtype=np.int64)
        return labels[order], remap


def ingest_triples(
    files: Mapping[str, str | Path],
    folder: str | Path,
    name: str = "dataset",
    unknown: str = "error",
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    columns: int = 3,
    usecols: tuple[int, int, int] = (0, 1, 2),
    keep_if: Optional[tuple[int, tuple[str, ...]]] = None,
    required: Optional[tuple[int, ...]] = None,
    source: Optional[dict] = None,
    progress: bool = False,
) -> Path:
    """Stream labeled triple files ``{split: path}`` into a compact folder; returns the folder.

    Memory is O(chunk + vocabulary), never O(triples). ``unknown`` as in
    :meth:`Dataset.from_labeled` (``"error"``: :class:`UnknownLabelError` naming file and line).
    ``columns``/``usecols``: files with more columns (e.g. OpenBioLink's 6) and which hold h, r, t;
    ``keep_if=(column, values)`` keeps only rows whose ``column`` is one of ``values`` (e.g. the
    positive label); ``required``: columns that must be non-empty (default: all).
    Line numbers in errors count every line of the file, kept or not.
    """
    if "train" not in files:
        raise ValueError("a dataset needs a 'train' split")
    if unknown not in ("error", "drop", "keep"):
        raise ValueError(f"unknown={unknown!r}: expected 'error', 'drop' or 'keep'")
    folder = Path(folder)
    tmp = _tmp_for(folder)
    order = ["train"] + [k for k in files if k != "train"]
    ents, rels = _GrowingVocab(), _GrowingVocab()
    counts, dropped = {}, {}
    hcol, rcol, tcol = usecols
    try:
        from tqdm.auto import tqdm

        for split in order:
            path = Path(files[split])
            grow = split == "train" or unknown == "keep"
            n, ndrop = 0, 0
            with open(tmp / f"{split}.raw", "wb") as out:
                chunks = iter_tsv_chunks(path, columns, chunk_lines, required=required)
                for line0, df in tqdm(chunks, desc=f"{name}/{split}", unit="chunk", disable=not progress, leave=False):
                    if keep_if is not None:
                        df = df[df[keep_if[0]].isin(list(keep_if[1]))]
                    h = df[hcol].to_numpy(dtype=object)
                    t = df[tcol].to_numpy(dtype=object)
                    ht = ents.encode(np.concatenate([h, t]), grow)
                    r = rels.encode(df[rcol].to_numpy(dtype=object), grow)
                    ids = np.stack([ht[: len(h)], r, ht[len(h):]], axis=1)
                    bad = (ids < 0).any(axis=1)
                    if bad.any():
                        if unknown == "error":
                            i = int(np.flatnonzero(bad)[0])
                            row = (h[i], df[rcol].iloc[i], t[i])
                            which = [f"{kind} {lab!r}" for kind, lab, idx in
                                     zip(("entity", "relation", "entity"), row, ids[i]) if idx < 0]
                            raise UnknownLabelError(
                                f"{path}, line {int(df.index[i]) + 1}: {', '.join(which)} not in the training split; "
                                f"pass unknown='drop' (CLI: --drop-unknown) to drop such triples")
                        ndrop += int(bad.sum())
                        ids = ids[~bad]
                    ids.astype(np.int64).tofile(out)
                    n += len(ids)
            counts[split] = n
            if ndrop:
                dropped[split] = ndrop
                log.warning("%s: dropped %d %s triples with entities/relations unseen in train", name, ndrop, split)
        ent_labels, ent_map = ents.sorted_remap()
        rel_labels, rel_map = rels.sorted_remap()
        for split in order:
            raw = tmp / f"{split}.raw"
            n = counts[split]
            src = np.memmap(raw, dtype=np.int64, mode="r", shape=(n, 3)) if n else np.zeros((0, 3), np.int64)
            dst = np.lib.format.open_memmap(tmp / f"{split}.npy", mode="w+", dtype=np.int64, shape=(n, 3))
            step = max(chunk_lines, 1)
            for s in range(0, n, step):
                blk = np.asarray(src[s : s + step])
                dst[s : s + step, 0] = ent_map[blk[:, 0]]
                dst[s : s + step, 1] = rel_map[blk[:, 1]]
                dst[s : s + step, 2] = ent_map[blk[:, 2]]
            dst.flush()
            del src, dst
            raw.unlink()
        _write_lines(tmp / "entities.txt", ent_labels, "entity label", strict=True)
        _write_lines(tmp / "relations.txt", rel_labels, "relation label", strict=True)
        meta = {
            "format": FORMAT_VERSION,
            "name": name,
            "num_entities": len(ent_labels),
            "num_relations": len(rel_labels),
            "num_types": 0,
            "splits": {k: counts[k] for k in order},
            "dropped": dropped,
            "text": [],
            "candidates": {},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "source": source or {},
        }
        _finish(tmp, folder, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def add_parts(folder: str | Path, ds: Dataset) -> None:
    """Add ``ds``'s optional parts (names, types, candidates) to an existing compact folder."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    tmp = _tmp_for(folder.with_name(folder.name + "-parts"))
    try:
        parts = _write_parts(ds, tmp, core=False)
        for p in tmp.iterdir():
            p.replace(folder / p.name)
        meta.update(text=parts["text"], candidates=parts["candidates"], num_types=parts["num_types"])
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ folders
def _fingerprint(files: Mapping[str, Path]) -> dict:
    """Size and mtime of each source file, to notice when a cached compact copy is stale."""
    out = {}
    for k, p in sorted(files.items()):
        st = Path(p).stat()
        out[k] = [str(Path(p).resolve()), st.st_size, st.st_mtime_ns]
    return out


def load_folder(
    path: str | Path,
    name: Optional[str] = None,
    unknown: str = "error",
    cache_dir: Optional[str | Path] = None,
    chunk_lines: int = DEFAULT_CHUNK_LINES,
    progress: bool = False,
) -> Dataset:
    """Like :meth:`Dataset.from_folder`, through a compact cache: the first call streams the text
    (files larger than RAM are fine), later calls memory-map the cached copy.

    ``cache_dir``: where the compact copy goes (default ``$KGC_HOME/compact/folders/<hash>``);
    it is rebuilt when a source file's size or mtime changes.
    """
    from .dataset import METADATA_FILES
    from .download import kgc_home

    path = Path(path)
    files = {k: path / f"{k}.txt" for k in SPLITS if (path / f"{k}.txt").exists()}
    if "train" not in files:
        raise FileNotFoundError(f"{path}: no train.txt (expected train.txt, valid.txt, test.txt)")
    meta_files = {k: path / f for k, f in METADATA_FILES.items() if (path / f).exists()}
    finger = _fingerprint({**files, **meta_files})
    finger["unknown"] = unknown
    if cache_dir is None:
        key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
        cache_dir = kgc_home() / "compact" / "folders" / f"{path.name}-{key}-{unknown}"
    cache_dir = Path(cache_dir)
    if is_compact(cache_dir) and json.loads((cache_dir / "meta.json").read_text()).get("source") == finger:
        return load_compact(cache_dir, name=name or path.name)
    ingest_triples(files, cache_dir, name=name or path.name, unknown=unknown, chunk_lines=chunk_lines,
                   source=finger, progress=progress)
    ds = load_compact(cache_dir, name=name or path.name)
    if meta_files:
        ds.attach_metadata(meta_files)
        add_parts(cache_dir, ds)
    return ds


__all__ = [
    "FORMAT_VERSION",
    "add_parts",
    "ingest_triples",
    "is_compact",
    "iter_tsv_chunks",
    "load_compact",
    "load_folder",
    "save_compact",
]
