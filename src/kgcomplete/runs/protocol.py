"""The run interface: what every opened run offers (:class:`Run`), and the shared parts behind it.

Run kinds -- :class:`~kgcomplete.runs.KGERun`, the sharded KGE run, a KGT5 run (and its QA
subclass), a KGT5 + KGE ensemble -- all implement :class:`Run`, so serving, reports and embedding
export talk to one interface and never probe a run for what it can do. :class:`RunBase` holds the
generic implementations built on ``dataset``, ``known`` and ``score_queries`` that a run kind keeps
unless it has a better one; :func:`as_run` turns anything that merely scores queries and has a
``dataset`` into a :class:`Run` (:class:`ScorerRun`).

Also here, because every run kind uses them: :class:`KnownTriples` (which split holds a triple),
:func:`top_k_predictions` / :func:`prediction_rows` (top-k rows), :func:`resolve` (names -> ids) and
:func:`relation_labels`. This module is core: it names no feature package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import torch

from ..config import Config, EvalConfig
from ..data.dataset import Dataset
from ..evaluation.evaluator import evaluate as evaluate_scorer
from ..evaluation.filter_index import FilterIndex

#: elements (queries x entities) scored at once by :func:`kgcomplete.evaluation.evaluate` by default
DEFAULT_EVAL_BATCH_ELEMENTS = EvalConfig.batch_elements


# ------------------------------------------------------------------ the protocol
@runtime_checkable
class Run(Protocol):
    """An opened run: a scorer over a dataset, with evaluation, prediction and name lookup.

    Every member is required; a run that lacks a capability says so through the member's value
    (``path`` None for a run without a folder, ``entity_embeddings()`` None for a run without an
    embedding table) instead of leaving the member out.

    Attributes:
        dataset: the run's :class:`Dataset` (vocabularies, splits, names).
        path: the run folder, or None for a run that lives only in memory.
        known: the known triples of the dataset (filter indexes per split, built on first use).
        eval_batch_elements: queries x entities scored at once by :meth:`evaluate` (ranking the
            same way elsewhere, e.g. in a report, gives the same metrics).
    """

    dataset: Dataset
    path: Optional[Path]
    known: "KnownTriples"
    eval_batch_elements: int

    def config_dict(self) -> dict:
        """The run's configuration as a plain dict (the content of ``config.yaml``; ``{}`` if none)."""

    def score_queries(self, anchor, r, candidates=None, head: bool = False):
        """``(B,)`` anchors and relations -> ``(B, C)`` scores (C = all entities if candidates is None)."""

    def score_triples(self, triples) -> np.ndarray:
        """``(B, 3)`` ids -> ``(B,)`` scores."""

    def evaluate(self, split: str = "test", filtered: bool = True, progress: bool = False) -> dict:
        """Filtered (default) or raw ranking metrics on a split."""

    def predict(self, head: Optional[str] = None, relation: Optional[str] = None, tail: Optional[str] = None,
                k: int = 10, exclude_known: bool = False) -> list[dict]:
        """Top-k rows ``{rank, id, entity, name, score, known}`` of ``(head, relation, ?)`` or ``(?, relation, tail)``."""

    def predict_ids(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int = 10,
                    exclude_known: bool = False) -> list[list[dict]]:
        """Batched top-k for ``(B,)`` anchor and relation ids (rows as in :meth:`predict`)."""

    def filter_index(self, which: str = "all") -> FilterIndex:
        """Known triples of ``all`` splits or of one split (what filtered ranking removes)."""

    @property
    def device(self) -> torch.device:
        """Where ``score_queries`` returns its scores (evaluation chunks are made there)."""

    def known_split(self, triples: np.ndarray) -> list[Optional[str]]:
        """For ``(B, 3)`` triples: the first split that contains each, or None."""

    def resolve_entity(self, text: str) -> int:
        """Entity id from its label or (unique) name; :class:`UnknownNameError` (a KeyError) otherwise."""

    def resolve_relation(self, text: str) -> int:
        """Relation id from its label or (unique) name; :class:`UnknownNameError` (a KeyError) otherwise."""

    def entity_embeddings(self) -> Optional[np.ndarray]:
        """``(E, d)`` float32 entity embeddings (complex tables as ``[re, im]`` pairs), or None when
        the run has no entity embedding table in memory (text models, sharded runs)."""

    def relation_embeddings(self) -> Optional[np.ndarray]:
        """``(R', d)`` float32 relation embeddings (reciprocal relations included), or None."""


@runtime_checkable
class ExportableRun(Run, Protocol):
    """A run that writes its embeddings and vocabularies to a folder (KGE runs, sharded or not)."""

    def export(self, out: Optional[str | Path] = None) -> dict[str, Path]:
        """Write ``entity_embeddings.npy``, ``relation_embeddings.npy``, ``entities.tsv``,
        ``relations.tsv`` into ``out`` (default ``RUN/export``); returns the paths by name."""


# ------------------------------------------------------------------ shared parts
class RunBase:
    """Generic :class:`Run` members on top of ``dataset``, ``known`` and ``score_queries``.

    A run kind subclasses this, sets ``dataset``, ``path`` and ``known``, implements
    ``score_queries`` and ``config_dict`` and overrides whatever it does better.
    """

    dataset: Dataset
    path: Optional[Path]
    known: "KnownTriples"
    eval_batch_elements: int = DEFAULT_EVAL_BATCH_ELEMENTS

    def config_dict(self) -> dict:
        return {}

    def score_queries(self, anchor, r, candidates=None, head: bool = False):
        raise NotImplementedError(f"{type(self).__name__} does not score queries")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def score_triples(self, triples) -> np.ndarray:
        """``(B, 3)`` ids -> ``(B,)`` scores, as candidates of tail queries."""
        t = np.asarray(triples, np.int64).reshape(-1, 3)
        with torch.no_grad():
            s = self.score_queries(torch.as_tensor(t[:, 0]), torch.as_tensor(t[:, 1]), torch.as_tensor(t[:, 2:3]),
                                   head=False)
        return torch.as_tensor(s).float()[:, 0].cpu().numpy()

    def filter_index(self, which: str = "all") -> FilterIndex:
        """Known triples of ``all`` splits or of one split (built once, cached in ``known``)."""
        return self.known.index(which)

    def evaluate(self, split: str = "test", filtered: bool = True, progress: bool = False) -> dict:
        return evaluate_scorer(self, self.dataset, split, filtered=filtered, chunk_elements=self.eval_batch_elements,
                               progress=progress, filter_index=self.filter_index("all") if filtered else None,
                               device=self.device)

    def resolve_entity(self, text: str) -> int:
        """Entity id from its label or (unique) name; KeyError with close matches otherwise."""
        return resolve(self.dataset, text, "entity")

    def resolve_relation(self, text: str) -> int:
        return resolve(self.dataset, text, "relation")

    def predict(
        self, head: Optional[str] = None, relation: Optional[str] = None, tail: Optional[str] = None, k: int = 10,
        exclude_known: bool = False,
    ) -> list[dict]:
        """Top-k tails of ``(head, relation, ?)`` or heads of ``(?, relation, tail)``.

        Returns ``[{"rank", "id", "entity", "name", "score", "known"}]``; ``known`` names the split
        that already holds the triple (``train``/``valid``/``test``) or is None.
        """
        if relation is None or (head is None) == (tail is None):
            raise ValueError("give a relation and exactly one of head or tail")
        r = self.resolve_relation(relation)
        is_head_query = head is None
        anchor = self.resolve_entity(tail if is_head_query else head)
        return self.predict_ids(np.array([anchor]), np.array([r]), is_head_query, k, exclude_known)[0]

    def predict_ids(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int = 10, exclude_known: bool = False) -> list[list[dict]]:
        """Batched top-k for ``(B,)`` anchors/relations (used by ``predict`` and the server)."""
        return top_k_predictions(self, self.dataset, self.known, anchor, r, head, k, exclude_known)

    def known_split(self, triples: np.ndarray) -> list[Optional[str]]:
        """For ``(B, 3)`` triples: the first split that contains each, or None."""
        return self.known.split_of(triples)

    def entity_embeddings(self) -> Optional[np.ndarray]:
        return None

    def relation_embeddings(self) -> Optional[np.ndarray]:
        return None


class ScorerRun(RunBase):
    """A :class:`Run` around a bare scorer (anything with ``score_queries``) and its dataset."""

    def __init__(self, scorer: Any, dataset: Dataset, config: Optional[dict] = None, path: Optional[str | Path] = None):
        self.scorer, self.dataset = scorer, dataset
        self.path = Path(path) if path else None
        self.known = KnownTriples(dataset)
        self._config = dict(config or {})

    def __repr__(self) -> str:
        return f"ScorerRun({type(self.scorer).__name__}, dataset={self.dataset.name})"

    def config_dict(self) -> dict:
        return self._config

    def score_queries(self, anchor, r, candidates=None, head: bool = False):
        return self.scorer.score_queries(anchor, r, candidates, head=head)


def as_run(obj: Any) -> Run:
    """``obj`` itself when it is a :class:`Run`; otherwise a :class:`ScorerRun` around an object
    with ``dataset`` and ``score_queries`` (and, optionally, ``config`` -- a dict or a
    :class:`Config` -- and ``path``). This is the one place that duck-types a run."""
    if isinstance(obj, Run):
        return obj
    config = getattr(obj, "config", None)
    config = config.to_dict() if isinstance(config, Config) else config if isinstance(config, dict) else None
    return ScorerRun(obj, obj.dataset, config, getattr(obj, "path", None))


def embedding_matrix(weight: Any) -> np.ndarray:
    """An embedding table (tensor or array, any float or complex dtype) -> ``(n, d)`` float32 array;
    a complex table becomes ``[re, im]`` pairs per coordinate."""
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu()
        if weight.is_complex():
            weight = torch.view_as_real(weight).flatten(1)
        weight = weight.float().numpy()
    return np.asarray(weight, dtype=np.float32).reshape(len(weight), -1)


# ------------------------------------------------------------------ known triples, top-k, names
class KnownTriples:
    """Lazily built :class:`FilterIndex` per split (``"all"`` = every split) of a dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._indexes: dict[str, FilterIndex] = {}

    def index(self, which: str = "all") -> FilterIndex:
        if which not in self._indexes:
            triples = self.dataset.all_triples() if which == "all" else self.dataset.splits[which]
            self._indexes[which] = FilterIndex(triples, self.dataset.num_relations)
        return self._indexes[which]

    def split_of(self, triples: np.ndarray) -> list[Optional[str]]:
        """For ``(B, 3)`` triples: the first split that contains each, or None."""
        status = np.full(len(triples), None, dtype=object)
        for split in self.dataset.splits:  # a handful of splits, each check vectorised
            hit = self.index(split).contains(triples) & (status == None)  # noqa: E711
            status[hit] = split
        return status.tolist()


def top_k_predictions(scorer, dataset: Dataset, known: KnownTriples, anchor: np.ndarray, r: np.ndarray,
                      head: bool, k: int = 10, exclude_known: bool = False) -> list[list[dict]]:
    """Top-k answers of ``(B,)`` queries from any scorer (``score_queries``), as rows
    ``{"rank", "id", "entity", "name", "score", "probability", "known"}``; ``probability`` is the
    softmax of the score over all entities as candidates of the query (from the same scores, known
    answers included); answers scoring -inf (never generated by a text model) are left out, so a
    list may be shorter than k."""
    anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
    k = max(1, min(int(k), dataset.num_entities))
    with torch.no_grad():
        scores = torch.as_tensor(scorer.score_queries(torch.as_tensor(anchor), torch.as_tensor(r), None, head=head)).float()
        norms = torch.logsumexp(scores.double(), dim=1).cpu().numpy()
        if exclude_known:
            q, ent = known.index("all").known(anchor, r, head=head)
            scores[torch.as_tensor(q, device=scores.device), torch.as_tensor(ent, device=scores.device)] = float("-inf")
        top = torch.topk(scores, k, dim=1)
    return prediction_rows(dataset, known, anchor, r, head, top.indices.cpu().numpy(), top.values.cpu().numpy(), norms)


def prediction_rows(dataset: Dataset, known: KnownTriples, anchor: np.ndarray, r: np.ndarray, head: bool,
                    ids: np.ndarray, vals: np.ndarray, norms: Optional[np.ndarray] = None) -> list[list[dict]]:
    """Top-k ``ids``/``vals`` ``(B, k)`` of ``(B,)`` queries -> per query the rows ``{"rank", "id",
    "entity", "name", "score", "known"}``, non-finite scores left out; with ``norms (B,)`` (each
    query's log-sum-exp over all entities) also ``probability = exp(score - norm)``."""
    keep = np.isfinite(vals)  # (B, k)
    q, rows, sc = np.nonzero(keep)[0], ids[keep], vals[keep]  # all queries' answers, query-major
    a_, r_ = anchor[q], r[q]
    triples = np.stack([rows, r_, a_], 1) if head else np.stack([a_, r_, rows], 1)
    status = known.split_of(triples) if len(rows) else []  # one lookup per split for the whole batch
    labels, names = dataset.entities.labels[rows], dataset.entity_text(rows)
    rank = np.cumsum(keep, axis=1)[keep]
    records = [{"rank": int(rank[i]), "id": int(rows[i]), "entity": str(labels[i]), "name": str(names[i]),
                "score": float(sc[i]), "known": status[i]} for i in range(len(rows))]
    if norms is not None:
        probs = np.exp(sc - np.asarray(norms, np.float64)[q])
        for rec, p in zip(records, probs):
            rec["probability"] = float(p) if np.isfinite(p) else None
    bounds = np.cumsum(keep.sum(1))
    return [records[lo:hi] for lo, hi in zip(np.concatenate([[0], bounds[:-1]]), bounds)]


def relation_labels(dataset: Dataset, n: int) -> np.ndarray:
    """Labels of ``n`` relation rows: the dataset's, then ``label^-1`` for reciprocal relations."""
    labels = dataset.relations.labels
    if n > len(labels):  # reciprocal relations
        labels = np.concatenate([labels, np.array([f"{x}^-1" for x in labels], dtype=object)])
    return labels


class UnknownNameError(KeyError):
    """An entity/relation string that names nothing; ``close_matches`` lists suggestions."""

    def __init__(self, message: str, close_matches: list[str]):
        super().__init__(message)
        self.close_matches = close_matches


def resolve(dataset: Dataset, text: str, kind: str) -> int:
    """The id of an entity/relation (``kind``) from its label or its unique name; otherwise
    :class:`UnknownNameError` with close matches from indexes built once (no scan per call)."""
    vocab = dataset.entities if kind == "entity" else dataset.relations
    i = vocab.encode([text])[0]
    if i >= 0:
        return int(i)
    names = dataset.name_index(kind)
    if names is not None:
        hits = names.ids(text)
        if len(hits) == 1:
            return int(hits[0])
        if len(hits) > 1:
            raise KeyError(f"{kind} name {text!r} is ambiguous: labels {vocab.labels[hits[:5]].tolist()}")
    close = vocab.close_matches(text)
    if names is not None and len(close) < 5:
        close += [n for n in names.close_matches(text) if n not in close][: 5 - len(close)]
    hint = f"; close matches: {close}" if close else f"; no close match among {len(vocab)} {kind} labels"
    raise UnknownNameError(f"unknown {kind} {shorten(text)!r}{hint}", close)


#: the longest user value echoed back in a message (a 10 MB name is not sent back twice)
MAX_ECHO = 200


def shorten(value: Any) -> Any:
    """``value`` as it may be echoed in a message: strings cut to :data:`MAX_ECHO` characters."""
    if isinstance(value, str) and len(value) > MAX_ECHO:
        return value[:MAX_ECHO] + f"... ({len(value)} characters)"
    return value
