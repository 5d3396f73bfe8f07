"""``kgc shards``: convert a sharded (BESS, ``kgc train --workers N``) run folder.

``gather`` writes a single-table run (a normal KGE run folder, e.g. for tools that want one
embedding matrix or to continue on one process); ``reshard`` copies the run to another number of
workers (parameters and entity optimizer state), to resume or evaluate it with that many. Both are
:meth:`ShardedRun.gather <kgcomplete.distributed.run.ShardedRun.gather>` and
:meth:`ShardedRun.reshard <kgcomplete.distributed.run.ShardedRun.reshard>`; the source run is
only read.
"""

from __future__ import annotations

from pathlib import Path

import click

from .common import USER_ERRORS, fail, open_run


@click.group("shards")
def shards() -> None:
    """Gather or re-shard a sharded (BESS) run."""


def _new_folder(out: str) -> None:
    p = Path(out)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        fail(FileExistsError(f"{out} already exists and is not empty; give a new folder"))


def _open_sharded(run: str):
    from ..distributed.run import ShardedRun

    r = open_run(run)
    if not isinstance(r, ShardedRun):
        fail(ValueError(f"{run} is not a sharded run (one trained with --workers N): it has one entity table already"))
    return r


@shards.command("gather")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
def gather(run, out) -> None:
    """Write the sharded RUN as one single-table KGE run folder OUT.

    Best and latest weights are gathered; OUT opens like any run (kgc evaluate OUT)."""
    _new_folder(out)
    r = _open_sharded(run)
    n = r.sharding.n_shard
    try:
        r.gather(out)
    except USER_ERRORS as e:
        fail(e)
    click.echo(f"gathered {n} shards of {run} into {out} ({r.sharding.num_entities:,} entities, one table)")


@shards.command("reshard")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--workers", "-n", required=True, type=int, metavar="N", help="Number of workers (shards) of the copy.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to create.")
def reshard(run, workers, out) -> None:
    """Copy the sharded RUN re-sharded for N workers into OUT.

    Weights and entity optimizer state are moved to the new shards; OUT is evaluated like any run
    and resumed with N workers (kgc train --resume OUT)."""
    if workers < 2:
        fail(ValueError("--workers must be at least 2 (for a single-table run: kgc shards gather)"))
    _new_folder(out)
    r = _open_sharded(run)
    n = r.sharding.n_shard
    try:
        r.reshard(workers, out)
    except USER_ERRORS as e:
        fail(e)
    click.echo(f"re-sharded {run} from {n} to {workers} shards into {out} "
               f"(resume with: kgc train --resume {out})")


__all__ = ["gather", "reshard", "shards"]
