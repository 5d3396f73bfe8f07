"""The validation runs behind the fitted defaults (``training/autoconfig.py``): each variant is the
defaults plus a few ``--set`` overrides, trained within the dataset's leaderboard budget, and judged
by its best **validation** MRR (the test split chooses nothing).

    python benchmarks/defaults_grid.py --dataset codex-s [--only baseline n3-0.01 ...] [--threads 2]
                                       [--budget-scale 1.0] [--out /tmp/defaults-grid-<time>]

Prints one row per variant: best valid MRR, the epoch it came at, the epochs run, why training stopped
and the training time (from the run's log.jsonl and metrics.json). The codex-s variants pin the
values they compare (N3 weight, schedule) and float32 products, so they mean the same after the
defaults change (``baseline`` is the defaults as they were before N3 0.01 and the plateau
schedule); the rest (dim, batch, cadence) is fitted to the machine as in any run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from leaderboard import BUDGET_MIN, SHARED, train_cmd  # noqa: E402

F32 = ["training.autocast=none"]
OLD = ["training.reg_weight=0.005", "training.lr_schedule=none"] + F32
N3 = ["training.reg_weight=0.01", "training.lr_schedule=none"] + F32
#: the codex-s defaults since the plateau schedule (N3 0.01, halving), pinned
PLATEAU = ["training.lr_schedule=plateau", "training.lr_decay=0.5"] + F32
CUR = ["training.reg_weight=0.01"] + PLATEAU
#: dataset -> variant -> ``--set`` overrides
GRIDS = {
    "codex-s": {
        "baseline": OLD,
        "n3-0.01": N3,
        "n3-0.01+rp-0.125": N3 + ["training.relation_prediction=0.125"],
        "n3-0.01+dim-1024": N3 + ["model.dim=1024"],
        "n3-0.01+plateau-0.5": CUR,
        # ways to use the budget the defaults leave (they stop on patience at about 7 of 30 minutes)
        "cur+label-smoothing-0.1": CUR + ["training.label_smoothing=0.1"],
        "cur+validate-every-2": CUR + ["training.eval_every=2", "training.patience=10"],
        "cur+n3-0.02": PLATEAU + ["training.reg_weight=0.02"],
        "cur+rp-0.05": CUR + ["training.relation_prediction=0.05"],
        "cur+batch-128": CUR + ["training.batch_size=128"],
        "cur+dim-1024+n3-0.03": PLATEAU + ["training.reg_weight=0.03", "model.dim=1024"],
        "cur+batch-512": CUR + ["training.batch_size=512"],
        "cur+lr-0.05": CUR + ["training.lr=0.05"],
        "cur+n3-0.005": PLATEAU + ["training.reg_weight=0.005"],
        "cur+lr-0.2": CUR + ["training.lr=0.2"],
        "cur+dim-256": CUR + ["model.dim=256"],
        # the published best run's learning rate (ssl-relation-prediction, CoDEx-S: Adagrad 1e-2, 500 epochs)
        "n3-0.01+plateau-0.5+lr-0.01": CUR + ["training.lr=0.01"],
    },
    "codex-m": {
        "defaults": [],
        "batch-256": ["training.batch_size=256"],  # 4x the steps per epoch, 1.3-1.5x the epoch time
        "float32": F32,
        # the published best run's auxiliary objective (ssl-relation-prediction, CoDEx-M: w_rel 0.125)
        "rp-0.125": ["training.relation_prediction=0.125"],
    },
}


def run_variant(dataset: str, name: str, sets: list[str], threads: int, budget_min: float, out: Path) -> dict:
    folder = out / f"{dataset}-{name}"
    res = subprocess.run(train_cmd(dataset, folder, budget_min, threads, tuple(sets)), capture_output=True, text=True)
    if res.returncode != 0:
        return {"variant": name, "error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    metrics = json.loads(res.stdout)
    valid = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    valid = [r for r in valid if "valid_mrr" in r]
    best = max(valid, key=lambda r: r["valid_mrr"]) if valid else {}
    return {"variant": name, "sets": " ".join(sets) or "(none)", "valid_mrr": best.get("valid_mrr"),
            "best_epoch": best.get("epoch"), "epochs": metrics.get("epochs"), "stopped": metrics.get("stopped"),
            "train_min": (metrics.get("train_time_s") or 0) / 60}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(GRIDS), required=True)
    ap.add_argument("--only", nargs="+", help="variants to run (default: all of the dataset's grid)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-scale", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path(f"/tmp/defaults-grid-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = ap.parse_args(argv)
    if not (SHARED / args.dataset).is_dir():
        sys.exit(f"no {SHARED / args.dataset}: the benchmark datasets live in ../shared/datasets")
    grid = GRIDS[args.dataset]
    names = args.only or list(grid)
    unknown = [n for n in names if n not in grid]
    if unknown:
        ap.error(f"unknown variant(s) {unknown} for {args.dataset}; known: {list(grid)}")
    budget = BUDGET_MIN[args.dataset] * args.budget_scale
    print(f"| {args.dataset} variant | overrides | best valid MRR | at epoch | epochs | stopped | training |")
    print("|---|---|---:|---:|---:|---|---:|")
    for name in names:
        r = run_variant(args.dataset, name, grid[name], args.threads, budget, args.out)
        if "error" in r:
            print(f"| {name} | error: {r['error']} | | | | | |", flush=True)
            continue
        mrr = "no validation" if r["valid_mrr"] is None else f"{r['valid_mrr']:.4f}"
        print(f"| {name} | {r['sets']} | {mrr} | {r['best_epoch']} | {r['epochs']} | {r['stopped']} | "
              f"{r['train_min']:.1f} min |", flush=True)


if __name__ == "__main__":
    main()
