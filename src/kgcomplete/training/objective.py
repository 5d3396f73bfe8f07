"""The negative-sampling objective (``training.mode=negatives``), defined once for every trainer.

Each positive triple ``(h, r, t)`` competes with negatives that replace its tail, its head or both
(``training.corrupt``). The single-process :class:`~kgcomplete.training.trainer.Trainer` (sparse
autograd, the row-gradient fast path, Hogwild threads) and the BESS workers
(:mod:`kgcomplete.distributed.step`) compute it from entity and relation rows they have already
gathered, with the pieces here:

- :func:`corrupted_sides`: the sides a configuration corrupts (tail first);
- :func:`relation_rows`: the batch's relation rows and, when a reciprocal model corrupts heads,
  its inverse relations' rows, in one lookup;
- :func:`side_queries`: per corrupted side, the query whose candidates replace that side and the
  positive score it competes with. A reciprocal model answers head corruption as tail queries
  ``(t, r^-1, ?)``, so its positive is ``(t, r^-1, h)``; otherwise the positive is ``(h, r, t)``;
- :func:`sides_loss`: the mean over sides of :func:`~kgcomplete.training.loss.negative_sampling_loss`
  with the configuration's options (:func:`loss_options`), plus the weighted regulariser
  (:func:`regularization`) of the batch's ``(h, r, t)`` rows.

:func:`negatives_loss` puts them together for one process; the BESS step scores the candidates
through its exchange between the same :func:`side_queries` and :func:`sides_loss`. Candidates are
scored by :meth:`~kgcomplete.models.base.KGEModel.score_candidates` in both.

Shapes: ``B`` triples, ``N`` negatives per side, ``We``/``Wr`` entity/relation widths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..models.base import KGEModel
from .loss import negative_sampling_loss

Lookup = Callable[[Tensor], Tensor]


def corrupted_sides(corrupt: str) -> tuple[str, ...]:
    """``training.corrupt`` (``tail``, ``head`` or ``both``) -> the corrupted sides, tail first."""
    return tuple(s for s in ("tail", "head") if corrupt in (s, "both"))


def loss_options(cfg) -> dict:
    """Keyword arguments of :func:`~kgcomplete.training.loss.negative_sampling_loss` from a
    :class:`~kgcomplete.config.TrainingConfig` (``loss=ce`` is the sampled softmax)."""
    return dict(kind=cfg.loss if cfg.loss != "ce" else "softmax", margin=cfg.margin,
                adversarial_temperature=cfg.adversarial_temperature, label_smoothing=cfg.label_smoothing)


def regularization(model: KGEModel, cfg, h: Tensor, r: Tensor, t: Tensor) -> Optional[Tensor]:
    """The (unweighted) regulariser of the batch's rows ``(B, We)``, ``(B, Wr)``, ``(B, We)``;
    None when the configuration has none (``regularizer=none`` or ``reg_weight <= 0``)."""
    if cfg.regularizer == "none" or cfg.reg_weight <= 0:
        return None
    return model.regularizer_emb(h, r, t, cfg.regularizer)


def sides_loss(pos: list[Tensor], negs: list[Tensor], cfg, reg: Optional[Tensor] = None) -> Tensor:
    """The objective from scores: per side, positives ``(B,)`` and negatives ``(B, N)``; the mean
    over sides of ``negative_sampling_loss`` plus ``cfg.reg_weight * reg`` (reg from :func:`regularization`)."""
    kw = loss_options(cfg)
    loss = sum(negative_sampling_loss(p, s, **kw) for p, s in zip(pos, negs)) / len(negs)
    if reg is not None:
        loss = loss + cfg.reg_weight * reg
    return loss


def relation_rows(model: KGEModel, sides: tuple[str, ...], r: Tensor,
                  lookup: Optional[Lookup] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Relation rows ``(B, Wr)`` of ``r (B,)`` and, when the head side is corrupted by a reciprocal
    model, of the inverse relations (else None), looked up with one call of ``lookup`` (default:
    the model's)."""
    lookup = lookup or model.relations
    if "head" in sides and model.query_direction(head=True)[0]:
        return lookup(torch.cat([r, model.inverse(r)])).split([len(r), len(r)])
    return lookup(r), None


@dataclass
class SideQuery:
    """One corrupted side's query: candidates ``c`` are scored as ``(anchor, rel, c)`` (``tails``)
    or ``(c, rel, anchor)``, against the positive score ``positive (B,)``."""

    side: str  #: "tail" or "head"
    anchor: Tensor  #: (B, We)
    rel: Tensor  #: (B, Wr)
    inverse: bool  #: ``rel`` holds the inverse relations' rows
    tails: bool  #: the candidates fill the tail slot
    positive: Tensor  #: (B,)


def side_queries(model: KGEModel, sides: tuple[str, ...], h: Tensor, r: Tensor, t: Tensor,
                 r_inv: Optional[Tensor] = None) -> list[SideQuery]:
    """The queries of the corrupted ``sides`` (in that order) from the rows ``h (B, We)``,
    ``r (B, Wr)``, ``t (B, We)`` and, for a reciprocal model's head side, ``r_inv (B, Wr)``.
    The positive ``(h, r, t)`` is scored once when several sides compete with it."""
    out, forward = [], None
    for side in sides:
        inverse, tails = model.query_direction(head=side == "head")
        if inverse:  # (t, r^-1, h') competes with (t, r^-1, h)
            out.append(SideQuery(side, t, r_inv, True, True, model.score_emb(t, r_inv, h)))
            continue
        if forward is None:
            forward = model.score_emb(h, r, t)
        out.append(SideQuery(side, h if side == "tail" else t, r, False, tails, forward))
    return out


def negatives_loss(model: KGEModel, cfg, h: Tensor, r: Tensor, t: Tensor, negatives: dict[str, Tensor],
                   entity_rows: Optional[Lookup] = None, relation_lookup: Optional[Lookup] = None) -> Tensor:
    """The objective (+ regulariser) of a batch ``(B,)`` heads, relations, tails in one process.

    ``negatives``: per corrupted side (in the order the losses are taken), the ids that replace
    it, ``(N,)`` shared by the batch or ``(B, N)`` per triple. Every entity row the step needs
    (heads, tails, every side's negatives) comes from one call of ``entity_rows`` and every
    relation row from one call of ``relation_lookup`` (defaults: the model's lookups, sparse
    gradients; :class:`~kgcomplete.training.row_gradients.RowLeaves` for the row-gradient step),
    so the gradients hold each batch row once per lookup and scoring runs on the gathered rows.
    """
    entity_rows = entity_rows or model.entities
    sides = tuple(negatives)
    B = len(h)
    ids = torch.cat([h, t] + [negatives[s].reshape(-1) for s in sides])
    # split (not slicing): its backward is one concatenation, not a zero-filled buffer per slice
    h_e, t_e, *parts = entity_rows(ids).split([B, B] + [negatives[s].numel() for s in sides])
    r_e, r_inv = relation_rows(model, sides, r, relation_lookup)
    pos, negs = [], []
    for q, part in zip(side_queries(model, sides, h_e, r_e, t_e, r_inv), parts):
        pos.append(q.positive)
        negs.append(model.score_candidates(q.anchor, q.rel, part.view(*negatives[q.side].shape, -1), q.tails))
    return sides_loss(pos, negs, cfg, regularization(model, cfg, h_e, r_e, t_e))
