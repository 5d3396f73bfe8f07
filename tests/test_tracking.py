"""Experiment trackers follow a training run offline: TensorBoard event files and MLflow's local
file store are read back and compared with the run's own log and metrics; W&B writes its offline run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import kgcomplete as kgc
from kgcomplete.cli.main import cli

FAST = dict(model="distmult", dim=16, epochs=4, eval_every=2, threads=1, progress=False)


def _log(out):
    return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]


def test_tensorboard_gets_epochs_validation_final_metrics_and_plots(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    kgc.train("nations", out=out, **FAST, **{"tracking.kind": "tensorboard"})
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = acc.Tags()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in _log(out)], rel=1e-6)
    assert [e.step for e in acc.Scalars("valid/mrr")] == [2, 4]
    metrics = json.loads((out / "metrics.json").read_text())
    assert acc.Scalars("final/test/mrr")[0].value == pytest.approx(metrics["test"]["mrr"], rel=1e-6)
    assert {"report/training", "report/head_vs_tail", "report/per_relation"} <= set(tags["images"])
    assert "config/text_summary" in tags["tensors"]


def test_mlflow_local_file_store(tmp_path):
    import mlflow

    store = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "run"
    kgc.train("nations", out=out, **FAST, **{"tracking.kind": "mlflow", "tracking.uri": store,
                                             "tracking.project": "kgc-test"})
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("kgc-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["training.lr"] == "0.1" and run.data.params["model.name"] == "distmult"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["test/mrr"] == pytest.approx(metrics["test"]["mrr"], rel=1e-6)
    assert run.data.metrics["test/hits_at_10"] == pytest.approx(metrics["test"]["hits@10"], rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/training.png", "report/head_vs_tail.png"} <= artifacts


def test_wandb_offline_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    kgc.train("nations", out=out, **FAST, **{"tracking.kind": "wandb"})
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (records,) = runs[0].glob("run-*.wandb")  # what `wandb sync` uploads: protobuf records, keys and JSON values
    import time

    deadline = time.monotonic() + 30  # W&B's service process writes the file; it may lag the run's end
    while b"test/mrr" not in (data := records.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert b"train/loss" in data and b"valid/mrr" in data
    assert b"test/mrr" in data and json.dumps(metrics["test"]["mrr"]).encode() in data
    images = {p.name.split("_")[0] for p in (runs[0] / "files" / "media" / "images" / "report").glob("*.png")}
    assert {"training", "head", "per"} <= images


def test_unknown_tracker_and_flag(tmp_path):
    with pytest.raises(ValueError, match="'neptune' is not a tracker"):
        kgc.train("nations", out=tmp_path / "a", **FAST, **{"tracking.kind": "neptune"})
    assert not (tmp_path / "a").exists()
    res = CliRunner().invoke(cli, ["train", "-d", "nations", "--dim", "8", "--epochs", "1", "--out",
                                   str(tmp_path / "b"), "--tracker", "tensorboard"])
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_tracker_that_fails_mid_run_is_dropped_with_a_warning(tmp_path, caplog):
    from kgcomplete.runs.observers import Observers, RunObserver

    class Flaky(RunObserver):
        name = "flaky"
        calls = 0

        def epoch(self, record):
            Flaky.calls += 1
            raise OSError("tracker server gone")

    obs = Observers([Flaky()])
    obs.epoch({"epoch": 1})
    obs.epoch({"epoch": 2})
    assert Flaky.calls == 1 and not obs
    assert "flaky stopped following this run (epoch failed: OSError: tracker server gone)" in caplog.text


def test_validations_inside_epochs_get_steps_of_their_own(tmp_path):
    """eval_every 0.5: two validations per epoch; at step = int(epoch) they would share a step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    kgc.train("nations", out=out, **{**FAST, "epochs": 2, "eval_every": 0.5}, **{"tracking.kind": "tensorboard"})
    positions = [r["epoch"] for r in _log(out) if "valid_mrr" in r]
    assert len(positions) == 4 and positions[1::2] == [1, 2] and 0 < positions[0] < 1 < positions[2] < 2  # at batch ends
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    steps = [e.step for e in acc.Scalars("valid/mrr")]
    assert steps == [round(p * 10_000) for p in positions] and steps == sorted(set(steps))
    assert [e.value for e in acc.Scalars("valid/mrr")] == pytest.approx(
        [r["valid_mrr"] for r in _log(out) if "valid_mrr" in r], rel=1e-6)
