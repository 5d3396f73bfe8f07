"""String <-> contiguous integer id mapping for entities, relations and types."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd


class Vocabulary:
    """An ordered set of labels; label ``i`` has id ``i``.

    Lookups are vectorised through a :class:`pandas.Index`, so encoding millions of
    labels costs one hash-table pass in C, not a Python loop.
    """

    def __init__(self, labels: Iterable[str]):
        self._index = pd.Index(np.asarray(list(labels) if not isinstance(labels, (np.ndarray, pd.Index)) else labels, dtype=object))
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][:5].tolist()
            raise ValueError(f"vocabulary labels must be unique; duplicated: {dup}")
        self._fuzzy = None  # close-match index, built on first use

    @classmethod
    def from_values(cls, *arrays: np.ndarray) -> "Vocabulary":
        """Vocabulary of the distinct values of ``arrays``, sorted (deterministic ids)."""
        values = np.concatenate([np.asarray(a, dtype=object).ravel() for a in arrays]) if arrays else np.array([], dtype=object)
        return cls(np.sort(pd.unique(values)).astype(object))

    @property
    def labels(self) -> np.ndarray:
        """(n,) object array of labels in id order."""
        return self._index.to_numpy()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, label: str) -> bool:
        return label in self._index

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} labels)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._index.equals(other._index)

    def encode(self, labels: Sequence[str] | np.ndarray) -> np.ndarray:
        """Labels -> ids, shape preserved; unknown labels give -1."""
        arr = np.asarray(labels, dtype=object)
        ids = self._index.get_indexer(arr.ravel())
        return ids.reshape(arr.shape).astype(np.int64)

    def id(self, label: str) -> int:
        """Id of one label; KeyError naming close matches if unknown."""
        i = self._index.get_indexer([label])[0]
        if i < 0:
            raise KeyError(f"unknown label {label!r}; close matches: {self.close_matches(label)}")
        return int(i)

    def decode(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Ids -> labels (object array), shape preserved."""
        return self.labels[np.asarray(ids, dtype=np.int64)]

    def close_matches(self, label: str, n: int = 5) -> list[str]:
        """Labels that start with or look like ``label`` (for error messages), from an index built
        on first use (:class:`~kgcomplete.data.fuzzy.FuzzyIndex`: milliseconds at a million labels)."""
        return self.fuzzy_index().close_matches(str(label), n)

    def fuzzy_index(self):
        """The close-match index of the labels (:class:`~kgcomplete.data.fuzzy.FuzzyIndex`, built once)."""
        if self._fuzzy is None:
            from .fuzzy import FuzzyIndex

            self._fuzzy = FuzzyIndex(self.labels)
        return self._fuzzy

    def save(self, path: str | Path) -> None:
        """Write ``id<TAB>label`` lines."""
        pd.DataFrame({"id": np.arange(len(self)), "label": self.labels}).to_csv(
            path, sep="\t", header=False, index=False
        )

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        df = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, na_filter=False, quoting=3)
        ids = df[0].astype(np.int64).to_numpy()
        if not np.array_equal(ids, np.arange(len(ids))):
            raise ValueError(f"{path}: ids must be 0..n-1 in order")
        return cls(df[1].to_numpy(dtype=object))


def align(series: pd.Series, vocab: "Vocabulary", fill_with_label: bool) -> np.ndarray:
    """Values keyed by label -> (len(vocab),) writable object array in id order; missing entries
    become the label itself (``fill_with_label``) or ""."""
    vals = np.array(series.reindex(vocab.labels).to_numpy(dtype=object), dtype=object, copy=True)
    missing = pd.isna(vals)
    if missing.any():
        vals[missing] = vocab.labels[missing] if fill_with_label else ""
    return vals

