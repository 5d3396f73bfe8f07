"""Where tensors live: one ``--device`` option for every command and the Python API.

``auto`` (the default) is the first CUDA device when there is one, else the CPU; ``cpu``, ``cuda``
(= ``cuda:0``) and ``cuda:N`` name one. A run records the device it trained on (``training.device``
in config.yaml, the resolved ``device`` in metrics.json), but a run opens on any device: its files
hold CPU tensors, so a run trained on a GPU opens on a CPU-only machine and the other way round.
"""

from __future__ import annotations

from typing import Optional

import torch

#: what ``--device`` accepts
CHOICES = "auto | cpu | cuda | cuda:N"


def resolve_device(spec: Optional[str | torch.device] = "auto") -> torch.device:
    """The :class:`torch.device` that ``spec`` names; a CUDA device that is not there is a
    ``ValueError`` that says what is (one line, for the CLI)."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = 0 if text == "cuda" else text.split(":", 1)[1]
        if not str(index).isdigit():
            raise ValueError(f"device {spec!r}: expected {CHOICES}")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {spec!r}: no CUDA device on this machine (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto")
        if int(index) >= count:
            raise ValueError(f"device {spec!r}: this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
        return torch.device(f"cuda:{int(index)}")
    raise ValueError(f"device {spec!r}: expected {CHOICES}")


def describe(device: torch.device) -> str:
    """``cpu (2 threads)`` or ``cuda:0 (NVIDIA H200, 139.8 GiB)``, for the start of a run."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{device} ({p.name}, {p.total_memory / 2**30:.1f} GiB)"
    n = torch.get_num_threads()
    return f"{device} ({n} thread{'' if n == 1 else 's'})"


__all__ = ["CHOICES", "describe", "resolve_device"]
