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

Inputs (:func:`input_text`; :class:`~kgcomplete.seq2seq.encoding.QueryEncoder` assembles the same
from token pieces)::

    predict tail: <head> | <relation>                    plain KGT5 (head prediction: predict head: <tail> | <relation>)
    query: <head> | <relation>                           KGT5-context (head prediction: query: <tail> | reverse of <relation>)
    <relation> | <neighbour>                             one line per fact of the query entity's neighbourhood
    reverse of <relation> | <neighbour>                  (an incoming edge: <neighbour> -<relation>-> <query entity>)

With descriptions, the query entity's text is followed by ``: <description>``. Lines are separated
by ``\n``, which sanitised texts never contain.
"""

from __future__ import annotations

import string
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
QUERY_PREFIX = "query:"  #: KGT5-context's query line
REVERSE_OF = "reverse of"  #: an incoming edge / head prediction in KGT5-context
LINE_SEPARATOR = "\n"  #: between the query line and each context line
DESCRIPTION_SEPARATOR = ":"  #: between the query entity's text and its description


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
            desc = description_texts(dataset.entity_descriptions, description_words)
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

    def corpus(self, extra: Optional[Sequence[str]] = None) -> list[str]:
        """Strings a tokenizer is trained on: entity texts, relation texts, the fixed words and ``extra``
        (e.g. the descriptions a run reads)."""
        fixed = [TAIL_PREFIX, HEAD_PREFIX, ANSWER_PREFIX, SEPARATOR, QUERY_PREFIX, REVERSE_OF, LINE_SEPARATOR,
                 DESCRIPTION_SEPARATOR]
        return [*self.entity.tolist(), *self.relation.tolist(), *fixed, *(list(extra) if extra is not None else [])]

    def context_lines(self, facts) -> np.ndarray:
        """``(F, 3)`` facts ``[relation id, neighbour id, inverse]`` -> ``(F,)`` lines ``<relation> |
        <neighbour>`` (``reverse of <relation> | <neighbour>`` where ``inverse``: the neighbour is the
        fact's head). See :func:`context_lines`."""
        f = np.asarray(facts, dtype=np.int64).reshape(-1, 3)
        return context_lines(self.relation[f[:, 0]], self.entity[f[:, 1]], f[:, 2].astype(bool))

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


def template_parts(template: str, fields: Sequence[str], what: str = "template") -> list[tuple[str, Optional[str]]]:
    """``"what is the {relation} of {topic}?"`` -> ``[(literal, field or None), ...]``; every field one of
    ``fields``, with no format spec or conversion (``{{`` / ``}}`` are literal braces); else a
    ValueError that names the ``what`` and the template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{what} {template!r}: {e}") from None
    for _, field, spec, conv in parsed:
        if field is not None and (spec or conv or field not in fields):
            raise ValueError(f"{what} {template!r}: {{{field}}} is not one of "
                             f"{', '.join('{' + f + '}' for f in fields)} (no format specs; write {{{{ and }}}} "
                             f"for literal braces)")
    return [(literal, field) for literal, field, _, _ in parsed]


def fill_template(parts: list[tuple[str, Optional[str]]], values: dict[str, np.ndarray]) -> np.ndarray:
    """``template.format(**row)`` for every row: :func:`template_parts` and ``(B,)`` string arrays per
    field -> ``(B,)`` strings, as object-array concatenations (no Python step per row)."""
    out = np.full(len(next(iter(values.values()))), "", dtype=object)
    for literal, field in parts:
        out = out + literal
        if field is not None:
            out = out + values[field]
    return out


def relation_phrase(relation_texts, inverse) -> np.ndarray:
    """``(n,)`` relation texts -> ``(n,)``: the text, or ``reverse of <text>`` where ``inverse``."""
    r = np.asarray(relation_texts, dtype=object).ravel()
    inv = np.broadcast_to(np.asarray(inverse, dtype=bool), r.shape)
    return np.where(inv, REVERSE_OF + " " + r, r).astype(object)


def context_lines(relation_texts, neighbour_texts, inverse) -> np.ndarray:
    """The context lines of ``n`` facts of a query entity: ``(n,)`` relation texts, ``(n,)`` neighbour
    texts, ``(n,)`` bools (True: the fact points *to* the query entity) -> ``(n,)`` strings
    ``<relation> | <neighbour>`` / ``reverse of <relation> | <neighbour>`` (texts sanitised)."""
    rel = relation_phrase(sanitize(relation_texts), inverse)
    nb = sanitize(neighbour_texts)
    return (rel + f" {SEPARATOR} " + nb).astype(object) if len(nb) else np.empty(0, dtype=object)


def input_text(anchor_text: str, relation_text: str, head: bool = False, context: Optional[Sequence[str]] = None,
               description: Optional[str] = None, context_format: Optional[bool] = None) -> str:
    """One model input as a string (the module docstring's formats).

    ``anchor_text``: the query entity's text (sanitised here, so free text works); ``head``: the
    query asks for the head (the anchor is the tail); ``context``: lines from :func:`context_lines`
    (already capped: :meth:`QueryEncoder.encode_text` drops lines past the token budget);
    ``description``: appended after ``:``; ``context_format``: ``query: ...`` (default when
    ``context`` is given) or ``predict tail/head: ...``.
    """
    anchor = sanitize([anchor_text])[0]
    if description is not None and str(description).strip():
        anchor += f" {DESCRIPTION_SEPARATOR} " + sanitize([description])[0]
    if context_format is None:
        context_format = context is not None
    if context_format:
        line = f"{QUERY_PREFIX} {anchor} {SEPARATOR} " + relation_phrase(sanitize([relation_text]), head)[0]
        return LINE_SEPARATOR.join([line, *(context or [])])
    return f"{HEAD_PREFIX if head else TAIL_PREFIX} {anchor} {SEPARATOR} " + sanitize([relation_text])[0]


def description_texts(descriptions, max_words: int) -> np.ndarray:
    """``(E,)`` raw descriptions -> ``(E,)`` sanitised first ``max_words`` words (``""`` where none)."""
    d = pd.Series(np.asarray(descriptions, dtype=object)).fillna("").astype(str)
    d = d.str.split().str[:max_words].str.join(" ")
    return np.where(d.to_numpy(dtype=object) == "", "", sanitize(d)).astype(object)


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
