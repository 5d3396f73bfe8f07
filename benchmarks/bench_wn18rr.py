"""ComplEx with negative sampling on WN18RR: kgcomplete vs PyKEEN 1.11, same data and hyperparameters.

Reports positive triples/s, time per epoch, filtered-evaluation time, peak memory (RSS) and test
filtered MRR. Each system runs in its own subprocess so peak RSS is its own.

    pip install "pykeen==1.11.*"      # benchmark only; keep your torch (add -c constraints if needed)
    python benchmarks/bench_wn18rr.py --epochs 10 [--data ../shared/datasets/wn18rr] [--threads 2]

Shared hyperparameters: ComplEx, dim (complex rank) 128, batch 1024, 256 negatives per positive
(kgcomplete shares them across the batch, PyKEEN draws them per positive: same number of scored
negatives), tail and head corruption, softplus / log-sigmoid loss, Adam lr 1e-3... (see HPARAMS).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HPARAMS = dict(dim=128, batch_size=1024, num_negatives=256, lr=0.01)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "wn18rr"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_kgcomplete(data: str, epochs: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import kgcomplete as kgc
    from kgcomplete.data import load_dataset

    ds = load_dataset(data, unknown="keep")  # the standard protocol ranks against all 40,943 entities
    import tempfile

    out = Path(tempfile.mkdtemp()) / "run"
    t0 = time.perf_counter()
    run = kgc.train(
        ds, model="complex", out=out, epochs=epochs, eval_every=0, progress=False, evaluate_test=False,
        mode="negatives", loss="logsigmoid", margin=0.0, corrupt="both", optimizer="adam", regularizer="none",
        dim=HPARAMS["dim"], batch_size=HPARAMS["batch_size"], num_negatives=HPARAMS["num_negatives"],
        lr=HPARAMS["lr"], init_scale=0.1,
    )
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = run.evaluate("test")
    eval_s = time.perf_counter() - t0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    epoch_s = sum(r["time_s"] for r in log) / len(log)
    return {"system": "kgcomplete", "epoch_s": epoch_s, "triples_per_s": len(ds.train) / epoch_s,
            "train_s": train_s, "eval_s": eval_s, "mrr": m["mrr"], "hits@10": m["hits@10"], "peak_rss_mb": peak_rss_mb()}


def run_pykeen(data: str, epochs: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import ComplEx
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory

    from kgcomplete.data import load_dataset

    ds = load_dataset(data, unknown="keep")
    e2id = {str(x): i for i, x in enumerate(ds.entities.labels)}
    r2id = {str(x): i for i, x in enumerate(ds.relations.labels)}
    mk = lambda split: TriplesFactory(torch.as_tensor(ds.splits[split]), entity_to_id=e2id, relation_to_id=r2id)  # noqa: E731
    train, test = mk("train"), mk("test")
    torch.manual_seed(0)
    model = ComplEx(triples_factory=train, embedding_dim=HPARAMS["dim"], loss="softplus", random_seed=0)
    opt = torch.optim.Adam(model.get_grad_params(), lr=HPARAMS["lr"])
    loop = SLCWATrainingLoop(model=model, triples_factory=train, optimizer=opt,
                             negative_sampler="basic",
                             negative_sampler_kwargs={"num_negs_per_pos": HPARAMS["num_negatives"], "corruption_scheme": ("head", "tail")})
    t0 = time.perf_counter()
    loop.train(triples_factory=train, num_epochs=epochs, batch_size=HPARAMS["batch_size"], use_tqdm=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = RankBasedEvaluator(filtered=True).evaluate(
        model, test.mapped_triples, additional_filter_triples=[train.mapped_triples, mk("valid").mapped_triples],
        use_tqdm=False, batch_size=256)
    eval_s = time.perf_counter() - t0
    mrr = float(res.get_metric("both.realistic.inverse_harmonic_mean_rank"))
    h10 = float(res.get_metric("both.realistic.hits_at_10"))
    epoch_s = train_s / epochs
    return {"system": "pykeen " + __import__("pykeen").get_version(), "epoch_s": epoch_s,
            "triples_per_s": len(ds.train) / epoch_s, "train_s": train_s, "eval_s": eval_s, "mrr": mrr,
            "hits@10": h10, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per system (0 = torch default)")
    ap.add_argument("--systems", default="kgcomplete,pykeen")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        fn = run_kgcomplete if args.child == "kgcomplete" else run_pykeen
        print(json.dumps(fn(args.data, args.epochs)))
        return
    rows = []
    for system in args.systems.split(","):
        cmd = [sys.executable, __file__, "--child", system, "--data", args.data, "--epochs", str(args.epochs),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode != 0:
            print(f"{system} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nWN18RR, ComplEx d={HPARAMS['dim']}, batch {HPARAMS['batch_size']}, {HPARAMS['num_negatives']} negatives, "
          f"{args.epochs} epochs, torch threads={args.threads or 'default'}\n")
    print("| system | positive triples/s | time/epoch (s) | filtered eval (s) | peak RSS (MB) | test MRR | Hits@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['system']} | {r['triples_per_s']:,.0f} | {r['epoch_s']:.2f} | {r['eval_s']:.1f} | "
              f"{r['peak_rss_mb']:,.0f} | {r['mrr']:.3f} | {r['hits@10']:.3f} |")
    if len(rows) == 2:
        print(f"\nthroughput ratio kgcomplete / pykeen: {rows[0]['triples_per_s'] / rows[1]['triples_per_s']:.1f}x")


if __name__ == "__main__":
    main()
