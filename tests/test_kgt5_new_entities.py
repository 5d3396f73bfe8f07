"""Queries about entities outside the graph (KGT5 reads text): the input is the training format,
answers are real entities, facts are read like the graph's own neighbourhood, errors are clear."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from kgcomplete.seq2seq.inductive import new_entity_input, read_facts

from kgt5_fixtures import micro_config, one_thread, tiny_kg, trained_kgt5  # noqa: F401



@pytest.fixture(scope="module")
def context_run(tmp_path_factory):
    """A micro KGT5-context run on the tiny ring graph."""
    from kgcomplete.seq2seq.run import train_kgt5

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kgt5ctx") / "run"
    return train_kgt5(tiny_kg(), out, micro_config(epochs=20, context=True, context_size=4))


def _same(a: list[dict], b: list[dict]) -> None:
    assert [r["entity"] for r in a] == [r["entity"] for r in b]
    assert np.allclose([r["score"] for r in a], [r["score"] for r in b], atol=1e-5)


def test_a_known_entitys_text_as_a_new_entity_gives_its_answers(trained_kgt5):
    ds, _, run = trained_kgt5
    e = 3
    text = str(run.texts.entity[e])
    known = run.predict(head=str(ds.entities.labels[e]), relation="next", k=5)
    new = run.predict_new(text, "next", k=5)
    _same(new, known)  # the same input, so the same decoding
    assert all(r["known"] is None for r in new) and all(0 <= r["id"] < ds.num_entities for r in new)
    assert [r["rank"] for r in new] == list(range(1, len(new) + 1))
    assert all(a["score"] >= b["score"] for a, b in zip(new, new[1:]))
    heads = run.predict_new(text, "next", head=True, k=5)  # (?, next, new): heads
    _same(heads, run.predict(tail=str(ds.entities.labels[e]), relation="next", k=5))


def test_facts_are_verbalised_as_the_graphs_own_neighbourhood(context_run):
    run = context_run
    ds = run.dataset
    for e in range(ds.num_entities):
        facts = run.encoder.context_facts(e)
        if len(facts) >= 2:
            break
    rel, ent = ds.relations.labels, ds.entities.labels
    as_triples = [("?", rel[r], ent[n]) if not inv else (ent[n], rel[r], "?") for r, n, inv in facts.tolist()]
    ids, mask = run.encoder.queries(np.array([e]), np.array([0]), False)
    text = new_entity_input(run, str(run.texts.entity[e]), str(rel[0]), facts=as_triples)
    ids2, mask2 = run.encoder.encode_text([text])
    assert torch.equal(ids[mask.bool()], ids2[mask2.bool()])  # token for token the training input
    assert text.count("\n") == len(facts) and text.startswith("query: ")
    _same(run.predict_new(str(run.texts.entity[e]), str(rel[0]), facts=as_triples, k=4),
          run.predict(head=str(ent[e]), relation=str(rel[0]), k=4))
    without = new_entity_input(run, "someone new", str(rel[0]))
    assert "\n" not in without and without.startswith("query: someone new |")


def test_clear_errors(trained_kgt5, context_run, tmp_path):
    _, _, run = trained_kgt5
    with pytest.raises(ValueError, match="without kgt5.context"):
        run.predict_new("x", "next", facts=[("?", "next", "e1")])
    with pytest.raises(KeyError, match="unknown relation 'nxt'"):
        run.predict_new("x", "nxt")
    with pytest.raises(KeyError, match="fact 1: unknown entity 'nobody'"):
        context_run.predict_new("x", "next", facts=[("?", "next", "nobody")])
    with pytest.raises(ValueError, match="exactly one side"):
        context_run.predict_new("x", "next", facts=[("?", "next", "?")])
    bad = tmp_path / "facts.tsv"
    bad.write_text("?\tnext\te1\ne2\tprev\n")
    with pytest.raises(ValueError, match=r"facts.tsv, line 2: expected head<TAB>relation<TAB>tail, found 2"):
        read_facts(bad)


def test_cli_head_text_with_facts(context_run, trained_kgt5, tmp_path):
    from kgcomplete.cli.main import cli

    facts = tmp_path / "facts.tsv"
    facts.write_text("?\tnext\te4\ne7\tsame_colour\t?\n")
    res = CliRunner().invoke(cli, ["predict", str(context_run.path), "--head-text", "a new node",
                                   "--relation", "prev", "--facts", str(facts), "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert 1 <= len(rows) <= 3 and all(r["entity"] in set(context_run.dataset.entities.labels) for r in rows)
    res = CliRunner().invoke(cli, ["predict", str(trained_kgt5[1]), "--tail-text", "a new node", "--relation", "next",
                                   "--facts", str(facts)])
    assert res.exit_code != 0 and "without kgt5.context" in res.output
    res = CliRunner().invoke(cli, ["predict", str(context_run.path), "--head-text", "a", "--head", "e1",
                                   "--relation", "next"])
    assert res.exit_code != 0 and "leave out --head" in res.output


def test_http_api(context_run, run):
    from fastapi.testclient import TestClient

    from kgcomplete.serving.app import create_app

    with TestClient(create_app(context_run)) as client:
        res = client.post("/api/predict/new", json={"text": "a new node", "relation": "prev", "k": 3,
                                                    "facts": [["?", "next", "e4"], ["e7", "same_colour", "?"]]})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["query"]["predict"] == "tail" and 1 <= len(body["predictions"]) <= 3
        assert body["predictions"] == context_run.predict_new(
            "a new node", "prev", facts=[("?", "next", "e4"), ("e7", "same_colour", "?")], k=3)
        res = client.post("/api/predict/new", json={"text": "x", "relation": "prev", "facts": [["?", "next", "nobody"]]})
        assert res.status_code == 404 and "unknown entity 'nobody'" in res.json()["detail"]["error"]
        res = client.post("/api/predict/new", json={"text": "", "relation": "prev"})
        assert res.status_code == 422
    with TestClient(create_app(run)) as client:  # an embedding run
        res = client.post("/api/predict/new", json={"text": "x", "relation": "y"})
        assert res.status_code == 400 and "need a KGT5 run" in res.json()["detail"]["error"]
