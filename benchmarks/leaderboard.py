"""Accuracy of the defaults and of ``--config published`` on the mid-size benchmarks, beside the
published figures, within stated time budgets.

    python benchmarks/leaderboard.py [--datasets wn18rr codex-s codex-m] [--configs defaults published]
                                     [--threads 2] [--budget-scale 1.0] [--out benchmarks/results/leaderboard]

Each entry is one ``kgc train --dataset ../shared/datasets/D [--config published] --time-budget B``
in its own process, one after the other (budgets: wn18rr 60 min, codex-s 30 min, codex-m 90 min,
times ``--budget-scale``), and reports the filtered test MRR / Hits@1 / Hits@10 of the weights it
kept, the training time, the epochs, why it stopped and the torch threads. The published figures
come from ``../shared/datasets/README.md`` (its table of published results). Writes OUT.json and
OUT.md (the markdown table, which README's accuracy section reproduces; entries of earlier invocations
for other datasets/configs are kept, so the datasets can be measured one at a time) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
#: wall-clock budget per dataset in minutes (the accuracy bars of the issue that asked for this table)
BUDGET_MIN = {"wn18rr": 60, "codex-s": 30, "codex-m": 90}


def published(dataset: str) -> list[str]:
    """``model MRR (source)`` rows of the shared README's published-results table for ``dataset``."""
    readme = SHARED / "README.md"
    if not readme.exists():
        return []
    rows = []
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0] == dataset and re.fullmatch(r"\.\d+", cells[2] or ""):
            rows.append(f"{cells[1]} {cells[2]} ({cells[5]})")
    return rows


def train_cmd(dataset: str, run: Path, budget_min: float, threads: int, sets: tuple[str, ...] = ()) -> list[str]:
    """``kgc train`` of the shared dataset ``dataset`` into ``run`` within ``budget_min`` minutes
    (metrics.json printed on stdout), with ``--set`` overrides."""
    cmd = [sys.executable, "-m", "kgcomplete", "train", "--dataset", str(SHARED / dataset), "--out", str(run),
           "--time-budget", f"{budget_min * 60:.0f}s", "--threads", str(threads), "--no-progress", "--json"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_entry(dataset: str, config: str, threads: int, budget_min: float, out_dir: Path) -> dict:
    run = out_dir / f"{dataset}-{config}"
    cmd = train_cmd(dataset, run, budget_min, threads)
    if config == "published":
        cmd += ["--config", "published"]
    elif dataset == "wn18rr":
        cmd += ["--drop-unknown"]  # the defaults refuse test entities unseen in train; published keeps them
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if res.returncode != 0:
        return {"dataset": dataset, "config": config, "error": (res.stderr.strip().splitlines() or ["?"])[-1],
                "wall_s": wall}
    m = json.loads(res.stdout)
    test = m.get("test", {})
    return {"dataset": dataset, "config": config, "mrr": test.get("mrr"), "hits@1": test.get("hits@1"),
            "hits@10": test.get("hits@10"), "train_time_s": m.get("train_time_s"), "wall_s": wall,
            "epochs": m.get("epochs"), "best_epoch": m.get("best_epoch"), "stopped": m.get("stopped"),
            "threads": m.get("threads"), "budget_min": budget_min, "run": str(run)}


def table(rows: list[dict]) -> str:
    lines = ["| dataset | config | test MRR | Hits@1 | Hits@10 | training | epochs (best) | threads | budget | "
             "published |", "|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        pub = "; ".join(published(r["dataset"]))
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['config']} | error: {r['error']} | | | | | | | {pub} |")
            continue
        lines.append(f"| {r['dataset']} | {r['config']} | {r['mrr']:.3f} | {r['hits@1']:.3f} | {r['hits@10']:.3f} | "
                     f"{r['train_time_s'] / 60:.1f} min | {r['epochs']} ({r['best_epoch']}) | {r['threads']} | "
                     f"{r['budget_min']:g} min | {pub} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(BUDGET_MIN))
    ap.add_argument("--configs", nargs="+", default=["defaults", "published"], choices=["defaults", "published"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (e.g. 0.1 for a quick look)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "leaderboard"))
    ap.add_argument("--runs", default=None, help="folder for the run folders (default: OUT-runs)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED}: the benchmark copies are not there")
    out = Path(args.out)
    runs = Path(args.runs or f"{out}-runs")
    runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        for config in args.configs:
            budget = BUDGET_MIN.get(dataset, 30) * args.budget_scale
            print(f"{dataset} / {config}: up to {budget:g} min ...", file=sys.stderr, flush=True)
            rows.append(run_entry(dataset, config, args.threads, budget, runs))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    # entries measured in earlier invocations (other datasets or configs) stay in the table
    done = {(r["dataset"], r["config"]) for r in rows}
    old = out.with_suffix(".json")
    if old.exists():
        rows = [r for r in json.loads(old.read_text()) if (r["dataset"], r["config"]) not in done] + rows
        rows.sort(key=lambda r: (list(BUDGET_MIN).index(r["dataset"]) if r["dataset"] in BUDGET_MIN else 99,
                                 r["config"]))
    text = table(rows)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
