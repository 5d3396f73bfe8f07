"""The HTTP JSON API and web explorer of ``kgc serve`` (FastAPI; served by uvicorn).

Endpoints (all JSON; see ``docs/serving.md``)::

    GET  /api/health                       liveness + batching counters
    GET  /api/run                          run info, config, metrics, training log
    GET  /api/predict/tails?head=&relation=&k=10&exclude_known=false
    GET  /api/predict/heads?relation=&tail=&k=10&exclude_known=false
    POST /api/predict   {"queries": [{"head": .., "relation": ..} | {"relation": .., "tail": ..}], "k": 10}
    POST /api/predict/new {"text": .., "relation": .., "predict": "tail"|"head", "facts": [["?", r, t], ..], "k": 10}
                        a new entity (not in the graph) given by text: KGT5 runs (400 for other runs)
    POST /api/score     {"triples": [["h", "r", "t"] | {"head": .., "relation": .., "tail": ..}]}
    GET  /api/entities?prefix=&limit=10    autocomplete by label / name / word prefix
    GET  /api/relations?prefix=&limit=10
    GET  /                                 the explorer page (static/index.html, no build step)

Unknown names -> 404 with ``close_matches``; out-of-range ``k``/``limit``, too many queries,
malformed JSON or wrong fields -> 422. The run is loaded once (``create_app(run)``) and
concurrent top-k queries are merged by a :class:`~kgcomplete.serving.engine.MicroBatcher`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from .engine import Limits, MicroBatcher, QueryEngine, UnknownName, shorten

STATIC = Path(__file__).with_name("static")


class QuerySpec(BaseModel):
    """One top-k query: ``head`` + ``relation`` (predict tails) or ``relation`` + ``tail`` (heads)."""

    model_config = ConfigDict(extra="forbid")
    head: Optional[str] = None
    relation: str
    tail: Optional[str] = None

    @model_validator(mode="after")
    def _one_anchor(self):
        if (self.head is None) == (self.tail is None):
            raise ValueError("give exactly one of 'head' or 'tail'")
        return self


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[QuerySpec] = Field(min_length=1)
    k: StrictInt = Field(10, ge=1)  #: a JSON integer ("3" and true are refused)
    exclude_known: StrictBool = False


class NewEntityRequest(BaseModel):
    """A query about an entity outside the graph (KGT5 runs): ``text`` names it; ``predict: tail``
    asks ``(new, relation, ?)``, ``head`` asks ``(?, relation, new)``; ``facts`` are triples with
    ``"?"`` for the new entity (runs trained with ``kgt5.context``)."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    relation: str
    predict: Literal["tail", "head"] = "tail"
    facts: list[tuple[str, str, str]] = Field(default_factory=list)
    description: Optional[str] = None
    k: StrictInt = Field(10, ge=1)


class TripleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head: str
    relation: str
    tail: str


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    triples: list[Union[TripleSpec, tuple[str, str, str]]] = Field(min_length=1)


class BatchRequest(BaseModel):
    """A query file's text (the format of ``kgc predict --file``; ``kind: score``: of ``kgc score --file``)."""

    model_config = ConfigDict(extra="forbid")
    text: str
    kind: Literal["predict", "score"] = "predict"
    k: StrictInt = Field(10, ge=1)
    exclude_known: StrictBool = False


def _not_found(e: UnknownName, index: Optional[int] = None) -> HTTPException:
    detail: dict[str, Any] = {"error": e.message, "kind": e.kind, "value": e.text, "close_matches": e.close_matches}
    if index is not None:
        detail["index"] = index
    return HTTPException(status_code=404, detail=detail)


def create_app(run: Any, limits: Optional[Limits] = None) -> FastAPI:
    """A FastAPI app over an opened run (``kgcomplete.load_run(path)``, KGT5 or ensemble).

    The run is wrapped once in a :class:`QueryEngine`; ``app.state.engine`` / ``app.state.batcher``
    expose it (e.g. for tests).
    """
    limits = limits or Limits()
    engine = run if isinstance(run, QueryEngine) else QueryEngine(run)
    import anyio
    import anyio.to_thread
    batcher = MicroBatcher(engine, max_wait_ms=limits.max_wait_ms, max_batch=max(limits.max_batch, 64))
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if engine.num_entities and engine.num_relations:  # warm-up: builds the per-split and all-triples
            # indexes once (exclude_known=True needs the latter), not inside the first request
            await batcher.run_blocking(engine.predict_ids, np.zeros(1, np.int64), np.zeros(1, np.int64), False, 1, True)
        await anyio.to_thread.run_sync(engine.build_name_indexes)  # close matches from an index, from the start
        yield
        await batcher.aclose()
        batcher.shutdown()

    app = FastAPI(title="kgcomplete", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Top-k link prediction, triple scoring and autocomplete over a trained run.")
    app.state.engine, app.state.batcher, app.state.limits = engine, batcher, limits

    def check_batch(n: int, what: str) -> None:
        if n > limits.max_batch:
            raise HTTPException(422, detail={"error": f"too many {what}: {n} > {limits.max_batch} per request"})

    limiters: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def name_threads():
        """Name lookups run on one worker thread (one limiter per event loop): more would
        only contend for the GIL with the event loop and delay every other request."""
        loop = asyncio.get_running_loop()
        if loop not in limiters:
            limiters[loop] = anyio.CapacityLimiter(1)
        return limiters[loop]

    def resolve_queries(specs: list[QuerySpec]) -> tuple[list[int], list[int]]:
        anchors, rels = [], []
        for i, q in enumerate(specs):
            try:
                rels.append(engine.resolve_relation(q.relation))
                anchors.append(engine.resolve_entity(q.head if q.head is not None else q.tail))
            except UnknownName as e:
                raise _not_found(e, i if len(specs) > 1 else None)
        return anchors, rels

    async def answer(specs: list[QuerySpec], k: int, exclude_known: bool) -> list[dict]:
        # names first (4xx before any model work), on a worker thread: neither the event loop
        # (health, other requests) nor the model thread waits for a close-match search
        anchors, rels = await anyio.to_thread.run_sync(resolve_queries, specs, limiter=name_threads())
        heads = [q.head is None for q in specs]
        anchors_np, rels_np, heads_np = np.array(anchors), np.array(rels), np.array(heads)
        groups = [np.flatnonzero(heads_np == h) for h in (False, True)]
        parts = await asyncio.gather(*[
            batcher.submit(anchors_np[idx], rels_np[idx], bool(h), k, exclude_known)
            for h, idx in zip((False, True), groups) if len(idx)
        ])
        rows: list = [None] * len(specs)
        for idx, part in zip([g for g in groups if len(g)], parts):
            for i, res in zip(idx, part):
                rows[i] = res
        out = []
        for i, q in enumerate(specs):
            head_q = q.head is None
            out.append({
                "query": {
                    "head": None if head_q else str(engine.entity_labels[anchors[i]]),
                    "relation": str(engine.relation_labels[rels[i]]),
                    "tail": str(engine.entity_labels[anchors[i]]) if head_q else None,
                    "predict": "head" if head_q else "tail",
                    "k": k,
                },
                "predictions": rows[i],
            })
        return out

    # ------------------------------------------------------------------ routes
    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok", "run_type": type(engine.run).__name__, "model": engine.model_name,
                "entities": engine.num_entities, "relations": engine.num_relations,
                "uptime_s": round(time.time() - started, 3), "batching": batcher.stats.as_dict()}

    info_cache: dict = {}

    @app.get("/api/run")
    async def run_info() -> dict:
        if not info_cache:
            info_cache.update(engine.info())
            info_cache["limits"] = {"max_k": limits.max_k, "max_batch": limits.max_batch,
                                    "max_complete": limits.max_complete}
        return info_cache

    @app.get("/api/predict/tails")
    async def predict_tails(head: str, relation: str, k: int = Query(10, ge=1, le=limits.max_k),
                            exclude_known: bool = False) -> dict:
        return (await answer([QuerySpec(head=head, relation=relation)], k, exclude_known))[0]

    @app.get("/api/predict/heads")
    async def predict_heads(relation: str, tail: str, k: int = Query(10, ge=1, le=limits.max_k),
                            exclude_known: bool = False) -> dict:
        return (await answer([QuerySpec(relation=relation, tail=tail)], k, exclude_known))[0]

    @app.post("/api/predict")
    async def predict_batch(req: PredictRequest) -> dict:
        if req.k > limits.max_k:
            raise HTTPException(422, detail={"error": f"k must be between 1 and {limits.max_k}"})
        check_batch(len(req.queries), "queries")
        return {"results": await answer(req.queries, req.k, req.exclude_known)}

    @app.post("/api/predict/new")
    async def predict_new(req: NewEntityRequest) -> dict:
        if req.k > limits.max_k:
            raise HTTPException(422, detail={"error": f"k must be between 1 and {limits.max_k}"})
        check_batch(len(req.facts), "facts")
        if not hasattr(engine.run, "predict_new"):
            raise HTTPException(400, detail={"error": "queries about entities outside the graph need a KGT5 run "
                                                      "(an embedding model has no row for an entity it never saw)"})

        def answer_new() -> list[dict]:
            try:
                return engine.run.predict_new(req.text, req.relation, head=req.predict == "head",
                                              facts=req.facts or None, description=req.description, k=req.k)
            except KeyError as e:
                raise HTTPException(404, detail={"error": str(e.args[0] if e.args else e)})
            except ValueError as e:
                raise HTTPException(422, detail={"error": str(e)})

        rows = await batcher.run_blocking(answer_new)
        return {"query": {"text": req.text, "relation": req.relation, "predict": req.predict,
                          "facts": [list(f) for f in req.facts], "k": req.k}, "predictions": rows}

    @app.post("/api/score")
    async def score(req: ScoreRequest) -> dict:
        check_batch(len(req.triples), "triples")
        def resolve_triples() -> np.ndarray:
            ids = np.empty((len(req.triples), 3), np.int64)
            for i, t in enumerate(req.triples):
                h, r, tl = (t.head, t.relation, t.tail) if isinstance(t, TripleSpec) else t
                try:
                    ids[i] = engine.resolve_entity(h), engine.resolve_relation(r), engine.resolve_entity(tl)
                except UnknownName as e:
                    raise _not_found(e, i)
            return ids

        ids = await anyio.to_thread.run_sync(resolve_triples, limiter=name_threads())
        scores, known = await batcher.run_blocking(lambda: (engine.score_triples(ids), engine.known_split(ids)))
        return {"scores": [
            {"head": str(engine.entity_labels[h]), "relation": str(engine.relation_labels[r]),
             "tail": str(engine.entity_labels[t]), "score": float(s) if np.isfinite(s) else None, "known": kn}
            for (h, r, t), s, kn in zip(ids.tolist(), scores, known)
        ]}

    @app.get("/api/entities")
    async def entities(prefix: str = "", limit: int = Query(10, ge=1, le=limits.max_complete)) -> dict:
        return {"prefix": prefix, "items": engine.complete("entity", prefix, limit)}

    @app.get("/api/relations")
    async def relations(prefix: str = "", limit: int = Query(10, ge=1, le=limits.max_complete)) -> dict:
        return {"prefix": prefix, "items": engine.complete("relation", prefix, limit)}

    async def entity_id(text: str) -> int:
        def lookup() -> int:
            try:
                return engine.resolve_entity(text)
            except UnknownName as e:
                raise _not_found(e)

        return await anyio.to_thread.run_sync(lookup, limiter=name_threads())

    @app.get("/api/entity")
    async def entity(entity: str, k: int = Query(3, ge=1, le=20), per_relation: int = Query(20, ge=1, le=1000)) -> dict:
        """An entity's known facts (out and in, by relation, with counts) and its most probable
        new facts per relation."""
        e = await entity_id(entity)
        facts = await batcher.run_blocking(engine.entity_facts, e, per_relation)
        facts["predicted"] = await batcher.run_blocking(engine.entity_predictions, e, k)
        return facts

    @app.get("/api/neighbourhood")
    async def neighbourhood(entity: str, limit: int = Query(30, ge=1, le=200),
                            predicted: int = Query(5, ge=0, le=50)) -> dict:
        """Nodes and edges around an entity: known facts among its closest neighbours, plus its
        most probable new facts."""
        e = await entity_id(entity)
        return await batcher.run_blocking(engine.neighbourhood, e, limit, predicted)

    @app.post("/api/batch")
    async def batch(req: BatchRequest) -> dict:
        """Many queries (or triples) as the text of a file for ``kgc predict --file`` (``kgc score
        --file``); answers as JSON results and as CSV text (the columns of the CLI's output)."""
        if req.k > limits.max_k:
            raise HTTPException(422, detail={"error": f"k must be between 1 and {limits.max_k}"})
        lines = req.text.count("\n") + (not req.text.endswith("\n"))
        if lines > limits.max_batch_lines:
            raise HTTPException(422, detail={"error": f"too many lines: {lines} > {limits.max_batch_lines} per request"})

        def work() -> dict:
            import tempfile

            from .batch import BatchInputError, iter_prediction_results, iter_score_results, to_text

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "batch.tsv"
                path.write_text(req.text, encoding="utf-8")
                try:
                    if req.kind == "predict":
                        results = list(iter_prediction_results(engine.runner, path, req.k, req.exclude_known,
                                                               probabilities=True, name="input"))
                    else:
                        results = list(iter_score_results(engine.runner, path, name="input"))
                except (BatchInputError, ValueError) as e:
                    raise HTTPException(422, detail={"error": str(e)})
            return {"kind": req.kind, "results": results, "csv": to_text(results, "csv", req.kind)}

        return await batcher.run_blocking(work)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Any:
        """Swagger UI from the package's own copy (works offline)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="openapi.json", title="kgcomplete API",
                                   swagger_js_url="static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="static/vendor/swagger-ui.css",
                                   swagger_favicon_url="static/favicon.svg")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError) -> JSONResponse:  # 422, echoing no big input
        errors = [{k: shorten(v) if k == "input" else v for k, v in e.items() if k != "ctx"} for e in exc.errors()]
        return JSONResponse({"detail": _jsonable_errors(errors)}, status_code=422)

    @app.exception_handler(ValueError)
    async def value_error(request, exc: ValueError) -> JSONResponse:  # e.g. a run rejecting a query
        return JSONResponse({"detail": {"error": str(exc)}}, status_code=422)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


def _jsonable_errors(errors: list[dict]) -> list[dict]:
    import json

    return json.loads(json.dumps(errors, default=str))


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` is answered 413 before it is
    parsed (by its Content-Length, or while a body without one streams in)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # FastAPI passes an HTTPException raised while reading the body on
                    from starlette.exceptions import HTTPException as StarletteHTTPException

                    raise StarletteHTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, send):
        body = b'{"detail":{"error":"request body larger than ' + str(self.max_bytes).encode() + b' bytes"}}'
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _version() -> str:
    try:
        from .. import __version__

        return __version__
    except ImportError:  # pragma: no cover
        return "0"


def serve(run_path: str, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Load the run once and serve the API + explorer with uvicorn (blocking)."""
    import uvicorn

    from ..api import load_run

    app = create_app(load_run(run_path))
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
