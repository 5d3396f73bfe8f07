"""Synthetic knowledge graphs with power-law degrees and learnable relation patterns.

Every relation gets one pattern (relations are assigned round-robin to pattern groups):

- ``symmetric``    r(a, b) and r(b, a)
- ``inverse``      a pair (r1, r2): r1(a, b) and r2(b, a)
- ``composition``  a triple (r1, r2, r3): r1 and r2 are functions (each head has one tail),
                   r3(a, c) exactly when r1(a, b) and r2(b, c)
- ``one_to_n``     each tail has exactly one head (hub heads with many tails)
- ``random``       independent power-law heads and tails (noise the models must not "learn")

Entity popularity is a truncated power law over ranks (exponent ``alpha``) mixed with a uniform
share, so almost every entity occurs and degrees have a heavy tail. Everything is vectorised NumPy;
the graph is generated one relation group at a time and train triples are written as they are made
(fixed-width labels ``e000123`` / ``r07``, so text is produced by array arithmetic, not formatting).
Valid/test triples whose entities never occur in train are moved to train, so the standard
``unknown="error"`` loader accepts the result.

Output folder: ``train.txt valid.txt test.txt`` (the standard layout) and ``synth.json`` (the
parameters, the pattern of each relation, counts).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
import numpy as np

PATTERN_CYCLE = ("symmetric", "inverse", "composition", "one_to_n", "random")
GROUP_SIZE = {"symmetric": 1, "inverse": 2, "composition": 3, "one_to_n": 1, "random": 1}
TRIPLES_PER_BASE = {"symmetric": 2, "inverse": 2, "composition": 3, "one_to_n": 1, "random": 1}


@dataclass
class SynthResult:
    """What :func:`generate` wrote."""

    out: Path
    counts: dict[str, int]
    num_entities_used: int
    seconds: float
    patterns: dict[str, list[str]]


class _Entities:
    """Power-law (+ uniform share) entity sampling and power-law deterministic entity functions."""

    def __init__(self, n: int, alpha: float, uniform: float, rng: np.random.Generator):
        self.n, self.alpha, self.uniform = n, alpha, uniform
        self.perm = rng.permutation(n).astype(np.int64)  # popularity rank -> entity id

    def _rank(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF of a density ~ x^-alpha on [1, n+1): ranks 0..n-1 for u in [0, 1)."""
        n, s = self.n, self.alpha
        if abs(s - 1.0) < 1e-9:
            x = np.exp(u * np.log(n + 1.0))
        else:
            top = (n + 1.0) ** (1.0 - s)
            x = ((top - 1.0) * u + 1.0) ** (1.0 / (1.0 - s))
        return np.minimum(x.astype(np.int64) - 1, n - 1).clip(0)

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        rank = self._rank(rng.random(m))
        uni = rng.random(m) < self.uniform
        rank[uni] = rng.integers(0, self.n, int(uni.sum()))
        return self.perm[rank]

    def function(self, x: np.ndarray, salt: int) -> np.ndarray:
        """A fixed pseudo-random function entity -> entity whose image is power-law distributed."""
        z = x.astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) % (1 << 64))
        with np.errstate(over="ignore"):  # splitmix64 finaliser, wrapping uint64 arithmetic
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return self.perm[self._rank(u)]


def _group_triples(pattern: str, rels: list[int], m: int, ents: _Entities, rng: np.random.Generator,
                   salt: int) -> np.ndarray:
    """``m`` base samples of one pattern group -> (k, 3) int64 triples (global relation ids)."""
    if pattern == "random":
        h, t = ents.sample(m, rng), ents.sample(m, rng)
        return np.stack([h, np.full(m, rels[0]), t], axis=1)
    if pattern == "symmetric":
        a, b = ents.sample(m, rng), ents.sample(m, rng)
        r = np.full(m, rels[0])
        return np.concatenate([np.stack([a, r, b], 1), np.stack([b, r, a], 1)])
    if pattern == "inverse":
        a, b = ents.sample(m, rng), ents.sample(m, rng)
        return np.concatenate([np.stack([a, np.full(m, rels[0]), b], 1), np.stack([b, np.full(m, rels[1]), a], 1)])
    if pattern == "composition":
        a = ents.sample(m, rng)
        b = ents.function(a, salt)
        c = ents.function(b, salt + 1)
        return np.concatenate([np.stack([a, np.full(m, rels[0]), b], 1), np.stack([b, np.full(m, rels[1]), c], 1),
                               np.stack([a, np.full(m, rels[2]), c], 1)])
    if pattern == "one_to_n":
        t = rng.integers(0, ents.n, m)
        h = ents.function(t, salt)
        return np.stack([h, np.full(m, rels[0]), t], axis=1)
    raise ValueError(f"unknown pattern {pattern!r}")


def _unique_rows(tri: np.ndarray, n: int, r0: int) -> np.ndarray:
    """Distinct triples (relations of one group are r0..r0+2, so the key fits in int64)."""
    key = ((tri[:, 1] - r0) * n + tri[:, 0]) * n + tri[:, 2]
    _, idx = np.unique(key, return_index=True)
    return tri[np.sort(idx)]


def _lines(tri: np.ndarray, ew: int, rw: int) -> bytes:
    """(k, 3) ids -> b"e<h>\\tr<r>\\te<t>\\n" lines with zero-padded fixed-width numbers."""
    k = len(tri)
    width = 1 + ew + 1 + 1 + rw + 1 + 1 + ew + 1
    buf = np.empty((k, width), dtype=np.uint8)
    pos = 0
    for col, w, prefix, end in ((0, ew, b"e", b"\t"), (1, rw, b"r", b"\t"), (2, ew, b"e", b"\n")):
        buf[:, pos] = prefix[0]
        x = tri[:, col].copy()
        for d in range(pos + w, pos, -1):  # one pass per digit position, vectorised over triples
            buf[:, d] = 48 + (x % 10)
            x //= 10
        buf[:, pos + w + 1] = end[0]
        pos += w + 2
    return buf.tobytes()


def _assign_patterns(num_relations: int, patterns: tuple[str, ...]) -> list[tuple[str, list[int]]]:
    groups, r, i = [], 0, 0
    while r < num_relations:
        p = patterns[i % len(patterns)]
        size = GROUP_SIZE[p]
        if r + size > num_relations:
            p, size = "random", 1
        groups.append((p, list(range(r, r + size))))
        r += size
        i += 1
    return groups


def generate(
    out: str | Path,
    num_entities: int,
    num_relations: int,
    num_triples: int,
    seed: int = 0,
    valid_fraction: float = 0.01,
    test_fraction: float = 0.01,
    alpha: float = 1.0,
    uniform_share: float = 0.3,
    patterns: tuple[str, ...] = PATTERN_CYCLE,
    progress: bool = False,
) -> SynthResult:
    """Write a synthetic KG with about ``num_triples`` distinct triples to the folder ``out``.

    Relation frequencies are Zipf-like (exponent 0.6); entity popularity as described in the module
    docstring. Deterministic for a given ``seed``. Memory peaks at the largest relation group
    (about 100 bytes per triple of that group), not at the whole graph.
    """
    if num_entities < 2 or num_relations < 1 or num_triples < 1:
        raise ValueError("need num_entities >= 2, num_relations >= 1, num_triples >= 1")
    if not 0 <= valid_fraction + test_fraction < 1:
        raise ValueError("valid_fraction + test_fraction must be in [0, 1)")
    unknown = set(patterns) - set(PATTERN_CYCLE)
    if unknown:
        raise ValueError(f"unknown patterns {sorted(unknown)}; choose from {PATTERN_CYCLE}")
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ents = _Entities(num_entities, alpha, uniform_share, rng)
    ew, rw = len(str(num_entities - 1)), len(str(num_relations - 1))
    groups = _assign_patterns(num_relations, tuple(patterns))
    rel_w = (np.arange(num_relations) + 1.0) ** -0.6
    rel_w = rel_w[rng.permutation(num_relations)]
    rel_w /= rel_w.sum()
    # per-group budgets by cumulative rounding, so they sum to exactly num_triples
    bounds = np.round(num_triples * np.cumsum([rel_w[rels].sum() for _, rels in groups])).astype(np.int64)
    bounds[-1] = num_triples
    budgets = np.diff(np.concatenate([[0], bounds]))
    seen = np.zeros(num_entities, dtype=bool)
    held: dict[str, list[np.ndarray]] = {"valid": [], "test": []}
    n_train, carry = 0, 0
    from tqdm.auto import tqdm

    with open(out / "train.txt.part", "wb") as ftrain:
        for gi, (pattern, rels) in enumerate(tqdm(groups, desc="synth", unit="group", disable=not progress)):
            # functional patterns saturate on small graphs: their shortfall moves to later groups
            budget = int(budgets[gi]) + carry
            if budget <= 0:
                carry = budget
                continue
            per = TRIPLES_PER_BASE[pattern]
            tri = np.zeros((0, 3), dtype=np.int64)
            want = budget
            for _ in range(8):  # top up after de-duplication (never overshoots by more than per - 1)
                m = max(1, int(np.ceil(want / per)))
                tri = _unique_rows(np.concatenate([tri, _group_triples(pattern, rels, m, ents, rng, salt=7 * gi + 1)]),
                                   num_entities, rels[0])
                want = budget - len(tri)
                if want <= 0:
                    break
            if len(tri) > budget:
                tri = tri[rng.choice(len(tri), budget, replace=False)]
            carry = budget - len(tri)
            tri = tri[rng.permutation(len(tri))]
            u = rng.random(len(tri))
            is_valid = u < valid_fraction
            is_test = (u >= valid_fraction) & (u < valid_fraction + test_fraction)
            train = tri[~(is_valid | is_test)]
            held["valid"].append(tri[is_valid])
            held["test"].append(tri[is_test])
            seen[train[:, 0]] = True
            seen[train[:, 2]] = True
            ftrain.write(_lines(train, ew, rw))
            n_train += len(train)
        counts = {}
        for split in ("valid", "test"):
            tri = np.concatenate(held[split]) if held[split] else np.zeros((0, 3), np.int64)
            ok = seen[tri[:, 0]] & seen[tri[:, 2]]
            moved = tri[~ok]  # entities unseen in train: the triple goes to train instead
            ftrain.write(_lines(moved, ew, rw))
            n_train += len(moved)
            seen[moved[:, 0]] = True
            seen[moved[:, 2]] = True
            tri = tri[ok][rng.permutation(int(ok.sum()))]
            (out / f"{split}.txt").write_bytes(_lines(tri, ew, rw))
            counts[split] = int(len(tri))
    (out / "train.txt.part").replace(out / "train.txt")
    counts = {"train": n_train, **counts}
    seconds = time.perf_counter() - t0
    pattern_map: dict[str, list[str]] = {}
    for pattern, rels in groups:
        pattern_map.setdefault(pattern, []).append(",".join(f"r{r:0{rw}d}" for r in rels))
    info = {
        "generator": "kgcomplete.data.synth",
        "params": {"num_entities": num_entities, "num_relations": num_relations, "num_triples": num_triples,
                   "seed": seed, "valid_fraction": valid_fraction, "test_fraction": test_fraction, "alpha": alpha,
                   "uniform_share": uniform_share, "patterns": list(patterns)},
        "patterns": pattern_map,
        "counts": counts,
        "num_entities_used": int(seen.sum()),
        "seconds": round(seconds, 2),
    }
    (out / "synth.json").write_text(json.dumps(info, indent=1))
    return SynthResult(out, counts, int(seen.sum()), seconds, pattern_map)


__all__ = ["PATTERN_CYCLE", "SynthResult", "generate"]
