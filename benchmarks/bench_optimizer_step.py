"""Time of one Adagrad step on a dense gradient of an entity table: torch's per-tensor loop, foreach
and the fused kernel (which 1vsAll/KvsAll training uses on the CPU, training/optimizers.py).

    python benchmarks/bench_optimizer_step.py [--rows 40559] [--width 512] [--threads 2] [--steps 20]

Prints one row per implementation: milliseconds per step (the default shape is WN18RR's table at
ComplEx dim 256).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=40_559)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| Adagrad step ({args.rows:,} x {args.width}, {args.threads} threads) | ms per step |\n|---|---:|")
    for name, kw in (("per-tensor loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        p = torch.nn.Parameter(torch.randn(args.rows, args.width) * 1e-3)
        opt = torch.optim.Adagrad([p], lr=0.1, **kw)
        p.grad = torch.randn_like(p)
        for _ in range(3):
            opt.step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        print(f"| {name} | {(time.perf_counter() - t0) / args.steps * 1e3:.1f} |")


if __name__ == "__main__":
    main()
