"""Training and evaluation speed on whatever device is here (``--device auto``: a GPU when there is one).

    python benchmarks/bench_device.py [--device auto] [--entities 1000000] [--triples 10000000]
                                      [--batches 30] [--out benchmarks/results/device]

Reports, on a synthetic graph (uniform random triples, ``--entities`` x ``--triples``, 100 relations):

* positive triples/s of the single-process trainer for TransE-L2 and ComplEx with 256 shared
  negatives at batch 1024 and 4096 (rowadagrad, the row-gradient step), and for 1vsAll ComplEx;
* the host-table mode (``training.entity_table``): TransE-L2 with 256 shared negatives, batch 4096,
  on a graph of ``--host-entities`` whose table does not fit the stated ``--device-cap``; the
  placement choice (``choose_placement``) is printed with its reason, then the positive triples/s;
* the WN18RR filtered evaluation time (test split, both directions; ../shared/datasets/wn18rr);
* the gather/scatter step alone (the physical limit of shallow KGE): rows/s, GB/s moved and, on a GPU
  whose peak bandwidth is known (``--peak-gbps`` or the table below), the fraction achieved.

Writes ``OUT.json`` and ``OUT.md`` (a markdown table) and prints the table. Figures are for this
machine only; docs/scale.md records them next to published anchors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: published peak memory bandwidth (GB/s) of common GPUs, by a substring of the device name
PEAK_GBPS = {"H200": 4800, "H100 SXM": 3350, "H100": 2000, "A100-SXM4-80GB": 2039, "A100": 1555, "V100": 900,
             "L40S": 864, "A10G": 600, "T4": 320}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic(n_entities: int, n_triples: int, seed: int = 0):
    from kgcomplete.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    train = np.stack([rng.integers(0, n_entities, n_triples), rng.integers(0, 100, n_triples),
                      rng.integers(0, n_entities, n_triples)], axis=1)
    return Dataset.from_arrays(train, num_entities=n_entities, num_relations=100, name="synthetic")


def speed_config(model: str, mode: str, batch: int, dim: int):
    from kgcomplete.config import Config

    cfg = Config()
    cfg.model.name, cfg.model.dim = model, dim
    t = cfg.training
    t.mode, t.batch_size, t.progress, t.regularizer = mode, batch, False, "none"
    if mode == "negatives":
        t.num_negatives, t.loss, t.optimizer = 256, "logsigmoid", "rowadagrad"
    return cfg


def train_speed(ds, device, model: str, mode: str, batch: int, batches: int, dim: int,
                host_table: bool = False, training: dict | None = None, profile: bool = False) -> float:
    """Positive triples/s of ``batches`` training steps after 3 warm-up steps; ``training``:
    ``training.*`` values to set over :func:`speed_config`'s. ``profile``: also print where the
    timed steps spent their CPU time (torch.profiler, the 15 largest operators by self time)."""
    from kgcomplete.models import from_config
    from kgcomplete.training.placement import move_to_host
    from kgcomplete.training.trainer import Trainer

    cfg = speed_config(model, mode, batch, dim)
    for key, value in (training or {}).items():
        setattr(cfg.training, key, value)
    kge = from_config(cfg, ds.num_entities, ds.num_relations).to(device)
    if host_table:
        move_to_host(kge.entity_emb.weight)
    trainer = Trainer(kge, ds, cfg.training, host_table=host_table)
    perm = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(0))
    for i in range(3):  # warm-up
        trainer.train_batch(perm[i * batch:(i + 1) * batch])
    sync(device)
    prof = torch.profiler.profile() if profile else contextlib.nullcontext()
    with prof:
        t0 = time.perf_counter()
        for i in range(3, 3 + batches):
            trainer.train_batch(perm[i * batch:(i + 1) * batch])
        if trainer.host_rows is not None:
            trainer.host_rows.flush()
        sync(device)
        seconds = time.perf_counter() - t0
    if profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)
    return batches * batch / seconds


def host_table_speed(n_entities: int, n_triples: int, device, dim: int, batches: int, cap: str):
    """The placement chosen for TransE-L2 with shared negatives under the device-memory ``cap``, and
    the positive triples/s of training with it (the table stays on the device if it fits)."""
    from kgcomplete.training.memory import estimate_training_memory
    from kgcomplete.training.placement import choose_placement

    cfg = speed_config("transe_l2", "negatives", 4096, dim)
    cfg.training.max_device_memory = cap
    placement = choose_placement(cfg, estimate_training_memory(cfg, n_entities, 100, n_triples), device)
    ds = synthetic(n_entities, n_triples, seed=1)
    return placement, train_speed(ds, device, "transe_l2", "negatives", 4096, batches, dim, placement.host_table)


def gather_scatter(n_entities: int, dim: int, rows: int, device, reps: int = 20) -> tuple[float, float]:
    """rows/s and GB/s of gathering ``rows`` random rows and adding updates back (index_add_)."""
    table = torch.zeros(n_entities, dim, device=device)
    idx = torch.randint(0, n_entities, (rows,), device=device)
    upd = torch.ones(rows, dim, device=device)
    for _ in range(2):
        table.index_add_(0, idx, table[idx] + upd)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        table.index_add_(0, idx, table[idx] + upd)
    sync(device)
    dt = (time.perf_counter() - t0) / reps
    moved = rows * dim * 4 * 4  # gather read + write of the gathered rows, scatter read + write
    return rows / dt, moved / dt / 1e9


def wn18rr_eval(device, dim: int) -> float | None:
    folder = ROOT.parent / "shared" / "datasets" / "wn18rr"
    if not folder.is_dir():
        return None
    from kgcomplete.config import Config
    from kgcomplete.data.registry import load_dataset
    from kgcomplete.evaluation.evaluator import evaluate
    from kgcomplete.models import from_config

    ds = load_dataset(str(folder), unknown="drop")
    cfg = Config()
    cfg.model.name, cfg.model.dim = "complex", dim
    model = from_config(cfg, ds.num_entities, ds.num_relations).to(device).eval()
    evaluate(model, ds, "valid", device=device, per_relation=False)  # warm-up (and the filter index)
    sync(device)
    t0 = time.perf_counter()
    evaluate(model, ds, "test", device=device, per_relation=False)
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    from kgcomplete.device import describe, resolve_device

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--triples", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--peak-gbps", type=float, default=None)
    ap.add_argument("--host-entities", type=int, default=None,
                    help="entities of the host-table graph (default: 4x --entities on a GPU, --entities on a CPU)")
    ap.add_argument("--device-cap", default="1GiB", help="the stated device-memory cap of the host-table row")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "device"))
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = args.peak_gbps or next((v for k, v in PEAK_GBPS.items() if k in name), None)
    ds = synthetic(args.entities, args.triples)
    rows = []
    for model in ("transe_l2", "complex"):
        for batch in (1024, 4096):
            rows.append((f"{model}, 256 shared negatives, batch {batch}", "positive triples/s",
                         train_speed(ds, device, model, "negatives", batch, args.batches, args.dim)))
    one_batch = 256 if device.type == "cpu" else 1024
    rows.append((f"complex, 1vsAll, batch {one_batch}", "positive triples/s",
                 train_speed(ds, device, "complex", "1vsAll", one_batch, max(3, args.batches // 5), args.dim)))
    host_e = args.host_entities or (4 * args.entities if device.type == "cuda" else args.entities)
    placement, host_speed = host_table_speed(host_e, args.triples, device, args.dim, args.batches, args.device_cap)
    print(placement.reason, file=sys.stderr)
    rows.append((f"transe_l2, 256 shared negatives, batch 4096, {host_e:,} entities, entity table: "
                 f"{placement.entity_table} (cap {args.device_cap})", "positive triples/s", host_speed))
    rate, gbps = gather_scatter(args.entities, args.dim, 4096 * 2 + 256, device)
    rows.append(("gather + scatter of 8,448 rows (one negatives batch of 4096)", "rows/s", rate))
    rows.append(("... bytes moved", "GB/s", gbps))
    if peak:
        rows.append((f"... of the peak bandwidth ({peak:g} GB/s)", "fraction", gbps / peak))
    ev = wn18rr_eval(device, args.dim)
    if ev is not None:
        rows.append(("WN18RR filtered evaluation, test (both directions; unseen entities dropped)", "seconds", ev))
    head = (f"device: {describe(device)}; torch {torch.__version__}; graph: {args.entities:,} entities, "
            f"{args.triples:,} triples; dim {args.dim}")
    table = [f"{head}\n", "| what | unit | value |", "|---|---|---:|"]
    table += [f"| {w} | {u} | {v:,.3f} |" if v < 10 else f"| {w} | {u} | {v:,.0f} |" for w, u, v in rows]
    text = "\n".join(table)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"device": str(device), "name": name, "args": vars(args),
                                                    "rows": [{"what": w, "unit": u, "value": v} for w, u, v in rows]},
                                                   indent=2))


if __name__ == "__main__":
    main()
