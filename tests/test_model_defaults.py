"""Per-model defaults: every model's default run validates and stops when validation stops
improving (the measured epochs, times and test MRR of each are benchmarks/bench_models.py's table
in docs/models.md); ConvE trains with 1-N scoring (KvsAll), as in its paper."""

from __future__ import annotations

import json

import pytest

import kgcomplete as kgc
from kgcomplete.config import build_config, parse_cadence
from kgcomplete.models import ALIASES, MODELS


@pytest.mark.parametrize("name", sorted(MODELS) + sorted(ALIASES))
def test_every_model_default_run_stops_when_validation_stops_improving(name):
    t = build_config(name).training
    cadence = parse_cadence(t.eval_every)
    assert not cadence.never and t.patience > 0, (name, t.eval_every, t.patience)
    # room for at least patience + 2 validations before the epoch cap, so the cap is not what ends a run
    assert cadence.epochs * (t.patience + 2) <= t.epochs, (name, t.eval_every, t.patience, t.epochs)


def test_conve_defaults_use_one_to_n_scoring():
    t = build_config("conve").training
    assert (t.mode, t.loss, t.label_smoothing) == ("KvsAll", "bce", 0.1)


@pytest.mark.slow
def test_conve_defaults_reach_published_umls_accuracy(tmp_path):
    """`kgc train --model conve` on umls: test MRR >= .93 (ConvE paper: .94); measured .953 (seed 0)."""
    kgc.train("umls", model="conve", out=tmp_path / "run", progress=False, threads=1)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test"]["mrr"] >= 0.93, m["test"]["mrr"]
    assert m["stopped"].startswith("early stop"), m["stopped"]
