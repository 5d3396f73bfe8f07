"""The ``tracking`` config section and the factory of tracker observers. Light: imports neither a
tracker library nor torch (those load in :mod:`.trackers` when a run asks for one)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import register_section
from ..runs.observers import register_observer_factory

#: ``tracking.kind`` values (comma-separated for several)
TRACKERS = ("tensorboard", "mlflow", "wandb")


@dataclass
class TrackingConfig:
    """``tracking.kind``: none, or one or more of tensorboard, mlflow, wandb (comma-separated).

    ``uri``: MLflow tracking URI (default: ``$MLFLOW_TRACKING_URI``, else the local file store
    ``./mlruns``, which MLflow 3 keeps in maintenance mode: ``sqlite:///mlflow.db`` for its newer
    features); ``project``: MLflow experiment / W&B project; ``run_name``: default the run
    folder's name. TensorBoard writes to ``RUN/tensorboard``; W&B runs offline (``RUN/wandb``,
    ``wandb sync`` uploads it) unless ``WANDB_MODE`` says otherwise.
    """

    kind: str = "none"
    uri: str = ""
    project: str = "kgcomplete"
    run_name: str = ""


def requested(cfg) -> list[str]:
    """The trackers ``cfg`` asks for; a ValueError names an unknown one."""
    text = str(cfg.section("tracking").kind or "none").strip().lower()
    if text in ("", "none"):
        return []
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    for k in kinds:
        if k not in TRACKERS:
            raise ValueError(f"tracking.kind={text!r}: {k!r} is not a tracker; expected none or "
                             f"{', '.join(TRACKERS)} (comma-separated for several)")
    return list(dict.fromkeys(kinds))


def make_trackers(cfg) -> list:
    kinds = requested(cfg)
    if not kinds:
        return []
    from .trackers import build

    return [build(kind, cfg.section("tracking")) for kind in kinds]


register_section("tracking", TrackingConfig)
register_observer_factory(make_trackers)
