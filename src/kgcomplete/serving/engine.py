"""Framework-free query engine behind ``kgc serve``: name lookup, autocomplete, batched top-k.

:class:`QueryEngine` talks to a run only through the run interface
(:class:`~kgcomplete.runs.protocol.Run`), which every run kind implements -- a KGE run, a sharded
run, a KGT5 run, an ensemble. Anything else with ``dataset`` and ``score_queries`` is served through
:func:`~kgcomplete.runs.protocol.as_run` (generic implementations built on ``score_queries``).

:class:`MicroBatcher` groups top-k queries that arrive within a few milliseconds into one
``predict_ids`` call, executed on a single worker thread (the model is never entered
concurrently, and the event loop keeps accepting requests while it runs).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..runs.protocol import Run, UnknownNameError, as_run, shorten
from .batch import softmax_probabilities

_MAX_CHAR = "\U0010ffff"


class UnknownName(KeyError):
    """An entity/relation name that is not in the run's vocabulary."""

    def __init__(self, kind: str, text: str, close_matches: list[str], message: str = ""):
        super().__init__(message or f"unknown {kind} {text!r}")
        self.kind, self.text, self.close_matches = kind, text, close_matches
        self.message = message or f"unknown {kind} {text!r}"

    def __str__(self) -> str:
        return self.message


# ------------------------------------------------------------------ autocomplete
class PrefixIndex:
    """Case-insensitive prefix search over labels and names, from their start or from any word.

    Built once: keys are normalised (lower case; runs of spaces, ``_``, ``-``, ``/``, ``.``, ``,``,
    ``:`` and brackets become one space) and every word suffix is a key too, so
    ``"cell or molecular dysfunction"`` is found by ``"cell"``, ``"molec"`` and ``"molecular dys"``,
    and ``acquired_abnormality`` by ``"acquired ab"``. All (key, id) pairs sit in one sorted array;
    a query is two ``np.searchsorted`` calls plus a vectorised ranking of the hits -- no Python
    loop over the vocabulary per request.
    """

    SEPARATORS = r"[\s_\-/.,:()]+"

    def __init__(self, labels: np.ndarray, names: Optional[np.ndarray] = None, max_scan: int = 5000):
        labels = np.asarray(labels, dtype=object).astype(str)
        names = labels if names is None else np.asarray(names, dtype=object).astype(str)
        self.labels, self.names = labels, names
        self.max_scan = max_scan
        ids = np.arange(len(labels))
        frames = []
        for src in (pd.Series(labels), pd.Series(names)):
            key = src.str.lower().str.replace(self.SEPARATORS, " ", regex=True).str.strip()
            frames.append(pd.DataFrame({"key": key.to_numpy(dtype=object), "id": ids, "word": 0}))
            # word suffixes: drop one leading word per pass from the keys that still have one
            # (a loop over word positions, vectorised over the vocabulary)
            rest = key[key.str.contains(" ", regex=False)]
            while len(rest):
                rest = rest.str.split(" ", n=1).str[1]
                frames.append(pd.DataFrame({"key": rest.to_numpy(dtype=object),
                                            "id": rest.index.to_numpy(np.int64), "word": 1}))
                rest = rest[rest.str.contains(" ", regex=False)]
        df = pd.concat(frames, ignore_index=True)
        df = df[df["key"].str.len() > 0].sort_values(["key", "word", "id"], kind="stable")
        df = df.drop_duplicates(["key", "id"])
        self._keys = df["key"].to_numpy(dtype=object)
        self._ids = df["id"].to_numpy(np.int64)
        self._word = df["word"].to_numpy(np.int8)
        self._name_len = pd.Series(names).str.len().to_numpy(np.int64)

    @classmethod
    def normalise(cls, text: str) -> str:
        import re

        return " ".join(w for w in re.split(cls.SEPARATORS, text.lower()) if w)

    def search(self, prefix: str, limit: int = 10) -> np.ndarray:
        """Ids whose label/name (from its start or from a word) starts with ``prefix``; best first.

        Order: matches from the start before word matches, then shorter names, then id.
        An empty prefix lists the first ``limit`` ids.
        """
        p = self.normalise(prefix)
        if not p:
            return np.arange(min(limit, len(self.labels)))
        lo = np.searchsorted(self._keys, p, side="left")
        hi = np.searchsorted(self._keys, p + _MAX_CHAR, side="left")
        hi = min(hi, lo + self.max_scan)
        ids, word = self._ids[lo:hi], self._word[lo:hi]
        if len(ids) == 0:
            return ids
        order = np.lexsort((ids, self._name_len[ids], word))
        ids = ids[order]
        _, first = np.unique(ids, return_index=True)
        return ids[np.sort(first)][:limit]


# ------------------------------------------------------------------ the engine
def _jsonable(obj: Any) -> Any:
    """Metrics/config -> strict JSON (NaN/inf become None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if np.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


class QueryEngine:
    """Everything the server needs from a run, loaded once.

    Args:
        run: an opened run (``kgcomplete.load_run(path)``, a KGT5 run or an ensemble): a
            :class:`~kgcomplete.runs.protocol.Run`, or an object with ``dataset`` and
            ``score_queries`` (see :func:`~kgcomplete.runs.protocol.as_run`).

    ``run`` is the object given (its type names the run in ``/api/health``); ``runner`` is its
    :class:`~kgcomplete.runs.protocol.Run` view, which every call goes through.
    """

    def __init__(self, run: Any):
        self.run = run
        self.runner: Run = as_run(run)
        self.dataset = self.runner.dataset
        ds = self.dataset
        self.num_entities = int(ds.num_entities)
        self.num_relations = int(ds.num_relations)
        self.entity_labels = ds.entities.labels.astype(str)
        self.entity_names = ds.entity_text(np.arange(self.num_entities)).astype(str)
        self.relation_labels = ds.relations.labels.astype(str)
        self.relation_names = ds.relation_text(np.arange(self.num_relations)).astype(str)
        self.entity_index = PrefixIndex(self.entity_labels, self.entity_names)
        self.relation_index = PrefixIndex(self.relation_labels, self.relation_names)
        self._lock = threading.Lock()
        self._facts: Optional["FactIndex"] = None  # built on first use (facts())

    # ---------------------------------------------------------------- run info
    @property
    def path(self) -> Optional[Path]:
        p = self.runner.path
        return Path(p) if p else None

    @property
    def model_name(self) -> str:
        cfg = self.runner.config_dict()
        return str((cfg.get("model") or {}).get("name") or type(self.run).__name__)

    def metrics(self) -> dict:
        p = self.path
        if p is not None and (p / "metrics.json").exists():
            return json.loads((p / "metrics.json").read_text())
        return {}

    def info(self) -> dict:
        from ..runs.files import read_log

        p = self.path
        log = read_log(p) if p is not None else []
        return _jsonable({
            "path": str(p) if p else None,
            "run_type": type(self.run).__name__,
            "model": self.model_name,
            "dataset": self.dataset.summary(),
            "config": self.runner.config_dict(),
            "metrics": self.metrics(),
            "epochs_logged": len(log),
            "log": log,
        })

    # ---------------------------------------------------------------- names
    def _resolve(self, text: str, kind: str) -> int:
        try:
            if kind == "entity":
                return int(self.runner.resolve_entity(text))
            return int(self.runner.resolve_relation(text))
        except KeyError as e:
            msg = str(e.args[0]) if e.args else f"unknown {kind} {text!r}"
            if isinstance(e, UnknownNameError):  # close matches already computed by runs.protocol.resolve
                close = list(e.close_matches)
            else:
                vocab = self.dataset.entities if kind == "entity" else self.dataset.relations
                close = list(vocab.close_matches(str(text)))
            names = self.entity_names if kind == "entity" else self.relation_names
            index = self.entity_index if kind == "entity" else self.relation_index
            if len(close) < 5:  # also suggest by (word-)prefix of the human-readable names
                close += [str(names[i]) for i in index.search(str(text)[:3], 5) if str(names[i]) not in close]
            raise UnknownName(kind, shorten(text), close[:5], msg.split("; close matches")[0]) from None

    def build_name_indexes(self) -> None:
        """Build the close-match indexes of labels and names now (server start), not in a request."""
        for kind, vocab in (("entity", self.dataset.entities), ("relation", self.dataset.relations)):
            vocab.fuzzy_index()
            self.dataset.name_index(kind)

    def resolve_entity(self, text: str) -> int:
        return self._resolve(text, "entity")

    def resolve_relation(self, text: str) -> int:
        return self._resolve(text, "relation")

    def complete(self, kind: str, prefix: str, limit: int = 10) -> list[dict]:
        """Autocomplete rows ``{id, label, name}`` for entities or relations."""
        if kind == "entity":
            ids, labels, names = self.entity_index.search(prefix, limit), self.entity_labels, self.entity_names
        else:
            ids, labels, names = self.relation_index.search(prefix, limit), self.relation_labels, self.relation_names
        return [{"id": int(i), "label": str(labels[i]), "name": str(names[i])} for i in ids]

    # ---------------------------------------------------------------- scoring
    def known_split(self, triples: np.ndarray) -> list[Optional[str]]:
        """First split (train/valid/test) that holds each ``(B, 3)`` triple, or None."""
        return list(self.runner.known_split(triples))

    def predict_ids(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int, exclude_known: bool = False) -> list[list[dict]]:
        """Batched top-k (thread-safe: calls into the model are serialised); every row also has
        ``probability``, the softmax of its score over all entities as candidates of its query."""
        anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
        with self._lock:
            rows = self.runner.predict_ids(anchor, r, head, k, exclude_known)
            for qrows in rows:  # JSON has no infinities (KGT5: entities it did not generate)
                for row in qrows:
                    row["score"] = float(row["score"]) if np.isfinite(row["score"]) else None
            if any("probability" not in row for qrows in rows for row in qrows):  # a run that gives none
                softmax_probabilities(self.runner, anchor, r, head, rows)
        return rows

    # ---------------------------------------------------------------- entity pages
    def facts(self) -> "FactIndex":
        """The known triples of every split, indexed by head and by tail (built on first use)."""
        with self._lock:
            if self._facts is None:
                self._facts = FactIndex(self.dataset)
            return self._facts

    def entity_row(self, e: int) -> dict:
        return {"id": int(e), "label": str(self.entity_labels[e]), "name": str(self.entity_names[e])}

    def entity_facts(self, e: int, per_relation: int = 20) -> dict:
        """Known facts of entity ``e``: ``out`` (e as head) and ``in`` (e as tail), grouped by
        relation (most facts first), each group ``{relation, name, count, facts: [{id, entity,
        name, known}]}`` with at most ``per_relation`` facts."""
        fx = self.facts()
        groups = {}
        for direction, (rel, other, split) in (("out", fx.out_of(e)), ("in", fx.in_of(e))):
            rels, counts = np.unique(rel, return_counts=True)
            order = np.lexsort((rels, -counts))
            groups[direction] = [{
                "relation": str(self.relation_labels[rels[j]]), "name": str(self.relation_names[rels[j]]),
                "count": int(counts[j]),
                "facts": [{"id": int(o), "entity": str(self.entity_labels[o]), "name": str(self.entity_names[o]),
                           "known": fx.split_names[s]}
                          for o, s in zip(other[rel == rels[j]][:per_relation], split[rel == rels[j]][:per_relation])],
            } for j in order]
        return {"entity": self.entity_row(e), "out": groups["out"], "in": groups["in"],
                "counts": {"out": int(sum(g["count"] for g in groups["out"])),
                           "in": int(sum(g["count"] for g in groups["in"]))}}

    def entity_predictions(self, e: int, k: int = 3, max_relations: int = 12) -> dict:
        """Top-k new facts of ``e`` per relation (known ones left out), both directions: ``out``
        ranks tails of ``(e, r, ?)``, ``in`` heads of ``(?, r, e)``; the ``max_relations`` relations
        whose best new fact is most probable first. One batched call per direction."""
        rels = np.arange(self.num_relations, dtype=np.int64)
        anchor = np.full(len(rels), e, np.int64)
        out = {}
        for direction, head in (("out", False), ("in", True)):
            rows = self.predict_ids(anchor, rels, head, k, exclude_known=True)
            best = np.array([max([x["probability"] or 0.0 for x in q], default=-1.0) for q in rows])
            order = np.argsort(-best, kind="stable")[:max_relations]
            out[direction] = [{"relation": str(self.relation_labels[j]), "name": str(self.relation_names[j]),
                               "predictions": rows[j]} for j in order if rows[j]]
        return out

    def neighbourhood(self, e: int, limit: int = 30, predicted: int = 5) -> dict:
        """A small graph around ``e``: up to ``limit`` neighbours (most connected to ``e`` first),
        the known facts among these nodes (``kind: known``), and ``e``'s ``predicted`` most probable
        new facts (``kind: predicted``, their entities added as nodes)."""
        fx = self.facts()
        r_out, t_out, _ = fx.out_of(e)
        r_in, h_in, _ = fx.in_of(e)
        others = np.concatenate([t_out, h_in])
        others = others[others != e]
        ids, counts = np.unique(others, return_counts=True)
        nbrs = ids[np.lexsort((ids, -counts))][:limit]
        nodes = np.concatenate([[e], nbrs]).astype(np.int64)
        tri = fx.among(nodes)
        # one edge per (head, tail) pair, naming its relations (dense graphs link a pair many times)
        pairs, inverse = np.unique(tri[:, [0, 2]], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        edges = []
        for j, (h, t) in enumerate(pairs.tolist()):
            rels = [str(self.relation_labels[x]) for x in tri[inverse == j, 1]]
            edges.append({"source": int(h), "target": int(t), "kind": "known", "count": len(rels),
                          "relation": ", ".join(rels[:2]) + (f" +{len(rels) - 2}" if len(rels) > 2 else "")})
        rels = np.arange(self.num_relations, dtype=np.int64)
        new = []
        for head in (False, True):
            rows = self.predict_ids(np.full(len(rels), e, np.int64), rels, head, 1, exclude_known=True)
            new += [(q[0]["probability"] or 0.0, int(j), q[0]["id"], head) for j, q in enumerate(rows) if q]
        new.sort(key=lambda x: -x[0])
        for p, r, other, head in new[:predicted]:
            h, t = (other, e) if head else (e, other)
            edges.append({"source": int(h), "target": int(t), "relation": str(self.relation_labels[r]),
                          "kind": "predicted", "probability": p})
        ids_all = list(dict.fromkeys([int(x) for x in nodes] + [x for ed in edges for x in (ed["source"], ed["target"])]))
        return {"center": int(e), "nodes": [{**self.entity_row(i), "center": i == e} for i in ids_all], "edges": edges}

    def score_triples(self, triples: np.ndarray) -> np.ndarray:
        triples = np.asarray(triples, np.int64).reshape(-1, 3)
        with self._lock:
            return np.asarray(self.runner.score_triples(triples), dtype=np.float64)


class FactIndex:
    """Every split's triples sorted by head and by tail, so one entity's facts are two
    ``searchsorted`` slices (no scan of the graph per request)."""

    def __init__(self, dataset):
        parts = [(np.asarray(v, np.int64).reshape(-1, 3), i) for i, v in enumerate(dataset.splits.values())]
        self.split_names = list(dataset.splits)
        self.triples = np.concatenate([p for p, _ in parts]) if parts else np.zeros((0, 3), np.int64)
        self.split = np.concatenate([np.full(len(p), i, np.int8) for p, i in parts]) if parts else np.zeros(0, np.int8)
        self.by_head = np.argsort(self.triples[:, 0], kind="stable")
        self.by_tail = np.argsort(self.triples[:, 2], kind="stable")
        self.heads = self.triples[self.by_head, 0]
        self.tails = self.triples[self.by_tail, 2]

    def _rows(self, order: np.ndarray, keys: np.ndarray, e: int) -> np.ndarray:
        return order[np.searchsorted(keys, e, "left"):np.searchsorted(keys, e, "right")]

    def out_of(self, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Relations, tails and split numbers of the triples with head ``e``."""
        rows = self._rows(self.by_head, self.heads, e)
        return self.triples[rows, 1], self.triples[rows, 2], self.split[rows]

    def in_of(self, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Relations, heads and split numbers of the triples with tail ``e``."""
        rows = self._rows(self.by_tail, self.tails, e)
        return self.triples[rows, 1], self.triples[rows, 0], self.split[rows]

    def among(self, nodes: np.ndarray) -> np.ndarray:
        """Distinct ``(h, r, t)`` triples with both ends in ``nodes``."""
        lo = np.searchsorted(self.heads, nodes, "left")
        hi = np.searchsorted(self.heads, nodes, "right")
        rows = np.concatenate([self.by_head[a:b] for a, b in zip(lo, hi)]) if len(nodes) else np.zeros(0, np.int64)
        tri = self.triples[rows]
        tri = tri[np.isin(tri[:, 2], nodes)]
        return np.unique(tri, axis=0) if len(tri) else tri


# ------------------------------------------------------------------ micro-batching
@dataclass
class _Item:
    anchor: np.ndarray
    r: np.ndarray
    k: int
    future: asyncio.Future


@dataclass
class BatchStats:
    calls: int = 0          # predict_ids calls made
    queries: int = 0        # queries answered
    requests: int = 0       # submit() calls
    largest_batch: int = 0
    busy_s: float = 0.0

    def as_dict(self) -> dict:
        return {"model_calls": self.calls, "queries": self.queries, "requests": self.requests,
                "largest_batch": self.largest_batch, "busy_s": round(self.busy_s, 4)}


class MicroBatcher:
    """Groups top-k requests arriving within ``max_wait_ms`` into one batched model call.

    Requests are grouped by (direction, exclude_known); a batch is cut at ``max_batch`` queries.
    Each group is answered with the largest ``k`` asked for and truncated per request (top-k
    lists are prefixes of each other). The model runs on one worker thread.
    """

    def __init__(self, engine: QueryEngine, max_wait_ms: float = 3.0, max_batch: int = 512):
        self.engine = engine
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgc-model")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._queues: dict[tuple[bool, bool], asyncio.Queue] = {}
        self._tasks: list[asyncio.Task] = []

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._tasks and not any(t.done() for t in self._tasks):
            return
        self._loop = loop  # (re)start on this loop (e.g. a test client with a fresh loop per request)
        self._queues = {key: asyncio.Queue() for key in ((h, x) for h in (False, True) for x in (False, True))}
        self._tasks = [loop.create_task(self._worker(key, q)) for key, q in self._queues.items()]

    async def submit(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int, exclude_known: bool = False) -> list[list[dict]]:
        """Top-k rows for ``(B,)`` queries of one direction (awaits the batched call)."""
        self._ensure_started()
        fut = asyncio.get_running_loop().create_future()
        self.stats.requests += 1
        await self._queues[(bool(head), bool(exclude_known))].put(
            _Item(np.asarray(anchor, np.int64), np.asarray(r, np.int64), int(k), fut))
        return await fut

    async def _worker(self, key: tuple[bool, bool], queue: asyncio.Queue) -> None:
        head, exclude_known = key
        loop = asyncio.get_running_loop()
        pending: Optional[_Item] = None
        while True:
            first = pending or await queue.get()
            pending = None
            batch, size = [first], len(first.anchor)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                if size + len(item.anchor) > self.max_batch:
                    pending = item
                    break
                batch.append(item)
                size += len(item.anchor)
            batch = [it for it in batch if not it.future.cancelled()]
            if not batch:
                continue
            anchor = np.concatenate([it.anchor for it in batch])
            r = np.concatenate([it.r for it in batch])
            k = max(it.k for it in batch)
            t0 = time.perf_counter()
            try:
                rows = await loop.run_in_executor(
                    self._executor, self.engine.predict_ids, anchor, r, head, k, exclude_known)
            except Exception as e:  # hand the error to every waiting request
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            self.stats.busy_s += time.perf_counter() - t0
            self.stats.calls += 1
            self.stats.queries += len(anchor)
            self.stats.largest_batch = max(self.stats.largest_batch, len(anchor))
            start = 0
            for it in batch:
                part = [q[: it.k] for q in rows[start : start + len(it.anchor)]]
                start += len(it.anchor)
                if not it.future.done():
                    it.future.set_result(part)

    async def run_blocking(self, fn, *args):
        """Run another model call (e.g. triple scoring) on the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Limits:
    """Request bounds enforced by the API (422 when exceeded)."""

    max_k: int = 1000
    max_batch: int = 256          # queries or triples per POST
    max_complete: int = 50        # autocomplete rows
    max_wait_ms: float = 3.0      # micro-batching window
    max_body_bytes: int = 1 << 20  # request body (413 above)
    max_batch_lines: int = 10_000  # lines of a POST /api/batch text
