"""KGT5 (and KGT5-context) accuracy and decoding time on a benchmark, beside a ComplEx run.

Usage::

    python benchmarks/kgt5_accuracy.py --out /tmp/umls-kgt5                   # umls, tiny, 14 CPU-minutes
    python benchmarks/kgt5_accuracy.py --out /tmp/umls-kgt5 --skip-train --complex /tmp/umls-complex
    python benchmarks/kgt5_accuracy.py --dataset ../shared/datasets/wn18rr --out /tmp/wn18rr-kgt5-context \\
        --cpu-budget 3600 --threads 2 --set kgt5.context=true --set kgt5.descriptions=true \\
        --methods beam50 --complex RUN_OF_kgc_train_--dataset_wn18rr_--drop-unknown

Trains ``kgt5.preset`` (default ``tiny``) with batch 128 on the dataset (a registered name or a
folder; a folder's valid/test triples with entities unseen in train are dropped, as ``kgc train
--drop-unknown`` does, so the ensemble's ComplEx run has the same entities), stopped by a process
CPU-time budget (``--cpu-budget``; the cores here are shared, so wall time varies) or a wall-clock one
(``--budget``). ``--set kgt5.KEY=VALUE`` as on the command line (context, descriptions, max_length...).

Prints (and writes ``OUT/benchmark.json``) the test filtered MRR / Hits@k of each decoding in
``--methods`` (constrained beam k = 10 / 50, exhaustive = exact, sampling N = 50 unconstrained - the
paper's way - and constrained, greedy), and with ``--complex RUN`` ComplEx alone and the KGT5 +
ComplEx ensemble under each of ``--rules`` (weight tuned on valid; KGT5 decodes valid and test once
for all of them); then the decoding time per query of the run's own decoding
(beam 50) and of ComplEx (scoring every entity), wall and process CPU, on ``--time-queries`` test
triples in both directions. Not a CI test (tens of minutes of CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kgcomplete.config import build_config, parse_override  # noqa: E402
from kgcomplete.data.registry import load_dataset  # noqa: E402
from kgcomplete.seq2seq.run import KGT5Run, train_kgt5  # noqa: E402

KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")
METHODS = {"beam10": {"method": "beam", "beam_size": 10, "constrained": True},
           "beam50": {"method": "beam", "beam_size": 50, "constrained": True},
           "exhaustive": {"method": "exhaustive"},
           "sample50": {"method": "sample", "num_samples": 50, "constrained": False},
           "sample50_constrained": {"method": "sample", "num_samples": 50, "constrained": True},
           "greedy": {"method": "greedy", "constrained": False}}


def row(name: str, m: dict) -> str:
    return f"| {name:<22} | " + " | ".join(f"{m[k]:.3f}" if k != "mr" else f"{m[k]:.1f}" for k in KEYS) + " |"


def decoding_time(score, triples: np.ndarray) -> dict:
    """Wall and process CPU ms per query of ``score(anchor, r, head=...)`` over both directions."""
    wall, cpu = time.perf_counter(), time.process_time()
    for head in (False, True):
        anchor = triples[:, 2] if head else triples[:, 0]
        score(torch.as_tensor(anchor), torch.as_tensor(triples[:, 1]), head=head)
    n = 2 * len(triples)
    return {"queries": n, "wall_ms": (time.perf_counter() - wall) / n * 1e3,
            "cpu_ms": (time.process_time() - cpu) / n * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="umls", help="registered name or folder (default: umls)")
    ap.add_argument("--out", default="/tmp/umls-kgt5")
    ap.add_argument("--budget", type=float, default=None, help="training wall-clock budget (s)")
    ap.add_argument("--cpu-budget", type=float, default=None,
                    help="training CPU-time budget (s; default 840, 14 min of one core, unless --budget is given)")
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=128)
    # one intra-op thread by default: T5-tiny's ops are small, and on shared cores a second OpenMP thread
    # that gets descheduled stalls every op (measured: decoding 30x slower with 2 threads under load)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config key, e.g. kgt5.context=true (repeatable)")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--complex", default=None, help="trained ComplEx run folder for the ensemble")
    ap.add_argument("--rules", nargs="+", choices=["product", "paper"], default=["product", "paper"],
                    help="ensemble rules evaluated (weight tuned on valid for each; the first is the row 'ensemble')")
    ap.add_argument("--time-queries", type=int, default=200, help="test triples timed (both directions)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.cpu_budget is None and args.budget is None:
        args.cpu_budget = 840.0
    folder = Path(args.dataset).expanduser().is_dir()
    ds = load_dataset(args.dataset, unknown="drop" if folder else "error")
    out = Path(args.out)
    results: dict = {"dataset": args.dataset, "threads": args.threads, "sets": args.sets}
    if not args.skip_train:
        overrides = {"data.source": args.dataset, "data.unknown": "drop" if folder else "error",
                     "training.epochs": args.epochs, "training.batch_size": args.batch_size, "training.eval_every": 0,
                     "training.threads": args.threads, "training.progress": False, "training.seed": 0,
                     "kgt5.preset": "tiny", "kgt5.time_budget_s": args.budget, "kgt5.cpu_budget_s": args.cpu_budget}
        overrides.update(parse_override(s) for s in args.sets)  # --set wins, as on the command line
        cfg = build_config("kgt5", None, {k: v for k, v in overrides.items() if v is not None})
        t0 = time.time()
        run = train_kgt5(ds, out, cfg)  # keeps its valid/test decodings for the rows and the ensemble below
        results["wall_s_train_and_eval"] = time.time() - t0
    else:
        run = KGT5Run.load(out, dataset=ds)
    metrics = json.loads((out / "metrics.json").read_text())
    results.update(train_time_s=metrics["train_time_s"], train_cpu_s=metrics.get("train_cpu_s"),
                   epochs=metrics["epochs"], parameters=metrics.get("parameters"))
    results["metrics_json_test"] = metrics["test"]  # the run's configured decoding (beam 50, constrained)
    results["reverse_reading"] = metrics.get("reverse_reading")  # kgt5.decoding.reverse_weight: auto
    # the figure to choose recipes by (the test rows below choose nothing): the run's configured decoding
    results["valid"] = run.evaluate("valid")
    for name in args.methods:
        results[name] = run.evaluate("test", **METHODS[name])
    rng = np.random.default_rng(0)
    test = ds.splits["test"]
    timed = test[rng.choice(len(test), min(args.time_queries, len(test)), replace=False)]
    # a scorer that keeps no decodings: the run's own has decoded the test queries already
    results["decoding_time"] = {"kgt5_beam50": decoding_time(run.scorer(memo_queries=0).topk, timed)}
    if args.complex:
        from kgcomplete.api import load_run
        from kgcomplete.seq2seq.ensemble import EnsembleRun

        kge = load_run(args.complex)
        results["complex"] = kge.evaluate("test")
        with torch.no_grad():
            results["decoding_time"]["complex"] = decoding_time(kge.score_queries, timed)
        for rule in args.rules:  # the first is the row "ensemble"
            ens = EnsembleRun(run, kge, rule=rule)
            name = "ensemble" if rule == args.rules[0] else f"ensemble_{rule}"
            results[name] = ens.evaluate("test")
            results[f"{name}_weight"] = ens.weight
            results[f"{name}_valid_grid"] = ens.tuning
    k = run.config_dict()["kgt5"]
    kind = "KGT5-context" if k["context"] else "KGT5"
    results["input"] = f"{kind}{' + descriptions' if k['descriptions'] else ''}, {k['preset']}, max_length {k['max_length']}"
    print(f"{args.dataset}: {results['input']}: trained {results['epochs']} epochs in {results['train_time_s']:.0f}s "
          f"wall ({results['train_cpu_s'] or 0:.0f}s CPU) on {args.threads} threads")
    print(f"valid, filtered, the run's decoding: MRR {results['valid']['mrr']:.3f}, Hits@1 {results['valid']['hits@1']:.3f}")
    if results["reverse_reading"]:
        grid = ", ".join(f"{m:.4f} ({w})" for w, m in results["reverse_reading"]["valid_mrr"].items())
        print(f"both readings: kgt5.decoding.reverse_weight={results['reverse_reading']['chosen']:g} chosen on valid; "
              f"valid MRR (w): {grid}")
    print(f"| test, filtered         | " + " | ".join(KEYS) + " |")
    print("|" + "---|" * (len(KEYS) + 1))
    ensembles = ["ensemble"] + [f"ensemble_{rule}" for rule in args.rules[1:]]
    for name in (*args.methods, "complex", *ensembles):
        if name in results:
            print(row(name, results[name]))
    for name, rule in zip(ensembles, args.rules):
        if f"{name}_weight" in results:
            grid = ", ".join(f"{m:.4f} ({w:g})" for w, m in results[f"{name}_valid_grid"].items())
            print(f"{name} ({rule} rule): weight tuned on valid {results[f'{name}_weight']:g}; valid MRR (w): {grid}")
    for name, t in results["decoding_time"].items():
        print(f"decoding time per query, {name}: {t['wall_ms']:.3g} ms wall, {t['cpu_ms']:.3g} ms CPU "
              f"({t['queries']} test queries)")
    slim = {k: ({kk: v[kk] for kk in KEYS} if isinstance(v, dict) and "mrr" in v else v) for k, v in results.items()}
    (out / "benchmark.json").write_text(json.dumps(slim, indent=2))


if __name__ == "__main__":
    main()
