"""KGT5 verbalisation: unique entity texts, separator safety, round trips, tokenisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers")

from kgt5_fixtures import one_thread, tiny_kg  # noqa: E402,F401

from kgcomplete.data.dataset import Dataset  # noqa: E402
from kgcomplete.seq2seq.encoding import QueryEncoder  # noqa: E402
from kgcomplete.seq2seq.tokenizer import EOS_ID, KGTokenizer  # noqa: E402
from kgcomplete.seq2seq.verbalize import EntityTexts, resolve_entities  # noqa: E402

WN18RR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wn18rr"


def test_clashes_resolved_by_description_then_label():
    ds = tiny_kg()
    t = EntityTexts.from_dataset(ds)
    by_label = dict(zip(ds.entities.labels, t.entity))
    assert by_label["e0"] == "node (the first one)" and by_label["e1"] == "node (the second one)"
    assert by_label["e2"] == "twin (same words) [e2]" and by_label["e3"] == "twin (same words) [e3]"
    assert by_label["e5"] == "entity 5"  # unique names stay as they are
    assert len(set(t.entity)) == len(t.entity)
    assert list(t.level[ds.entities.encode(["e0", "e2", "e5"])]) == [1, 2, 0]


def test_separator_in_names_is_escaped():
    ds = tiny_kg()
    t = EntityTexts.from_dataset(ds)
    e4 = ds.entities.id("e4")
    assert "|" not in t.entity[e4] and t.entity[e4] == "left \u00a6 right"
    q = t.queries(np.array([e4]), np.array([0]), head=False)[0]
    assert q.count("|") == 1 and q.startswith("predict tail: left")
    # a user typing the raw name (with '|') still finds the entity
    assert resolve_entities(["left | right", "e4", "left \u00a6 right"], ds, t).tolist() == [e4] * 3


def test_round_trip_and_no_names_uses_ids():
    ds = Dataset.from_arrays(np.array([[0, 0, 1], [1, 0, 2], [2, 1, 0]]))
    t = EntityTexts.from_dataset(ds)
    assert t.entity.tolist() == ["0", "1", "2"]
    assert t.lookup(["2", "0", "nope"]).tolist() == [2, 0, -1]
    ds2 = tiny_kg()
    t2 = EntityTexts.from_dataset(ds2)
    assert np.array_equal(t2.lookup(t2.entity), np.arange(ds2.num_entities))


def test_whitespace_and_clash_after_sanitising():
    # names that only differ by whitespace / separator clash after sanitising and are disambiguated
    ds = Dataset.from_arrays(np.array([[0, 0, 1], [2, 0, 3]]))
    ds.entity_names = np.array(["a  b", "a b", "x|y", "x\u00a6y"], dtype=object)
    t = EntityTexts.from_dataset(ds)
    assert len(set(t.entity)) == 4
    assert t.entity[0] == "a b [0]" and t.entity[2] == "x\u00a6y [2]"


def test_save_load(tmp_path):
    t = EntityTexts.from_dataset(tiny_kg())
    t.save(tmp_path)
    t2 = EntityTexts.load(tmp_path)
    assert t2.entity.tolist() == t.entity.tolist() and t2.relation.tolist() == t.relation.tolist()


def test_query_assembly_equals_tokenising_the_string(tmp_path):
    ds = tiny_kg()
    t = EntityTexts.from_dataset(ds)
    for model in ("bpe", "unigram"):
        tok = KGTokenizer.train(t.corpus(), vocab_size=200, model=model)
        enc = QueryEncoder(tok, t)
        a, r = ds.train[:, 0], ds.train[:, 1]
        for head in (False, True):
            ids, mask = enc.queries(torch.as_tensor(a), torch.as_tensor(r), head)
            ref = tok.encode(list(t.queries(a, r, head)))
            assert torch.equal(ids, ref)
            assert torch.equal(mask, (ref != 0).long())
        assert (enc.entity_ids[torch.arange(len(t)), enc.entity_len] == EOS_ID).all()
        assert tok.decode(enc.entity_ids) == list(t.entity)
        tok.save(tmp_path)
        tok2 = KGTokenizer.load(tmp_path)
        assert torch.equal(tok2.encode(list(t.entity)), tok.encode(list(t.entity)))


@pytest.mark.skipif(not WN18RR.is_dir(), reason=f"shared: no {WN18RR}")
def test_wn18rr_clashes_resolved():
    from kgcomplete.data.registry import load_dataset

    ds = load_dataset(WN18RR, unknown="keep")
    names = ds.entity_names
    uniq, counts = np.unique(names.astype(str), return_counts=True)
    assert (counts > 1).sum() == 4477  # clashing names in the raw data
    t = EntityTexts.from_dataset(ds)
    assert len(set(t.entity)) == ds.num_entities
    clashing = np.isin(names.astype(str), uniq[counts > 1])
    assert (t.level[clashing] >= 1).all() and (t.level[~clashing] == 0).all()
    assert np.array_equal(t.lookup(t.entity), np.arange(ds.num_entities))
