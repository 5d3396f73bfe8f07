"""1vsAll training speed in float32 and under bf16 autocast, with the matrix-product speeds that the
fitted defaults measure to choose between them (``training/autoconfig.py``).

    python benchmarks/bench_autocast.py [--device auto] [--entities 17050] [--triples 185584]
                                        [--dim 512] [--batch 1000] [--batches 8] [--threads 2]

A synthetic graph of CoDEx-M's size by default; ComplEx, 1vsAll with reciprocal relations, N3,
Adagrad — the step the defaults take there. Prints one row per precision: ms per step, positive
triples/s, the epoch that implies, and the measured GFLOP/s of the products.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import speed_config, sync, synthetic  # noqa: E402


def step_seconds(ds, device, autocast: str, dim: int, batch: int, batches: int) -> float:
    from kgcomplete.models import from_config
    from kgcomplete.training.trainer import Trainer

    cfg = speed_config("complex", "1vsAll", batch, dim)
    cfg.training.regularizer, cfg.training.reg_weight, cfg.training.autocast = "n3", 0.01, autocast
    kge = from_config(cfg, ds.num_entities, ds.num_relations).to(device)
    trainer = Trainer(kge, ds, cfg.training)
    perm = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(0))
    trainer.train_batch(perm[:batch])  # warm-up
    sync(device)
    times = []
    for i in range(1, 1 + batches):
        t0 = time.perf_counter()
        trainer.train_batch(perm[i * batch:(i + 1) * batch])
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--entities", type=int, default=17_050)
    ap.add_argument("--triples", type=int, default=185_584)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from kgcomplete.device import resolve_device
    from kgcomplete.training.autoconfig import measured_gflops

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ds = synthetic(args.entities, args.triples)
    print(f"ComplEx dim {args.dim}, 1vsAll, batch {args.batch}, {args.entities:,} entities, {args.triples:,} "
          f"triples, {device}, {torch.get_num_threads()} threads")
    print("| precision | products GFLOP/s | ms / step | triples/s | epoch |")
    print("|---|---:|---:|---:|---:|")
    for autocast, dtype in (("none", torch.float32), ("bf16", torch.bfloat16)):
        gflops = measured_gflops(device, seconds=0.5, dtype=dtype)
        s = step_seconds(ds, device, autocast, args.dim, args.batch, args.batches)
        print(f"| {'float32' if autocast == 'none' else 'bf16 autocast'} | {gflops:,.0f} | {s * 1000:,.0f} | "
              f"{args.batch / s:,.0f} | {args.triples / args.batch * s:,.0f} s |", flush=True)


if __name__ == "__main__":
    main()
