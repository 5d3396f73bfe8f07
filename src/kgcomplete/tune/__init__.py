"""Hyperparameter search (``kgc tune``, :func:`kgcomplete.tune`): Optuna studies whose trials are
ordinary run folders.

=================  =============================================================================
module             what
=================  =============================================================================
:mod:`.space`      search spaces (YAML; the default per model family in ``spaces/``)
:mod:`.study`      storage, settings, the worker loop, one trial (:class:`~.study.Objective`),
                   died trials (marked failed, retried)
:mod:`.report`     best trials table, ``best.yaml``, plots, ``report.html``
:mod:`.api`        :func:`tune`, :func:`show`, :func:`run_final`
=================  =============================================================================

A feature: it builds on the core (``kgcomplete.train`` with its ``on_epoch`` hook) and nothing in the
core imports it. Optuna is imported inside the functions (``pip install 'kgcomplete[tune]'``).

``kgcomplete.tune`` is this package *and* the function: the package is callable
(``kgcomplete.tune(dataset=..., out=...)`` calls :func:`.api.tune`), so importing one of its modules
does not hide the function.
"""

import sys
import types


def __getattr__(name: str):  # lazy: importing the package pulls in neither torch nor optuna
    if name in ("tune", "show", "run_final", "TuneResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from .api import tune

        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["TuneResult", "run_final", "show", "tune"]
