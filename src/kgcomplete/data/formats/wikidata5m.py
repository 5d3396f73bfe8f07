"""Wikidata5M (transductive split) with entity and relation aliases.

Extracted ``wikidata5m_transductive.tar.gz`` and ``wikidata5m_alias.tar.gz``::

    wikidata5m_transductive_{train,valid,test}.txt   Q-id<TAB>P-id<TAB>Q-id
    wikidata5m_entity.txt                            Q-id<TAB>alias1<TAB>alias2 ...
    wikidata5m_relation.txt                          P-id<TAB>alias1<TAB>alias2 ...

Names: the first alias; the other aliases are kept, tab-joined, in ``dataset.entity_aliases``
(an (E,) object array; "" where none). Entities without an alias line are named by their id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..compact import add_parts, ingest_triples, load_compact
from ..vocabulary import align as _align
from ..readers import DataFormatError
from .text import find_split_folder

SPLIT_NAMES = {s: (f"wikidata5m_transductive_{s}.txt",) for s in ("train", "valid", "test")}


def read_aliases(path: str | Path) -> tuple[pd.Series, pd.Series]:
    """``id<TAB>alias1<TAB>alias2...`` lines -> (first alias, remaining aliases tab-joined), both
    indexed by id (first line of an id wins). Raises :class:`DataFormatError` for a line without alias."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        lines = pd.Series(f.read().splitlines(), dtype=object)
    lines = lines[lines.str.strip() != ""] if len(lines) else lines
    if lines.empty:
        return pd.Series([], dtype=object), pd.Series([], dtype=object)
    parts = lines.str.partition("\t")
    bad = np.flatnonzero(((parts[1] == "") | (parts[0] == "") | (parts[2] == "")).to_numpy())
    if len(bad):
        i = int(lines.index[bad[0]])
        raise DataFormatError(path, i + 1, f"expected 'id<TAB>alias[<TAB>alias...]', found {lines.iloc[bad[0]]!r}")
    rest = parts[2].str.rstrip("\r").str.partition("\t")
    ids = parts[0].to_numpy()
    first = pd.Series(rest[0].to_numpy(), index=ids, dtype=object)
    others = pd.Series(rest[2].to_numpy(), index=ids, dtype=object)
    keep = ~first.index.duplicated()
    return first[keep], others[keep]


def build_wikidata5m(raw: str | Path, out: str | Path, name: str = "wikidata5m", unknown: str = "error",
                     progress: bool = False) -> Path:
    """Stream the transductive triples into compact ``out``, then add names and aliases."""
    raw = Path(raw)
    files = find_split_folder(raw, SPLIT_NAMES)
    ingest_triples(files, out, name=name, unknown=unknown, progress=progress)
    ds = load_compact(out)
    ent_file = next(iter(sorted(raw.rglob("wikidata5m_entity.txt"))), None)
    rel_file = next(iter(sorted(raw.rglob("wikidata5m_relation.txt"))), None)
    if ent_file is not None:
        first, others = read_aliases(ent_file)
        ds.entity_names = _align(first, ds.entities, fill_with_label=True)
        ds.entity_aliases = _align(others, ds.entities, fill_with_label=False)
    if rel_file is not None:
        first, _ = read_aliases(rel_file)
        ds.relation_names = _align(first, ds.relations, fill_with_label=True)
    add_parts(out, ds)
    return Path(out)
