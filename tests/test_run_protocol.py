"""The run interface (:class:`kgcomplete.runs.protocol.Run`): every run kind -- KGE, sharded KGE, KGT5,
KGT5 + KGE ensemble -- implements it and its members work; serving talks to runs only through it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("transformers")

from kgt5_fixtures import one_thread, tiny_kg, trained_kgt5  # noqa: E402,F401

import kgcomplete as kgc  # noqa: E402
from kgcomplete.distributed.run import ShardedRun  # noqa: E402
from kgcomplete.runs.protocol import (ExportableRun, KnownTriples, Run, ScorerRun, UnknownNameError,  # noqa: E402
                                     as_run)
from kgcomplete.runs import KGERun  # noqa: E402
from kgcomplete.seq2seq.ensemble import EnsembleRun  # noqa: E402
from kgcomplete.seq2seq.run import KGT5Run  # noqa: E402
from kgcomplete.serving.engine import QueryEngine  # noqa: E402

OLD_SHARDED = Path(__file__).parent / "fixtures" / "runs-5c97b15" / "sharded"
KINDS = ("kge", "sharded", "kgt5", "ensemble")


@pytest.fixture(scope="module")
def tiny_kge(tmp_path_factory):
    """A DistMult run on the KGT5 tests' tiny KG (the ensemble's KGE half)."""
    return kgc.train(tiny_kg(), model="distmult", out=tmp_path_factory.mktemp("tiny-kge") / "run", dim=8, epochs=2,
                     progress=False, eval_every=0)


@pytest.fixture(scope="module")
def runs(run, trained_kgt5, tiny_kge):
    _, _, kgt5 = trained_kgt5
    return {"kge": run, "sharded": kgc.load_run(OLD_SHARDED), "kgt5": kgt5,
            "ensemble": EnsembleRun(kgt5, tiny_kge, weight=1.0)}


def _queries(ds, n=4):
    t = ds.splits["test"][:n]
    return t[:, 0], t[:, 1], t[:, 2]


def test_run_kinds_are_runs(runs):
    assert isinstance(runs["kge"], KGERun) and isinstance(runs["sharded"], ShardedRun)
    assert isinstance(runs["kgt5"], KGT5Run) and isinstance(runs["ensemble"], EnsembleRun)
    for kind, r in runs.items():
        assert isinstance(r, Run), kind
        assert as_run(r) is r, kind  # served as it is, no adapter
    assert isinstance(runs["kge"], ExportableRun) and isinstance(runs["sharded"], ExportableRun)
    assert not isinstance(runs["kgt5"], ExportableRun) and not isinstance(runs["ensemble"], ExportableRun)
    assert runs["sharded"].model is None  # shards are loaded on demand


@pytest.mark.parametrize("kind", KINDS)
def test_config_path_known(runs, kind):
    r = runs[kind]
    cfg = r.config_dict()
    assert type(cfg) is dict
    yaml.safe_dump(cfg)  # plain data
    if kind == "ensemble":  # no configuration (nor folder) of its own: the KGT5 half's folder
        assert cfg == {} and r.path == runs["kgt5"].path
    else:
        on_disk = yaml.safe_load((r.path / "config.yaml").read_text())
        assert cfg["model"]["name"] == on_disk["model"]["name"]
        assert cfg["training"]["epochs"] == on_disk["training"]["epochs"]
        cfg["model"]["name"] = "changed"  # a copy: the run is not changed through it
        assert r.config_dict()["model"]["name"] == on_disk["model"]["name"]
    assert isinstance(r.path, Path)
    assert isinstance(r.known, KnownTriples) and r.known.dataset is r.dataset
    assert isinstance(r.eval_batch_elements, int) and r.eval_batch_elements > 0
    if kind in ("kge", "sharded"):
        assert r.eval_batch_elements == r.config.evaluation.batch_elements


@pytest.mark.parametrize("kind", KINDS)
def test_scoring(runs, kind):
    r = runs[kind]
    ds = r.dataset
    h, rel, t = _queries(ds)
    with torch.no_grad():
        full = torch.as_tensor(r.score_queries(torch.as_tensor(h), torch.as_tensor(rel), None, head=False)).float()
    assert full.shape == (len(h), ds.num_entities)
    s = r.score_triples(np.stack([h, rel, t], 1))
    assert isinstance(s, np.ndarray) and s.shape == (len(h),)
    with torch.no_grad():
        cand = torch.as_tensor(r.score_queries(torch.as_tensor(h), torch.as_tensor(rel), torch.as_tensor(t[:, None]),
                                               head=False)).float()
    np.testing.assert_allclose(s, cand[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    if kind != "ensemble":  # (the ensemble's softmax runs over the candidates it is given)
        np.testing.assert_allclose(s, full[torch.arange(len(h)), torch.as_tensor(t)].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_prediction_and_names(runs, kind):
    r = runs[kind]
    ds = r.dataset
    h, rel, t = _queries(ds, 3)
    rows = r.predict_ids(h, rel, False, 3)
    assert len(rows) == 3
    for a, q, qrows in zip(h, rel, rows):
        assert 1 <= len(qrows) <= 3
        assert [x["rank"] for x in qrows] == list(range(1, len(qrows) + 1))
        assert all(x["score"] >= y["score"] for x, y in zip(qrows, qrows[1:]))
        ids = np.array([x["id"] for x in qrows])
        assert [x["entity"] for x in qrows] == ds.entities.labels[ids].tolist()
        triples = np.stack([np.full(len(ids), a), np.full(len(ids), q), ids], 1)
        assert [x["known"] for x in qrows] == r.known_split(triples)
    excl = r.predict_ids(h, rel, True, 3, exclude_known=True)
    assert all(x["known"] is None for qrows in excl for x in qrows)

    head, relation = str(ds.entities.labels[h[0]]), str(ds.relations.labels[rel[0]])
    assert r.resolve_entity(head) == h[0] and r.resolve_relation(relation) == rel[0]
    got = r.predict(head=head, relation=relation, k=3)
    want = r.predict_ids(h[:1], rel[:1], False, 3)[0]
    assert [x["id"] for x in got] == [x["id"] for x in want]
    with pytest.raises(UnknownNameError) as e:
        r.resolve_entity(head + "zz")
    assert isinstance(e.value, KeyError) and head in e.value.close_matches
    with pytest.raises(KeyError):
        r.resolve_relation("no such relation")

    train = ds.splits["train"][:5]
    assert r.known_split(train) == ["train"] * 5


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate(runs, kind):
    m = runs[kind].evaluate("test")
    assert 0.0 < m["mrr"] <= 1.0 and m["count"] == 2 * len(runs[kind].dataset.splits["test"])


@pytest.mark.parametrize("kind", KINDS)
def test_embeddings(runs, kind):
    r = runs[kind]
    e, rel = r.entity_embeddings(), r.relation_embeddings()
    if kind != "kge":  # no table in memory: a text model, an ensemble, a sharded run
        assert e is None and rel is None
        return
    w = r.model.entity_emb.weight.detach().numpy()
    assert e.dtype == np.float32 and e.shape == (r.dataset.num_entities, w.shape[1])
    np.testing.assert_array_equal(e, w)
    np.testing.assert_array_equal(rel, r.model.relation_emb.weight.detach().numpy())


def test_sharded_run_answers_like_its_gathered_copy(runs, tmp_path):
    sharded = runs["sharded"]
    single = sharded.gather(tmp_path / "gathered")
    assert type(single) is KGERun and isinstance(single, Run)
    ds = sharded.dataset
    h, rel, t = _queries(ds, 6)
    triples = np.stack([h, rel, t], 1)
    np.testing.assert_allclose(sharded.score_triples(triples), single.score_triples(triples), rtol=1e-5, atol=1e-6)
    a = sharded.predict_ids(t, rel, True, 5, exclude_known=True)
    b = single.predict_ids(t, rel, True, 5, exclude_known=True)
    assert [[x["id"] for x in q] for q in a] == [[x["id"] for x in q] for q in b]
    files = sharded.export(tmp_path / "export")
    np.testing.assert_allclose(np.load(files["entity_embeddings"]), single.entity_embeddings(), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_query_engine_serves_every_kind(runs, kind):
    r = runs[kind]
    eng = QueryEngine(r)
    assert eng.runner is r and eng.path == r.path
    assert eng.model_name == (r.config_dict().get("model") or {}).get("name", type(r).__name__)
    ds = r.dataset
    h, rel, t = _queries(ds, 3)
    want = r.predict_ids(h, rel, False, 4)
    got = eng.predict_ids(h, rel, False, 4)
    assert [[x["id"] for x in q] for q in got] == [[x["id"] for x in q] for q in want]
    triples = np.stack([h, rel, t], 1)
    np.testing.assert_allclose(eng.score_triples(triples), r.score_triples(triples), rtol=1e-6)
    assert eng.known_split(triples) == r.known_split(triples)
    assert eng.resolve_entity(str(ds.entities.labels[h[0]])) == h[0]
    info = eng.info()
    assert info["run_type"] == type(r).__name__ and isinstance(info["config"], dict)


class _BareScorer:
    """Not a run: a dataset and ``score_queries`` only."""

    def __init__(self, run):
        self.dataset, self._run = run.dataset, run

    def score_queries(self, anchor, r, candidates=None, head=False):
        return self._run.score_queries(anchor, r, candidates, head=head)


def test_as_run_adapts_a_bare_scorer(runs):
    kge = runs["kge"]
    bare = _BareScorer(kge)
    assert not isinstance(bare, Run)
    adapted = as_run(bare)
    assert isinstance(adapted, ScorerRun) and isinstance(adapted, Run)
    assert adapted.config_dict() == {} and adapted.path is None and adapted.entity_embeddings() is None
    ds = kge.dataset
    h, rel, t = _queries(ds)
    assert [[x["id"] for x in q] for q in adapted.predict_ids(h, rel, True, 5)] == \
        [[x["id"] for x in q] for q in kge.predict_ids(h, rel, True, 5)]
    triples = np.stack([h, rel, t], 1)
    np.testing.assert_allclose(adapted.score_triples(triples), kge.score_triples(triples), rtol=1e-5, atol=1e-6)
    assert adapted.evaluate("test", progress=False)["mrr"] == pytest.approx(kge.evaluate("test")["mrr"], abs=1e-9)


def test_serving_uses_the_protocol_only():
    """engine.py, report.py and projection.py never probe a run for what it can do."""
    serving = Path(kgc.__file__).parent / "serving"
    for name in ("engine.py", "report.py", "projection.py"):
        src = (serving / name).read_text()
        assert not re.search(r"\b(getattr|hasattr)\(", src), name


def test_top_k_probabilities_come_from_the_same_scoring_pass():
    from kgcomplete.runs.protocol import top_k_predictions

    ds = kgc.load_dataset("nations")
    table = torch.randn(ds.num_entities, ds.num_entities)

    class Counting:
        calls = 0

        def score_queries(self, anchor, r, candidates=None, head=False):
            Counting.calls += 1
            return table[anchor]

    anchor, r = np.array([0, 3]), np.array([1, 2])
    rows = top_k_predictions(Counting(), ds, KnownTriples(ds), anchor, r, head=False, k=4, exclude_known=True)
    assert Counting.calls == 1
    expected = torch.softmax(table[torch.as_tensor(anchor)].double(), dim=1)
    for a, qrows in zip(range(2), rows):
        for row in qrows:
            assert row["probability"] == pytest.approx(float(expected[a, row["id"]]), rel=1e-6)
