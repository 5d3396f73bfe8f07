"""What the ``kgc`` command modules share: error reporting, opening a run, optional extras, tables.

Imports only click at module level (``kgc --help`` loads every command module); the library is
imported inside the functions.
"""

from __future__ import annotations

import importlib
from typing import NoReturn

import click

METRIC_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")

#: exceptions the library raises for bad input (a message for the user, not a traceback);
#: FloatingPointError: training diverged (NaN/inf loss)
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, TypeError, FloatingPointError)

#: what to do about an operating-system error, by errno name
_OS_HINTS = {
    "ENOSPC": "the disk is full; free space (the run's last checkpoint is kept) and resume with --resume",
    "EDQUOT": "the disk quota is used up; free space and resume with --resume",
    "EROFS": "the file system is read-only; choose another --out",
    "EACCES": "permission denied; choose a folder you can write",
    "EPERM": "permission denied; choose a folder you can write",
}

SERVE_EXTRA_HINT = "install the serving extra: pip install 'kgcomplete[serve]'"


def message(exc: BaseException) -> str:
    """The text of ``exc`` for the user, on one line (a KeyError's message without the quotes
    ``str`` adds; an OS error with its file and what to do)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.strerror and not isinstance(exc, (FileNotFoundError, FileExistsError)):
        import errno

        name = errno.errorcode.get(exc.errno or 0, "")
        where = f"{exc.filename}: " if exc.filename else ""
        hint = _OS_HINTS.get(name)
        text = f"{where}{exc.strerror}" + (f" ({hint})" if hint else "")
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split("\n")[0].split()) if "\n" in text else text


class Group(click.Group):
    """The ``kgc`` group: an error a command lets through -- bad input, a diverged training, a full
    disk, a read-only folder -- ends the command with one ``Error: ...`` line (exit status 1)
    instead of a traceback (``kgc -v`` logs the traceback too)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            from ..data.download import DownloadError

            if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA), without importing torch
                first = str(e).splitlines()[0] if str(e) else ""
                raise click.ClickException(
                    f"out of GPU memory ({first[:200]}); lower training.batch_size / evaluation.batch_elements, "
                    f"set --max-memory, or use --device cpu (the last checkpoint is kept)") from None
            if not isinstance(e, (*USER_ERRORS, OSError, UnicodeDecodeError, DownloadError)):
                raise
            import logging

            logging.getLogger("kgcomplete.cli").debug("traceback", exc_info=True)
            raise click.ClickException(message(e)) from None


def fail(exc: BaseException) -> NoReturn:
    """Stop the command with ``Error: <message>`` (exit status 1)."""
    raise click.ClickException(message(exc))


def device_option(help_text: str = "Where the model runs: auto (a GPU when there is one) | cpu | cuda | cuda:N."):
    """The ``--device`` option every command that runs a model shares."""
    return click.option("--device", default=None, metavar="auto|cpu|cuda|cuda:N", help=help_text)


def ensemble_options(command):
    """``--ensemble KGE_RUN`` and ``--ensemble-rule`` (parameters ``ensemble``, ``ensemble_rule``) of the
    commands that open a KGT5 run, for :func:`open_run`."""
    from ..seq2seq import ENSEMBLE_RULES  # the package module only: no KGT5 dependency

    command = click.option("--ensemble-rule", type=click.Choice(ENSEMBLE_RULES), default=ENSEMBLE_RULES[0],
                           show_default=True,
                           help="With --ensemble: product (log p_KGE + w * KGT5 log-prob) or paper (KGT5's bonus "
                                "rule); the weight is tuned on the validation split either way.")(command)
    return click.option("--ensemble", type=click.Path(exists=True, file_okay=False), default=None,
                        help="KGE run to ensemble with this KGT5 run.")(command)


def open_run(run_path: str, ensemble: str | None = None, device: str | None = None, rule: str = "product"):
    """Open any run folder on ``device`` (default auto; optionally ensembled with the KGE run
    ``ensemble`` under the ensemble ``rule``) or stop with a one-line error; a missing optional extra
    (e.g. the KGT5 one for ``--ensemble``) says so."""
    from ..api import load_run

    try:
        run = load_run(run_path, device=device or "auto")
        if ensemble:
            from ..seq2seq.ensemble import EnsembleRun

            run = EnsembleRun(run, load_run(ensemble, device=device or "auto"), rule=rule)
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
    w = max(8, len(title) + 1)
    rows = [f"{title:<{w}}" + "".join(f"{k:>10}" for k in METRIC_KEYS)]
    for label, m in (("both", metrics), ("head", metrics.get("head")), ("tail", metrics.get("tail"))):
        if m:
            rows.append(f"{label:<{w}}" + "".join(f"{m[k]:>10.4f}" if k != "mr" else f"{m[k]:>10.2f}" for k in METRIC_KEYS))
    return "\n".join(rows)


__all__ = ["Group", "METRIC_KEYS", "device_option", "SERVE_EXTRA_HINT", "USER_ERRORS", "fail", "message", "metrics_table", "need", "open_run"]
