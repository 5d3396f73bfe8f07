"""Bad input and faults through the CLI: every case ends with the right exit code and one
``Error: ...`` line naming the file, line, key or value (usage errors: exit 2), and changes no file
outside the new run -- or, where the input is only odd, is accepted and reported.

Each case is ``(setup(tmp) -> argv, exit code, words of the message)``; ``setup`` writes what the
case needs under ``tmp`` and returns the ``kgc`` arguments. The run folder a case asks for is
``tmp/out``; a refused case must leave every other file under ``tmp`` as it was and create no
``out``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import reference
from kgcomplete.cli.main import cli

NATIONS = Path(__file__).resolve().parents[1] / "src" / "kgcomplete" / "data" / "bundled" / "nations"
FAST = ["--model", "distmult", "--dim", "8", "--epochs", "1", "--threads", "1", "--no-progress"]


# --------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its hash; a run's lock file only by existence (it holds the
    last holder's PID and time, rewritten by every command that takes the lock)."""
    return {str(p.relative_to(root)): "lock" if p.name == ".kgcomplete.lock" else hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def data(tmp: Path, train: bytes | str, valid: bytes | str | None = None, test: bytes | str | None = None) -> Path:
    """A dataset folder: ``train`` as given, valid/test the first lines of nations' (all entities seen)."""
    d = tmp / "data"
    d.mkdir(exist_ok=True)
    base = (NATIONS / "train.txt").read_text().splitlines()
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        if text is None:
            text = "\n".join(base[:5]) + "\n"
        (d / f"{name}.txt").write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def nations_lines(n: int = 400) -> list[str]:
    return (NATIONS / "train.txt").read_text().splitlines()[:n]


def train_args(tmp: Path, *extra: str, dataset: str | Path = "nations") -> list[str]:
    return ["train", "--dataset", str(dataset), "--out", str(tmp / "out"), *FAST, *extra]


def trained_run(tmp: Path) -> Path:
    """A finished small run at ``tmp/run`` (with checksums)."""
    run = tmp / "run"
    res = CliRunner().invoke(cli, ["train", "--dataset", "nations", "--out", str(run), *FAST, "--set",
                                   "training.eval_every=1"])
    assert res.exit_code == 0, (res.output, res.exception)
    return run


def flip_bytes(path: Path, at: int = -64) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


# ----------------------------------------------------------------------- cases
def four_columns(tmp):
    return train_args(tmp, dataset=data(tmp, "".join(f"{ln}\t1.0\n" for ln in nations_lines())))


def non_utf8(tmp):
    lines = nations_lines()
    return train_args(tmp, dataset=data(tmp, ("\n".join(lines[:3]) + "\nbad\xe9name\tr\tx\n").encode("latin-1")))


def padded_label(tmp):
    lines = nations_lines()
    h, r, t = lines[7].split("\t")
    lines[7] = f"{h}\t{r}\t{t} "
    return train_args(tmp, dataset=data(tmp, "\n".join(lines) + "\n"))


def empty_train(tmp):
    return train_args(tmp, dataset=data(tmp, ""))


def empty_train_drop_unknown(tmp):
    return train_args(tmp, "--drop-unknown", dataset=data(tmp, ""))


def config_file(tmp, text: str | bytes) -> Path:
    p = tmp / "my.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def misspelt_section(tmp):
    return train_args(tmp, "--config", str(config_file(tmp, "trainig:\n  epochs: 3\n")))


def misspelt_key(tmp):
    return train_args(tmp, "--config", str(config_file(tmp, "training:\n  epoch: 3\n")))


def bad_yaml(tmp):
    return train_args(tmp, "--config", str(config_file(tmp, "training:\n  epochs: [1, 2\n  lr: 0.1\n")))


def empty_yaml(tmp):
    return train_args(tmp, "--config", str(config_file(tmp, "")))


def list_yaml(tmp):
    return train_args(tmp, "--config", str(config_file(tmp, "- training\n- model\n")))


def binary_yaml(tmp):
    return train_args(tmp, "--config", str(config_file(tmp, bytes(range(256)))))


def flag(*args):
    return lambda tmp: train_args(tmp, *args)


def existing_folder(tmp):
    mine = tmp / "out"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    (mine / "entities.tsv").write_text("keep me\n")
    return train_args(tmp)


def out_is_a_file(tmp):
    (tmp / "out").write_text("a file\n")
    return train_args(tmp)


def offline_uncached(tmp):
    os.environ["KGC_HOME"] = str(tmp / "cache")
    os.environ["KGC_OFFLINE"] = "1"
    return train_args(tmp, dataset="fb15k-237")


def diverging(tmp):
    return train_args(tmp, "--lr", "1e30", "--optimizer", "sgd")


def run_with(damage):
    """A finished run under ``tmp/run``, damaged by ``damage(run)``; the command: evaluate it."""
    def setup(tmp):
        run = trained_run(tmp)
        damage(run)
        return ["evaluate", str(run)]
    return setup


def resume_with(damage):
    def setup(tmp):
        run = trained_run(tmp)
        damage(run)
        return ["train", "--resume", str(run), "--epochs", "2"]
    return setup


def both(action):
    return lambda run: [action(run / "best.safetensors"), action(run / "checkpoint.safetensors")]


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path: Path):
    path.write_bytes(b"")


def mismatched(run: Path):
    other = run.parent / "other"
    res = CliRunner().invoke(cli, ["train", "--dataset", "nations", "--out", str(other), "--model", "distmult",
                                   "--dim", "16", "--epochs", "1", "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    for name in ("best.safetensors", "checkpoint.safetensors"):
        (run / name).write_bytes((other / name).read_bytes())
    # the checksums say which bytes were saved with *this* run: drop them so the shape check speaks
    (run / "checksums.json").unlink(missing_ok=True)


CASES = {
    # silent wrong data, now refused
    "4 columns": (four_columns, 1, ["train.txt, line 1", "expected 3 tab-separated fields, found 4", "--columns"]),
    "non-UTF-8": (non_utf8, 1, ["train.txt, line 4", "not valid UTF-8"]),
    "padded label": (padded_label, 1, ["train.txt, line 8", "whitespace", "--strip-whitespace"]),
    "empty train.txt": (empty_train, 1, ["train.txt", "no training triples"]),
    "empty train.txt, --drop-unknown": (empty_train_drop_unknown, 1, ["train.txt", "no training triples"]),
    "misspelt section": (misspelt_section, 1, ["my.yaml", "unknown config section 'trainig'", "training"]),
    "misspelt key": (misspelt_key, 1, ["my.yaml", "'epoch'", "epochs"]),
    "dim 0": (flag("--dim", "0"), 1, ["model.dim must be >= 1, got 0"]),
    "dim -1": (flag("--dim", "-1"), 1, ["model.dim must be >= 1, got -1"]),
    "epochs 0": (flag("--epochs", "0"), 1, ["training.epochs must be >= 1, got 0"]),
    "epochs -3": (flag("--epochs", "-3"), 1, ["training.epochs must be >= 1, got -3"]),
    "workers 0": (flag("--workers", "0"), 1, ["distributed.workers must be >= 1, got 0"]),
    "batch size 0": (flag("--batch-size", "0"), 1, ["training.batch_size must be >= 1, got 0"]),
    "threads -1": (flag("--threads", "-1"), 1, ["training.threads must be >= 0, got -1"]),
    "lr inf": (flag("--lr", "inf"), 1, ["training.lr must be a finite number, got inf"]),
    "lr 0": (flag("--lr", "0"), 1, ["training.lr must be > 0, got 0"]),
    "--set epochs=abc": (flag("--set", "training.epochs=abc"), 1, ["training.epochs must be an integer, got 'abc'"]),
    "--set without =": (flag("--set", "training.epochs"), 2, ["--set", "must look like section.key=value"]),
    "--set unknown key": (flag("--set", "training.lrr=0.1"), 1, ["'lrr'", "training.lr"]),
    "bad YAML": (bad_yaml, 1, ["my.yaml, line 3", "not valid YAML"]),
    "empty YAML": (empty_yaml, 1, ["my.yaml", "empty"]),
    "list YAML": (list_yaml, 1, ["my.yaml", "must be a mapping"]),
    "binary YAML": (binary_yaml, 1, ["my.yaml", "not UTF-8"]),
    # lost work, now refused
    "--out: a folder that is not a run": (existing_folder, 1, ["is not a kgcomplete run", "config.yaml, entities.tsv"]),
    "--out: a file": (out_is_a_file, 2, ["--out", "is a file"]),
    # tracebacks, now one line
    "KGC_OFFLINE, uncached": (offline_uncached, 1, ["KGC_OFFLINE"]),
}
#: cases refused after the run started: ``out`` exists then (with the last good checkpoint, if any)
STARTED = {
    "NaN divergence": (diverging, 1, ["loss became nan at epoch 1", "lower training.lr"]),
}
CASES.update(STARTED)


@pytest.fixture
def env_restored():
    saved = {k: os.environ.get(k) for k in ("KGC_HOME", "KGC_OFFLINE")}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_one_line_and_nothing_changed(case, tmp_path, env_restored):
    setup, code, words = CASES[case]
    argv = setup(tmp_path)
    out_existed = (tmp_path / "out").exists()
    before = snapshot(tmp_path)
    res = CliRunner().invoke(cli, argv)
    if code == 2:
        reference.assert_usage_error(res, *words)
    else:
        reference.assert_user_error(res, *words)
    if case in STARTED:
        before.update({k: v for k, v in snapshot(tmp_path).items() if k.startswith("out/")})
    elif not out_existed:
        assert not (tmp_path / "out").exists(), "a refused run left a folder behind"
    assert snapshot(tmp_path) == before, "a refused command changed files"


DAMAGED = {
    "flipped bytes in both checkpoints": (run_with(both(flip_bytes)), ["best.safetensors: damaged",
                                                                       "checkpoint.safetensors: damaged"]),
    "truncated checkpoints": (run_with(both(truncate)), ["best.safetensors", "checkpoint.safetensors"]),
    "zero-byte checkpoints": (run_with(both(zero)), ["best.safetensors", "checkpoint.safetensors"]),
    "checkpoints of another model": (run_with(mismatched), ["best.safetensors: does not fit the model",
                                                            "size mismatch"]),
    "binary config.yaml": (run_with(lambda run: (run / "config.yaml").write_bytes(bytes(range(256)))),
                           ["config.yaml", "not UTF-8"]),
    "truncated config.yaml": (run_with(lambda run: (run / "config.yaml").write_text("data:\n  source: nations\nmodel: na")),
                              ["config.yaml", "'model' must be a mapping"]),
    "empty config.yaml": (run_with(lambda run: (run / "config.yaml").write_text("")), ["config.yaml", "empty"]),
    "resume: flipped bytes in checkpoint.safetensors": (
        resume_with(lambda run: flip_bytes(run / "checkpoint.safetensors")), ["checkpoint.safetensors: damaged"]),
    "resume: binary trainer_state.json": (
        resume_with(lambda run: (run / "trainer_state.json").write_bytes(bytes(range(256)))),
        ["trainer_state.json: damaged"]),
    "resume: truncated trainer_state.json, no checksums": (
        resume_with(lambda run: [truncate(run / "trainer_state.json"), (run / "checksums.json").unlink(missing_ok=True)]),
        ["trainer_state.json: damaged, not JSON"]),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_run_is_named_not_used(case, tmp_path):
    setup, words = DAMAGED[case]
    argv = setup(tmp_path)
    before = snapshot(tmp_path)
    res = CliRunner().invoke(cli, argv)
    reference.assert_user_error(res, *words)
    assert snapshot(tmp_path) == before


def test_one_damaged_checkpoint_falls_back_to_the_other_out_loud(tmp_path, caplog):
    run = trained_run(tmp_path)
    flip_bytes(run / "best.safetensors")
    res = CliRunner().invoke(cli, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    assert any("best.safetensors: damaged" in r.message and "loaded checkpoint.safetensors instead" in r.message
               for r in caplog.records), caplog.text


# ------------------------------------------------------------------ odd but accepted
def test_named_columns_pick_head_relation_tail_out_of_a_wider_file(tmp_path):
    lines = nations_lines()
    d = data(tmp_path, "".join(f"0.5\t{ln}\n" for ln in lines),
              valid="".join(f"0.5\t{ln}\n" for ln in lines[:5]), test="".join(f"0.5\t{ln}\n" for ln in lines[:5]))
    res = CliRunner().invoke(cli, train_args(tmp_path, "--columns", "weight,head,relation,tail", dataset=d))
    assert res.exit_code == 0, res.output
    ents = (tmp_path / "out" / "entities.tsv").read_text()
    assert "0.5" not in ents and lines[0].split("\t")[0] in ents


def test_duplicates_are_dropped_and_counted_or_kept(tmp_path):
    lines = nations_lines()
    d = data(tmp_path, "\n".join(lines + lines[:3]) + "\n")
    res = CliRunner().invoke(cli, train_args(tmp_path, "--json", dataset=d))
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())["dataset"]
    assert summary["train"] == len(lines) and summary["duplicates_dropped"] == {"train": 3}
    res = CliRunner().invoke(cli, ["train", "--dataset", str(d), "--out", str(tmp_path / "kept"), *FAST,
                                   "--keep-duplicates"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "kept" / "metrics.json").read_text())["dataset"]
    assert summary["train"] == len(lines) + 3 and "duplicates_dropped" not in summary


def test_padded_labels_can_be_stripped_and_counted(tmp_path):
    lines = nations_lines()
    lines[7] = lines[7] + "  "
    lines[9] = " " + lines[9]
    d = data(tmp_path, "\n".join(lines) + "\n")
    res = CliRunner().invoke(cli, train_args(tmp_path, "--strip-whitespace", dataset=d))
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())["dataset"]
    assert summary["whitespace_stripped"] == {"train": 2}
    assert " " not in "".join(ln.split("\t")[1] for ln in (tmp_path / "out" / "entities.tsv").read_text().splitlines())


def test_an_empty_valid_split_is_a_notice(tmp_path, caplog):
    d = data(tmp_path, "\n".join(nations_lines()) + "\n", valid="")
    res = CliRunner().invoke(cli, train_args(tmp_path, dataset=d))
    assert res.exit_code == 0, res.output
    assert any("no valid triples (no validation: early stopping is off)" in r.message for r in caplog.records)


# ------------------------------------------------------------------ the run folder's lock
def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    run = trained_run(tmp_path)
    fd = os.open(run / ".kgcomplete.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live training would hold it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on somewhere, since now".encode(), 0)
        before = snapshot(tmp_path)
        res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "2"])
        reference.assert_user_error(res, f"is being written by another kgcomplete process (PID {os.getpid()}")
        assert snapshot(tmp_path) == before
    finally:
        os.close(fd)
    res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "2"])  # the holder is gone
    assert res.exit_code == 0, res.output


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    run = trained_run(tmp_path)
    holder = subprocess.Popen(["python", "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(run / ".kgcomplete.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "2"])
        assert res.exit_code == 1 and "another kgcomplete process" in res.output
    finally:
        holder.kill()
        holder.wait()
    res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "2"])
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------ OS errors, one line
@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, ["No space left on device", "the disk is full", "--resume"]),
    (errno.EROFS, ["Read-only file system", "choose another --out"]),
])
def test_os_errors_while_writing_are_one_line(code, words, tmp_path, monkeypatch):
    import kgcomplete.atomic as atomic

    def failing(path, write):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(atomic, "atomic_write_file", failing)
    res = CliRunner().invoke(cli, train_args(tmp_path))
    reference.assert_user_error(res, "config.yaml", *words)


def test_a_forked_child_does_not_keep_the_lock_of_a_dead_holder(tmp_path):
    """Forked workers inherit the lock file; they drop their copy at fork, so the lock ends with the
    holder even while a child lives on."""
    script = ("import os, sys, time\nfrom kgcomplete.runs.files import RunFolder\n"
              "with RunFolder(sys.argv[1]).lock():\n"
              "    child = os.fork()\n"
              "    if child == 0:\n        os.close(1)\n        os.close(2)\n        time.sleep(30)\n        os._exit(0)\n"
              "    print(child, flush=True)\n    os._exit(0)\n")
    holder = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                            timeout=60)
    child = int(holder.stdout.strip())
    from kgcomplete.runs.files import RunFolder

    try:
        os.kill(child, 0)  # alive
        t0 = time.monotonic()
        with RunFolder(tmp_path / "run").lock():  # the child still sleeps; the lock is free at once
            pass
        assert time.monotonic() - t0 < 1.0
    finally:
        os.kill(child, 9)


def test_run_files_get_the_usual_mode_not_0600(tmp_path):
    run = trained_run(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.yaml", "metrics.json", "checkpoint.safetensors", "checksums.json", "entities.tsv"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_reader_next_to_a_half_moved_commit_finishes_it_instead_of_reporting_damage(tmp_path):
    """A training moved checkpoint.safetensors into place but not yet checksums.json when a reader
    (kgc evaluate, a server) verifies it: the reader finishes the commit and reads the new files."""
    from kgcomplete.runs.files import read_tensors

    run = trained_run(tmp_path)
    committed = run / ".checkpoint.committed"
    committed.mkdir()
    new = bytearray((run / "checkpoint.safetensors").read_bytes())
    new[-8] ^= 0xFF  # the next checkpoint's weights
    (run / "checkpoint.safetensors").write_bytes(bytes(new))  # already moved into place
    sums = json.loads((run / "checksums.json").read_text())
    sums["checkpoint.safetensors"] = hashlib.sha256(bytes(new)).hexdigest()
    (committed / "checksums.json").write_text(json.dumps(sums))  # not moved yet
    (committed / "ORDER").write_text("checkpoint.safetensors\nchecksums.json\n")
    read_tensors(run / "checkpoint.safetensors")  # no DamagedFileError
    assert not committed.exists() and json.loads((run / "checksums.json").read_text()) == sums
