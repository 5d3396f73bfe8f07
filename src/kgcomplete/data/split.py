"""Split one set of triples into train/valid/test so that every valid/test triple can be ranked:
each entity and relation of valid/test also occurs in train (``kgc split``).

Vectorised: the triples are shuffled once (seeded); for every entity and every relation the first
triple in that order that holds it is kept in train (``np.unique(..., return_index=True)``). Every
other triple may leave train without taking an entity or relation with it, so valid and test are
the first of those in the shuffled order. Files keep their input order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import row_keys


def split_triples(labels: np.ndarray, valid: float = 0.05, test: float = 0.05,
                  seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """``(n, 3)`` label triples -> ``{"train", "valid", "test"}`` label arrays and an info dict
    (``duplicates``: repeated lines dropped; ``short``: per held-out split, how many fewer triples
    than asked, because the rest are needed in train)."""
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"valid={valid}, test={test}: expected fractions in [0, 1) that sum to less than 1")
    labels = np.asarray(labels, dtype=object).reshape(-1, 3)
    ent_codes, _ = pd.factorize(np.concatenate([labels[:, 0], labels[:, 2]]))
    rel_codes, _ = pd.factorize(labels[:, 1])
    n0 = len(labels)
    h, t, r = ent_codes[:n0].astype(np.int64), ent_codes[n0:].astype(np.int64), rel_codes.astype(np.int64)
    # repeated lines: keep the first
    ne, nr = max(1, int(ent_codes.max(initial=0)) + 1), max(1, int(rel_codes.max(initial=0)) + 1)
    _, first = np.unique(row_keys(np.stack([h, r, t], 1), ne, nr), return_index=True)
    first = np.sort(first)
    duplicates = n0 - len(first)
    labels, h, r, t = labels[first], h[first], r[first], t[first]
    n = len(labels)

    order = np.random.default_rng(seed).permutation(n)
    keep = np.zeros(n, bool)  # needed in train: the first triple (in shuffled order) of each entity/relation
    _, pos = np.unique(np.concatenate([h[order], t[order]]), return_index=True)
    keep[order[pos % n]] = True
    _, pos = np.unique(r[order], return_index=True)
    keep[order[pos]] = True
    free = order[~keep[order]]  # may be held out, in shuffled order
    want = {"valid": int(round(valid * n)), "test": int(round(test * n))}
    n_valid = min(want["valid"], len(free))
    n_test = min(want["test"], len(free) - n_valid)
    part = np.zeros(n, np.int8)  # 0 train, 1 valid, 2 test
    part[free[:n_valid]] = 1
    part[free[n_valid:n_valid + n_test]] = 2
    parts = {name: labels[part == i] for i, name in enumerate(("train", "valid", "test"))}
    info = {"duplicates": duplicates, "short": {"valid": want["valid"] - n_valid, "test": want["test"] - n_test}}
    return parts, info


def triples_text(labels: np.ndarray) -> str:
    """``(n, 3)`` labels -> ``head<TAB>relation<TAB>tail`` lines (vectorised string joins)."""
    labels = np.asarray(labels, dtype=object).reshape(-1, 3)
    if not len(labels):
        return ""
    s = pd.Series(labels[:, 0]).str.cat([pd.Series(labels[:, 1]), pd.Series(labels[:, 2])], sep="\t")
    return "\n".join(s.tolist()) + "\n"


__all__ = ["split_triples", "triples_text"]
