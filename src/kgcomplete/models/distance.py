"""Distance-based (translational) models: score = -||f(h, r, t)||_p.

Shapes: ``We`` / ``Wr`` are entity / relation widths; every ``score_emb`` broadcasts its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import KGEModel


def _norm(x: Tensor, p: int) -> Tensor:
    return torch.linalg.vector_norm(x, ord=p, dim=-1)


class TransE(KGEModel):
    """TransE (Bordes et al. 2013): ``-||h + r - t||_p`` (``p_norm`` 1 or 2). We = Wr = dim."""

    name = "transe"
    init = "uniform"

    @property
    def similarity(self):  # query h + r (or t - r) compared with candidates by Lp distance
        return "l1" if self.p_norm == 1 else "l2"

    def score_emb(self, h, r, t):
        return -_norm(h + r - t, self.p_norm)

    def tail_query(self, h, r):
        return h + r

    def head_query(self, r, t):
        return t - r


class TransH(KGEModel):
    """TransH (Wang et al. 2014): project on the relation hyperplane ``w_r`` then translate by ``d_r``.

    ``-||h_perp + d_r - t_perp||_p`` with ``x_perp = x - (w.x) w``, ``w`` unit. Wr = 2*dim (w | d).
    """

    name = "transh"
    init = "uniform"

    def relation_width(self):
        return 2 * self.dim

    def score_emb(self, h, r, t):
        w, d = r.chunk(2, dim=-1)
        w = F.normalize(w, dim=-1)
        h_p = h - (h * w).sum(-1, keepdim=True) * w
        t_p = t - (t * w).sum(-1, keepdim=True) * w
        return -_norm(h_p + d - t_p, self.p_norm)


class RotatE(KGEModel):
    """RotatE (Sun et al. 2019): ``-sum_k |h_k e^{i theta_k} - t_k|``.

    Entity rows hold ``dim`` complex numbers interleaved (``[re_0, im_0, re_1, im_1, ...]``,
    We = 2*dim) so they view as ``torch.complex64`` without a copy; relations hold ``dim`` phases.
    """

    name = "rotate"
    complex_entities = True
    custom_candidate_scoring = True  # rotates the query once (score_candidates below)
    init = "uniform"

    def entity_width(self):
        return 2 * self.dim

    def reset_parameters(self):
        nn.init.uniform_(self.entity_emb.weight, -self.init_scale, self.init_scale)
        nn.init.uniform_(self.relation_emb.weight, -torch.pi, torch.pi)

    def complex_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[..., 0::2], x[..., 1::2]

    @staticmethod
    def _c(x: Tensor) -> Tensor:
        return torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())

    def score_emb(self, h, r, t):
        return -(self._c(h) * torch.polar(torch.ones_like(r), r) - self._c(t)).abs().sum(-1)

    def score_candidates(self, anchor, rel, cand, tails=True):
        """:meth:`KGEModel.score_candidates`: rotate the anchor once per query (the conjugate
        rotation for head queries), then take the complex L1 distance to the candidates, shared
        candidates in chunks of at most ``2**22`` complex elements (all queries of a chunk together)."""
        rot = torch.polar(torch.ones_like(rel), rel if tails else -rel)
        q = (self._c(anchor) * rot).unsqueeze(-2)  # (..., B, 1, dim)
        c = self._c(cand)
        if cand.dim() > anchor.dim():  # candidates per query (B, C, dim)
            return -(q - c).abs().sum(-1)
        c = c.unsqueeze(-3)  # (..., 1, C, dim)
        chunk = max(1, (1 << 22) // max(1, q.shape[:-2].numel() * self.dim))
        return torch.cat([-(q - c[..., s : s + chunk, :]).abs().sum(-1) for s in range(0, c.shape[-2], chunk)], dim=-1)


class PairRE(KGEModel):
    """PairRE (Chao et al. 2021): ``-||h * r_h - t * r_t||_p`` with unit-norm entities. Wr = 2*dim."""

    name = "pairre"
    init = "uniform"

    def relation_width(self):
        return 2 * self.dim

    def score_emb(self, h, r, t):
        rh, rt = r.chunk(2, dim=-1)
        return -_norm(F.normalize(h, dim=-1) * rh - F.normalize(t, dim=-1) * rt, self.p_norm)


class TripleRE(KGEModel):
    """TripleRE (Yu et al. 2022): ``-||h * (r_h + u) - t * (r_t + u) + r_m||_p``, unit-norm entities.

    v1: ``u = 0``; v2: ``u > 0`` (default 1). Wr = 3*dim (r_h | r_m | r_t).
    """

    name = "triplere"
    init = "uniform"

    def __init__(self, *args, u: float = 0.0, **kwargs):
        self.u = u
        super().__init__(*args, **kwargs)

    def relation_width(self):
        return 3 * self.dim

    def score_emb(self, h, r, t):
        rh, rm, rt = r.chunk(3, dim=-1)
        h, t = F.normalize(h, dim=-1), F.normalize(t, dim=-1)
        return -_norm(h * (rh + self.u) - t * (rt + self.u) + rm, self.p_norm)


class TripleREv2(TripleRE):
    """TripleRE v2 (Yu et al. 2022): TripleRE with the shared offset ``u = 1`` (``triplere`` has ``u = 0``)."""

    name = "triplere_v2"

    def __init__(self, *args, u: float = 1.0, **kwargs):
        super().__init__(*args, u=u, **kwargs)


class InterHT(KGEModel):
    """InterHT (Wang et al. 2022): ``-||h * (t~ + u) + r - t * (h~ + u)||_p``.

    Entities carry a main and an auxiliary part (We = 2*dim), both L2-normalised; ``u`` = offset (1).
    """

    name = "interht"
    init = "uniform"

    def __init__(self, *args, offset: float = 1.0, **kwargs):
        self.offset = offset
        super().__init__(*args, **kwargs)

    def entity_width(self):
        return 2 * self.dim

    def score_emb(self, h, r, t):
        h, ha = (F.normalize(x, dim=-1) for x in h.chunk(2, dim=-1))
        t, ta = (F.normalize(x, dim=-1) for x in t.chunk(2, dim=-1))
        return -_norm(h * (ta + self.offset) + r - t * (ha + self.offset), self.p_norm)


class TranS(KGEModel):
    """TranS (Zhang et al. 2022): ``-||h * (t~ + u + r_bar) - t * (h~ + u - r_hat) + r||_p``.

    We = 2*dim (main | tilde, both normalised), Wr = 3*dim (r | r_bar | r_hat).
    """

    name = "trans"
    init = "uniform"

    def __init__(self, *args, offset: float = 1.0, **kwargs):
        self.offset = offset
        super().__init__(*args, **kwargs)

    def entity_width(self):
        return 2 * self.dim

    def relation_width(self):
        return 3 * self.dim

    def score_emb(self, h, r, t):
        rr, rbar, rhat = r.chunk(3, dim=-1)
        h, hs = (F.normalize(x, dim=-1) for x in h.chunk(2, dim=-1))
        t, ts = (F.normalize(x, dim=-1) for x in t.chunk(2, dim=-1))
        return -_norm(h * (ts + self.offset + rbar) - t * (hs + self.offset - rhat) + rr, self.p_norm)


class BoxE(KGEModel):
    """BoxE (Abboud et al. 2020): entities are points with translational bumps, relations two boxes.

    We = 2*dim (base | bump); Wr = 4*dim + 2 (head centre | tail centre | head width | tail width |
    head size | tail size). Score = -(dist(h + bump_t, box_h) + dist(t + bump_h, box_t)), with the
    BoxE piecewise distance per dimension, tanh-bounded boxes and points.
    """

    name = "boxe"
    init = "uniform"
    eps = 1e-6

    def entity_width(self):
        return 2 * self.dim

    def relation_width(self):
        return 4 * self.dim + 2

    def _box_distance(self, point: Tensor, centre: Tensor, width: Tensor, size: Tensor) -> Tensor:
        width = width.abs()
        # normalise widths by their geometric mean, then scale by 1 + elu(size)
        width = width / torch.exp(torch.log(width.clamp_min(self.eps)).mean(-1, keepdim=True)).clamp_min(self.eps)
        width = width * (1.0 + F.elu(size))
        low = torch.tanh(centre - 0.5 * width)
        up = torch.tanh(centre + 0.5 * width)
        centre, width = 0.5 * (low + up), up - low
        dist = (torch.tanh(point) - centre).abs()
        w1 = 1.0 + width
        inside = dist <= 0.5 * width
        d = torch.where(inside, dist / w1, dist * w1 - 0.5 * width * (w1 - 1.0 / w1))
        return _norm(d, self.p_norm)

    def score_emb(self, h, r, t):
        d = self.dim
        hb, hbump = h[..., :d], h[..., d:]
        tb, tbump = t[..., :d], t[..., d:]
        ch, ct, wh, wt = r[..., :d], r[..., d : 2 * d], r[..., 2 * d : 3 * d], r[..., 3 * d : 4 * d]
        sh, st = r[..., 4 * d : 4 * d + 1], r[..., 4 * d + 1 :]
        return -(self._box_distance(hb + tbump, ch, wh, sh) + self._box_distance(tb + hbump, ct, wt, st))
