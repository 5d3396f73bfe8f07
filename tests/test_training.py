"""Training: short accuracy checks on umls per model family and mode (full defaults: slow), samplers,
reproducibility. Resume and interruption: tests/test_lifecycle*.py."""

import json

import numpy as np
import pytest
import torch

import kgcomplete as kgc
from kgcomplete.data import load_dataset
from kgcomplete.models import MODELS
from kgcomplete.training import NegativeSampler, RowAdagrad, negative_sampling_loss


@pytest.fixture(scope="module")
def umls():
    return load_dataset("umls")


# ------------------------------------------------------------------------ short accuracy checks (CI)
# One short training per model family and per training mode on umls. The bounds sit just below the
# lowest of seeds 0-2 (measured: complex .868-.890, transe .699-.736, conve .811-.824, rotate .751-.788,
# distmult negatives .843-.849, KvsAll .620-.651); a random ranking scores about 0.04. Formulas are
# pinned exactly by tests/test_reference_*.py; these check that the pieces train together.
SHORT = {
    "bilinear (complex, 1vsAll)": (dict(model="complex", dim=32, epochs=10), 0.84),
    "translational (transe, 1vsAll)": (dict(model="transe", dim=32, epochs=10), 0.66),
    "rotation (rotate, 1vsAll)": (dict(model="rotate", dim=16, epochs=6), 0.70),
    "convolutional (conve, 1vsAll)": (dict(model="conve", dim=32, epochs=10, mode="1vsAll", loss="ce",
                                           **{"model.options": {"embedding_height": 4}}), 0.78),
    "shared negatives (distmult)": (dict(model="distmult", dim=32, epochs=10, mode="negatives"), 0.81),
    "KvsAll (distmult)": (dict(model="distmult", dim=32, epochs=10, mode="KvsAll", loss="bce", lr=0.3), 0.58),
}


@pytest.mark.parametrize("family", list(SHORT))
def test_short_training_per_family_learns_umls(tmp_path, umls, family):
    options, bound = SHORT[family]
    run = kgc.train(umls, out=tmp_path / "run", progress=False, evaluate_test=False, eval_every=0, threads=1,
                    **options)
    mrr = run.evaluate("test")["mrr"]
    assert mrr >= bound, (family, mrr)


def test_type_constrained_negatives_are_trained_with_the_corrupted_sides_type(tmp_path, umls, monkeypatch):
    """training.negative_sampler=type: every negative the trainer scores has the type of the entity it
    replaces (heads for head corruption, tails for tail corruption), and the run learns."""
    from kgcomplete.data.dataset import Dataset
    from kgcomplete.training import trainer as trainer_mod

    ds = Dataset.from_arrays(umls.train, umls.valid, umls.test, num_entities=umls.num_entities,
                             num_relations=umls.num_relations)
    # two types: the entities seen as heads of relation 0 versus the rest (any fixed split will do)
    import pandas as pd

    names = np.full(ds.num_entities, "other", dtype=object)
    names[np.unique(ds.train[ds.train[:, 1] == 0, 0])] = "head of relation 0"
    ds.set_entity_types(pd.Series(names, index=ds.entities.labels))
    types = ds.entity_types
    calls = []
    original = trainer_mod.Trainer._negatives_loss

    def checked(self, h, r, t, sampler, *args, **kwargs):
        real_sample = sampler.sample

        def sample(corrupted):
            neg = real_sample(corrupted)
            assert neg.shape == (len(corrupted), sampler.num_negatives)
            assert (torch.as_tensor(types)[neg] == torch.as_tensor(types)[corrupted].unsqueeze(1)).all()
            calls.append("tail" if corrupted is t else "head" if corrupted is h else "other")
            return neg

        sampler.sample = sample
        try:
            return original(self, h, r, t, sampler, *args, **kwargs)
        finally:
            del sampler.sample

    monkeypatch.setattr(trainer_mod.Trainer, "_negatives_loss", checked)
    run = kgc.train(ds, model="distmult", out=tmp_path / "run", progress=False, evaluate_test=False, eval_every=0,
                    dim=32, epochs=4, mode="negatives", negative_sampler="type", corrupt="both", threads=1)
    batches = 4 * -(-len(ds.train) // run.config.training.batch_size)
    assert calls == ["tail", "head"] * batches  # tail negatives typed like the tail, head negatives like the head
    assert run.evaluate("test")["mrr"] > 0.3  # random: about 0.04


# --------------------------------------------------------------- full-default accuracy (slow, -m slow)
@pytest.mark.slow
def test_complex_defaults_reach_published_umls_accuracy(tmp_path):
    """`kgc train --dataset umls --model complex` with no other flags: MRR >= 0.93 (ConvE README: .94)."""
    import reference

    run = kgc.train("umls", model="complex", out=tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test"]["mrr"] >= 0.93, m["test"]
    assert m["test"]["hits@10"] >= 0.98
    assert set(m["test"]) >= {"mrr", "mr", "hits@1", "hits@3", "hits@10", "head", "tail", "per_relation"}
    ds = run.dataset
    ref = reference.metrics(reference.model_score_fn(run.model), ds.test, ds.all_triples(), ds.num_entities)
    assert m["test"]["mrr"] == pytest.approx(ref["mrr"])


@pytest.mark.slow
def test_complex_defaults_on_nations(tmp_path):
    kgc.train("nations", model="complex", out=tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["test"]["mrr"] >= 0.80, m["test"]


@pytest.mark.slow
def test_rotate_defaults_on_umls(tmp_path, umls):
    """RotatE defaults, budget cut to 40 epochs without validation."""
    run = kgc.train(umls, model="rotate", out=tmp_path / "run", progress=False, evaluate_test=False,
                    epochs=40, eval_every=0)
    assert run.evaluate("test")["mrr"] >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(MODELS) - {"complex", "rotate"}))
def test_every_model_learns_umls(tmp_path, umls, name):
    """A short budget must beat random ranking (filtered MRR of random scores on umls is about 0.04)."""
    opts = {"model.options": {"embedding_height": 4}} if name == "conve" else {}
    run = kgc.train(umls, model=name, out=tmp_path / "run", progress=False, evaluate_test=False,
                    epochs=8, eval_every=0, dim=32, **opts)
    mrr = run.evaluate("test")["mrr"]
    assert mrr > 0.3, (name, mrr)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"mode": "negatives", "loss": "logsigmoid", "adversarial_temperature": 1.0, "margin": 4.0},
        {"mode": "negatives", "loss": "margin", "margin": 1.0},
        {"mode": "negatives", "loss": "bce", "corrupt": "both", "num_negatives": 32},
        {"mode": "negatives", "loss": "softmax", "corrupt": "head"},
        {"mode": "KvsAll", "loss": "bce", "label_smoothing": 0.1, "lr": 0.3},
        {"mode": "1vsAll", "reciprocal": False, "optimizer": "rowadagrad"},
        {"mode": "1vsAll", "optimizer": "adam", "lr": 0.01, "regularizer": "l2", "reg_weight": 1e-4,
         "lr_schedule": "cosine"},
    ],
)
def test_training_modes_losses_and_optimizers_learn(tmp_path, umls, options):
    run = kgc.train(umls, model="distmult", out=tmp_path / "run", progress=False, evaluate_test=False,
                    epochs=10, eval_every=0, dim=64, **options)
    assert run.evaluate("valid")["mrr"] > 0.35, options


def test_seeded_runs_are_reproducible(tmp_path, umls):
    kw = dict(model="complex", progress=False, epochs=3, eval_every=0, dim=16, evaluate_test=False)
    a = kgc.train(umls, out=tmp_path / "a", **kw)
    b = kgc.train(umls, out=tmp_path / "b", **kw)
    c = kgc.train(umls, out=tmp_path / "c", seed=1, **kw)
    wa, wb, wc = (r.model.entity_emb.weight.detach() for r in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_type_constrained_sampler_draws_only_the_same_type():
    types = np.array([0, 0, 1, 1, 1, 2, -1, 2])
    s = NegativeSampler(8, 50, "type", types, torch.Generator().manual_seed(0))
    true = torch.tensor([0, 2, 5, 6])
    neg = s.sample(true)
    assert neg.shape == (4, 50)
    t = torch.as_tensor(np.where(types < 0, 3, types))
    assert torch.all(t[neg] == t[true].unsqueeze(1))
    uniform = NegativeSampler(8, 16, generator=torch.Generator().manual_seed(0)).sample(true)
    assert uniform.shape == (16,)


def test_self_adversarial_weights_hard_negatives():
    pos = torch.zeros(1)
    neg = torch.tensor([[-10.0, 5.0]])
    plain = negative_sampling_loss(pos, neg, "logsigmoid", margin=0.0)
    adv = negative_sampling_loss(pos, neg, "logsigmoid", margin=0.0, adversarial_temperature=1.0)
    assert adv > plain  # the hard negative (score 5) dominates


def test_row_adagrad_state_is_per_row_and_sparse():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    before = emb.weight.detach().clone()
    opt = RowAdagrad([emb.weight], lr=0.1)
    emb(torch.tensor([1, 3])).sum().backward()
    opt.step()
    assert opt.state[emb.weight]["sum"].shape == (10,)
    changed = (emb.weight.detach() != before).any(1)
    assert changed.nonzero().flatten().tolist() == [1, 3]


def test_kvsall_regularizes_each_query_anchor_and_relation_once(umls):
    from kgcomplete.config import build_config
    from kgcomplete.models import build_model
    from kgcomplete.training import Trainer

    cfg = build_config("distmult", None, {"training.mode": "KvsAll", "training.loss": "bce",
                                          "training.regularizer": "l2", "training.reg_weight": 0.5}).training
    torch.manual_seed(0)
    m = build_model("distmult", umls.num_entities, umls.num_relations, dim=6, reciprocal=False, init_scale=0.5)
    tr = Trainer(m, umls, cfg)
    idx = torch.arange(20)
    with_reg, _ = tr.batch_loss(idx)
    tr.cfg.reg_weight = 0.0
    without, _ = tr.batch_loss(idx)
    keys = tr.kvs_queries[idx]
    anchor, rel = keys // tr.kvs_nrel, keys % tr.kvs_nrel
    R = umls.num_relations
    rel = torch.where(rel >= 2 * R, rel - 2 * R, rel)
    expected = (m.entities(anchor).pow(2).sum() + m.relations(rel).pow(2).sum()) / len(idx)
    torch.testing.assert_close(with_reg - without, 0.5 * expected)


@pytest.mark.parametrize("mode", ["1vsAll", "KvsAll"])
def test_dense_gradient_steps_equal_the_sparse_lookup_steps(umls, mode):
    """Modes that score every entity train on dense gradients with the fused Adagrad kernel; the
    weights after a few steps equal those of the sparse lookups and torch's per-tensor Adagrad."""
    from kgcomplete.config import build_config
    from kgcomplete.models import build_model
    from kgcomplete.training import Trainer, trainer as trainer_module

    cfg = build_config("complex", None, {"training.mode": mode, "training.loss": "ce" if mode == "1vsAll" else "bce",
                                         "training.regularizer": "n3", "training.reg_weight": 0.05}).training

    def steps(dense: bool):
        torch.manual_seed(0)
        m = build_model("complex", umls.num_entities, umls.num_relations, dim=8, reciprocal=True, init_scale=0.1)
        tr = Trainer(m, umls, cfg)
        assert m.dense_gradients
        if not dense:  # the sparse path: lookups through the sparse tables, torch's per-tensor Adagrad
            m.dense_gradients = False
            tr.optimizer = trainer_module.build_optimizer(cfg.optimizer, m, cfg.lr)
        group = tr.optimizer.optimizers[0].param_groups[0]
        assert bool(group.get("fused")) is dense
        for b in range(4):
            tr.train_batch(torch.arange(b * 50, (b + 1) * 50))
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        assert all(g.is_sparse is not dense for g in grads[:2])
        return [p.detach().clone() for p in m.parameters()]

    for a, b in zip(steps(True), steps(False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
