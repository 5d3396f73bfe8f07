"""Every model's score against an independent NumPy computation of its published formula.

``test_models.py`` checks that the scoring paths of a model agree with each other; these tests check
them against a second implementation: the reference functions below are plain NumPy (float64),
written from the papers and the storage conventions in the model docstrings, and never call the
library. Tables are fixed to seeded values, so a sign, a chunk order, a missing normalisation or a
swapped real/imaginary part shows up as a score mismatch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgcomplete.models import MODELS, build_model

E, R, D, B, C = 5, 3, 4, 4, 7
TOL = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- reference formulas
def lp(x, p):
    """Lp norm over the last axis."""
    return (np.abs(x) ** p).sum(-1) ** (1.0 / p)


def unit(x):
    """L2-normalise the last axis (the 1e-12 floor of torch.nn.functional.normalize)."""
    return x / np.maximum(np.sqrt((x * x).sum(-1, keepdims=True)), 1e-12)


def ref_transe(h, r, t, p):
    # Bordes et al. 2013: -||h + r - t||_p
    return -lp(h + r - t, p)


def ref_transh(h, r, t, p):
    # Wang et al. 2014: relation = [w | d], w a unit normal of the hyperplane
    w, d = unit(r[..., :D]), r[..., D:]

    def proj(x):
        return x - (x * w).sum(-1, keepdims=True) * w

    return -lp(proj(h) + d - proj(t), p)


def ref_rotate(h, r, t, p):
    # Sun et al. 2019: -sum_k |h_k e^{i theta_k} - t_k|; entities interleaved [re0, im0, re1, im1, ...];
    # p_norm 2: -sqrt(sum_k |h_k e^{i theta_k} - t_k|^2)
    hc = h[..., 0::2] + 1j * h[..., 1::2]
    tc = t[..., 0::2] + 1j * t[..., 1::2]
    return -lp(np.abs(hc * np.exp(1j * r) - tc), p)


def ref_pairre(h, r, t, p):
    # Chao et al. 2021: -||h/|h| o r_h - t/|t| o r_t||; relation = [r_h | r_t]
    rh, rt = r[..., :D], r[..., D:]
    return -lp(unit(h) * rh - unit(t) * rt, p)


def ref_triplere(u):
    # Yu et al. 2022: -||h/|h| o (r_h + u) - t/|t| o (r_t + u) + r_m||; relation = [r_h | r_m | r_t]
    def f(h, r, t, p):
        rh, rm, rt = r[..., :D], r[..., D : 2 * D], r[..., 2 * D :]
        return -lp(unit(h) * (rh + u) - unit(t) * (rt + u) + rm, p)

    return f


def ref_interht(h, r, t, p, u=1.0):
    # Wang et al. 2022: -||h o (t~ + u) + r - t o (h~ + u)||; entities [main | aux], each unit norm
    hm, ha = unit(h[..., :D]), unit(h[..., D:])
    tm, ta = unit(t[..., :D]), unit(t[..., D:])
    return -lp(hm * (ta + u) + r - tm * (ha + u), p)


def ref_trans(h, r, t, p, u=1.0):
    # Zhang et al. 2022: -||h o (t~ + u + r_bar) - t o (h~ + u - r_hat) + r||; relation [r | r_bar | r_hat]
    rr, rbar, rhat = r[..., :D], r[..., D : 2 * D], r[..., 2 * D :]
    hm, hs = unit(h[..., :D]), unit(h[..., D:])
    tm, ts = unit(t[..., :D]), unit(t[..., D:])
    return -lp(hm * (ts + u + rbar) - tm * (hs + u - rhat) + rr, p)


def ref_distmult(h, r, t, p):
    # Yang et al. 2015: <h, r, t>
    return (h * r * t).sum(-1)


def ref_complex(h, r, t, p):
    # Trouillon et al. 2016: Re(<h, r, conj(t)>); rows are [re | im] halves
    def c(x):
        return x[..., :D] + 1j * x[..., D:]

    return np.real((c(h) * c(r) * np.conj(c(t))).sum(-1))


def ref_boxe(h, r, t, p):
    """Abboud et al. 2020 (as in PyKEEN's BoxEInteraction with tanh_map): the head point h + bump_t
    must lie in the head box of r, the tail point t + bump_h in the tail box. A box is
    centre -/+ width/2 with width = |delta| / geometric_mean(|delta|) * (1 + elu(size)); box corners
    and points are mapped through tanh; per-dimension distance
    |p - c| / (w + 1) inside, |p - c| (w + 1) - w/2 ((w + 1) - 1/(w + 1)) outside."""

    def elu(x):
        return np.where(x > 0, x, np.expm1(x))

    def box_distance(point, centre, delta, size):
        delta = np.abs(delta)
        width = delta / np.exp(np.log(delta).mean(-1, keepdims=True)) * (1.0 + elu(size))
        # each corner mapped on its own (the library once had high = tanh(tanh(low) + width))
        low, high = np.tanh(centre - width / 2), np.tanh(centre + width / 2)
        pt = np.tanh(point)
        w = high - low
        c = (low + high) / 2
        dist = np.abs(pt - c)
        inside = (low <= pt) & (pt <= high)
        d = np.where(inside, dist / (w + 1), dist * (w + 1) - w / 2 * ((w + 1) - 1 / (w + 1)))
        return lp(d, p)

    hb, hbump, tb, tbump = h[..., :D], h[..., D:], t[..., :D], t[..., D:]
    ch, ct, wh, wt = r[..., :D], r[..., D : 2 * D], r[..., 2 * D : 3 * D], r[..., 3 * D : 4 * D]
    sh, st = r[..., 4 * D : 4 * D + 1], r[..., 4 * D + 1 :]
    return -(box_distance(hb + tbump, ch, wh, sh) + box_distance(tb + hbump, ct, wt, st))


# ConvE (Dettmers et al. 2018): <relu(bn2(fc(vec(relu(bn1(conv(bn0([h; r])))))))), t> + b_t
CONVE = dict(dim=8, embedding_height=2, channels=3, kernel_size=3)


def conve_params(model):
    """The module's weights and (eval-mode) batch-norm statistics as float64 arrays."""

    def bn(m):
        return tuple(x.detach().double().numpy() for x in (m.running_mean, m.running_var, m.weight, m.bias)) + (m.eps,)

    return dict(conv_w=model.conv.weight.detach().double().numpy(), conv_b=model.conv.bias.detach().double().numpy(),
                fc_w=model.fc.weight.detach().double().numpy(), fc_b=model.fc.bias.detach().double().numpy(),
                bn0=bn(model.bn0), bn1=bn(model.bn1), bn2=bn(model.bn2))


def ref_conve(params):
    hgt, dim = CONVE["embedding_height"], CONVE["dim"]
    wid = dim // hgt

    def batchnorm(x, stats, axis):
        mean, var, gamma, beta, eps = stats
        shape = [1] * x.ndim
        shape[axis] = -1
        m, v, g, b = (a.reshape(shape) for a in (mean, var, gamma, beta))
        return (x - m) / np.sqrt(v + eps) * g + b

    def query(h, r):  # (N, dim + 1), (N, dim) -> (N, dim)
        n = h.shape[0]
        img = np.concatenate([h[:, :dim].reshape(n, 1, hgt, wid), r.reshape(n, 1, hgt, wid)], axis=2)
        img = batchnorm(img, params["bn0"], 1)
        w, bias = params["conv_w"], params["conv_b"]  # (channels, 1, k, k), (channels,)
        ch, _, k, _ = w.shape
        oh, ow = img.shape[2] - k + 1, img.shape[3] - k + 1
        out = np.zeros((n, ch, oh, ow))
        for i in range(oh):  # cross-correlation, as torch's conv2d
            for j in range(ow):
                patch = img[:, 0, i : i + k, j : j + k]  # (n, k, k)
                out[:, :, i, j] = np.einsum("nab,cab->nc", patch, w[:, 0]) + bias
        x = np.maximum(batchnorm(out, params["bn1"], 1), 0.0)
        x = x.reshape(n, -1) @ params["fc_w"].T + params["fc_b"]
        return np.maximum(batchnorm(x, params["bn2"], 1), 0.0)

    def f(h, r, t, p):
        shape = np.broadcast_shapes(h.shape[:-1], r.shape[:-1], t.shape[:-1])
        hq = np.broadcast_to(h, shape + h.shape[-1:]).reshape(-1, h.shape[-1])
        rq = np.broadcast_to(r, shape + r.shape[-1:]).reshape(-1, r.shape[-1])
        q = query(hq, rq).reshape(shape + (dim,))
        return (q * t[..., :dim]).sum(-1) + t[..., dim]

    return f


# ----------------------------------------------------------------------------- cases
# id -> (build_model name, options, reference (h, r, t, p) -> score; ConvE's is built from the module)
CASES = {
    "transe_l1": ("transe_l1", {}, ref_transe),
    "transe_l2": ("transe_l2", {}, ref_transe),
    "transh_l1": ("transh", {}, ref_transh),
    "transh_l2": ("transh", {"p_norm": 2}, ref_transh),
    "rotate": ("rotate", {}, ref_rotate),
    "rotate_l2": ("rotate", {"p_norm": 2}, ref_rotate),
    "pairre_l1": ("pairre", {}, ref_pairre),
    "pairre_l2": ("pairre", {"p_norm": 2}, ref_pairre),
    "triplere_v1": ("triplere_v1", {}, ref_triplere(0.0)),
    "triplere_v1_l2": ("triplere", {"p_norm": 2}, ref_triplere(0.0)),
    "triplere_v2": ("triplere_v2", {}, ref_triplere(1.0)),
    "triplere_v2_u": ("triplere_v2", {"u": 0.5}, ref_triplere(0.5)),
    "distmult": ("distmult", {}, ref_distmult),
    "complex": ("complex", {}, ref_complex),
    "conve": ("conve", {k: v for k, v in CONVE.items() if k != "dim"}, None),
    "boxe_l1": ("boxe", {}, ref_boxe),
    "boxe_l2": ("boxe", {"p_norm": 2}, ref_boxe),
    "interht_l1": ("interht", {}, ref_interht),
    "interht_l2": ("interht", {"p_norm": 2}, ref_interht),
    "trans_l1": ("trans", {}, ref_trans),
    "trans_l2": ("trans", {"p_norm": 2}, ref_trans),
}


def test_every_registered_model_has_a_reference():
    covered = {build_model(n, E, R, dim=CONVE["dim"] if n == "conve" else D, **opts).name
               for n, opts, _ in CASES.values()}
    assert set(MODELS) <= covered, f"no reference formula for {sorted(set(MODELS) - covered)}"


def make(case, reciprocal):
    """The model with seeded tables (and ConvE layers), in eval mode, and its reference function."""
    name, opts, ref = CASES[case]
    dim = CONVE["dim"] if name == "conve" else D
    torch.manual_seed(0)
    m = build_model(name, E, R, dim=dim, reciprocal=reciprocal, **opts)
    rng = np.random.default_rng(sum(map(ord, case)))  # a fixed seed per case
    ent = rng.normal(size=tuple(m.entity_emb.weight.shape)).astype(np.float32)
    rel = rng.normal(size=tuple(m.relation_emb.weight.shape)).astype(np.float32)
    if name == "rotate":  # relations are phases
        rel = rng.uniform(-np.pi, np.pi, size=rel.shape).astype(np.float32)
    if name == "boxe":  # keep box widths away from 0 (the log of the geometric mean)
        rel[:, 2 * D : 4 * D] = np.where(rel[:, 2 * D : 4 * D] < 0, -1, 1) * (0.2 + np.abs(rel[:, 2 * D : 4 * D]))
    with torch.no_grad():
        m.entity_emb.weight.copy_(torch.from_numpy(ent))
        m.relation_emb.weight.copy_(torch.from_numpy(rel))
        if name == "conve":  # non-trivial running statistics and affine parameters in every batch norm
            for bn in (m.bn0, m.bn1, m.bn2):
                n = bn.num_features
                bn.running_mean.copy_(torch.from_numpy(rng.normal(size=n).astype(np.float32)))
                bn.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, size=n).astype(np.float32)))
                bn.weight.copy_(torch.from_numpy(rng.normal(1.0, 0.3, size=n).astype(np.float32)))
                bn.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.3, size=n).astype(np.float32)))
            m.conv.bias.copy_(torch.from_numpy(rng.normal(size=m.conv.bias.shape).astype(np.float32)))
            m.fc.bias.copy_(torch.from_numpy(rng.normal(size=m.fc.bias.shape).astype(np.float32)))
    m.eval()
    if name == "conve":
        ref = ref_conve(conve_params(m))
    p = 2 if case.endswith("_l2") else 1  # from the case, not from the model under test
    assert m.p_norm == p, (case, m.p_norm)

    def score(h, r, t):
        return ref(h, r, t, p)

    return m, ent.astype(np.float64), rel.astype(np.float64), score


def ids(seed):
    rng = np.random.default_rng(seed)
    h, t = rng.integers(0, E, B), rng.integers(0, E, B)
    r = rng.integers(0, R, B)
    shared = rng.permutation(E)[: E - 1]  # distinct candidates, not all entities
    shared = np.concatenate([shared, shared[:2]])  # and a repeated one
    per_query = rng.integers(0, E, (B, C))
    return h, r, t, shared, per_query


def expected(ent, rel, score, anchor, r, cand, tails, reciprocal):
    """(B, C) reference scores of (anchor, r, ?) (tails) or (?, r, anchor) queries."""
    a, rr = ent[anchor][:, None, :], rel[r][:, None, :]
    c = ent[cand] if cand.ndim == 2 else ent[cand][None]
    if tails:
        return score(a, rr, c)
    if reciprocal:  # (?, r, t) answered as (t, r + R, ?)
        return score(a, rel[r + R][:, None, :], c)
    return score(c, rr, a)


def t_(x):
    return torch.as_tensor(x, dtype=torch.long)


def close(actual, want):
    np.testing.assert_allclose(actual.detach().double().numpy(), want, **TOL)


@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_match_reference_formula(case, reciprocal):
    m, ent, rel, score = make(case, reciprocal)
    recip = m.reciprocal  # ConvE always answers head queries with inverse relations
    assert rel.shape[0] == (2 * R if recip else R)
    h, r, t, shared, per_query = ids(1)
    every = np.arange(E)
    with torch.no_grad():
        close(m.score_triples(t_(np.stack([h, r, t], 1))), score(ent[h], rel[r], ent[t]))
        if recip:  # the inverse rows are used for triples of the inverse relation
            close(m.score_triples(t_(np.stack([t, r + R, h], 1))), score(ent[t], rel[r + R], ent[h]))
        for cand, arg in ((every, None), (shared, t_(shared)), (per_query, t_(per_query))):
            close(m.score_tails(t_(h), t_(r), arg), expected(ent, rel, score, h, r, cand, True, recip))
            close(m.score_heads(t_(r), t_(t), arg), expected(ent, rel, score, t, r, cand, False, recip))
            close(m.score_queries(t_(t), t_(r), arg, head=True), expected(ent, rel, score, t, r, cand, False, recip))


@pytest.mark.parametrize("case, tails", [(c, tails) for c in sorted(CASES) for tails in (True, False)
                                          if tails or CASES[c][0] != "conve"])  # ConvE: heads via inverse relations
def test_grouped_candidate_scoring_matches_reference(case, tails):
    """``score_candidates`` from embeddings in all three shapes (BESS scores each shard's candidates
    as one group): shared ``(C, We)``, per query ``(B, C, We)`` and groups ``(G, B, .)`` vs ``(G, C, We)``."""
    m, ent, rel, score = make(case, False)
    rng = np.random.default_rng(7)
    G, Bg, Cg = 3, 4, 5
    a_ids, r_ids, c_ids = rng.integers(0, E, (G, Bg)), rng.integers(0, R, (G, Bg)), rng.integers(0, E, (G, Cg))
    f = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    want = np.stack([
        score(ent[a_ids[g]][:, None], rel[r_ids[g]][:, None], ent[c_ids[g]][None]) if tails
        else score(ent[c_ids[g]][None], rel[r_ids[g]][:, None], ent[a_ids[g]][:, None])
        for g in range(G)])  # (G, B, C)
    with torch.no_grad():
        close(m.score_candidates(f(ent[a_ids]), f(rel[r_ids]), f(ent[c_ids]), tails), want)
        close(m.score_candidates(f(ent[a_ids[:1]]), f(rel[r_ids[:1]]), f(ent[c_ids[:1]]), tails), want[:1])
        close(m.score_candidates(f(ent[a_ids[0]]), f(rel[r_ids[0]]), f(ent[c_ids[0]]), tails), want[0])
        per_query = np.broadcast_to(c_ids[0], (Bg, Cg))
        close(m.score_candidates(f(ent[a_ids[0]]), f(rel[r_ids[0]]), f(ent[per_query]), tails), want[0])


def test_boxe_reference_exercises_both_distance_branches():
    """The fixed BoxE tables put some points inside their box and some outside (both formulas tested)."""
    _, ent, rel, _ = make("boxe_l1", False)
    h, r, t, _, _ = ids(1)
    pts = np.tanh(np.concatenate([ent[h, :D] + ent[t, D:], ent[t, :D] + ent[h, D:]]))
    delta = np.abs(np.concatenate([rel[r, 2 * D : 3 * D], rel[r, 3 * D : 4 * D]]))
    size = np.concatenate([rel[r, 4 * D : 4 * D + 1], rel[r, 4 * D + 1 :]])
    centre = np.concatenate([rel[r, :D], rel[r, D : 2 * D]])
    width = delta / np.exp(np.log(delta).mean(-1, keepdims=True)) * (1 + np.where(size > 0, size, np.expm1(size)))
    inside = (np.tanh(centre - width / 2) <= pts) & (pts <= np.tanh(centre + width / 2))
    assert inside.any() and not inside.all()


@pytest.mark.parametrize("case", sorted(CASES))
def test_regularizers_match_reference(case):
    m, ent, rel, _ = make(case, False)
    h, r, t, _, _ = ids(2)
    name = m.name
    he, re_, te = ent[h], rel[r], ent[t]

    def modulus(x, layout):
        if layout == "halves":  # [re | im]
            half = x.shape[-1] // 2
            return np.abs(x[..., :half] + 1j * x[..., half:])
        if layout == "interleaved":  # [re0, im0, re1, im1, ...]
            return np.abs(x[..., 0::2] + 1j * x[..., 1::2])
        return np.abs(x)

    ent_layout = {"complex": "halves", "rotate": "interleaved"}.get(name)
    rel_layout = "halves" if name == "complex" else None  # RotatE relations are real phases
    l2 = ((he ** 2).sum() + (re_ ** 2).sum() + (te ** 2).sum()) / B
    n3 = ((modulus(he, ent_layout) ** 3).sum() + (modulus(re_, rel_layout) ** 3).sum()
          + (modulus(te, ent_layout) ** 3).sum()) / B
    triples = t_(np.stack([h, r, t], 1))
    with torch.no_grad():
        np.testing.assert_allclose(m.regularizer(triples, "l2").item(), l2, **TOL)
        np.testing.assert_allclose(m.regularizer(triples, "n3").item(), n3, **TOL)


@pytest.mark.parametrize("head", [False, True])
@pytest.mark.parametrize("reciprocal", [False, True])
def test_transe_l2_ranking_scores(reciprocal, head):
    """ranking_scores = ||q||^2 - ||q - c||^2 with q = h + r (tails), t - r (heads) or t + r_inv
    (reciprocal heads): a per-query increasing transform of -||q - c||, so the ranks are the scores'."""
    m, ent, rel, score = make("transe_l2", reciprocal)
    _, r, anchor, shared, per_query = ids(3)
    shared = shared[: E - 1]  # distinct candidates: no ties
    a = ent[anchor]
    if not head:
        q = a + rel[r]
    elif reciprocal:
        q = a + rel[r + R]
    else:
        q = a - rel[r]
    c = ent[shared]
    want = (q ** 2).sum(-1, keepdims=True) - ((q[:, None, :] - c[None]) ** 2).sum(-1)
    with torch.no_grad():
        got = m.ranking_scores(t_(anchor), t_(r), t_(shared), head=head)
        np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-4)
        ref_scores = expected(ent, rel, score, anchor, r, shared, not head, reciprocal)
        np.testing.assert_allclose(-np.sqrt(np.maximum(0, (q ** 2).sum(-1, keepdims=True) - want)), ref_scores,
                                   rtol=1e-4, atol=1e-4)

        def order(x):
            return np.argsort(np.argsort(-np.asarray(x), axis=1, kind="stable"), axis=1, kind="stable")

        np.testing.assert_array_equal(order(got.numpy()), order(ref_scores))
        np.testing.assert_array_equal(order(got.numpy()), order(m.score_queries(t_(anchor), t_(r), t_(shared),
                                                                              head=head).numpy()))
        # per-query candidates: ranking_scores are the scores themselves
        close(m.ranking_scores(t_(anchor), t_(r), t_(per_query), head=head),
              expected(ent, rel, score, anchor, r, per_query, not head, reciprocal))


@pytest.mark.parametrize("case", sorted(set(CASES) - {"conve"}))  # ConvE: below
def test_reciprocal_scoring_adds_the_other_reading_of_each_triple(case):
    """``reciprocal_scoring = w``: a tail query (h, r, ?) ranks c by s(h, r, c) + w s(c, r + R, h), a
    head query (?, r, t) by s(t, r + R, c) + w s(c, r, t), in score_queries and - as a per-query
    increasing transform, here the same scores - in ranking_scores; training's score_tails does not add it."""
    m, ent, rel, score = make(case, True)
    m.reciprocal_scoring = 0.25
    h, r, t, shared, per_query = ids(2)
    every = np.arange(E)
    with torch.no_grad():
        for cand, arg in ((every, None), (shared, t_(shared)), (per_query, t_(per_query))):
            c = ent[cand] if cand.ndim == 2 else ent[cand][None]
            a_t, a_h = ent[h][:, None, :], ent[t][:, None, :]
            tails = score(a_t, rel[r][:, None, :], c) + 0.25 * score(c, rel[r + R][:, None, :], a_t)
            heads = score(a_h, rel[r + R][:, None, :], c) + 0.25 * score(c, rel[r][:, None, :], a_h)
            close(m.score_queries(t_(h), t_(r), arg), tails)
            close(m.score_queries(t_(t), t_(r), arg, head=True), heads)
            close(m.score_tails(t_(h), t_(r), arg), score(a_t, rel[r][:, None, :], c))
        close(m.ranking_scores(t_(h), t_(r), t_(shared)), score(ent[h][:, None, :], rel[r][:, None, :], ent[shared][None])
              + 0.25 * score(ent[shared][None], rel[r + R][:, None, :], ent[h][:, None, :]))
        m.reciprocal = False  # without inverse relations there is no other reading: the weight is unused
        close(m.score_queries(t_(h), t_(r), t_(shared)), score(ent[h][:, None, :], rel[r][:, None, :], ent[shared][None]))


def test_reciprocal_scoring_is_refused_where_a_model_cannot_read_a_triple_both_ways():
    """ConvE scores candidates only as tails (its reciprocal relations answer head queries); a model
    without reciprocal relations has no inverse relation to read with."""
    from kgcomplete.config import build_config
    from kgcomplete.models import from_config

    for name, overrides in (("conve", {}), ("complex", {"model.reciprocal": False})):
        cfg = build_config(name, None, {"model.reciprocal_scoring": 0.25, **overrides})
        with pytest.raises(ValueError, match="model.reciprocal_scoring=0.25 needs"):
            from_config(cfg, E, R)
        cfg.model.reciprocal_scoring = "auto"  # auto: nothing to choose, ranks as before
        assert from_config(cfg, E, R).reciprocal_scoring == 0.0
