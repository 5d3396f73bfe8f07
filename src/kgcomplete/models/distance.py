"""Distance-based (translational) models: score = -||f(h, r, t)||_p.

Shapes: ``We`` / ``Wr`` are entity / relation widths; every ``score_emb`` broadcasts its inputs.
``separable`` models also write their distance vector as query terms (``distance_terms``) and
candidate terms (``candidate_terms``), which the kernels of :mod:`kgcomplete.models.kernels` score
without broadcasting (see :meth:`KGEModel.distance_terms`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import KGEModel, broadcasting
from .kernels import separable_scores


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

    separable = True

    def score_emb(self, h, r, t):
        w, d = r.chunk(2, dim=-1)
        w = F.normalize(w, dim=-1)
        h_p = h - (h * w).sum(-1, keepdim=True) * w
        t_p = t - (t * w).sum(-1, keepdim=True) * w
        return -_norm(h_p + d - t_p, self.p_norm)

    def distance_terms(self, anchor, rel, tails):
        w, d = rel.chunk(2, dim=-1)
        w = F.normalize(w, dim=-1)
        a_p = anchor - (anchor * w).sum(-1, keepdim=True) * w
        # t_perp = t - (w.t) w: f = (h_perp + d) - t + (w.t) w; candidate h: -f = (t_perp - d) - h + (w.h) w
        return (a_p + d if tails else a_p - d), None, w

    def candidate_terms(self, e):
        return e.unsqueeze(0)


class RotatE(KGEModel):
    """RotatE (Sun et al. 2019): ``-sum_k |h_k e^{i theta_k} - t_k|`` (``p_norm`` 1, the paper's);
    ``p_norm`` 2: ``-sqrt(sum_k |h_k e^{i theta_k} - t_k|^2)``.

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
        x = x if x.dtype == torch.float64 else x.float()
        return torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())

    def score_emb(self, h, r, t):
        diff = self._c(h) * torch.polar(torch.ones_like(r), r) - self._c(t)
        return -torch.linalg.vector_norm(diff, ord=self.p_norm, dim=-1)  # ord 1: sum of moduli

    def score_candidates(self, anchor, rel, cand, tails=True):
        """:meth:`KGEModel.score_candidates`: rotate the anchor once per query (the conjugate
        rotation for head queries: ``|h rot - t| = |h - t conj(rot)|``), then its distance to the
        candidates, ``f = q - c`` (:func:`~kgcomplete.models.kernels.separable_scores`: the sum of
        complex moduli in cache-sized blocks, or for ``p_norm`` 2 one matrix product)."""
        if anchor.dim() == 3 and anchor.shape[0] == 1:  # one group: the shared-candidates path
            return self.score_candidates(anchor[0], rel[0], cand[0], tails).unsqueeze(0)
        if broadcasting() or self.p_norm not in (1, 2):
            return self._broadcast_chunks(anchor, rel, cand, tails)
        rot = torch.polar(torch.ones_like(rel), rel if tails else -rel)
        q = torch.view_as_real(self._c(anchor) * rot).flatten(-2)  # (*Q, 2 dim) interleaved like the rows
        return separable_scores(q, None, cand.to(q.dtype).unsqueeze(0), self.p_norm, cand.dim() > anchor.dim(), pair=2)


class PairRE(KGEModel):
    """PairRE (Chao et al. 2021): ``-||h * r_h - t * r_t||_p`` with unit-norm entities. Wr = 2*dim."""

    name = "pairre"
    init = "uniform"

    def relation_width(self):
        return 2 * self.dim

    separable = True

    def score_emb(self, h, r, t):
        rh, rt = r.chunk(2, dim=-1)
        return -_norm(F.normalize(h, dim=-1) * rh - F.normalize(t, dim=-1) * rt, self.p_norm)

    def distance_terms(self, anchor, rel, tails):
        rh, rt = rel.chunk(2, dim=-1)
        a = F.normalize(anchor, dim=-1)
        if tails:  # h r_h - t r_t
            return a * rh, -rt.unsqueeze(0)
        return -(a * rt), rh.unsqueeze(0)  # candidate h: h r_h - t r_t

    def candidate_terms(self, e):
        return F.normalize(e, dim=-1).unsqueeze(0)


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

    separable = True

    def score_emb(self, h, r, t):
        rh, rm, rt = r.chunk(3, dim=-1)
        h, t = F.normalize(h, dim=-1), F.normalize(t, dim=-1)
        return -_norm(h * (rh + self.u) - t * (rt + self.u) + rm, self.p_norm)

    def distance_terms(self, anchor, rel, tails):
        rh, rm, rt = rel.chunk(3, dim=-1)
        a = F.normalize(anchor, dim=-1)
        if tails:  # (h (r_h + u) + r_m) - (r_t + u) t
            return torch.addcmul(rm, a, rh + self.u), -(rt + self.u).unsqueeze(0)
        return rm - a * (rt + self.u), (rh + self.u).unsqueeze(0)  # candidate h

    def candidate_terms(self, e):
        return F.normalize(e, dim=-1).unsqueeze(0)


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

    separable = True

    def score_emb(self, h, r, t):
        h, ha = (F.normalize(x, dim=-1) for x in h.chunk(2, dim=-1))
        t, ta = (F.normalize(x, dim=-1) for x in t.chunk(2, dim=-1))
        return -_norm(h * (ta + self.offset) + r - t * (ha + self.offset), self.p_norm)

    def distance_terms(self, anchor, rel, tails):
        a, aa = (F.normalize(x, dim=-1) for x in anchor.chunk(2, dim=-1))
        u = self.offset
        if tails:  # (h u + r) - (h~ + u) t + h t~
            return torch.add(rel, a, alpha=u), torch.stack([-(aa + u), a])
        return torch.add(rel, a, alpha=-u), torch.stack([aa + u, -a])  # candidate h: (r - u t) + (t~ + u) h - t h~

    def candidate_terms(self, e):
        return torch.stack([F.normalize(x, dim=-1) for x in e.chunk(2, dim=-1)])


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

    separable = True

    def score_emb(self, h, r, t):
        rr, rbar, rhat = r.chunk(3, dim=-1)
        h, hs = (F.normalize(x, dim=-1) for x in h.chunk(2, dim=-1))
        t, ts = (F.normalize(x, dim=-1) for x in t.chunk(2, dim=-1))
        return -_norm(h * (ts + self.offset + rbar) - t * (hs + self.offset - rhat) + rr, self.p_norm)

    def distance_terms(self, anchor, rel, tails):
        rr, rbar, rhat = rel.chunk(3, dim=-1)
        a, aa = (F.normalize(x, dim=-1) for x in anchor.chunk(2, dim=-1))
        u = self.offset
        if tails:  # (h (u + r_bar) + r) - (h~ + u - r_hat) t + h t~
            return torch.addcmul(rr, a, rbar + u), torch.stack([-(aa + u - rhat), a])
        # candidate h: (r - t (u - r_hat)) + (t~ + u + r_bar) h - t h~
        return rr - a * (u - rhat), torch.stack([aa + u + rbar, -a])

    def candidate_terms(self, e):
        return torch.stack([F.normalize(x, dim=-1) for x in e.chunk(2, dim=-1)])


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

    boxes = True

    def _box(self, centre: Tensor, width: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
        """A relation's box ``(..., dim)`` parameters -> its centre and width after tanh."""
        width = width.abs()
        # normalise widths by their geometric mean, then scale by 1 + elu(size)
        width = width / torch.exp(torch.log(width.clamp_min(self.eps)).mean(-1, keepdim=True)).clamp_min(self.eps)
        width = width * (1.0 + F.elu(size))
        low = torch.tanh(centre - 0.5 * width)
        up = torch.tanh(centre + 0.5 * width)
        return 0.5 * (low + up), up - low

    def _box_distance(self, point: Tensor, centre: Tensor, width: Tensor, size: Tensor) -> Tensor:
        centre, width = self._box(centre, width, size)
        dist = (torch.tanh(point) - centre).abs()
        w1 = 1.0 + width
        inside = dist <= 0.5 * width
        d = torch.where(inside, dist / w1, dist * w1 - 0.5 * width * (w1 - 1.0 / w1))
        return _norm(d, self.p_norm)

    def _relation_parts(self, r: Tensor) -> list[Tensor]:
        """(head centre, tail centre, head width, tail width, head size, tail size)."""
        d = self.dim
        return [r[..., :d], r[..., d : 2 * d], r[..., 2 * d : 3 * d], r[..., 3 * d : 4 * d],
                r[..., 4 * d : 4 * d + 1], r[..., 4 * d + 1 :]]

    def box_terms(self, anchor, rel, cand, tails):
        ch, ct, wh, wt, sh, st = self._relation_parts(rel)
        head_box, tail_box = self._box(ch, wh, sh), self._box(ct, wt, st)
        d = self.dim
        a, a_bump, c, c_bump = anchor[..., :d], anchor[..., d:], cand[..., :d], cand[..., d:]
        if tails:  # head point h + bump_t, tail point t + bump_h; t the candidate
            return [(a, c_bump, *head_box), (a_bump, c, *tail_box)]
        return [(a_bump, c, *head_box), (a, c_bump, *tail_box)]  # h the candidate

    def score_emb(self, h, r, t):
        d = self.dim
        hb, hbump = h[..., :d], h[..., d:]
        tb, tbump = t[..., :d], t[..., d:]
        ch, ct, wh, wt, sh, st = self._relation_parts(r)
        return -(self._box_distance(hb + tbump, ch, wh, sh) + self._box_distance(tb + hbump, ct, wt, st))
