"""Scale on one machine: training throughput on a 1M-entity graph, and a 10M-entity graph in RAM.

    # once: the graphs (synthetic, see `kgc datasets synth`)
    kgc datasets synth --entities 1000000 --relations 100 --triples 10000000 --seed 0 --out data/synth1m
    kgc datasets synth --entities 10000000 --relations 200 --triples 100000000 --seed 0 --out data/synth10m

    python benchmarks/bench_scale.py throughput --data data/synth1m [--threads 1 2] [--batches 300]
    python benchmarks/bench_scale.py big --data data/synth10m [--max-batches 0] [--queries 10000]

``throughput``: TransE (L2) d=128, 256 negatives shared by the batch for each corrupted side
(head and tail), batch 1024, log-sigmoid loss, row-wise Adagrad. Rows: kgcomplete's Trainer, and
"plain PyTorch" - the textbook loop (``nn.Embedding(sparse=True)`` lookups per role, ``torch.cdist``
scores against the shared negatives, log-sigmoid loss, a row-wise Adagrad step on the coalesced
sparse gradient) - run in the same process, alternating, so both see the same machine load.

``big``: TransE (L2) d=64 on the 10M-entity graph with a float16 entity table, row-wise Adagrad:
prints the up-front estimate, trains one epoch (or ``--max-batches``), then a filtered
evaluation of ``--queries`` test queries (half head, half tail) against all entities through a
memory-mapped filter index, and reports peak RSS beside the estimate. Everything runs in this
process, so ``ru_maxrss`` is the peak of the whole run.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import resource
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kgcomplete.config import build_config  # noqa: E402

THROUGHPUT = dict(dim=128, batch_size=1024, num_negatives=256, lr=0.1, margin=6.0)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_avg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------ throughput
class PlainTransE:
    """The textbook PyTorch loop, for comparison (same loss, negatives and optimizer semantics)."""

    def __init__(self, E: int, R: int, dim: int, lr: float, margin: float):
        self.ent = torch.nn.Embedding(E, dim, sparse=True)
        self.rel = torch.nn.Embedding(R, dim, sparse=True)
        for e in (self.ent, self.rel):
            torch.nn.init.uniform_(e.weight, -0.1, 0.1)
        self.acc = [torch.zeros(E), torch.zeros(R)]
        self.lr, self.margin = lr, margin

    def step(self, batch: torch.Tensor, neg_t: torch.Tensor, neg_h: torch.Tensor) -> float:
        h, r, t = self.ent(batch[:, 0]), self.rel(batch[:, 1]), self.ent(batch[:, 2])
        pos = -torch.linalg.vector_norm(h + r - t, dim=-1)
        s_t = -torch.cdist(h + r, self.ent(neg_t))  # (B, N)
        s_h = -torch.cdist(t - r, self.ent(neg_h))
        m = self.margin
        loss = (-F.logsigmoid(m + pos) - F.logsigmoid(-m - s_t).mean(1)).mean() / 2 \
            + (-F.logsigmoid(m + pos) - F.logsigmoid(-m - s_h).mean(1)).mean() / 2
        loss = loss / 2
        for e in (self.ent, self.rel):
            e.weight.grad = None
        loss.backward()
        with torch.no_grad():
            for e, acc in zip((self.ent, self.rel), self.acc):
                g = e.weight.grad.coalesce()
                rows, vals = g.indices()[0], g.values()
                acc.index_add_(0, rows, vals.pow(2).mean(1))
                e.weight.index_add_(0, rows, -self.lr * vals / (acc[rows].sqrt() + 1e-10).unsqueeze(1))
        return float(loss)


def bench_throughput(args) -> None:
    from kgcomplete.data.compact import load_folder
    from kgcomplete.runs import make_model
    from kgcomplete.training.trainer import Trainer

    t0 = time.perf_counter()
    ds = load_folder(args.data, unknown="keep")
    print(f"loaded {ds.name}: {ds.num_entities:,} entities, {len(ds.train):,} train triples "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)
    hp = THROUGHPUT
    cfg = build_config("transe", None, {
        "model.dim": hp["dim"], "model.p_norm": 2, "model.reciprocal": False, "model.init_scale": 0.1,
        "training.mode": "negatives", "training.loss": "logsigmoid", "training.margin": hp["margin"],
        "training.optimizer": "rowadagrad", "training.lr": hp["lr"], "training.batch_size": hp["batch_size"],
        "training.num_negatives": hp["num_negatives"], "training.corrupt": "both", "training.regularizer": "none",
        "training.progress": False})
    trainers = {}
    for hogwild in sorted(set([1] + args.hogwild)):
        trainers[hogwild] = Trainer(make_model(cfg, ds), ds, dataclasses.replace(cfg.training, hogwild=hogwild))
    plain = PlainTransE(ds.num_entities, ds.num_relations, hp["dim"], hp["lr"], hp["margin"])
    train = torch.as_tensor(np.asarray(ds.train))
    g = torch.Generator().manual_seed(1)
    B, N = hp["batch_size"], hp["num_negatives"]

    def run_kgc(trainer, n):
        perm = torch.randint(0, len(train), (n * B,), generator=g)
        t = time.perf_counter()
        trainer.train_batches(perm.split(B))
        return n * B / (time.perf_counter() - t)

    def run_plain(n):
        perm = torch.randint(0, len(train), (n * B,), generator=g)
        t = time.perf_counter()
        for i in range(n):
            batch = train[perm[i * B : (i + 1) * B]]
            plain.step(batch, torch.randint(0, ds.num_entities, (N,), generator=g),
                       torch.randint(0, ds.num_entities, (N,), generator=g))
        return n * B / (time.perf_counter() - t)

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        loops = {"plain PyTorch": run_plain}
        for hogwild, tr in trainers.items():
            if hogwild == 1 or hogwild <= threads:
                loops[f"kgcomplete, hogwild {hogwild}" if hogwild > 1 else "kgcomplete"] = partial(run_kgc, tr)
        for run in loops.values():
            run(10)  # warm-up
        res = {name: [] for name in loops}
        load0 = load_avg()
        for rep in range(args.reps):  # alternate, so all see the same load
            for name, run in loops.items():
                res[name].append(run(args.batches))
        for name, v in res.items():
            rows.append((name, threads, float(np.median(v)), max(v), f"{load0} -> {load_avg()}"))
            print(rows[-1], flush=True)
    print(f"\nTransE (L2) d={hp['dim']}, {ds.num_entities:,} entities / {len(ds.train):,} train triples, batch {B}, "
          f"{N} shared negatives per corrupted side (head + tail), log-sigmoid, row-wise Adagrad; "
          f"{args.reps} x {args.batches} batches per row\n")
    print("| loop | torch threads | positive triples/s (median) | best | load average (1/5/15 min) |")
    print("|---|---:|---:|---:|---|")
    for name, th, med, best, load in rows:
        print(f"| {name} | {th} | {med:,.0f} | {best:,.0f} | {load} |")


# ------------------------------------------------------------------------------------- big graph
def bench_big(args) -> None:
    from kgcomplete.data import load_dataset
    from kgcomplete.evaluation.evaluator import Evaluator, metrics_from_ranks
    from kgcomplete.evaluation.filter_index import FilterIndex
    from kgcomplete.runs import make_model
    from kgcomplete.training.memory import estimate_for_dataset, fmt_bytes
    from kgcomplete.training.trainer import Trainer

    torch.set_num_threads(args.threads[0])
    t0 = time.perf_counter()
    ds = load_dataset(args.data, unknown="keep")  # large folder -> cached memory-mapped compact copy
    t_load = time.perf_counter() - t0
    print(f"loaded {ds.num_entities:,} entities, {len(ds.train):,} train triples in {t_load:.0f}s "
          f"(peak RSS {fmt_bytes(peak_rss())})", flush=True)
    cfg = build_config("transe", None, {
        "model.dim": args.dim, "model.p_norm": 2, "model.reciprocal": False, "model.init_scale": 0.1,
        "model.storage_dtype": args.storage_dtype, "training.mode": "negatives", "training.loss": "logsigmoid",
        "training.hogwild": max(args.hogwild),
        "training.optimizer": "rowadagrad", "training.lr": 0.1, "training.batch_size": args.batch,
        "training.num_negatives": 256, "training.regularizer": "none", "training.eval_every": 0,
        "training.progress": True, "evaluation.batch_elements": 1 << 22})
    est = estimate_for_dataset(cfg, ds)
    print(est.table(), flush=True)
    model = make_model(cfg, ds)
    trainer = Trainer(model, ds, cfg.training)
    if args.max_batches:  # part of an epoch: the first batches of one epoch's order
        t0 = time.perf_counter()
        total, n_done = trainer.train_batches(itertools.islice(trainer._epoch_batches(), args.max_batches))
        rec = {"time_s": time.perf_counter() - t0, "loss": total / max(n_done, 1)}
    else:
        rec = trainer.run_epoch()
        n_done = len(ds.train)
    print(f"epoch: {n_done:,} triples in {rec['time_s']:.0f}s = {n_done / rec['time_s']:,.0f} triples/s, "
          f"loss {rec['loss']:.4f}, peak RSS {fmt_bytes(peak_rss())}", flush=True)
    t0 = time.perf_counter()
    cache = Path(args.filter_cache or Path(args.data) / ".filter-index")
    if not (cache / "filter.json").exists():
        FilterIndex.from_dataset(ds).save(cache)
    filt = FilterIndex.load(cache)  # memory-mapped
    t_filter = time.perf_counter() - t0
    print(f"filter index (built/loaded, memory-mapped) in {t_filter:.0f}s, peak RSS {fmt_bytes(peak_rss())}", flush=True)
    test = np.asarray(ds.test[: args.queries // 2])
    t0 = time.perf_counter()
    res = Evaluator(filt, chunk_elements=cfg.evaluation.batch_elements).rank(model, test, ds.num_entities, True,
                                                                            progress=True)
    t_eval = time.perf_counter() - t0
    m = metrics_from_ranks(np.concatenate([res.head_ranks, res.tail_ranks]))
    peak = peak_rss()
    print(f"\n10M-entity graph: {ds.num_entities:,} entities, {len(ds.train):,} train triples, TransE (L2) d={args.dim}, "
          f"{args.storage_dtype} entity table, row-wise Adagrad, batch {args.batch}, 256 shared negatives, "
          f"torch threads {args.threads[0]}, hogwild {max(args.hogwild)}, load {load_avg()}\n")
    print("| step | time (s) | result |")
    print("|---|---:|---|")
    print(f"| load (compact, memory-mapped) | {t_load:.0f} | |")
    print(f"| train {'one epoch' if not args.max_batches else f'{n_done:,} triples'} | {rec['time_s']:.0f} | "
          f"{n_done / rec['time_s']:,.0f} triples/s |")
    print(f"| filter index | {t_filter:.0f} | memory-mapped CSR |")
    print(f"| filtered evaluation, {2 * len(test):,} queries x {ds.num_entities:,} entities | {t_eval:.0f} | "
          f"MRR {m['mrr']:.4f} |")
    print(f"\npeak RSS {fmt_bytes(peak)}   estimate {fmt_bytes(est.total)}   target < 16 GiB: "
          f"{'yes' if peak < 16 << 30 else 'NO'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "big"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--batches", type=int, default=200, help="throughput: timed batches per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hogwild", type=int, nargs="+", default=[2], help="throughput: Hogwild thread counts")
    ap.add_argument("--dim", type=int, default=64, help="big: embedding size")
    ap.add_argument("--batch", type=int, default=4096, help="big: batch size")
    ap.add_argument("--storage-dtype", default="float16")
    ap.add_argument("--max-batches", type=int, default=0, help="big: stop the epoch early (0 = whole epoch)")
    ap.add_argument("--queries", type=int, default=10_000, help="big: test queries (head + tail)")
    ap.add_argument("--filter-cache", default=None)
    args = ap.parse_args()
    (bench_throughput if args.what == "throughput" else bench_big)(args)


if __name__ == "__main__":
    main()
