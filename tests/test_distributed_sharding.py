"""BESS sharding, balanced batching and sharded negatives (single process, no collectives)."""

import numpy as np
import pytest
import torch

from kgcomplete.config import build_config
from kgcomplete.distributed.batch_sampler import PartitionedTriples, RandomBatchSampler, RigidBatchSampler
from kgcomplete.distributed.exchange import Comm
from kgcomplete.distributed.negative_sampler import ShardedNegativeSampler
from kgcomplete.distributed.sharding import Sharding, _relabel_types
from kgcomplete.distributed.step import WorkerView, forward_step, make_plan, worker_loss
from bess_reference import reference_step
from kgcomplete.models import build_model


def _triples(E=60, R=4, N=900, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, E, N), rng.integers(0, R, N), rng.integers(0, E, N)], 1)


@pytest.mark.parametrize("E,n", [(60, 1), (61, 2), (103, 4), (10, 3)])
def test_sharding_is_balanced_padded_and_bijective(E, n, tmp_path):
    sh = Sharding.create(E, n, seed=1)
    S = -(-E // n)
    assert sh.shard_size == S and sh.shard_and_idx_to_entity.shape == (n, S)
    assert sh.shard_counts.max() - sh.shard_counts.min() <= 1 and sh.shard_counts.sum() == E
    # every entity has one (shard, row); rows 0..count-1 are real, the rest padding
    assert np.array_equal(sh.global_ids(sh.entity_to_shard, sh.entity_to_idx), np.arange(E))
    for s in range(n):
        row = sh.shard_and_idx_to_entity[s]
        assert (row[: sh.shard_counts[s]] >= 0).all() and (row[sh.shard_counts[s]:] == -1).all()
    assert not np.array_equal(sh.entity_to_shard, np.arange(E) % n) or n == 1  # random, not id % n
    sh.save(tmp_path)
    back = Sharding.load(tmp_path)
    assert np.array_equal(back.shard_and_idx_to_entity, sh.shard_and_idx_to_entity)


def test_types_are_contiguous_and_evenly_split():
    rng = np.random.default_rng(0)
    types = rng.integers(-1, 5, 203)
    sh = Sharding.create(203, 4, seed=3, entity_types=types)
    dense = _relabel_types(types)
    assert np.array_equal(sh.entity_types, dense)
    counts = sh.type_counts()
    assert (counts.max(0) - counts.min(0) <= 1).all()  # every type split evenly
    for s in range(4):
        local_types = dense[sh.shard_and_idx_to_entity[s, : sh.shard_counts[s]]]
        assert (np.diff(local_types) >= 0).all()  # sorted -> each type one contiguous range
        for t in range(counts.shape[1]):
            lo, hi = sh.type_offsets[s, t], sh.type_offsets[s, t + 1]
            assert (local_types[lo:hi] == t).all()


@pytest.mark.parametrize("kind", ["rigid", "random"])
def test_every_block_gets_the_same_number_of_triples_per_step(kind):
    tr = _triples()
    n, P = 3, 7
    sh = Sharding.create(60, n, seed=0)
    parts = PartitionedTriples(tr, sh)
    sampler = (RigidBatchSampler if kind == "rigid" else RandomBatchSampler)(parts, P, seed=5)
    steps = list(sampler.epoch(0))
    assert len(steps) == sampler.steps_per_epoch
    for idx in steps:
        assert idx.shape == (n, n, P)
        step = sampler.step_triples(idx)
        hs, ts = sh.entity_to_shard[step[..., 0]], sh.entity_to_shard[step[..., 2]]
        # block (i, j): heads on shard i, tails on shard j, P triples each
        assert (hs == np.arange(n)[:, None, None]).all() and (ts == np.arange(n)[None, :, None]).all()
    seen = np.unique(np.concatenate([s.ravel() for s in steps]))
    if kind == "rigid":  # walks every block completely
        assert len(seen) == len(tr)
    again = list(sampler.epoch(0))
    assert all(np.array_equal(a, b) for a, b in zip(steps, again))  # same on every worker / resume


def test_empty_block_is_reported():
    sh = Sharding.create(20, 2, seed=0)
    a = np.flatnonzero(sh.entity_to_shard == 0)
    tr = np.stack([a, np.zeros_like(a), a[::-1]], 1)  # only block (0, 0)
    with pytest.raises(ValueError, match="shard 0 and its tail on shard 1"):
        PartitionedTriples(tr, sh)


@pytest.mark.parametrize("corrupt", ["head", "tail", "both"])
def test_uniform_negatives_come_equally_from_every_shard(corrupt):
    n, k = 4, 5
    sh = Sharding.create(61, n, seed=2)
    ns = ShardedNegativeSampler(sh, k, corrupt)
    tr = _triples(E=61)
    parts = PartitionedTriples(tr, sh)
    draw = ns.sample(np.random.default_rng(0), parts.triples[next(RigidBatchSampler(parts, 3).epoch(0))])
    sides = 2 if corrupt == "both" else 1
    assert draw.local.shape == (n, n, sides, 1, k)
    assert (draw.local >= 0).all() and (draw.local < sh.shard_counts[:, None, None, None, None]).all()
    # as global ids: worker d receives k from every shard s
    g = sh.shard_and_idx_to_entity[np.arange(n)[:, None, None, None, None], draw.local]
    assert (sh.entity_to_shard[g] == np.arange(n)[:, None, None, None, None]).all()


def test_type_negatives_have_the_corrupted_type():
    rng = np.random.default_rng(1)
    types = rng.integers(0, 3, 60)
    types[:2] = 3  # a type with 2 entities: missing on some of 4 shards
    sh = Sharding.create(60, 4, seed=0, entity_types=types)
    tr = _triples()
    parts = PartitionedTriples(tr, sh)
    step = parts.triples[next(RandomBatchSampler(parts, 4, seed=1).epoch(0))]
    ns = ShardedNegativeSampler(sh, 6, "both", "type")
    draw = ns.sample(np.random.default_rng(0), step)
    T = len(draw.types)
    assert draw.local.shape == (4, 4, 2, T, 6)
    g = sh.shard_and_idx_to_entity[np.arange(4)[:, None, None, None, None], draw.local]
    want = draw.types[None, None, None, :, None]
    ok = draw.mask[:, None, None, :, None]
    assert (np.where(ok, sh.entity_types[g] == want, True)).all()
    assert (sh.entity_to_shard[g] == np.arange(4)[:, None, None, None, None]).all()
    assert set(np.unique(sh.entity_types[step[..., [0, 2]]])) <= set(draw.types)
    present = sh.type_counts()[:, draw.types] > 0
    assert np.array_equal(draw.mask, present) and not present.all()


@pytest.mark.parametrize("model,corrupt,strategy", [("complex", "both", "uniform"), ("transh", "tail", "uniform"),
                                                     ("distmult", "both", "type"), ("rotate", "head", "uniform")])
def test_one_worker_step_matches_the_reference(model, corrupt, strategy):
    """n = 1: the BESS step (scores, loss, gradients) equals the core-scored reference."""
    E, R = 30, 3
    cfg = build_config(model, None, {"model.dim": 4, "training.corrupt": corrupt, "training.loss": "logsigmoid",
                                     "training.regularizer": "n3", "training.reg_weight": 0.01})
    types = np.arange(E) % 3 if strategy == "type" else None
    sh = Sharding.create(E, 1, seed=0, entity_types=types)
    torch.manual_seed(0)
    full = build_model(model, E, R, dim=4, reciprocal=model != "transh", init_scale=0.5)
    local = build_model(model, E, R, dim=4, reciprocal=model != "transh", init_scale=0.5)
    sd = full.state_dict()
    sd["entity_emb.weight"] = sd["entity_emb.weight"][torch.as_tensor(sh.shard_and_idx_to_entity[0])]
    local.load_state_dict(sd)
    parts = PartitionedTriples(_triples(E, R, 200), sh)
    ns = ShardedNegativeSampler(sh, 7, corrupt, strategy)
    plan = make_plan(parts.triples[next(RigidBatchSampler(parts, 16).epoch(0))], ns, np.random.default_rng(0))
    ref = reference_step(full, plan, sh, ns, cfg.training)
    ref["loss"].backward()
    view = WorkerView.build(plan, sh, ns, 0)
    pos, negs, (h, r, t) = forward_step(local, view, Comm())
    loss = worker_loss(pos, negs, cfg.training, local.regularizer_emb(h, r, t, "n3"))
    loss.backward()
    for a, b in zip(pos, ref["pos"][0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(negs, ref["neg"][0]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, ref["loss"], atol=1e-5, rtol=1e-5)
    g_local = local.entity_emb.weight.grad.to_dense()
    g_full = full.entity_emb.weight.grad.to_dense()[torch.as_tensor(sh.shard_and_idx_to_entity[0])]
    torch.testing.assert_close(g_local, g_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(local.relation_emb.weight.grad.to_dense(), full.relation_emb.weight.grad.to_dense(),
                               atol=1e-5, rtol=1e-5)
