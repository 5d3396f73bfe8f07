"""HTTP API of `kgc serve` (FastAPI test client + a real uvicorn server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi", reason="serving extra not installed (pip install 'kgcomplete[serve]')")
pytest.importorskip("httpx", reason="serving extra not installed (pip install 'kgcomplete[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from kgcomplete.serving.app import create_app  # noqa: E402
from live_server import live_server  # noqa: E402
from kgcomplete.serving.engine import Limits, PrefixIndex  # noqa: E402


@pytest.fixture(scope="module")
def client(run):
    app = create_app(run, Limits(max_k=200, max_batch=32))
    with TestClient(app) as c:
        yield c


def _expected(run, head=None, relation=None, tail=None, k=10, exclude_known=False):
    return run.predict(head=head, relation=relation, tail=tail, k=k, exclude_known=exclude_known)


def _same_rows(got, want):
    assert [r["entity"] for r in got] == [r["entity"] for r in want]
    assert [r["rank"] for r in got] == list(range(1, len(want) + 1))
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], rtol=1e-5, atol=1e-6)
    assert [r["known"] for r in got] == [r["known"] for r in want]
    assert [r["name"] for r in got] == [r["name"] for r in want]


# ------------------------------------------------------------------ basics
def test_health_and_run_info(client, run, umls_run_dir):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["entities"] == run.dataset.num_entities == 135
    assert h["relations"] == run.dataset.num_relations and h["model"] == "distmult"
    info = client.get("/api/run").json()
    saved = json.loads((umls_run_dir / "metrics.json").read_text())
    assert info["metrics"]["test"]["mrr"] == pytest.approx(saved["test"]["mrr"])
    assert info["dataset"]["train"] == len(run.dataset.splits["train"])
    assert [r["epoch"] for r in info["log"]] == list(range(1, 7))
    assert info["limits"]["max_k"] == 200


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for ref in ("static/app.js", "static/style.css"):
        assert ref in page.text
        r = client.get("/" + ref)
        assert r.status_code == 200 and len(r.text) > 500
    assert client.get("/static/nope.js").status_code == 404


# ------------------------------------------------------------------ predictions
def test_get_tails_and_heads_match_run_predict(client, run):
    r = client.get("/api/predict/tails", params={"head": "virus", "relation": "causes", "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"head": "virus", "relation": "causes", "tail": None, "predict": "tail", "k": 10}
    _same_rows(body["predictions"], _expected(run, head="virus", relation="causes"))
    # head query, anchor given by its human-readable name rather than its label
    r = client.get("/api/predict/heads", params={"relation": "causes", "tail": "acquired abnormality", "k": 7})
    assert r.status_code == 200, r.text
    assert r.json()["query"]["tail"] == "acquired_abnormality"
    _same_rows(r.json()["predictions"], _expected(run, relation="causes", tail="acquired_abnormality", k=7))


def test_known_marks_and_exclude_known(client, run):
    ds = run.dataset
    v, c = ds.entities.id("virus"), ds.relations.id("causes")
    rows = client.get("/api/predict/tails", params={"head": "virus", "relation": "causes", "k": 135}).json()["predictions"]
    assert len(rows) == 135
    for split, triples in ds.splits.items():
        answers = set(triples[(triples[:, 0] == v) & (triples[:, 1] == c)][:, 2].tolist())
        for row in rows:
            if row["id"] in answers:
                assert row["known"] is not None
    known = {row["id"] for row in rows if row["known"]}
    assert known  # virus causes ... has training answers
    rows_ex = client.get("/api/predict/tails", params={"head": "virus", "relation": "causes", "k": 20,
                                                       "exclude_known": True}).json()["predictions"]
    assert all(row["known"] is None for row in rows_ex)
    assert not known & {row["id"] for row in rows_ex}


def test_post_batch_mixed_directions(client, run):
    queries = [{"head": "virus", "relation": "causes"}, {"relation": "causes", "tail": "cell"},
               {"head": "bacterium", "relation": "location_of"}, {"relation": "isa", "tail": "organism"}]
    r = client.post("/api/predict", json={"queries": queries, "k": 5})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 4
    for q, res in zip(queries, results):
        assert res["query"]["predict"] == ("head" if "tail" in q else "tail")
        _same_rows(res["predictions"], _expected(run, k=5, **q))


def test_k_larger_than_entities_is_clamped(client, run):
    rows = client.get("/api/predict/tails", params={"head": "virus", "relation": "causes", "k": 200}).json()["predictions"]
    assert len(rows) == run.dataset.num_entities


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("k", [0, -3, 201, 10**12, "ten"])
def test_bad_k_is_422(client, k):
    r = client.get("/api/predict/tails", params={"head": "virus", "relation": "causes", "k": k})
    assert r.status_code == 422
    r = client.post("/api/predict", json={"queries": [{"head": "virus", "relation": "causes"}], "k": k})
    assert r.status_code == 422


def test_unknown_names_are_404_with_close_matches(client):
    r = client.get("/api/predict/tails", params={"head": "viru", "relation": "causes"})
    assert r.status_code == 404
    d = r.json()["detail"]
    assert d["kind"] == "entity" and d["value"] == "viru" and "virus" in d["close_matches"]
    r = client.get("/api/predict/heads", params={"relation": "cause", "tail": "virus"})
    assert r.status_code == 404
    d = r.json()["detail"]
    assert d["kind"] == "relation" and "causes" in d["close_matches"]
    # in a batch, the offending query is named
    r = client.post("/api/predict", json={"queries": [{"head": "virus", "relation": "causes"},
                                                      {"head": "bacterium", "relation": "zzz_nothing"}]})
    assert r.status_code == 404 and r.json()["detail"]["index"] == 1


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"queries": [{"head": "virus", "relation": "causes"}], "k": 5',  # truncated
    b"[]",
    b'{"queries": []}',
    b'{"queries": [{"relation": "causes"}]}',                                  # no anchor
    b'{"queries": [{"head": "virus", "relation": "causes", "tail": "cell"}]}',  # both anchors
    b'{"queries": [{"head": "virus", "relation": "causes", "typo": 1}]}',      # unknown field
    b'{"queries": [{"head": ["virus"], "relation": "causes"}]}',               # wrong type
])
def test_malformed_requests_are_422(client, body):
    r = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_missing_query_parameters_are_422(client):
    assert client.get("/api/predict/tails", params={"head": "virus"}).status_code == 422
    assert client.get("/api/predict/heads", params={"tail": "virus"}).status_code == 422


def test_batch_size_is_bounded(client):
    q = {"head": "virus", "relation": "causes"}
    assert client.post("/api/predict", json={"queries": [q] * 32, "k": 1}).status_code == 200
    r = client.post("/api/predict", json={"queries": [q] * 33, "k": 1})
    assert r.status_code == 422 and "33 > 32" in r.json()["detail"]["error"]
    r = client.post("/api/score", json={"triples": [["virus", "causes", "cell"]] * 33})
    assert r.status_code == 422


# ------------------------------------------------------------------ scoring
def test_score_triples(client, run):
    ds = run.dataset
    triples = [["virus", "causes", "cell"], {"head": "virus", "relation": "causes", "tail": "disease_or_syndrome"},
               ["bacterium", "location_of", "organism"]]
    r = client.post("/api/score", json={"triples": triples})
    assert r.status_code == 200, r.text
    got = r.json()["scores"]
    labels = [t if isinstance(t, list) else [t["head"], t["relation"], t["tail"]] for t in triples]
    ids = np.array([[ds.entities.id(h), ds.relations.id(rel), ds.entities.id(t)] for h, rel, t in labels])
    np.testing.assert_allclose([g["score"] for g in got], run.score_triples(ids), rtol=1e-5, atol=1e-6)
    assert [g["known"] for g in got] == run.known_split(ids)
    assert [g["tail"] for g in got] == [x[2] for x in labels]
    # the score of a triple equals its score in the top-k list
    top = client.get("/api/predict/tails", params={"head": "virus", "relation": "causes", "k": 135}).json()["predictions"]
    by_entity = {row["entity"]: row["score"] for row in top}
    assert got[0]["score"] == pytest.approx(by_entity["cell"], rel=1e-5)
    r = client.post("/api/score", json={"triples": [["virus", "causes", "cel"]]})
    assert r.status_code == 404 and "cell" in r.json()["detail"]["close_matches"]
    assert client.post("/api/score", json={"triples": [["virus", "causes"]]}).status_code == 422


# ------------------------------------------------------------------ autocomplete
def _brute_force(labels, names, prefix):
    """Reference: ids whose normalised label/name, or a word suffix of it, starts with the prefix."""
    import re

    norm = lambda x: [w for w in re.split(r"[\s_\-/.,:()]+", x.lower()) if w]  # noqa: E731
    p = " ".join(norm(prefix))
    hits = set()
    for i, (lab, nm) in enumerate(zip(labels, names)):
        for words in (norm(lab), norm(nm)):
            if any(" ".join(words[j:]).startswith(p) for j in range(len(words))):
                hits.add(i)
    return hits


def test_prefix_index_matches_brute_force(run):
    ds = run.dataset
    labels = ds.entities.labels.astype(str)
    names = ds.entity_text(np.arange(ds.num_entities)).astype(str)
    index = PrefixIndex(labels, names)
    prefixes = sorted({n[:k].lower() for n in names for k in (1, 2, 4)} | {"abnorm", "ZZZ", "Virus", "cell or", "molecular dys",
                                                                     "acquired_ab", "Or  Mol"})
    for p in prefixes:
        got = index.search(p, limit=1000)
        assert len(got) == len(set(got.tolist())), p
        assert set(got.tolist()) == _brute_force(labels, names, p), p
    # whole-string matches rank before word matches
    got = index.search("organ", limit=1000).tolist()
    whole = [i for i in got if labels[i].startswith("organ") or names[i].startswith("organ")]
    assert got[: len(whole)] == whole and len(whole) < len(got)


def test_entity_and_relation_autocomplete(client, run):
    r = client.get("/api/entities", params={"prefix": "Abn", "limit": 10}).json()
    assert {it["label"] for it in r["items"]} == {"acquired_abnormality", "anatomical_abnormality", "congenital_abnormality"}
    r = client.get("/api/entities", params={"prefix": "vir"}).json()
    assert r["items"][0] == {"id": run.dataset.entities.id("virus"), "label": "virus", "name": "virus"}
    r = client.get("/api/relations", params={"prefix": "caus"}).json()
    assert r["items"][0]["label"] == "causes"
    assert len(client.get("/api/relations", params={"prefix": "", "limit": 5}).json()["items"]) == 5
    assert client.get("/api/entities", params={"prefix": "zzzz"}).json()["items"] == []
    assert client.get("/api/entities", params={"prefix": "a", "limit": 0}).status_code == 422
    assert client.get("/api/entities", params={"prefix": "a", "limit": 10**6}).status_code == 422


# ------------------------------------------------------------------ run types
class _ScorerOnlyRun:
    """What a KGT5/ensemble-like run may offer: dataset + score_queries, nothing KGE-specific."""

    def __init__(self, run):
        self._run = run
        self.dataset = run.dataset
        self.config = {"model": {"name": "scorer-only"}}
        self.path = None

    def score_queries(self, anchor, r, candidates=None, head=False):
        return self._run.score_queries(anchor, r, candidates, head=head)


def test_generic_run_interface_gives_the_same_answers(run):
    app = create_app(_ScorerOnlyRun(run))
    with TestClient(app) as c:
        assert c.get("/api/health").json()["model"] == "scorer-only"
        got = c.get("/api/predict/tails", params={"head": "virus", "relation": "causes"}).json()["predictions"]
        _same_rows(got, _expected(run, head="virus", relation="causes"))
        got = c.get("/api/predict/heads", params={"relation": "isa", "tail": "organism", "exclude_known": True}).json()
        _same_rows(got["predictions"], _expected(run, relation="isa", tail="organism", exclude_known=True))
        s = c.post("/api/score", json={"triples": [["virus", "causes", "cell"]]}).json()["scores"][0]
        ds = run.dataset
        want = run.score_triples(np.array([[ds.entities.id("virus"), ds.relations.id("causes"), ds.entities.id("cell")]]))
        assert s["score"] == pytest.approx(float(want[0]), rel=1e-5)
        assert c.get("/api/predict/tails", params={"head": "viru", "relation": "causes"}).status_code == 404
        assert c.get("/api/run").json()["metrics"] == {}


def test_works_without_lifespan_context(run):
    c = TestClient(create_app(run))  # no `with`: each request may run on a fresh event loop
    for _ in range(3):
        r = c.get("/api/predict/tails", params={"head": "virus", "relation": "causes", "k": 3})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3


# ------------------------------------------------------------------ concurrency
def test_concurrent_queries_on_localhost_are_batched_and_correct(run):
    import httpx

    ds = run.dataset
    app = create_app(run, Limits(max_wait_ms=5.0))
    with live_server(app) as url:
        rng = np.random.default_rng(0)
        tr = ds.splits["train"][rng.choice(len(ds.splits["train"]), 48, replace=False)]
        ent, rel = ds.entities.labels, ds.relations.labels
        jobs = []
        for i, (h, r, t) in enumerate(tr):
            if i % 2:
                jobs.append(("GET", "/api/predict/tails", {"head": ent[h], "relation": rel[r], "k": 5 + i % 7}, (h, r, False, 5 + i % 7)))
            else:
                jobs.append(("GET", "/api/predict/heads", {"relation": rel[r], "tail": ent[t], "k": 3 + i % 5}, (t, r, True, 3 + i % 5)))
        expected = [run.predict_ids(np.array([a]), np.array([r]), head, k)[0] for *_, (a, r, head, k) in jobs]

        async def fire():
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as c:
                gets = [c.get(path, params=params) for _, path, params, _ in jobs]
                post = c.post("/api/predict", json={"queries": [{"head": ent[h], "relation": rel[r]} for h, r, _ in tr[:16]], "k": 4})
                return await asyncio.wait_for(asyncio.gather(*gets, post), 30)

        t0 = time.perf_counter()
        responses = asyncio.run(fire())
        elapsed = time.perf_counter() - t0
        for resp, want in zip(responses[:-1], expected):
            assert resp.status_code == 200, resp.text
            _same_rows(resp.json()["predictions"], want)
        post = responses[-1]
        assert post.status_code == 200
        want = run.predict_ids(tr[:16, 0], tr[:16, 1], False, 4)
        for res, w in zip(post.json()["results"], want):
            _same_rows(res["predictions"], w)
        stats = app.state.batcher.stats
        assert stats.requests == len(jobs) + 1 and stats.queries == len(jobs) + 16
        assert stats.calls < stats.requests, f"no batching happened: {stats.as_dict()}"
        assert elapsed < 30
