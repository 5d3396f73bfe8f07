"""Negative sampling with negatives shared across a batch.

Uniform: one set of ``N`` entity ids per batch, shared by every positive -> candidates ``(N,)``.
Type-constrained: ``N`` ids per entity type present in the batch, drawn from that type only; each
positive uses the set of its corrupted entity's type -> candidates ``(B, N)``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor


class NegativeSampler:
    """Draws shared negatives.

    Args:
        num_entities: E.
        num_negatives: N per batch (uniform) or per type (type-constrained).
        entity_types: ``(E,)`` type id per entity (-1 = untyped) for ``strategy="type"``.
        generator: torch generator (seeded runs are reproducible).
    """

    def __init__(
        self,
        num_entities: int,
        num_negatives: int,
        strategy: str = "uniform",
        entity_types: Optional[np.ndarray] = None,
        generator: Optional[torch.Generator] = None,
    ):
        if strategy not in ("uniform", "type"):
            raise ValueError(f"negative sampler {strategy!r}: expected 'uniform' or 'type'")
        if strategy == "type" and entity_types is None:
            raise ValueError("type-constrained negative sampling needs entity types (entity_types.tsv)")
        self.num_entities, self.num_negatives, self.strategy = num_entities, num_negatives, strategy
        self.generator = generator
        if strategy == "type":
            types = np.asarray(entity_types, dtype=np.int64).copy()
            types[types < 0] = types.max() + 1  # untyped entities form their own group
            order = np.argsort(types, kind="stable")
            _, starts, counts = np.unique(types[order], return_index=True, return_counts=True)
            self.types = torch.as_tensor(types)
            self.by_type = torch.as_tensor(order)  # entity ids grouped by type
            self.type_start = torch.zeros(int(types.max()) + 1, dtype=torch.long)
            self.type_count = torch.zeros(int(types.max()) + 1, dtype=torch.long)
            present = np.unique(types[order])
            self.type_start[present] = torch.as_tensor(starts)
            self.type_count[present] = torch.as_tensor(counts)

    def sample(self, corrupted: Tensor) -> Tensor:
        """Negatives for a batch whose true entities on the corrupted side are ``corrupted (B,)``.

        Returns ``(N,)`` shared ids (uniform) or ``(B, N)`` ids of the same type (type), on the CPU
        (drawn with the seeded CPU generator: the same negatives on every device).
        """
        if self.strategy == "uniform":
            return torch.randint(0, self.num_entities, (self.num_negatives,), generator=self.generator)
        t = self.types[corrupted.cpu()]  # the sampler's tables and generator live on the CPU
        uniq, inverse = torch.unique(t, return_inverse=True)
        u = torch.rand((len(uniq), self.num_negatives), generator=self.generator)
        offset = (u * self.type_count[uniq].unsqueeze(1)).long()
        per_type = self.by_type[self.type_start[uniq].unsqueeze(1) + offset]  # (T, N)
        return per_type[inverse]
