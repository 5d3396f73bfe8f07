"""CoDEx-S/M/L in the layout of the CoDEx repository (github.com/tsafavi/codex, ``data/``)::

    data/triples/codex-<s|m|l>/{train,valid,test}.txt   Wikidata Q-id<TAB>P-id<TAB>Q-id
    data/entities/en/entities.json    {Q-id: {"label", "description", "wiki"}}
    data/relations/en/relations.json  {P-id: {"label", "description"}}
    data/types/entity2types.json      {Q-id: [type Q-id, ...]}

Names and descriptions come from the JSON files (English); ``entity_types`` holds each entity's
first listed type. The hard negatives (``*_negatives.txt``, S and M) are not loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..compact import add_parts, ingest_triples, load_compact
from ..dataset import Dataset
from ..vocabulary import align as _align
from ..readers import DataFormatError


def _split_files(raw: Path, size: str) -> dict[str, Path]:
    hits = sorted(raw.rglob(f"codex-{size}/train.txt"), key=lambda p: len(p.parts))
    if not hits:
        raise FileNotFoundError(f"{raw}: no data/triples/codex-{size}/train.txt (CoDEx repository layout)")
    folder = hits[0].parent
    return {s: folder / f"{s}.txt" for s in ("train", "valid", "test") if (folder / f"{s}.txt").exists()}


def _json(raw: Path, rel: str) -> Optional[dict]:
    hits = sorted(raw.rglob(rel), key=lambda p: len(p.parts))
    if not hits:
        return None
    try:
        with open(hits[0], encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(hits[0], e.lineno, f"invalid JSON: {e.msg}") from None


def attach_codex_metadata(ds: Dataset, raw: str | Path, lang: str = "en") -> None:
    """Add names/descriptions/types from the CoDEx JSON files under ``raw`` to ``ds``."""
    raw = Path(raw)
    ents = _json(raw, f"entities/{lang}/entities.json")
    if ents is not None:
        df = pd.DataFrame.from_dict(ents, orient="index")
        ds.entity_names = _align(df["label"].replace("", np.nan).dropna(), ds.entities, fill_with_label=True)
        if "description" in df:
            ds.entity_descriptions = _align(df["description"], ds.entities, fill_with_label=False)
    rels = _json(raw, f"relations/{lang}/relations.json")
    if rels is not None:
        df = pd.DataFrame.from_dict(rels, orient="index")
        ds.relation_names = _align(df["label"].replace("", np.nan).dropna(), ds.relations, fill_with_label=True)
    types = _json(raw, "types/entity2types.json")
    if types is not None:
        first = pd.Series({k: v[0] for k, v in types.items() if v}, dtype=object)
        ds.set_entity_types(first)


def build_codex(raw: str | Path, out: str | Path, name: str, unknown: str = "error", size: str = "s",
                progress: bool = False) -> Path:
    """Stream CoDEx-``size`` triples into compact ``out`` and add names, descriptions, types."""
    raw = Path(raw)
    ingest_triples(_split_files(raw, size), out, name=name, unknown=unknown, progress=progress)
    ds = load_compact(out)
    attach_codex_metadata(ds, raw)
    add_parts(out, ds)
    return Path(out)


def read_codex(raw: str | Path, size: str = "s", unknown: str = "error") -> Dataset:
    """In-memory CoDEx-``size`` with metadata."""
    from ..readers import read_triples

    files = _split_files(Path(raw), size)
    ds = Dataset.from_labeled({k: read_triples(p) for k, p in files.items()}, name=f"codex-{size}",
                              unknown=unknown, sources={k: str(p) for k, p in files.items()})
    attach_codex_metadata(ds, raw)
    return ds
