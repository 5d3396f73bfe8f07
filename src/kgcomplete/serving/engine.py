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
        """Batched top-k (thread-safe: calls into the model are serialised)."""
        anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
        with self._lock:
            rows = self.runner.predict_ids(anchor, r, head, k, exclude_known)
        for qrows in rows:  # JSON has no infinities (KGT5: entities it did not generate)
            for row in qrows:
                row["score"] = float(row["score"]) if np.isfinite(row["score"]) else None
        return rows

    def score_triples(self, triples: np.ndarray) -> np.ndarray:
        triples = np.asarray(triples, np.int64).reshape(-1, 3)
        with self._lock:
            return np.asarray(self.runner.score_triples(triples), dtype=np.float64)


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
