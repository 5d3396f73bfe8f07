"""Lifecycle of a KGT5 run: a resume continues exactly as if training had not stopped.

``N`` epochs in one go equal ``K`` epochs then ``kgcomplete.train(out=..., resume=True)`` to ``N``:
every weight (latest and best), every optimizer-state tensor and hyper-parameter, the RNG state,
the counters, ``log.jsonl`` and the final metrics (timing fields aside), compared with
``torch.equal``: on CPU, with one thread, training is bit-for-bit deterministic, so no tolerance is
needed. Dropout is switched on (the ``micro`` preset has none), so a resume that does not restore
the RNG differs. A checkpoint cut short by a crash is finished or undone before the resume.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from kgt5_fixtures import tiny_kg  # noqa: E402

import kgcomplete as kgc  # noqa: E402
from lifecycle_runs import full_part_resumed, log_records, untimed  # noqa: E402
from kgcomplete.seq2seq.run import KGT5Run  # noqa: E402

N, K = 4, 2
COMMON = {"model": "kgt5", "batch_size": 16, "seed": 0, "eval_every": 1, "progress": False, "threads": 1,
          "kgt5.preset": "micro", "kgt5.warmup_steps": 5, "kgt5.model": {"dropout_rate": 0.1},
          "kgt5.decoding": {"method": "beam", "beam_size": 10},
          # pinned: "auto" measures the CPU's bf16 speed, which a busy machine can tip either way between runs
          "kgt5.mixed_precision": "no"}
VARIANTS = {
    "adamw": {"kgt5.optimizer": "adamw", "kgt5.lr": 0.01},  # + warm-up LambdaLR rebuilt on resume
    "adafactor": {"kgt5.optimizer": "adafactor", "kgt5.lr": None},  # relative step from its state
    # the weight average (validated, saved as the best weights) continues from the checkpoint
    "adamw-average": {"kgt5.optimizer": "adamw", "kgt5.lr": 0.01, "training.average_epochs": 1},
}
TIMING = {"elapsed_s", "time_s", "cpu_s", "examples_per_s", "tokens_per_s", "eval_time_s", "valid_time_s", "train_time_s",
          "train_cpu_s", "throughput", "train_examples_per_s", "train_tokens_per_s"}
WEIGHTS = ("checkpoint.safetensors", "model.safetensors")


def _untimed(obj):
    return untimed(obj, TIMING)


_log = log_records


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoint_state.pt", map_location="cpu", weights_only=False)


def _assert_equal_tree(a, b, where: str) -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), where
        for k in a:
            _assert_equal_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_tree(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(a: Path, b: Path, metrics: bool = True) -> None:
    assert not list(a.glob(".checkpoint.*")) and not list(b.glob(".checkpoint.*")), "a pending checkpoint was left behind"
    for name in WEIGHTS:
        ta, tb = load_file(a / name), load_file(b / name)
        assert sorted(ta) == sorted(tb)
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}: {k} differs"
    sa, sb = _state(a), _state(b)
    assert sa["optimizer"]["state"], "no optimizer state to compare"
    _assert_equal_tree(_untimed({k: v for k, v in sa.items()}), _untimed({k: v for k, v in sb.items()}), "state")
    assert _untimed(_log(a)) == _untimed(_log(b))
    assert [e["epoch"] for e in _log(a)] == list(range(1, N + 1))
    if metrics:
        ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
        assert _untimed(ma) == _untimed(mb)


def _train(out: Path, variant: str, epochs: int):
    return kgc.train(tiny_kg(), out=out, epochs=epochs, **COMMON, **VARIANTS[variant])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(variant)`` -> ``full`` (N epochs), ``part`` (K epochs) and ``resumed`` (part resumed to N)."""
    return full_part_resumed(tmp_path_factory, _train, K, N, prefix="kgt5-")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_is_exact(trained, variant):
    root = trained(variant)
    state = _state(root / "part")
    assert state["epoch"] == K
    assert_same_run(root / "full", root / "resumed")


def test_dropout_is_on(trained):
    """Otherwise the RNG half of the resume check would prove nothing."""
    cfg = json.loads((trained("adamw") / "full" / "model_config.json").read_text())
    assert cfg["dropout_rate"] > 0


def test_resuming_a_finished_run_changes_nothing(trained, tmp_path):
    root = trained("adamw")
    run = tmp_path / "done"
    shutil.copytree(root / "full", run)
    kgc.train(out=run, resume=True, epochs=N)
    assert json.loads((run / "metrics.json").read_text())["epochs"] == N
    assert_same_run(root / "full", run)


def test_a_half_moved_checkpoint_is_finished(trained, tmp_path):
    """Crash after the commit (the staged checkpoint renamed to ``.checkpoint.committed``) before its
    weights were moved into place: the stale weights there are replaced before anything reads them."""
    root = trained("adamw")
    run = tmp_path / "run"
    shutil.copytree(root / "part", run)
    committed = run / ".checkpoint.committed"
    committed.mkdir()
    for name in WEIGHTS:
        os.replace(run / name, committed / name)
        shutil.copy2(root / "full" / name, run / name)  # stale: not this checkpoint's
    (committed / "ORDER").write_text("\n".join(WEIGHTS) + "\n")
    reader = tmp_path / "reader"
    shutil.copytree(run, reader)
    KGT5Run.load(reader)  # opening the run finishes the move too
    for name in WEIGHTS:
        assert (reader / name).read_bytes() == (root / "part" / name).read_bytes()
    assert not list(reader.glob(".checkpoint.*"))
    kgc.train(out=run, resume=True, epochs=N)
    assert_same_run(root / "full", run)


def test_an_uncommitted_checkpoint_is_undone(trained, tmp_path):
    """Crash while checkpoint K+1 was being written (weights written, one mid-write, epoch K+1
    logged, a torn log line, no commit): the resume drops all of it and trains epoch K+1 again."""
    root = trained("adamw")
    run = tmp_path / "run"
    shutil.copytree(root / "part", run)
    staging = run / ".checkpoint.staging"
    staging.mkdir()
    shutil.copy2(root / "full" / "checkpoint.safetensors", staging / "checkpoint.safetensors")
    (staging / "model.safetensors.tmp").write_bytes(b"torn")
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": K + 1, "loss": 123.0, "lr": 1.0}) + "\n")
        f.write('{"epoch": %d, "loss": 1.' % (K + 2))  # torn by the kill
    kgc.train(out=run, resume=True, epochs=N)
    assert_same_run(root / "full", run)


def test_a_run_that_stopped_early_stays_stopped_on_resume(tmp_path):
    """Patience reached at the last checkpoint (e.g. killed right after it): resuming trains nothing,
    as the uninterrupted run stopped there."""
    run = tmp_path / "run"
    kgc.train(tiny_kg(), out=run, epochs=10, patience=1, **COMMON, **VARIANTS["adamw"])
    stopped = len(_log(run))
    assert stopped < 10, "the run did not stop early: pick another patience/epochs"
    before = {name: (run / name).read_bytes() for name in WEIGHTS}
    kgc.train(out=run, resume=True)
    assert len(_log(run)) == stopped and _state(run)["epoch"] == stopped
    assert json.loads((run / "metrics.json").read_text())["epochs"] == stopped
    assert {name: (run / name).read_bytes() for name in WEIGHTS} == before


def test_a_cpu_budget_stops_after_the_epoch_that_crosses_it_and_stays_stopped(tmp_path):
    """The epoch that crosses ``kgt5.cpu_budget_s`` is the last (validated, checkpointed); the reason
    is in metrics.json; a resume counts the CPU time already spent and trains nothing."""
    run = tmp_path / "run"
    kgc.train(tiny_kg(), out=run, epochs=10, **{**COMMON, "kgt5.cpu_budget_s": 1e-3}, **VARIANTS["adamw"])
    assert [r["epoch"] for r in _log(run)] == [1] and "valid_mrr" in _log(run)[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and "CPU budget of 0.001 s used up" in metrics["stopped"]
    before = {name: (run / name).read_bytes() for name in WEIGHTS}
    kgc.train(out=run, resume=True)
    assert len(_log(run)) == 1 and {name: (run / name).read_bytes() for name in WEIGHTS} == before
