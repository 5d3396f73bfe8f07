"""Shared by the resume tests: one uninterrupted run and one stopped early then resumed, per variant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import kgcomplete as kgc


def full_part_resumed(tmp_path_factory, train: Callable[[Path, str, int], object], k: int, n: int,
                      prefix: str = "") -> Callable[[str], Path]:
    """``get(variant)`` -> a folder with ``full`` (``n`` epochs in one go), ``part`` (``k`` epochs, kept as
    it is) and ``resumed`` (a copy of ``part`` resumed to ``n``); each variant is trained once.
    ``train(out, variant, epochs)`` trains one run."""
    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            root = tmp_path_factory.mktemp(f"{prefix}{variant}")
            train(root / "full", variant, n)
            train(root / "part", variant, k)
            shutil.copytree(root / "part", root / "resumed")
            kgc.train(out=root / "resumed", resume=True, epochs=n)
            cache[variant] = root
        return cache[variant]

    return get


def untimed(obj, timing: set[str]):
    """``obj`` (a log record, metrics, nested dicts and lists) without the keys in ``timing``."""
    if isinstance(obj, dict):
        return {k: untimed(v, timing) for k, v in obj.items() if k not in timing}
    if isinstance(obj, list):
        return [untimed(v, timing) for v in obj]
    return obj


def log_records(run: Path) -> list[dict]:
    """The records of ``run/log.jsonl``."""
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
