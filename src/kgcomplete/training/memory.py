"""Up-front memory estimate of a training run, and the ``training.max_memory`` guard.

:func:`estimate_training_memory` adds up what a single-process run holds at its peak - tables,
optimizer state, triples, per-batch buffers, validation structures - from the configuration and
the dataset's sizes alone (the model is built with one entity row to learn its widths, so the
estimate is available before anything large is allocated). :func:`check_memory` refuses a run
whose estimate exceeds the limit, naming every part.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Optional

from ..config import ALL_ENTITY_MODES, parse_cadence

log = logging.getLogger(__name__)

GIB = 1 << 30
#: Python + torch + numpy + pandas after import (measured RSS, rounded up).
BASELINE_BYTES = 450 << 20
#: One vocabulary label in RAM: a short Python str, its pointer and the pandas hash table slot.
LABEL_BYTES = 110
_UNITS = {"": GIB, "b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
          "g": GIB, "gb": 10**9, "gib": GIB, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


class MemoryBudgetError(ValueError):
    """The estimated peak memory of a run exceeds ``training.max_memory``."""


def parse_memory(value) -> Optional[int]:
    """``"16GiB"``, ``"500MB"``, ``"2g"``, a number of GiB (``16``) -> bytes; ``""``/None/0 -> None."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, (int, float)):
        return int(value * GIB)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"training.max_memory={value!r}: expected e.g. 16GiB, 500MB, 2g or a number of GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def physical_memory() -> Optional[int]:
    """Total RAM of this machine in bytes (None where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n)} B"


@dataclass
class MemoryEstimate:
    """Estimated peak bytes per part; ``title`` describes the run."""

    parts: dict[str, int]
    title: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    #: the parts (or shares of parts) that live on the training device when it is a GPU: tables,
    #: optimizer state, training triples, batch buffers, evaluation scores
    on_device: dict[str, int] = field(default_factory=dict)
    #: what the device holds less with the entity table (and its optimizer state) in host memory
    entity_table_bytes: int = 0

    def device_bytes(self, host_table: bool = False) -> int:
        """Peak bytes on the training device: :attr:`on_device`, less the entity table and its
        optimizer state with ``host_table`` (:mod:`kgcomplete.training.placement`)."""
        return int(sum(self.on_device.values())) - (self.entity_table_bytes if host_table else 0)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def table(self, limit: Optional[int] = None) -> str:
        """Aligned text table, one part per line, then the total (and the limit, if any)."""
        width = max(len(k) for k in self.parts) + 2
        lines = [f"memory estimate: {self.title}"] if self.title else ["memory estimate:"]
        for k, v in self.parts.items():
            note = f"  ({self.notes[k]})" if k in self.notes else ""
            lines.append(f"  {k:<{width}}{fmt_bytes(v):>12}{note}")
        total = f"  {'total':<{width}}{fmt_bytes(self.total):>12}"
        if limit:
            total += f"  (limit {fmt_bytes(limit)})"
        lines.append(total)
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {"parts_bytes": dict(self.parts), "total_bytes": self.total}


def _model_shape(cfg) -> tuple[int, int, int, int]:
    """(entity width, relation width, relation rows per base relation, dense parameter count)."""
    from ..models import from_config

    probe = from_config(cfg, 1, 1)
    we, wr = probe.entity_emb.weight.shape[1], probe.relation_emb.weight.shape[1]
    rel_rows = probe.relation_emb.weight.shape[0]  # 1 or 2 (reciprocal)
    dense = sum(p.numel() for p in probe.parameters()) - we - rel_rows * wr
    return we, wr, rel_rows, dense


def entity_width(cfg) -> int:
    """The width of the model's entity rows at ``cfg.model.dim`` (e.g. 2 x dim for ComplEx)."""
    return _model_shape(cfg)[0]


def estimate_training_memory(
    cfg,
    num_entities: int,
    num_relations: int,
    num_train: int,
    num_all: Optional[int] = None,
    num_valid: int = 0,
    mmap_triples: bool = False,
) -> MemoryEstimate:
    """Peak memory of training ``cfg`` (a :class:`~kgcomplete.config.Config`) on a dataset of these sizes.

    ``num_all``: triples of all splits (default ``num_train``); more than ``num_train`` (a test or
    validation split to evaluate) adds the filter index; ``num_valid`` > 0 with
    a validation cadence (``training.eval_every`` not 0) also adds the best-parameters copy.
    ``mmap_triples``: the splits are memory-mapped (counted in full: touched pages are resident).
    """
    tc, ec = cfg.training, cfg.evaluation
    E, N = int(num_entities), int(num_train)
    n_all = int(num_all if num_all is not None else N)
    storage = str(cfg.model.storage_dtype)
    if storage not in _ITEMSIZE:
        raise ValueError(f"model.storage_dtype={storage!r}: expected one of {', '.join(_ITEMSIZE)}")
    we, wr, rel_rows, dense = _model_shape(cfg)
    nR = rel_rows * int(num_relations)
    ent_b = E * we * _ITEMSIZE[storage]
    rel_b = nR * wr * 4
    parts: dict[str, int] = {}
    notes: dict[str, str] = {}
    parts["entity table"] = ent_b
    notes["entity table"] = f"{E:,} x {we} {storage}"
    parts["relation table + dense layers"] = rel_b + dense * 4
    opt = tc.optimizer.lower()
    entity_state = 0
    if opt == "rowadagrad":
        entity_state = E * 4
        parts["optimizer state"] = (E + nR) * 4 + dense * 4
        notes["optimizer state"] = "row-wise Adagrad: one float32 per row"
    elif opt == "adagrad":
        entity_state = E * we * _ITEMSIZE[storage]
        parts["optimizer state"] = E * we * _ITEMSIZE[storage] + rel_b + dense * 4
        notes["optimizer state"] = "element-wise Adagrad"
    elif opt == "adam":
        entity_state = 2 * E * we * _ITEMSIZE[storage]
        parts["optimizer state"] = 2 * (E * we * _ITEMSIZE[storage] + rel_b + dense * 4)
        notes["optimizer state"] = "Adam: two moments per element"
    else:
        parts["optimizer state"] = 0
    parts["triples"] = n_all * 3 * 8
    notes["triples"] = "int64, memory-mapped" if mmap_triples else "int64"
    parts["vocabularies"] = (E + int(num_relations)) * LABEL_BYTES
    mode = tc.mode.lower()
    sides = 2 if tc.corrupt == "both" else 1
    B = int(tc.batch_size)
    if mode == "kvsall":
        parts["epoch order + KvsAll index"] = 2 * N * 8 * 4
    else:
        parts["epoch order"] = N * 8
    if mode in ALL_ENTITY_MODES:
        # (B, E) scores, softmax / targets and their gradients per side; every entity row is
        # looked up, so its gathered copy, sparse gradient and coalesced gradient exist too
        parts["batch buffers"] = sides * B * E * 4 * 4 + 3 * E * we * 4
        notes["batch buffers"] = f"{mode}: {sides} x ({B:,} x {E:,}) scores + full-table gradient"
        if str(tc.autocast).lower() == "bf16":  # the products' bf16 operands and results
            parts["batch buffers"] += sides * B * E * 2 + E * we * 2
            notes["batch buffers"] += " + their bf16 copies (autocast)"
    else:
        n_neg = tc.num_negatives * (B if tc.negative_sampler == "type" else 1)
        rows = 2 * B + sides * n_neg
        threads = max(1, int(tc.hogwild))  # each Hogwild thread holds its own batch
        parts["batch buffers"] = threads * (rows * we * 4 * 4 + sides * B * tc.num_negatives * 4 * 6)
        notes["batch buffers"] = (f"{rows:,} gathered rows, {sides} x ({B:,} x {tc.num_negatives}) scores"
                                  + (f", x {threads} Hogwild threads" if threads > 1 else ""))
    validating = not parse_cadence(tc.eval_every).never and num_valid > 0
    if validating or n_all > N:  # validation and the final test evaluation build the filter index
        parts["filter index"] = n_all * 8 * 6 + n_all * 3 * 8
        notes["filter index"] = "CSR (h,r)->t and (r,t)->h, plus building"
        parts["evaluation scores"] = int(ec.batch_elements) * 4 * 3
    if validating:
        parts["best-parameters copy"] = ent_b + rel_b + dense * 4
    parts["python + libraries"] = BASELINE_BYTES
    title = (f"{cfg.model.name} dim={cfg.model.dim}, {E:,} entities, {int(num_relations):,} relations, "
             f"{N:,} train triples, {tc.mode} batch {B:,}, {tc.optimizer}")
    on_device = {k: parts[k] for k in ("entity table", "relation table + dense layers", "optimizer state",
                                       "batch buffers", "evaluation scores") if k in parts}
    on_device["training triples"] = N * 3 * 8
    return MemoryEstimate(parts, title, notes, on_device, ent_b + entity_state)


def estimate_for_dataset(cfg, dataset) -> MemoryEstimate:
    """:func:`estimate_training_memory` with the sizes of a :class:`~kgcomplete.data.dataset.Dataset`."""
    import numpy as np

    n_all = sum(len(v) for v in dataset.splits.values())
    return estimate_training_memory(cfg, dataset.num_entities, dataset.num_relations, len(dataset.train), n_all,
                                    len(dataset.valid), isinstance(dataset.train, np.memmap))


def check_memory(est: MemoryEstimate, max_memory=None) -> None:
    """Raise :class:`MemoryBudgetError` (with the table) if ``est`` exceeds ``max_memory``.

    Without a limit, an estimate above this machine's RAM only logs a warning.
    """
    limit = parse_memory(max_memory)
    floor = sum(est.parts.get(k, 0) for k in ("python + libraries", "triples", "vocabularies"))
    if limit is not None and limit < floor:
        raise MemoryBudgetError(
            f"training.max_memory={fmt_bytes(limit)} is below what this run needs whatever the model settings: "
            f"{fmt_bytes(floor)} for the Python process with torch ({fmt_bytes(est.parts.get('python + libraries', 0))}), "
            f"the triples and the vocabularies; raise the limit (the whole run needs about {fmt_bytes(est.total)})")
    if limit is not None and est.total > limit:
        raise MemoryBudgetError(
            f"this run needs about {fmt_bytes(est.total)}, more than training.max_memory={fmt_bytes(limit)}:\n"
            f"{est.table(limit)}\nlower model.dim or training.batch_size, use model.storage_dtype=float16 with "
            f"optimizer rowadagrad, mode negatives, or training.eval_every=0")
    ram = physical_memory()
    if limit is None and ram is not None and est.total > ram:
        log.warning("estimated %s exceeds this machine's RAM (%s):\n%s", fmt_bytes(est.total), fmt_bytes(ram),
                    est.table())


__all__ = ["MemoryBudgetError", "MemoryEstimate", "check_memory", "entity_width", "estimate_for_dataset",
           "estimate_training_memory", "fmt_bytes", "parse_memory", "physical_memory"]
