"""Run observers: what follows a training run besides its folder (experiment trackers).

A feature registers a factory (:func:`register_observer_factory`) from its light ``section.py``;
:func:`observers_for` asks every factory for the observers a configuration wants. The trainer of a
run calls :class:`Observers` at the start (the config), after every epoch (its log record) and at
the end (metrics.json's content and the run folder). An observer that cannot start is an error
before the first epoch; one that fails later is reported once as a warning and dropped: a
tracker's outage never stops or changes the training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)


class RunObserver:
    """Hooks of one training run; every method is optional (the defaults do nothing)."""

    name = "observer"

    def start(self, cfg, folder: Path) -> None:
        """Before the first epoch: the resolved config and the run folder."""

    def epoch(self, record: dict) -> None:
        """After every epoch: its log record (epoch, loss, lr, time_s, triples_per_s; valid_mrr ...)."""

    def end(self, metrics: dict, folder: Path) -> None:
        """After the final evaluation: the content of metrics.json."""

    def close(self) -> None:
        """Release resources (also after a failed or interrupted run)."""


#: factories ``(cfg) -> list[RunObserver]`` registered by features
_FACTORIES: list[Callable[..., list[RunObserver]]] = []


def register_observer_factory(factory: Callable[..., list[RunObserver]]) -> None:
    """Add a factory that turns a config into the observers it asks for (none: an empty list)."""
    if factory not in _FACTORIES:
        _FACTORIES.append(factory)


class Observers:
    """Every observer of a run, called together; a failing one is warned about once and dropped."""

    def __init__(self, observers: list[RunObserver]):
        self.observers = list(observers)

    def __bool__(self) -> bool:
        return bool(self.observers)

    def _call(self, method: str, *args) -> None:
        for obs in list(self.observers):
            try:
                getattr(obs, method)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker never stops the training
                log.warning("%s stopped following this run (%s failed: %s: %s)", obs.name, method,
                            type(e).__name__, e)
                self.observers.remove(obs)
                try:
                    obs.close()
                except Exception:  # noqa: BLE001
                    pass

    def start(self, cfg, folder: Path) -> None:
        """Start every observer; one that cannot start is an error (the user asked for it), before training."""
        try:
            for obs in self.observers:
                obs.start(cfg, Path(folder))
        except Exception:
            self.close()
            raise

    def epoch(self, record: dict) -> None:
        self._call("epoch", record)

    def end(self, metrics: dict, folder: Path) -> None:
        self._call("end", metrics, Path(folder))

    def close(self) -> None:
        self._call("close")


def observers_for(cfg) -> Observers:
    """The observers ``cfg`` asks for (feature sections are loaded with the config)."""
    from ..config import load_feature_sections

    load_feature_sections()
    found: list[RunObserver] = []
    for factory in _FACTORIES:
        found += factory(cfg) or []
    return Observers(found)


__all__ = ["Observers", "RunObserver", "observers_for", "register_observer_factory"]
