"""Run lifecycle: a run interrupted anywhere (Ctrl-C at an epoch boundary or mid-epoch, a real
SIGINT, a SIGKILL between a log write and its checkpoint or in the middle of a checkpoint) and
resumed ends bit for bit like the uninterrupted run - every tensor of checkpoint.safetensors,
best.safetensors and trainer_state.safetensors (optimizer state, RNG states), the counters and the
log records (timings aside). Also early stopping on scripted validations, best vs latest
parameters, each LR schedule's logged lr, timed checkpoints, Hogwild interruptions.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import kgcomplete as kgc
from kgcomplete.runs import files as run_files
from kgcomplete.runs import kge as runs
from kgcomplete.config import build_config
from kgcomplete.models import build_model
from kgcomplete.training import loop as loop_mod
from kgcomplete.training.negative_sampler import NegativeSampler
from kgcomplete.training.trainer import Trainer

TENSOR_FILES = ("checkpoint.safetensors", "best.safetensors", "trainer_state.safetensors")
TIMING = {"time_s", "triples_per_s", "valid_time_s"}
#: nations: 1592 training triples -> 13 batches of 128 per epoch (1vsAll / negatives)
BASE = dict(model="distmult", dim=8, progress=False, threads=1, evaluate_test=False, batch_size=128, seed=3,
            epochs=3, eval_every=1, lr=0.1)


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing catches it, so the folder is left as a kill leaves it."""


@pytest.fixture(scope="module")
def nations():
    return kgc.load_dataset("nations")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, nations):
    """``reference(**kw)``: the folder of an uninterrupted run of ``kw`` (trained once per module).
    Call it before monkeypatching anything."""
    cache: dict[str, Path] = {}

    def get(**kw) -> Path:
        key = json.dumps(kw, sort_keys=True)
        if key not in cache:
            out = tmp_path_factory.mktemp("reference") / "run"
            kgc.train(nations, out=out, **kw)
            cache[key] = out
        return cache[key]

    return get


def log_records(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def trainer_state(run: Path) -> dict:
    return json.loads((Path(run) / "trainer_state.json").read_text())


def assert_same_run(run: Path, ref: Path) -> None:
    """Every tensor, the counters and the log records (timings aside) equal."""
    run, ref = Path(run), Path(ref)
    for name in TENSOR_FILES:
        assert (run / name).exists() == (ref / name).exists(), name
        if not (ref / name).exists():
            continue
        a, b = load_file(run / name), load_file(ref / name)
        assert a.keys() == b.keys(), name
        for k in b:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), f"{name}: {k} differs"
    assert log_records(run) == log_records(ref)
    volatile = ("train_time_s", "elapsed_s", "saved_at")
    sa, sb = trainer_state(run), trainer_state(ref)
    assert {k: v for k, v in sa.items() if k not in volatile} == {k: v for k, v in sb.items() if k not in volatile}
    assert not (run / ".checkpoint.staging").exists() and not (run / ".checkpoint.committed").exists()


def raise_at(monkeypatch, cls, name: str, when, after: bool = False, exc=KeyboardInterrupt) -> None:
    """Patch ``cls.name`` to raise ``exc`` on the call where ``when(self, calls_this_epoch)`` holds
    (``after``: once the real method has run, i.e. consumed its random numbers)."""
    original, calls = getattr(cls, name), {}

    def patched(self, *args, **kwargs):
        calls[self.epoch] = calls.get(self.epoch, 0) + 1
        hit = when(self, calls[self.epoch])
        if hit and not after:
            raise exc
        out = original(self, *args, **kwargs)
        if hit:
            raise exc
        return out

    monkeypatch.setattr(cls, name, patched)


# ----------------------------------------------------------------- Ctrl-C, then resume
@pytest.mark.parametrize("how", ["ctrl-c", "more-epochs"])
def test_resume_at_an_epoch_boundary_equals_the_uninterrupted_run(tmp_path, nations, reference, monkeypatch, how):
    out = tmp_path / "run"
    if how == "ctrl-c":  # stopped before epoch 4 of 6: its checkpoint is the interruption's (epoch 3 not validated)
        kw = dict(BASE, model="complex", epochs=6, eval_every=2, lr_schedule="cosine")
        ref = reference(**kw)
        raise_at(monkeypatch, Trainer, "run_epoch", lambda self, n: self.epoch == 3)
        with pytest.raises(KeyboardInterrupt):
            kgc.train(nations, out=out, **kw)
        monkeypatch.undo()
        state = trainer_state(out)
        assert (state["epoch"], state["reason"], "epoch_progress" in state) == (3, "interrupted", False)
        with open(out / "log.jsonl", "a") as f:  # a record torn by a kill while it was written
            f.write('{"epoch": 4, "loss": 0.5')
        kgc.train(out=out, resume=True)
    else:  # a finished 3-epoch run continued to 6 (no schedule depends on the epoch count)
        kw = dict(BASE, epochs=6)
        ref = reference(**kw)
        kgc.train(nations, out=out, **dict(kw, epochs=3))
        kgc.train(out=out, resume=True, epochs=6)
    assert [r["epoch"] for r in log_records(out)] == [1, 2, 3, 4, 5, 6]
    assert_same_run(out, ref)


MID_EPOCH = {
    # name: (config, patched method, raise after the real call (it drew random numbers))
    "1vsAll-adagrad-cosine": (dict(model="complex", mode="1vsAll", optimizer="adagrad", lr_schedule="cosine"),
                              (Trainer, "train_batch"), False),
    # row-gradient fast path; the interruption lands after this batch's negatives were drawn
    "negatives-rowadagrad-exponential": (dict(mode="negatives", optimizer="rowadagrad", num_negatives=8,
                                              loss="logsigmoid", lr_schedule="exponential",
                                              **{"training.lr_decay": 0.8}),
                                         (NegativeSampler, "sample"), True),
    # the weight average (validated and kept as best) is part of the checkpoint
    "1vsAll-adagrad-average": (dict(model="complex", mode="1vsAll", optimizer="adagrad",
                                    **{"training.average_epochs": 0.5}), (Trainer, "train_batch"), False),
    "KvsAll-adam-plateau": (dict(mode="KvsAll", optimizer="adam", lr=0.01, loss="bce", lr_schedule="plateau"),
                            (Trainer, "train_batch"), False),
    # dropout draws from torch's global RNG; BatchNorm buffers; after the forward pass
    "conve-dropout-adam": (dict(model="conve", dim=16, mode="1vsAll", optimizer="adam", lr=0.003, regularizer="none",
                                **{"model.options.embedding_height": 4, "model.options.channels": 2}),
                           (Trainer, "batch_loss"), True),
}


@pytest.mark.parametrize("case", list(MID_EPOCH))
def test_mid_epoch_interrupt_resumes_exactly(tmp_path, nations, reference, monkeypatch, case):
    cfg, (cls, method), after = MID_EPOCH[case]
    kw = dict(BASE, **cfg)
    ref = reference(**kw)
    if cls is NegativeSampler:  # two draws per batch (tail, head), 13 batches per epoch
        calls, target = [], 2 * 13 + 2 * 5 + 1  # epoch 2, batch 6: its tail negatives drawn

        def sample(self, corrupted, _orig=NegativeSampler.sample):
            out = _orig(self, corrupted)
            calls.append(1)
            if len(calls) == target:
                raise KeyboardInterrupt
            return out

        monkeypatch.setattr(NegativeSampler, "sample", sample)
    else:  # epoch 2, the 6th batch: 5 batches done
        raise_at(monkeypatch, cls, method, lambda self, n: self.epoch == 1 and n == 6, after=after)
    with pytest.raises(KeyboardInterrupt):
        kgc.train(nations, out=tmp_path / "run", **kw)
    monkeypatch.undo()
    state = trainer_state(tmp_path / "run")
    assert state["reason"] == "interrupted" and state["epoch"] == 1
    assert [r["epoch"] for r in log_records(tmp_path / "run")] == [1]
    kgc.train(out=tmp_path / "run", resume=True)
    assert_same_run(tmp_path / "run", ref)
    assert state["epoch_progress"]["rows"] == 5 * 128  # saved 5 batches into epoch 2
    averaged = [k for k in load_file(ref / "trainer_state.safetensors") if k.startswith("__average__/")]
    assert bool(averaged) == ("training.average_epochs" in cfg)


def _trainer(nations, **overrides) -> Trainer:
    cfg = build_config("distmult", None, {"model.dim": 8, "training.progress": False, "training.batch_size": 128,
                                          "training.eval_every": 0, "training.epochs": 2, **overrides})
    torch.manual_seed(0)
    return Trainer(build_model("distmult", nations.num_entities, nations.num_relations, dim=8), nations, cfg.training)


def ctrl_c() -> None:
    """A real Ctrl-C: SIGINT to this process (its handler runs in the main thread)."""
    os.kill(os.getpid(), signal.SIGINT)


def test_fit_again_after_ctrl_c_continues_the_epoch_exactly(nations, monkeypatch):
    """In a session: Ctrl-C inside a batch, then ``fit()`` again on the same trainer = one
    uninterrupted fit (the batch completes before the trainer stops)."""
    ref = _trainer(nations).fit()
    tr = _trainer(nations)
    train_batch = Trainer.train_batch

    def patched(self, idx, sampler=None):
        if self.epoch == 0 and len(seen) == 3:
            ctrl_c()
        seen.append(idx)
        return train_batch(self, idx, sampler)

    seen: list = []
    monkeypatch.setattr(Trainer, "train_batch", patched)
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    monkeypatch.undo()
    progress = dict(getattr(tr, "epoch_progress", None) or {})
    assert tr.epoch == 0
    tr.fit()
    for k, v in ref.model.state_dict().items():
        assert torch.equal(tr.model.state_dict()[k], v), k
    assert torch.equal(tr.generator.get_state(), ref.generator.get_state())
    assert [r["loss"] for r in tr.history] == [r["loss"] for r in ref.history]
    assert tr.train_triples == ref.train_triples == 2 * len(nations.train)
    assert progress["rows"] == 4 * 128  # the batch the signal came in completed


def test_hogwild_interrupt_loses_and_repeats_no_batch(nations):
    """Hogwild is not reproducible, but an interrupted epoch trains each row exactly once."""
    tr = _trainer(nations, **{"training.mode": "negatives", "training.optimizer": "rowadagrad",
                              "training.hogwild": 2, "training.batch_size": 32, "training.epochs": 1,
                              "training.num_negatives": 4})
    inner, seen, lock, signalled = tr.train_batch, [], threading.Lock(), threading.Event()

    def spy(idx, sampler=None):
        out = inner(idx, sampler)
        with lock:
            seen.append(idx.clone())
            if len(seen) == 10:
                signalled.set()
                ctrl_c()  # from a worker thread: the main thread, joining the workers, handles it
        if signalled.is_set():
            time.sleep(0.05)  # the main thread notices within 0.2 s, long before the epoch's end
        return out

    tr.train_batch = spy
    with pytest.raises(KeyboardInterrupt):
        tr.fit()
    before = len(seen)
    assert tr.epoch == 0 and 10 <= before < len(nations.train) // 32
    signalled.clear()
    tr.fit()
    assert tr.epoch == 1
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(len(nations.train)))  # each row once
    assert tr.train_triples == len(nations.train)
    # the rows done before the interruption were the permutation's first ones
    perm = torch.randperm(len(nations.train), generator=torch.Generator().manual_seed(tr.cfg.seed))
    done = torch.cat(seen[:before])
    assert torch.equal(done.sort().values, perm[:len(done)].sort().values)


# ------------------------------------------------------------- real signals, subprocesses
SCRIPT = r'''
import json, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the parent ignores SIGINT
import kgcomplete as kgc
from kgcomplete.runs.files import RunFolder
from kgcomplete.training.trainer import Trainer

out, marker, hook, kw = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])


def pause(trainer=None):
    """Tell the test where we are, then wait for its signal (a deferred SIGINT sets the flag)."""
    open(marker, "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not getattr(trainer, "_interrupt_requested", False):
        time.sleep(0.01)


kind, at = hook.split(":")
if kind == "batch":  # inside the n-th batch of epoch e (before its step)
    epoch, nth = map(int, at.split(","))
    train_batch, calls = Trainer.train_batch, {}

    def patched(self, idx, sampler=None):
        calls[self.epoch] = calls.get(self.epoch, 0) + 1
        if self.epoch == epoch and calls[self.epoch] == nth:
            pause(self)
        return train_batch(self, idx, sampler)

    Trainer.train_batch = patched
elif kind == "log":  # epoch e's record written, its checkpoint not yet
    append_log = RunFolder.append_log

    def patched(self, record):
        append_log(self, record)
        if record["epoch"] == int(at):
            pause()

    RunFolder.append_log = patched
kgc.train(kgc.load_dataset("nations"), out=out, **kw)
'''


def signal_subprocess(tmp_path: Path, kw: dict, hook: str, sig: int) -> tuple[Path, int, str]:
    """Train ``kw`` in a subprocess, send ``sig`` once it reaches ``hook``; returns (run, exit code, output)."""
    out, marker, script = tmp_path / "run", tmp_path / "reached", tmp_path / "train.py"
    script.write_text(SCRIPT)
    output = tmp_path / "output.txt"
    with open(output, "w") as f:
        p = subprocess.Popen([sys.executable, str(script), str(out), str(marker), hook, json.dumps(kw)],
                             stdout=f, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not marker.exists():
                if p.poll() is not None:
                    pytest.fail(f"the training exited ({p.returncode}) before {hook}:\n{output.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the training did not reach {hook} in 120 s:\n{output.read_text()}")
                time.sleep(0.02)
            p.send_signal(sig)
            rc = p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out, rc, output.read_text()


SUBPROCESS_KW = dict(BASE, model="complex", lr_schedule="cosine")


def test_sigint_mid_batch_finishes_the_batch_saves_and_resumes_exactly(tmp_path, reference):
    ref = reference(**SUBPROCESS_KW)
    out, rc, output = signal_subprocess(tmp_path, SUBPROCESS_KW, "batch:1,6", signal.SIGINT)
    assert rc != 0 and "KeyboardInterrupt" in output, output
    state = trainer_state(out)
    assert (state["reason"], state["epoch"]) == ("interrupted", 1), output
    kgc.train(out=out, resume=True)
    assert_same_run(out, ref)
    # the signal came during batch 6 of epoch 2: that batch completed, then the save
    assert state["epoch_progress"]["rows"] == 6 * 128


@pytest.mark.parametrize("hook", ["log:2", "batch:2,4"])
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, reference, hook):
    """``log:2``: killed after epoch 2's log record, before its checkpoint (the log is one epoch
    ahead); ``batch:2,4``: killed mid-epoch 3, after epoch 2's checkpoint."""
    ref = reference(**SUBPROCESS_KW)
    out, rc, output = signal_subprocess(tmp_path, SUBPROCESS_KW, hook, signal.SIGKILL)
    assert rc == -signal.SIGKILL, output
    checkpointed = 1 if hook == "log:2" else 2
    assert trainer_state(out)["epoch"] == checkpointed and trainer_state(out)["reason"] == "epoch"
    assert [r["epoch"] for r in log_records(out)] == [1, 2]
    kgc.train(out=out, resume=True)
    assert [r["epoch"] for r in log_records(out)] == [1, 2, 3]
    assert_same_run(out, ref)


@pytest.mark.parametrize("where", ["writing", "moving"])
def test_killed_while_saving_a_checkpoint_resumes_exactly(tmp_path, nations, reference, monkeypatch, where):
    """Killed during epoch 2's checkpoint - ``writing``: before its optimizer/RNG tensors were written
    (resume rolls back to epoch 1's checkpoint); ``moving``: right after its parameters replaced
    checkpoint.safetensors (resume rolls forward to epoch 2's)."""
    kw = dict(BASE, mode="negatives", optimizer="rowadagrad", num_negatives=8, loss="logsigmoid")
    ref = reference(**kw)
    out = tmp_path / "run"
    if where == "writing":
        save_file, saves = run_files.save_file, []

        def killed_while_writing(tensors, path, *a, **k):
            saves.append(Path(path).name)
            if sum("trainer_state.safetensors" in name for name in saves) == 2:
                raise Killed
            return save_file(tensors, path, *a, **k)

        monkeypatch.setattr(run_files, "save_file", killed_while_writing)
    else:
        replace, moved = os.replace, []

        def killed_while_moving(src, dst):
            replace(src, dst)
            if Path(dst) == out / "checkpoint.safetensors":
                moved.append(src)
                if len(moved) == 2:
                    raise Killed

        monkeypatch.setattr(os, "replace", killed_while_moving)
    with pytest.raises(Killed):
        kgc.train(nations, out=out, **kw)
    monkeypatch.undo()
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith(".checkpoint"))
    kgc.train(out=out, resume=True)
    assert_same_run(out, ref)
    assert leftovers == [".checkpoint.staging" if where == "writing" else ".checkpoint.committed"]


# ---------------------------------------------------------------- early stopping, best
#: runs with scripted validations rank one way only: ``model.reciprocal_scoring: auto`` would validate
#: twice more when training ends (test_reciprocal_scoring.py)
ONE_WAY = {"model.reciprocal_scoring": 0}


def scripted_validation(monkeypatch, values: list[float]) -> dict[int, dict]:
    """Make ``Trainer.validate`` return ``values`` in turn; returns {epoch: parameters when validated}.
    The run must rank one way only (:data:`ONE_WAY`)."""
    seen: dict[int, dict] = {}

    def validate(self):
        seen[self.epoch] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return values[len(seen) - 1]

    monkeypatch.setattr(Trainer, "validate", validate)
    return seen


def assert_tensors_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("eval_every,patience,values,stop,lrs", [
    # best 0.3 at epoch 2; bad at 3, 4, 5 -> stop at 5; the lr halves after each bad validation
    (1, 3, [0.1, 0.3, 0.2, 0.25, 0.2, 0.9, 0.9], 5, [0.1, 0.1, 0.1, 0.05, 0.025]),
    # validations at 2, 4, 6: best at 2, bad at 4 and 6 -> stop at 6
    (2, 2, [0.3, 0.2, 0.1, 0.9, 0.9], 6, [0.1, 0.1, 0.1, 0.1, 0.05, 0.05]),
])
def test_early_stopping_on_scripted_validations(tmp_path, nations, monkeypatch, eval_every, patience, values, stop,
                                                lrs):
    seen = scripted_validation(monkeypatch, values)
    out = tmp_path / "run"
    run = kgc.train(nations, out=out, **dict(BASE, epochs=10, eval_every=eval_every, patience=patience,
                                             lr_schedule="plateau", **{"training.lr_decay": 0.5}, **ONE_WAY))
    log = log_records(out)
    assert [r["epoch"] for r in log] == list(range(1, stop + 1))
    assert [r["lr"] for r in log] == lrs
    assert [(r["epoch"], r["valid_mrr"]) for r in log if "valid_mrr" in r] == \
        [(e, v) for e, v in zip(range(eval_every, stop + 1, eval_every), values)]
    state, metrics = trainer_state(out), json.loads((out / "metrics.json").read_text())
    assert (state["epoch"], state["best_epoch"], state["best_mrr"], state["bad_validations"]) == \
        (stop, 2, 0.3, patience)
    assert state["lr"] == lrs[-1] * 0.5  # the stopping validation decays it too
    assert (metrics["epochs"], metrics["best_epoch"]) == (stop, 2)
    assert differ(seen[2], seen[stop])
    assert_tensors_equal(load_file(out / "best.safetensors"), seen[2])
    assert_tensors_equal(load_file(out / "checkpoint.safetensors"), seen[stop])
    assert_tensors_equal(run.model.state_dict(), seen[2])  # train() returns the best parameters (load_best)


def test_resuming_a_run_that_stopped_early_trains_nothing_more(tmp_path, nations, monkeypatch):
    scripted_validation(monkeypatch, [0.3, 0.2, 0.1, 0.25, 0.2])  # best at 1; stops at 3, with patience 4 at 5
    out = tmp_path / "run"
    kgc.train(nations, out=out, **dict(BASE, epochs=10, patience=2, **ONE_WAY))
    before = {name: load_file(out / name) for name in TENSOR_FILES}
    assert len(log_records(out)) == 3
    kgc.train(out=out, resume=True)
    assert len(log_records(out)) == 3 and trainer_state(out)["epoch"] == 3
    for name, tensors in before.items():
        assert_tensors_equal(load_file(out / name), tensors)
    kgc.train(out=out, resume=True, patience=4)  # more patience: it goes on
    assert len(log_records(out)) == 5 and trainer_state(out)["epoch"] == 5


def test_load_best_vs_latest(tmp_path, nations, monkeypatch):
    seen = scripted_validation(monkeypatch, [0.5, 0.1, 0.2])
    out = tmp_path / "run"
    kgc.train(nations, out=out, **dict(BASE, patience=0, **ONE_WAY))
    assert differ(seen[1], seen[3])
    assert_tensors_equal(runs.KGERun.load(out, which="best").model.state_dict(), seen[1])
    assert_tensors_equal(runs.KGERun.load(out).model.state_dict(), seen[1])  # best is the default
    assert_tensors_equal(runs.KGERun.load(out, which="latest").model.state_dict(), seen[3])
    assert_tensors_equal(kgc.load_run(out, which="latest").model.state_dict(), seen[3])
    # no validation, no best.safetensors: "best" falls back to the latest parameters
    kgc.train(nations, out=tmp_path / "noval", **dict(BASE, eval_every=0))
    assert not (tmp_path / "noval" / "best.safetensors").exists()
    assert_tensors_equal(runs.KGERun.load(tmp_path / "noval", which="best").model.state_dict(),
                         load_file(tmp_path / "noval" / "checkpoint.safetensors"))


# -------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", ["none", "cosine", "exponential", "plateau"])
def test_logged_lr_follows_the_schedule(tmp_path, nations, monkeypatch, schedule):
    base, decay, epochs = 0.1, 0.7, 5
    values = [0.1, 0.3, 0.2, 0.25, 0.4]  # bad validations at epochs 3 and 4
    scripted_validation(monkeypatch, values)
    kgc.train(nations, out=tmp_path / "run", **dict(BASE, epochs=epochs, patience=0, lr=base, lr_schedule=schedule,
                                                   **{"training.lr_decay": decay}, **ONE_WAY))
    if schedule == "none":
        expected = [base] * epochs
    elif schedule == "cosine":
        expected = [base * 0.5 * (1 + math.cos(math.pi * e / epochs)) for e in range(epochs)]
    elif schedule == "exponential":
        expected = [base * decay**e for e in range(epochs)]
    else:
        expected, lr, best = [], base, -1.0
        for v in values:
            expected.append(lr)
            if v > best:
                best = v
            else:
                lr *= decay
    assert [r["lr"] for r in log_records(tmp_path / "run")] == expected
    assert len(set(expected)) == (1 if schedule == "none" else 3 if schedule == "plateau" else epochs)


# -------------------------------------------------------------------- timed checkpoints
@pytest.mark.parametrize("every,expected", [
    (10.0, [("epoch", 2), ("epoch", 4), ("epoch", 6), ("end", 6)]),  # 6 s per epoch: every second epoch
    (100.0, [("end", 6)]),  # the time never passes
    (None, [("end", 6)]),
])
def test_timed_checkpoints(tmp_path, nations, monkeypatch, every, expected):
    epochs_run = []
    run_epoch = Trainer.run_epoch

    def counted(self):
        epochs_run.append(self.epoch)
        return run_epoch(self)

    monkeypatch.setattr(Trainer, "run_epoch", counted)
    monkeypatch.setattr(loop_mod, "_clock", lambda: 6.0 * len(epochs_run))  # a clock at 6 s per epoch
    monkeypatch.setattr(runs, "Trainer", functools.partial(Trainer, checkpoint_every_s=every))
    saves, save = [], runs._save_checkpoint

    def recording(folder, trainer, reason):
        save(folder, trainer, reason)
        saves.append((reason, trainer_state(folder.path)["epoch"]))  # written, with that epoch

    monkeypatch.setattr(runs, "_save_checkpoint", recording)
    kgc.train(nations, out=tmp_path / "run", **dict(BASE, epochs=6, eval_every=0))  # no validation due
    assert saves == expected


def test_metrics_say_why_training_stopped(nations, tmp_path):
    kgc.train(nations, out=tmp_path / "all", **dict(BASE, epochs=2, eval_every=0))
    assert json.loads((tmp_path / "all" / "metrics.json").read_text())["stopped"] == "all 2 epochs trained"
    kgc.train(nations, out=tmp_path / "early", **dict(BASE, epochs=50, eval_every=1, patience=1, lr=5.0))
    stopped = json.loads((tmp_path / "early" / "metrics.json").read_text())["stopped"]
    assert stopped.startswith("early stop: no better validation MRR in 1 validations (patience 1)"), stopped
