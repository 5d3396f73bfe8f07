"""The ``on_epoch`` hook of :func:`kgcomplete.train` (what a tuner's pruner uses)."""

import json

import pytest

import kgcomplete


def test_on_epoch_sees_records_and_can_stop(tmp_path):
    seen = []

    def hook(record):
        seen.append(record)
        return "pruned by the tuner" if len(seen) == 2 else None

    out = tmp_path / "run"
    kgcomplete.train("nations", model="distmult", out=out, epochs=10, eval_every=1, dim=8,
                     progress=False, on_epoch=hook, evaluate_test=False)
    assert [r["epoch"] for r in seen] == [1, 2]
    assert all("valid_mrr" in r and 0 < r["valid_mrr"] <= 1 for r in seen)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped"] == "pruned by the tuner" and metrics["epochs"] == 2


def test_on_epoch_refused_for_other_kinds(tmp_path):
    with pytest.raises(ValueError, match="single-process KGE"):
        kgcomplete.train("nations", model="distmult", out=tmp_path / "r", on_epoch=lambda r: None,
                         **{"distributed.workers": 2})
