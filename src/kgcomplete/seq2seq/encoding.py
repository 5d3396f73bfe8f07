"""Token-id tables for entities/relations and vectorised assembly of KGT5 inputs.

Entity and relation texts are tokenised once; a query's input ids are the concatenation
``prefix + entity + "|" + relation + </s>`` assembled with array scatters (no per-query
tokenisation). With a Metaspace tokenizer (words tokenised independently) this equals
tokenising the whole input string.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .tokenizer import EOS_ID, PAD_ID, KGTokenizer
from .verbalize import ANSWER_PREFIX, HEAD_PREFIX, SEPARATOR, TAIL_PREFIX, EntityTexts


def concat_ragged(parts: Sequence[tuple[torch.Tensor, torch.Tensor]], eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-row ragged pieces.

    ``parts``: list of ``(ids (B, Li), lengths (B,))`` (ids right-padded). Returns
    ``input_ids (B, L)`` right-padded with ``PAD_ID`` (``</s>`` appended when ``eos``) and
    ``attention_mask (B, L)``.
    """
    B = parts[0][0].shape[0]
    lengths = torch.stack([ln for _, ln in parts]).sum(0) + int(eos)
    width = int(lengths.max()) if B else 1
    out = torch.full((B, max(width, 1)), PAD_ID, dtype=torch.long)
    offset = torch.zeros(B, dtype=torch.long)
    for ids, ln in parts:  # a handful of parts, each one vectorised scatter
        cols = torch.arange(ids.shape[1])
        mask = cols[None, :] < ln[:, None]
        rows = torch.arange(B)[:, None].expand_as(mask)
        out[rows[mask], (offset[:, None] + cols[None, :])[mask]] = ids[mask]
        offset = offset + ln
    if eos:
        out[torch.arange(B), offset] = EOS_ID
    mask = (torch.arange(out.shape[1])[None, :] < lengths[:, None]).long()
    return out, mask


class QueryEncoder:
    """Tokenised entity/relation texts and query assembly.

    Attributes:
        entity_ids: ``(E, Le)`` entity token ids *with* ``</s>``, right-padded (the decoder targets).
        entity_len: ``(E,)`` lengths without ``</s>``.
        relation_ids / relation_len: ``(R, Lr)`` / ``(R,)`` without ``</s>``.
    """

    def __init__(self, tokenizer: KGTokenizer, texts: EntityTexts, max_length: int = 128):
        self.tokenizer, self.texts, self.max_length = tokenizer, texts, max_length
        self.entity_ids = tokenizer.encode(texts.entity.tolist(), eos=True, max_length=max_length)
        self.entity_len = (self.entity_ids != PAD_ID).sum(1) - 1
        self.relation_ids = tokenizer.encode(texts.relation.tolist(), eos=False, max_length=max_length)
        self.relation_len = (self.relation_ids != PAD_ID).sum(1)
        pre = [TAIL_PREFIX, HEAD_PREFIX, ANSWER_PREFIX, SEPARATOR]
        self._fixed = {p: tokenizer.encode([p], eos=False)[0] for p in pre}
        self._fixed = {p: t[t != PAD_ID] for p, t in self._fixed.items()}

    def duplicate_targets(self) -> np.ndarray:
        """Entity ids whose token sequence equals another entity's (e.g. both only ``<unk>``)."""
        keys = pd.Series([bytes(r) for r in self.entity_ids.numpy().astype(np.int32)])
        return np.flatnonzero(keys.duplicated(keep=False).to_numpy())

    def _const(self, key: str, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._fixed[key]
        return t[None, :].expand(B, -1), torch.full((B,), len(t), dtype=torch.long)

    def queries(self, anchor, relation, head: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,)`` anchor/relation ids -> ``input_ids (B, L)``, ``attention_mask (B, L)``."""
        a = torch.as_tensor(anchor, dtype=torch.long).cpu()
        r = torch.as_tensor(relation, dtype=torch.long).cpu()
        B = len(a)
        parts = [
            self._const(HEAD_PREFIX if head else TAIL_PREFIX, B),
            (self.entity_ids[a], self.entity_len[a]),
            self._const(SEPARATOR, B),
            (self.relation_ids[r], self.relation_len[r]),
        ]
        return concat_ragged(parts)

    def questions(self, topic, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """QA inputs ``predict answer: <topic> | <question>``; questions tokenised here."""
        from .verbalize import sanitize

        t = torch.as_tensor(topic, dtype=torch.long).cpu()
        B = len(t)
        q = self.tokenizer.encode(sanitize(questions).tolist(), eos=False, max_length=self.max_length)
        parts = [
            self._const(ANSWER_PREFIX, B),
            (self.entity_ids[t], self.entity_len[t]),
            self._const(SEPARATOR, B),
            (q, (q != PAD_ID).sum(1)),
        ]
        return concat_ragged(parts)

    def targets(self, entities) -> torch.Tensor:
        """``(B,)`` entity ids -> ``(B, Lt)`` labels (``</s>``-terminated, pad = -100), trimmed."""
        e = torch.as_tensor(entities, dtype=torch.long).cpu()
        lab = self.entity_ids[e]
        width = int(self.entity_len[e].max()) + 1 if len(e) else 1
        lab = lab[:, :width].clone()
        lab[lab == PAD_ID] = -100
        return lab
