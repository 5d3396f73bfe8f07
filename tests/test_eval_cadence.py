"""Validation cadence within epochs (``training.eval_every`` 0.25, 1.5, "10m"): where validations
fall, what the log and console say, best weights and patience counted in validations, and an
interrupted run that resumes bit for bit like the uninterrupted one."""

from __future__ import annotations

import json

import pytest

import kgcomplete as kgc
from kgcomplete.config import ConfigError, build_config, parse_cadence, validate
from kgcomplete.runs import files as run_files
from kgcomplete.training.trainer import Trainer

from test_lifecycle import BASE, Killed, assert_same_run, log_records, raise_at, trainer_state

# nations: 1592 training triples, batches of 128 -> 13 batches (12 x 128 + 56) per epoch (BASE)
N, BS = 1592, 128


@pytest.fixture(scope="module")
def nations():
    return kgc.load_dataset("nations")


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_a_quarter_epoch_cadence_validates_after_the_batches_that_cross_each_quarter(tmp_path, nations, capsys):
    run = tmp_path / "run"
    kgc.train(nations, out=run, **dict(BASE, eval_every=0.25, progress=True))
    recs = records(run)
    # quarter marks at 398, 796, 1194 rows: the first batch boundaries at or past them are 512, 896, 1280
    assert [r.get("rows") for r in recs] == [512, 896, 1280, None] * 3
    # the position, floored to 4 decimals: 512 / 1592 = 0.32160..., 896 / 1592 = 0.56281..., 1280 / 1592 = 0.80402...
    assert [r["epoch"] for r in recs] == [0.3216, 0.5628, 0.804, 1, 1.3216, 1.5628, 1.804, 2, 2.3216, 2.5628, 2.804, 3]
    assert all("valid_mrr" in r for r in recs)  # 4 validations per epoch, 12 in all
    assert [r["epoch"] for r in recs if "rows" not in r] == [1, 2, 3]
    # a mid-epoch record: the epoch's running loss and its training time so far
    assert recs[1]["time_s"] > recs[0]["time_s"]
    err = capsys.readouterr().err
    assert "validation every 0.25 epochs" in err
    assert err.count("valid MRR") == 12 and "epoch 0.3216  loss" in err
    metrics = json.loads((run / "metrics.json").read_text())
    best = max(recs, key=lambda r: r["valid_mrr"])
    assert metrics["best_epoch"] == best["epoch"] and metrics["epochs"] == 3


def test_a_cadence_of_one_and_a_half_epochs(tmp_path, nations):
    kgc.train(nations, out=tmp_path / "run", **dict(BASE, eval_every=1.5))
    recs = records(tmp_path / "run")
    # 1.5 epochs = 2388 rows: epoch 2's 7th batch (1592 + 896 rows); then 3.0 at the end
    assert [(r["epoch"], r.get("rows"), "valid_mrr" in r) for r in recs] == [
        (1, None, False), (1.5628, 896, True), (2, None, False), (3, None, True)]


def test_a_time_cadence_validates_inside_epochs(tmp_path, nations):
    """A duration every batch outlasts: a validation after every batch; one no batch reaches: only
    the last epoch's."""
    kgc.train(nations, out=tmp_path / "often", **dict(BASE, epochs=2, eval_every="0.000001s"))
    recs = records(tmp_path / "often")
    assert [r.get("rows") for r in recs] == [BS * k for k in range(1, 13)] + [None] + [BS * k for k in range(1, 13)] + [None]
    assert all("valid_mrr" in r for r in recs)
    kgc.train(nations, out=tmp_path / "rare", **dict(BASE, epochs=2, eval_every="1h"))
    assert [(r["epoch"], "valid_mrr" in r) for r in records(tmp_path / "rare")] == [(1, False), (2, True)]


def test_patience_counts_validations_inside_epochs(tmp_path, nations, monkeypatch):
    values = iter([0.5, 0.6, 0.55, 0.54, 0.53, 0.9])

    monkeypatch.setattr(Trainer, "validate", lambda self: next(values))
    kgc.train(nations, out=tmp_path / "run", **dict(BASE, epochs=5, eval_every=0.25, patience=3,
                                                   **{"model.reciprocal_scoring": 0}))  # no extra validation at the end
    recs = records(tmp_path / "run")
    assert [r["valid_mrr"] for r in recs] == [0.5, 0.6, 0.55, 0.54, 0.53]  # stopped after 3 without gain
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_epoch"] == recs[1]["epoch"] == 0.5628
    assert metrics["stopped"].startswith("early stop: no better validation MRR in 3 validations")
    assert metrics["epochs"] == 1  # it stopped inside epoch 2
    assert trainer_state(tmp_path / "run")["epoch_progress"]["rows"] == 512


@pytest.mark.parametrize("value", ["abc", -1, "10x", "0s", True])
def test_a_bad_cadence_is_a_one_line_error_naming_the_key(value, tmp_path):
    cfg = build_config("distmult", None, {})
    cfg.training.eval_every = value
    with pytest.raises((ValueError, ConfigError)) as e:
        validate(cfg)
    assert "training.eval_every" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises((ValueError, ConfigError), match="training.eval_every"):
        kgc.train("nations", out=tmp_path / "run", eval_every=value, epochs=1)
    assert not (tmp_path / "run").exists()


def test_cadence_values():
    assert parse_cadence(5).epochs == 5 and parse_cadence("5").epochs == 5 and parse_cadence(2.0).epochs == 2
    assert parse_cadence(0).never
    assert parse_cadence(0.25).fraction == 0.25 and parse_cadence("1.5").fraction == 1.5
    assert parse_cadence("10m").seconds == 600 and parse_cadence("1h30m").seconds == 5400


# ----------------------------------------------------------------- interrupted, then resumed
KW = dict(BASE, model="complex", lr_schedule="cosine", eval_every=0.25)


def stopped_run(tmp_path, nations, monkeypatch, stop, exc=KeyboardInterrupt):
    """(the uninterrupted run of ``KW``, a run of ``KW`` stopped by ``exc`` once ``stop()`` has patched
    what raises it)."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    kgc.train(nations, out=ref, **KW)
    stop()
    with pytest.raises(exc):
        kgc.train(nations, out=out, **KW)
    monkeypatch.undo()
    return ref, out


def test_ctrl_c_between_two_validations_inside_an_epoch_resumes_exactly(tmp_path, nations, monkeypatch):
    # epoch 2, batch 6: after the validation at 512 rows, before the one at 896
    ref, out = stopped_run(tmp_path, nations, monkeypatch, lambda: raise_at(
        monkeypatch, Trainer, "train_batch", lambda self, n: self.epoch == 1 and n == 6))
    state = trainer_state(out)
    assert (state["reason"], state["epoch"], state["epoch_progress"]["rows"]) == ("interrupted", 1, 5 * BS)
    assert [r["epoch"] for r in log_records(out)] == [0.3216, 0.5628, 0.804, 1, 1.3216]
    kgc.train(out=out, resume=True)
    assert_same_run(out, ref)


def test_interrupted_during_a_validation_inside_an_epoch_resumes_exactly(tmp_path, nations, monkeypatch):
    """Ctrl-C lands in the validation at 896 rows of epoch 2: nothing is saved (its record is not
    written); the resume goes back to the validation at 512 rows and trains from there."""
    # validations with 1 epoch done: epoch 1's end (1st), 512 rows into epoch 2 (2nd), 896 rows (3rd)
    ref, out = stopped_run(tmp_path, nations, monkeypatch, lambda: raise_at(
        monkeypatch, Trainer, "validate", lambda self, n: self.epoch == 1 and n == 3))
    state = trainer_state(out)
    assert (state["reason"], state["epoch"], state["epoch_progress"]["rows"]) == ("epoch", 1, 512)
    kgc.train(out=out, resume=True)
    assert_same_run(out, ref)


def test_killed_between_a_mid_epoch_record_and_its_checkpoint_resumes_exactly(tmp_path, nations, monkeypatch):
    """The log holds the record of the validation at 896 rows of epoch 2, the checkpoint is the one
    at 512 rows: resuming drops that record (by its rows) and logs it again."""
    append = run_files.RunFolder.append_log

    def append_then_die(self, record):
        append(self, record)
        if record.get("rows") == 896 and record["epoch"] > 1:
            raise Killed

    ref, out = stopped_run(tmp_path, nations, monkeypatch, lambda: monkeypatch.setattr(
        run_files.RunFolder, "append_log", append_then_die), exc=Killed)
    assert [r["epoch"] for r in log_records(out)][-2:] == [1.3216, 1.5628]
    assert trainer_state(out)["epoch_progress"]["rows"] == 512
    kgc.train(out=out, resume=True)
    assert_same_run(out, ref)


def test_autoconfig_validates_inside_epochs_when_one_epoch_is_long():
    """An epoch of ~61 min (FB15k-237 size at the user's dim 512 on a 20 GFLOP/s device): a
    validation every seventh of an epoch (~9 min), said with its reason; the user's cadence is kept."""
    from kgcomplete.training.autoconfig import epoch_flops, fit_defaults

    cfg = build_config("complex", None, {"model.dim": 512})
    lines = fit_defaults(cfg, 14_541, 272_115, gflops=20.0)
    minutes = epoch_flops(272_115, 14_541, 2 * 512) / 20e9 / 60
    assert 60 < minutes < 62 and cfg.training.eval_every == 0.1429  # 1 / ceil(61 / 10)
    assert any(line.startswith(f"training.eval_every 5 -> 0.1429: one epoch would take about {minutes:.0f} min")
               for line in lines), lines
    cfg = build_config("complex", None, {"model.dim": 512, "training.eval_every": 5})
    fit_defaults(cfg, 14_541, 272_115, gflops=20.0)
    assert cfg.training.eval_every == 5
