"""Multi-process (gloo) BESS against one process: scores, loss, gradients, ranks, top-k; memory 1/n."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from kgcomplete.config import build_config
from kgcomplete.data.dataset import Dataset
from kgcomplete.distributed.batch_sampler import PartitionedTriples, RandomBatchSampler
from kgcomplete.distributed.exchange import Comm
from kgcomplete.distributed.inference import distributed_rank, distributed_topk
from kgcomplete.distributed.launch import free_port, init_group, spawn
from kgcomplete.distributed.negative_sampler import ShardedNegativeSampler
from kgcomplete.distributed.sharding import Sharding
from kgcomplete.training.row_gradients import RowLeaves
from kgcomplete.distributed.step import (WorkerView, forward_step, make_plan,
                                         restrict_entity_grad, sync_replicated_grads, worker_loss)
from bess_reference import reference_step
from kgcomplete.evaluation import Evaluator, FilterIndex
from kgcomplete.models import build_model
from kgcomplete.training.optimizers import build_optimizer

E, R, DIM = 41, 4, 6
CASES = [  # (model, exchange, corrupt, negative sampler)
    ("complex", "embeddings", "both", "uniform"),
    ("complex", "scores", "both", "uniform"),
    ("complex", "allgather", "both", "uniform"),
    ("transe_l2", "embeddings", "tail", "type"),
    ("transh", "scores", "head", "type"),
]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    tr = np.stack([rng.integers(0, E, 500), rng.integers(0, R, 500), rng.integers(0, E, 500)], 1)
    return Dataset.from_arrays(tr[:420], tr[420:460], tr[460:], num_entities=E, num_relations=R)


def _setup(case, n):
    model, exchange, corrupt, strategy = case
    cfg = build_config(model, None, {"training.corrupt": corrupt, "training.loss": "logsigmoid",
                                     "training.adversarial_temperature": 0.5, "training.regularizer": "l2",
                                     "training.reg_weight": 0.01})
    types = np.arange(E) % 3 if strategy == "type" else None
    if types is not None:
        types[0] = 3  # a one-entity type: absent from all shards but one (placeholders)
    sh = Sharding.create(E, n, seed=4, entity_types=types)
    torch.manual_seed(1)
    full = build_model(model, E, R, dim=DIM, reciprocal=model != "transh", init_scale=0.5)
    ds = _data()
    parts = PartitionedTriples(ds.train, sh)
    ns = ShardedNegativeSampler(sh, 3, corrupt, strategy)
    plan = make_plan(parts.triples[next(RandomBatchSampler(parts, 4, seed=2).epoch(0))], ns, np.random.default_rng(3))
    return cfg, sh, full, ds, ns, plan, exchange


def _local_model(full, sh, rank, model):
    local = build_model(model, sh.shard_size, R, dim=DIM, reciprocal=model != "transh")
    sd = full.state_dict()
    rows = torch.zeros(sh.shard_size, sd["entity_emb.weight"].shape[1])
    cnt = sh.shard_counts[rank]
    rows[:cnt] = sd["entity_emb.weight"][torch.as_tensor(sh.shard_and_idx_to_entity[rank, :cnt])]
    sd["entity_emb.weight"] = rows
    local.load_state_dict(sd)
    return local


def _worker(rank, n, port, out, cases):
    torch.set_num_threads(1)
    init_group("gloo", rank, n, "127.0.0.1", port, 60)
    comm = Comm.from_env()
    results = []
    for case in cases:
        cfg, sh, full, ds, ns, plan, exchange = _setup(case, n)
        local = _local_model(full, sh, rank, case[0])
        view = WorkerView.build(plan, sh, ns, rank)
        pos, negs, (h, r, t) = forward_step(local, view, comm, exchange)
        loss = worker_loss(pos, negs, cfg.training, local.regularizer_emb(h, r, t, "l2"))
        (loss / n).backward()
        if exchange == "allgather":
            restrict_entity_grad(local, view.touched)
        total = sync_replicated_grads(local, comm, loss.detach().reshape(1))
        res = {"pos": [p.detach() for p in pos], "neg": [s.detach() for s in negs], "loss": total[0] / n,
               "ent_grad": local.entity_emb.weight.grad.coalesce(), "rel_grad": local.relation_emb.weight.grad.to_dense()}
        if exchange != "allgather":  # the row-gradient lookup (RowLeaves) gives the same shard gradient
            again = _local_model(full, sh, rank, case[0])
            leaves = RowLeaves(again.entity_emb.weight)
            pos2, negs2, (h2, r2, t2) = forward_step(again, view, comm, exchange, entity_rows=leaves)
            (worker_loss(pos2, negs2, cfg.training, again.regularizer_emb(h2, r2, t2, "l2")) / n).backward()
            res["leaf_grad"] = torch.zeros_like(again.entity_emb.weight).index_add_(0, leaves.rows, leaves.leaf.grad)
            assert again.entity_emb.weight.grad is None
        # optimizer state lives with the shard: (S, W) rows, not (E, W)
        opt = build_optimizer("adagrad", local, 0.1)
        opt.step()
        res["opt_rows"] = opt.optimizers[0].state[local.entity_emb.weight]["sum"].shape[0]
        res["ent_rows"] = local.entity_emb.weight.shape[0]
        # inference with the same (pre-step) parameters
        local = _local_model(full, sh, rank, case[0])
        fi = FilterIndex(ds.all_triples(), R)
        rk = distributed_rank(local, sh, comm, ds.test, fi, chunk_elements=64, window=5)
        res["ranks"] = (rk.head_ranks, rk.tail_ranks)
        q = ds.test[:6]
        res["topk"] = distributed_topk(local, sh, comm, q[:, 0], q[:, 1], False, 7, window=4)
        res["topk_head_excl"] = distributed_topk(local, sh, comm, q[:, 2], q[:, 1], True, 7, fi, window=4)
        results.append(res)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()


def _run(n, cases, tmp_path):
    spawn(_worker, n, (n, free_port(), str(tmp_path), cases), timeout_s=150, start_method="fork")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(n)]


def _compare(case, n, results):
    cfg, sh, full, ds, ns, plan, exchange = _setup(case, n)
    ref = reference_step(full, plan, sh, ns, cfg.training)
    ref["loss"].backward()
    g_full = full.entity_emb.weight.grad.to_dense()
    touched = np.zeros(E, bool)
    for rank, res in enumerate(results):
        kw = dict(atol=1e-5, rtol=1e-5)
        for a, b in zip(res["pos"], ref["pos"][rank]):
            torch.testing.assert_close(a, b.detach(), **kw)
        for a, b in zip(res["neg"], ref["neg"][rank]):
            torch.testing.assert_close(a, b.detach(), **kw)
        torch.testing.assert_close(res["loss"], ref["loss"].detach(), **kw)
        torch.testing.assert_close(res["rel_grad"], full.relation_emb.weight.grad.to_dense(), **kw)
        cnt = sh.shard_counts[rank]
        g = res["ent_grad"].to_dense()
        torch.testing.assert_close(g[:cnt], g_full[torch.as_tensor(sh.shard_and_idx_to_entity[rank, :cnt])], **kw)
        assert (g[cnt:] == 0).all()
        if "leaf_grad" in res:
            torch.testing.assert_close(res["leaf_grad"], g, **kw)
        touched[sh.shard_and_idx_to_entity[rank, res["ent_grad"].indices()[0].numpy()]] = True
        assert res["ent_rows"] == res["opt_rows"] == -(-E // n)  # 1/n of the table and its optimizer state
    assert g_full[~torch.as_tensor(touched)].abs().sum() == 0  # no row updated that one process would skip
    # ranks: exactly the core evaluator's; top-k: same ids, scores to float rounding
    full.eval()
    core = Evaluator(FilterIndex(ds.all_triples(), R)).rank(full, ds.test, E)
    q = ds.test[:6]
    with torch.no_grad():
        tail_scores = full.score_queries(torch.as_tensor(q[:, 0]), torch.as_tensor(q[:, 1]))
        head_scores = full.score_queries(torch.as_tensor(q[:, 2]), torch.as_tensor(q[:, 1]), head=True)
    qi, ent = FilterIndex(ds.all_triples(), R).known(q[:, 2], q[:, 1], head=True)
    head_scores[torch.as_tensor(qi), torch.as_tensor(ent)] = float("-inf")
    for res in results:
        np.testing.assert_array_equal(res["ranks"][0], core.head_ranks)
        np.testing.assert_array_equal(res["ranks"][1], core.tail_ranks)
        for (vals, ids), scores in ((res["topk"], tail_scores), (res["topk_head_excl"], head_scores)):
            top = torch.topk(scores, 7, dim=1)
            np.testing.assert_array_equal(ids, top.indices.numpy())
            np.testing.assert_allclose(vals, top.values.numpy(), rtol=1e-5, atol=1e-5)


def test_two_workers_equal_one_process(tmp_path):
    results = _run(2, CASES, tmp_path)
    for i, case in enumerate(CASES):
        _compare(case, 2, [r[i] for r in results])


def test_four_workers_equal_one_process(tmp_path):
    cases = [CASES[0], CASES[1]]
    results = _run(4, cases, tmp_path)
    for i, case in enumerate(cases):
        _compare(case, 4, [r[i] for r in results])


def _failing_worker(rank, n, port):
    init_group("gloo", rank, n, "127.0.0.1", port, 20)
    if rank == 1:
        raise RuntimeError("boom")
    dist.barrier()  # rank 0 would wait for ever without the launcher's checks


def test_a_failing_worker_fails_the_launch_instead_of_hanging():
    with pytest.raises(RuntimeError, match="exited with code"):
        spawn(_failing_worker, 2, (2, free_port()), timeout_s=60, start_method="fork")
