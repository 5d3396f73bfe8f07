"""KGT5 decoding: trie, constrained beam search vs brute force, sampling, evaluator integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from kgt5_fixtures import one_thread, tiny_kg, untrained_micro  # noqa: E402,F401

from kgcomplete.evaluation.evaluator import Evaluator, evaluate  # noqa: E402
from kgcomplete.evaluation.filter_index import FilterIndex  # noqa: E402
from kgcomplete.seq2seq.decoding import KGT5Scorer, beam_search, densify, sample, score_entities  # noqa: E402
from kgcomplete.seq2seq.encoding import duplicate_rows  # noqa: E402
from kgcomplete.seq2seq.tokenizer import EOS_ID, pad_lists  # noqa: E402
from kgcomplete.seq2seq.trie import EntityTrie  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    return untrained_micro()


@pytest.mark.parametrize("eos", [True, False])
@pytest.mark.parametrize("max_length", [None, 1, 3, 6])
def test_pad_lists_truncates_each_list_like_slicing(eos, max_length):
    rng = np.random.default_rng(1)
    seqs = [list(rng.integers(3, 50, size=rng.integers(0, 8))) for _ in range(40)]
    keep = None if max_length is None else max_length - int(eos)
    rows = [s[:keep] + ([EOS_ID] if eos else []) for s in seqs]  # the reference: one slice per list
    width = max(1, max(map(len, rows)))
    expect = torch.tensor([r + [0] * (width - len(r)) for r in rows])  # PAD_ID 0 on the right
    assert torch.equal(pad_lists(seqs, eos=eos, max_length=max_length), expect)


def test_duplicate_targets_are_the_rows_another_entity_shares(setup):
    rng = np.random.default_rng(2)
    ids = torch.from_numpy(rng.integers(3, 6, size=(300, 4)))  # few distinct rows: many shared
    ids[::7, 2:] = 0  # padded rows among them
    rows = [tuple(r) for r in ids.tolist()]
    expect = [i for i, r in enumerate(rows) if rows.count(r) > 1]
    enc = setup[3]
    assert list(enc.duplicate_targets()) == []  # the tiny graph's names are unique
    assert 0 < len(expect) < len(rows)
    assert list(duplicate_rows(ids.numpy())) == expect


def test_trie_matches_python_sets():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(3, 9, size=rng.integers(1, 5))) for _ in range(60)]
    seqs = [list(s) for s in {tuple(s) for s in seqs}]
    seqs.append(seqs[0][:1])  # an entity that is a prefix of another
    seqs = [list(s) for s in dict.fromkeys(tuple(s) for s in seqs)]
    ids = pad_lists(seqs, eos=True)
    trie = EntityTrie(ids, 10)
    assert torch.equal(trie.lookup(ids), torch.arange(len(seqs)))
    # allowed continuations of every prefix = brute force
    prefixes = {tuple(s[:d]) for s in seqs for d in range(len(s) + 1)}
    for p in prefixes:
        node = torch.zeros(1, dtype=torch.long)
        for t in p:
            node = trie.step(node, torch.tensor([t]))
        allowed = set(trie.allowed(node)[1].tolist())
        expect = {s[len(p)] for s in seqs if len(s) > len(p) and tuple(s[:len(p)]) == p}
        if list(p) in seqs:
            expect.add(EOS_ID)
        assert allowed == expect
    assert trie.lookup(torch.tensor([[99, EOS_ID]])).item() == -1
    m = trie.mask(torch.tensor([0, -1]))
    assert torch.isinf(m[1]).all() and (m[0] == 0).sum() == len({s[0] for s in seqs})


def test_constrained_beam_is_exact_with_full_beam(setup):
    ds, texts, tok, enc, trie, model = setup
    E = ds.num_entities
    a, r = torch.tensor([0, 3, 7, 4]), torch.tensor([0, 1, 2, 0])
    for head in (False, True):
        ids, mask = enc.queries(a, r, head)
        brute = score_entities(model, ids, mask, enc.entity_ids)  # (B, E) teacher forced
        seqs, sc = beam_search(model, ids, mask, E, trie)
        ents = trie.lookup(seqs.reshape(-1, seqs.shape[-1])).reshape(len(a), -1)
        assert (ents >= 0).all()  # every output is an entity
        assert torch.allclose(densify(ents, sc, E), brute, atol=1e-4)
        order = brute.argsort(1, descending=True)
        assert torch.equal(ents, order)


def test_small_beam_returns_entities_with_exact_scores(setup):
    ds, texts, tok, enc, trie, model = setup
    ids, mask = enc.queries(torch.arange(6), torch.tensor([0, 1, 2, 0, 1, 2]), False)
    brute = score_entities(model, ids, mask, enc.entity_ids)
    seqs, sc = beam_search(model, ids, mask, 3, trie)
    ents = trie.lookup(seqs.reshape(-1, seqs.shape[-1])).reshape(6, 3)
    assert (ents >= 0).all() and torch.isfinite(sc).all()
    assert torch.allclose(sc, brute.gather(1, ents), atol=1e-4)
    assert (sc[:, :-1] >= sc[:, 1:]).all()
    # the HF generate path with the trie's prefix_allowed_tokens_fn also yields only entities
    out = model.generate(input_ids=ids[:2], attention_mask=mask[:2], num_beams=3, num_return_sequences=3,
                         prefix_allowed_tokens_fn=trie.prefix_allowed_tokens_fn(), max_new_tokens=trie.depth,
                         do_sample=False)
    assert (trie.lookup(out[:, 1:]) >= 0).all()


def test_sampling_scores_are_sequence_log_probs(setup):
    ds, texts, tok, enc, trie, model = setup
    ids, mask = enc.queries(torch.arange(4), torch.tensor([0, 1, 2, 0]), True)
    brute = score_entities(model, ids, mask, enc.entity_ids)
    g = torch.Generator().manual_seed(0)
    seqs, sc = sample(model, ids, mask, 20, trie, generator=g)
    ents = trie.lookup(seqs.reshape(-1, seqs.shape[-1])).reshape(4, 20)
    assert (ents >= 0).all()
    assert torch.allclose(sc, brute.gather(1, ents), atol=1e-4)
    seqs, sc = sample(model, ids, mask, 20, None, max_length=12, generator=g)  # unconstrained
    ents = trie.lookup(seqs.reshape(-1, seqs.shape[-1])).reshape(4, 20)
    ok = (ents >= 0) & torch.isfinite(sc)
    assert torch.allclose(sc[ok], brute.gather(1, ents.clamp_min(0))[ok], atol=1e-4)


def test_scorers_through_shared_evaluator(setup):
    ds, texts, tok, enc, trie, model = setup
    E = ds.num_entities
    exact = evaluate(KGT5Scorer(model, enc, trie, method="exhaustive"), ds, "test", per_relation=False)
    full_beam = evaluate(KGT5Scorer(model, enc, trie, method="beam", beam_size=E), ds, "test", per_relation=False)
    for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
        assert full_beam[k] == pytest.approx(exact[k], abs=1e-9)
    # small beam and sampling: ranks follow the documented -inf rule
    fi = FilterIndex(ds.all_triples(), ds.num_relations)
    for scorer in (KGT5Scorer(model, enc, trie, method="beam", beam_size=3),
                   KGT5Scorer(model, enc, trie, method="sample", num_samples=8, seed=3),
                   KGT5Scorer(model, enc, trie, method="greedy", constrained=False)):
        res = Evaluator(fi).rank(scorer, ds.test, E)
        scorer.generator.manual_seed(scorer.seed)  # replay the same samples (heads first, then tails)
        ref = []
        for head, ranks in ((True, res.head_ranks), (False, res.tail_ranks)):
            anchor = ds.test[:, 2] if head else ds.test[:, 0]
            answer = ds.test[:, 0] if head else ds.test[:, 2]
            s = scorer.score_queries(torch.as_tensor(anchor), torch.as_tensor(ds.test[:, 1]), None, head).numpy()
            q, known = fi.known(anchor, ds.test[:, 1], head)
            for i in range(len(anchor)):  # reference: explicit per-query ranking
                others = np.setdiff1d(np.arange(E), np.append(known[q == i], answer[i]))
                tgt = s[i, answer[i]]
                better = (s[i, others] > tgt).sum()
                tied = (s[i, others] == tgt).sum()
                ref.append(1 + better + tied / 2)
                assert ranks[i] == pytest.approx(ref[-1])
        scorer.generator.manual_seed(scorer.seed)  # the same samples again, through evaluate()
        m = evaluate(scorer, ds, "test", per_relation=False)
        assert m["mrr"] == pytest.approx(np.mean(1 / np.array(ref)), abs=1e-12)
        assert m["hits@1"] == pytest.approx(np.mean(np.array(ref) <= 1), abs=1e-12)


def test_beam_decodings_are_kept_and_reused(setup, monkeypatch):
    """A scorer decodes each (anchor, relation, side) once: the ensemble's tuning and test evaluation
    reuse what the run's own metrics decoded; outputs equal a fresh scorer's, in any batch order."""
    import kgcomplete.seq2seq.decoding as dec

    ds, texts, tok, enc, trie, model = setup
    calls = []
    real = dec.beam_search
    monkeypatch.setattr(dec, "beam_search", lambda m, ids, *a, **k: calls.append(len(ids)) or real(m, ids, *a, **k))
    a, r = torch.as_tensor(ds.test[:, 0]), torch.as_tensor(ds.test[:, 1])
    fresh = KGT5Scorer(model, enc, trie, method="beam", beam_size=3, memo_queries=0)
    want_e, want_s = fresh.topk(a, r, head=False)
    calls.clear()
    sc = KGT5Scorer(model, enc, trie, method="beam", beam_size=3)
    first = sc.topk(a[:5], r[:5], head=False)
    assert sum(calls) == len(np.unique(ds.test[:5, :2], axis=0))
    calls.clear()
    perm = torch.randperm(len(a), generator=torch.Generator().manual_seed(0))
    e, s = sc.topk(a[perm], r[perm], head=False)  # only the queries not seen yet are decoded
    assert sum(calls) == len(np.unique(ds.test[:, :2], axis=0)) - len(np.unique(ds.test[:5, :2], axis=0))
    assert torch.equal(e, want_e[perm]) and torch.allclose(s, want_s[perm])
    assert torch.equal(first[0], want_e[:5])
    calls.clear()
    assert torch.equal(sc.topk(a, r, head=False)[0], want_e) and not calls
    sc.topk(a[:3], r[:3], head=True)  # the other side is another query
    assert sum(calls) == len(np.unique(ds.test[:3, 1:], axis=0))
    calls.clear()  # a full memo keeps what it had and decodes the rest every time
    small = KGT5Scorer(model, enc, trie, method="beam", beam_size=3, memo_queries=2)
    small.topk(a, r, head=False)
    small.topk(a, r, head=False)
    assert sum(calls) == 2 * len(np.unique(ds.test[:, :2], axis=0))
    assert torch.equal(small.topk(a, r, head=False)[0], want_e)
