"""Scale features: memory estimate + guard, low-precision entity storage, row-wise Adagrad on it,
the BLAS L2 kernel, the one-lookup negatives step, the lean/mmap filter index, streaming evaluation."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import kgcomplete as kgc
import reference
from kgcomplete.cli.main import cli
from kgcomplete.config import build_config
from kgcomplete.data import load_dataset
from kgcomplete.data.dataset import Dataset
from kgcomplete.evaluation.evaluator import Evaluator
from kgcomplete.evaluation.filter_index import CSRIndex, FilterIndex
from kgcomplete.models import build_model
from kgcomplete.models.base import _NegL2
from kgcomplete.training import Trainer, build_optimizer
from kgcomplete.training.memory import (MemoryBudgetError, check_memory, estimate_training_memory,
                                        parse_memory)
from kgcomplete.training.optimizers import round_to


@pytest.fixture(scope="module")
def umls():
    return load_dataset("umls")


# ------------------------------------------------------------------------------ memory estimate
def test_parse_memory_units():
    assert parse_memory("16GiB") == 16 << 30
    assert parse_memory("500MB") == 500 * 10**6
    assert parse_memory("2g") == 2 << 30
    assert parse_memory(1.5) == int(1.5 * (1 << 30))
    assert parse_memory("") is None and parse_memory(None) is None
    with pytest.raises(ValueError, match="max_memory"):
        parse_memory("lots")


def test_estimate_matches_real_tables_and_optimizer_state():
    """The table and optimizer parts equal the bytes a built model + RowAdagrad really hold."""
    E, R = 5000, 7
    for dtype, opt in (("float32", "rowadagrad"), ("float16", "rowadagrad"), ("float32", "adam")):
        cfg = build_config("transe", None, {"model.dim": 24, "model.storage_dtype": dtype, "training.optimizer": opt,
                                            "training.mode": "negatives", "model.reciprocal": True})
        est = estimate_training_memory(cfg, E, R, num_train=10_000)
        m = build_model("transe", E, R, dim=24, reciprocal=True, storage_dtype=dtype)
        assert est.parts["entity table"] == m.entity_emb.weight.nbytes
        assert est.parts["relation table + dense layers"] == m.relation_emb.weight.nbytes
        optim = build_optimizer(opt, m, 0.1)
        m.score_triples(torch.tensor([[0, 1, 2], [3, 4, 5]])).sum().backward()
        optim.step()
        state = sum(t.nbytes for o in optim.optimizers for s in o.state.values() for t in s.values()
                    if torch.is_tensor(t) and t.dim() > 0)
        assert est.parts["optimizer state"] == state, (dtype, opt)
        assert est.parts["triples"] == 10_000 * 3 * 8
    half = estimate_training_memory(build_config("transe", None, {"model.storage_dtype": "float16"}), E, R, 10)
    full = estimate_training_memory(build_config("transe", None, {}), E, R, 10)
    assert half.parts["entity table"] * 2 == full.parts["entity table"]


def test_guard_refuses_with_the_numbers():
    cfg = build_config("complex", None, {"model.dim": 100, "training.optimizer": "rowadagrad", "training.mode": "negatives"})
    est = estimate_training_memory(cfg, 10_000_000, 1000, 100_000_000)
    assert 8 << 30 < est.total < 16 << 30  # 10M x 200 floats = 7.45 GiB of table, + triples and state
    check_memory(est, "64GiB")  # fits: no error
    with pytest.raises(MemoryBudgetError) as e:
        check_memory(est, "4GiB")
    msg = str(e.value)
    assert "entity table" in msg and "7.45 GiB" in msg and "limit 4.00 GiB" in msg and "optimizer state" in msg


def test_train_refuses_before_allocating(tmp_path, umls):
    with pytest.raises(MemoryBudgetError):
        kgc.train(umls, model="distmult", out=tmp_path / "run", epochs=1, progress=False, max_memory="1MB")
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    res = CliRunner().invoke(cli, ["train", "-d", "umls", "-m", "distmult", "--epochs", "1", "--no-progress",
                                   "--max-memory", "470MiB", "--out", str(tmp_path / "cli")])  # above the floor
    assert res.exit_code != 0
    assert "max_memory" in res.output and "entity table" in res.output


def test_estimate_is_recorded_in_metrics(tmp_path, umls):
    run = kgc.train(umls, model="distmult", out=tmp_path / "run", epochs=1, progress=False, evaluate_test=False,
                    max_memory="8GiB", mode="negatives", eval_every=0)
    m = run.folder.metrics()
    assert m["memory_estimate"]["parts_bytes"]["entity table"] == run.model.entity_emb.weight.nbytes


# ------------------------------------------------------------------------- low-precision storage
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_table_uses_float32_math(dtype):
    m = build_model("transe_l2", 50, 3, dim=8, storage_dtype=dtype, init_scale=0.5)
    assert m.entity_emb.weight.dtype == getattr(torch, dtype)
    assert m.relation_emb.weight.dtype == torch.float32
    h, r = torch.tensor([0, 1]), torch.tensor([2, 0])
    assert m.entities(h).dtype == torch.float32
    with torch.no_grad():
        ref = build_model("transe_l2", 50, 3, dim=8)
        ref.entity_emb.weight.copy_(m.entity_emb.weight.float())
        ref.relation_emb.weight.copy_(m.relation_emb.weight)
        torch.testing.assert_close(m.score_tails(h, r), ref.score_tails(h, r))


def test_low_precision_all_entity_scoring_is_blocked(monkeypatch):
    import kgcomplete.models.base as base

    monkeypatch.setattr(base, "ENTITY_BLOCK_ROWS", 7)  # 50 entities -> 8 blocks
    m = build_model("distmult", 50, 3, dim=8, storage_dtype="float16", init_scale=0.5)
    with torch.no_grad():
        full = m.score_tails(torch.tensor([0, 1]), torch.tensor([2, 0]))
        direct = (m.entities(torch.tensor([0, 1])) * m.relations(torch.tensor([2, 0]))) @ m.entity_emb.weight.float().T
    torch.testing.assert_close(full, direct)


def test_row_adagrad_on_float16_follows_float32():
    torch.manual_seed(0)
    m32 = build_model("distmult", 30, 2, dim=16, init_scale=0.5)
    m16 = build_model("distmult", 30, 2, dim=16, init_scale=0.5, storage_dtype="float16")
    with torch.no_grad():
        m32.entity_emb.weight.copy_(m16.entity_emb.weight.float())
        m32.relation_emb.weight.copy_(m16.relation_emb.weight)
    before = m16.entity_emb.weight.clone()
    e, r = m16.entity_emb.weight.detach().double().numpy(), m16.relation_emb.weight.detach().double().numpy()
    tr = torch.tensor([[0, 1, 2], [3, 0, 2]])
    opts = {}
    for m in (m32, m16):
        opts[m] = build_optimizer("rowadagrad", m, 0.1)
        m.score_triples(tr).sum().backward()
        opts[m].step()
    # reference: d/dx of sum_k h_k r_k t_k (DistMult) over the two triples, then row-wise Adagrad
    g_e, g_r = np.zeros_like(e), np.zeros_like(r)
    for h, rel, t in tr.tolist():
        g_e[h] += r[rel] * e[t]
        g_e[t] += e[h] * r[rel]
        g_r[rel] += e[h] * e[t]
    acc_e, acc_r = np.zeros(30), np.zeros(2)
    ref_e, ref_r = reference.row_adagrad(e, g_e, acc_e, 0.1), reference.row_adagrad(r, g_r, acc_r, 0.1)
    w16 = m16.entity_emb.weight
    touched = torch.tensor([0, 2, 3])
    assert (w16[touched] != before[touched]).any(dim=1).all()  # every touched row moved
    untouched = torch.ones(30, dtype=torch.bool)
    untouched[touched] = False
    assert torch.equal(w16[untouched], before[untouched])  # nothing else did
    # the float32 update rounded to the nearest float16, and the float32 model's unrounded update
    np.testing.assert_array_equal(w16.detach().double().numpy(), ref_e.astype(np.float16).astype(np.float64))
    np.testing.assert_allclose(m32.entity_emb.weight.detach().double().numpy(), ref_e, rtol=1e-5, atol=1e-7)
    for m in (m32, m16):
        np.testing.assert_allclose(m.relation_emb.weight.detach().double().numpy(), ref_r, rtol=1e-5, atol=1e-7)
        state = opts[m].optimizers[0].state
        for p, ref_acc in ((m.entity_emb.weight, acc_e), (m.relation_emb.weight, acc_r)):
            acc = state[p]["sum"]  # row state is float32 and per row, for the float16 table too
            assert acc.dtype == torch.float32 and acc.shape == (p.shape[0],)
            np.testing.assert_allclose(acc.double().numpy(), ref_acc, rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="rowadagrad"):
        build_optimizer("adam", m16, 0.1)


def test_bfloat16_stochastic_rounding_is_unbiased():
    torch.manual_seed(0)
    x = torch.full((200_000,), 1.0 + 2**-10)  # between two bfloat16 values (1 and 1 + 2^-7)
    assert x.to(torch.bfloat16).float().mean().item() == 1.0  # round-to-nearest loses it
    assert round_to(x, torch.bfloat16).float().mean().item() == pytest.approx(1.0 + 2**-10, abs=2e-5)


def test_low_precision_training_learns_umls(tmp_path, umls):
    opts = dict(model="distmult", epochs=12, progress=False, mode="negatives", loss="logsigmoid", margin=0.0,
                optimizer="rowadagrad", lr=0.1, dim=32, eval_every=0, regularizer="none", init_scale=0.1,
                threads=1, reciprocal=False)
    mrr = {d: kgc.train(umls, out=tmp_path / d, storage_dtype=d, **opts).folder.metrics()["test"]["mrr"]
           for d in ("float32", "float16", "bfloat16")}
    assert mrr["float32"] > 0.5, mrr
    assert mrr["float16"] >= mrr["float32"] - 0.05 and mrr["bfloat16"] >= mrr["float32"] - 0.05, mrr
    run = kgc.load_run(tmp_path / "bfloat16")  # reopens with the stored dtype
    assert run.model.entity_emb.weight.dtype == torch.bfloat16


# ------------------------------------------------------------------------------ kernels, trainer
def test_l2_kernel_values_and_gradients():
    torch.manual_seed(0)
    q = torch.randn(6, 5, dtype=torch.double, requires_grad=True)
    c = torch.randn(9, 5, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_NegL2.apply, (q, c))
    torch.testing.assert_close(_NegL2.apply(q, c), -torch.cdist(q, c))
    c0 = torch.cat([q[:1].detach(), c[1:].detach()]).requires_grad_()  # a zero distance: clamped, no NaN
    _NegL2.apply(q, c0).sum().backward()
    # d/dc_j sum_b -||q_b - c_j|| = sum_b (q_b - c_j) / ||q_b - c_j||; the zero-distance pair adds 0
    qn, cn = q.detach().numpy(), c0.detach().numpy()
    diff = qn[:, None, :] - cn[None, :, :]  # (B, C, W)
    dist = np.linalg.norm(diff, axis=-1, keepdims=True)
    assert dist[0, 0, 0] == 0 and (np.delete(dist.ravel(), 0) > 0.1).all()
    expected = np.where(dist > 0, diff / np.where(dist > 0, dist, 1.0), 0.0).sum(0)
    np.testing.assert_allclose(c0.grad.numpy(), expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name,reciprocal", [("transe_l2", False), ("distmult", True), ("complex", False),
                                             ("rotate", True), ("transh", False)])
def test_one_lookup_negatives_step_matches_per_query_scoring(umls, name, reciprocal):
    """The trainer's loss and gradients equal scoring through score_triples/score_tails/score_heads."""
    cfg = build_config(name, None, {"model.dim": 8, "model.reciprocal": reciprocal, "training.mode": "negatives",
                                    "training.loss": "logsigmoid", "training.num_negatives": 5,
                                    "training.optimizer": "rowadagrad", "training.regularizer": "none"}).training
    torch.manual_seed(0)
    m = build_model(name, umls.num_entities, umls.num_relations, dim=8, reciprocal=reciprocal, init_scale=0.3)
    tr = Trainer(m, umls, cfg)
    idx = torch.arange(12)
    gen_state = tr.generator.get_state()
    loss, _ = tr.batch_loss(idx)
    loss.backward()
    g_fast = m.entity_emb.weight.grad.to_dense().clone()
    m.zero_grad(set_to_none=True)
    tr.generator.set_state(gen_state)
    from kgcomplete.training.loss import negative_sampling_loss

    b = tr.train[idx]
    h, r, t = b[:, 0], b[:, 1], b[:, 2]
    kw = dict(kind="logsigmoid", margin=cfg.margin)
    neg_t, neg_h = tr.sampler.sample(t), tr.sampler.sample(h)
    pos = m.score_triples(b)
    pos_h = m.score_emb(m.entities(t), m.relations(m.inverse(r)), m.entities(h)) if m.reciprocal else pos
    ref = (negative_sampling_loss(pos, m.score_tails(h, r, neg_t), **kw)
           + negative_sampling_loss(pos_h, m.score_heads(r, t, neg_h), **kw)) / 2
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_fast, m.entity_emb.weight.grad.to_dense(), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------- filter index, evaluation
def dense_grad(p) -> np.ndarray:
    """``p``'s gradient as a dense float64 array: sparse ``.grad`` (repeats summed) plus the
    pending float32 row gradients of a low-precision table."""
    g = np.zeros(tuple(p.shape))
    if p.grad is not None:
        g += p.grad.to_dense().double().numpy()
    for ids, vals in getattr(p, "pending_row_grads", None) or []:
        np.add.at(g, ids.numpy(), vals.double().numpy())
    return g


@pytest.mark.parametrize("name,reciprocal,dtype", [("transe_l2", False, "float32"), ("distmult", True, "float32"),
                                                    ("complex", False, "float32"), ("transh", True, "float32"),
                                                    ("pairre", False, "float32"), ("boxe", True, "float32"),
                                                    ("complex", True, "float16")])
def test_row_update_step_equals_sparse_autograd_step(umls, name, reciprocal, dtype):
    """The fast step (distinct-row leaves, autograd.grad, RowAdagrad.update_rows) and the autograd
    step (loss.backward() into sparse .grad, RowAdagrad.step), regularizer included: the fast
    step's row gradients equal the sparse autograd gradients, and both runs' parameters follow
    row-wise Adagrad written out in NumPy (driven by the sparse autograd gradients)."""
    over = {"model.dim": 8, "model.reciprocal": reciprocal, "model.storage_dtype": dtype, "training.mode": "negatives",
            "training.loss": "logsigmoid", "training.num_negatives": 7, "training.optimizer": "rowadagrad",
            "training.regularizer": "n3", "training.reg_weight": 0.01, "training.batch_size": 16}
    cfg = build_config(name, None, over)
    trainers = []
    for fast in (True, False):
        torch.manual_seed(0)
        m = build_model(name, umls.num_entities, umls.num_relations, dim=8, reciprocal=reciprocal, init_scale=0.3,
                        storage_dtype=dtype)
        tr = Trainer(m, umls, cfg.training)
        assert tr.row_updates
        assert {n for n, _ in m.named_parameters()} == {"entity_emb.weight", "relation_emb.weight"}
        tr.row_updates = fast
        trainers.append(tr)
    fast_tr, slow_tr = trainers
    keys = ("entity_emb.weight", "relation_emb.weight")
    before = {k: v.double().numpy().copy() for k, v in slow_tr.model.state_dict().items()}

    fast_grads, slow_grads = [], []
    fast_opt, slow_opt = fast_tr.optimizer.optimizers[0], slow_tr.optimizer.optimizers[0]
    inner_rows, inner_step = fast_opt.update_rows, slow_opt.step

    def spy_rows(p, rows, grad):  # the fast step's (U, W) gradient of its distinct rows
        g = np.zeros(tuple(p.shape))
        g[rows.numpy()] = grad.double().numpy()
        fast_grads[-1][next(k for k in keys if fast_tr.model.get_parameter(k) is p)] = g
        inner_rows(p, rows, grad)

    def spy_step(closure=None):  # the autograd step's gradients, as the optimizer receives them
        slow_grads.append({k: dense_grad(slow_tr.model.get_parameter(k)) for k in keys})
        return inner_step(closure)

    fast_opt.update_rows, slow_opt.step = spy_rows, spy_step
    for step in range(3):
        fast_grads.append({})
        idx = torch.arange(16 * step, 16 * step + 16)
        (la, _), (lb, _) = (tr.train_batch(idx) for tr in trainers)
        assert la == pytest.approx(lb, rel=1e-5)
    low = dtype != "float32"
    for gf, gs in zip(fast_grads, slow_grads):  # independent: autograd.grad of row leaves vs sparse backward
        for k in keys:
            np.testing.assert_allclose(gf[k], gs[k], atol=1e-5 if not low else 1e-3, rtol=1e-4)

    ref, acc = {k: before[k].copy() for k in keys}, {k: np.zeros(before[k].shape[0]) for k in keys}
    for g in slow_grads:
        for k in keys:
            ref[k] = reference.row_adagrad(ref[k], g[k], acc[k], cfg.training.lr)
            if low and k == "entity_emb.weight":  # stored rounded to nearest
                ref[k] = ref[k].astype(getattr(np, dtype)).astype(np.float64)
    for tr in trainers:
        state = tr.optimizer.optimizers[0].state
        for k in keys:
            got = tr.model.get_parameter(k).detach().double().numpy()
            tol = 2e-3 if low and k == "entity_emb.weight" else 1e-5
            np.testing.assert_allclose(got, ref[k], atol=tol, rtol=1e-4, err_msg=k)
            assert not np.array_equal(got, before[k]), k  # the steps really moved the table
            np.testing.assert_allclose(state[tr.model.get_parameter(k)]["sum"].double().numpy(), acc[k],
                                       rtol=1e-3 if low else 1e-4, atol=1e-9, err_msg=k)


def test_fused_softplus_mean_gradients():
    from kgcomplete.training.loss import _SoftplusRowMean

    x = (torch.randn(5, 11, dtype=torch.double) * 20).requires_grad_()  # large |x| too
    assert torch.autograd.gradcheck(lambda v: _SoftplusRowMean.apply(v, 6.0), (x,))
    torch.testing.assert_close(_SoftplusRowMean.apply(x, 6.0), torch.nn.functional.softplus(x + 6.0).mean(1))


def test_rows_not_eligible_for_row_updates_use_autograd(umls):
    for name, over in (("conve", {}), ("rotate", {}), ("complex", {"training.mode": "1vsAll"}),
                       ("transe", {"training.optimizer": "adam"})):
        cfg = build_config(name, None, {"training.mode": "negatives", "training.optimizer": "rowadagrad", **over})
        m = build_model(name, umls.num_entities, umls.num_relations, dim=20, reciprocal=True)
        assert not Trainer(m, umls, cfg.training).row_updates, (name, over)
        cfg.training.hogwild = 2
        with pytest.raises(ValueError, match="hogwild"):
            Trainer(m, umls, cfg.training)


@pytest.mark.slow
def test_hogwild_threads_learn_umls_like_one_thread(tmp_path, umls):
    """Two lock-free threads reach about the accuracy of one (same epochs). Slow: a Hogwild run is not
    reproducible, and on umls (135 entities, every batch touches nearly every row) the interleaving
    decides how stale the gradients are: one thread gives 0.63, two gave 0.51-0.63 over 25 runs on a
    loaded 2-core machine (random: ~0.04), so the bound is that spread."""
    opts = dict(model="distmult", epochs=12, progress=False, mode="negatives", loss="logsigmoid", margin=0.0,
                optimizer="rowadagrad", lr=0.1, dim=32, eval_every=0, regularizer="none", init_scale=0.1,
                threads=1, reciprocal=False)
    mrr = {k: kgc.train(umls, out=tmp_path / f"h{k}", hogwild=k, **opts).folder.metrics()["test"]["mrr"] for k in (1, 2)}
    assert mrr[1] > 0.5 and mrr[2] > 0.45 and mrr[2] >= mrr[1] - 0.2, mrr


def test_hogwild_threads_train_every_batch_once(umls):
    """Deterministic parts of Hogwild: each training row exactly once per epoch, the epoch loss the
    positives-weighted mean of the threads' batch losses, and the threads' updates lower the loss."""
    cfg = build_config("distmult", None, {"training.mode": "negatives", "training.optimizer": "rowadagrad",
                                          "training.hogwild": 2, "training.batch_size": 64, "training.progress": False})
    tr = Trainer(build_model("distmult", umls.num_entities, umls.num_relations, dim=8), umls, cfg.training)
    seen, results = [], []
    inner = tr.train_batch

    def spy(idx, sampler=None):
        seen.append(idx.clone())
        out = inner(idx, sampler)
        results.append(out)
        return out

    tr.train_batch = spy
    rec = tr.run_epoch()
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(len(umls.train)))
    # the epoch loss is the positives-weighted mean of the batch losses the threads returned
    assert rec["epoch"] == 1
    assert rec["loss"] == pytest.approx(sum(l * n for l, n in results) / sum(n for _, n in results), rel=1e-9)
    assert sum(n for _, n in results) == len(umls.train)
    second = tr.run_epoch()
    assert second["epoch"] == 2 and second["loss"] < rec["loss"], (rec, second)  # the threads' updates train


def test_hogwild_thread_errors_reach_the_caller(umls):
    cfg = build_config("distmult", None, {"training.mode": "negatives", "training.optimizer": "rowadagrad",
                                          "training.hogwild": 2, "training.batch_size": 32, "training.progress": False})
    tr = Trainer(build_model("distmult", umls.num_entities, umls.num_relations, dim=8), umls, cfg.training)
    calls = []

    def failing(idx, sampler=None):
        calls.append(1)
        if len(calls) == 5:
            raise FloatingPointError("loss became nan")
        return 0.0, len(idx)

    tr.train_batch = failing
    with pytest.raises(FloatingPointError, match="nan"):
        tr.run_epoch()
    assert len(calls) < len(umls.train) // 32  # the other thread stopped too


def test_filter_index_lean_build_and_mmap_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    keys, vals = rng.integers(0, 40, 2000), rng.integers(0, 25, 2000)
    idx = CSRIndex.build(keys, vals)
    pairs = np.unique(np.stack([keys, vals], 1), axis=0)  # sorted distinct pairs
    assert np.array_equal(idx.values, pairs[:, 1])
    assert np.array_equal(idx.keys, np.unique(pairs[:, 0]))
    assert np.array_equal(np.diff(idx.indptr), np.unique(pairs[:, 0], return_counts=True)[1])
    tr = np.stack([rng.integers(0, 30, 500), rng.integers(0, 4, 500), rng.integers(0, 30, 500)], 1)
    whole, parts = FilterIndex(tr, 4), FilterIndex([tr[:123], tr[123:]], 4)
    loaded = FilterIndex.load(whole.save(tmp_path / "filter"))
    assert isinstance(loaded.tails.values, np.memmap)
    for f in (parts, loaded):
        for side in ("tails", "heads"):
            for a in ("keys", "indptr", "values"):
                assert np.array_equal(getattr(getattr(f, side), a), getattr(getattr(whole, side), a))
    assert loaded.contains(tr).all()


@pytest.mark.parametrize("reciprocal", [False, True])
def test_l2_ranking_scores_are_an_increasing_transform_of_scores(reciprocal):
    torch.manual_seed(0)
    m = build_model("transe_l2", 50, 3, dim=8, reciprocal=reciprocal, init_scale=0.5).eval()
    anchor, r, cand = torch.tensor([1, 7, 9]), torch.tensor([0, 2, 1]), torch.arange(50)
    for head in (False, True):
        s = m.score_queries(anchor, r, cand, head=head)
        k = m.ranking_scores(anchor, r, cand, head=head)
        a, rel = m.entities(anchor), m.relations(m.inverse(r) if head and reciprocal else r)
        q = m.head_query(rel, a) if head and not reciprocal else m.tail_query(a, rel)
        torch.testing.assert_close(k, q.pow(2).sum(1, keepdim=True) - s.pow(2), atol=1e-4, rtol=1e-5)
    d = build_model("distmult", 50, 3, dim=8)
    torch.testing.assert_close(d.ranking_scores(anchor, r, cand), d.score_queries(anchor, r, cand))


@pytest.mark.parametrize("name", ["distmult", "transe_l2", "rotate"])
def test_streaming_evaluation_equals_dense_ranking(name):
    """Entity-block streaming (tiny chunk budget) gives the dense path's ranks, ties included."""
    E, R = 3000, 4
    rng = np.random.default_rng(1)
    tr = np.stack([rng.integers(0, E, 4000), rng.integers(0, R, 4000), rng.integers(0, E, 4000)], 1)
    ds = Dataset.from_arrays(tr[:3800], num_entities=E, num_relations=R, valid=tr[3800:3900], test=tr[3900:])
    m = build_model(name, E, R, dim=6).eval()
    with torch.no_grad():  # small integers: every score is exact, so ties are real ties in both paths
        m.entity_emb.weight.copy_(torch.as_tensor(rng.integers(-2, 3, m.entity_emb.weight.shape)))
        m.relation_emb.weight.copy_(torch.as_tensor(rng.integers(-1, 2, m.relation_emb.weight.shape)))
    f = FilterIndex.from_dataset(ds)
    for filtered in (True, False):
        dense = Evaluator(f, chunk_elements=1 << 24).rank(m, ds.test, E, filtered)
        stream = Evaluator(f, chunk_elements=1000).rank(m, ds.test, E, filtered)  # 1000 // 3000 = 0 queries
        np.testing.assert_array_equal(stream.head_ranks, dense.head_ranks)
        np.testing.assert_array_equal(stream.tail_ranks, dense.tail_ranks)
