"""The fast candidate-scoring paths (models/kernels.py: L2 through matrix products, L1 and moduli in
cache-sized blocks with a hand-written backward, other scores in chunks recomputed in the backward
pass) give the scores and gradients of the plain broadcast of each model's ``score_emb``, on random
float64 inputs, in every direction, candidate shape and block layout."""

import numpy as np
import pytest
import torch

from kgcomplete.models import MODELS, build_model
from kgcomplete.models import kernels
from kgcomplete.models.base import broadcast_scoring

E, R, D = 23, 4, 6
#: (model name, options) of every model, and both norms of every distance model
CASES = {f"{n}_l{p}" if n not in ("distmult", "complex", "conve") else n:
         (n, {"p_norm": p} if n not in ("distmult", "complex", "conve") else {})
         for n in sorted(MODELS) for p in (1, 2)}
CASES["conve"] = ("conve", {"embedding_height": 2, "input_dropout": 0.0, "feature_dropout": 0.0,
                            "hidden_dropout": 0.0})
CASES["triplere_v2_u"] = ("triplere_v2", {"u": 0.5})
CASES["pairre_l3"] = ("pairre", {"p_norm": 3})  # no kernel for p = 3: chunks recomputed in the backward pass
CASES["boxe_l3"] = ("boxe", {"p_norm": 3})


def model(case):
    name, opts = CASES[case]
    torch.manual_seed(0)
    m = build_model(name, E, R, dim=D, **opts).double()
    return m.eval() if name == "conve" else m


def inputs(m, shape, seed=0):
    """Random float64 anchor, relation and candidate rows (leaves) of one candidate shape."""
    g = torch.Generator().manual_seed(seed)
    We, Wr = m.entity_width(), m.relation_width()
    B, C, G = 5, 9, 3
    q = {"shared": (B,), "per_query": (B,), "groups": (G, B)}[shape]
    c = {"shared": (C,), "per_query": (B, C), "groups": (G, C)}[shape]
    rel = torch.randn(*q, Wr, generator=g, dtype=torch.float64)
    if m.name == "boxe":  # box widths away from 0 (the log of their geometric mean)
        w = rel[..., 2 * D : 4 * D]
        rel[..., 2 * D : 4 * D] = torch.where(w < 0, -1.0, 1.0) * (0.2 + w.abs())
    if m.name == "rotate":
        rel = rel * 3.0  # phases
    return [x.requires_grad_() for x in (torch.randn(*q, We, generator=g, dtype=torch.float64), rel,
                                         torch.randn(*c, We, generator=g, dtype=torch.float64))]


def scores_and_grads(fn, xs, seed=1):
    out = fn(*xs)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad((out * w).sum(), xs, allow_unused=True)
    return [out.detach(), *[torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]]


@pytest.mark.parametrize("block", [kernels.BLOCK_ELEMENTS, 20])  # 20: several query and candidate blocks
@pytest.mark.parametrize("shape", ["shared", "per_query", "groups"])
@pytest.mark.parametrize("case, tails", [(c, tails) for c in sorted(CASES) for tails in (True, False)
                                          if tails or c != "conve"])  # ConvE: heads via inverse relations
def test_fast_scoring_equals_the_broadcast_formula(case, tails, shape, block, monkeypatch):
    m = model(case)
    monkeypatch.setattr(kernels, "BLOCK_ELEMENTS", block)
    xs = inputs(m, shape)
    fast = scores_and_grads(lambda a, r, c: m.score_candidates(a, r, c, tails), xs)
    plain = scores_and_grads(lambda a, r, c: m._broadcast_chunks(a, r, c, tails), xs)
    for what, got, want in zip(("scores", "d anchor", "d relation", "d candidates"), fast, plain):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=lambda s: f"{case} {what}: {s}")
    assert plain[0].abs().min() > 0 and all(g.abs().max() > 0 for g in plain[1:]), "a vacuous comparison"


@pytest.mark.parametrize("case", ["pairre_l1", "pairre_l2", "rotate_l1", "rotate_l2", "interht_l2", "boxe_l1"])
def test_broadcast_scoring_switch_routes_to_the_formula(case, monkeypatch):
    """Inside broadcast_scoring() the models without a similarity broadcast score_emb (the benchmark's
    'before' column); outside, they do not."""
    m = model(case)
    calls = []
    original = type(m)._broadcast_chunks
    monkeypatch.setattr(type(m), "_broadcast_chunks", lambda self, *a: calls.append(1) or original(self, *a))
    a, r, c = inputs(m, "shared")
    m.score_candidates(a, r, c, True)
    assert calls == []
    with broadcast_scoring():
        m.score_candidates(a, r, c, True)
    assert calls == [1]


@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("name", ["pairre", "triplere", "triplere_v2", "interht", "trans", "rotate", "boxe", "transh"])
@pytest.mark.parametrize("p", [1, 2])
def test_tail_and_head_queries_through_the_tables_match_broadcasting(name, p, reciprocal):
    """score_tails / score_heads (reciprocal: head queries as tail queries of the inverse relation) in
    float32 from the embedding tables: scores and the tables' sparse gradients match the broadcast."""
    torch.manual_seed(0)
    m = build_model(name, 40, 5, dim=8, reciprocal=reciprocal, init_scale=0.5, p_norm=p)
    h, r, t = torch.tensor([0, 3, 7, 7, 39]), torch.tensor([0, 1, 4, 2, 3]), torch.tensor([5, 3, 0, 1, 2])
    negs = torch.randint(0, 40, (5, 6), generator=torch.Generator().manual_seed(2))

    def run():
        m.zero_grad(set_to_none=True)
        out = [m.score_tails(h, r), m.score_heads(r, t), m.score_tails(h, r, negs), m.score_heads(r, t, negs[0])]
        w = torch.Generator().manual_seed(3)
        sum((o * torch.randn(o.shape, generator=w)).sum() for o in out).backward()
        return [o.detach() for o in out] + [m.entity_emb.weight.grad.to_dense(), m.relation_emb.weight.grad.to_dense()]

    fast = run()
    with broadcast_scoring():
        plain = run()
    for got, want in zip(fast, plain):
        torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("case", ["pairre_l2", "pairre_l1", "rotate_l1", "rotate_l2"])
def test_zero_distance_gives_the_broadcast_gradient_not_nan(case):
    """A candidate at distance 0 from its query: the L2 kernel clamps before the square root and
    passes no gradient there, the L1 kernels take sign(0) = 0, as autograd does through the norm.
    (PairRE L1: the kernel's fused multiply-add leaves f at the rounding error of r_t * t, not 0,
    so its subgradient there may differ: only finiteness and the scores are compared.)"""
    m = model(case)
    a, r, c = (x.detach() for x in inputs(m, "shared"))
    c[2] = a[0]
    if m.name == "pairre":  # r_h = r_t and candidate = anchor: f = 0 exactly
        r[0, D:] = r[0, :D]
    else:  # rotation by 0 and candidate = anchor
        r[0] = 0.0
    xs = [x.requires_grad_() for x in (a, r, c)]
    fast = scores_and_grads(lambda *x: m.score_candidates(*x, True), xs)
    plain = scores_and_grads(lambda *x: m._broadcast_chunks(*x, True), xs)
    assert abs(float(fast[0][0, 2])) < 1e-5
    for got, want in zip(fast, plain):
        assert torch.isfinite(got).all()
        if case != "pairre_l1" or got is fast[0]:
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("name", ["pairre", "transh", "transe"])
def test_l2_kernel_ignores_bf16_autocast(name):
    """The expansion ||q||^2 + ||x||^2 - 2 q.x cancels: it runs in float32 under bf16 autocast."""
    m = build_model(name, E, R, dim=D, p_norm=2)
    a, r, c = (torch.randn(5, w) for w in (m.entity_width(), m.relation_width(), m.entity_width()))
    with torch.no_grad():
        want = m._broadcast_chunks(a, r, c, True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m.score_candidates(a, r, c, True)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
