"""The study: its storage, its settings, and the worker loop that runs trials.

A study lives in an Optuna storage (SQLite ``STUDY/study.db`` by default, any SQLAlchemy URL
otherwise); ``STUDY/study.json`` names it (storage URL, study name), and the study's own user
attribute :data:`SETTINGS_ATTR` holds what every worker needs (dataset, model, search space, base
config, sampler, pruner), so a second ``kgc tune`` -- another terminal, another machine -- joins it.

Every worker runs :func:`work`: under a file lock (``STUDY/.tune.lock``) it settles trials that died
(:func:`settle`), counts the study's trials and, while fewer than the target are finished or
running, starts one (``study.optimize(n_trials=1)``: Optuna's heartbeat thread runs beside it).
The lock makes the count exact for the workers that share ``STUDY/``; workers on other machines
(a shared database, separate folders) may together run a few trials above the target.

Trials that died -- a killed worker (its PID is gone, or its heartbeat went stale), a Ctrl-C -- are
marked FAIL and retried once more with the same parameters (:data:`MAX_RETRY` times in all) as a new
trial; a trial that failed by itself (diverged, a bad combination of options) keeps its error in the
user attribute ``error`` and counts as finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Optional

from ..atomic import atomic_write_text
from ..config import Config, parse_duration
from .space import Space, parse_space

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
LOCK_FILE = ".tune.lock"
SETTINGS_ATTR = "kgcomplete"
#: how often a died trial is tried again (a new trial with the same parameters each time)
MAX_RETRY = 2
#: exceptions that fail one trial (recorded in its ``error`` attribute) instead of stopping the worker
TRIAL_ERRORS = (FloatingPointError, ValueError, TypeError, KeyError, RuntimeError, MemoryError)


@dataclasses.dataclass
class Settings:
    """What every worker of a study needs; stored in the study (:data:`SETTINGS_ATTR`)."""

    dataset: str
    model: str
    space: dict  #: the parsed space (:meth:`Space.to_dict`) plus ``source``
    base: dict  #: the base config (:meth:`Config.to_dict`): defaults < per-model < --config < --set
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    trials: Optional[int] = None

    def parsed_space(self) -> Space:
        d = dict(self.space)
        return parse_space({k: v for k, v in d.items() if k != "source"}, d.get("source", "space"))

    def base_config(self) -> Config:
        return Config.from_dict(self.base)


# ------------------------------------------------------------------ storage and study
def storage_url(study_dir: Path, storage: Optional[str]) -> str:
    return storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"


def make_storage(url: str, heartbeat: int = 10):
    """An Optuna RDB storage with heartbeats (a worker that stops beating for ``4 x heartbeat`` s is
    dead: its running trial is failed by the next worker that looks); SQLite waits for its lock."""
    import optuna

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                          grace_period=4 * heartbeat)


def read_study_file(study_dir: Path) -> Optional[dict]:
    f = Path(study_dir) / STUDY_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def write_study_file(study_dir: Path, url: str, name: str) -> None:
    atomic_write_text(Path(study_dir) / STUDY_FILE, json.dumps({"storage": url, "study_name": name}, indent=2) + "\n")


def load_settings(study) -> Optional[Settings]:
    d = study.user_attrs.get(SETTINGS_ATTR)
    return Settings(**d) if d else None


def make_sampler(name: str, seed: int, space: Space, trials: Optional[int]):
    import optuna

    if name == "tpe":
        startup = max(3, min(10, (trials or 30) // 3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise ValueError(f"sampler {name!r}: expected tpe, random or grid")


def make_pruner(name: str, options: dict):
    import optuna

    kinds = {"median": optuna.pruners.MedianPruner, "halving": optuna.pruners.SuccessiveHalvingPruner,
             "none": optuna.pruners.NopPruner}
    if name not in kinds:
        raise ValueError(f"pruner {name!r}: expected median, halving or none")
    if name == "none":
        return kinds[name]()
    defaults = {"n_startup_trials": 3, "n_warmup_steps": 0} if name == "median" else {}
    try:
        return kinds[name](**{**defaults, **options})
    except TypeError as e:
        raise ValueError(f"search space `pruner` options {options}: {e}") from None


# ------------------------------------------------------------------ the lock
class StudyLock:
    """An ``flock`` on ``STUDY/.tune.lock`` (released by the OS if the process dies); ``release``
    may be called more than once."""

    def __init__(self, study_dir: Path):
        self.path = Path(study_dir) / LOCK_FILE
        self.fd: Optional[int] = None

    def acquire(self) -> "StudyLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fd, self.fd = self.fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "StudyLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------ dead trials and counts
def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of process ``pid`` (tells a reused PID apart), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"


def worker_id(number: int) -> dict:
    """Who runs trial ``number``: host, PID and the process's start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid), "trial": number}


def _dead_here(t) -> Optional[str]:
    """Why RUNNING trial ``t`` is dead, if its worker ran on this host and is gone; else None."""
    w = t.user_attrs.get("worker")
    if not isinstance(w, dict) or w.get("trial") != t.number or w.get("host") != socket.gethostname():
        return None  # not started here, or its worker has not written its id yet (the heartbeat decides)
    now = _start_time(int(w["pid"]))
    if now is None or (now != "?" and w.get("start") not in (None, "?") and now != w["start"]):
        return f"its worker (PID {w['pid']} on {w['host']}) died"
    return None


def _successors(trials) -> set[int]:
    """Numbers of trials that were retried (each retry names its predecessor last in retry_history)."""
    return {t.system_attrs["retry_history"][-1] for t in trials if t.system_attrs.get("retry_history")}


def settle(study) -> list[int]:
    """Fail the RUNNING trials whose worker died (on this host: at once; elsewhere: when Optuna's
    heartbeat goes stale) and retry every trial that died without an error of its own, up to
    :data:`MAX_RETRY` times. Returns the numbers of the trials retried now."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = _dead_here(t)
        if why:
            log.warning("trial %d: %s; marked failed", t.number, why)
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    retried_before = _successors(trials)
    done = []
    for t in trials:
        if t.state == TrialState.FAIL and "error" not in t.user_attrs and t.number not in retried_before:
            if len(t.system_attrs.get("retry_history", [])) < MAX_RETRY:
                _retry_callback()(study, t)
                done.append(t.number)
                log.warning("trial %d died; retrying its parameters as a new trial", t.number)
    return done


def _retry_callback():
    """Optuna's callback that adds a WAITING copy of a died trial (renamed in Optuna 4.9)."""
    import optuna.storages as st

    cls = getattr(st, "RetryHeartbeatStaleTrialCallback", None) or st.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(max_retry=MAX_RETRY)


@dataclasses.dataclass
class Counts:
    finished: int  #: COMPLETE, PRUNED, and FAIL that will not be retried
    running: int
    waiting: int
    died: int  #: FAIL trials that were retried


def count(study) -> Counts:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    succ = _successors(trials)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.FAIL and t.number not in succ) for t in trials)
    return Counts(finished, sum(t.state == TrialState.RUNNING for t in trials),
                  sum(t.state == TrialState.WAITING for t in trials),
                  sum(t.state == TrialState.FAIL and t.number in succ for t in trials))


# ------------------------------------------------------------------ one trial
def trial_dir(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / "trials" / f"{number:03d}"


class Objective:
    """Trains one trial's config into ``STUDY/trials/NNN`` (validation only, never the test split),
    reports each validation MRR to Optuna and prunes when its pruner says so; returns the best
    validation MRR. Budgets: the per-trial budget is the run's ``training.time_budget`` (the epoch
    that crosses it is validated); the study's deadline stops a trial after an epoch (PRUNED)."""

    def __init__(self, study_dir: Path, settings: Settings, lock: StudyLock, deadline: Optional[float],
                 trial_budget: Optional[float]):
        self.study_dir, self.settings, self.lock = Path(study_dir), settings, lock
        self.space, self.base = settings.parsed_space(), settings.base_config()
        self.deadline, self.trial_budget = deadline, trial_budget

    def __call__(self, trial) -> float:
        import optuna

        from ..api import train

        try:
            trial.set_user_attr("worker", worker_id(trial.number))
            trial.set_user_attr("folder", str(trial_dir(Path("."), trial.number)))
            for k in ("error", "stopped", "epochs", "train_time_s", "best_epoch"):
                if k in trial.user_attrs:  # inherited from the trial this one retries
                    trial.set_user_attr(k, None)
        finally:
            self.lock.release()  # the trial is counted and carries its worker: others may go on
        try:
            cfg = self.space.config(self.base, trial)
            cfg.training.progress = False
            if self.trial_budget is not None:  # the core's budget: the crossing epoch is validated
                own = parse_duration(cfg.training.time_budget, "training.time_budget")
                if own is None or self.trial_budget < own:
                    cfg.training.time_budget = f"{self.trial_budget:g}s"
        except (ValueError, TypeError, KeyError) as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        state = {"best": None, "pruned": False, "cut": None, "validations": 0}

        def on_epoch(record: dict) -> Optional[str]:
            if "valid_mrr" in record:
                v, epoch = float(record["valid_mrr"]), record["epoch"]
                state["best"] = v if state["best"] is None else max(state["best"], v)
                # Optuna's step: the validation's number (an epoch may hold several with
                # training.eval_every below 1, and Optuna keeps one value per step)
                state["validations"] += 1
                trial.report(v, state["validations"])
                if trial.should_prune():
                    state["pruned"] = True
                    return f"pruned by the tuner at epoch {epoch:g} (valid MRR {v:.4f})"
            if self.deadline is not None and time.time() >= self.deadline:
                state["cut"] = "the study's time budget is used up"
                return state["cut"]
            return None

        folder = trial_dir(self.study_dir, trial.number)
        try:
            run = train(self.settings.dataset, config=cfg, out=folder, evaluate_test=False, on_epoch=on_epoch)
        except TRIAL_ERRORS as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        metrics = json.loads((folder / "metrics.json").read_text())
        for k in ("epochs", "best_epoch", "stopped", "train_time_s"):
            trial.set_user_attr(k, metrics.get(k))
        if state["pruned"] or state["cut"]:
            raise optuna.TrialPruned(metrics.get("stopped"))
        value = state["best"]
        if value is None:  # no validation happened (eval_every 0, or stopped before the first)
            value = float(run.evaluate("valid")["mrr"])
        return ranked_valid_mrr(value, metrics)


def ranked_valid_mrr(best: float, metrics: dict) -> float:
    """A trial's value: the validation MRR its run ranks at. ``best``: the best validation of
    training (one reading of each triple); a run that chose a weight for both readings on the
    validation split (``metrics.json``: KGE ``reciprocal_scoring``, KGT5 ``reverse_reading``)
    ranks at the best of its choices."""
    for key in ("reciprocal_scoring", "reverse_reading"):
        both_ways = (metrics.get(key) or {}).get("valid_mrr")
        if both_ways:
            return max(float(v) for v in both_ways.values())
    return float(best)


# ------------------------------------------------------------------ the worker loop
def open_study(study_dir: Path, heartbeat: int = 10):
    """The Optuna study that ``STUDY/study.json`` names (without a sampler)."""
    import optuna

    info = read_study_file(study_dir)
    if info is None:
        raise FileNotFoundError(f"{study_dir}: not a study folder (no {STUDY_FILE})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.load_study(study_name=info["study_name"], storage=make_storage(info["storage"], heartbeat))


def work(study_dir: str, trials: Optional[int], deadline: Optional[float], trial_budget: Optional[float],
         heartbeat: int = 10, poll_s: float = 1.0) -> int:
    """One worker: run trials until the study has ``trials`` finished ones or the deadline passes;
    returns how many trials this worker ran."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_dir = Path(study_dir)
    study = open_study(study_dir, heartbeat)
    settings = load_settings(study)
    lock = StudyLock(study_dir)
    with lock:  # a seed of its own for each worker that ever joins (no two repeat each other's samples)
        n = int(study.user_attrs.get("workers_started", 0))
        study.set_user_attr("workers_started", n + 1)
    space = settings.parsed_space()
    if settings.sampler == "grid":  # a grid ends when every point was tried
        size = math.prod(len(v) for v in space.grid().values())
        trials = size if trials is None else min(trials, size)
    study.sampler = make_sampler(settings.sampler, settings.seed + 7919 * n, space, trials)
    study.pruner = make_pruner(settings.pruner, space.pruner)
    objective = Objective(study_dir, settings, lock, deadline, trial_budget)
    ran = 0
    while deadline is None or time.time() < deadline:
        lock.acquire()
        try:
            settle(study)
            c = count(study)
            if trials is not None and c.finished >= trials:
                break
            if trials is not None and c.waiting == 0 and c.finished + c.running >= trials:
                lock.release()  # the last trials run elsewhere; one of them may still die
                time.sleep(poll_s)
                continue
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, n_trials=1, catch=TRIAL_ERRORS, gc_after_trial=False)
            ran += 1
        finally:
            lock.release()
    return ran


def _work_process(args: tuple) -> int:  # a --jobs worker process (spawned: a fresh interpreter)
    import torch

    torch.set_num_threads(1)  # each trial sets training.threads; until then, stay small
    return work(*args)


__all__ = ["Counts", "MAX_RETRY", "Objective", "STUDY_FILE", "Settings", "StudyLock", "count", "make_pruner",
           "make_sampler", "make_storage", "open_study", "settle", "storage_url", "trial_dir",
           "work"]
