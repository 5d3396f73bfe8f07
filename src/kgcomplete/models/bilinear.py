"""Dot-product models: the score is ``<query(h, r), t>`` so candidate scoring is one matrix product."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import KGEModel, complex_conj, complex_mul


class DistMult(KGEModel):
    """DistMult (Yang et al. 2015): ``<h, r, t> = sum_k h_k r_k t_k``. We = Wr = dim."""

    name = "distmult"
    similarity = "dot"

    def score_emb(self, h, r, t):
        return (h * r * t).sum(-1)

    def tail_query(self, h, r):
        return h * r

    def head_query(self, r, t):
        return r * t

    def relation_query(self, h, t):
        return h * t


class ComplEx(KGEModel):
    """ComplEx (Trouillon et al. 2016): ``Re(<h, r, conj(t)>)``; We = Wr = 2*dim ([re | im])."""

    name = "complex"
    similarity = "dot"
    complex_entities = True
    complex_relations = True

    def entity_width(self):
        return 2 * self.dim

    def relation_width(self):
        return 2 * self.dim

    def score_emb(self, h, r, t):
        # Re(h r conj(t)) = <[re(hr) | im(hr)], [re(t) | im(t)]>
        return (complex_mul(h, r) * t).sum(-1)

    def tail_query(self, h, r):
        return complex_mul(h, r)

    def head_query(self, r, t):
        # Re(h r conj(t)) = Re(conj(h) conj(r) t) = <[re h | im h], [re(conj(r) t) | im(conj(r) t)]>
        return complex_mul(complex_conj(r), t)

    def relation_query(self, h, t):
        # Re(h r conj(t)) = Re(r conj(h conj(t))) = <[re r | im r], [re(conj(h) t) | im(conj(h) t)]>
        return complex_mul(complex_conj(h), t)


class ConvE(KGEModel):
    """ConvE (Dettmers et al. 2018): ``<relu(W vec(relu(conv([h; r])))), t> + b_t``.

    Head queries use reciprocal relations (always on). Entity rows carry their bias as the last
    column (We = dim + 1); ``dim`` must factor as ``embedding_height * (dim // embedding_height)``.
    """

    name = "conve"
    similarity = "dot"
    requires_reciprocal = True

    def __init__(
        self,
        *args,
        embedding_height: int = 10,
        channels: int = 32,
        kernel_size: int = 3,
        input_dropout: float = 0.2,
        feature_dropout: float = 0.2,
        hidden_dropout: float = 0.3,
        **kwargs,
    ):
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 100)
        if dim % embedding_height:
            raise ValueError(f"ConvE: dim={dim} must be divisible by embedding_height={embedding_height}")
        self.h_, self.w_ = embedding_height, dim // embedding_height
        super().__init__(*args, **kwargs)
        out_h, out_w = 2 * self.h_ - kernel_size + 1, self.w_ - kernel_size + 1
        self.conv = nn.Conv2d(1, channels, kernel_size)
        self.bn0, self.bn1, self.bn2 = nn.BatchNorm2d(1), nn.BatchNorm2d(channels), nn.BatchNorm1d(self.dim)
        self.fc = nn.Linear(channels * out_h * out_w, self.dim)
        self.drop_in, self.drop_feat, self.drop_hidden = (
            nn.Dropout(input_dropout),
            nn.Dropout2d(feature_dropout),
            nn.Dropout(hidden_dropout),
        )

    def entity_width(self):
        return self.dim + 1

    def reset_parameters(self):
        nn.init.xavier_normal_(self.entity_emb.weight[:, :-1])
        nn.init.xavier_normal_(self.relation_emb.weight)
        with torch.no_grad():
            self.entity_emb.weight[:, -1].zero_()

    def tail_query(self, h, r):
        b = h.shape[0]
        x = torch.cat([h[..., :-1].reshape(b, 1, self.h_, self.w_), r.reshape(b, 1, self.h_, self.w_)], dim=2)
        x = self.drop_in(self.bn0(x))
        x = self.drop_feat(F.relu(self.bn1(self.conv(x))))
        x = self.fc(x.flatten(1))
        if b > 1 or not self.training:
            x = self.bn2(x)
        return F.relu(self.drop_hidden(x))

    def candidate_features(self, e):
        return e[..., :-1], e[..., -1]

    def score_emb(self, h, r, t):
        shape = torch.broadcast_shapes(h.shape[:-1], r.shape[:-1], t.shape[:-1])
        hq = h.expand(*shape, h.shape[-1]).reshape(-1, h.shape[-1])
        rq = r.expand(*shape, r.shape[-1]).reshape(-1, r.shape[-1])
        q = self.tail_query(hq, rq).reshape(*shape, self.dim)
        vec, bias = self.candidate_features(t)
        return (q * vec).sum(-1) + bias
