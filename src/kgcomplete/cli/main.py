"""The ``kgc`` command line: the ``kgc`` group and its commands, one module per command group.

===================  ==========================================================
module               commands
===================  ==========================================================
:mod:`.train`        ``kgc train`` (every model family), ``kgc models``
:mod:`.inspect_run`  ``kgc evaluate``, ``kgc predict``, ``kgc export``
:mod:`.batch`        ``kgc score``, ``kgc split``, ``kgc compare``, ``kgc predict --file``
:mod:`.shards`       ``kgc shards gather``, ``kgc shards reshard`` (BESS runs)
:mod:`.datasets`     ``kgc datasets ...``
:mod:`.kgt5`         ``kgc qa ...`` (KGT5 question answering), ``kgc kgt5 import/export``
:mod:`.serve`        ``kgc serve``
:mod:`.report`       ``kgc report``
:mod:`.common`       what they share: errors, opening a run, optional extras
===================  ==========================================================

Every command module imports only click at module level (the library, torch and pandas are
imported inside the commands), so ``kgc --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
import warnings

import click

from . import batch, datasets, inspect_run, kgt5, report, serve, shards, train, tune
from .common import Group


class KgcGroup(Group):
    """``kgc``: ``-v``/``--verbose`` is taken anywhere on the line (``kgc train -v`` = ``kgc -v train``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            head, tail = args[: args.index("--")], args[args.index("--"):]
        else:
            head, tail = args, []
        flags = [a for a in head if a in ("-v", "--verbose")]
        rest = [a for a in head if a not in ("-v", "--verbose")]
        return super().parse_args(ctx, flags[:1] + rest + tail)


@click.group(cls=KgcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kgcomplete")
@click.option("-v", "--verbose", is_flag=True, help="Log details (every epoch, tracebacks); also after the command.")
def cli(verbose: bool) -> None:
    """kgcomplete: knowledge graph completion (KGE models, BESS, KGT5)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")


#: the commands of ``kgc`` (click lists them sorted by name)
COMMANDS: tuple[click.Command, ...] = (
    train.train, train.models,
    inspect_run.evaluate, inspect_run.predict, inspect_run.export,
    batch.score, batch.split, batch.compare,
    shards.shards,
    datasets.datasets,
    kgt5.qa, kgt5.kgt5,
    serve.serve,
    report.report,
    tune.tune,
)
for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:  # console-script entry point
    cli(prog_name="kgc")


if __name__ == "__main__":
    sys.exit(main())
