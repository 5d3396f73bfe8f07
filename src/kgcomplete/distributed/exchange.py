"""Collectives with autograd, and the three ways of scoring a BESS step.

- ``embeddings`` (default): every worker gathers from its shard the tails and negatives that each
  worker needs, and one balanced ``all_to_all`` (``dist.all_to_all_single``, supported by gloo and
  NCCL) moves them to the worker that scores them.
- ``scores``: tails are moved as above (``P`` rows per block); the queries are all-gathered, every
  worker scores all queries against the negatives it drew locally, and one ``all_to_all`` sends
  the ``(B, k)`` score blocks back.
- ``allgather``: the whole entity table is all-gathered every step (baseline for measurement).

Backward passes run the transposed collective (``all_to_all`` for ``all_to_all``; ``all_to_all``
+ sum for ``all_gather``), so gradients land on the worker that owns the rows.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

EXCHANGES = ("embeddings", "scores", "allgather")
#: added to the scores of placeholder negatives (a shard without entities of a type)
MASKED_SCORE = -1.0e4


class StepTimer:
    """Accumulates wall time per phase (``sampling``, ``gather``, ``exchange``, ``compute``, ``update``)."""

    def __init__(self, device: Optional[torch.device] = None):
        self.totals: dict[str, float] = defaultdict(float)
        self.cuda = device is not None and torch.device(device).type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, phase: str, seconds: float) -> None:
        self.totals[phase] += seconds

    def reset(self) -> None:
        self.totals.clear()


class Comm:
    """The worker group: ``rank``/``world``; a single worker (``world == 1``) needs no process group."""

    def __init__(self, rank: int = 0, world: int = 1, group=None, timer: Optional[StepTimer] = None):
        self.rank, self.world, self.group = rank, world, group
        self.timer = timer

    @classmethod
    def from_env(cls, timer: Optional[StepTimer] = None) -> "Comm":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), None, timer)
        return cls(0, 1, None, timer)

    def _timed(self, fn, *args):
        if self.timer is None:
            return fn(*args)
        t0 = self.timer.now()
        out = fn(*args)
        self.timer.add("exchange", self.timer.now() - t0)
        return out

    # ------------------------------------------------------- raw collectives
    def _a2a(self, x: Tensor) -> Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=self.group)
        return out

    def _ag(self, x: Tensor) -> Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x, group=self.group)
        return torch.stack(parts)

    # ----------------------------------------------------- autograd-aware
    def all_to_all(self, x: Tensor) -> Tensor:
        """``(n, ...)``: chunk ``j`` goes to worker ``j``; returns ``(n, ...)``, chunk ``j`` from worker ``j``."""
        if self.world == 1:
            return x
        return _AllToAll.apply(x, self)

    def all_gather(self, x: Tensor) -> Tensor:
        """``(...)`` -> ``(n, ...)``, entry ``j`` from worker ``j``; backward sums the gradients."""
        if self.world == 1:
            return x.unsqueeze(0)
        return _AllGather.apply(x, self)

    # ------------------------------------------------------- no autograd
    def all_reduce_(self, x: Tensor) -> Tensor:
        """In-place sum over workers."""
        if self.world > 1:
            self._timed(dist.all_reduce, x, dist.ReduceOp.SUM, self.group)
        return x

    def all_gather_nograd(self, x: Tensor) -> Tensor:
        return x.unsqueeze(0) if self.world == 1 else self._timed(self._ag, x)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=self.group)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm._timed(comm._a2a, x)

    @staticmethod
    def backward(ctx, g):
        return ctx.comm._timed(ctx.comm._a2a, g), None


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm._timed(comm._ag, x)

    @staticmethod
    def backward(ctx, g):
        # entry j of g belongs to worker j: send it there and sum what comes back (= reduce-scatter)
        return ctx.comm._timed(ctx.comm._a2a, g).sum(0), None
