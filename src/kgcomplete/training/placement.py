"""Where the entity table lives: all on the device, or in (pinned) host memory with the batch's rows
gathered to the device (``training.entity_table``: ``auto`` | ``device`` | ``host``).

A table larger than the GPU (DGL-KE's ``mix_cpu_gpu``, Marius' partition buffer) stays in host
memory with its row-wise Adagrad accumulator; each step of shared-negative training
(:class:`HostRows`) gathers the batch's *distinct* rows to the device, scores and differentiates
them there, applies the row-wise Adagrad step to the gathered rows on the device and writes them
back. The write-back runs on a background thread while the next batch is gathered and trained
(one batch in flight): rows the next batch shares with the one being written are taken from the
device copy of the freshly updated rows instead of the host, so the result equals training with
the whole table on the device, bit for bit in float32.

:func:`choose_placement` decides ``auto`` from the memory estimate's device part
(:meth:`~kgcomplete.training.memory.MemoryEstimate.device_bytes`) and the device's free memory (or
``training.max_device_memory``), and says why.

Shapes: ``U`` distinct rows of a batch, ``W`` the table's width, ``E`` entities.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .memory import MemoryEstimate, fmt_bytes, parse_memory
from .optimizers import RowAdagrad, round_to
from .row_gradients import supports_row_updates

#: ``training.entity_table`` values
PLACEMENTS = ("auto", "device", "host")


@dataclass(frozen=True)
class Placement:
    """``entity_table``: ``"device"`` or ``"host"``; ``reason``: one line for the start banner."""

    entity_table: str
    reason: str
    #: the choice is expected not to fit (the device part exceeds the limit and a host table cannot help)
    tight: bool = False

    @property
    def host_table(self) -> bool:
        return self.entity_table == "host"


def device_memory_available(device: torch.device) -> Optional[int]:
    """Free bytes on a CUDA device (None for the CPU: its limit is ``training.max_memory``)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def host_table_problem(cfg) -> Optional[str]:
    """Why a configuration cannot train with a host table (None when it can)."""
    tc = cfg.training
    if tc.mode.lower() != "negatives":
        return (f"training.mode={tc.mode} scores every entity each batch, so the whole table would move every "
                f"step; a host table needs training.mode=negatives")
    if tc.optimizer.lower() != "rowadagrad":
        return f"a host table is updated row by row: it needs training.optimizer=rowadagrad, not {tc.optimizer}"
    if int(tc.hogwild) > 1:
        return "a host table trains one batch at a time (training.hogwild=1)"
    from ..models import from_config

    if not supports_row_updates(from_config(cfg, 1, 1), tc.optimizer, tc.mode):
        return (f"model {cfg.model.name} has parameters besides its two tables or scores candidates its own "
                f"way, so its steps cannot run on gathered rows")
    return None


def choose_placement(cfg, estimate: MemoryEstimate, device: torch.device) -> Placement:
    """The entity table's place for ``cfg`` on ``device``, with the reason (one line).

    ``auto``: on the device when the estimate's device part fits the limit (``max_device_memory``,
    else the device's free memory; the CPU without a cap has none), else in host memory when the
    configuration allows (:func:`host_table_problem`), else on the device with a warning-worthy
    reason. ``device``/``host`` are taken as asked (``host`` refused with the reason when the
    configuration cannot).
    """
    tc = cfg.training
    asked = str(tc.entity_table).lower()
    if asked not in PLACEMENTS:
        raise ValueError(f"training.entity_table={tc.entity_table!r}: expected {' | '.join(PLACEMENTS)}")
    cap = parse_memory(tc.max_device_memory)
    free = device_memory_available(device)
    limit = cap if cap is not None else free
    limit_text = (f"training.max_device_memory={fmt_bytes(cap)}" if cap is not None
                  else f"{fmt_bytes(free)} free on {device}" if free is not None else None)
    need_all = estimate.device_bytes(host_table=False)
    need_host = estimate.device_bytes(host_table=True)
    problem = host_table_problem(cfg)
    if asked == "host":
        if problem:
            raise ValueError(f"training.entity_table=host: {problem}")
        return Placement("host", f"entity table in host memory (asked); the device holds {fmt_bytes(need_host)}")
    if asked == "device" or limit is None:
        how = "asked" if asked == "device" else "no device memory limit"
        return Placement("device", f"entity table on {device} ({how}; the device part is {fmt_bytes(need_all)})")
    if need_all <= limit:
        return Placement("device", f"entity table on {device}: the device part, {fmt_bytes(need_all)}, fits "
                                   f"{limit_text}")
    if problem:
        return Placement("device", f"entity table on {device} although the device part, {fmt_bytes(need_all)}, "
                                   f"exceeds {limit_text}: {problem}", tight=True)
    return Placement("host", f"entity table in host memory: on {device} the run would need {fmt_bytes(need_all)}, "
                             f"more than {limit_text}; with the table on the host the device holds "
                             f"{fmt_bytes(need_host)}")


def move_to_host(weight: torch.nn.Parameter) -> None:
    """Put a parameter's data in host memory, page-locked when CUDA is present (so that gathered rows
    copy to the GPU asynchronously)."""
    data = weight.data.to("cpu")
    if torch.cuda.is_available():
        data = data.pin_memory()
    weight.data = data


class HostRows:
    """The row-gradient step (:class:`~kgcomplete.training.row_gradients.RowLeaves`) on a table in
    host memory, with its row-wise Adagrad state there too.

    Per step: ``leaves = host_rows.leaves()`` is the step's lookup (a :class:`HostLeaves`, used like
    a ``RowLeaves``: ``leaves(ids) -> (*ids.shape, W)`` gathers the distinct rows to the device as a
    float32 leaf); after
    ``torch.autograd.grad``, :meth:`update` applies the Adagrad step to the gathered rows on the
    device and starts writing them back. :meth:`flush` waits for the write-back (before anything
    reads the table: validation, checkpoints, the end of an epoch).
    """

    def __init__(self, table: torch.nn.Parameter, optimizer, device: torch.device):
        self.table, self.device = table, device
        opt = optimizer.for_param(table) if hasattr(optimizer, "for_param") else optimizer
        if not isinstance(opt, RowAdagrad):
            raise TypeError(f"a host table needs optimizer rowadagrad, not {type(opt).__name__}")
        self.optimizer = opt
        self.group = next(g for g in opt.param_groups if any(q is table for q in g["params"]))
        state = opt.state[table]
        if "sum" not in state:
            state["sum"] = torch.full(table.shape[:1], self.group["init"], dtype=torch.float32)
        if torch.cuda.is_available() and not state["sum"].is_pinned():
            state["sum"] = state["sum"].pin_memory()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kgc-host-table")
        self._pending: Optional[concurrent.futures.Future] = None  # the write-back in flight
        self._fresh: Optional[tuple[Tensor, Tensor, Tensor]] = None  # its rows, values, accumulator (device)

    @property
    def accumulator(self) -> Tensor:
        return self.optimizer.state[self.table]["sum"]

    def leaves(self) -> "HostLeaves":
        """A lookup for one step (pass it where a ``RowLeaves`` goes): called once with the step's
        ids, it gathers their distinct rows to the device."""
        return HostLeaves(self)

    def _gather(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Rows ``(U,)`` (distinct, sorted, on the host) -> float32 values ``(U, W)`` and
        accumulator ``(U,)`` on the device, current as of the last update."""
        values = self._copy_in(self.table.detach(), rows).float()
        acc = self._copy_in(self.accumulator, rows)
        if self._fresh is not None:  # rows of the batch still being written back: its device copy
            f_rows, f_values, f_acc = self._fresh
            pos = torch.searchsorted(f_rows, rows).clamp_(max=len(f_rows) - 1)
            hit = f_rows[pos] == rows
            if hit.any():
                dst = hit.nonzero().squeeze(1).to(self.device)
                src = pos[hit].to(self.device)
                values[dst] = f_values[src].float()
                acc[dst] = f_acc[src]
        return values, acc

    def _copy_in(self, host: Tensor, rows: Tensor) -> Tensor:
        picked = host.index_select(0, rows)
        if self.device.type == "cuda":
            return picked.pin_memory().to(self.device, non_blocking=True)
        return picked.to(self.device)

    @torch.no_grad()
    def update(self, gathered: "HostLeaves", grad: Tensor) -> None:
        """Row-wise Adagrad on the gathered rows (on the device), then their write-back (in the
        background; the previous one is waited for first, so at most one is in flight)."""
        values = gathered.leaf.detach().clone()
        acc = gathered.acc
        local = torch.arange(len(gathered.rows), device=self.device)
        RowAdagrad._update_rows(values, acc, self.group["lr"], self.group["eps"], local, grad)
        values = round_to(values, self.table.dtype)
        self.flush()
        self._fresh = (gathered.rows, values, acc)
        values_host, acc_host = values.to("cpu", non_blocking=True), acc.to("cpu", non_blocking=True)
        event = None
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        self._pending = self._writer.submit(self._write_back, gathered.rows, values_host, acc_host, event)

    def _write_back(self, rows: Tensor, values: Tensor, acc: Tensor, event) -> None:
        if event is not None:
            event.synchronize()
        self.table.data.index_copy_(0, rows, values)
        self.accumulator.index_copy_(0, rows, acc)

    def flush(self) -> None:
        """Wait for the write-back in flight (its errors are raised here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
        self._fresh = None

    def close(self) -> None:
        self.flush()
        self._writer.shutdown(wait=True)


class HostLeaves:
    """One step's rows of a :class:`HostRows`, looked up like a ``RowLeaves``: called once with ids
    of any shape it returns their rows ``(*ids.shape, W)``; then ``rows (U,)`` (host), ``leaf (U, W)``
    (device, float32, the autograd leaf) and ``acc (U,)`` (device) hold what was gathered."""

    def __init__(self, source: HostRows):
        self.source = source
        self.rows: Optional[Tensor] = None
        self.leaf: Optional[Tensor] = None
        self.acc: Optional[Tensor] = None

    def __call__(self, ids: Tensor) -> Tensor:
        if self.rows is not None:
            raise RuntimeError("HostLeaves is looked up once per step")
        rows, inverse = torch.unique(ids.reshape(-1).cpu(), return_inverse=True)
        values, self.acc = self.source._gather(rows)
        self.rows, self.leaf = rows, values.requires_grad_()
        return self.leaf.index_select(0, inverse.to(self.leaf.device)).view(*ids.shape, -1)


__all__ = ["HostRows", "PLACEMENTS", "Placement", "choose_placement", "device_memory_available",
           "host_table_problem", "move_to_host"]
