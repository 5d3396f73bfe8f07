"""Our defaults against PyKEEN given the same hyperparameters and the same wall-clock budget.

    python benchmarks/pykeen_side_by_side.py [--datasets wn18rr codex-m] [--budgets 10 30] [--threads 2]
                                             [--pykeen-python PYTHON] [--out benchmarks/results/pykeen_side_by_side]
                                             [--reuse]

For each dataset and budget (minutes), one after the other, each in its own process with the same
torch threads:

1. ours: ``kgc train --dataset ../shared/datasets/D --drop-unknown --time-budget B`` (the defaults,
   fitted to the graph and the machine); the test MRR of the weights it kept (best validation MRR);
2. PyKEEN 1.11 with the hyperparameters our run chose (read from its ``config.yaml``): ComplEx of the
   same rank and initialisation (normal with our ``model.init_scale`` as std; PyKEEN's own default is
   the standard normal, with which its training at these settings barely moves: wn18rr test MRR .013 in
   10 minutes), its LCWA loop with inverse triples (the closest to our 1vsAll with reciprocal
   relations), cross-entropy loss, Adagrad with the same learning rate, the same queries per batch
   (ours counts triples, each giving two queries; LCWA counts (head, relation) queries, inverse ones
   included: PyKEEN's batch_size is twice ours), N3 of the same weight (PyKEEN's power-sum
   regulariser with p = 3: the sum of the cubed moduli of a row, averaged over the rows a batch uses;
   its Lp regulariser with p = 3 penalises the norm itself, not its cube, which at ComplEx-N3's small
   embeddings is a far stronger penalty: with it PyKEEN reached test MRR .009 on codex-m in 10
   minutes), stopped after the
   epoch that crosses the same budget (a training callback), then evaluated once, filtered, on the
   same test triples (unknown entities dropped, as ours). Where our defaults chose bf16 matrix
   products (``training.autocast``: a device that multiplies bf16 faster), PyKEEN still trains in
   float32 (its training loop has no CPU autocast); the table's hyperparameter column says so.

PyKEEN is not a dependency of kgcomplete: give ``--pykeen-python`` an interpreter that has it (e.g.
``python -m venv --system-site-packages /tmp/pk && /tmp/pk/bin/pip install pykeen==1.11.1``). The
test split chooses nothing in either run (ours picks its kept weights on validation; PyKEEN keeps the
last epoch). Writes OUT.json / OUT.md (earlier entries for other datasets/budgets are kept) and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def ours(dataset: str, budget_min: float, threads: int, runs: Path, reuse: bool = False) -> dict:
    """Our defaults trained into ``RUNS/D-ours-Bmin``; with ``reuse``, a finished run there (its
    metrics.json has the test figures) is read instead of trained again."""
    run = runs / f"{dataset}-ours-{budget_min:g}min"
    if reuse and (run / "metrics.json").exists():
        return _ours_row(json.loads((run / "metrics.json").read_text()), run, wall_s=None)
    cmd = [sys.executable, "-m", "kgcomplete", "train", "--dataset", str(SHARED / dataset), "--out", str(run),
           "--drop-unknown", "--time-budget", f"{budget_min * 60:.0f}s", "--threads", str(threads),
           "--no-progress", "--json"]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"ours on {dataset}: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    return _ours_row(json.loads(res.stdout), run, wall_s=time.time() - t0)


def _ours_row(m: dict, run: Path, wall_s: float | None) -> dict:
    """The table row of our run ``run`` from its metrics ``m``, with the config PyKEEN is given."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return {"library": "kgcomplete", "mrr": m["test"]["mrr"], "hits@1": m["test"]["hits@1"],
            "hits@10": m["test"]["hits@10"], "train_time_s": m.get("train_time_s"), "epochs": m.get("epochs"),
            "wall_s": wall_s, "config": {"model": cfg["model"], "training": cfg["training"]}}


def pykeen_worker(spec: dict) -> dict:
    """Runs inside the PyKEEN interpreter (``--worker SPEC_JSON``): train, stop at the budget, test."""
    import functools

    import numpy as np
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import ComplEx
    from pykeen.training import LCWATrainingLoop
    from pykeen.training.callbacks import TrainingCallback
    from pykeen.triples import CoreTriplesFactory

    sys.path.insert(0, str(ROOT / "src"))
    from kgcomplete.data.registry import load_dataset

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    ds = load_dataset(spec["dataset"], unknown="drop")
    tf = CoreTriplesFactory.create(torch.as_tensor(np.asarray(ds.train), dtype=torch.long),
                                   num_entities=ds.num_entities, num_relations=ds.num_relations,
                                   create_inverse_triples=True)
    # our initialisation (normal, std init_scale: 1e-3 for ComplEx-N3), not PyKEEN's standard normal
    init = functools.partial(torch.nn.init.normal_, std=spec["init_scale"])
    model = ComplEx(triples_factory=tf, embedding_dim=spec["dim"], loss="crossentropy",
                    entity_initializer=init, relation_initializer=init, regularizer="powersum",
                    regularizer_kwargs={"p": 3.0, "weight": spec["reg_weight"], "normalize": False},
                    random_seed=spec["seed"])
    optimizer = torch.optim.Adagrad(model.get_grad_params(), lr=spec["lr"])
    loop = LCWATrainingLoop(model=model, triples_factory=tf, optimizer=optimizer)
    budget = spec["budget_s"]

    class Budget(TrainingCallback):
        """Stop after the epoch that crosses the wall-clock budget (as ``--time-budget`` does)."""

        def __init__(self):
            super().__init__()
            self.t0, self.epochs = time.time(), 0

        def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
            self.epochs = epoch
            if time.time() - self.t0 >= budget:
                self.training_loop._should_stop = True

    cb = Budget()
    t0 = time.time()
    loop.train(triples_factory=tf, num_epochs=10_000, batch_size=spec["batch_size"], callbacks=[cb],
               use_tqdm=False, use_tqdm_batch=False)
    train_time = time.time() - t0
    filt = [torch.as_tensor(np.asarray(ds.train)), torch.as_tensor(np.asarray(ds.valid))]
    res = RankBasedEvaluator(filtered=True).evaluate(model, torch.as_tensor(np.asarray(ds.test)),
                                                     additional_filter_triples=filt, use_tqdm=False,
                                                     batch_size=256)
    get = lambda key: float(res.get_metric(key))  # noqa: E731
    return {"library": "pykeen 1.11", "mrr": get("both.realistic.inverse_harmonic_mean_rank"),
            "hits@1": get("both.realistic.hits_at_1"), "hits@10": get("both.realistic.hits_at_10"),
            "train_time_s": train_time, "epochs": cb.epochs}


def pykeen(dataset: str, budget_min: float, threads: int, python: str, our: dict) -> dict:
    tr, mo = our["config"]["training"], our["config"]["model"]
    spec = {"dataset": str(SHARED / dataset), "threads": threads, "seed": tr["seed"], "dim": mo["dim"],
            "lr": tr["lr"], "init_scale": mo["init_scale"], "batch_size": 2 * tr["batch_size"],
            "reg_weight": tr["reg_weight"], "budget_s": budget_min * 60}
    t0 = time.time()
    res = subprocess.run([python, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"pykeen on {dataset}: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {**out, "wall_s": time.time() - t0}


def table(rows: list[dict]) -> str:
    lines = ["| dataset | budget | library | test MRR | Hits@1 | Hits@10 | training | epochs | hyperparameters |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['budget_min']:g} min | {r['library']} | {r['mrr']:.3f} | "
                     f"{r['hits@1']:.3f} | {r['hits@10']:.3f} | {r['train_time_s'] / 60:.1f} min | {r['epochs']} | "
                     f"{r['hyper']} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(pykeen_worker(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["wn18rr", "codex-m"])
    ap.add_argument("--budgets", nargs="+", type=float, default=[10, 30], help="minutes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pykeen-python", default=sys.executable, help="an interpreter with pykeen 1.11 installed")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pykeen_side_by_side"))
    ap.add_argument("--reuse", action="store_true",
                    help="read our finished runs in OUT-runs (metrics.json) instead of training them again")
    args = ap.parse_args()
    out = Path(args.out)
    runs = Path(f"{out}-runs")
    runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        for budget in args.budgets:
            print(f"{dataset}, {budget:g} min: kgcomplete ...", file=sys.stderr, flush=True)
            a = ours(dataset, budget, args.threads, runs, reuse=args.reuse)
            tr, mo = a["config"]["training"], a["config"]["model"]
            hyper = (f"{mo['name']} dim {mo['dim']}, batch {tr['batch_size']} triples = {2 * tr['batch_size']} queries, "
                     f"{tr['optimizer']} lr {tr['lr']}, "
                     f"reg {tr['regularizer']} {tr['reg_weight']}, {args.threads} threads"
                     + (", ours with bf16 products (PyKEEN float32)" if tr.get("autocast", "none") != "none" else ""))
            print(f"{dataset}, {budget:g} min: pykeen ...", file=sys.stderr, flush=True)
            b = pykeen(dataset, budget, args.threads, args.pykeen_python, a)
            for r in (a, b):
                r.pop("config", None)
                rows.append({"dataset": dataset, "budget_min": budget, "hyper": hyper, **r})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    done = {(r["dataset"], r["budget_min"]) for r in rows}
    old = out.with_suffix(".json")
    if old.exists():
        rows = [r for r in json.loads(old.read_text()) if (r["dataset"], r["budget_min"]) not in done] + rows
    text = table(rows)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
