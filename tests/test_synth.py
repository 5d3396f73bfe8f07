"""Synthetic KG generator: layout, determinism, the relation patterns hold, power-law degrees."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kgcomplete.cli.datasets import datasets
from kgcomplete.data import Dataset
from kgcomplete.data.synth import generate


@pytest.fixture(scope="module")
def kg(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    res = generate(out, num_entities=3000, num_relations=10, num_triples=60_000, seed=3)
    ds = Dataset.from_folder(out)  # unknown="error": every valid/test entity occurs in train
    return out, res, ds


def _frame(ds: Dataset) -> pd.DataFrame:
    t = ds.all_triples()
    return pd.DataFrame({"h": t[:, 0], "r": ds.relations.decode(t[:, 1]), "t": t[:, 2]})


def test_layout_counts_and_labels(kg):
    out, res, ds = kg
    assert 0.995 * 60_000 <= sum(res.counts.values()) <= 60_000
    assert {k: len(v) for k, v in ds.splits.items()} == res.counts
    assert 400 <= res.counts["valid"] <= 800 and 400 <= res.counts["test"] <= 800
    assert ds.num_relations == 10 and ds.num_entities == res.num_entities_used >= 0.97 * 3000
    assert (out / "train.txt").read_text().split("\n", 1)[0].count("\t") == 2
    assert ds.entities.labels[0] == "e0000" and ds.relations.labels[-1] == "r9"
    info = json.loads((out / "synth.json").read_text())
    assert info["params"]["seed"] == 3 and info["counts"] == res.counts
    f = _frame(ds)
    assert not f.duplicated().any()


def test_deterministic(tmp_path):
    """Same seed, same bytes; another seed, other triples (a small graph: the property does not need 60k)."""
    kw = dict(num_entities=300, num_relations=10, num_triples=6_000)
    generate(tmp_path / "a", seed=3, **kw)
    generate(tmp_path / "b", seed=3, **kw)
    for s in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{s}.txt").read_bytes() == (tmp_path / "b" / f"{s}.txt").read_bytes()
    generate(tmp_path / "other", seed=4, **kw)
    assert (tmp_path / "other" / "train.txt").read_bytes() != (tmp_path / "a" / "train.txt").read_bytes()


def test_relation_patterns_hold(kg):
    _, res, ds = kg
    f = _frame(ds)
    pairs = lambda r: set(zip(f.h[f.r == r], f.t[f.r == r]))  # noqa: E731
    [sym] = res.patterns["symmetric"][:1]
    s = pairs(sym)
    assert len(s) > 1000 and sum((b, a) in s for a, b in s) / len(s) > 0.97
    r1, r2 = res.patterns["inverse"][0].split(",")
    p1, p2 = pairs(r1), pairs(r2)
    assert sum((b, a) in p2 for a, b in p1) / len(p1) > 0.97
    # composition: r1 and r2 are functions and r3 = r2 o r1 on every head
    c1, c2, c3 = res.patterns["composition"][0].split(",")
    m1, m2, m3 = (f[f.r == c][["h", "t"]] for c in (c1, c2, c3))
    assert not m1.h.duplicated().any() and not m2.h.duplicated().any()
    f1, f2 = dict(zip(m1.h, m1.t)), dict(zip(m2.h, m2.t))
    ok = [f2.get(f1.get(a)) == c for a, c in zip(m3.h, m3.t) if a in f1 and f1[a] in f2]
    assert len(ok) > 0.9 * len(m3) and all(ok)
    # 1-to-N: every tail has exactly one head, and heads have many tails
    [one] = res.patterns["one_to_n"][:1]
    m = f[f.r == one]
    assert not m.t.duplicated().any() and m.groupby("h").size().max() >= 20


def test_power_law_degrees(kg):
    _, _, ds = kg
    deg = np.bincount(ds.all_triples()[:, [0, 2]].ravel(), minlength=ds.num_entities)
    assert deg.max() > 30 * np.median(deg)
    # heavy tail: the top 1% of entities hold far more than 1% of the edge endpoints
    top = np.sort(deg)[::-1][: ds.num_entities // 100].sum() / deg.sum()
    assert top > 0.1


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate("/nonexistent-never-written", num_entities=1, num_relations=1, num_triples=1)
    with pytest.raises(ValueError, match="patterns"):
        generate("/nonexistent-never-written", 10, 1, 1, patterns=("transitive",))


def test_cli_synth(tmp_path):
    r = CliRunner().invoke(datasets, ["synth", "--entities", "500", "--relations", "7", "--triples", "5000",
                                      "--seed", "1", "--out", str(tmp_path / "kg"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "train=" in r.output and (tmp_path / "kg" / "valid.txt").exists()
    assert Dataset.from_folder(tmp_path / "kg").num_relations == 7


@pytest.mark.slow
def test_one_million_entities_ten_million_triples_fast(tmp_path):
    import time

    t = time.perf_counter()
    res = generate(tmp_path, num_entities=1_000_000, num_relations=100, num_triples=10_000_000, seed=0)
    assert sum(res.counts.values()) >= 9_900_000 and time.perf_counter() - t < 120
