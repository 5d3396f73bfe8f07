"""Micro-benchmarks behind figures quoted in docs/scale.md and the session notes.

    python benchmarks/bench_kernels.py [--threads 2] [--entities 1000000]

Rows:
- ranking counts of a 1024 x 4096 score block: ``rank_counts`` (sign sums) vs summing comparison masks;
- one streaming-evaluation block of TransE-L2 (1024 queries x 4096 entities, d=64, float16 table):
  ``ranking_scores`` (2 q.c - ||c||^2) vs ``score_queries`` (-||q - c||);
- the server's autocomplete index (``PrefixIndex``) over ``--entities`` synthetic names of 7 words;
- ``import kgcomplete.cli.main`` in a fresh interpreter (what ``kgc --help`` pays before any work).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def per_call_ms(fn, n: int = 30) -> float:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--entities", type=int, default=1_000_000, help="autocomplete index size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from kgcomplete.evaluation.evaluator import rank_counts
    from kgcomplete.models import build_model
    from kgcomplete.serving.engine import PrefixIndex

    rows = []
    torch.manual_seed(0)
    sc = torch.randn(1024, 4096)
    t = sc[:, 0].clone()
    rows.append(("rank counts, 1024 x 4096", "rank_counts (sign sums)", per_call_ms(lambda: rank_counts(sc, t))))
    tt = t.unsqueeze(1)
    rows.append(("", "(scores > t).sum(1), (scores == t).sum(1)",
                 per_call_ms(lambda: ((sc > tt).sum(1), (sc == tt).sum(1)))))
    m = build_model("transe_l2", 200_000, 10, dim=64, storage_dtype="float16").eval()
    a, r, c = torch.randint(0, 200_000, (1024,)), torch.randint(0, 10, (1024,)), torch.arange(4096, 8192)
    with torch.no_grad():
        rows.append(("TransE-L2 block, 1024 x 4096, d=64", "ranking_scores", per_call_ms(lambda: m.ranking_scores(a, r, c))))
        rows.append(("", "score_queries", per_call_ms(lambda: m.score_queries(a, r, c))))
    n = args.entities
    labels = np.array([f"Q{i}" for i in range(n)], dtype=object)
    names = np.array([f"entity number {i} of the big graph" for i in range(n)], dtype=object)
    t0 = time.perf_counter()
    PrefixIndex(labels, names)
    rows.append((f"autocomplete index, {n:,} names", "PrefixIndex build", (time.perf_counter() - t0) * 1e3))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import kgcomplete.cli.main"], check=True,
                   cwd=Path(__file__).resolve().parents[1] / "src")
    rows.append(("CLI start", "python -c 'import kgcomplete.cli.main'", (time.perf_counter() - t0) * 1e3))
    print(f"\ntorch threads {args.threads}\n")
    print("| what | how | ms |")
    print("|---|---|---:|")
    for what, how, ms in rows:
        print(f"| {what} | {how} | {ms:,.1f} |")


if __name__ == "__main__":
    main()
