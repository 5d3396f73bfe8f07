"""Every model trained with its defaults on one dataset: seconds per epoch, epochs run (the
defaults stop when validation stops improving), total time and test MRR; and, for the models
whose candidate scoring runs in models/kernels.py, the seconds per epoch of the plain broadcast
of ``score_emb`` (``models.base.broadcast_scoring``, the path they all took before) measured in
the same run, one epoch each way. ConvE's "before" is its former default mode (1vsAll).

    python benchmarks/bench_models.py --threads 1                      # umls, every model
    python benchmarks/bench_models.py --models pairre boxe --max-epochs 20
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

#: models whose candidates were scored by broadcasting score_emb before models/kernels.py
KERNEL_MODELS = ("transh", "rotate", "pairre", "triplere", "triplere_v2", "interht", "trans", "boxe")
#: ConvE's default before KvsAll (the per-epoch cost of its former default)
CONVE_BEFORE = {"training.mode": "1vsAll", "training.loss": "ce"}


def epoch_seconds(dataset, model: str, threads: int, broadcast: bool = False, overrides=None) -> float:
    """Seconds of one training epoch of ``model`` with its defaults (a fresh model; no validation)."""
    import torch

    from kgcomplete.config import apply_override, build_config
    from kgcomplete.models import from_config
    from kgcomplete.models.base import broadcast_scoring
    from kgcomplete.training.trainer import Trainer

    cfg = build_config(model)
    for k, v in (overrides or {}).items():
        apply_override(cfg, k, v)
    cfg.training.progress, cfg.training.threads = False, threads
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    trainer = Trainer(from_config(cfg, dataset.num_entities, dataset.num_relations), dataset, cfg.training)
    t0 = time.perf_counter()
    if broadcast:
        with broadcast_scoring():
            trainer.run_epoch()
    else:
        trainer.run_epoch()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="umls")
    ap.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-epochs", type=int, default=0, help="cap on the defaults' epochs (0: none)")
    ap.add_argument("--no-before", action="store_true", help="skip the one-epoch timings of the former paths")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    import kgcomplete as kgc
    from kgcomplete.config import model_defaults
    from kgcomplete.models import MODELS

    torch.set_num_threads(args.threads)
    ds = kgc.load_dataset(args.dataset)
    rows = []
    for name in args.models or sorted(MODELS):
        before = None
        if not args.no_before and (name in KERNEL_MODELS or name == "conve"):
            before = epoch_seconds(ds, name, args.threads, broadcast=name != "conve",
                                   overrides=CONVE_BEFORE if name == "conve" else None)
            now = epoch_seconds(ds, name, args.threads)
        extra = {}
        epochs = model_defaults(name).get("training.epochs", 100)
        if args.max_epochs and epochs > args.max_epochs:
            extra["epochs"] = args.max_epochs
        out = Path(tempfile.mkdtemp()) / "run"
        t0 = time.perf_counter()
        kgc.train(ds, model=name, out=out, threads=args.threads, progress=False, **extra)
        wall = time.perf_counter() - t0
        m = json.loads((out / "metrics.json").read_text())
        row = {"model": name, "s_per_epoch": m["train_time_s"] / max(1, m["epochs"]), "epochs": m["epochs"],
               "best_epoch": m["best_epoch"], "total_s": wall, "test_mrr": m["test"]["mrr"], "stopped": m["stopped"],
               "epochs_cap": extra.get("epochs"), "before_s_per_epoch": before,
               "one_epoch_now_s": now if before is not None else None, "folder": str(out)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"dataset {args.dataset}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{platform.machine()}; command: python benchmarks/bench_models.py {' '.join(sys.argv[1:])}\n")
    print("| model | s/epoch | epochs run | best epoch | total s | test MRR | s/epoch before (same run) | why it stopped |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r["before_s_per_epoch"] is None:
            before = "-"
        else:
            what = "1vsAll" if r["model"] == "conve" else "broadcast"
            before = f"{r['before_s_per_epoch']:.2f} ({what}; now {r['one_epoch_now_s']:.2f})"
        stopped = r["stopped"].split(";")[0] + (f" (capped at {r['epochs_cap']})" if r["epochs_cap"] else "")
        print(f"| {r['model']} | {r['s_per_epoch']:.2f} | {r['epochs']} | {r['best_epoch']} | {r['total_s']:.0f} | "
              f"{r['test_mrr']:.3f} | {before} | {stopped} |")
    print("\ns/epoch: training time / epochs of the default run (validation excluded); total s: the whole "
          "`kgc.train` call (validations and the test evaluation included). Before: one epoch of the plain "
          "broadcast of score_emb (models.base.broadcast_scoring), the path these models took before "
          "models/kernels.py, except RotatE, which had its own chunked complex path (about as fast as now); "
          "ConvE: one epoch in its former default mode, 1vsAll. 'now': one epoch of the current path in the "
          "same process.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
