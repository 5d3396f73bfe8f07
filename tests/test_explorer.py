"""The explorer's API: entity pages (facts, predicted facts, neighbourhood), batch text, probabilities,
and /docs served from the package (no CDN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="serving extra not installed (pip install 'kgcomplete[serve]')")
pytest.importorskip("httpx", reason="serving extra not installed (pip install 'kgcomplete[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from kgcomplete.serving.app import create_app  # noqa: E402
from kgcomplete.serving.engine import Limits  # noqa: E402


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app(run, Limits(max_batch_lines=50))) as c:
        yield c


def _softmax(run, anchor: int, r: int, head: bool) -> np.ndarray:
    with torch.no_grad():
        s = run.score_queries(torch.tensor([anchor]), torch.tensor([r]), None, head=head)
    return torch.softmax(torch.as_tensor(s).double(), 1)[0].numpy()


def test_predictions_carry_the_softmax_probability_over_all_entities(client, run):
    body = client.get("/api/predict/heads", params={"relation": "location_of", "tail": "cell", "k": 5}).json()
    ds = run.dataset
    p = _softmax(run, ds.entities.id("cell"), ds.relations.id("location_of"), head=True)
    rows = body["predictions"]
    np.testing.assert_allclose([x["probability"] for x in rows], p[[x["id"] for x in rows]], rtol=1e-6)
    assert rows[0]["probability"] == pytest.approx(p.max())


def test_entity_page_lists_every_known_fact_by_relation(client, run):
    ds = run.dataset
    e = ds.entities.id("virus")
    body = client.get("/api/entity", params={"entity": "virus", "per_relation": 1000}).json()
    assert body["entity"] == {"id": e, "label": "virus", "name": "virus"}
    triples = ds.all_triples()
    for direction, col, other in (("out", 0, 2), ("in", 2, 0)):
        mine = triples[triples[:, col] == e]
        assert body["counts"][direction] == len(mine)
        groups = body[direction]
        assert [g["count"] for g in groups] == sorted([g["count"] for g in groups], reverse=True)
        for g in groups:
            r = ds.relations.id(g["relation"])
            want = mine[mine[:, 1] == r]
            assert g["count"] == len(want) == len(g["facts"])
            assert sorted(f["id"] for f in g["facts"]) == sorted(want[:, other].tolist())
            for f in g["facts"]:
                t = [e, r, f["id"]] if direction == "out" else [f["id"], r, e]
                assert f["known"] == run.known_split(np.array([t]))[0]
        assert sum(g["count"] for g in groups) == len(mine)


def test_entity_page_predicts_only_new_facts_most_probable_first(client, run):
    ds = run.dataset
    e = ds.entities.id("virus")
    body = client.get("/api/entity", params={"entity": "virus", "k": 2}).json()
    known = {tuple(t) for t in ds.all_triples().tolist()}
    best = []
    for direction in ("out", "in"):
        assert body["predicted"][direction]
        for g in body["predicted"][direction]:
            r = ds.relations.id(g["relation"])
            assert 1 <= len(g["predictions"]) <= 2
            p = _softmax(run, e, r, head=direction == "in")
            for x in g["predictions"]:
                t = (e, r, x["id"]) if direction == "out" else (x["id"], r, e)
                assert t not in known and x["known"] is None
                assert x["probability"] == pytest.approx(p[x["id"]], rel=1e-4)  # float32 scores of a batch
            best.append(g["predictions"][0]["probability"])
        top = [g["predictions"][0]["probability"] for g in body["predicted"][direction]]
        assert top == sorted(top, reverse=True)


def test_neighbourhood_edges_are_known_facts_or_new_predictions(client, run):
    ds = run.dataset
    e = ds.entities.id("virus")
    g = client.get("/api/neighbourhood", params={"entity": "virus", "limit": 8, "predicted": 3}).json()
    ids = [n["id"] for n in g["nodes"]]
    assert g["center"] == e and ids[0] == e and [n["center"] for n in g["nodes"]].count(True) == 1
    assert len(set(ids)) == len(ids) and len(ids) <= 1 + 8 + 3
    triples = ds.all_triples()
    pairs = {(h, t) for h, _, t in triples.tolist()}
    known_edges = [x for x in g["edges"] if x["kind"] == "known"]
    predicted = [x for x in g["edges"] if x["kind"] == "predicted"]
    assert known_edges and len(predicted) == 3
    assert all((x["source"], x["target"]) in pairs for x in known_edges)
    # every known pair among the first 9 nodes is drawn, once
    first = set(ids[:9])
    want = {(h, t) for h, t in pairs if h in first and t in first}
    assert {(x["source"], x["target"]) for x in known_edges} == want
    known = {tuple(t) for t in triples.tolist()}
    for x in predicted:
        assert (x["source"], ds.relations.id(x["relation"]), x["target"]) not in known
        assert e in (x["source"], x["target"]) and x["source"] in ids and x["target"] in ids


def test_entity_endpoints_name_unknown_entities_with_close_matches(client):
    for url in ("/api/entity", "/api/neighbourhood"):
        r = client.get(url, params={"entity": "viruss"})
        assert r.status_code == 404
        assert "virus" in r.json()["detail"]["close_matches"]


def test_batch_text_gives_the_cli_results_and_csv(client, run):
    text = "virus\tcauses\t?\n?\tlocation_of\tcell\n"
    r = client.post("/api/batch", json={"text": text, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    want = run.predict(head="virus", relation="causes", k=3)
    assert [x["entity"] for x in body["results"][0]["predictions"]] == [w["entity"] for w in want]
    assert body["results"][1]["query"]["predict"] == "head"
    lines = body["csv"].splitlines()
    assert lines[0] == "line,head,relation,tail,predict,rank,entity,name,score,probability,known" and len(lines) == 7
    assert lines[1].startswith(f"1,virus,causes,?,tail,1,{want[0]['entity']},")
    r = client.post("/api/batch", json={"text": "virus\tcauses\tcell\n", "kind": "score"})
    assert r.status_code == 200 and r.json()["results"][0]["score"] == pytest.approx(
        float(run.score_triples(np.array([[run.dataset.entities.id("virus"), run.dataset.relations.id("causes"),
                                           run.dataset.entities.id("cell")]]))[0]), rel=1e-5)
    r = client.post("/api/batch", json={"text": "virus\tcauses\t?\nvirus\tcauzes\t?\n"})
    assert r.status_code == 422 and r.json()["detail"]["error"].startswith("input, line 2: unknown relation 'cauzes'")
    r = client.post("/api/batch", json={"text": "virus\tcauses\n"})
    assert r.status_code == 422 and "input, line 1" in r.json()["detail"]["error"]
    r = client.post("/api/batch", json={"text": "virus\tcauses\t?\n" * 51})
    assert r.status_code == 422 and "too many lines" in r.json()["detail"]["error"]


def test_docs_work_offline_from_the_package(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "http" not in page.text.replace("http-equiv", "")
    for ref in ("static/vendor/swagger-ui-bundle.js", "static/vendor/swagger-ui.css"):
        assert ref in page.text
        assert client.get("/" + ref).status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/entity"]
    assert client.get("/redoc").status_code == 404  # it would load from a CDN
    graph_lib = client.get("/static/vendor/cytoscape.min.js")
    assert graph_lib.status_code == 200 and len(graph_lib.content) > 100_000
    assert client.get("/static/vendor/cytoscape.LICENSE").status_code == 200


def test_the_vendored_files_ship_in_the_package():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["kgcomplete"]
    base = root / "src" / "kgcomplete"
    shipped = {p for g in globs for p in base.glob(g)}
    for name in ("cytoscape.min.js", "cytoscape.LICENSE", "swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui.LICENSE"):
        assert base / "serving" / "static" / "vendor" / name in shipped, name
