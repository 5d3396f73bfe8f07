"""Crash consistency of checkpoints: a training process killed at random moments of its file writes
(8 seeded kill points in CI, 20 with ``-m slow``; a real ``os._exit`` in a subprocess: no cleanup runs), and a disk that fills
up during a save (a small tmpfs), each resumed to the end and compared with an uninterrupted run:
every tensor, the counters and the log equal.

A kill point is the k-th call of ``os.replace`` / ``os.fsync`` / ``os.rename`` (every write that
matters ends in one of them), killed before or after the call; k is drawn from the number of such
calls an uninterrupted run makes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kgcomplete as kgc
from test_lifecycle import BASE, assert_same_run

KW = dict(BASE, evaluate_test=False)
KILL_POINTS = 20
#: kill points in the CI run (about 4 s each); the 20 are a slow test
CI_KILL_POINTS = 8

SCRIPT = r'''
import json, os, sys
out, k, when, kw = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
calls = [0]
where = open(out + ".ops", "w")


def counted(fn):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        where.write(f"{calls[0]} {fn.__name__} {args[0]}\n")
        where.flush()
        if calls[0] == k and when == "before":
            os._exit(137)
        result = fn(*args, **kwargs)
        if calls[0] == k and when == "after":
            os._exit(137)
        return result
    return wrapper


for name in ("replace", "fsync", "rename"):
    setattr(os, name, counted(getattr(os, name)))
import kgcomplete as kgc
kgc.train(kgc.load_dataset("nations"), out=out, **kw)
print(json.dumps({"calls": calls[0]}))
'''


def train_until(tmp: Path, out: Path, k: int, when: str) -> subprocess.CompletedProcess:
    script = tmp / "kill.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(out), str(k), when, json.dumps(KW)],
                          capture_output=True, text=True, env=env, timeout=300)


def resume_to_the_end(out: Path) -> None:
    """What a user does after the crash: resume; with no config.yaml yet, train again."""
    if (out / "config.yaml").exists():
        kgc.train(out=out, resume=True)
    else:
        kgc.train(kgc.load_dataset("nations"), out=out, **KW)


@pytest.fixture(scope="module")
def counted_reference(tmp_path_factory):
    """An uninterrupted run through the same script (nothing killed) and its number of calls."""
    tmp = tmp_path_factory.mktemp("crash")
    ref = tmp / "ref"
    done = train_until(tmp, ref, 0, "never")
    assert done.returncode == 0, done.stderr
    return ref, json.loads(done.stdout.strip().splitlines()[-1])["calls"]


def kill_and_resume(counted_reference, tmp_path, n_points: int) -> None:
    """``n_points`` seeded kill points (alternately before and after the call), each resumed to the end
    and compared with the uninterrupted run."""
    ref, total = counted_reference
    assert total >= 30, f"only {total} write calls: the kill points would not cover the checkpoints"
    rng = np.random.default_rng(2026)
    points = sorted(set(int(x) for x in rng.integers(1, total + 1, 3 * n_points)))
    points = [int(p) for p in rng.choice(points, n_points, replace=False)]
    report = []
    for i, k in enumerate(points):
        when = ("before", "after")[i % 2]
        out = tmp_path / f"kill{i}"
        killed = train_until(tmp_path, out, k, when)
        assert killed.returncode == 137, f"kill point {k} was not reached: {killed.stderr[-2000:]}"
        op = (tmp_path / f"kill{i}.ops").read_text().splitlines()[-1]
        resume_to_the_end(out)
        assert_same_run(out, ref)
        report.append(f"{when} {op}")
    assert len(report) == n_points


def test_kills_at_seeded_points_during_writes_resume_to_the_same_run(counted_reference, tmp_path):
    kill_and_resume(counted_reference, tmp_path, CI_KILL_POINTS)


@pytest.mark.slow
def test_kills_at_20_seeded_points_resume_to_the_same_run(counted_reference, tmp_path):
    kill_and_resume(counted_reference, tmp_path, KILL_POINTS)


# ---------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at ``tmp_path/disk`` (root and mount needed; otherwise the test is skipped)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mount: mounting a tmpfs needs root and mount(8)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mount: this machine does not allow mounting a tmpfs ({res.stderr.strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``disk``."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.mark.parametrize("first", [True, False], ids=["first save", "later save"])
def test_a_full_disk_during_a_save_keeps_the_last_checkpoint_and_resumes_exactly(small_disk, tmp_path, first):
    ref = tmp_path / "ref"
    kgc.train(kgc.load_dataset("nations"), out=ref, **KW)
    out = small_disk / "run"
    if first:
        filler = fill(small_disk, 4 * 4096)  # room for the run's small files, not for a checkpoint
        with pytest.raises(OSError) as e:
            kgc.train(kgc.load_dataset("nations"), out=out, **KW)
    else:
        kgc.train(kgc.load_dataset("nations"), out=out, **dict(KW, epochs=1))
        filler = fill(small_disk, 2 * 4096)  # the log line fits, the next checkpoint does not
        with pytest.raises(OSError) as e:
            kgc.train(out=out, resume=True, epochs=KW["epochs"])
    assert e.value.errno == errno.ENOSPC and "No space left on device" in str(e.value), repr(e.value)
    filler.unlink()  # the user frees space
    resume_to_the_end(out)
    assert_same_run(out, ref)


def test_out_on_a_read_only_file_system_is_one_line(small_disk, tmp_path):
    from click.testing import CliRunner

    import reference
    from kgcomplete.cli.main import cli

    res = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"mount: cannot remount the tmpfs read-only ({res.stderr.strip()})")
    res = CliRunner().invoke(cli, ["train", "-d", "nations", "--out", str(small_disk / "run"), "--epochs", "1"])
    reference.assert_user_error(res, str(small_disk / "run"), "Read-only file system", "choose another --out")
