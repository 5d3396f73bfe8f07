"""KGT5 ``kgt5.decoding.reverse_weight``: the best decoded answers re-ranked by both readings of their
triple (log p(c | query) + w log p(anchor | c's query the other way)), chosen on valid with ``auto``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from kgt5_fixtures import micro_config, one_thread, tiny_kg, untrained_micro  # noqa: E402,F401

from kgcomplete.evaluation.evaluator import evaluate  # noqa: E402
from kgcomplete.seq2seq.decoding import KGT5Scorer, densify, rerank, score_entities  # noqa: E402
from kgcomplete.seq2seq.run import REVERSE_WEIGHT_GRID, KGT5Run, fit_reverse_weight, resolve_config, train_kgt5  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    ds, _, _, enc, trie, model = untrained_micro()
    return ds, enc, trie, model


def _both_readings(enc, model, anchor, r, head, w, E):
    """Dense reference ``(B, E)``: log p(c | query) + w log p(anchor | c's query the other way),
    every reading teacher-forced entity by entity."""
    own = score_entities(model, *enc.queries(anchor, r, head), enc.entity_ids)
    other = torch.empty_like(own)
    for b in range(len(anchor)):
        cands = torch.arange(E)
        ids, mask = enc.queries(cands, r[b].repeat(E), not head)
        other[b] = score_entities(model, ids, mask, enc.entity_ids, anchor[b].repeat(E)[:, None])[:, 0]
    return own + w * other


def test_full_beam_reranked_equals_both_readings_of_every_entity(setup):
    ds, enc, trie, model = setup
    E = ds.num_entities
    a, r = torch.tensor([0, 3, 7, 4]), torch.tensor([0, 1, 2, 0])
    for head in (False, True):
        want = _both_readings(enc, model, a, r, head, 0.5, E)
        sc = KGT5Scorer(model, enc, trie, method="beam", beam_size=E, reverse_weight=0.5, reverse_candidates=E)
        e, s = sc.topk(a, r, head)
        assert torch.allclose(densify(e, s, E), want, atol=1e-4)
        assert (s[:, :-1] >= s[:, 1:]).all()  # sorted best first
        exact = sc.score_queries(a, r, torch.arange(E), head)  # candidates: both readings, teacher-forced
        assert torch.allclose(exact, want, atol=1e-4)
        per_query = sc.score_queries(a, r, torch.arange(E).expand(len(a), -1).flip(1), head)
        assert torch.allclose(per_query, want.flip(1), atol=1e-4)


def test_rerank_moves_only_the_first_n_and_keeps_the_rest_below():
    ents = torch.tensor([[4, 2, 7, 1, 0], [3, 5, -1, -1, -1]])
    own = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -6.0], [-0.5, -0.7, -np.inf, -np.inf, -np.inf]])
    other = torch.tensor([[-9.0, -1.0, -2.0], [-4.0, -0.1, -np.inf]])
    e, s = rerank(ents, own, other, 1.0)
    # row 0: 4 -> -10, 2 -> -3, 7 -> -5; then 1 and 0 in their own order below -10
    assert e[0].tolist() == [2, 7, 4, 1, 0]
    assert s[0, :3].tolist() == [-3.0, -5.0, -10.0] and (s[0, 3:] < -10).all() and s[0, 3] > s[0, 4]
    assert e[1].tolist() == [5, 3, -1, -1, -1] and torch.isinf(s[1, 2:]).all()
    e0, s0 = rerank(ents, own, other, 0.0)  # weight 0: the decoder's own ranking
    assert torch.equal(e0, ents) and torch.equal(s0[:, :3], own[:, :3])


def test_other_readings_are_kept_with_the_decodings(setup, monkeypatch):
    ds, enc, trie, model = setup
    calls = []
    sc = KGT5Scorer(model, enc, trie, method="beam", beam_size=4, reverse_weight=0.25, reverse_candidates=3)
    real = sc.other_reading
    monkeypatch.setattr(sc, "other_reading", lambda a, *x: calls.append(len(a)) or real(a, *x))
    a, r = torch.as_tensor(ds.test[:, 0]), torch.as_tensor(ds.test[:, 1])
    first = sc.topk(a, r)
    n = len(np.unique(ds.test[:, :2], axis=0))
    assert sum(calls) == n
    sc.reverse_weight = 0.5  # another weight re-ranks the kept readings: nothing is read again
    again = sc.topk(a, r)
    assert sum(calls) == n
    fresh = KGT5Scorer(model, enc, trie, method="beam", beam_size=4, reverse_weight=0.5, reverse_candidates=3,
                       memo_queries=0)
    want = fresh.topk(a, r)
    assert torch.equal(again[0], want[0]) and torch.allclose(again[1], want[1])
    assert not torch.equal(first[1], again[1])


def test_reverse_weight_values_are_checked():
    with pytest.raises(ValueError, match=r"^kgt5.decoding.reverse_weight='sometimes': expected auto or a number >= 0$"):
        resolve_config({"kgt5": {"decoding": {"reverse_weight": "sometimes"}}})
    with pytest.raises(ValueError, match="kgt5.decoding.reverse_weight=-0.5"):
        resolve_config({"kgt5": {"decoding": {"reverse_weight": -0.5}}})
    for weight in (0.25, "auto"):
        with pytest.raises(ValueError, match="method exhaustive"):
            resolve_config({"kgt5": {"decoding": {"reverse_weight": weight, "method": "exhaustive"}}})
    assert resolve_config({"kgt5": {"decoding": {"reverse_weight": "AUTO"}}})["kgt5"]["decoding"]["reverse_weight"] == "auto"
    assert resolve_config({"kgt5": {"decoding": {"reverse_weight": "0.25"}}})["kgt5"]["decoding"]["reverse_weight"] == 0.25
    assert resolve_config({})["kgt5"]["decoding"]["reverse_weight"] == 0.0  # off unless asked for


def test_auto_chooses_on_valid_and_the_reloaded_run_ranks_with_the_choice(tmp_path):
    ds = tiny_kg()
    cfg = micro_config(epochs=30)
    cfg["kgt5"]["decoding"] = {"beam_size": 5, "reverse_weight": "auto", "reverse_candidates": 4}
    run = train_kgt5(ds, tmp_path / "r", cfg)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    chosen = m["reverse_reading"]["chosen"]
    valid_mrr = {float(w): v for w, v in m["reverse_reading"]["valid_mrr"].items()}
    assert list(valid_mrr) == list(REVERSE_WEIGHT_GRID)
    assert chosen == max(valid_mrr, key=valid_mrr.get)
    assert m["valid"]["decoding"]["reverse_weight"] == chosen
    assert m["valid"]["mrr"] == pytest.approx(valid_mrr[chosen], abs=1e-12)
    one_way = run.evaluate("valid", reverse_weight=0)
    assert one_way["mrr"] == pytest.approx(valid_mrr[0.0], abs=1e-12)
    for w in REVERSE_WEIGHT_GRID[1:]:  # each weight's MRR is what a scorer with that weight ranks at
        assert run.evaluate("valid", reverse_weight=w)["mrr"] == pytest.approx(valid_mrr[w], abs=1e-12)
    loaded = KGT5Run.load(tmp_path / "r")
    assert loaded.default_scorer.reverse_weight == chosen
    assert loaded.evaluate("test")["mrr"] == pytest.approx(m["test"]["mrr"], abs=1e-12)
    assert config_of(tmp_path / "r")["kgt5"]["decoding"]["reverse_weight"] == "auto"  # the choice lives in metrics.json
    # sampling decodes afresh for each weight: the same samples each time (the scorer's seed)
    loaded._scorer = loaded.scorer(method="sample", num_samples=6, constrained=True)
    sampled = fit_reverse_weight(loaded)
    for w in REVERSE_WEIGHT_GRID:
        fresh = loaded.scorer(method="sample", num_samples=6, constrained=True, reverse_weight=w)
        assert sampled["valid_mrr"][f"{w:g}"] == pytest.approx(loaded.evaluate("valid", **_opts(fresh))["mrr"], abs=1e-12)


def _opts(sc):
    return {"method": sc.method, "num_samples": sc.num_samples, "constrained": sc.constrained,
            "reverse_weight": sc.reverse_weight}


def config_of(path):
    import yaml

    return yaml.safe_load((path / "config.yaml").read_text())


def test_a_resumed_run_drops_the_choice_made_for_other_weights(tmp_path):
    ds = tiny_kg()
    cfg = micro_config(epochs=2)
    cfg["kgt5"]["decoding"] = {"beam_size": 5, "reverse_weight": "auto"}
    train_kgt5(ds, tmp_path / "r", cfg, evaluate_test=False)
    metrics = tmp_path / "r" / "metrics.json"
    m = json.loads(metrics.read_text())
    m["reverse_reading"] = {"valid_mrr": {"0": 0.1, "0.5": 0.2}, "chosen": 0.5}  # as if chosen before
    metrics.write_text(json.dumps(m))
    seen = {}
    import kgcomplete.seq2seq.run as run_module

    real_fit = run_module.fit

    def fit(*a, **k):  # what a reader of the folder sees while training goes on
        seen["chosen"] = KGT5Run.load(tmp_path / "r").reverse_weight("auto")
        return real_fit(*a, **k)

    run_module.fit = fit
    try:
        cfg["training"]["epochs"] = 3
        train_kgt5(ds, tmp_path / "r", cfg, resume=True, evaluate_test=False)
    finally:
        run_module.fit = real_fit
    assert seen["chosen"] == 0.0
    assert json.loads(metrics.read_text())["reverse_reading"]["valid_mrr"].keys() == {f"{w:g}" for w in REVERSE_WEIGHT_GRID}


def test_exhaustive_scoring_refuses_a_weight(setup):  # one-way runs: test_kgt5_pretrained.py
    ds, enc, trie, model = setup
    with pytest.raises(ValueError, match="reverse_weight"):
        KGT5Scorer(model, enc, trie, method="exhaustive", reverse_weight=0.25)
    assert evaluate(KGT5Scorer(model, enc, trie, method="exhaustive"), ds, "test", per_relation=False)["mrr"] > 0
