"""Helpers shared by the format readers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..vocabulary import Vocabulary


def align(series: pd.Series, vocab: Vocabulary, fill_with_label: bool) -> np.ndarray:
    """Values keyed by label -> (len(vocab),) writable object array in id order; missing entries
    become the label itself (``fill_with_label``) or ""."""
    vals = np.array(series.reindex(vocab.labels).to_numpy(dtype=object), dtype=object, copy=True)
    missing = pd.isna(vals)
    if missing.any():
        vals[missing] = vocab.labels[missing] if fill_with_label else ""
    return vals
