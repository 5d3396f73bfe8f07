"""Close matches for a misspelt name, from an index built once: milliseconds at a million labels.

:class:`FuzzyIndex` answers "which labels look like this text?" with two lookups, never a scan of
the vocabulary per query:

* **prefix**: the case-folded labels sorted once; labels that start with the text are one
  ``np.searchsorted`` range (then labels that start with ever shorter prefixes of it);
* **trigrams**: every label's character trigrams (of `` label ``, case-folded) in one sorted
  array of ``(trigram code, label id)``; a query gathers the postings of its own trigrams,
  counts shared trigrams per label (``np.bincount``) and ranks by the Dice coefficient
  ``2 * shared / (|query trigrams| + |label trigrams|)``. The rarest of the query's trigrams are used, up to ``budget`` postings
  (frequent trigrams cost the most and tell labels apart the least).

Building is vectorised over the labels (one pass over their characters as a NumPy array).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: characters of a query that are matched (a longer text is cut: a name is never that long)
MAX_QUERY = 256
_SEP = 0  # code point between labels in the joined character array
_BITS = 21  # Unicode code points fit in 21 bits; a trigram is 63 bits


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def _trigram_codes(chars: np.ndarray) -> np.ndarray:
    return (chars[:-2] << (2 * _BITS)) | (chars[1:-1] << _BITS) | chars[2:]


class FuzzyIndex:
    """Prefix and trigram index over ``labels`` (any strings); see the module docstring."""

    def __init__(self, labels: Sequence[str] | np.ndarray, budget: int = 200_000):
        import pandas as pd

        self.labels = np.asarray(labels, dtype=object)
        self.budget = budget
        folded = pd.Series(self.labels, dtype=object).astype(str).str.lower()
        order = np.argsort(folded.to_numpy(dtype=str), kind="stable") if len(folded) else np.zeros(0, np.int64)
        self._sorted, self._order = folded.to_numpy(dtype=str)[order] if len(folded) else np.array([], str), order
        # trigrams of " label " for every label, from one array of code points (labels joined by 0)
        lengths = folded.str.len().to_numpy(np.int64) + 2
        chars = _codes("\x00".join((" " + folded + " ").tolist())) if len(folded) else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(folded), dtype=np.int64), lengths + 1)[: len(chars)]
        if len(chars) >= 3:
            ok = (chars[:-2] != _SEP) & (chars[1:-1] != _SEP) & (chars[2:] != _SEP)
            codes, ids = _trigram_codes(chars)[ok], owner[:-2][ok]
            srt = np.lexsort((ids, codes))
            codes, ids = codes[srt], ids[srt]
            first = np.ones(len(codes), bool)  # one posting per (trigram, label)
            first[1:] = (codes[1:] != codes[:-1]) | (ids[1:] != ids[:-1])
            codes, ids = codes[first], ids[first]
        else:
            codes, ids = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self._codes, self._ids = codes, ids
        self._count = np.bincount(ids, minlength=len(folded))  # distinct trigrams per label

    def __len__(self) -> int:
        return len(self.labels)

    def prefix(self, text: str, n: int = 5) -> np.ndarray:
        """Ids of labels starting with ``text`` (case-folded), in sorted order."""
        p = text.lower()
        lo = np.searchsorted(self._sorted, p, side="left")
        hi = np.searchsorted(self._sorted, p + "\U0010ffff", side="left")
        return self._order[lo:min(hi, lo + n)]

    def similar(self, text: str, n: int = 5) -> np.ndarray:
        """Ids of the ``n`` labels sharing the most trigrams with ``text`` (Dice), best first."""
        chars = _codes(f" {text[:MAX_QUERY].lower()} ")
        if len(chars) < 3 or not len(self._codes):
            return np.zeros(0, np.int64)
        query = np.unique(_trigram_codes(chars))
        lo = np.searchsorted(self._codes, query, side="left")
        hi = np.searchsorted(self._codes, query, side="right")
        sizes = hi - lo
        # the rarest trigrams first, up to ``budget`` postings (at least one trigram): frequent
        # trigrams cost the most and tell labels apart the least
        by_size = np.argsort(sizes[sizes > 0], kind="stable")
        lo, sizes = lo[sizes > 0][by_size], sizes[sizes > 0][by_size]
        if not len(sizes):
            return np.zeros(0, np.int64)
        take = max(1, int(np.searchsorted(np.cumsum(sizes), self.budget, side="right")))
        lo, sizes = lo[:take], sizes[:take]
        # gather the postings of the chosen trigrams without a Python loop over postings
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        ids = self._ids[starts + np.arange(sizes.sum())]
        counts = np.bincount(ids, minlength=len(self.labels))
        cand = np.flatnonzero(counts)
        shared = counts[cand]
        dice = 2.0 * shared / (len(query) + self._count[cand])
        top = np.lexsort((cand, -dice))[:n]
        return cand[top]

    def close_matches(self, text: str, n: int = 5) -> list[str]:
        """Labels that start with ``text``, then labels that look like it (trigrams), then labels that
        start with a shorter prefix of it; at most ``n``, no repeats."""
        text = text[:MAX_QUERY]
        out = list(self.prefix(text, n))
        if len(out) < n:
            out += [i for i in self.similar(text, n) if i not in out]
        for cut in np.unique(np.linspace(len(text) - 1, max(1, len(text) // 2), 8).astype(int))[::-1]:
            if len(out) >= n:
                break
            out += [i for i in self.prefix(text[:cut], n) if i not in out]
        return [str(self.labels[i]) for i in out[:n]]


class NameIndex:
    """Lookup of human-readable names that may repeat (``entity_names``): the ids holding an exact
    name (one ``np.searchsorted``) and close matches (a :class:`FuzzyIndex` over the distinct names)."""

    def __init__(self, names: np.ndarray):
        names = np.asarray(names, dtype=object).astype(str)
        self._order = np.argsort(names, kind="stable")
        self._sorted = names[self._order]
        self.fuzzy = FuzzyIndex(np.unique(names).astype(object))

    def ids(self, name: str) -> np.ndarray:
        lo = np.searchsorted(self._sorted, name, side="left")
        hi = np.searchsorted(self._sorted, name, side="right")
        return np.sort(self._order[lo:hi])

    def close_matches(self, text: str, n: int = 5) -> list[str]:
        return self.fuzzy.close_matches(text, n)
