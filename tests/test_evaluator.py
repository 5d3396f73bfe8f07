import numpy as np
import torch

from kgcomplete.data import Dataset
from kgcomplete.evaluation import CSRIndex, Evaluator, FilterIndex, evaluate, metrics_from_ranks
from reference import TableScorer


def brute_force_ranks(scores_t, scores_h, test, known, filtered):
    """Dense reference: rank = 1 + #better + #tied/2 after removing other known answers."""
    out_h, out_t = [], []
    for h, r, t in test:
        for head, anchor, answer, table, out in ((False, h, t, scores_t, out_t), (True, t, h, scores_h, out_h)):
            s = table[anchor, r].copy()
            if filtered:
                others = [x[0] if head else x[2] for x in known
                          if x[1] == r and (x[2] if head else x[0]) == anchor and (x[0] if head else x[2]) != answer]
                mask = np.zeros(len(s), bool)
                mask[others] = True
            else:
                mask = np.zeros(len(s), bool)
            mask[answer] = True  # never compare with itself
            better = np.sum((s > s[answer]) & ~mask)
            tied = np.sum((s == s[answer]) & ~mask)
            out.append(1 + better + tied / 2)
    return np.array(out_h), np.array(out_t)


def random_kg(seed=0, E=30, R=4, n=200):
    rng = np.random.default_rng(seed)
    tr = np.unique(np.stack([rng.integers(0, E, n), rng.integers(0, R, n), rng.integers(0, E, n)], 1), axis=0)
    rng.shuffle(tr)
    return Dataset.from_arrays(tr[:150], tr[150:170], tr[170:], num_entities=E, num_relations=R)


def test_filtered_and_raw_ranks_match_brute_force_with_ties():
    ds = random_kg()
    rng = np.random.default_rng(1)
    # few distinct values -> many ties
    tails = rng.integers(0, 4, (ds.num_entities, ds.num_relations, ds.num_entities)).astype(np.float32)
    heads = rng.integers(0, 4, (ds.num_entities, ds.num_relations, ds.num_entities)).astype(np.float32)
    scorer = TableScorer(tails, heads)
    known = ds.all_triples()
    for filtered in (True, False):
        for chunk in (1, 7, 1 << 20):  # chunking must not change anything
            ev = Evaluator(FilterIndex(known, ds.num_relations), chunk_elements=chunk * ds.num_entities)
            res = ev.rank(scorer, ds.test, ds.num_entities, filtered=filtered)
            ref_h, ref_t = brute_force_ranks(tails, heads, ds.test, known.tolist(), filtered)
            np.testing.assert_allclose(res.head_ranks, ref_h)
            np.testing.assert_allclose(res.tail_ranks, ref_t)


def test_constant_scores_give_mean_rank_of_the_tie():
    ds = random_kg(E=11)
    zeros = np.zeros((11, ds.num_relations, 11), np.float32)
    res = Evaluator(None).rank(TableScorer(zeros, zeros), ds.test, 11, filtered=False)
    np.testing.assert_allclose(res.tail_ranks, 6.0)  # (1 + 11) / 2
    np.testing.assert_allclose(res.head_ranks, 6.0)


def test_candidates_protocol():
    ds = random_kg()
    rng = np.random.default_rng(2)
    tails = rng.normal(size=(ds.num_entities, ds.num_relations, ds.num_entities)).astype(np.float32)
    heads = rng.normal(size=(ds.num_entities, ds.num_relations, ds.num_entities)).astype(np.float32)
    cand_t = rng.integers(0, ds.num_entities, (len(ds.test), 5))
    cand_h = rng.integers(0, ds.num_entities, (len(ds.test), 5))
    res = Evaluator(None).rank(TableScorer(tails, heads), ds.test, ds.num_entities, filtered=False,
                               candidates={"head": cand_h, "tail": cand_t})
    h, r, t = ds.test.T
    expected = 1 + (tails[h, r][np.arange(len(t))[:, None], cand_t] > tails[h, r, t][:, None]).sum(1)
    np.testing.assert_allclose(res.tail_ranks, expected)
    # head queries (?, r, t) look up the head table at [t, r] and rank the true head among cand_h
    expected_h = 1 + (heads[t, r][np.arange(len(h))[:, None], cand_h] > heads[t, r, h][:, None]).sum(1)
    np.testing.assert_allclose(res.head_ranks, expected_h)


def test_metrics_and_per_relation():
    m = metrics_from_ranks(np.array([1, 2, 4, 20]))
    assert abs(m["mrr"] - np.mean([1, 0.5, 0.25, 0.05])) < 1e-12
    assert m["hits@1"] == 0.25 and m["hits@3"] == 0.5 and m["hits@10"] == 0.75 and m["mr"] == 6.75
    ds = random_kg()
    tails = np.random.default_rng(3).normal(size=(ds.num_entities, ds.num_relations, ds.num_entities)).astype(np.float32)
    out = evaluate(TableScorer(tails, tails), ds, "test")
    assert set(out["per_relation"]) <= set(ds.relations.labels)
    total = sum(v["count"] for v in out["per_relation"].values())
    assert total == out["count"] == 2 * len(ds.test)
    assert out["head"]["count"] == out["tail"]["count"] == len(ds.test)


def test_csr_lookup():
    keys = np.array([5, 1, 5, 3, 5, 1])
    vals = np.array([10, 11, 12, 13, 10, 14])
    idx = CSRIndex.build(keys, vals)
    q, v = idx.lookup(np.array([5, 2, 1]))
    assert list(zip(q.tolist(), v.tolist())) == [(0, 10), (0, 12), (2, 11), (2, 14)]
    fi = FilterIndex(np.array([[0, 1, 2], [0, 1, 3], [4, 0, 2]]), 2)
    assert fi.contains(np.array([[0, 1, 3], [0, 0, 3], [4, 0, 2]])).tolist() == [True, False, True]
    q, h = fi.known(np.array([2]), np.array([1]), head=True)
    assert h.tolist() == [0]


def test_rank_counts_equal_comparison_counts():
    from kgcomplete.evaluation.evaluator import rank_counts

    rng = np.random.default_rng(3)
    scores = torch.as_tensor(rng.integers(-3, 4, (40, 300)).astype(np.float32))  # many ties
    scores[0, :5] = float("nan")
    scores[1, :3] = float("inf")
    scores[2, :3] = float("-inf")
    for target in (scores[:, 7].clone(), torch.full((40,), float("-inf"))):  # finite, and infinite targets
        better, tied = rank_counts(scores, target)
        t = target.unsqueeze(1)
        assert torch.equal(better, (scores > t).sum(1)) and torch.equal(tied, (scores == t).sum(1))
    assert rank_counts(scores, scores[:, 7].clone())[0][1] >= 3  # +inf beats a finite target


def test_raw_and_filtered_differ_on_a_crafted_case():
    """Tail query (0, r, ?) with answer 3 while (0, r, 1) and (0, r, 2) are known and score higher:
    raw rank 3, filtered rank 1. The head query (?, r, 3) has no other known head: rank 3 either way.
    A tie with an unknown entity counts half, in both settings."""
    train = np.array([[0, 0, 1], [0, 0, 2]])
    test = np.array([[0, 0, 3]])
    ds = Dataset.from_arrays(train, train[:0], test, num_entities=5, num_relations=1)
    tails = np.zeros((5, 1, 5), np.float32)
    heads = np.zeros((5, 1, 5), np.float32)
    tails[0, 0] = [0.0, 3.0, 2.0, 1.0, 1.0]  # entity 4 ties with the answer
    heads[3, 0] = [1.0, 2.0, 2.0, 0.5, 0.0]
    scorer = TableScorer(tails, heads)
    fi = FilterIndex(ds.all_triples(), ds.num_relations)
    raw = Evaluator(fi).rank(scorer, test, 5, filtered=False)
    filtered = Evaluator(fi).rank(scorer, test, 5, filtered=True)
    np.testing.assert_allclose(raw.tail_ranks, [3.5])
    np.testing.assert_allclose(filtered.tail_ranks, [1.5])
    np.testing.assert_allclose(raw.head_ranks, [3.0])
    np.testing.assert_allclose(filtered.head_ranks, [3.0])
    assert abs(evaluate(scorer, ds, "test", filtered=False)["mrr"] - np.mean([1 / 3.0, 1 / 3.5])) < 1e-12
    assert abs(evaluate(scorer, ds, "test")["mrr"] - np.mean([1 / 3.0, 1 / 1.5])) < 1e-12
