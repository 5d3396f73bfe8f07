"""1vsAll training speed in float32 and under bf16 autocast, with the matrix-product speeds that the
fitted defaults measure to choose between them (``training/autoconfig.py``).

    python benchmarks/bench_autocast.py [--device auto] [--entities 17050] [--triples 185584]
                                        [--dim 512] [--batch 1000] [--batches 6] [--threads 2] [--profile]

A synthetic graph of CoDEx-M's size by default; ComplEx, 1vsAll with reciprocal relations, N3,
Adagrad: the step the defaults take there. Prints one row per precision: the measured GFLOP/s of
the products, ms per step, positive triples/s and the epoch that implies; ``--profile`` first prints
each precision's operators by CPU time (torch.profiler over the timed steps, which it slows a little).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import synthetic, train_speed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--entities", type=int, default=17_050)
    ap.add_argument("--triples", type=int, default=185_584)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="print the operators of the timed steps by CPU time")
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
        speed = train_speed(ds, device, "complex", "1vsAll", args.batch, args.batches, args.dim,
                            training={"regularizer": "n3", "reg_weight": 0.01, "autocast": autocast},
                            profile=args.profile)
        print(f"| {'float32' if autocast == 'none' else 'bf16 autocast'} | {gflops:,.0f} | "
              f"{args.batch / speed * 1000:,.0f} | {speed:,.0f} | {args.triples / speed:,.0f} s |", flush=True)


if __name__ == "__main__":
    main()
