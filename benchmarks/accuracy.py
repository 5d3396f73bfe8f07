"""Train models with their default settings and print filtered test metrics (the README table).

    python benchmarks/accuracy.py                      # umls/complex, nations/complex, umls/rotate
    python benchmarks/accuracy.py --runs umls:distmult nations:conve --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

DEFAULT_RUNS = ["umls:complex", "nations:complex", "umls:rotate"]
PUBLISHED = {"umls": "ConvE .94", "nations": "ConvE .82"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=DEFAULT_RUNS, help="dataset:model pairs")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    import kgcomplete as kgc

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for spec in args.runs:
        dataset, model = spec.split(":")
        for seed in args.seeds:
            out = Path(tempfile.mkdtemp()) / "run"
            t0 = time.perf_counter()
            kgc.train(dataset, model=model, out=out, seed=seed, progress=False)
            wall = time.perf_counter() - t0
            m = json.loads((out / "metrics.json").read_text())
            rows.append((dataset, model, seed, m, wall))
            print(f"{dataset}/{model} seed {seed}: MRR {m['test']['mrr']:.3f} ({wall:.0f}s)", flush=True)
    print(f"\ntorch threads: {torch.get_num_threads()}\n")
    print("| dataset | model | seed | epochs | train time (s) | test MRR | Hits@1 | Hits@3 | Hits@10 | published |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for dataset, model, seed, m, wall in rows:
        t = m["test"]
        print(f"| {dataset} | {model} | {seed} | {m['epochs']} | {m['train_time_s']:.1f} | {t['mrr']:.3f} | "
              f"{t['hits@1']:.3f} | {t['hits@3']:.3f} | {t['hits@10']:.3f} | {PUBLISHED.get(dataset, '')} |")


if __name__ == "__main__":
    main()
