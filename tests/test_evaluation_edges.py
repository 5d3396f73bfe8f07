"""The evaluator and the filter index on the cases the main tests do not reach: several query chunks
and entity blocks in the streaming ranker, candidate sets with ties, empty inputs, other dtypes,
negative or huge CSR keys, index files, per-relation metrics and the evaluate() summary. Every
expectation comes from tests/reference.py (NumPy) or is written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import reference
from reference import TableScorer
from kgcomplete.data import Dataset
from kgcomplete.evaluation import CSRIndex, Evaluator, FilterIndex, evaluate, metrics_from_ranks
from kgcomplete.evaluation import evaluator as evaluator_mod
from kgcomplete.evaluation.evaluator import RankingResult


def _kg(E=23, R=3, n=400, seed=0):
    rng = np.random.default_rng(seed)
    tr = np.unique(np.stack([rng.integers(0, E, n), rng.integers(0, R, n), rng.integers(0, E, n)], 1), axis=0)
    rng.shuffle(tr)
    ds = Dataset.from_arrays(tr[:200], tr[200:230], tr[230:], num_entities=E, num_relations=R)
    scores = rng.integers(0, 5, (2, E, R, E)).astype(np.float32)  # few values: ties everywhere
    return ds, scores


def _reference_ranks(scores, ds, split, filtered):
    tails, heads = scores
    trip = getattr(ds, split)
    h, r, t = trip.T
    known = ds.all_triples()
    out = {}
    for head, anchor, answer, table in ((True, t, h, heads), (False, h, t, tails)):
        mask = reference.known_mask(known, anchor, r, ds.num_entities, head) if filtered else None
        out[head] = reference.ranks(table[anchor, r], answer, mask)
    return out


@pytest.mark.parametrize("filtered", [True, False])
@pytest.mark.parametrize("with_ranking_scores", [False, True])
def test_streaming_ranker_over_several_query_chunks_and_entity_blocks(monkeypatch, filtered, with_ranking_scores):
    ds, scores = _kg()
    monkeypatch.setattr(evaluator_mod, "STREAM_QUERIES", 7)  # 7 queries per chunk, the last one short
    monkeypatch.setattr(evaluator_mod, "STREAM_MIN_BLOCK", 5)  # entity blocks of 5: 23 = 4 x 5 + 3
    scorer = TableScorer(*scores, with_ranking_scores=with_ranking_scores)
    ev = Evaluator(FilterIndex(ds.all_triples(), ds.num_relations), chunk_elements=5 * 7)  # chunk < 32: streaming
    res = ev.rank(scorer, ds.test, ds.num_entities, filtered=filtered)
    ref = _reference_ranks(scores, ds, "test", filtered)
    np.testing.assert_array_equal(res.head_ranks, ref[True])
    np.testing.assert_array_equal(res.tail_ranks, ref[False])
    assert res.head_ranks.dtype == np.float64 and (res.head_ranks % 0.5 == 0).all()
    assert (scorer.ranking_calls > 0) == with_ranking_scores  # the cheaper transform is used when offered


def test_candidate_sets_with_ties_and_the_answer_among_them():
    ds, scores = _kg(seed=1)
    tails, heads = scores
    rng = np.random.default_rng(5)
    n = len(ds.test)
    cand = {"head": rng.integers(0, ds.num_entities, (n, 6)), "tail": rng.integers(0, ds.num_entities, (n, 6))}
    cand["tail"][0, 2] = ds.test[0, 2]  # the answer listed among its own candidates is skipped
    ev = Evaluator(None, chunk_elements=3 * 7)  # 3 queries per chunk: several chunks, never streaming
    res = ev.rank(TableScorer(tails, heads), ds.test, ds.num_entities, filtered=False, candidates=cand)
    h, r, t = ds.test.T
    for head, anchor, answer, table, got in ((True, t, h, heads, res.head_ranks), (False, h, t, tails, res.tail_ranks)):
        c = cand["head" if head else "tail"]
        s = table[anchor, r]
        target = s[np.arange(n), answer][:, None]
        other = s[np.arange(n)[:, None], c]
        keep = c != answer[:, None]
        expected = 1 + ((other > target) & keep).sum(1) + ((other == target) & keep).sum(1) / 2
        np.testing.assert_array_equal(got, expected)


def test_evaluate_summary_keys_protocol_and_filter_index():
    ds, scores = _kg(seed=2)
    scorer = TableScorer(*scores)
    m = evaluate(scorer, ds)  # default: test split, filtered against every split, per relation
    ref = reference.metrics(lambda a, r, head: scores[int(head)][a, r], ds.test, ds.all_triples(), ds.num_entities)
    assert m["mrr"] == pytest.approx(ref["mrr"]) and m["filtered"] is True and m["protocol"] == "all-entities"
    assert set(m["per_relation"]) == {str(x) for x in ds.relations.labels[np.unique(ds.test[:, 1])]}
    raw = evaluate(scorer, ds, "valid", filtered=False, per_relation=False)
    ref_raw = reference.metrics(lambda a, r, head: scores[int(head)][a, r], ds.valid, None, ds.num_entities)
    assert raw["mrr"] == pytest.approx(ref_raw["mrr"]) and raw["filtered"] is False and "per_relation" not in raw
    # a given filter index is the one used: train triples only filter less than every split
    only_train = FilterIndex(ds.train, ds.num_relations)
    part = evaluate(scorer, ds, filter_index=only_train)
    ref_part = reference.metrics(lambda a, r, head: scores[int(head)][a, r], ds.test, ds.train, ds.num_entities)
    assert part["mrr"] == pytest.approx(ref_part["mrr"]) and part["mrr"] != pytest.approx(m["mrr"])
    # candidates of the split (OGB protocol) switch the protocol
    rng = np.random.default_rng(3)
    ds.candidates = {"test": {"head": rng.integers(0, ds.num_entities, (len(ds.test), 4)),
                              "tail": rng.integers(0, ds.num_entities, (len(ds.test), 4))}}
    c = evaluate(scorer, ds, per_relation=False)
    assert c["protocol"] == "candidates" and c["mrr"] != pytest.approx(m["mrr"])
    assert evaluate(scorer, ds, "valid")["protocol"] == "all-entities"


def test_metrics_from_ranks_empty_and_integer_ranks():
    empty = metrics_from_ranks(np.array([]))
    assert set(empty) == {"mrr", "mr", "hits@1", "hits@3", "hits@10", "count"} and empty["count"] == 0
    assert all(np.isnan(empty[k]) for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10"))
    m = metrics_from_ranks([1, 3])  # a list of ints
    assert m == {"mrr": pytest.approx(2 / 3), "mr": 2.0, "hits@1": 0.5, "hits@3": 1.0, "hits@10": 1.0, "count": 2}
    assert metrics_from_ranks([1])["count"] == 1 and metrics_from_ranks([1])["mrr"] == 1.0


def test_per_relation_metrics():
    triples = np.array([[0, 1, 2], [3, 0, 4], [5, 1, 6], [7, 2, 8]])
    head = np.array([1.0, 2.0, 4.0, 1.5])
    tail = np.array([2.0, 1.0, 1.0, 3.0])
    res = RankingResult(triples, head, tail)
    per = res.metrics(np.array(["r0", "r1", "r2"], dtype=object))["per_relation"]
    assert set(per) == {"r0", "r1", "r2"}
    assert per["r1"]["count"] == 4 and per["r1"]["mrr"] == pytest.approx(np.mean([1, 1 / 4, 1 / 2, 1]))
    assert per["r1"]["head_mrr"] == pytest.approx(np.mean([1, 1 / 4])) and per["r1"]["tail_mrr"] == pytest.approx(0.75)
    assert per["r0"]["head_mrr"] == pytest.approx(0.5) and per["r0"]["tail_mrr"] == pytest.approx(1.0)
    assert set(res.metrics()["per_relation"]) == {"0", "1", "2"}  # no labels: relation ids
    assert "per_relation" not in res.metrics(per_relation=False)
    both = res.metrics(per_relation=False)
    assert both["head"]["mrr"] == pytest.approx(np.mean(1 / head)) and both["tail"]["mrr"] == pytest.approx(np.mean(1 / tail))
    assert RankingResult(triples[:0], head[:0], tail[:0]).metrics()["count"] == 0


def _as_dict(index: CSRIndex) -> dict:
    return {int(k): index.values[index.indptr[i]:index.indptr[i + 1]].tolist() for i, k in enumerate(index.keys)}


@pytest.mark.parametrize("keys, values", [
    ([5, 1, 5, 5, 1], [7, 2, 3, 7, 2]),  # non-negative: composite sort
    ([-4, 1, -4, 9], [0, 2, 3, 0]),  # a negative key: lexsort fallback
    ([2**62, 3, 2**62], [9, 1, 4]),  # a key too large to combine with the values
])
def test_csr_build_sorts_dedups_and_looks_up(keys, values):
    index = CSRIndex.build(np.array(keys, dtype=np.int32 if max(map(abs, keys)) < 2**31 else np.int64), values)
    expected = {}
    for k, v in sorted(set(zip(keys, values))):
        expected.setdefault(k, []).append(v)
    assert _as_dict(index) == expected
    assert index.keys.dtype == index.indptr.dtype == index.values.dtype == np.int64
    query = [keys[0], 12345, keys[-1], -99]  # present, absent (past the end), present, absent (before)
    q, v = index.lookup(query)
    assert [(int(a), int(b)) for a, b in zip(q, v)] == [(i, x) for i, k in enumerate(query) for x in expected.get(k, [])]


def test_csr_empty_and_files(tmp_path):
    empty = CSRIndex.build([], [])
    assert empty.keys.shape == (0,) and empty.indptr.tolist() == [0] and empty.values.shape == (0,)
    assert empty.keys.dtype == empty.indptr.dtype == empty.values.dtype == np.int64
    q, v = empty.lookup([1, 2])
    assert len(q) == len(v) == 0
    one = CSRIndex.build([4], [8])
    assert one.lookup([4, 5])[1].tolist() == [8] and one.lookup([3])[1].tolist() == []
    ds, _ = _kg(seed=4)
    fi = FilterIndex.from_dataset(ds)
    folder = fi.save(tmp_path / "a" / "b")  # parents are created
    fi.save(folder)  # and saving again into the same folder works
    for mmap in (True, False):
        again = FilterIndex.load(folder, mmap=mmap)
        assert again.num_relations == fi.num_relations
        for head in (True, False):
            a = ds.test[:, 2] if head else ds.test[:, 0]
            for x, y in zip(again.known(a, ds.test[:, 1], head), fi.known(a, ds.test[:, 1], head)):
                np.testing.assert_array_equal(x, y)
            q, _ = fi.known(a, ds.test[:, 1], head)  # counts without listing the answers
            np.testing.assert_array_equal(again.answer_counts(a, ds.test[:, 1], head), np.bincount(q, minlength=len(a)))
    assert empty.counts([1, 2]).tolist() == [0, 0] and one.counts([3, 4, 5]).tolist() == [0, 1, 0]


def test_filter_index_from_parts_and_chunks_equals_stacked():
    ds, _ = _kg(seed=6)
    stacked = FilterIndex(ds.all_triples(), ds.num_relations)
    parts = FilterIndex([ds.train, ds.valid.astype(np.int32), ds.test], ds.num_relations)
    keys_a, vals_a = stacked._side([ds.all_triples()], 0, 2)
    keys_b, vals_b = parts._side([ds.train, ds.valid, ds.test], 0, 2, chunk=7)  # several chunks per part
    np.testing.assert_array_equal(keys_a, keys_b)
    np.testing.assert_array_equal(vals_a, vals_b)
    assert keys_b.dtype == vals_b.dtype == np.int64
    for head in (True, False):
        a = ds.valid[:, 2] if head else ds.valid[:, 0]
        for x, y in zip(parts.known(a.astype(np.int32), ds.valid[:, 1].astype(np.int32), head),
                        stacked.known(a, ds.valid[:, 1], head)):
            np.testing.assert_array_equal(x, y)
    probe = np.concatenate([ds.test[:5], [[0, 0, 0], [ds.num_entities - 1, 2, ds.num_entities - 1]]])
    known = {tuple(x) for x in ds.all_triples().tolist()}
    np.testing.assert_array_equal(parts.contains(probe.astype(np.int32)), [tuple(x) in known for x in probe.tolist()])
    assert parts.contains(probe[0]).tolist() == [True]  # one triple as a (3,) array
