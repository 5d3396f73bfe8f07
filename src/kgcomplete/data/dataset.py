"""The :class:`Dataset`: vocabularies, integer splits and optional entity metadata.

Triples are ``(n, 3)`` int64 arrays of ``(head, relation, tail)`` ids. Entity/relation ids are
contiguous ``0..E-1`` / ``0..R-1`` and map to string labels through :class:`Vocabulary`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from .readers import DataFormatError, ReadOptions, read_id_text, read_triple_file
from .vocabulary import Vocabulary, align

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
METADATA_FILES = {
    "entity_names": "entity_names.tsv",
    "entity_descriptions": "entity_descriptions.tsv",
    "relation_names": "relation_names.tsv",
    "entity_types": "entity_types.tsv",
}


def row_keys(ids: np.ndarray, n_entities: int, n_relations: int) -> np.ndarray:
    """One int64 per ``(h, r, t)`` row (``(h * R + r) * E + t``) when it fits, else a row view:
    ``np.unique`` on one integer is an order of magnitude faster than on rows (``axis=0``)."""
    if n_entities * n_entities * max(n_relations, 1) < 2**62:
        return (ids[:, 0] * n_relations + ids[:, 1]) * n_entities + ids[:, 2]
    rows = np.ascontiguousarray(ids, dtype=np.int64)
    return rows.view([("h", np.int64), ("r", np.int64), ("t", np.int64)]).ravel()


class UnknownLabelError(ValueError):
    """Entities/relations in valid/test that never occur in train."""


@dataclass
class Dataset:
    """A knowledge graph with train/valid/test splits.

    Attributes:
        name: short name (``umls``) or folder path.
        entities, relations: label vocabularies.
        splits: ``{"train": (n, 3) int64, "valid": ..., "test": ...}``.
        entity_names / entity_descriptions: (E,) object arrays (label itself / "" where missing) or None.
        relation_names: (R,) object array or None.
        entity_types: (E,) int64 type id per entity (-1 = untyped) or None; ``type_vocab`` names them.
        candidates: optional evaluation candidates per split (OGB protocol):
            ``{"test": {"head": (n, K) int64, "tail": (n, K) int64}}``.
        dropped: how many triples per split were dropped for unknown entities/relations.
        duplicates: how many repeated triples per split were dropped (``duplicates="drop"``).
        stripped: how many lines per split had labels stripped of whitespace (``whitespace="strip"``).
    """

    name: str
    entities: Vocabulary
    relations: Vocabulary
    splits: dict[str, np.ndarray]
    entity_names: Optional[np.ndarray] = None
    entity_descriptions: Optional[np.ndarray] = None
    relation_names: Optional[np.ndarray] = None
    entity_types: Optional[np.ndarray] = None
    type_vocab: Optional[Vocabulary] = None
    candidates: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    stripped: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ basics
    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def train(self) -> np.ndarray:
        return self.splits["train"]

    @property
    def valid(self) -> np.ndarray:
        return self.splits.get("valid", np.zeros((0, 3), np.int64))

    @property
    def test(self) -> np.ndarray:
        return self.splits.get("test", np.zeros((0, 3), np.int64))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v):,}" for k, v in self.splits.items())
        return f"Dataset({self.name!r}: {self.num_entities:,} entities, {self.num_relations:,} relations, {sizes})"

    def summary(self) -> dict:
        return {
            "name": self.name,
            "entities": self.num_entities,
            "relations": self.num_relations,
            **{k: int(len(v)) for k, v in self.splits.items()},
            **({"dropped": self.dropped} if self.dropped else {}),
            **({"duplicates_dropped": self.duplicates} if self.duplicates else {}),
            **({"whitespace_stripped": self.stripped} if self.stripped else {}),
        }

    def entity_text(self, ids) -> np.ndarray:
        """Human-readable names of entity ids (names where known, else labels)."""
        ids = np.asarray(ids, dtype=np.int64)
        return (self.entity_names if self.entity_names is not None else self.entities.labels)[ids]

    def relation_text(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return (self.relation_names if self.relation_names is not None else self.relations.labels)[ids]

    def all_triples(self) -> np.ndarray:
        """All splits stacked, (N, 3)."""
        return np.concatenate([v for v in self.splits.values()], axis=0)

    # ------------------------------------------------------------- constructors
    @classmethod
    def from_labeled(
        cls,
        splits: Mapping[str, np.ndarray],
        name: str = "dataset",
        unknown: str = "error",
        sources: Optional[Mapping[str, str]] = None,
        duplicates: str = "drop",
    ) -> "Dataset":
        """Build from ``(n, 3)`` label arrays per split; vocabularies come from train.

        ``duplicates``: ``"drop"`` (default) keeps the first of repeated triples within a split and
        records the count in ``duplicates`` (with a warning); ``"keep"`` trains them as often as given.
        An empty training split is an error; an empty valid/test split is reported.

        ``unknown``: ``"error"`` (default) raises :class:`UnknownLabelError` if valid/test use an
        entity or relation absent from train (naming the file and line when ``sources`` gives file
        paths); ``"drop"`` drops those triples and records the count in ``dropped``;
        ``"keep"`` adds them to the vocabularies.
        """
        if "train" not in splits:
            raise ValueError("a dataset needs a 'train' split")
        if unknown not in ("error", "drop", "keep"):
            raise ValueError(f"unknown={unknown!r}: expected 'error', 'drop' or 'keep'")
        if duplicates not in ("drop", "keep"):
            raise ValueError(f"duplicates={duplicates!r}: expected 'drop' or 'keep'")
        arrays = {k: np.asarray(v, dtype=object).reshape(-1, 3) for k, v in splits.items()}
        where = lambda k: sources[k] if sources and k in sources else f"{name}: split {k!r}"  # noqa: E731
        train = arrays["train"]
        if not len(train):
            raise ValueError(f"{where('train')}: no training triples (the file is empty)")
        ent_src = [train[:, 0], train[:, 2]]
        rel_src = [train[:, 1]]
        if unknown == "keep":
            for k, v in arrays.items():
                ent_src += [v[:, 0], v[:, 2]]
                rel_src += [v[:, 1]]
        entities = Vocabulary.from_values(*ent_src)
        relations = Vocabulary.from_values(*rel_src)
        out, dropped, repeated = {}, {}, {}
        for k, v in arrays.items():
            ids = np.stack([entities.encode(v[:, 0]), relations.encode(v[:, 1]), entities.encode(v[:, 2])], axis=1)
            bad = (ids < 0).any(axis=1)
            if bad.any():
                if unknown == "error":
                    i = int(np.flatnonzero(bad)[0])
                    row = v[i]
                    which = [
                        f"{kind} {lab!r}"
                        for kind, lab, idx in zip(("entity", "relation", "entity"), row, ids[i])
                        if idx < 0
                    ]
                    where = f"{sources[k]}, line {i + 1}" if sources and k in sources else f"split {k!r}, triple {i}"
                    raise UnknownLabelError(
                        f"{where}: {', '.join(which)} not in the training split "
                        f"({int(bad.sum())} {k} triples affected); pass unknown='drop' "
                        f"(CLI: --drop-unknown) to drop them"
                    )
                dropped[k] = int(bad.sum())
                log.warning("%s: dropped %d of %d %s triples with entities/relations unseen in train",
                            name, dropped[k], len(v), k)
                ids = ids[~bad]
            if duplicates == "drop" and len(ids):
                _, first = np.unique(row_keys(ids, len(entities), len(relations)), return_index=True)
                if len(first) < len(ids):
                    repeated[k] = len(ids) - len(first)
                    log.warning("%s: dropped %d repeated %s triples (of %d); keep them with data.duplicates=keep "
                                "(CLI: --keep-duplicates)", sources.get(k, name) if sources else name, repeated[k], k,
                                len(ids))
                    ids = ids[np.sort(first)]
            out[k] = np.ascontiguousarray(ids, dtype=np.int64)
        for k in out:
            if k != "train" and not len(out[k]):
                log.warning("%s: no %s triples%s", where(k), k, " (no validation: early stopping is off)"
                            if k == "valid" else "")
        return cls(name=name, entities=entities, relations=relations, splits=out, dropped=dropped,
                   duplicates=repeated)

    @classmethod
    def from_folder(cls, path: str | Path, name: Optional[str] = None, unknown: str = "error",
                    read: Optional[ReadOptions] = None) -> "Dataset":
        """Read ``train.txt``/``valid.txt``/``test.txt`` and optional metadata TSVs from ``path``
        (columns, duplicates and whitespace as ``read`` says: :class:`~kgcomplete.data.readers.ReadOptions`)."""
        read = read or ReadOptions()
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {path}")
        files = {k: path / f"{k}.txt" for k in SPLITS if (path / f"{k}.txt").exists()}
        if "train" not in files:
            raise FileNotFoundError(f"{path}: no train.txt (expected train.txt, valid.txt, test.txt)")
        parsed = {k: read_triple_file(p, read) for k, p in files.items()}
        ds = cls.from_labeled({k: v[0] for k, v in parsed.items()}, name=name or path.name, unknown=unknown,
                              sources={k: str(p) for k, p in files.items()}, duplicates=read.duplicates)
        ds.stripped = {k: n for k, (_, n) in parsed.items() if n}
        if ds.stripped:
            log.warning("%s: stripped leading/trailing whitespace from labels on %s lines", path, ds.stripped)
        ds.attach_metadata_folder(path)
        return ds

    @classmethod
    def from_dataframe(
        cls,
        data: pd.DataFrame | Mapping[str, pd.DataFrame],
        name: str = "dataframe",
        columns: tuple[str, str, str] = ("head", "relation", "tail"),
        split_column: str = "split",
        unknown: str = "error",
    ) -> "Dataset":
        """From one DataFrame with a ``split`` column, or a dict ``{split: DataFrame}``.

        Columns ``columns`` (default head/relation/tail; else the first three) hold labels
        (any hashable values; converted to ``str``).
        """
        def triples(df: pd.DataFrame) -> np.ndarray:
            cols = list(columns) if all(c in df.columns for c in columns) else list(df.columns[:3])
            return df[cols].astype(str).to_numpy(dtype=object)

        if isinstance(data, pd.DataFrame):
            if split_column in data.columns:
                parts = {k: triples(g) for k, g in data.groupby(split_column, sort=False)}
            else:
                parts = {"train": triples(data)}
        else:
            parts = {k: triples(v) for k, v in data.items()}
        return cls.from_labeled(parts, name=name, unknown=unknown)

    @classmethod
    def from_arrays(
        cls,
        train: np.ndarray,
        valid: Optional[np.ndarray] = None,
        test: Optional[np.ndarray] = None,
        num_entities: Optional[int] = None,
        num_relations: Optional[int] = None,
        name: str = "arrays",
    ) -> "Dataset":
        """From integer ``(n, 3)`` arrays; labels are the ids as strings."""
        splits = {"train": train}
        if valid is not None:
            splits["valid"] = valid
        if test is not None:
            splits["test"] = test
        splits = {k: np.ascontiguousarray(np.asarray(v, dtype=np.int64).reshape(-1, 3)) for k, v in splits.items()}
        allt = np.concatenate(list(splits.values()))
        if (allt < 0).any():
            raise ValueError("ids must be non-negative")
        ne = num_entities if num_entities is not None else int(max(allt[:, 0].max(), allt[:, 2].max())) + 1
        nr = num_relations if num_relations is not None else int(allt[:, 1].max()) + 1
        if allt[:, [0, 2]].max() >= ne or allt[:, 1].max() >= nr:
            raise ValueError("ids exceed num_entities/num_relations")
        return cls(
            name=name,
            entities=Vocabulary(np.arange(ne).astype(str).astype(object)),
            relations=Vocabulary(np.arange(nr).astype(str).astype(object)),
            splits=splits,
        )

    # ---------------------------------------------------------------- metadata
    def attach_metadata_folder(self, path: str | Path) -> None:
        """Load whichever of ``entity_names.tsv`` etc. exist in ``path``."""
        path = Path(path)
        self.attach_metadata({attr: path / f for attr, f in METADATA_FILES.items() if (path / f).exists()})

    def name_index(self, kind: str):
        """A :class:`~kgcomplete.data.fuzzy.NameIndex` of ``entity_names`` / ``relation_names``
        (``kind``: entity | relation), built once per names array; None without names."""
        names = self.entity_names if kind == "entity" else self.relation_names
        if names is None:
            return None
        cache = self.__dict__.setdefault("_name_indexes", {})
        held = cache.get(kind)
        if held is None or held[0] is not names:
            from .fuzzy import NameIndex

            held = cache[kind] = (names, NameIndex(names))
        return held[1]

    def attach_metadata(self, files: Mapping[str, str | Path]) -> None:
        """Attach ``{attribute: id<TAB>text file}`` (attributes as in :data:`METADATA_FILES`)."""
        for attr, f in files.items():
            series = read_id_text(f)
            if attr == "relation_names":
                self.relation_names = align(series, self.relations, fill_with_label=True)
            elif attr == "entity_types":
                self.set_entity_types(series)
            else:
                setattr(self, attr, align(series, self.entities, fill_with_label=(attr == "entity_names")))

    def set_entity_types(self, types: pd.Series) -> None:
        """Entity types from a Series entity label -> type name (entities without one get -1)."""
        t = align(types, self.entities, fill_with_label=False)
        self.type_vocab = Vocabulary.from_values(t[t != ""])
        self.entity_types = np.where(t != "", self.type_vocab.encode(t), -1).astype(np.int64)

    def metadata_frames(self) -> dict[str, pd.DataFrame]:
        """Metadata as ``id<TAB>text`` frames keyed by file name (for saving)."""
        out = {}
        for attr, fname in METADATA_FILES.items():
            vals = getattr(self, attr)
            if vals is None:
                continue
            vocab = self.relations if attr == "relation_names" else self.entities
            if attr == "entity_types":
                keep = vals >= 0
                out[fname] = pd.DataFrame({"id": vocab.labels[keep], "text": self.type_vocab.labels[vals[keep]]})
            else:
                out[fname] = pd.DataFrame({"id": vocab.labels, "text": vals})
        return out


__all__ = ["Dataset", "DataFormatError", "UnknownLabelError", "Vocabulary", "row_keys"]
