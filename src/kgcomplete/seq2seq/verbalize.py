"""Unique texts for entities and relations, and the KGT5 input strings built from them.

Entity text rule (applied to *all* entities at once, vectorised with pandas):

1. the entity's name (datasets without names: its id/label);
2. entities whose text clashes with another entity's text: ``name (first words of description)``;
3. still ambiguous (or no description): ``... [label]`` (the dataset id is unique);
4. pathological leftovers: `` #<integer id>`` appended until unique.

Every text is *sanitised* first: whitespace runs (tabs/newlines) collapse to one space and the
separator character ``|`` becomes ``¦``, so the input ``predict tail: <head> | <relation>`` always
has exactly one separator and ``text -> entity`` is a one-to-one lookup
(:meth:`EntityTexts.lookup`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

SEPARATOR = "|"
SEPARATOR_ESCAPE = "\u00a6"  # broken bar
TAIL_PREFIX = "predict tail:"
HEAD_PREFIX = "predict head:"
ANSWER_PREFIX = "predict answer:"


def sanitize(texts) -> np.ndarray:
    """(n,) strings -> (n,) object array: whitespace collapsed, ``|`` escaped, never empty."""
    s = pd.Series(np.asarray(texts, dtype=object).ravel(), dtype=object).fillna("").astype(str)
    s = s.str.replace(SEPARATOR, SEPARATOR_ESCAPE, regex=False).str.replace(r"\s+", " ", regex=True).str.strip()
    s = s.where(s != "", "_")
    return s.to_numpy(dtype=object)


def _unique_texts(base: np.ndarray, extra: Optional[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Escalate clashing texts (name -> + extra -> + [label] -> + #id). Returns (texts, level)."""
    n = len(base)
    text = pd.Series(base, dtype=object)
    level = np.zeros(n, dtype=np.int8)
    with_extra = (
        pd.Series(base, dtype=object) + " (" + pd.Series(extra, dtype=object) + ")"
        if extra is not None
        else None
    )
    has_extra = np.zeros(n, bool) if extra is None else (pd.Series(extra, dtype=object) != "").to_numpy()
    for _ in range(4):
        dup = text.duplicated(keep=False).to_numpy()
        if not dup.any():
            break
        # level 0 -> 1 (description) where available, else straight to 2 (label)
        up1 = dup & (level == 0) & has_extra
        up2 = dup & (((level == 0) & ~has_extra) | (level == 1))
        if with_extra is not None:
            text[up1] = with_extra[up1]
        lab_base = pd.Series(np.where(level == 1, text.to_numpy(), base), dtype=object)
        text[up2] = (lab_base + " [" + pd.Series(labels, dtype=object) + "]")[up2]
        level[up1] = 1
        level[up2] = 2
        stuck = dup & ~up1 & ~up2  # already at level 2 or 3
        if stuck.any():
            text[stuck] = text[stuck] + " #" + pd.Series(np.arange(n).astype(str), dtype=object)[stuck]
            level[stuck] = 3
    if text.duplicated().any():  # cannot happen: '#<int id>' suffixes are distinct
        raise RuntimeError("could not make entity texts unique")
    return text.to_numpy(dtype=object), level


@dataclass
class EntityTexts:
    """Unique entity texts ``(E,)`` and relation texts ``(R,)`` plus the reverse lookup."""

    entity: np.ndarray
    relation: np.ndarray
    level: Optional[np.ndarray] = None  #: (E,) 0 name, 1 +description, 2 +label, 3 +#id

    def __post_init__(self):
        self.entity = np.asarray(self.entity, dtype=object)
        self.relation = np.asarray(self.relation, dtype=object)
        self._index = pd.Index(self.entity)
        if not self._index.is_unique:
            raise ValueError("entity texts must be unique")

    @classmethod
    def from_dataset(cls, dataset, description_words: int = 8) -> "EntityTexts":
        """Apply the module's rule to a :class:`~kgcomplete.data.dataset.Dataset`."""
        labels = sanitize(dataset.entities.labels)
        names = sanitize(dataset.entity_names) if dataset.entity_names is not None else labels
        desc = None
        if dataset.entity_descriptions is not None:
            d = pd.Series(np.asarray(dataset.entity_descriptions, dtype=object)).fillna("").astype(str)
            d = d.str.split().str[:description_words].str.join(" ")
            desc = np.where(d.to_numpy(dtype=object) == "", "", sanitize(d))
        ent, level = _unique_texts(names, desc, labels)
        rlabels = sanitize(dataset.relations.labels)
        rnames = sanitize(dataset.relation_names) if dataset.relation_names is not None else rlabels
        rel, _ = _unique_texts(rnames, None, rlabels)
        return cls(ent, rel, level)

    def __len__(self) -> int:
        return len(self.entity)

    def lookup(self, texts) -> np.ndarray:
        """Texts -> entity ids (shape preserved); unknown -> -1. Input is sanitised first."""
        arr = np.asarray(texts, dtype=object)
        return self._index.get_indexer(sanitize(arr.ravel())).reshape(arr.shape).astype(np.int64)

    def queries(self, anchor: np.ndarray, relation: np.ndarray, head: bool) -> np.ndarray:
        """``(B,)`` ids -> ``(B,)`` input strings ``predict tail: <anchor> | <relation>``
        (``predict head:`` when ``head``: the anchor is then the tail)."""
        prefix = HEAD_PREFIX if head else TAIL_PREFIX
        a = self.entity[np.asarray(anchor, dtype=np.int64)]
        r = self.relation[np.asarray(relation, dtype=np.int64)]
        return prefix + " " + a + f" {SEPARATOR} " + r

    def corpus(self) -> list[str]:
        """Strings a tokenizer is trained on: entity texts, relation texts and the fixed words."""
        return [*self.entity.tolist(), *self.relation.tolist(), TAIL_PREFIX, HEAD_PREFIX, ANSWER_PREFIX, SEPARATOR]

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> None:
        """``entity_texts.tsv`` / ``relation_texts.tsv``: ``id<TAB>text`` (texts hold no tabs)."""
        folder = Path(folder)
        pd.DataFrame({"id": np.arange(len(self.entity)), "t": self.entity}).to_csv(
            folder / "entity_texts.tsv", sep="\t", header=False, index=False, quoting=3)
        pd.DataFrame({"id": np.arange(len(self.relation)), "t": self.relation}).to_csv(
            folder / "relation_texts.tsv", sep="\t", header=False, index=False, quoting=3)

    @classmethod
    def load(cls, folder: str | Path) -> "EntityTexts":
        folder = Path(folder)

        def read(name: str) -> np.ndarray:
            df = pd.read_csv(folder / name, sep="\t", header=None, dtype=str, keep_default_na=False,
                             na_filter=False, quoting=3)
            return df[1].to_numpy(dtype=object)

        return cls(read("entity_texts.tsv"), read("relation_texts.tsv"))


def resolve_entities(names: Sequence[str], dataset, texts: EntityTexts) -> np.ndarray:
    """User-given entity strings -> ids: dataset label, else unique text, else a unique name; -1 if none."""
    arr = np.asarray(names, dtype=object).ravel()
    ids = dataset.entities.encode(arr)
    miss = ids < 0
    if miss.any():
        ids[miss] = texts.lookup(arr[miss])
        miss = ids < 0
    if miss.any() and dataset.entity_names is not None:
        nm = pd.Series(sanitize(dataset.entity_names))
        first = nm.drop_duplicates(keep=False)  # only names that identify one entity
        idx = pd.Index(first.to_numpy(dtype=object))
        pos = idx.get_indexer(sanitize(arr[miss]))
        ids[miss] = np.where(pos >= 0, first.index.to_numpy()[np.maximum(pos, 0)], -1)
    return ids


def resolve_relations(names: Sequence[str], dataset, texts: EntityTexts) -> np.ndarray:
    """Relation label, else relation text; -1 if unknown."""
    arr = np.asarray(names, dtype=object).ravel()
    ids = dataset.relations.encode(arr)
    miss = ids < 0
    if miss.any():
        ids[miss] = pd.Index(texts.relation).get_indexer(sanitize(arr[miss]))
    return ids
