"""Row gradients without sparse tensors: the fast path of shared-negative training.

A batch touches a few thousand rows of an entity table that may hold millions. Instead of a
sparse ``.grad`` (duplicated rows, then a sort to coalesce them), :class:`RowLeaves` copies the
*distinct* rows the batch needs into a small float32 leaf tensor, the loss is computed from views
of it, and ``torch.autograd.grad`` returns the ``(U, W)`` gradient of exactly those rows, which
:meth:`~kgcomplete.training.optimizers.RowAdagrad.update_rows` applies in place (through
:meth:`~kgcomplete.training.optimizers.CombinedOptimizer.update_rows`). The loss is the shared
negatives objective (training/objective.py), in the single-process trainer and the BESS step alike.

Nothing here writes to ``.grad`` of a shared parameter, so several threads can train different
batches against the same tables at once (Hogwild, ``training.hogwild``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.base import KGEModel


class RowLeaves:
    """Distinct rows of ``table (V, W)`` (any float dtype) as a float32 autograd leaf.

    Call it with ids of any shape to get their rows ``(*ids.shape, W)``; afterwards ``rows (U,)``
    and ``leaf (U, W)`` hold what was looked up (one call per step).
    """

    def __init__(self, table: Tensor):
        self.table = table
        self.rows: Tensor | None = None
        self.leaf: Tensor | None = None

    def __call__(self, ids: Tensor) -> Tensor:
        if self.rows is not None:
            raise RuntimeError("RowLeaves is looked up once per step")
        rows, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        self.rows = rows
        self.leaf = self.table.detach().index_select(0, rows).float().requires_grad_()
        return self.leaf.index_select(0, inverse).view(*ids.shape, -1)


def supports_row_updates(model: KGEModel, optimizer_name: str, mode: str) -> bool:
    """True when a step can run on :class:`RowLeaves`: shared negatives, row-wise Adagrad, a model
    whose only parameters are its two tables and that scores candidates through the generic paths
    (it does not declare ``custom_candidate_scoring``)."""
    tables = {id(model.entity_emb.weight), id(model.relation_emb.weight)}
    return (
        mode == "negatives"
        and optimizer_name.lower() == "rowadagrad"
        and all(id(p) in tables for p in model.parameters() if p.requires_grad)
        and not model.custom_candidate_scoring
    )
