"""Batch work over a run: query files, triple files, their results as rows -- shared by the CLI
(``kgc predict --file``, ``kgc score --file``) and the server (``POST /api/batch``, the explorer's
batch view), so both read the same format and write the same columns.

The file format (tab-separated, one line each, no header; blank lines are errors)::

    head<TAB>relation<TAB>?       rank tails of (head, relation, ?)
    ?<TAB>relation<TAB>tail       rank heads of (?, relation, tail)
    head<TAB>relation<TAB>tail    a triple (kgc score; in a query file: an error)

Entities and relations are given by label or by (unique) name, as everywhere else. Files are read
in chunks (:func:`kgcomplete.data.readers.iter_tsv_chunks`: strict fields, errors naming file and
line); each chunk is resolved to ids at once (one vocabulary lookup per column; names only for
labels that miss) and answered by the run's batched ``predict_ids`` / ``score_triples``, in
sub-batches of at most ``eval_batch_elements`` scores. Only numpy/pandas/torch: no web framework.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import IO, Any, Iterator, Optional

import numpy as np
import pandas as pd

from ..data.readers import DataFormatError, iter_tsv_chunks
from ..runs.protocol import shorten

#: the placeholder for the entity to predict
MISSING = "?"
#: lines read (and answered) per chunk
CHUNK_LINES = 4096

#: columns of a prediction row (TSV / CSV), one row per answer
PREDICTION_COLUMNS = ("line", "head", "relation", "tail", "predict", "rank", "entity", "name", "score",
                      "probability", "known")
#: columns of a scored triple
SCORE_COLUMNS = ("line", "head", "relation", "tail", "score", "known")

FORMAT_HELP = ("one query per line, three tab-separated fields head, relation, tail with '?' for the "
               "entity to predict: 'virus<TAB>causes<TAB>?' ranks tails, '?<TAB>causes<TAB>cell' ranks heads; "
               "labels or names")


class BatchInputError(ValueError):
    """A bad line of a batch file; the message names the file and the line."""


# ------------------------------------------------------------------ names -> ids
def resolve_column(run, values: np.ndarray, kind: str, path: Any, first_line: int) -> np.ndarray:
    """Labels or names ``values`` of one column -> ids: one vocabulary lookup for the column, the
    run's name lookup (``resolve_entity`` / ``resolve_relation``) only for distinct labels that miss.
    An unknown one raises :class:`BatchInputError` naming ``path`` and its line (``first_line`` is
    the 1-based line of ``values[0]``)."""
    vocab = run.dataset.entities if kind == "entity" else run.dataset.relations
    ids = vocab.encode(values)
    miss = np.flatnonzero(ids < 0)
    if len(miss):
        codes, uniq = pd.factorize(np.asarray(values[miss], dtype=object))
        lookup = run.resolve_entity if kind == "entity" else run.resolve_relation
        found = np.empty(len(uniq), np.int64)
        for j, text in enumerate(uniq):  # distinct misses only (names, or an error at the first one)
            try:
                found[j] = lookup(str(text))
            except KeyError as e:
                line = first_line + int(miss[np.flatnonzero(codes == j)[0]])
                raise BatchInputError(f"{path}, line {line}: {e.args[0] if e.args else e}") from None
        ids[miss] = found[codes]
    return ids


def parse_queries(run, frame: pd.DataFrame, path: Any, first_line: int) -> dict:
    """A chunk of query lines (columns 0, 1, 2) -> ``anchor``, ``r``, ``head`` (True: predict the
    head) arrays; a line without exactly one ``?`` in head/tail raises naming file and line."""
    h, rel, t = (frame[i].to_numpy(dtype=object) for i in range(3))
    qh, qt = h == MISSING, t == MISSING
    bad = np.flatnonzero(qh == qt) if len(h) else np.array([], np.int64)
    if len(bad):
        i = int(bad[0])
        what = "both head and tail are '?'" if qh[i] else "no '?' for the entity to predict"
        line = "\t".join((str(h[i]), str(rel[i]), str(t[i])))
        raise BatchInputError(f"{path}, line {first_line + i}: {what} in {shorten(line)!r} "
                              f"(expected head<TAB>relation<TAB>? or ?<TAB>relation<TAB>tail)")
    bad_rel = np.flatnonzero(rel == MISSING)
    if len(bad_rel):
        raise BatchInputError(f"{path}, line {first_line + int(bad_rel[0])}: the relation cannot be '?'")
    anchor_text = np.where(qh, t, h)
    return {"anchor": resolve_column(run, anchor_text, "entity", path, first_line),
            "r": resolve_column(run, rel, "relation", path, first_line), "head": qh}


def parse_triples(run, frame: pd.DataFrame, path: Any, first_line: int) -> np.ndarray:
    """A chunk of triple lines -> ``(n, 3)`` ids (names resolved, errors naming file and line)."""
    cols = [frame[i].to_numpy(dtype=object) for i in range(3)]
    q = np.flatnonzero((cols[0] == MISSING) | (cols[1] == MISSING) | (cols[2] == MISSING))
    if len(q):
        raise BatchInputError(f"{path}, line {first_line + int(q[0])}: a '?' in a triple to score "
                              f"(a query: use kgc predict --file)")
    return np.stack([resolve_column(run, cols[0], "entity", path, first_line),
                     resolve_column(run, cols[1], "relation", path, first_line),
                     resolve_column(run, cols[2], "entity", path, first_line)], 1)


# ------------------------------------------------------------------ answers
def queries_per_call(run) -> int:
    """How many queries one ``predict_ids`` call scores: ``eval_batch_elements`` / entities."""
    elements = int(getattr(run, "eval_batch_elements", 0) or 1 << 24)
    return max(1, min(CHUNK_LINES, elements // max(1, run.dataset.num_entities)))


def softmax_probabilities(run, anchor: np.ndarray, r: np.ndarray, head: bool, rows: list[list[dict]]) -> None:
    """Add ``probability`` to every row: the softmax of its score over all entities as candidates
    of its query (``exp(score - logsumexp(scores of the query))``); one more scoring pass."""
    import torch

    if not len(anchor):
        return
    with torch.no_grad():
        scores = torch.as_tensor(run.score_queries(torch.as_tensor(anchor), torch.as_tensor(r), None, head=head))
        lse = torch.logsumexp(scores.double(), dim=1).cpu().numpy()
    for norm, qrows in zip(lse, rows):
        for row in qrows:
            s = row["score"]
            p = float(np.exp(s - norm)) if s is not None and np.isfinite(s) and np.isfinite(norm) else None
            row["probability"] = p


def answer_queries(run, q: dict, k: int, exclude_known: bool, probabilities: bool = False) -> list[list[dict]]:
    """Top-k rows per query of a parsed chunk (:func:`parse_queries`), in the chunk's order: one
    ``predict_ids`` call per direction and sub-batch."""
    out: list = [None] * len(q["anchor"])
    step = queries_per_call(run)
    for head in (False, True):
        idx = np.flatnonzero(q["head"] == head)
        for lo in range(0, len(idx), step):
            part = idx[lo:lo + step]
            rows = run.predict_ids(q["anchor"][part], q["r"][part], head, k, exclude_known)
            if probabilities and any("probability" not in row for qrows in rows for row in qrows):
                softmax_probabilities(run, q["anchor"][part], q["r"][part], head, rows)
            for i, res in zip(part, rows):
                out[i] = res
    return out


def score_chunk(run, ids: np.ndarray) -> tuple[np.ndarray, list[Optional[str]]]:
    """Scores and the split that knows each ``(n, 3)`` triple (None: new), in sub-batches."""
    step = max(1, queries_per_call(run) * 64)  # one score per triple: far more fit in a call
    scores = np.concatenate([np.asarray(run.score_triples(ids[lo:lo + step]), np.float64)
                             for lo in range(0, len(ids), step)]) if len(ids) else np.zeros(0)
    return scores, list(run.known_split(ids)) if len(ids) else []


def _finite(x) -> Optional[float]:
    return float(x) if x is not None and np.isfinite(x) else None


# ------------------------------------------------------------------ whole files
def iter_prediction_results(run, path: str | Path, k: int = 10, exclude_known: bool = False,
                            probabilities: bool = False, chunk_lines: int = CHUNK_LINES,
                            name: Optional[str] = None) -> Iterator[dict]:
    """Stream a query file: one result ``{"line", "query": {head, relation, tail, predict, k},
    "predictions": [rows]}`` per line (rows as ``Run.predict``, plus ``probability`` if asked),
    reading ``chunk_lines`` lines at a time. ``name``: how errors name the file (default its path)."""
    labels, rel_labels = run.dataset.entities.labels, run.dataset.relations.labels
    where = name or path
    for start, frame in _chunks(path, chunk_lines, where):
        q = parse_queries(run, frame, where, start + 1)
        answers = answer_queries(run, q, k, exclude_known, probabilities)
        for i, rows in enumerate(answers):
            a, r, head = int(q["anchor"][i]), int(q["r"][i]), bool(q["head"][i])
            for row in rows:
                row["score"] = _finite(row["score"])
            yield {"line": start + i + 1,
                   "query": {"head": None if head else str(labels[a]), "relation": str(rel_labels[r]),
                             "tail": str(labels[a]) if head else None, "predict": "head" if head else "tail", "k": k},
                   "predictions": rows}


def iter_score_results(run, path: str | Path, chunk_lines: int = CHUNK_LINES,
                       name: Optional[str] = None) -> Iterator[dict]:
    """Stream a triple file: ``{"line", "head", "relation", "tail", "score", "known"}`` per line."""
    labels, rel_labels = run.dataset.entities.labels, run.dataset.relations.labels
    where = name or path
    for start, frame in _chunks(path, chunk_lines, where):
        ids = parse_triples(run, frame, where, start + 1)
        scores, known = score_chunk(run, ids)
        for i in range(len(ids)):
            h, r, t = ids[i]
            yield {"line": start + i + 1, "head": str(labels[h]), "relation": str(rel_labels[r]),
                   "tail": str(labels[t]), "score": _finite(scores[i]), "known": known[i]}


def _chunks(path: str | Path, chunk_lines: int, where: Any) -> Iterator[tuple[int, pd.DataFrame]]:
    try:
        yield from iter_tsv_chunks(path, 3, chunk_lines)
    except pd.errors.EmptyDataError:  # an empty file: no lines, no results
        return
    except DataFormatError as e:
        if str(where) != str(path):  # a temporary copy (server upload): name what the user gave
            raise BatchInputError(str(e).replace(str(path), str(where), 1)) from None
        raise


# ------------------------------------------------------------------ rows out
def prediction_records(result: dict) -> Iterator[dict]:
    """One flat record (:data:`PREDICTION_COLUMNS`) per answer of a prediction result."""
    q = result["query"]
    for row in result["predictions"]:
        yield {"line": result["line"], "head": q["head"] or MISSING, "relation": q["relation"],
               "tail": q["tail"] or MISSING, "predict": q["predict"], "rank": row["rank"], "entity": row["entity"],
               "name": row["name"], "score": row["score"], "probability": row.get("probability"),
               "known": row["known"]}


class RowWriter:
    """Writes results as ``tsv`` / ``csv`` (a header, then one row per answer or triple; empty
    cells for None) or ``jsonl`` (one JSON object per result) to a text stream."""

    def __init__(self, stream: IO[str], fmt: str, kind: str = "predict"):
        if fmt not in ("tsv", "csv", "jsonl"):
            raise ValueError(f"format {fmt!r}: expected tsv, csv or jsonl")
        self.stream, self.fmt, self.kind = stream, fmt, kind
        self.columns = PREDICTION_COLUMNS if kind == "predict" else SCORE_COLUMNS
        self._csv = None
        if fmt != "jsonl":
            self._csv = csv.writer(stream, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n",
                                   quoting=csv.QUOTE_MINIMAL)
            self._csv.writerow(self.columns)

    def write(self, result: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(result, ensure_ascii=False) + "\n")
            return
        records = prediction_records(result) if self.kind == "predict" else [result]
        for rec in records:
            self._csv.writerow(["" if rec.get(c) is None else rec[c] for c in self.columns])


def to_text(results: list[dict], fmt: str, kind: str = "predict") -> str:
    """Results as one ``tsv`` / ``csv`` / ``jsonl`` text (the server's downloads)."""
    buf = io.StringIO()
    w = RowWriter(buf, fmt, kind)
    for r in results:
        w.write(r)
    return buf.getvalue()


__all__ = ["BatchInputError", "CHUNK_LINES", "FORMAT_HELP", "MISSING", "PREDICTION_COLUMNS", "RowWriter",
           "SCORE_COLUMNS", "answer_queries", "iter_prediction_results", "iter_score_results", "parse_queries",
           "parse_triples", "prediction_records", "resolve_column", "score_chunk", "softmax_probabilities",
           "to_text"]
