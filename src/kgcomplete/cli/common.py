"""What the ``kgc`` command modules share: error reporting, opening a run, optional extras, tables.

Imports only click at module level (``kgc --help`` loads every command module); the library is
imported inside the functions.
"""

from __future__ import annotations

import importlib
from typing import NoReturn

import click

METRIC_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")

#: exceptions the library raises for bad input (a message for the user, not a traceback)
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, TypeError)

SERVE_EXTRA_HINT = "install the serving extra: pip install 'kgcomplete[serve]'"


def message(exc: BaseException) -> str:
    """The text of ``exc`` for the user (a KeyError's message without the quotes ``str`` adds)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def fail(exc: BaseException) -> NoReturn:
    """Stop the command with ``Error: <message>`` (exit status 1)."""
    raise click.ClickException(message(exc))


def open_run(run_path: str, ensemble: str | None = None):
    """Open any run folder (optionally ensembled with the KGE run ``ensemble``) or stop with a
    one-line error; a missing optional extra (e.g. the KGT5 one for ``--ensemble``) says so."""
    from ..api import load_run

    try:
        run = load_run(run_path)
        if ensemble:
            from ..seq2seq.ensemble import EnsembleRun

            run = EnsembleRun(run, load_run(ensemble))
        return run
    except ImportError as e:  # e.g. --ensemble without the KGT5 extra
        raise click.ClickException(f"cannot open {run_path}: {e}")
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(e)


def need(module: str, hint: str = SERVE_EXTRA_HINT) -> None:
    """Stop with an install hint when the optional dependency ``module`` is missing."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise click.ClickException(f"`{module}` is not installed ({e}); {hint}") from None


def metrics_table(metrics: dict, title: str = "") -> str:
    """Both / head / tail rows of MRR, MR and Hits@k."""
    rows = [f"{title:<8}" + "".join(f"{k:>10}" for k in METRIC_KEYS)]
    for label, m in (("both", metrics), ("head", metrics.get("head")), ("tail", metrics.get("tail"))):
        if m:
            rows.append(f"{label:<8}" + "".join(f"{m[k]:>10.4f}" if k != "mr" else f"{m[k]:>10.2f}" for k in METRIC_KEYS))
    return "\n".join(rows)


__all__ = ["METRIC_KEYS", "SERVE_EXTRA_HINT", "USER_ERRORS", "fail", "message", "metrics_table", "need", "open_run"]
