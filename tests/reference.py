"""Independent reference computations for tests: ranks and metrics in plain NumPy.

Nothing here calls the library's evaluator: a test that compares the library's numbers with these
checks the library against a second, simpler implementation of the same definition
(realistic rank = 1 + #better + #tied / 2 over the candidates that are not other known answers).
"""

from __future__ import annotations

import numpy as np


def ranks(scores: np.ndarray, answer: np.ndarray, known_mask: np.ndarray | None = None) -> np.ndarray:
    """scores ``(B, E)``, true answers ``(B,)``, ``known_mask (B, E)`` True for other known answers
    (filtered setting; None = raw) -> realistic ranks ``(B,)``."""
    scores = np.asarray(scores, dtype=np.float64)
    b = np.arange(len(answer))
    target = scores[b, answer][:, None]
    keep = np.ones(scores.shape, bool) if known_mask is None else ~known_mask
    keep[b, answer] = False  # never compared with itself
    better = ((scores > target) & keep).sum(1)
    tied = ((scores == target) & keep).sum(1)
    return 1.0 + better + tied / 2.0


def known_mask(known: np.ndarray, anchor: np.ndarray, rel: np.ndarray, num_entities: int, head: bool) -> np.ndarray:
    """``(B, E)``: True where ``(e, r, anchor)`` (head) or ``(anchor, r, e)`` (tail) is in ``known (n, 3)``."""
    known = np.asarray(known, dtype=np.int64)
    a_col, e_col = (2, 0) if head else (0, 2)
    R = int(max(known[:, 1].max(), rel.max())) + 1
    key = lambda a, r, e: (a * R + r) * num_entities + e  # noqa: E731
    known_keys = key(known[:, a_col], known[:, 1], known[:, e_col])
    grid = key(anchor[:, None].astype(np.int64), rel[:, None].astype(np.int64), np.arange(num_entities)[None, :])
    return np.isin(grid, known_keys)


def metrics(score_fn, triples: np.ndarray, known: np.ndarray | None, num_entities: int) -> dict:
    """MRR, MR and Hits@{1,3,10} over head and tail queries of ``triples (n, 3)``.

    ``score_fn(anchor, rel, head) -> (n, E)`` NumPy scores; ``known`` None = raw ranks.
    """
    triples = np.asarray(triples, dtype=np.int64)
    h, r, t = triples.T
    out = []
    for head, anchor, answer in ((True, t, h), (False, h, t)):
        s = np.asarray(score_fn(anchor, r, head), dtype=np.float64)
        mask = None if known is None else known_mask(known, anchor, r, num_entities, head)
        out.append(ranks(s, answer, mask))
    rk = np.concatenate(out)
    return {"mrr": float(np.mean(1.0 / rk)), "mr": float(np.mean(rk)),
            **{f"hits@{k}": float(np.mean(rk <= k)) for k in (1, 3, 10)}}


def model_score_fn(scorer):
    """``score_fn`` for :func:`metrics` from anything with ``score_queries(anchor, r, None, head)``."""
    import torch

    def fn(anchor, rel, head):
        with torch.no_grad():
            return scorer.score_queries(torch.as_tensor(anchor), torch.as_tensor(rel), None, head).double().numpy()

    return fn


def assert_user_error(res, *words: str) -> None:
    """A click ``CliRunner`` result of a refused command: exit code 1 through ``SystemExit`` (no
    exception escaped, so no traceback), one line ``Error: ...`` naming ``words``."""
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, (res.exception, res.output)
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert all(w in res.output for w in words), res.output


def assert_usage_error(res, *words: str) -> None:
    """A click ``CliRunner`` result of a usage error: exit code 2, click's usage lines, then one
    ``Error: ...`` line naming ``words``; no traceback."""
    assert isinstance(res.exception, SystemExit) and res.exit_code == 2, (res.exception, res.output)
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and all(w in last for w in words), res.output
    assert "Traceback" not in res.output


class TableScorer:
    """A scorer from fixed score tables: ``tails[h, r, :]`` and ``heads[t, r, :]``; with
    ``with_ranking_scores`` it also offers a strictly increasing ``ranking_scores`` (same ranks) and
    counts its calls."""

    def __init__(self, tails, heads, with_ranking_scores=False):
        import torch

        self.tails, self.heads = torch.as_tensor(tails), torch.as_tensor(heads)
        self.ranking_calls = 0
        if with_ranking_scores:
            self.ranking_scores = self._ranking_scores

    def score_queries(self, anchor, r, candidates=None, head=False):
        s = (self.heads if head else self.tails)[anchor, r]
        if candidates is None:
            return s
        return s[:, candidates] if candidates.dim() == 1 else s.gather(1, candidates)

    def _ranking_scores(self, anchor, r, candidates, head=False):
        self.ranking_calls += 1
        return self.score_queries(anchor, r, candidates, head) * 3.0 + 1.0


def row_adagrad(w: np.ndarray, g: np.ndarray, acc: np.ndarray, lr: float, eps: float = 1e-10) -> np.ndarray:
    """Row-wise Adagrad written out on rows ``w (n, d)`` with gradients ``g (n, d)``:
    ``acc_i += mean_k g_ik^2``, ``w_i -= lr g_i / (sqrt(acc_i) + eps)`` (``acc (n,)`` updated in place)."""
    acc += (g**2).mean(1)
    return w - lr * g / (np.sqrt(acc) + eps)[:, None]
