"""What `kgc train` tells the person running it: the start banner, a line per validation, why it
stopped, where an interrupted run was saved, where the files are; no progress bars off a terminal,
a line a minute inside an epoch instead; the resolved config with the source of every value; a dry
run that writes nothing."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from click.testing import CliRunner

import kgcomplete as kgc
from kgcomplete.cli.main import cli

QUICK = ["--dim", "16", "--set", "training.threads=1"]


def _train(*args):
    res = CliRunner().invoke(cli, ["train", "-d", "nations", *QUICK, *args])
    return res


def test_a_training_run_talks(tmp_path):
    out = tmp_path / "run"
    res = _train("--out", str(out), "--epochs", "60", "--eval-every", "2", "--patience", "2")
    assert res.exit_code == 0, res.output
    err, std = res.stderr, res.stdout
    assert f"run folder: {out} (new)" in err
    assert "data: nations: 14 entities, 55 relations; train 1,592, valid 199, test 201" in err
    assert re.search(r"model: complex dim 16 \([\d,]+ parameters\); 1vsAll, adagrad lr 0\.1, batch 256; up to 60 "
                     r"epochs, validation every 2, early stop after 2 without gain", err)
    assert "memory: about" in err and "entity table  " not in err  # one line, not the 13-line table
    lines = [l for l in err.splitlines() if l.startswith("epoch ")]
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    validated = [r for r in log if "valid_mrr" in r]
    assert len(lines) == len(validated) > 0  # one line per validation, each stays
    last = validated[-1]
    assert f"valid MRR {last['valid_mrr']:.4f}" in lines[-1] and f"loss {last['loss']:.4f}" in lines[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"stopped at epoch {metrics['epochs']}: {metrics['stopped']}" in err
    if metrics["epochs"] < 60:
        assert "early stop" in metrics["stopped"] and f"keeps the weights of epoch {metrics['best_epoch']}" in err
    assert "it/s" not in err and "batch/s" not in err and "\r" not in err  # no bars: stderr is no terminal
    assert f"next: kgc evaluate {out}" in std and "kgc serve" in std and "trained 1 epochs" not in std


def test_resuming_an_early_stopped_run_says_why_nothing_trains(tmp_path):
    out = tmp_path / "run"
    res = _train("--out", str(out), "--epochs", "200", "--eval-every", "1", "--patience", "1", "--lr", "0.5")
    assert res.exit_code == 0, res.output
    first = json.loads((out / "metrics.json").read_text())
    assert first["epochs"] < 200 and "early stop" in first["stopped"]
    res = CliRunner().invoke(cli, ["train", "--resume", str(out), "--epochs", "300"])
    assert res.exit_code == 0, res.output
    assert f"nothing to train: the run stopped early at epoch {first['epochs']}" in res.stderr
    assert "--patience" in res.stderr
    res = CliRunner().invoke(cli, ["train", "--resume", str(out), "--patience", "3", "--epochs", "300"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["epochs"] > first["epochs"]  # it trained on


def test_interrupted_run_says_where_it_saved_and_how_to_go_on(tmp_path, capsys):
    def stop_at_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        kgc.train("nations", model="distmult", out=out, dim=8, epochs=10, threads=1, on_epoch=stop_at_2)
    err = capsys.readouterr().err
    assert f"interrupted: saved epoch 2 to {out}; continue with `kgc train --resume {out}`" in err
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["epoch"] == 2


def test_print_config_names_the_source_of_every_value(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"training": {"batch_size": 64}}))
    res = CliRunner().invoke(cli, ["train", "-m", "transe", "--config", str(cfg_file), "--lr", "0.2",
                                   "--print-config"])
    assert res.exit_code == 0, res.output
    rows = {l.split(":")[0].strip(): l for l in res.stdout.splitlines() if l.startswith("  ")}
    assert rows["lr"].rstrip().endswith("# flag") and "0.2" in rows["lr"]
    assert rows["batch_size"].rstrip().endswith(f"# file {cfg_file}")
    assert rows["optimizer"].rstrip().endswith("# model default (transe)")
    assert rows["seed"].rstrip().endswith("# default")
    assert yaml.safe_load(re.sub(r"\s+#.*", "", res.stdout))["training"]["lr"] == 0.2  # it is YAML


def test_dry_run_writes_nothing(tmp_path):
    out = tmp_path / "run"
    res = _train("--out", str(out), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "memory estimate: complex dim=16" in res.stdout and "entity table" in res.stdout
    assert "dry run: nothing written" in res.stdout and not out.exists()


def test_a_memory_limit_below_the_floor_says_so(tmp_path):
    res = _train("--out", str(tmp_path / "run"), "--max-memory", "300MB")
    assert res.exit_code == 1 and "below what this run needs whatever the model settings" in res.output
    assert "lower model.dim" not in res.output and not (tmp_path / "run").exists()


def test_verbose_after_the_command(tmp_path):
    res = CliRunner().invoke(cli, ["train", "-d", "nations", *QUICK, "--epochs", "1", "--out", str(tmp_path / "r"),
                                   "-v"])
    assert res.exit_code == 0, res.output


def test_models_lists_every_family_plainly():
    res = CliRunner().invoke(cli, ["models"])
    lines = res.stdout.splitlines()
    assert res.exit_code == 0 and "``" not in res.stdout
    assert any(l.startswith("kgt5 ") for l in lines)
    texts = [l.split(None, 1)[1] for l in lines]
    assert len(texts) == len(set(texts)), "two models share a description"


def test_time_budget_stops_after_the_crossing_epoch_and_keeps_the_best(tmp_path):
    """--time-budget: the epoch that crosses it is validated, the best weights are kept and
    evaluated, metrics.json says why it stopped; the clock survives a resume."""
    out = tmp_path / "run"
    res = _train("--out", str(out), "--epochs", "500", "--eval-every", "3", "--patience", "0", "--time-budget", "2s")
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert metrics["stopped"].startswith("time budget of 2s") and metrics["epochs"] < 500
    assert "valid_mrr" in log[-1]  # the crossing epoch was validated
    # the log's epoch and validation times are taken a little apart from the budget's clock: 10 ms of slack
    assert sum(r["time_s"] + r.get("valid_time_s", 0) for r in log[:-1]) < 2.01 and 2 - 0.01 <= sum(
        r["time_s"] + r.get("valid_time_s", 0) for r in log)
    assert metrics["best_epoch"] == max(log, key=lambda r: r.get("valid_mrr", -1))["epoch"]
    assert "test" in metrics
    res = CliRunner().invoke(cli, ["train", "--resume", str(out), "--epochs", "600"])  # the budget is spent
    assert res.exit_code == 0 and "time budget of 2s" in res.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs"] == metrics["epochs"]
    res = CliRunner().invoke(cli, ["train", "--resume", str(out), "--time-budget", "3s"])  # one more second
    assert res.exit_code == 0 and json.loads((out / "metrics.json").read_text())["epochs"] > metrics["epochs"]
    with pytest.raises(ValueError, match="training.time_budget '3 weeks': expected a duration"):
        kgc.train("nations", out=tmp_path / "bad", **{"training.time_budget": "3 weeks"})


def test_epoch_progress_writes_a_line_every_interval_off_a_terminal():
    import io

    from kgcomplete.console import EpochProgress

    now = [0.0]
    out = io.StringIO()
    bar = EpochProgress(True, 400, "epoch 3/100", every_s=60, stream=out, clock=lambda: now[0])
    calls = []

    def figures():
        calls.append(1)
        return {"loss": "1.2345"}

    for step in range(1, 401):
        now[0] = step * 0.5  # 2 batches a second: 120 per minute
        bar.update(1, figures)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "epoch 3/100: 120/400 batches (30%)  loss 1.2345  about 2.3 min left in this epoch"
    assert [l.split(":")[1].split()[0] for l in lines] == ["120/400", "240/400", "360/400"]
    assert len(calls) == 3  # the figures are formatted only for the lines written
    quiet = io.StringIO()
    off = EpochProgress(False, 400, "epoch 1/1", every_s=0, stream=quiet)
    off.update(1, figures)
    assert quiet.getvalue() == "" and len(calls) == 3


@pytest.mark.parametrize("model", ["complex", "kgt5"])
def test_a_long_epoch_is_not_silent_in_a_log_file(tmp_path, monkeypatch, model):
    monkeypatch.setattr("kgcomplete.console.PROGRESS_LINE_EVERY_S", 0.0)  # a line after every batch
    args = ["--epochs", "1", "--batch-size", "64", "--out", str(tmp_path / "run"), "--set", "training.eval_every=0"]
    if model == "kgt5":
        res = CliRunner().invoke(cli, ["train", "-d", "nations", "--model", "kgt5", "--set", "kgt5.preset=micro",
                                       "--set", "training.threads=1", *args])
    else:
        res = _train(*args)
    assert res.exit_code == 0, res.output
    prefix = "kgt5 epoch 1/1: " if model == "kgt5" else "epoch 1/1: "
    lines = [l for l in res.stderr.splitlines() if l.startswith(prefix)]
    assert lines and re.fullmatch(rf"{prefix}\d+/\d+ batch(es)? \(\d+%\)  loss [\d.]+.*left in this epoch", lines[0])
    assert re.match(rf"{prefix}(\d+)/\1 batch(es)? \(100%\)", lines[-1])  # the last batch: n/n
    assert "\r" not in res.stderr
    assert not any("best" in l for l in lines)  # no validation ran: no best MRR to show (not a made-up 0.0000)
