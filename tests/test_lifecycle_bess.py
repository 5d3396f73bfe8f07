"""Lifecycle of a BESS run (2 worker processes): resume, crash recovery and re-sharding must keep
every tensor, not only the counters.

* Training ``N`` epochs in one go equals training ``K`` epochs and resuming to ``N``: every tensor of
  every worker's files (parameters, best parameters, optimizer state, RNG), ``trainer_state.json``,
  ``log.jsonl`` and the final metrics, apart from timing fields. The schedule is ``exponential``
  (``cosine`` depends on ``training.epochs``, which the resume raises) and every epoch is validated,
  so a checkpoint is written at every epoch boundary.
* A checkpoint cut short by a crash is finished (committed, half moved into place) or undone (never
  committed, plus a log line for an epoch that has no checkpoint), and the resume is still exact.
* ``kill -9`` of the ``--workers 2`` launcher takes its workers down too, and the resume equals the
  uninterrupted run.
* Re-sharding moves every entity's embedding row and optimizer-state row with the entity.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import kgcomplete as kgc
from lifecycle_runs import full_part_resumed, log_records, untimed
from kgcomplete.config import Config
from kgcomplete.distributed.checkpoint import ENTITY_KEY, entity_optimizer_prefix, reshard_run, worker_files
from kgcomplete.distributed.run import ShardedRun
from kgcomplete.distributed.sharding import Sharding

N, K = 4, 3  # epochs in one go / before the resume
COMMON = {"dim": 8, "epochs": N, "eval_every": 1, "num_negatives": 8, "batch_size": 64, "progress": False, "lr": 0.1,
          "lr_schedule": "exponential", "threads": 1, "training.lr_decay": 0.9, "distributed.workers": 2,
          "distributed.threads": 1, "distributed.start_method": "fork"}
VARIANTS = {
    # row-wise Adagrad: (S,) accumulator per shard, rows updated through RowLeaves
    "distmult-rowadagrad": {"model": "distmult", "optimizer": "rowadagrad"},
    # dropout (worker RNG), dense layers and element-wise (S, W) Adagrad state
    "conve-adagrad": {"model": "conve", "optimizer": "adagrad",
                      "model.options": {"embedding_height": 2, "channels": 2}},
}
TIMING = {"elapsed_s", "time_s", "triples_per_s", "ms_per_step", "valid_time_s", "train_time_s", "train_triples_per_s",
          "saved_at", "valid_eval_time_s", "test_eval_time_s", "eval_time_s"}


def _opts(variant: str, **extra) -> dict:
    return {**COMMON, **VARIANTS[variant], **extra}


def _train(out: Path, variant: str, **extra):
    return kgc.train("nations", out=out, **_opts(variant, **extra))


def _untimed(obj):
    return untimed(obj, TIMING)


_log = log_records


def assert_same_run(a: Path, b: Path, epochs: int = N, metrics: bool = True) -> None:
    """Every shard file tensor-for-tensor (torch.equal), the optimizer skeletons, the counters and the
    log (timing fields aside); with ``metrics`` also the final metrics."""
    files = sorted(p.name for p in (a / "shards").iterdir())
    assert files == sorted(p.name for p in (b / "shards").iterdir()), "different shard files (or a leftover next-*)"
    assert {f"{w}-{i}.safetensors" for w in ("latest", "best", "optim") for i in (0, 1)} <= set(files)
    for name in files:
        if name.endswith(".json"):
            assert json.loads((a / "shards" / name).read_text()) == json.loads((b / "shards" / name).read_text()), name
            continue
        ta, tb = load_file(a / "shards" / name), load_file(b / "shards" / name)
        assert sorted(ta) == sorted(tb), name
        for key in ta:
            assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), f"{name}: {key} differs"
    sa, sb = (json.loads((r / "trainer_state.json").read_text()) for r in (a, b))
    assert _untimed(sa) == _untimed(sb)
    assert _untimed(_log(a)) == _untimed(_log(b))
    assert [r["epoch"] for r in _log(a)] == list(range(1, epochs + 1))
    if metrics:
        ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
        assert _untimed(ma["test"]) == _untimed(mb["test"]) and _untimed(ma["valid"]) == _untimed(mb["valid"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(variant)`` -> ``full`` (N epochs), ``part`` (K epochs) and ``resumed`` (part resumed to N)."""
    return full_part_resumed(tmp_path_factory, lambda out, variant, epochs: _train(out, variant, epochs=epochs), K, N)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_at_an_epoch_boundary_is_exact(trained, variant):
    root = trained(variant)
    state = json.loads((root / "part" / "trainer_state.json").read_text())
    assert state["epoch"] == K and state["checkpoint"] == f"{K}-{state['steps']}"
    assert_same_run(root / "full", root / "resumed")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_replicas_stay_identical_on_every_worker(trained, variant):
    """Relation tables, dense layers and their buffers (ConvE's BatchNorm running statistics) are the
    same on both workers: gather and re-shard keep shard 0's, evaluation uses every shard's."""
    root = trained(variant)
    for kind in ("latest", "best"):
        a, b = (load_file(root / "full" / "shards" / f"{kind}-{i}.safetensors") for i in (0, 1))
        assert sorted(a) == sorted(b)
        for k in a:
            if k != ENTITY_KEY:
                assert torch.equal(a[k], b[k]), f"{kind}: replica {k} differs between workers"


def test_a_half_moved_checkpoint_is_finished(trained, tmp_path):
    """Crash after the commit (trainer_state.json names checkpoint K) while worker 1's files were
    still in ``shards/next-K-*``: the stale files in ``shards/`` are replaced before anything is read."""
    root = trained("distmult-rowadagrad")
    run = tmp_path / "run"
    shutil.copytree(root / "part", run)
    cid = json.loads((run / "trainer_state.json").read_text())["checkpoint"]
    pending = run / "shards" / f"next-{cid}"
    pending.mkdir()
    for name in worker_files(1):
        os.replace(run / "shards" / name, pending / name)
        shutil.copy2(root / "full" / "shards" / name, run / "shards" / name)  # stale: not checkpoint K's
    # a reader (evaluate / predict) finishes the move too
    reader = tmp_path / "reader"
    shutil.copytree(run, reader)
    ShardedRun.load(reader)
    for name in worker_files(1):
        assert (reader / "shards" / name).read_bytes() == (root / "part" / "shards" / name).read_bytes()
    assert not (reader / "shards" / pending.name).exists()
    kgc.train(out=run, resume=True, epochs=N)
    assert_same_run(root / "full", run)


def test_an_uncommitted_checkpoint_is_undone(trained, tmp_path):
    """Crash while checkpoint K+1 was being written (worker 0 done, worker 1 mid-write, no commit)
    after epoch K+1 was logged (and a torn line after it): the resume drops all of it and trains
    epoch K+1 again."""
    root = trained("distmult-rowadagrad")
    run = tmp_path / "run"
    shutil.copytree(root / "part", run)
    pending = run / "shards" / f"next-{K + 1}-999"
    pending.mkdir()
    for name in worker_files(0):
        shutil.copy2(root / "full" / "shards" / name, pending / name)
    (pending / ".optim-1.safetensors.x1y2.tmp").write_bytes(b"torn")
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": K + 1, "loss": 123.0, "lr": 1.0, "time_s": 0.0}) + "\n")
        f.write('{"epoch": %d, "loss": 1.' % (K + 2))  # torn by the kill
    kgc.train(out=run, resume=True, epochs=N)
    assert_same_run(root / "full", run)


# ------------------------------------------------------------------ re-sharding
def _rows(run: Path, sharding: Sharding, kind: str, keys) -> dict[str, torch.Tensor]:
    """``{key: (E, ...)}``: the per-entity rows of ``keys`` in the shard files of ``kind``, in entity order."""
    out: dict[str, torch.Tensor] = {}
    for s in range(sharding.n_shard):
        t = load_file(run / "shards" / f"{kind}-{s}.safetensors")
        ents = torch.as_tensor(sharding.shard_and_idx_to_entity[s, : sharding.shard_counts[s]])
        for k in keys:
            v = t[k]
            assert v.shape[0] == sharding.shard_size, (kind, k, v.shape)
            if k not in out:
                out[k] = torch.full((sharding.num_entities, *v.shape[1:]), float("nan"), dtype=v.dtype)
            out[k][ents] = v[: len(ents)]
            assert not v[len(ents):].any(), "padding rows must stay zero"
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("n_new", [3, 1])
def test_reshard_moves_every_entity_row_and_its_optimizer_state(trained, tmp_path, variant, n_new):
    root = trained(variant)
    src = root / "full"
    out = reshard_run(src, n_new, tmp_path / f"r{n_new}")
    old, new = Sharding.load(src), Sharding.load(out)
    assert new.n_shard == n_new
    if n_new > 1:  # a different layout, or the test would prove nothing
        assert not np.array_equal(old.entity_to_idx[:new.shard_size], new.entity_to_idx[:new.shard_size])
    opt0 = load_file(src / "shards" / "optim-0.safetensors")
    prefix = entity_optimizer_prefix(Config.load(src / "config.yaml"))
    opt_keys = [k for k in opt0 if k.startswith(prefix) and opt0[k].dim() >= 1]
    assert any(k.endswith("/sum") for k in opt_keys), opt_keys  # Adagrad / RowAdagrad accumulator
    for kind, keys in (("latest", [ENTITY_KEY]), ("best", [ENTITY_KEY]), ("optim", opt_keys)):
        before, after = _rows(src, old, kind, keys), _rows(out, new, kind, keys)
        for k in keys:
            assert not torch.isnan(after[k]).any()
            assert torch.equal(before[k], after[k]), f"{kind}: rows of {k} did not move with their entities"
        # everything else (replicas, their optimizer state) is copied from shard 0
        src0 = load_file(src / "shards" / f"{kind}-0.safetensors")
        for s in range(n_new):
            dst = load_file(out / "shards" / f"{kind}-{s}.safetensors")
            for k, v in src0.items():
                if k not in keys and not k.startswith("__rng__/"):
                    assert torch.equal(dst[k], v), (kind, k)
    # the re-sharded run scores like the original
    a, b = ShardedRun.load(src), ShardedRun.load(out)
    q, r = torch.arange(5), torch.tensor([0, 1, 2, 3, 4])
    torch.testing.assert_close(a.score_queries(q, r), b.score_queries(q, r), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ kill -9
def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_launcher_then_resume_equals_the_uninterrupted_run(tmp_path):
    epochs = 10
    variant = "distmult-rowadagrad"
    ref = tmp_path / "ref"
    _train(ref, variant, epochs=epochs)
    run = tmp_path / "killed"
    o = _opts(variant, epochs=epochs)
    cmd = [sys.executable, "-m", "kgcomplete", "train", "-d", "nations", "-m", o["model"], "--out", str(run),
           "--workers", "2", "--epochs", str(epochs), "--dim", str(o["dim"]), "--optimizer", o["optimizer"],
           "--lr", str(o["lr"]), "--num-negatives", str(o["num_negatives"]), "--batch-size", str(o["batch_size"]),
           "--threads", "1", "--no-progress"]
    for k in ("eval_every", "lr_schedule"):
        cmd += ["--set", f"training.{k}={o[k]}"]
    for k in ("training.lr_decay", "distributed.threads", "distributed.start_method"):
        cmd += ["--set", f"{k}={o[k]}"]
    err = tmp_path / "stderr.txt"
    workers = []
    with open(err, "wb") as err_file:  # a file, not a pipe nobody reads while the run goes on
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (run / "trainer_state.json").exists():  # the first checkpoint has committed
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(workers) == 2, workers
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers):  # no orphan goes on training into the folder
            assert time.monotonic() < deadline, "the workers outlived their launcher"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:  # never leave an orphan behind, even when the test fails
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    killed_at = json.loads((run / "trainer_state.json").read_text())["epoch"]
    assert 1 <= killed_at < epochs, "the run finished: the kill came too late, or orphaned workers went on"
    kgc.train(out=run, resume=True)
    assert [r["epoch"] for r in _log(run)] == list(range(1, epochs + 1))
    assert_same_run(ref, run, epochs)


def test_a_killed_worker_is_reported_within_seconds_in_one_line(tmp_path):
    """kill -9 of one worker: the launcher stops the other within seconds and ends with one
    ``Error:`` line naming the worker (no hang in a collective, no traceback); the run resumes."""
    epochs = 30
    o = _opts("distmult-rowadagrad", epochs=epochs)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "kgcomplete", "train", "-d", "nations", "-m", o["model"], "--out", str(run),
           "--workers", "2", "--epochs", str(epochs), "--dim", str(o["dim"]), "--optimizer", o["optimizer"],
           "--threads", "1", "--no-progress", "--set", "training.eval_every=1",
           "--set", f"distributed.start_method={o['distributed.start_method']}"]
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers = []
    try:
        deadline = time.monotonic() + 120
        while not (run / "trainer_state.json").exists():
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.monotonic()
        rc = proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    lines = [ln for ln in err.read_text().splitlines() if ln.startswith("Error:")]
    assert rc == 1 and len(lines) == 1, err.read_text()[-3000:]
    assert lines[0].startswith("Error: distributed run failed: worker 1 was killed by SIGKILL"), lines[0]
    assert "Traceback" not in err.read_text(), err.read_text()[-3000:]
    assert took < 10, f"the launcher took {took:.1f} s to notice the dead worker"
    kgc.train(out=run, resume=True)
    logged = [r["epoch"] for r in _log(run)]  # each epoch once, to the end (or to an early stop)
    assert logged == list(range(1, len(logged) + 1)) and len(logged) > 1


def test_a_damaged_shard_is_named_before_any_worker_starts(tmp_path):
    from click.testing import CliRunner

    import reference
    from kgcomplete.cli.main import cli

    run = tmp_path / "run"
    _train(run, "distmult-rowadagrad", epochs=2)
    sums = json.loads((run / "shards" / "checksums-1.json").read_text())
    assert set(sums) >= {"latest-1.safetensors", "optim-1.safetensors", "optim-1.json"}
    p = run / "shards" / "latest-1.safetensors"
    b = bytearray(p.read_bytes())
    b[-8] ^= 0xFF
    p.write_bytes(bytes(b))
    before = (run / "trainer_state.json").read_bytes()
    res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "3"])
    reference.assert_user_error(res, "shards/latest-1.safetensors: damaged")
    assert (run / "trainer_state.json").read_bytes() == before
