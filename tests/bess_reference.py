"""Test oracle of the BESS step (tests/test_distributed_*.py): what the workers compute, done in one
process with the whole entity table, through the core model's ``score_tails``/``score_heads`` and
``score_triples`` (no exchange, no sharded lookups)."""

from __future__ import annotations

import numpy as np
import torch

from kgcomplete.distributed.exchange import MASKED_SCORE
from kgcomplete.distributed.negative_sampler import ShardedNegativeSampler
from kgcomplete.distributed.sharding import Sharding
from kgcomplete.distributed.step import StepPlan
from kgcomplete.models.base import KGEModel
from kgcomplete.training.loss import negative_sampling_loss


def reference_step(model: KGEModel, plan: StepPlan, sharding: Sharding, sampler: ShardedNegativeSampler, tcfg) -> dict:
    """What the workers compute, done in one process with the whole table and core scoring.

    Returns ``{"pos": [n x [per side (B,)]], "neg": [n x [per side (B, C)]], "loss": scalar}``; the loss is
    the mean of the workers' losses (= the loss of the whole step, blocks being equal-sized).
    """
    n = sharding.n_shard
    draw = plan.neg
    out = {"pos": [], "neg": [], "loss": 0.0}
    for i in range(n):
        tr = torch.as_tensor(plan.triples[i].reshape(-1, 3))
        h, r, t = tr[:, 0], tr[:, 1], tr[:, 2]
        pos, negs = [], []
        for si, side in enumerate(plan.sides):
            if side == "head" and model.reciprocal:  # (t, r^-1, h), as the head negatives
                pos.append(model.score_tails(t, model.inverse(r), h.unsqueeze(1))[:, 0])
            else:
                pos.append(model.score_triples(tr))
            # (T, n_src * k) global ids: k from every source shard, in source order
            loc = draw.local[:, i, si]  # (n_src, T, k)
            cand = sharding.shard_and_idx_to_entity[np.arange(n)[:, None, None], loc]
            cand = torch.as_tensor(cand.transpose(1, 0, 2).reshape(loc.shape[1], -1))
            if draw.types is None:
                c = cand[0]
            else:
                rt = torch.as_tensor(sampler.row_types(draw, (h if side == "head" else t).numpy()))
                c = cand[rt]  # (B, C)
            s = model.score_tails(h, r, c) if side == "tail" else model.score_heads(r, t, c)
            if draw.mask is not None:
                m = torch.as_tensor(np.repeat(draw.mask.T[:, :, None], loc.shape[-1], axis=2).reshape(loc.shape[1], -1))
                s = torch.where(m[rt], s, torch.full_like(s, MASKED_SCORE))
            negs.append(s)
        reg = model.regularizer(tr, tcfg.regularizer) if tcfg.regularizer != "none" and tcfg.reg_weight > 0 else None
        out["loss"] = out["loss"] + reference_loss(pos, negs, tcfg, reg) / n
        out["pos"].append(pos)
        out["neg"].append(negs)
    return out


def reference_loss(pos: list, negs: list, tcfg, reg=None):
    """The negatives objective written out from the training config (not through
    ``training.objective``): the mean over corrupted sides of the per-side loss (itself checked
    against NumPy in tests/test_reference_training.py), plus ``reg_weight * reg``."""
    kind = "softmax" if tcfg.loss == "ce" else tcfg.loss
    per_side = [negative_sampling_loss(p, s, kind=kind, margin=tcfg.margin,
                                       adversarial_temperature=tcfg.adversarial_temperature,
                                       label_smoothing=tcfg.label_smoothing) for p, s in zip(pos, negs)]
    loss = sum(per_side) / len(per_side)
    return loss if reg is None else loss + tcfg.reg_weight * reg
