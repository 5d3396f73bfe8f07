"""Losses. Shapes: positive scores ``(B,)``, negative scores ``(B, N)``, full scores ``(B, E)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def at_least_float32(x: Tensor) -> Tensor:
    """Scores computed in bf16/fp16 (autocast) as float32; float32 and float64 as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def negative_sampling_loss(
    pos: Tensor,
    neg: Tensor,
    kind: str = "logsigmoid",
    margin: float = 6.0,
    adversarial_temperature: float = 0.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Mean loss over the batch.

    - ``logsigmoid``: ``-log s(margin + pos) - sum_j w_j log s(-margin - neg_j)``; ``w`` uniform, or
      ``softmax(temperature * neg)`` (detached) with self-adversarial weighting (RotatE paper).
    - ``margin``: ``mean_j relu(margin - pos + neg_j)``.
    - ``bce``: binary cross-entropy, positives 1, negatives 0 (optionally smoothed).
    - ``softmax``: sampled softmax, cross-entropy over ``[pos, neg_1..N]``.

    Scores computed in lower precision (bf16 autocast) are reduced in float32.
    """
    pos, neg = at_least_float32(pos), at_least_float32(neg)
    if kind == "logsigmoid":
        # -log s(x) = softplus(-x)
        if adversarial_temperature > 0:
            w = torch.softmax(adversarial_temperature * neg.detach(), dim=1)
            neg_term = (w * F.softplus(neg + margin)).sum(1)
        else:
            neg_term = _SoftplusRowMean.apply(neg, margin)
        return (F.softplus(-margin - pos) + neg_term).mean() / 2
    if kind == "margin":
        return F.relu(margin - pos.unsqueeze(1) + neg).mean()
    if kind == "bce":
        eps = label_smoothing
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
        target = torch.zeros_like(logits)
        target[:, 0] = 1.0
        if eps:
            target = target * (1 - eps) + eps / logits.shape[1]
        return F.binary_cross_entropy_with_logits(logits, target)
    if kind in ("softmax", "ce"):
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device),
                               label_smoothing=label_smoothing)
    raise ValueError(f"unknown loss {kind!r} for negative sampling: logsigmoid | margin | bce | softmax")


class _SoftplusRowMean(torch.autograd.Function):
    """``softplus(x + margin).mean(1)`` of ``x (B, N)`` -> ``(B,)``, with its gradient (the sigmoid)
    made in the same pass: exp, log and one division over ``(B, N)`` (and a linear correction above
    ``x + margin = 80``, where exp would overflow), where autograd would run softplus, then
    softplus_backward and the mean's expansion."""

    @staticmethod
    def forward(ctx, x: Tensor, margin: float) -> Tensor:
        z = x + margin
        u = z.clamp(max=80.0).exp_()  # exp(80) is finite in float32
        p = u + 1.0
        ctx.save_for_backward(u.div_(p))  # sigmoid(z) = dsoftplus/dz
        # log(1 + e^z) = softplus(z) (below e^-16 the tiny terms round to 0)
        out = p.log_()
        # above the clamp softplus(z) = z = log(1 + e^80) + (z - 80); on the CPU checked first (cheap),
        # on a GPU added unconditionally (adding zeros is exact; asking would sync with the host)
        if z.is_cuda or float(z.max()) > 80.0:
            out.add_(z.sub_(80.0).clamp_(min=0.0))
        ctx.n = x.shape[1]
        return out.mean(1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (sig,) = ctx.saved_tensors
        return sig * (grad / ctx.n).unsqueeze(1), None


def one_vs_all_loss(scores: Tensor, target: Tensor, kind: str = "ce", label_smoothing: float = 0.0) -> Tensor:
    """1vsAll: ``scores (B, E)``, ``target (B,)`` true entity ids. ``ce`` (full cross-entropy) or ``bce``."""
    scores = at_least_float32(scores)  # bf16 autocast scores: the loss in float32
    if kind == "ce":
        return F.cross_entropy(scores, target, label_smoothing=label_smoothing)
    if kind == "bce":
        t = torch.zeros_like(scores)
        t[torch.arange(len(target), device=scores.device), target] = 1.0
        return kvsall_loss(scores, t, "bce", label_smoothing)
    raise ValueError(f"unknown loss {kind!r} for 1vsAll: ce | bce")


def kvsall_loss(scores: Tensor, targets: Tensor, kind: str = "bce", label_smoothing: float = 0.0) -> Tensor:
    """KvsAll: ``scores (B, E)``, ``targets (B, E)`` multi-hot. ``bce`` or ``ce`` (targets normalised)."""
    scores = at_least_float32(scores)  # bf16 autocast scores: the loss in float32
    if kind == "bce":
        if label_smoothing:
            targets = (1.0 - label_smoothing) * targets + 1.0 / scores.shape[1]
        return F.binary_cross_entropy_with_logits(scores, targets)
    if kind == "ce":
        p = targets / targets.sum(1, keepdim=True).clamp_min(1)
        return -(p * F.log_softmax(scores, dim=1)).sum(1).mean()
    raise ValueError(f"unknown loss {kind!r} for KvsAll: bce | ce")
