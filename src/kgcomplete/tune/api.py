"""The entry points: :func:`tune` (create or join a study, run trials, report, optionally the final
run), :func:`show` (the report of a study) and :func:`final` (train ``best.yaml`` once, with test)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

from ..config import Config, build_config, parse_duration, validate
from .report import BEST_FILE, final_metrics, write_report
from .space import base_config, load_space
from .study import (LOCK_FILE, SETTINGS_ATTR, Settings, StudyLock, make_pruner, make_sampler, make_storage, open_study,
                    read_study_file, storage_url, work, write_study_file)

FINAL_DIR = "final"


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune` / :func:`show` return: the study folder and Optuna study, the best trial
    (None while none completed), ``best.yaml``, the HTML report, the rows of the trials table and the
    final run's metrics (``valid`` and ``test``; None without ``final``)."""

    path: Path
    study: object
    best: object
    best_config: Optional[Path]
    report: Path
    rows: list
    final: Optional[dict] = None


def tune(
    dataset: Optional[str] = None,
    model: Optional[str] = None,
    trials: Optional[int] = None,
    out: str | Path | None = None,
    space: str | Path | None = None,
    budget=None,
    trial_budget=None,
    jobs: int = 1,
    storage: Optional[str] = None,
    study_name: Optional[str] = None,
    sampler: Optional[str] = None,
    pruner: Optional[str] = None,
    seed: Optional[int] = None,
    config: str | Path | None = None,
    final: bool = False,
    heartbeat: int = 10,
    **overrides,
) -> TuneResult:
    """Search hyperparameters with Optuna; every trial is a run folder ``out/trials/NNN``.

    Args:
        dataset: a registered name or a folder (its validation split is the objective; test is never read).
        model: model name (default complex); its family's default space applies unless ``space`` is given.
        trials: finish this many trials in the study (all workers together); None: until ``budget``.
        out: the study folder (SQLite ``study.db`` inside unless ``storage``). An existing study is joined:
            its stored dataset, model, space and base config win, and a differing argument is an error.
        space: a search-space YAML file (format: ``kgcomplete/tune/spaces/bilinear.yaml``).
        budget / trial_budget: wall-clock limits ("2h", "40m", seconds) of this call and of each trial.
        jobs: worker processes on this machine (each trial's ``training.threads`` defaults to cores / jobs).
        storage: an SQLAlchemy URL (e.g. ``postgresql://host/db``) for workers on several machines.
        sampler: tpe (default) | random | grid. pruner: median (default) | halving | none.
        config / overrides: the base config of every trial (a YAML file; dotted keys like
            ``**{"training.epochs": 30}``): above the space's ``fixed`` keys, below sampled parameters.
        final: afterwards train ``best.yaml`` once with test evaluation into ``out/final``.
    """
    if out is None:
        raise ValueError("tune needs a study folder (out=...)")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if trials is not None and trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    seconds, per_trial = parse_duration(budget, "budget"), parse_duration(trial_budget, "trial budget")
    study_dir = Path(out)
    if trials is None and seconds is None and read_study_file(study_dir) is None:
        raise ValueError("give a number of trials (--trials) or a time budget (--budget), or both")
    study, settings = _open_or_create(study_dir, dataset, model, space, storage, study_name, sampler, pruner, seed,
                                      config, overrides, jobs, trials, heartbeat)
    trials = trials if trials is not None else settings.trials
    if trials is None and seconds is None:
        raise ValueError("give a number of trials (--trials) or a time budget (--budget), or both")
    deadline = time.time() + seconds if seconds is not None else None
    args = (str(study_dir), trials, deadline, per_trial, heartbeat)
    if jobs == 1:
        work(*args)
    else:
        import multiprocessing as mp

        from .study import _work_process

        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_work_process, args=(args,), name=f"kgc-tune-{i}") for i in range(1, jobs)]
        for p in procs:
            p.start()
        try:
            work(*args)
        finally:
            for p in procs:
                p.join()
        bad = [p.exitcode for p in procs if p.exitcode]
        if bad:
            raise RuntimeError(f"{len(bad)} of {jobs - 1} worker processes failed (exit codes {bad})")
    result = show(study_dir, heartbeat=heartbeat)
    if final:
        result.final = run_final(study_dir)
        result = show(study_dir, heartbeat=heartbeat, final=result.final)
    return result


def _open_or_create(study_dir: Path, dataset, model, space, storage, study_name, sampler, pruner, seed, config,
                    overrides, jobs, trials, heartbeat):
    import optuna

    from ..api import _expand_overrides

    if study_dir.exists() and not study_dir.is_dir():
        raise FileExistsError(f"{study_dir} exists and is a file, not a study folder; choose another --out")
    created = not study_dir.exists()
    study_dir.mkdir(parents=True, exist_ok=True)
    try:
        with StudyLock(study_dir):  # one creator at a time (SQLite tables, settings, study.json)
            info = read_study_file(study_dir)
            if info is None:
                if any(p.name != LOCK_FILE for p in study_dir.iterdir()):
                    raise FileExistsError(f"{study_dir} exists and is not a study folder (no study.json); "
                                          f"choose another --out")
                url, name = storage_url(study_dir, storage), study_name or study_dir.resolve().name
            else:
                url, name = info["storage"], info["study_name"]
                if storage and storage != url:
                    raise ValueError(f"{study_dir} is a study stored in {url}, not {storage}")
                if study_name and study_name != name:
                    raise ValueError(f"{study_dir} holds the study {name!r}, not {study_name!r}")
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(study_name=name, storage=make_storage(url, heartbeat), direction="maximize",
                                        load_if_exists=True)
            given = _given_settings(dataset, model, space, sampler, pruner, seed, config,
                                    _expand_overrides(overrides), jobs, trials)
            settings = Settings(**study.user_attrs[SETTINGS_ATTR]) if SETTINGS_ATTR in study.user_attrs else None
            if settings is None:
                settings = given()
                study.set_user_attr(SETTINGS_ATTR, dataclasses.asdict(settings))
            else:
                _check_same(study_dir, settings, dataset, model, space, sampler, pruner, seed, config, overrides,
                            given)
            if info is None:
                write_study_file(study_dir, url, name)
    except BaseException:
        if created and read_study_file(study_dir) is None:  # nothing of a study was kept: leave no folder
            import shutil

            shutil.rmtree(study_dir, ignore_errors=True)
        raise
    return study, settings


def _dataset_source(dataset) -> str:
    p = Path(str(dataset)).expanduser()
    return str(p.resolve()) if p.exists() else str(dataset)  # a folder: absolute, so best.yaml works anywhere


def _given_settings(dataset, model, space, sampler, pruner, seed, config, overrides, jobs, trials):
    """A function that builds (and checks) the settings from the arguments: called for a new study."""

    def build() -> Settings:
        from ..data.registry import load_configured

        if dataset is None:
            raise ValueError("a new study needs --dataset")
        name = model or "complex"
        sp = load_space(space, name)
        base = base_config(sp, name, config, overrides)
        base.data.source = _dataset_source(dataset)
        if jobs > 1 and base.training.threads == 0:
            import os

            base.training.threads = max(1, (os.cpu_count() or 1) // jobs)
        validate(base)
        sp.check(base)
        make_sampler(sampler or "tpe", 0, sp, trials)  # a grid needs discrete parameters
        make_pruner(pruner or "median", sp.pruner)
        load_configured(base.data)  # the dataset loads (else every trial would fail)
        return Settings(dataset=base.data.source, model=name, space={**sp.to_dict(), "source": sp.source},
                        base=base.to_dict(), sampler=sampler or "tpe", pruner=pruner or "median", seed=seed or 0,
                        trials=trials)

    return build


def _check_same(study_dir, settings: Settings, dataset, model, space, sampler, pruner, seed, config, overrides, given):
    """Joining a study: every argument given must agree with the study's settings."""
    diffs = []
    if dataset is not None and _dataset_source(dataset) != settings.dataset:
        diffs.append(f"dataset {settings.dataset}")
    if model is not None and model != settings.model:
        diffs.append(f"model {settings.model}")
    for what, mine, theirs in (("sampler", sampler, settings.sampler), ("pruner", pruner, settings.pruner),
                               ("seed", seed, settings.seed)):
        if mine is not None and mine != theirs:
            diffs.append(f"{what} {theirs}")
    if space is not None or config is not None or overrides:
        try:
            other = given()
        except ValueError:
            other = None
        if other is not None and space is not None and {k: v for k, v in other.space.items() if k != "source"} != \
                {k: v for k, v in settings.space.items() if k != "source"}:
            diffs.append(f"the search space of {settings.space.get('source')}")
        if other is not None and (config is not None or overrides) and other.base != settings.base:
            diffs.append("another base config (--config/--set)")
    if diffs:
        raise ValueError(f"{study_dir} is a study with {'; '.join(diffs)}: join it without those options "
                         f"or with the same values, or start another --out")


def show(study_dir: str | Path, heartbeat: int = 10, final: Optional[dict] = None) -> TuneResult:
    """Write ``best.yaml``, the plots and ``report.html`` of the study in ``study_dir``."""
    study_dir = Path(study_dir)
    study = open_study(study_dir, heartbeat)
    r = write_report(study_dir, study)
    return TuneResult(study_dir, study, r["best"], r["best_yaml"], r["report"], r["rows"],
                      final or final_metrics(study_dir))


def run_final(study_dir: str | Path) -> dict:
    """Train ``STUDY/best.yaml`` once with test evaluation into ``STUDY/final`` (as
    ``kgc train --config STUDY/best.yaml --out STUDY/final`` would); returns its metrics. A final run
    of the same config is not trained twice; one of an older best config is an error."""
    import json

    from ..api import train

    study_dir = Path(study_dir)
    best = study_dir / BEST_FILE
    if not best.is_file():
        show(study_dir)
    if not best.is_file():
        raise ValueError(f"{study_dir}: no trial has completed yet, so there is no best config to train")
    out = study_dir / FINAL_DIR
    want = build_config(None, best, {})
    if (out / "config.yaml").is_file():
        have = Config.load(out / "config.yaml")
        have.training.progress = want.training.progress
        if have != want:
            raise FileExistsError(f"{out} was trained from another config than the current {best}; "
                                  f"remove or rename it to train the new best config")
        if (out / "metrics.json").is_file() and "test" in json.loads((out / "metrics.json").read_text()):
            return final_metrics(study_dir)
        train(out=out, resume=True)
    else:
        train(config=best, out=out, evaluate_test=True)
    return final_metrics(study_dir)


__all__ = ["FINAL_DIR", "TuneResult", "run_final", "show", "tune"]
