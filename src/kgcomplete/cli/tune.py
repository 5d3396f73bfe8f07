"""``kgc tune``: hyperparameter search (Optuna) whose trials are run folders; ``kgc tune --show STUDY``."""

from __future__ import annotations

import click

from .common import USER_ERRORS, fail, metrics_table, need

TUNE_EXTRA_HINT = "install the tuning extra: pip install 'kgcomplete[tune]'"


@click.command(epilog="A second `kgc tune --out STUDY` (another terminal; another machine with --storage) joins "
                      "the study; a killed study resumes where it stopped. See docs/tune.md.")
@click.option("--dataset", "-d", default=None, help="Registered name or folder (a new study needs it).")
@click.option("--model", "-m", default=None, help="Model name (default: complex); its family's default space applies.")
@click.option("--trials", "-n", type=click.IntRange(min=1), default=None,
              help="Finish this many trials in the study (all workers together).")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="The study folder.")
@click.option("--space", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Search space YAML (default: the model family's, see docs/tune.md).")
@click.option("--budget", default=None, metavar="DURATION", help="Wall-clock budget of this call, e.g. 2h, 40m, 1h30m.")
@click.option("--trial-budget", default=None, metavar="DURATION", help="Wall-clock budget of each trial, e.g. 5m.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine (trials then default to cores/jobs threads each).")
@click.option("--storage", default=None, metavar="URL",
              help="SQLAlchemy URL of the study's database (default: sqlite in STUDY/study.db).")
@click.option("--study-name", default=None, help="Name of the study in the database (default: the folder's name).")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default=None, help="Default: tpe.")
@click.option("--pruner", type=click.Choice(["median", "halving", "none"]), default=None, help="Default: median.")
@click.option("--seed", type=int, default=None, help="Sampler seed (default 0).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Base config YAML of every trial (below the space).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Base config key, e.g. training.epochs=30.")
@click.option("--final", is_flag=True, help="Then train best.yaml once with test evaluation into STUDY/final.")
@click.option("--show", "show_dir", type=click.Path(exists=True, file_okay=False), default=None, metavar="STUDY",
              help="Only report on STUDY: best trials table, best.yaml, plots, report.html (with --final: train it).")
@click.option("--all", "show_all", is_flag=True, help="List every trial, not the best ten.")
def tune(dataset, model, trials, out, space, budget, trial_budget, jobs, storage, study_name, sampler, pruner, seed,
         config_file, sets, final, show_dir, show_all) -> None:
    """Search hyperparameters: each trial trains a run folder STUDY/trials/NNN on the validation split."""
    from ..config import parse_override

    need("optuna", TUNE_EXTRA_HINT)
    overrides = {}
    for s in sets:
        try:
            k, v = parse_override(s)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--set") from None
        overrides[k] = v
    from ..tune.api import run_final, show
    from ..tune.api import tune as run_tune

    try:
        if show_dir:
            given = [n for n, v in (("--dataset", dataset), ("--model", model), ("--trials", trials), ("--out", out),
                                    ("--space", space), ("--budget", budget), ("--storage", storage)) if v]
            if given:
                fail(ValueError(f"--show only reports on a study; drop {', '.join(given)}"))
            final_metrics = run_final(show_dir) if final else None
            result = show(show_dir, final=final_metrics)
        else:
            if out is None:
                fail(ValueError("give the study folder: --out STUDY (or --show STUDY to report on one)"))
            result = run_tune(dataset=dataset, model=model, trials=trials, out=out, space=space, budget=budget,
                              trial_budget=trial_budget, jobs=jobs, storage=storage, study_name=study_name,
                              sampler=sampler, pruner=pruner, seed=seed, config=config_file, final=final, **overrides)
    except USER_ERRORS as e:
        fail(e)
    from ..tune.report import format_table

    click.echo(format_table(result.rows, None if show_all else 10))
    if result.best is not None:
        click.echo(f"best: trial {result.best.number}, validation MRR {result.best.value:.4f}; "
                   f"config: {result.best_config}")
    else:
        click.echo("no trial has completed yet")
    click.echo(f"report: {result.report}")
    if result.final and "test" in result.final:
        click.echo(f"final run: {result.path / 'final'}")
        click.echo(metrics_table(result.final["valid"], "valid"))
        click.echo(metrics_table(result.final["test"], "test"))


__all__ = ["tune"]
