"""``kgt5.decoding.reverse_weight`` on a trained KGT5 run: the weight chosen on the validation split,
and the test MRR at 0 and at that weight.

The best ``reverse_candidates`` (default 50: the whole beam) answers ``c`` of each query's constrained beam are ranked
by ``log p(c | query) + w log p(anchor | c's query the other way)`` (decoding.py ``rerank``); ``auto``
chooses ``w`` as :func:`kgcomplete.seq2seq.run.fit_reverse_weight` does when training ends, so this
is what ``--set kgt5.decoding.reverse_weight=auto`` would have given the run. Nothing is written to
the run folder.

    python benchmarks/kgt5_reverse_reading.py RUN [RUN ...] [--threads 2] [--candidates 10] [--beam 135] [--widen 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def widths(run, sc, split: str = "test") -> str:
    """The beam widths of the split's distinct queries (both sides) and their training answers."""
    triples = np.asarray(run.dataset.splits[split], dtype=np.int64)
    known, wide = [], []
    for head, anchor_col in ((False, 0), (True, 2)):
        q = np.unique(triples[:, [anchor_col, 1]], axis=0)
        known.append(run.training_answer_counts(q[:, 0], q[:, 1], head))
        wide.append(sc._width() + sc.extra_hypotheses(torch.as_tensor(q[:, 0]), torch.as_tensor(q[:, 1]), head))
    known, wide = np.concatenate(known), np.concatenate(wide)
    return (f"{split}: {len(known)} distinct queries; training answers median {np.median(known):g}, "
            f">= 25 for {(known >= 25).mean():.0%}, 99th percentile {np.percentile(known, 99):g}; "
            f"beam width mean {wide.mean():.1f} ({wide.min()}-{wide.max()})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=50, help="kgt5.decoding.reverse_candidates")
    ap.add_argument("--beam", type=int, default=None, help="kgt5.decoding.beam_size (default: the run's)")
    ap.add_argument("--widen", type=int, default=None, help="kgt5.decoding.widen_for_known (default: the run's)")
    args = ap.parse_args(argv)
    from kgcomplete.seq2seq.run import REVERSE_WEIGHT_GRID, KGT5Run, fit_reverse_weight

    torch.set_num_threads(args.threads)
    grid = " / ".join(f"{w:g}" for w in REVERSE_WEIGHT_GRID)
    print(f"| run | valid MRR at w = {grid} | chosen | test MRR at 0 | at chosen | Hits@1 at 0 → chosen | time |")
    print("|---|---|---:|---:|---:|---|---:|")
    for path in args.runs:
        t0 = time.perf_counter()
        run = KGT5Run.load(path)
        sc = run._scorer = run.scorer(reverse_weight=0, reverse_candidates=args.candidates,
                                          **({"beam_size": args.beam} if args.beam else {}),
                                          **({"widen_for_known": args.widen} if args.widen is not None else {}))
        fit = fit_reverse_weight(run)
        chosen, at = fit["chosen"], {}
        for w in (0.0, chosen):  # the run's scorer keeps the test decodings and their other readings
            sc.reverse_weight = w
            at[w] = run.evaluate("test")
        print(f"<!-- {path}: {widths(run, sc)} -->")
        valid = " / ".join(f"{m:.4f}" for m in fit["valid_mrr"].values())
        print(f"| {path} | {valid} | {chosen:g} | {at[0.0]['mrr']:.4f} | {at[chosen]['mrr']:.4f} | "
              f"{at[0.0]['hits@1']:.3f} → {at[chosen]['hits@1']:.3f} | {time.perf_counter() - t0:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
