"""Candidate-scoring kernels of the distance models: a query's distance to many candidates without
an autograd graph through ``(B, C, W)`` broadcast tensors.

A *separable* model (``KGEModel.separable``) writes the vector whose norm is the distance of a
query ``(anchor, rel)`` to a candidate ``c`` as::

    f(b, c) = q_b + sum_j A_jb * X_jc        (elementwise products, J terms)

``q``/``A`` depend on the query only, ``X`` on the candidate only (PairRE's tail query:
``q = h*r_h, A = -r_t, X = t/|t|``; RotatE: ``q = h e^{i theta}``, ``A = -1`` written as None),
optionally plus a projection term ``(V_b . X_0c) V_b`` (TransH: ``f = h_perp + d - t + (w.t) w``).
Then (:func:`separable_scores`):

- p = 2, candidates shared by the queries: ``||f||^2 = ||q||^2 + sum_j 2 (q*A_j).X_j +
  sum_{j,l} (A_j*A_l).(X_j*X_l)``, one matrix product of ``(B, K)`` by ``(K, C)``
  (:func:`_l2_matmul`); no ``(B, C, W)`` tensor at all;
- otherwise (p = 1, or candidates per query): blocks of queries x candidates small enough to stay
  in the CPU cache (``BLOCK_ELEMENTS``), with a hand-written backward pass that recomputes each
  block (:class:`_BlockedNorm`); memory is one block.

BoxE's distance of the point ``tanh(u_b + v_c)`` to query ``b``'s box (:func:`box_distances`)
runs in the same blocks with its own backward pass. Any other score (a norm other than L1/L2, a
new model without these hooks) goes through :func:`recomputed_chunks`: ``score_emb`` on chunks of
candidates without a graph, each chunk recomputed under autograd in the backward pass.

Shapes: query dims ``Q`` = ``(B,)`` or ``(G, B)`` (``G`` groups, each with its own candidates);
``q (*Q, W)``; ``A (J, *Q, W)`` or None; ``X (J, *G, C, W)`` shared by the queries (of a group) or
``(J, B, C, W)`` per query; scores ``(*Q, C)``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

#: Elements of one ``(queries, candidates, W)`` block of the blocked kernels (1 MiB of float32:
#: it stays in a core's L2 cache, where the elementwise passes run at arithmetic speed).
BLOCK_ELEMENTS = 1 << 18
#: Squared distances are clamped here before the square root (no NaN gradient at 0; the clamped
#: pairs pass no gradient), as in ``base._NegL2``.
L2_EPS = 1e-12


def separable_scores(q: Tensor, A: Optional[Tensor], X: Tensor, p: int, per_query: bool, pair: int = 1,
                     V: Optional[Tensor] = None) -> Tensor:
    """``-||q_b + sum_j A_jb * X_jc [+ (V_b . X_0c) V_b]||_p`` for every query ``b`` and candidate
    ``c``: ``(*Q, C)``.

    ``A`` None means ``J = 1`` and ``A = -1`` (``f = q - X``). ``pair=2``: with ``p = 1`` the norm
    is the sum of the moduli of consecutive coordinate pairs (complex numbers stored interleaved,
    RotatE); ``p = 2`` is the same either way. ``p`` is 1 or 2. ``V (*Q, W)``: the projection term.
    """
    if p not in (1, 2):
        raise ValueError(f"separable_scores: p={p} (1 or 2)")
    S = None
    if V is not None:  # S = V_b . X_0c (*Q, C), in float32 under bf16 autocast too
        with torch.autocast(q.device.type, enabled=False):
            S = (X[0] * V.unsqueeze(-2)).sum(-1) if per_query else V @ X[0].transpose(-1, -2)
    if p == 2 and not per_query:
        return _l2_matmul(q, A, X, S, V)
    return _BlockedNorm.apply(q, A, X, p, pair, per_query, S, V)


def _l2_matmul(q: Tensor, A: Optional[Tensor], X: Tensor, S: Optional[Tensor] = None,
               V: Optional[Tensor] = None) -> Tensor:
    """p = 2 with shared candidates, through (batched) matrix products in float32 or wider
    (never under bf16 autocast: the expansion cancels). With a projection term ``S V``:
    ``||g + S V||^2 = ||g||^2 + 2 S (V . g) + S^2 ||V||^2`` and ``V . g = V.q + sum_j (A_j V) . X_j``."""
    with torch.autocast(q.device.type, enabled=False):
        d2 = _l2_squared(q, A, X)
        if S is not None:
            if A is None:
                vg = (V * q).sum(-1, keepdim=True) - S  # V.X_0 = S
            else:
                vg = (V * q).sum(-1, keepdim=True) + torch.cat([A[j] * V for j in range(A.shape[0])], -1) @ \
                    torch.cat(list(X), -1).transpose(-1, -2)
            d2 = d2 + S * (2.0 * vg + S * V.pow(2).sum(-1, keepdim=True))
        return d2.clamp_min(L2_EPS).sqrt().neg()


def _l2_squared(q: Tensor, A: Optional[Tensor], X: Tensor) -> Tensor:
    """``||q_b + sum_j A_jb * X_jc||^2`` ``(*Q, C)`` through one matrix product."""
    if A is None:
        left, right = [-2.0 * q], [X[0]]
    else:
        J = A.shape[0]
        left = [2.0 * q * A[j] for j in range(J)]
        right = [X[j] for j in range(J)]
        for j in range(J):
            for k in range(j, J):
                left.append(A[j] * A[k] * (1.0 if j == k else 2.0))
                right.append(X[j] * X[k])
    d2 = torch.cat(left, -1) @ torch.cat(right, -1).transpose(-1, -2) + q.pow(2).sum(-1, keepdim=True)
    return d2 + X[0].pow(2).sum(-1).unsqueeze(-2) if A is None else d2  # A = -1: + ||x||^2


def _block_f(q: Tensor, A: Optional[Tensor], X: Tensor, per_query: bool, S: Optional[Tensor] = None,
             V: Optional[Tensor] = None) -> Tensor:
    """``f`` of a block: q ``(*Q, W)``, A ``(J, *Q, W)``, X ``(J, *G, c, W)`` / ``(J, B, c, W)``,
    S ``(*Q, c)``, V ``(*Q, W)`` -> ``(*Q, c, W)``."""
    Xe = X if per_query else X.unsqueeze(-3)
    qe = q.unsqueeze(-2)
    if A is None:
        f = qe - Xe[0]
    else:
        f = torch.addcmul(qe, A[0].unsqueeze(-2), Xe[0])
        for j in range(1, A.shape[0]):
            f.addcmul_(A[j].unsqueeze(-2), Xe[j])
    if S is not None:
        f.addcmul_(S.unsqueeze(-1), V.unsqueeze(-2))
    return f


def _block_norm(f: Tensor, p: int) -> Tensor:
    """``||f||_p`` over the last dim (complex ``f``, p = 1: the sum of the moduli)."""
    return torch.linalg.vector_norm(f, dim=-1) if p == 2 else f.abs().sum(-1)


def _block_norm_grad_(f: Tensor, p: int) -> Tensor:
    """``d norm / d f`` (in place where it can): sign(f), z / |z| for complex f (p = 1), f / ||f||
    (p = 2); 0 where the norm is 0, as autograd's abs/norm backward."""
    if p == 2:
        return f.div_(torch.linalg.vector_norm(f, dim=-1, keepdim=True).clamp_min_(torch.finfo(f.dtype).tiny))
    return torch.sgn(f) if f.is_complex() else f.sign_()


def _complex(x: Tensor) -> Tensor:
    """Interleaved ``[re_0, im_0, ...]`` rows ``(..., 2 W)`` as complex ``(..., W)``."""
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous())


def _real(z: Tensor) -> Tensor:
    return torch.view_as_real(z).flatten(-2)


class _BlockedNorm(torch.autograd.Function):
    """:func:`separable_scores` over blocks of queries x candidates; the backward pass recomputes
    ``f`` of each block and applies ``d score / d f = -g * d norm / d f`` to ``q``, ``A`` and ``X``
    (sums over the candidates for ``q``/``A``, over the queries for shared ``X``). Moduli of
    coordinate pairs (``pair=2``, ``A`` None) are computed on complex views."""

    @staticmethod
    def forward(ctx, q, A, X, p, pair, per_query, S=None, V=None):
        ctx.save_for_backward(q, A, X, S, V)
        ctx.p, ctx.pair, ctx.per_query = p, pair, per_query
        out = q.new_empty(*q.shape[:-1], X.shape[-2])
        if pair == 2 and p == 1:
            if A is not None or S is not None:
                raise ValueError("separable_scores: moduli of pairs need A = None and no projection")
            q, X = _complex(q), _complex(X)
        for qs, cs in _block_slices(q, X):
            f = _block_f(q[..., qs, :], _rows(A, qs), _cands(X, qs, cs, per_query), per_query,
                         None if S is None else S[..., qs, cs], _rows(V, qs))
            out[..., qs, cs] = _block_norm(f, p).neg_()
        return out

    @staticmethod
    def backward(ctx, grad):
        q, A, X, S, V = ctx.saved_tensors
        p, per_query = ctx.p, ctx.per_query
        moduli = ctx.pair == 2 and p == 1
        if moduli:
            q, X = _complex(q), _complex(X)
        need_q, need_a, need_x = ctx.needs_input_grad[:3]
        dq = torch.zeros_like(q) if need_q else None
        dA = torch.zeros_like(A) if need_a and A is not None else None
        dX = torch.zeros_like(X) if need_x else None
        dS = torch.zeros_like(S) if S is not None and ctx.needs_input_grad[6] else None
        dV = torch.zeros_like(V) if V is not None and ctx.needs_input_grad[7] else None
        for qs, cs in _block_slices(q, X):
            a, x = _rows(A, qs), _cands(X, qs, cs, per_query)
            s, v = (None, None) if S is None else (S[..., qs, cs], V[..., qs, :])
            m = _block_norm_grad_(_block_f(q[..., qs, :], a, x, per_query, s, v), p)
            m.mul_(grad[..., qs, cs].unsqueeze(-1)).neg_()  # d score / d f  (*Q, c, W)
            if dS is not None:
                dS[..., qs, cs] = (m * v.unsqueeze(-2)).sum(-1)
            if dV is not None:
                dV[..., qs, :] += (m * s.unsqueeze(-1)).sum(-2)
            if dq is not None:
                dq[..., qs, :] += m.sum(-2)
            xe = x if per_query else x.unsqueeze(-3)
            if dA is not None:
                for j in range(A.shape[0]):
                    dA[j][..., qs, :] += (m * xe[j]).sum(-2)
            if dX is not None:
                for j in range(X.shape[0]):
                    part = -m if a is None else m * a[j].unsqueeze(-2)
                    if per_query:
                        dX[j][qs, cs] += part
                    else:
                        dX[j][..., cs, :] += part.sum(-3)
        if moduli:
            dq, dX = (None if d is None else _real(d) for d in (dq, dX))
        return dq, dA, dX, None, None, None, dS, dV


def _blocks(n_queries: int, n_cand: int, width: int) -> tuple[int, int]:
    """(queries, candidates) per block of about ``BLOCK_ELEMENTS`` elements (``width`` elements per
    query and candidate): as many queries as fit, then candidates."""
    rows = max(1, BLOCK_ELEMENTS // max(1, width))
    qb = min(n_queries, rows)
    return qb, max(1, min(n_cand, rows // qb))


def _block_slices(q: Tensor, X: Tensor):
    B, C = q.shape[-2], X.shape[-2]
    qb, cb = _blocks(B, C, q.shape[-1] * q.shape[:-2].numel())  # a block holds every group
    for b0 in range(0, B, qb):
        for c0 in range(0, C, cb):
            yield slice(b0, b0 + qb), slice(c0, c0 + cb)


def _rows(A: Optional[Tensor], qs: slice) -> Optional[Tensor]:
    return None if A is None else A[..., qs, :]


def _cands(X: Tensor, qs: slice, cs: slice, per_query: bool) -> Tensor:
    return X[:, qs, cs] if per_query else X[..., cs, :]


def box_distances(u: Tensor, v: Tensor, centre: Tensor, width: Tensor, p: int, per_query: bool) -> Tensor:
    """BoxE's distance ``||d||_p`` of the points ``tanh(u_b + v_c)`` to the boxes of the queries,
    ``(*Q, C)``: per dimension, with ``dist = |point - centre_b|`` and ``w1 = 1 + width_b``,
    ``d = dist / w1`` inside the box (``dist <= width_b / 2``) and
    ``dist * w1 - width_b / 2 * (w1 - 1 / w1)`` outside, i.e.
    ``d = dist / w1 + relu(dist - width_b / 2) * (w1 - 1 / w1)``.

    ``u, centre, width (*Q, W)`` (the box already mapped through tanh); ``v (*G, C, W)`` shared or
    ``(B, C, W)`` per query; ``p`` 1 or 2."""
    if p not in (1, 2):
        raise ValueError(f"box_distances: p={p} (1 or 2)")
    return _BoxDistance.apply(u, v, centre, width, p, per_query)


class _BoxDistance(torch.autograd.Function):
    """:func:`box_distances` over blocks of queries x candidates, backward recomputed per block.
    ``tanh(z) = 2 sigmoid(2 z) - 1`` (torch's sigmoid is several times faster than its tanh on CPUs;
    absolute error ~ machine epsilon), and ``tanh'(z) = 4 s (1 - s)`` with ``s = sigmoid(2 z)``."""

    @staticmethod
    def _block(u2, v2, half_c, width, per_query):
        """(s, y = point - centre, dist, excess = relu(dist - width / 2), d) of a block ``(*Q, c, W)``;
        ``u2 = 2 u``, ``v2 = 2 v``, ``half_c = (1 + centre) / 2``."""
        s = torch.sigmoid(u2.unsqueeze(-2) + (v2 if per_query else v2.unsqueeze(-3)))
        y = (s - half_c.unsqueeze(-2)).mul_(2.0)  # tanh(u + v) - centre
        dist = y.abs()
        inv = 1.0 / (1.0 + width)
        excess = (dist - 0.5 * width.unsqueeze(-2)).clamp_min_(0.0)
        d = torch.addcmul(dist * inv.unsqueeze(-2), excess, (1.0 + width - inv).unsqueeze(-2))
        return s, y, dist, excess, d

    @staticmethod
    def forward(ctx, u, v, centre, width, p, per_query):
        ctx.save_for_backward(u, v, centre, width)
        ctx.p, ctx.per_query = p, per_query
        out = u.new_empty(*u.shape[:-1], v.shape[-2])
        u2, v2, half_c = 2.0 * u, (2.0 * v).unsqueeze(0), 0.5 * (1.0 + centre)
        for qs, cs in _block_slices(u, v2):
            d = _BoxDistance._block(u2[..., qs, :], _cands(v2, qs, cs, per_query)[0], half_c[..., qs, :],
                                    width[..., qs, :], per_query)[-1]
            out[..., qs, cs] = _block_norm(d, p)
        return out

    @staticmethod
    def backward(ctx, grad):
        u, v, centre, width = ctx.saved_tensors
        p, per_query = ctx.p, ctx.per_query
        du, dv, dc, dw = (torch.zeros_like(t) for t in (u, v, centre, width))
        u2, v2, half_c = 2.0 * u, (2.0 * v).unsqueeze(0), 0.5 * (1.0 + centre)
        inv_all = 1.0 / (1.0 + width)
        kd_all = 1.0 + width - inv_all  # w1 - 1 / w1
        for qs, cs in _block_slices(u, v2):
            s, y, dist, excess, d = _BoxDistance._block(u2[..., qs, :], _cands(v2, qs, cs, per_query)[0],
                                                        half_c[..., qs, :], width[..., qs, :], per_query)
            gd = _block_norm_grad_(d, p).mul_(grad[..., qs, cs].unsqueeze(-1))  # d out / d d
            inv, kd = inv_all[..., qs, :].unsqueeze(-2), kd_all[..., qs, :].unsqueeze(-2)
            outside = torch.sign(excess)  # 1 outside the box, 0 inside (and on its border)
            # d d / d width = excess (1 + 1 / w1^2) - dist / w1^2 - kd / 2 [outside]
            dd_dw = torch.addcmul(excess.mul_(1.0 + inv * inv), dist, inv * inv, value=-1.0)
            dd_dw.addcmul_(outside, kd, value=-0.5)
            dw[..., qs, :] += dd_dw.mul_(gd).sum(-2)
            gy = gd.mul_(torch.addcmul(inv, outside, kd)).mul_(y.sign_())  # d out / d y; d d / d dist = w1 or 1 / w1
            dc[..., qs, :] -= gy.sum(-2)
            gz = gy.mul_(s.sub_(s * s).mul_(4.0))  # through tanh: 4 s (1 - s)
            du[..., qs, :] += gz.sum(-2)
            if per_query:
                dv[qs, cs] += gz
            else:
                dv[..., cs, :] += gz.sum(-3)
        return du, dv, dc, dw, None, None


def recomputed_chunks(score: Callable[[Tensor, Tensor, Tensor], Tensor], anchor: Tensor, rel: Tensor, cand: Tensor,
                      per_query: bool) -> Tensor:
    """``score(anchor, rel, cand_chunk) -> (*Q, c)`` over chunks of candidates (``cand (*G, C, W)``
    shared or ``(B, C, W)`` per query, chunked along ``C``), ``(*Q, C)``: each chunk computed
    without a graph and recomputed under autograd in the backward pass, so memory is one chunk's
    graph. ``score`` must be deterministic and depend on no parameter other than its inputs."""
    return _Recomputed.apply(score, per_query, anchor, rel, cand)


class _Recomputed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, score, per_query, anchor, rel, cand):
        ctx.score, ctx.per_query = score, per_query
        ctx.save_for_backward(anchor, rel, cand)
        return torch.cat([score(anchor, rel, cand[..., cs, :]) for cs in _chunks(anchor, cand)], dim=-1)

    @staticmethod
    def backward(ctx, grad):
        anchor, rel, cand = ctx.saved_tensors
        need = ctx.needs_input_grad[2:]
        grads = [torch.zeros_like(x) if n else None for x, n in zip((anchor, rel, cand), need)]
        for cs in _chunks(anchor, cand):
            with torch.enable_grad():
                inputs = [x.detach().requires_grad_(n) for x, n in zip((anchor, rel, cand[..., cs, :]), need)]
                out = ctx.score(*inputs)
                wanted = [x for x in inputs if x.requires_grad]
                got = iter(torch.autograd.grad(out, wanted, grad[..., cs], allow_unused=True))
            for i, x in enumerate(inputs):
                if not x.requires_grad:
                    continue
                g = next(got)
                if g is None:
                    continue
                if i == 2:
                    grads[2][..., cs, :] += g
                else:
                    grads[i] += g
        return (None, None, *grads)


def _chunks(anchor: Tensor, cand: Tensor):
    n_q, C, W = anchor.shape[:-1].numel(), cand.shape[-2], cand.shape[-1]
    step = max(1, BLOCK_ELEMENTS // max(1, n_q * W))
    return [slice(s, s + step) for s in range(0, C, step)]


__all__ = ["BLOCK_ELEMENTS", "box_distances", "recomputed_chunks", "separable_scores"]
