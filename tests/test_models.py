import pytest
import torch

from kgcomplete.models import MODELS, build_model

E, R, B = 40, 5, 6


def make(name, reciprocal):
    opts = {"embedding_height": 4} if name == "conve" else {}
    torch.manual_seed(0)
    m = build_model(name, E, R, dim=12, reciprocal=reciprocal, init_scale=0.5, **opts)
    return m.eval()


@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_candidate_scoring_agrees_with_triple_scoring(name, reciprocal):
    m = make(name, reciprocal)
    g = torch.Generator().manual_seed(1)
    tr = torch.stack([torch.randint(0, E, (B,), generator=g), torch.randint(0, R, (B,), generator=g),
                      torch.randint(0, E, (B,), generator=g)], 1)
    with torch.no_grad():
        s = m.score_triples(tr)
        all_tails = m.score_tails(tr[:, 0], tr[:, 1])
        all_heads = m.score_heads(tr[:, 1], tr[:, 2])
        assert all_tails.shape == (B, E) and all_heads.shape == (B, E)
        torch.testing.assert_close(all_tails[torch.arange(B), tr[:, 2]], s, atol=1e-4, rtol=1e-4)
        if not m.reciprocal:  # with reciprocal relations head queries use the inverse relation
            torch.testing.assert_close(all_heads[torch.arange(B), tr[:, 0]], s, atol=1e-4, rtol=1e-4)
        shared = torch.randint(0, E, (9,), generator=g)
        torch.testing.assert_close(m.score_tails(tr[:, 0], tr[:, 1], shared), all_tails[:, shared], atol=1e-4, rtol=1e-4)
        per_query = torch.randint(0, E, (B, 7), generator=g)
        torch.testing.assert_close(m.score_heads(tr[:, 1], tr[:, 2], per_query), all_heads.gather(1, per_query),
                                   atol=1e-4, rtol=1e-4)


def test_reciprocal_head_queries_use_inverse_relation():
    m = make("distmult", True)
    r, t = torch.tensor([1, 2]), torch.tensor([3, 4])
    with torch.no_grad():
        torch.testing.assert_close(m.score_heads(r, t), m.score_tails(t, r + R))


def test_transe_l2_fast_path_matches_direct_distance():
    m = build_model("transe_l2", E, R, dim=8, init_scale=0.5).eval()
    h, r = torch.tensor([0, 1]), torch.tensor([2, 3])
    with torch.no_grad():
        q = m.entities(h) + m.relations(r)
        direct = -torch.cdist(q, m.entity_emb.weight)
        torch.testing.assert_close(m.score_tails(h, r), direct, atol=1e-4, rtol=1e-4)


def test_gradients_are_sparse_and_touch_only_batch_rows():
    m = make("complex", False).train()
    tr = torch.tensor([[0, 1, 2], [3, 1, 4]])
    m.score_triples(tr).sum().backward()
    g = m.entity_emb.weight.grad
    assert g.is_sparse
    assert set(g.coalesce().indices()[0].tolist()) == {0, 2, 3, 4}


def test_unknown_model_lists_available():
    with pytest.raises(ValueError, match="complex"):
        build_model("nope", 3, 1)
