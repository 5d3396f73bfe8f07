"""Configuration files shipped with kgcomplete. ``published/<dataset>-<model>.yaml``: published
hyperparameters of a model on a benchmark, each citing its source in its first lines
(``kgc train --dataset wn18rr --config published``)."""

from __future__ import annotations

from pathlib import Path

PUBLISHED = Path(__file__).resolve().parent / "published"


def published_configs() -> dict[tuple[str, str], Path]:
    """``(dataset, model) -> file`` of every shipped published configuration."""
    out = {}
    for f in sorted(PUBLISHED.glob("*.yaml")):
        dataset, _, model = f.stem.rpartition("-")
        out[(dataset, model)] = f
    return out


def published_config(dataset: str, model: str | None = None) -> Path:
    """The published configuration of ``model`` (default: the one shipped for the dataset) on
    ``dataset`` (a name, or a folder whose name is the benchmark's: ``../data/codex-s``)."""
    name = Path(str(dataset)).name.lower()
    found = published_configs()
    if model is not None and (name, model.lower()) in found:
        return found[(name, model.lower())]
    if model is None:
        for (d, _m), f in found.items():
            if d == name:
                return f
    have = ", ".join(f"{d} ({m})" for d, m in found)
    raise FileNotFoundError(f"no published configuration for {model or 'any model'} on {name!r}; shipped: {have}")


__all__ = ["PUBLISHED", "published_config", "published_configs"]
