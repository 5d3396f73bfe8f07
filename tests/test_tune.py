"""``kgc tune`` / ``kgcomplete.tune``: tiny Optuna studies on nations (DistMult, few epochs, one thread).

A study runs and reports; its best.yaml trains again through ``kgc train --config`` to the same
validation MRR; a worker killed mid-trial (SIGKILL) resumes with no trial lost or duplicated; two
processes on one SQLite study finish N trials together; the median pruner prunes a hopeless region;
the per-trial budget stops a trial and best.yaml keeps what was measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import kgcomplete

optuna = pytest.importorskip("optuna")  # the [tune] extra; .ci/run installs it (a skip here fails CI)

from optuna.trial import TrialState  # noqa: E402

BASE = {"training.threads": 1, "training.epochs": 3, "training.eval_every": 1, "model.dim": 16}
BASE_SETS = [a for k, v in BASE.items() for a in ("--set", f"{k}={v}")]


def _kgc(*args, timeout=120, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "kgcomplete", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def _cli(*args):
    """``kgc ARGS`` in this process (click's runner: fast, no interpreter start)."""
    from click.testing import CliRunner

    from kgcomplete.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def _kgc_bg(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "kgcomplete", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _trials(study_dir: Path):
    from kgcomplete.tune.study import open_study

    return open_study(study_dir).get_trials()


def _space(tmp_path: Path, params: dict, pruner: dict | None = None) -> Path:
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump({"params": params, **({"pruner": pruner} if pruner else {})}))
    return f


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "study"
    result = kgcomplete.tune("nations", model="distmult", trials=3, out=out, sampler="random", seed=3, **BASE)
    return out, result


def test_a_tiny_study_runs_and_reports(study):
    out, result = study
    trials = _trials(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["000", "001", "002"]
    for t in trials:
        folder = out / "trials" / f"{t.number:03d}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert "test" not in metrics  # tuning never evaluates the test split
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        best_logged = max(r["valid_mrr"] for r in log if "valid_mrr" in r)
        # the value is the validation MRR the run ranks at: both readings, at the weight chosen on valid
        both_ways = metrics["reciprocal_scoring"]["valid_mrr"]
        assert both_ways["0"] == pytest.approx(best_logged) and t.value == pytest.approx(max(both_ways.values()))
        assert sorted(t.intermediate_values) == [1, 2, 3]  # each validation reported to Optuna
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        assert cfg["model"]["dim"] == t.params.get("model.dim", 16)  # the sampled value trained
        assert cfg["training"]["epochs"] == 3
    assert result.best.value == max(t.value for t in trials)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Best trials" in page
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = _cli("tune", "--show", out)
    assert shown.exit_code == 0, shown.output
    assert f"best: trial {result.best.number}, validation MRR {result.best.value:.4f}" in shown.output


def test_best_yaml_trains_as_is_with_kgc_train(study, tmp_path):
    out, result = study
    best = out / "best.yaml"
    res = _cli("train", "--config", best, "--out", tmp_path / "again", "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["valid"]["mrr"] == pytest.approx(result.best.value, abs=1e-6)  # the same run again
    assert "test" in metrics
    trial_cfg = yaml.safe_load((out / "trials" / f"{result.best.number:03d}" / "config.yaml").read_text())
    again = yaml.safe_load((tmp_path / "again" / "config.yaml").read_text())
    for cfg in (trial_cfg, again):
        cfg["training"].pop("progress")
    assert again == trial_cfg


def test_final_trains_best_yaml_with_test_once(study):
    out, result = study
    from kgcomplete.tune import run_final

    metrics = run_final(out)
    assert metrics["valid"]["mrr"] == pytest.approx(result.best.value, abs=1e-6) and 0 < metrics["test"]["mrr"] <= 1
    mtime = (out / "final" / "metrics.json").stat().st_mtime_ns
    assert run_final(out) == metrics and (out / "final" / "metrics.json").stat().st_mtime_ns == mtime  # not twice


def test_killed_mid_trial_resumes_with_no_trial_lost_or_duplicated(tmp_path):
    out = tmp_path / "study"
    args = ["tune", "-d", "nations", "-m", "distmult", "-n", "3", "-o", str(out), "--pruner", "none",
            "--sampler", "random", *BASE_SETS, "--set", "training.epochs=40", "--set", "training.eval_every=10"]
    p = _kgc_bg(*args)
    log = out / "trials" / "001" / "log.jsonl"
    deadline = time.time() + 90
    while not (log.exists() and log.read_text().count("\n") >= 3) and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, p.stdout.read()
    os.kill(p.pid, signal.SIGKILL)  # mid-trial 1: it stays RUNNING in the database
    p.wait()
    assert [t.state for t in _trials(out)] == [TrialState.COMPLETE, TrialState.RUNNING]
    res = _kgc("tune", "-o", str(out), "-n", "3")  # resume: the study's settings come from its database
    assert res.returncode == 0, res.stderr
    trials = _trials(out)
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1 and len(states) == 4
    dead = trials[1]
    assert dead.state == TrialState.FAIL and "error" not in dead.user_attrs
    retry = [t for t in trials if (t.system_attrs.get("retry_history") or [None])[-1] == 1]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state == TrialState.COMPLETE
    # one folder per trial number; the died trial's folder is kept (no metrics), the others finished
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{t.number:03d}" for t in trials]
    assert not (out / "trials" / "001" / "metrics.json").exists()
    assert all((out / "trials" / f"{t.number:03d}" / "metrics.json").exists() for t in trials if t.number != 1)
    assert "retry of 1" in res.stdout


def test_a_worker_on_another_machine_is_dead_when_its_heartbeat_goes_stale(study, tmp_path):
    import shutil

    from kgcomplete.tune.study import count, open_study, settle, worker_id

    out = tmp_path / "copy"
    shutil.copytree(study[0], out)
    (out / "study.json").write_text(json.dumps({"storage": f"sqlite:///{out / 'study.db'}", "study_name": "study"}))
    s = open_study(out, heartbeat=1)  # grace period 4 s
    alive, silent = s.ask(), s.ask()
    for t in (alive, silent):
        t.set_user_attr("worker", {**worker_id(t.number), "host": "elsewhere"})  # not this machine's PIDs
        s._storage.record_heartbeat(t._trial_id)
    time.sleep(5.5)  # SQLite keeps heartbeats in whole seconds: more than the 4 s grace period for sure
    s._storage.record_heartbeat(alive._trial_id)
    assert settle(s) == [silent.number]  # failed by its stale heartbeat and retried
    states = {t.number: t.state for t in s.get_trials()}
    assert states[silent.number] == TrialState.FAIL and states[alive.number] == TrialState.RUNNING
    assert count(s).waiting == 1 and count(s).died == 1 and count(s).finished == 3


def test_two_processes_finish_n_trials_together(tmp_path):
    out = tmp_path / "study"
    args = ["tune", "-d", "nations", "-m", "distmult", "-n", "4", "-o", str(out), "--pruner", "none",
            "--sampler", "random", *BASE_SETS, "--set", "training.epochs=80", "--set", "training.eval_every=40"]
    procs = [_kgc_bg(*args), _kgc_bg(*args)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trials = _trials(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # exactly N, none running, none lost
    assert {t.user_attrs["worker"]["pid"] for t in trials} == {p.pid for p in procs}  # both ran trials
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["000", "001", "002", "003"]


def test_jobs_run_trials_in_worker_processes(tmp_path):
    out = tmp_path / "study"
    kgcomplete.tune("nations", model="distmult", trials=4, out=out, jobs=2, sampler="random", pruner="none",
                    **{**BASE, "training.epochs": 80, "training.eval_every": 40})
    trials = _trials(out)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    from kgcomplete.tune.study import open_study

    assert open_study(out).user_attrs["workers_started"] == 2  # this process and one spawned worker
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2  # both ran trials


def test_the_median_pruner_prunes_a_hopeless_region(tmp_path):
    space = _space(tmp_path, {"training.lr": {"choices": [1.0e-6, 0.1]}}, {"n_startup_trials": 1})
    out = tmp_path / "study"
    kgcomplete.tune("nations", model="distmult", trials=8, out=out, space=space, sampler="random", seed=0,
                    **{**BASE, "training.epochs": 5})
    trials = _trials(out)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["training.lr"] == 1e-6 for t in pruned)
    for t in pruned:
        metrics = json.loads((out / "trials" / f"{t.number:03d}" / "metrics.json").read_text())
        assert metrics["stopped"].startswith("pruned by the tuner") and metrics["epochs"] < 5
    good = [t.value for t in trials if t.state == TrialState.COMPLETE and t.params["training.lr"] == 0.1]
    assert good and min(good) > max(max(t.intermediate_values.values()) for t in pruned)


def test_a_grid_ends_when_every_point_was_tried(tmp_path):
    space = _space(tmp_path, {"training.lr": {"choices": [0.05, 0.1]}, "model.dim": {"low": 8, "high": 16, "step": 8}})
    out = tmp_path / "study"
    kgcomplete.tune("nations", model="distmult", trials=10, out=out, space=space, sampler="grid", pruner="none",
                    **{**BASE, "training.epochs": 1})
    trials = _trials(out)
    assert sorted((t.params["training.lr"], t.params["model.dim"]) for t in trials) == [
        (0.05, 8), (0.05, 16), (0.1, 8), (0.1, 16)]


def test_the_trial_budget_stops_a_trial_and_best_yaml_keeps_its_epochs(tmp_path):
    space = _space(tmp_path, {"training.lr": {"choices": [0.1]}})
    out = tmp_path / "study"
    r = kgcomplete.tune("nations", model="distmult", trials=1, out=out, space=space, trial_budget="1.5s",
                        **{**BASE, "training.epochs": 100000, "training.patience": 0})
    epochs = r.best.user_attrs["epochs"]
    assert r.best.user_attrs["stopped"].startswith("time budget of 1.5s") and 1 <= epochs < 100000
    log = [json.loads(line) for line in (out / "trials" / "000" / "log.jsonl").read_text().splitlines()]
    assert "valid_mrr" in log[-1]  # the epoch that crossed the budget was validated
    best = yaml.safe_load((out / "best.yaml").read_text())["training"]
    assert best["epochs"] == epochs and best["time_budget"] == ""  # the final run trains what was measured


def test_a_study_budget_ends_the_call(tmp_path):
    t0 = time.monotonic()
    kgcomplete.tune("nations", model="distmult", out=tmp_path / "s", budget="3s", sampler="random",
                    **{**BASE, "training.epochs": 100000, "training.eval_every": 50})
    assert time.monotonic() - t0 < 60
    trials = _trials(tmp_path / "s")
    assert trials and trials[-1].state == TrialState.PRUNED
    assert trials[-1].user_attrs["stopped"] == "the study's time budget is used up"


def test_joining_with_other_settings_is_refused_and_bad_spaces_are_one_line_errors(study, tmp_path):
    out, _ = study
    res = _cli("tune", "-o", out, "-n", "3", "-m", "complex")
    assert res.exit_code == 1 and "is a study with model distmult" in res.output
    bad = _space(tmp_path, {"training.learning_rate": {"low": 0.01, "high": 0.1}})
    with pytest.raises(ValueError, match="space.yaml: training.learning_rate: unknown key"):
        kgcomplete.tune("nations", model="distmult", trials=1, out=tmp_path / "s", space=bad)
    bad.write_text(yaml.safe_dump({"params": {"training.lr": {"low": 0.1}}}))
    res = _cli("tune", "-d", "nations", "-n", "1", "-o", tmp_path / "s2", "--space", bad)
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "give `choices` or both" in res.output
    assert res.output.count("\n") == 1  # one line, no traceback
    res = _cli("tune", "-d", "nations", "-o", tmp_path / "s3")
    assert res.exit_code == 1 and "--trials" in res.output and "--budget" in res.output
    assert not (tmp_path / "s3").exists() and not (tmp_path / "s").exists()  # a refused study leaves no folder


def test_default_spaces_fit_every_model_and_the_config():
    from kgcomplete.config import build_config
    from kgcomplete.models import model_names
    from kgcomplete.tune.space import load_space
    from kgcomplete.config import parse_duration

    for name in model_names():
        load_space(None, name).check(build_config(name))  # every key and extreme value is accepted
    assert parse_duration("1h30m") == 5400 and parse_duration("40m") == 2400 and parse_duration(90) == 90
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_kgcomplete_tune_is_callable_as_the_package_and_the_function():
    import kgcomplete.tune.space  # noqa: F401  (binds the package as kgcomplete.tune)

    assert callable(kgcomplete.tune)
    from kgcomplete.tune import api

    assert kgcomplete.tune.tune is api.tune


def test_validations_inside_an_epoch_are_each_reported(tmp_path):
    out = tmp_path / "study"
    kgcomplete.tune("nations", model="distmult", trials=1, out=out, sampler="random", seed=3,
                    **{**BASE, "training.epochs": 2, "training.eval_every": 0.5})
    (t,) = _trials(out)
    log = [json.loads(line) for line in (out / "trials" / "000" / "log.jsonl").read_text().splitlines()]
    valid = [r["valid_mrr"] for r in log if "valid_mrr" in r]
    assert len(valid) == 4  # two per epoch, none lost to a shared Optuna step
    assert [t.intermediate_values[i] for i in sorted(t.intermediate_values)] == pytest.approx(valid)


def test_a_trial_is_worth_the_validation_mrr_its_run_ranks_at():
    from kgcomplete.tune.study import ranked_valid_mrr

    assert ranked_valid_mrr(0.41, {}) == 0.41  # one reading: training's best validation
    kge = {"reciprocal_scoring": {"valid_mrr": {"0": 0.41, "0.25": 0.43, "0.5": 0.42}, "chosen": 0.25}}
    assert ranked_valid_mrr(0.41, kge) == 0.43
    # KGT5: training validated a subset; the choice ranked the whole validation split
    kgt5 = {"reverse_reading": {"valid_mrr": {"0": 0.88, "0.1": 0.87, "0.25": 0.86, "0.5": 0.80}, "chosen": 0.0}}
    assert ranked_valid_mrr(0.90, kgt5) == 0.88
    assert ranked_valid_mrr(0.5, {"reverse_reading": None, "reciprocal_scoring": None}) == 0.5
