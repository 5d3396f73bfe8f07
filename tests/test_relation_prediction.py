"""The relation-prediction objective (``training.relation_prediction``, Chen et al., AKBC 2021):
``score_relations`` against the model's own triple scores, the loss term against a direct
computation, and a training run that uses it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kgcomplete as kgc
from kgcomplete.config import build_config
from kgcomplete.data.dataset import Dataset
from kgcomplete.models import from_config
from kgcomplete.training.trainer import Trainer


@pytest.mark.parametrize("model", ["complex", "distmult", "transe", "rotate", "pairre"])
def test_score_relations_equals_triple_scores(model):
    cfg = build_config(model, None, {"model.dim": 8})
    torch.manual_seed(0)
    m = from_config(cfg, 20, 7)
    h, t = torch.tensor([0, 5, 9]), torch.tensor([3, 3, 19])
    got = m.score_relations(h, t)
    assert got.shape == (3, 7)
    for r in range(7):
        triples = torch.stack([h, torch.full_like(h, r), t], 1)
        assert torch.allclose(got[:, r], m.score_triples(triples), atol=1e-5)


def test_the_loss_adds_the_weighted_relation_cross_entropy():
    rng = np.random.default_rng(0)
    train = np.stack([rng.integers(0, 30, 200), rng.integers(0, 6, 200), rng.integers(0, 30, 200)], 1)
    ds = Dataset.from_arrays(train, num_entities=30, num_relations=6, name="toy")
    base = build_config("complex", None, {"model.dim": 8})
    torch.manual_seed(0)
    model = from_config(base, 30, 6)
    plain = Trainer(model, ds, base.training)
    cfg = build_config("complex", None, {"model.dim": 8, "training.relation_prediction": 0.25})
    with_rp = Trainer(model, ds, cfg.training)
    idx = torch.arange(16)
    batch = torch.as_tensor(train[:16])
    expected = plain.batch_loss(idx)[0] + 0.25 * torch.nn.functional.cross_entropy(
        model.score_relations(batch[:, 0], batch[:, 2]), batch[:, 1])
    assert with_rp.batch_loss(idx)[0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_training_with_relation_prediction(tmp_path):
    kw = dict(model="complex", dim=32, epochs=10, eval_every=5, threads=1, progress=False)
    run = kgc.train("umls", out=tmp_path / "rp", **kw, **{"training.relation_prediction": 0.5})
    cfg = json.loads((tmp_path / "rp" / "metrics.json").read_text())
    assert run.evaluate("test")["mrr"] > 0.6 and cfg["epochs"] == 10
    with pytest.raises(ValueError, match="relation_prediction needs .* not KvsAll"):
        kgc.train("umls", out=tmp_path / "kvs", **kw, **{"training.relation_prediction": 0.5,
                                                         "training.mode": "KvsAll", "training.loss": "bce"})
