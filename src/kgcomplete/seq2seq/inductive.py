"""Queries about an entity that is not in the graph, answered by a KGT5 run with real entities.

An embedding model has no row for an entity it never saw; KGT5 reads text. A new entity is given
by its text (a name, optionally a description) and, for a run trained with ``kgt5.context``, by a
few facts that link it to known entities; the input is verbalised exactly as in training
(:func:`~kgcomplete.seq2seq.verbalize.input_text`, :meth:`QueryEncoder.encode_text`) and decoded
under the entity trie, so every answer is an entity of the graph.

Facts (``--facts FILE``, or ``facts=`` in Python) are triples with ``?`` for the new entity::

    ?<TAB>born in<TAB>Paris        the new entity -born in-> Paris
    Marie Curie<TAB>spouse<TAB>?   Marie Curie -spouse-> the new entity

Entities and relations are matched by label or name as in every other query; the other side of a
fact must be in the graph. A run trained without context cannot read facts (it never saw them in
its input) and says so.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .verbalize import input_text, resolve_entities, resolve_relations

NEW = "?"


def read_facts(path: str | Path) -> list[tuple[str, str, str]]:
    """A facts file (three tab-separated fields a line, ``?`` for the new entity) -> the triples;
    a bad line stops with the file and line number."""
    facts = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 3:
                raise ValueError(f"{path}, line {i}: expected head<TAB>relation<TAB>tail, found {len(row)} field(s)")
            if (row[0] == NEW) == (row[2] == NEW):
                raise ValueError(f"{path}, line {i}: exactly one of head or tail must be '?' (the new entity)")
            facts.append((row[0], row[1], row[2]))
    return facts


def fact_ids(run, facts: Sequence[Sequence[str]]) -> np.ndarray:
    """Facts ``(head, relation, tail)`` with ``?`` for the new entity -> ``(F, 3)`` ids
    ``[relation, known entity, inverse]`` (``inverse``: the fact points to the new entity), the
    layout of :meth:`~kgcomplete.seq2seq.verbalize.EntityTexts.context_lines`."""
    out = np.zeros((len(facts), 3), dtype=np.int64)
    for i, fact in enumerate(facts):
        if len(fact) != 3 or (fact[0] == NEW) == (fact[2] == NEW):
            raise ValueError(f"fact {i + 1} {tuple(fact)!r}: give (head, relation, tail) with '?' for exactly one side")
        h, r, t = fact
        other, inverse = (t, 0) if h == NEW else (h, 1)
        e = resolve_entities([other], run.dataset, run.texts)[0]
        rel = resolve_relations([r], run.dataset, run.texts)[0]
        if e < 0:
            raise KeyError(f"fact {i + 1}: unknown entity {other!r}; close matches: "
                           f"{run.dataset.entities.close_matches(str(other))}")
        if rel < 0:
            raise KeyError(f"fact {i + 1}: unknown relation {r!r}; close matches: "
                           f"{run.dataset.relations.close_matches(str(r))}")
        out[i] = rel, e, inverse
    return out


def new_entity_input(run, text: str, relation: str, head: bool = False,
                     facts: Optional[Sequence[Sequence[str]]] = None, description: Optional[str] = None) -> str:
    """The model input of a query about a new entity (the training format of ``run``).

    ``head=False``: the new entity is the head, the answers are tails; ``head=True``: it is the
    tail, the answers are heads."""
    r = resolve_relations([relation], run.dataset, run.texts)[0]
    if r < 0:
        raise KeyError(f"unknown relation {relation!r}; close matches: {run.dataset.relations.close_matches(str(relation))}")
    if not str(text).strip():
        raise ValueError("the new entity's text is empty")
    kgt5 = run.config["kgt5"]
    context = bool(kgt5.get("context"))
    if facts and not context:
        raise ValueError(f"{run.path}: this run was trained without kgt5.context, so it cannot read facts; "
                         "train with --set kgt5.context=true, or leave out the facts")
    if description is not None and not kgt5.get("descriptions"):
        raise ValueError(f"{run.path}: this run was trained without kgt5.descriptions; leave out the description "
                         "or put it in the text")
    lines = list(run.texts.context_lines(fact_ids(run, facts))) if facts else ([] if context else None)
    return input_text(text, str(run.texts.relation[r]), head=head, context=lines, description=description,
                      context_format=context)


def predict_new_entity(run, text: str, relation: str, head: bool = False,
                       facts: Optional[Sequence[Sequence[str]]] = None, description: Optional[str] = None,
                       k: int = 10) -> list[dict]:
    """Top-``k`` known entities for ``(new, relation, ?)`` (or ``(?, relation, new)`` with
    ``head=True``) by constrained decoding; rows ``{rank, id, entity, name, score, known}`` as
    :meth:`KGT5Run.predict` (``score``: the sequence log-prob; ``known`` is None: the triple
    cannot be in the graph). Fewer than ``k`` rows when the beam finds fewer entities."""
    k = max(1, min(int(k), run.dataset.num_entities))
    inputs = run.encoder.encode_text([new_entity_input(run, text, relation, head, facts, description)])
    sc = run.default_scorer
    if sc.method != "beam" or sc.beam_size < k:
        sc = run.scorer(method="beam", beam_size=max(k, sc.beam_size if sc.method == "beam" else k))
    dev = next(run.model.parameters()).device
    ents, scores = sc.topk(None, None, head, inputs=(inputs[0].to(dev), inputs[1].to(dev)))
    rows = []
    for e, s in zip(ents[0].tolist(), scores[0].tolist()):
        if e < 0 or len(rows) == k:
            continue
        rows.append({"rank": len(rows) + 1, "id": int(e), "entity": str(run.dataset.entities.labels[e]),
                     "name": str(run.dataset.entity_text([e])[0]), "score": float(s), "known": None})
    return rows


__all__ = ["NEW", "fact_ids", "new_entity_input", "predict_new_entity", "read_facts"]
