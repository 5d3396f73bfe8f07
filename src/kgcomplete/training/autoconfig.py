"""Defaults that fit the graph and the machine.

The built-in defaults (ComplEx dim 512, batch 256, 1vsAll, validation every 5 epochs) were tuned on
graphs of a few hundred entities; on a graph of 15k entities and 270k triples one such epoch takes
minutes on a laptop. Before a new run, :func:`fit_defaults` estimates the seconds per epoch of the
modes that score every entity (1vsAll, KvsAll) from the graph's size and a short measurement of the
device's matrix-product speed (:func:`measured_gflops`), and changes the values the user did not
set (``cfg.sources`` says which: defaults and per-model defaults only) so that an epoch takes about
``TARGET_EPOCH_S`` (or an eighth of ``--time-budget``: Adagrad at batch 1000 is near its best validation
MRR within ten epochs on WN18RR, and a larger model gains more than further epochs of a smaller one):

- ``model.dim``: the largest of 1024, 512, 256, 128, 64, 32 that fits, not above the model's default
  (512 for ComplEx) except on graphs of more than ``LARGE_GRAPH_ENTITIES`` entities, where up to twice
  the default: the published ComplEx-N3 runs there use rank 1000 (CoDEx-M, CoDEx-L, WN18RR,
  FB15k-237; a rank-1000 CoDEx-M run is at validation MRR .345 after 10 epochs, where dim 512 here
  was at .339 after 12), while on CoDEx-S (2,034 entities) dim 1024 was lower than 512;
- ``training.batch_size``: 1000 triples instead of 256 on graphs above 10^8 (triples x entities):
  an epoch is faster (CoDEx-M, dim 512, bf16, 2 threads: 157 s against 229 s at 250 triples,
  ``python benchmarks/bench_autocast.py --batch 1000`` and ``--batch 250``), and per epoch Adagrad
  learns about as much (CoDEx-M validation MRR after 4 epochs .3272 at 1000, .3274 at 256: variant
  ``batch-256`` of ``benchmarks/defaults_grid.py --dataset codex-m``, stopped by hand after that
  validation). The published runs count a triple's two queries (reciprocal examples) in their
  batches of 100 to 1000 queries, i.e. 50 to 500 triples here;
- ``training.eval_every``: validation about every 10 minutes, at most every 5 epochs;
- ``training.reg_weight``: 0.1 instead of the default N3 weight on sparse graphs (fewer than 4 train
  triples per entity, as WN18RR's 2.1), the weight of the published ComplEx-N3 runs there; 0.01 on
  denser graphs of more than 1,000 entities (CoDEx, FB15k-237, YAGO3-10: 9 to 19 per entity), the
  weight the published grid chose on CoDEx-S and -M (codex-s, 2 threads, seed 0: best valid MRR
  .4756 at 0.005, .4813 at 0.01). The default (0.005) was chosen on umls and nations;
- ``training.lr_schedule``: ``plateau`` with ``lr_decay`` 0.5 on graphs of more than 1,000 entities:
  the learning rate halves at each validation that does not improve (codex-s, N3 0.01: best valid
  MRR .4813 at a constant rate, .4843 halving);
- ``training.autocast``: ``bf16`` (matrix products in bfloat16; tables, optimizer and loss in
  float32) for models that score by dot products (ComplEx, DistMult, ConvE) when a float32 epoch
  would take ``BF16_MIN_EPOCH_S`` or more and the device multiplies bfloat16 matrices at least
  ``BF16_MIN_SPEEDUP`` times as fast (``bf16_gflops``; docs/scale.md has the measurements).

The codex-s validation figures come from ``python benchmarks/defaults_grid.py --dataset codex-s``
(each variant pins the values compared). dim 1024's .4773 is the best up to epoch 45, where that
run was stopped by hand; the script runs it to its budget or early stop.

Each change comes with its reason, printed at the start of the run and kept in metrics.json
(``auto_defaults``). Runs whose defaults fit are left alone.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import torch

from ..config import ALL_ENTITY_MODES, parse_cadence

#: seconds per epoch the defaults aim at without a time budget
TARGET_EPOCH_S = 180.0
#: ... and with one: this share of the budget (about 8 epochs fit)
BUDGET_SHARE = 1 / 8
#: measured epoch time / the matrix products' time: the softmax over the (B, E) scores, the
#: regulariser and the optimizer (WN18RR, ComplEx dim 256, batch 1000, 2 CPU threads: 172 s against
#: 114 s of products at the measured GFLOP/s)
EPOCH_OVERHEAD = 1.5
DIMS = (1024, 512, 256, 128, 64, 32)
#: entities above which the dim may grow to twice the model's default (when the budget allows)
LARGE_GRAPH_ENTITIES = 10_000
#: triples x entities above which the batch grows to LARGE_BATCH
LARGE_GRAPH = 1e8
LARGE_BATCH = 1000
#: a slow device's speed: graphs whose defaults fit it are not measured at all
SLOW_GFLOPS = 5.0
#: seconds between validations the cadence aims at
VALIDATION_EVERY_S = 600.0
#: train triples per entity below which a graph counts as sparse, and the N3 weight it gets (the
#: published ComplEx-N3 runs: WN18RR 0.1 (kbc, ssl-relation-prediction); CoDEx 0.01, FB15k-237 0.05)
SPARSE_TRIPLES_PER_ENTITY = 4.0
SPARSE_REG_WEIGHT = 0.1
#: entities above which a graph that is not sparse gets MID_REG_WEIGHT (the published ComplEx-N3 grid's
#: choice on CoDEx-S and CoDEx-M)
MID_GRAPH_ENTITIES = 1000
MID_REG_WEIGHT = 0.01
#: the plateau schedule's factor on those graphs
PLATEAU_DECAY = 0.5
#: bf16 autocast is chosen where bfloat16 matrix products run at least this many times faster than
#: float32 ones (CPUs with AVX512-BF16 or AMX, GPUs with tensor cores; emulated bf16 is slower) ...
BF16_MIN_SPEEDUP = 1.5
#: ... and a float32 epoch would take at least this long (small graphs keep float32: nothing to gain)
BF16_MIN_EPOCH_S = 60.0


def measured_gflops(device: torch.device, seconds: float = 0.15, dtype: torch.dtype = torch.float32) -> float:
    """Matrix-product speed of ``device`` in ``dtype`` with the current torch threads, in GFLOP/s: the
    fastest of the products run within ``seconds`` (a product slowed by another process's burst
    does not shrink the fitted model)."""
    a = torch.randn(1024, 512, device=device).to(dtype)
    b = torch.randn(512, 2048, device=device).to(dtype)
    torch.mm(a, b)  # warm-up
    reps, best, start = 0, float("inf"), time.perf_counter()
    while True:
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        best, reps = min(best, now - t0), reps + 1
        if now - start >= seconds or reps >= 200:
            return 2 * 1024 * 512 * 2048 / best / 1e9


def bf16_is_fast(gflops: float, bf16_gflops: float) -> bool:
    """Whether bfloat16 products (``bf16_gflops``) run at least :data:`BF16_MIN_SPEEDUP` times as fast as
    float32 ones (``gflops``): the rule for bf16 autocast of every model kind."""
    return bf16_gflops >= BF16_MIN_SPEEDUP * gflops


def epoch_flops(n_train: int, n_entities: int, width: int, sides: int = 2) -> float:
    """Multiply-adds x 2 of one 1vsAll/KvsAll epoch: every query against every entity, forward and
    the two products of the backward pass, times ``EPOCH_OVERHEAD`` for the rest of a step."""
    return 2.0 * sides * n_train * n_entities * width * 3 * EPOCH_OVERHEAD


def user_set(cfg, key: str) -> bool:
    """Whether ``key`` was set by the user (a flag, --set, a config file), not left at a default."""
    source = (getattr(cfg, "sources", None) or {}).get(key, "default")
    return not (source == "default" or source.startswith("model default"))


def fit_defaults(cfg, n_entities: int, n_train: int, gflops: float, time_budget_s: Optional[float] = None,
                 entity_width: Optional[int] = None, bf16_gflops: Optional[float] = None) -> list[str]:
    """Adjust the values of ``cfg`` the user did not set to the graph's size and the device's speed
    (``gflops``: float32 products; ``bf16_gflops``: bfloat16 ones, None when not measured); returns one
    line per change ("model.dim 512 -> 128: ..."), empty when the defaults fit.

    ``entity_width``: the model's entity row width at ``cfg.model.dim`` (default 2 x dim, ComplEx)."""
    tc = cfg.training
    if tc.mode.lower() not in ALL_ENTITY_MODES or gflops <= 0:
        return []
    width = entity_width or 2 * int(cfg.model.dim)
    per_dim = width / max(1, int(cfg.model.dim))
    sides = 2 if tc.corrupt == "both" else 1
    target = time_budget_s * BUDGET_SHARE if time_budget_s else TARGET_EPOCH_S
    #: the matrix products' time relative to float32 ones (gflops / bf16_gflops once bf16 is chosen)
    product_share = 1.0

    def seconds(dim: int) -> float:
        flops = epoch_flops(n_train, n_entities, int(dim * per_dim), sides)
        return flops / (gflops * 1e9) * (product_share + EPOCH_OVERHEAD - 1) / EPOCH_OVERHEAD

    changes = []
    now = seconds(int(cfg.model.dim))
    if (bf16_gflops and bf16_is_fast(gflops, bf16_gflops) and now >= BF16_MIN_EPOCH_S
            and str(tc.autocast).lower() == "none" and not user_set(cfg, "training.autocast")):
        product_share = gflops / bf16_gflops
        changes.append(f"training.autocast none -> bf16: this device multiplies bfloat16 matrices "
                       f"{bf16_gflops / gflops:.1f}x as fast as float32 ({bf16_gflops:,.0f} against {gflops:,.0f} "
                       f"GFLOP/s measured); an epoch at dim {cfg.model.dim} takes about {now / 60:.1f} min in float32, "
                       f"{seconds(int(cfg.model.dim)) / 60:.1f} min with the products in bf16 (tables, optimizer and "
                       f"loss stay float32)")
        tc.autocast = "bf16"
        now = seconds(int(cfg.model.dim))
    default_dim = int(cfg.model.dim)
    grow = n_entities > LARGE_GRAPH_ENTITIES
    if (now > target or grow) and not user_set(cfg, "model.dim"):
        top = 2 * default_dim if grow else default_dim
        fits = [d for d in DIMS if d <= top and seconds(d) <= target]
        dim = fits[0] if fits else min(DIMS[-1], default_dim)
        speeds = (f"{gflops:,.0f} GFLOP/s measured in float32"
                  f"{f', {bf16_gflops:,.0f} in bf16, the products run in bf16' if product_share < 1 else ''}")
        if dim < default_dim:
            changes.append(f"model.dim {default_dim} -> {dim}: one epoch would take about {now / 60:.1f} min at "
                           f"dim {default_dim} on this device ({speeds}), {seconds(dim) / 60:.1f} min at {dim} "
                           f"(aim: {target / 60:.1f} min)")
        elif dim > default_dim:
            changes.append(f"model.dim {default_dim} -> {dim}: a graph of {n_entities:,} entities fits a larger model "
                           f"(the published ComplEx-N3 runs on such graphs use rank 1000); one epoch takes about "
                           f"{seconds(dim) / 60:.1f} min at dim {dim} on this device ({speeds}; aim: {target / 60:.1f} min)")
        cfg.model.dim = dim
        now = seconds(dim)
    if n_train * n_entities > LARGE_GRAPH and tc.batch_size < LARGE_BATCH and not user_set(cfg, "training.batch_size"):
        changes.append(f"training.batch_size {tc.batch_size} -> {LARGE_BATCH}: a graph of {n_entities:,} entities and "
                       f"{n_train:,} triples trains faster in larger batches (an epoch takes less time, and Adagrad "
                       f"learns about as much per epoch)")
        tc.batch_size = LARGE_BATCH
    cadence = parse_cadence(tc.eval_every)
    if cadence.epochs > 0 and now > VALIDATION_EVERY_S and not user_set(cfg, "training.eval_every"):
        part = float(f"{1.0 / math.ceil(now / VALIDATION_EVERY_S):.4g}")
        changes.append(f"training.eval_every {tc.eval_every} -> {part:g}: one epoch would take about {now / 60:.0f} "
                       f"min on this device; validating every {part:g} epoch (about {part * now / 60:.0f} min, at "
                       f"a batch boundary inside the epoch) keeps the best weights and early stopping in reach")
        tc.eval_every = part
    elif cadence.epochs > 0 and not user_set(cfg, "training.eval_every"):
        every = max(1, min(int(tc.eval_every), round(VALIDATION_EVERY_S / max(now, 1e-9))))
        if every != tc.eval_every:
            changes.append(f"training.eval_every {tc.eval_every} -> {every}: a validation about every "
                           f"{every * now / 60:.0f} min")
            tc.eval_every = every
    density = n_train / max(1, n_entities)
    if tc.regularizer == "n3" and not user_set(cfg, "training.reg_weight"):
        if density < SPARSE_TRIPLES_PER_ENTITY and tc.reg_weight < SPARSE_REG_WEIGHT:
            changes.append(f"training.reg_weight {tc.reg_weight:g} -> {SPARSE_REG_WEIGHT:g}: a sparse graph "
                           f"({density:.1f} train triples per entity) overfits with the default N3 weight (the "
                           f"published ComplEx-N3 runs on WN18RR use {SPARSE_REG_WEIGHT:g})")
            tc.reg_weight = SPARSE_REG_WEIGHT
        elif (density >= SPARSE_TRIPLES_PER_ENTITY and n_entities > MID_GRAPH_ENTITIES
              and tc.reg_weight < MID_REG_WEIGHT):
            changes.append(f"training.reg_weight {tc.reg_weight:g} -> {MID_REG_WEIGHT:g}: a graph of "
                           f"{n_entities:,} entities overfits with the default N3 weight, chosen on graphs of a "
                           f"few hundred (the published ComplEx-N3 runs on CoDEx-S and -M use {MID_REG_WEIGHT:g})")
            tc.reg_weight = MID_REG_WEIGHT
    if (n_entities > MID_GRAPH_ENTITIES and tc.lr_schedule == "none" and not user_set(cfg, "training.lr_schedule")
            and not user_set(cfg, "training.lr_decay")):
        changes.append(f"training.lr_schedule none -> plateau (lr_decay {tc.lr_decay:g} -> {PLATEAU_DECAY:g}): the "
                       f"learning rate halves at each validation that does not improve")
        tc.lr_schedule, tc.lr_decay = "plateau", PLATEAU_DECAY
    return changes


__all__ = ["SLOW_GFLOPS", "TARGET_EPOCH_S", "bf16_is_fast", "epoch_flops", "fit_defaults", "measured_gflops", "user_set"]
