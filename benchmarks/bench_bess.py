"""BESS throughput per exchange variant and worker count, and the umls accuracy check.

    PYTHONPATH=src python benchmarks/bench_bess.py [--workers 1 2 4] [--entities 20000] [--triples 200000]
        [--dim 64] [--batch 1024] [--negatives 256] [--steps 20] [--device cpu|cuda] [--json out.json]
    PYTHONPATH=src python benchmarks/bench_bess.py --umls [--epochs 50]
    # issue 6's per-worker figure: TransE d=128 on the 1M-entity synthetic graph
    PYTHONPATH=src python benchmarks/bench_bess.py --data data/synth1m --model transe --optimizer rowadagrad \
        --dim 128 --workers 1 2 --exchanges embeddings scores --steps 100

Throughput: a random KG, ComplEx, shared negatives. The global batch (``--batch`` positives per
step, ``P = batch / n^2`` per block) and the negatives per worker (``--negatives``, ``k = negatives / n``
per shard) are the same for every ``n``. Each configuration runs ``n`` worker processes (gloo on
CPU, NCCL on CUDA); after 3 warm-up steps, ``--steps`` steps are timed. Reported per step (mean over
workers, ms): sampling, gather (local lookups), exchange (collectives, forward + backward),
compute (scores, loss, backward), update (gradient sync bookkeeping + optimizer), and positive
triples per second for the whole group.

``--umls``: trains the same configuration with the BESS code path on 1 and on 2 workers and
prints the filtered test MRR of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kgcomplete.config import build_config  # noqa: E402
from kgcomplete.data.dataset import Dataset  # noqa: E402
from kgcomplete.distributed.checkpoint import init_shard_model  # noqa: E402
from kgcomplete.distributed.exchange import Comm  # noqa: E402
from kgcomplete.distributed.launch import free_port, init_group, spawn  # noqa: E402
from kgcomplete.distributed.sharding import Sharding  # noqa: E402
from kgcomplete.distributed.trainer import PHASES, BessTrainer, DistConfig  # noqa: E402


def _dataset(E, N, R=50, seed=0):
    rng = np.random.default_rng(seed)
    tr = np.stack([rng.integers(0, E, N), rng.integers(0, R, N), rng.integers(0, E, N)], 1)
    return Dataset.from_arrays(tr, num_entities=E, num_relations=R)


def _bench_worker(rank, n, port, args, exchange, out):
    torch.set_num_threads(1 if args.device == "cpu" else 4)
    device = torch.device("cpu") if args.device == "cpu" else torch.device("cuda", rank)
    if n > 1:
        init_group("nccl" if device.type == "cuda" else "gloo", rank, n, "127.0.0.1", port, 300, device)
    if args.data:
        from kgcomplete.data.compact import load_folder

        ds = load_folder(args.data, unknown="keep")  # memory-mapped compact copy after the first load
    else:
        ds = _dataset(args.entities, args.triples)
    over = {"model.dim": args.dim, "training.batch_size": args.batch, "training.num_negatives": args.negatives,
            "training.loss": "logsigmoid", "training.optimizer": args.optimizer, "distributed.exchange": exchange}
    if args.model == "transe":  # the bench_scale.py throughput configuration
        over.update({"model.p_norm": 2, "model.reciprocal": False, "model.init_scale": 0.1, "training.lr": 0.1,
                     "training.margin": 6.0, "training.regularizer": "none"})
    cfg = build_config(args.model, None, over)
    sh = Sharding.create(ds.num_entities, n, 0)
    model = init_shard_model(cfg, ds.num_relations, sh, rank).to(device)
    comm = Comm.from_env() if n > 1 else Comm()
    tr = BessTrainer(cfg, ds, sh, model, comm, DistConfig.from_config(cfg), device)
    rng = np.random.default_rng(0)
    steps = tr.batches.epoch(0)
    for _ in range(3):
        tr.train_step(next(steps), rng)
    comm.barrier()
    tr.timer.reset()
    t0 = tr.timer.now()
    for _ in range(args.steps):
        tr.train_step(next(steps), rng)
    comm.barrier()
    dt = tr.timer.now() - t0
    res = {p: 1e3 * tr.timer.totals[p] / args.steps for p in PHASES}
    res.update(step_ms=1e3 * dt / args.steps, triples_per_s=args.steps * n * n * tr.P / dt, P=tr.P, k=tr.k,
               **tr.memory())
    with open(os.path.join(out, f"{exchange}-{n}-{rank}.json"), "w") as f:
        json.dump(res, f)


def throughput(args):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            for exchange in args.exchanges:
                if n == 1 and exchange != "embeddings":
                    continue  # one worker: the three variants are the same computation
                if n == 1:
                    _bench_worker(0, 1, 0, args, exchange, tmp)
                else:
                    spawn(_bench_worker, n, (n, free_port(), args, exchange, tmp), timeout_s=600,
                          start_method="fork" if args.device == "cpu" else "spawn")
                per = [json.load(open(os.path.join(tmp, f"{exchange}-{n}-{r}.json"))) for r in range(n)]
                row = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
                row.update(workers=n, variant=exchange if n > 1 else "(single)")
                rows.append(row)
                print(f"n={n} {row['variant']:<11} {row['triples_per_s']:>10,.0f} triples/s  step {row['step_ms']:7.2f} ms  "
                      + "  ".join(f"{p} {row[p]:6.2f}" for p in PHASES), flush=True)
    print("\n| workers | exchange | positives/s | per worker | step ms | sampling | gather | exchange | compute | update |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['variant']} | {r['triples_per_s']:,.0f} | {r['triples_per_s'] / r['workers']:,.0f} | "
              f"{r['step_ms']:.1f} | "
              + " | ".join(f"{r[p]:.1f}" for p in PHASES) + " |")
    return rows


def umls(args):
    from kgcomplete.data.registry import load_dataset
    from kgcomplete.distributed.launch import train_distributed

    ds = load_dataset("umls")
    out = {}
    for n in (1, 2):
        cfg = build_config("complex", None, {
            "model.dim": 64, "training.epochs": args.epochs, "training.batch_size": 256,
            "training.num_negatives": 128, "training.loss": "softmax", "training.lr": 0.1,
            "training.optimizer": "adagrad", "training.regularizer": "n3", "training.reg_weight": 5e-3,
            "training.eval_every": args.epochs, "training.progress": False, "training.seed": 0,
            "distributed.workers": n, "distributed.threads": 1})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            train_distributed(cfg, ds, Path(tmp) / "run")
            m = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
            out[n] = {"test_mrr": m["test"]["mrr"], "hits@10": m["test"]["hits@10"], "seconds": time.time() - t0}
        print(f"workers={n}: test MRR {out[n]['test_mrr']:.4f}  hits@10 {out[n]['hits@10']:.4f}  ({out[n]['seconds']:.0f}s)", flush=True)
    print(f"|MRR(2) - MRR(1)| = {abs(out[2]['test_mrr'] - out[1]['test_mrr']):.4f}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--exchanges", nargs="+", default=["embeddings", "scores", "allgather"])
    ap.add_argument("--model", default="complex", choices=["complex", "transe"],
                    help="transe: TransE (L2), margin 6, no regularizer (bench_scale.py's setting)")
    ap.add_argument("--optimizer", default="adagrad")
    ap.add_argument("--data", default=None, help="a dataset folder instead of the random KG (e.g. data/synth1m)")
    ap.add_argument("--entities", type=int, default=20000)
    ap.add_argument("--triples", type=int, default=200000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--negatives", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--umls", action="store_true")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = umls(args) if args.umls else throughput(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
