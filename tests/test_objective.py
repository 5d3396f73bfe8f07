"""One negatives objective (training/objective.py) for the single-process trainer and the BESS step,
one candidate-scoring entry point (KGEModel.score_candidates), the optimizer accessors and the
model factory from a configuration."""

import numpy as np
import pytest
import torch

from kgcomplete.config import build_config
from kgcomplete.distributed.batch_sampler import PartitionedTriples, RigidBatchSampler
from kgcomplete.distributed.checkpoint import entity_optimizer_prefix, make_shard_model
from kgcomplete.distributed.exchange import Comm
from kgcomplete.distributed.negative_sampler import ShardedNegativeSampler
from kgcomplete.distributed.sharding import Sharding
from kgcomplete.distributed.step import WorkerView, forward_step, make_plan
from kgcomplete.models import MODELS, build_model, from_config
from kgcomplete.models.base import KGEModel
from kgcomplete.training.objective import negatives_loss, regularization

from bess_reference import reference_loss
from kgcomplete.training.optimizers import build_optimizer, optimizer_state_tensors

E, R = 30, 3


@pytest.mark.parametrize("model,corrupt,reciprocal", [("complex", "both", True), ("transe_l2", "both", False),
                                                      ("rotate", "head", True), ("transh", "tail", False),
                                                      ("conve", "both", True)])
def test_single_process_objective_is_the_one_worker_bess_step(model, corrupt, reciprocal):
    """The trainer's objective on the negatives a one-worker BESS step drew equals that step's loss
    (scores through the exchange + the worker's loss), gradients included."""
    cfg = build_config(model, None, {"model.dim": 4, "training.corrupt": corrupt, "training.loss": "logsigmoid",
                                     "training.adversarial_temperature": 0.5, "training.regularizer": "n3",
                                     "training.reg_weight": 0.01})
    sh = Sharding.create(E, 1, seed=0)
    rng = np.random.default_rng(0)
    parts = PartitionedTriples(np.stack([rng.integers(0, E, 200), rng.integers(0, R, 200), rng.integers(0, E, 200)], 1), sh)
    ns = ShardedNegativeSampler(sh, 7, corrupt, "uniform")
    plan = make_plan(parts.triples[next(RigidBatchSampler(parts, 16).epoch(0))], ns, np.random.default_rng(0))
    torch.manual_seed(0)
    opts = dict(dim=4, reciprocal=reciprocal, init_scale=0.5)
    if model == "conve":
        opts.update(dim=9, embedding_height=3, input_dropout=0.0, feature_dropout=0.0, hidden_dropout=0.0)
    full = build_model(model, E, R, **opts)
    local = build_model(model, E, R, **opts)
    sd = full.state_dict()
    sd["entity_emb.weight"] = sd["entity_emb.weight"][torch.as_tensor(sh.shard_and_idx_to_entity[0])]
    local.load_state_dict(sd)
    full.eval(), local.eval()  # ConvE: batch statistics would differ between the two batch layouts

    tr = torch.as_tensor(plan.triples[0].reshape(-1, 3))
    negatives = {side: torch.as_tensor(sh.shard_and_idx_to_entity[0, plan.neg.local[0, 0, si, 0]])
                 for si, side in enumerate(plan.sides)}  # BESS's side order, (k,) shared by the batch
    loss = negatives_loss(full, cfg.training, tr[:, 0], tr[:, 1], tr[:, 2], negatives)
    loss.backward()
    pos, negs, (h, r, t) = forward_step(local, WorkerView.build(plan, sh, ns, 0), Comm())
    bess = reference_loss(pos, negs, cfg.training, regularization(local, cfg.training, h, r, t))
    bess.backward()
    torch.testing.assert_close(bess, loss, atol=1e-6, rtol=1e-5)
    rows = torch.as_tensor(sh.shard_and_idx_to_entity[0])
    torch.testing.assert_close(local.entity_emb.weight.grad.to_dense(), full.entity_emb.weight.grad.to_dense()[rows],
                               atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(local.relation_emb.weight.grad.to_dense(), full.relation_emb.weight.grad.to_dense(),
                               atol=1e-6, rtol=1e-5)


def test_custom_candidate_scoring_is_declared():
    assert MODELS["rotate"].custom_candidate_scoring
    assert not any(cls.custom_candidate_scoring for n, cls in MODELS.items() if n != "rotate")
    with pytest.raises(TypeError, match="custom_candidate_scoring"):
        type("Undeclared", (KGEModel,), {"score_candidates": lambda self, *a: None})


@pytest.mark.parametrize("opt", ["adagrad", "rowadagrad", "adam", "sgd"])
@pytest.mark.parametrize("name", ["complex", "conve"])
def test_optimizer_state_key_names_the_parameters_tensors(name, opt):
    cfg = build_config(name, None, {"training.optimizer": opt, "model.dim": 40})
    m = from_config(cfg, 12, 3)
    o = build_optimizer(opt, m, 0.1)
    m.score_triples(torch.tensor([[0, 1, 2], [3, 0, 4]])).sum().backward()
    o.step()
    tensors, _ = optimizer_state_tensors(o)
    for p in (m.entity_emb.weight, m.relation_emb.weight):
        key = o.state_key(p)
        assert o.for_param(p).state[p] or opt == "sgd", key
        for k, v in o.for_param(p).state[p].items():
            if torch.is_tensor(v) and v.dim() >= 1:
                assert torch.equal(tensors[key + k], v.cpu()), k
    assert entity_optimizer_prefix(cfg) == o.state_key(m.entity_emb.weight) == "optimizers/0/state/0/"


def test_row_updates_go_through_the_optimizer_of_the_table():
    m = build_model("distmult", 10, 2, dim=4)
    o = build_optimizer("rowadagrad", m, 0.1)
    w = m.entity_emb.weight
    before = w.detach().clone()
    o.update_rows(w, torch.tensor([1, 3]), torch.ones(2, 4))
    assert not torch.equal(w[1], before[1]) and torch.equal(w[0], before[0])
    with pytest.raises(TypeError, match="rowadagrad"):
        build_optimizer("adagrad", m, 0.1).update_rows(w, torch.tensor([1]), torch.ones(1, 4))


def test_model_factory_keeps_every_option_for_shards():
    cfg = build_config("transe", None, {"model.dim": 6, "model.p_norm": 2, "model.storage_dtype": "float16",
                                        "model.reciprocal": False})
    sh = Sharding.create(25, 3, seed=0)
    m = make_shard_model(cfg, 4, sh)
    assert m.entity_emb.weight.shape == (sh.shard_size, 6) and m.entity_emb.weight.dtype == torch.float16
    assert m.p_norm == 2 and not m.reciprocal and m.relation_emb.weight.shape == (4, 6)
    full = from_config(cfg.model, 25, 4)
    assert full.entity_emb.weight.shape == (25, 6) and full.entity_emb.weight.dtype == torch.float16
