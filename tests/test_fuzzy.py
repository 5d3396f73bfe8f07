"""The close-match index against brute force: prefix hits and trigram (Dice) ranking."""

from __future__ import annotations

import numpy as np

from kgcomplete.data.fuzzy import FuzzyIndex, NameIndex


def trigrams(text: str) -> set[str]:
    t = f" {text.lower()} "
    return {t[i:i + 3] for i in range(len(t) - 2)}


def dice(a: str, b: str) -> float:
    x, y = trigrams(a), trigrams(b)
    return 2 * len(x & y) / (len(x) + len(y))


def labels(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("abcdeéfghij_ "))
    return np.array(["".join(rng.choice(alphabet, rng.integers(2, 12))) + str(i % 7) for i in range(n)], dtype=object)


def test_similar_ranks_by_dice_like_brute_force():
    labs = np.unique(labels())
    idx = FuzzyIndex(labs, budget=10**9)  # every posting: the exact ranking
    rng = np.random.default_rng(1)
    for q in rng.choice(labs, 30):
        q = q[:-1] + "x" if len(q) > 3 else q + "zz"
        scores = np.array([dice(q, lab) for lab in labs])
        got = idx.similar(q, 5)
        want = scores.max()
        assert np.isclose(scores[got[0]], want), (q, labs[got[0]], scores[got[0]], want)
        assert np.all(np.diff(scores[got]) <= 1e-12)  # best first


def test_prefix_and_close_matches():
    labs = np.array(["Protein_kinase", "protein_binding", "receptor", "Proteome", "acid"], dtype=object)
    idx = FuzzyIndex(labs)
    assert sorted(labs[idx.prefix("prot", 5)]) == ["Protein_kinase", "Proteome", "protein_binding"]
    assert idx.close_matches("recepter", 1) == ["receptor"]
    assert idx.close_matches("x" * 100_000, 5) == []  # no label shares a trigram with it (and it is cut, not scanned)
    assert FuzzyIndex(np.array([], dtype=object)).close_matches("a") == []


def test_name_index_finds_repeated_names():
    ni = NameIndex(np.array(["b", "a", "b", "c"], dtype=object))
    assert ni.ids("b").tolist() == [0, 2] and ni.ids("a").tolist() == [1] and ni.ids("z").tolist() == []
    assert ni.close_matches("bb", 1) == ["b"]
