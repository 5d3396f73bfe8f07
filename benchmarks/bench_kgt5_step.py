"""KGT5 training step speed: eager against ``torch.compile``, and by batch size (docs/kgt5.md, umls).

    python benchmarks/bench_kgt5_step.py [--preset tiny] [--vocab 829] [--batches 64 128 256 512]
                                         [--tokens 16] [--target 4] [--steps 20] [--threads 2]
                                         [--compile] [--device cpu]

A randomly initialised query-attention T5 of the preset (the model KGT5-context trains), AdamW, one
forward + backward + step per batch under bf16 autocast, on random inputs of ``--tokens`` to
``--tokens`` + 4 tokens (the lengths vary as the length-bucketed batches do) and ``--target`` target
tokens. Prints one row per (batch, eager/compiled): the first steps (compilation included) and
the steady ms per step and examples/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from kgcomplete.device import resolve_device
from kgcomplete.seq2seq.model import build_model


def step_speed(preset: str, vocab: int, batch: int, tokens: int, target: int, steps: int, compiled: bool,
               device: torch.device, warmup: int = 5) -> tuple[float, float]:
    """(seconds of the first ``warmup`` steps, seconds per later step)."""
    torch.manual_seed(0)
    model = build_model(vocab, preset, seed=0, query_attention=True, dropout_rate=0.0).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fwd = torch.compile(model, dynamic=True) if compiled else model
    gen = torch.Generator().manual_seed(0)

    def one(i: int) -> None:
        length = tokens + i % 5
        ids = torch.randint(3, vocab, (batch, length), generator=gen).to(device)
        labels = torch.randint(3, vocab, (batch, target), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for i in range(warmup):
        one(i)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    return first, (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vocab", type=int, default=829, help="umls's trained vocabulary")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--target", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (dynamic shapes)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"KGT5 {args.preset}, vocab {args.vocab}, inputs {args.tokens}-{args.tokens + 4} tokens, "
          f"{args.threads} threads, {device}")
    print("| batch | mode | first 5 steps | ms/step | examples/s |")
    print("|---:|---|---:|---:|---:|")
    for batch in args.batches:
        for compiled in (False, True) if args.compile else (False,):
            first, per = step_speed(args.preset, args.vocab, batch, args.tokens, args.target, args.steps, compiled,
                                    device)
            print(f"| {batch} | {'compiled' if compiled else 'eager'} | {first:.1f} s | {per * 1000:.1f} | "
                  f"{batch / per:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
