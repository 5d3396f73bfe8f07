"""``kgt5.decoding.widen_for_known``: a beam search keeps one more hypothesis per answer the query
has in the training graph, so that the answers filtered ranking removes do not push new ones out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from kgt5_fixtures import one_thread, trained_kgt5, untrained_micro  # noqa: E402,F401

from kgcomplete.seq2seq.decoding import KGT5Scorer, densify, rerank, score_entities  # noqa: E402
from kgcomplete.seq2seq.run import KGT5Run, resolve_config  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    ds, _, _, enc, trie, model = untrained_micro()
    return ds, enc, trie, model


def counting(per_query):
    """A ``known_answers`` callback: query ``(anchor, relation)`` -> ``per_query[anchor]`` answers."""
    calls = []

    def known(anchor, relation, head):
        calls.append((np.asarray(anchor).copy(), head))
        return np.asarray(per_query)[np.asarray(anchor)]
    known.calls = calls
    return known


def test_extra_hypotheses_round_up_to_powers_of_two_within_the_caps(setup):
    ds, enc, trie, model = setup
    E = ds.num_entities  # 10
    known = counting([0, 1, 2, 3, 5, 9, 0, 0, 0, 0])
    a, r = torch.arange(6), torch.zeros(6, dtype=torch.long)
    sc = KGT5Scorer(model, enc, trie, method="beam", beam_size=2, known_answers=known, widen_for_known=4)
    # counts 0 1 2 3 5 9 -> capped at 4 -> 0 1 2 4 4 4 -> width <= E
    assert sc.extra_hypotheses(a, r, False).tolist() == [0, 1, 2, 4, 4, 4]
    sc = KGT5Scorer(model, enc, trie, method="beam", beam_size=2, known_answers=known, widen_for_known=200)
    assert sc.extra_hypotheses(a, r, False).tolist() == [0, 1, 2, 4, 8, E - 2]  # never wider than E
    for off in (KGT5Scorer(model, enc, trie, method="beam", beam_size=2, known_answers=known, widen_for_known=0),
                KGT5Scorer(model, enc, trie, method="beam", beam_size=2, widen_for_known=200),
                KGT5Scorer(model, enc, trie, method="sample", num_samples=2, known_answers=known, widen_for_known=200)):
        assert off.extra_hypotheses(a, r, False).tolist() == [0] * 6


def test_each_query_is_decoded_at_its_own_width(setup):
    ds, enc, trie, model = setup
    per_query = [0, 1, 3, 7, 0, 2, 0, 0, 0, 0]
    a, r = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 1, 2, 0, 1, 2])
    for head in (False, True):
        known = counting(per_query)
        sc = KGT5Scorer(model, enc, trie, method="beam", beam_size=2, known_answers=known, widen_for_known=200)
        ents, scores = sc.topk(a, r, head)
        assert known.calls and all(h == head for _, h in known.calls)
        widths = 2 + sc.extra_hypotheses(a, r, head)
        assert widths.tolist() == [2, 3, 6, 10, 2, 4]
        assert ents.shape[1] == widths.max()
        for b, w in enumerate(widths):
            fixed = KGT5Scorer(model, enc, trie, method="beam", beam_size=int(w))
            e, s = fixed.topk(a[b:b + 1], r[b:b + 1], head)
            assert torch.equal(ents[b, :w], e[0]) and torch.allclose(scores[b, :w], s[0])
            assert (ents[b, w:] == -1).all() and torch.isinf(scores[b, w:]).all()


def test_known_answers_no_longer_push_a_new_answer_out_of_a_narrow_beam(setup):
    ds, enc, trie, model = setup
    E = ds.num_entities
    a, r = torch.tensor([0, 3, 7]), torch.tensor([0, 1, 2])
    exact = score_entities(model, *enc.queries(a, r, False), enc.entity_ids)  # (B, E) teacher-forced
    narrow = KGT5Scorer(model, enc, trie, method="beam", beam_size=2)
    assert (densify(*narrow.topk(a, r), E).isinf().sum(1) == E - 2).all()  # 2 answers per query
    # every query "knows" E - 2 answers: the beam widens to all E, i.e. the exact ranking
    wide = KGT5Scorer(model, enc, trie, method="beam", beam_size=2, known_answers=counting([E - 2] * E),
                      widen_for_known=200)
    assert torch.allclose(densify(*wide.topk(a, r), E), exact, atol=1e-4)


def test_rerank_takes_each_rows_own_count():
    ents = torch.tensor([[4, 2, 7, 1], [3, 5, 6, 0]])
    own = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-1.0, -2.0, -3.0, -4.0]])
    other = torch.tensor([[-9.0, -1.0, -0.5], [-9.0, -1.0, -0.5]])
    e, s = rerank(ents, own, other, 1.0, torch.tensor([3, 1]))
    assert e[0].tolist() == [2, 7, 4, 1]  # -3, -3.5, -10, then 1 below
    assert e[1].tolist() == [3, 5, 6, 0] and s[1, 0] == -10.0  # one re-ranked: the rest keep their order below
    assert (s[1, 1:] < -10).all() and (s[1, 1:-1] > s[1, 2:]).all()
    assert torch.equal(rerank(ents, own, other, 1.0, torch.tensor([3, 3]))[0], rerank(ents, own, other, 1.0)[0])


def test_both_readings_grow_with_the_width(setup):
    ds, enc, trie, model = setup
    E = ds.num_entities
    a, r = torch.tensor([0, 3, 7, 4]), torch.tensor([0, 1, 2, 0])
    full = KGT5Scorer(model, enc, trie, method="beam", beam_size=E, reverse_weight=0.5, reverse_candidates=E)
    widened = KGT5Scorer(model, enc, trie, method="beam", beam_size=2, reverse_weight=0.5, reverse_candidates=2,
                         known_answers=counting([E - 2] * E), widen_for_known=200)
    for head in (False, True):
        assert torch.allclose(densify(*widened.topk(a, r, head), E), densify(*full.topk(a, r, head), E), atol=1e-4)


def test_runs_widen_by_their_training_answers(trained_kgt5, tmp_path):
    ds, out, run = trained_kgt5
    assert resolve_config({})["kgt5"]["decoding"]["widen_for_known"] == 200
    train = np.asarray(ds.splits["train"])
    a, r = train[:, 0], train[:, 1]
    want = [int(((train[:, 0] == x) & (train[:, 1] == y)).sum()) for x, y in zip(a, r)]
    assert run.training_answer_counts(a, r, False).tolist() == want
    want = [int(((train[:, 2] == x) & (train[:, 1] == y)).sum()) for x, y in zip(train[:, 2], r)]
    assert run.training_answer_counts(train[:, 2], r, True).tolist() == want
    sc = run.scorer(beam_size=2)
    assert sc.widen_for_known == 200 and sc.known_answers == run.training_answer_counts
    assert run.evaluate("test", beam_size=2)["decoding"]["widen_for_known"] == 200
    assert run.scorer(beam_size=2, widen_for_known=0).extra_hypotheses(torch.as_tensor(a), torch.as_tensor(r),
                                                                        False).max() == 0
    with pytest.raises(ValueError, match="widen_for_known"):
        resolve_config({"kgt5": {"decoding": {"widen_for_known": -1}}})


def test_a_run_written_before_the_option_keeps_a_fixed_width(trained_kgt5, tmp_path):
    import shutil

    import yaml

    ds, out, _ = trained_kgt5
    old = tmp_path / "old"
    shutil.copytree(out, old)
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    del cfg["kgt5"]["decoding"]["widen_for_known"]
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = KGT5Run.load(old, dataset=ds)
    assert run.scorer().widen_for_known == 0
