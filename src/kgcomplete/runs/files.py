"""Run-folder files: atomic writes, the epoch log, the common files of every run, checkpoint commits.

Every run kind writes its folder through these helpers, so that a run folder is never left torn:
``atomic_*`` write a temporary file and ``os.replace`` it; :func:`commit_files` makes the files of
one checkpoint a single commit (:func:`recover_checkpoint` finishes or undoes one a crash cut short);
:func:`trim_log` cuts ``log.jsonl`` back to the epoch a resume starts from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from ..atomic import FILE_MODE, atomic_write_bytes, atomic_write_file, atomic_write_text, disk_full_error
from ..config import Config, section_from_dict
from ..data.dataset import Dataset
from ..data.registry import load_configured
from ..data.vocabulary import Vocabulary

log = logging.getLogger(__name__)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: Optional[dict] = None) -> None:
    """A safetensors file of ``tensors`` (moved to the host); not atomic by itself: a checkpoint
    writer for :func:`commit_files`, or wrapped by :func:`atomic_save_safetensors`."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path, metadata=metadata)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: Optional[dict] = None) -> None:
    atomic_write_file(path, lambda p: save_tensors(tensors, p, metadata))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_log(run_dir: str | Path) -> list[dict]:
    """The records of ``log.jsonl`` (a line torn by a kill while it was appended is skipped)."""
    return trim_log(run_dir, None, write=False)


def trim_log(run_dir: str | Path, epochs: Optional[int], write: bool = True, rows: int = 0) -> list[dict]:
    """The records of the first ``epochs`` epochs of ``log.jsonl`` (None: all) and of the first
    ``rows`` training rows of the next one (records of validations inside an epoch carry ``rows``
    and their position as ``epoch``, e.g. 3.25), skipping a line torn by a kill. With ``write``,
    rewrite the file atomically when that drops anything: records logged after the checkpoint a
    resume starts from, which are trained (and logged) again."""
    p = Path(run_dir) / "log.jsonl"
    if not p.exists():
        return []
    text = p.read_text()
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # empty, or torn by a kill while it was appended
        if isinstance(rec, dict) and (epochs is None or
                                      (int(rec.get("epoch", 0)), int(rec.get("rows", 0))) <= (epochs, rows)):
            records.append(rec)
    kept = "".join(json.dumps(r) + "\n" for r in records)
    if write and kept != text:
        log.info("%s: kept the %d records up to epoch %s (of %d lines)", p, len(records), epochs, len(text.splitlines()))
        atomic_write_bytes(p, kept.encode())
    return records


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, array)


# ----------------------------------------------------------------- run folder
#: in a run folder: marks it as kgcomplete's and is locked (``flock``) while a process writes the run
LOCK_FILE = ".kgcomplete.lock"
#: files that mark a folder written before :data:`LOCK_FILE` existed as a run (next to config.yaml)
_LEGACY_RUN_FILES = ("checkpoint.safetensors", "trainer_state.json", "checkpoint_state.pt", "sharding.json",
                     "metrics.json", "log.jsonl", "model.safetensors")


class RunLockedError(FileExistsError):
    """Another live process writes this run folder."""


#: lock files this process holds open; a forked child closes its copies at once (without unlocking),
#: so the lock ends with its holder even while forked workers live on for a moment
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


def _take(fd: int, grace_s: float = 10.0) -> None:
    """``flock`` the lock file ``fd`` (BlockingIOError when a live process holds it). When the PID the
    file names is dead, processes it left behind (e.g. its workers, on their way out) may still hold
    the lock for a moment: wait up to ``grace_s`` for them."""
    import fcntl

    deadline = time.monotonic() + grace_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            text = os.pread(fd, 512, 0).decode(errors="replace").split()
            pid = int(text[1]) if len(text) > 1 and text[0] == "PID" and text[1].isdigit() else None
            if pid is None or _pid_alive(pid) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for this purpose
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class RunFolder:
    """Paths and writers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def is_run(self) -> bool:
        """Whether the folder holds a kgcomplete run (its lock file, or an older run's files)."""
        if (self / LOCK_FILE).exists():
            return True
        return (self / "config.yaml").is_file() and any((self / f).exists() for f in _LEGACY_RUN_FILES)

    def check_target(self) -> None:
        """Refuse to train into a path that is neither new, nor an empty folder, nor a run of
        kgcomplete: nothing of the user's is ever overwritten."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise FileExistsError(f"{self.path} exists and is a file, not a run folder; choose another --out")
        if self.is_run():
            return
        held = sorted(p.name for p in self.path.iterdir())
        if held:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise FileExistsError(f"{self.path} exists and is not a kgcomplete run (it holds {shown}); "
                                  f"choose a new or empty folder for --out")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's exclusive lock while training writes it: a second writer (another
        ``kgc train``, a ``--resume``) is refused with the holder's PID. The lock is an ``flock`` on
        :data:`LOCK_FILE`, released by the OS when its process dies (a stale lock is never left).
        A folder this call creates is removed again if nothing but the lock was written."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                import fcntl

                _take(fd)
            except ImportError:  # no flock (Windows): the folder is still marked as a run
                pass
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
                raise RunLockedError(f"{self.path} is being written by another kgcomplete process ({holder}); "
                                     f"wait for it to finish or use another --out") from None
            _HELD_LOCKS.add(fd)
            info = f"PID {os.getpid()} on {platform.node()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            try:
                yield
            except BaseException:
                if created and [p.name for p in self.path.iterdir()] == [LOCK_FILE]:
                    shutil.rmtree(self.path, ignore_errors=True)
                raise
        finally:
            _HELD_LOCKS.discard(fd)
            os.close(fd)  # releases the flock

    def create(self, config: Config | dict, dataset: Dataset) -> None:
        """The files every run starts with: ``config.yaml`` (a :class:`Config`, or a run kind's plain
        config dict), the vocabularies, the dataset's metadata copies and, for a dataset given in code
        (no ``data.source`` to reload it from), its splits."""
        self.path.mkdir(parents=True, exist_ok=True)
        source = config.data.source if isinstance(config, Config) else (config.get("data") or {}).get("source")
        atomic_write_file(self / "entities.tsv", dataset.entities.save)
        atomic_write_file(self / "relations.tsv", dataset.relations.save)
        for fname, frame in dataset.metadata_frames().items():
            atomic_write_file(self / fname, lambda p, f=frame: f.to_csv(p, sep="\t", header=False, index=False))
        if source is None:
            (self / "splits").mkdir(exist_ok=True)
            for k, v in dataset.splits.items():
                atomic_write_file(self / "splits" / f"{k}.npy", lambda p, a=v: _save_npy(p, a))
        # config.yaml last: a folder with one can be resumed, so everything it needs is there first
        if isinstance(config, Config):
            config.save(self / "config.yaml")
        else:
            atomic_write_text(self / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def append_log(self, record: dict) -> None:
        with open(self / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> dict:
        p = self / "metrics.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def chosen_weight(self, key: str, what: str) -> float:
        """The weight training chose on the validation split for an ``auto`` option,
        ``metrics.json[key]["chosen"]``; 0 when not chosen (yet), or, with a warning naming ``what``
        it means, when metrics.json cannot be read."""
        try:
            return float((self.metrics().get(key) or {}).get("chosen", 0.0))
        except (ValueError, AttributeError, TypeError) as e:
            log.warning("%s: unreadable (%s); ranking without %s", self / "metrics.json", e, what)
            return 0.0

    def update_metrics(self, **parts) -> dict:
        m = self.metrics()
        m.update(parts)
        atomic_write_json(self / "metrics.json", m)
        return m

    def dataset(self, config: Config | dict) -> Dataset:
        """Reload the run's dataset (by name/folder, or from the saved splits) and check vocabularies.
        ``config``: the run's :class:`Config` or plain config dict (its ``data`` section)."""
        data = config.data if isinstance(config, Config) else section_from_dict("data", config.get("data") or {})
        source = data.source
        if source is None:
            if not (self / "splits").is_dir():
                raise ValueError(f"{self.path}/config.yaml names no dataset source and the run keeps no splits; "
                                 f"pass the dataset (dataset=...)")
            splits = {p.stem: np.load(p) for p in sorted((self / "splits").glob("*.npy"))}
            ds = Dataset(
                name=self.path.name,
                entities=Vocabulary.load(self / "entities.tsv"),
                relations=Vocabulary.load(self / "relations.tsv"),
                splits=splits,
            )
            ds.attach_metadata_folder(self.path)
            return ds
        ds = load_configured(data)
        ents = Vocabulary.load(self / "entities.tsv")
        if len(ents) != ds.num_entities or not np.array_equal(ents.labels, ds.entities.labels):
            raise ValueError(
                f"{self.path}: dataset {source!r} no longer matches the run's entities.tsv "
                f"({ds.num_entities} vs {len(ents)} entities)"
            )
        return ds



# ------------------------------------------------------------ checksums, checked reads
#: in a run folder: ``{file name: sha256}`` of every file a checkpoint commit wrote, moved into place
#: last by :func:`commit_files`; files listed there are verified when they are read
CHECKSUMS = "checksums.json"


class DamagedFileError(ValueError):
    """A run file that is damaged: its checksum differs from the one saved with it, or it cannot be parsed."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksums(folder: str | Path) -> dict[str, str]:
    """``{file name: sha256}`` of a folder: its ``checksums.json`` and any ``checksums-*.json`` (one
    per BESS worker in ``shards/``)."""
    out: dict[str, str] = {}
    for p in sorted(Path(folder).glob("checksums*.json")):
        try:
            part = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DamagedFileError(f"{p}: damaged ({e}); the run's checkpoint files cannot be verified") from None
        if isinstance(part, dict):
            out.update(part)
    return out


def verify(path: Path) -> None:
    """Raise :class:`DamagedFileError` naming ``path`` when its sha256 differs from the one its
    checkpoint commit recorded (files written before checksums existed are not checked)."""
    path = Path(path)
    expected = checksums(path.parent).get(path.name)
    if expected is None:
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (the run's checksums.json lists it)")
    if sha256_file(path) != expected:
        if (path.parent / _COMMITTED).exists():  # a commit is being moved into place next to us: finish it, look again
            recover_checkpoint(path.parent, roll_back=False)
            expected = checksums(path.parent).get(path.name)
            if expected is None or sha256_file(path) == expected:
                return
        raise DamagedFileError(f"{path}: damaged (its sha256 differs from the one saved with the checkpoint)")


def verify_all(folder: str | Path) -> None:
    """Verify every file listed by the checksums of ``folder`` and of ``folder/shards`` (before a
    resume hands the files to workers, so that damage is one error here, not one per worker)."""
    for where in (Path(folder), Path(folder) / "shards"):
        for name in checksums(where):
            if (where / name).exists():
                verify(where / name)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, verified; a damaged, truncated or empty one is a
    :class:`DamagedFileError` naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    verify(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return load_file(path)
    except Exception as e:  # safetensors' own errors: a truncated, empty or foreign file
        raise DamagedFileError(f"{path}: not a readable safetensors file ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else 'empty'})") from None


def read_json(path: Path) -> Any:
    """A run's JSON file (e.g. trainer_state.json), verified; damage is a :class:`DamagedFileError` naming it."""
    path = Path(path)
    verify(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedFileError(f"{path}: damaged, not JSON ({e})") from None


def load_into(module: torch.nn.Module, path: Path) -> None:
    """``module.load_state_dict`` from a checkpoint file, with the file named when it does not fit."""
    tensors = read_tensors(path)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e).splitlines()[0])
        raise DamagedFileError(f"{path}: does not fit the model of the run's config.yaml ({first})") from None


# ------------------------------------------------------------ checkpoint commits
_STAGING, _COMMITTED = ".checkpoint.staging", ".checkpoint.committed"
_ORDER = "ORDER"  # in a staged checkpoint: its file names, in the order they are moved into place


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (best effort: not every platform opens folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if Path(path).is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


def commit_files(folder: str | Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Write the files of one checkpoint into ``folder`` as one commit: ``writers`` maps a file name
    to ``write(path)``. The files are written to ``.checkpoint.staging/``, which is renamed to
    ``.checkpoint.committed/`` (the commit: one atomic rename) and then moved into place in the
    writers' order (put the counters last), so a kill at any point leaves either the previous
    checkpoint or the new one (:func:`recover_checkpoint` finishes or undoes it). Single writer:
    every file of the checkpoint comes from this process."""
    folder = Path(folder)
    recover_checkpoint(folder)
    stage = folder / _STAGING
    stage.mkdir()
    try:  # the sums of files this commit does not rewrite (e.g. an unchanged best.safetensors)
        sums = checksums(folder)
    except DamagedFileError as e:  # rewritten whole below; files it no longer lists are not verified
        log.warning("%s; writing a new one", e)
        sums = {}
    for name, write in writers.items():  # plain writes: the staging folder is what makes them atomic
        try:
            write(stage / name)
        except Exception as e:
            disk_full = disk_full_error(e, stage / name)
            if disk_full is not None:
                raise disk_full from e
            raise
        os.chmod(stage / name, FILE_MODE)
        fsync_path(stage / name)
        sums[name] = sha256_file(stage / name)
    (stage / CHECKSUMS).write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")
    fsync_path(stage / CHECKSUMS)
    (stage / _ORDER).write_text("\n".join([*writers, CHECKSUMS]) + "\n")
    fsync_path(stage / _ORDER)
    fsync_path(stage)
    os.replace(stage, folder / _COMMITTED)  # the commit
    fsync_path(folder)
    recover_checkpoint(folder)


def recover_checkpoint(folder: str | Path, roll_back: bool = True) -> None:
    """Finish a committed checkpoint whose files were not all moved into place (a run killed after
    the commit) and, with ``roll_back``, drop a staged one that was never committed. Readers pass
    ``roll_back=False``: finishing is safe next to a running writer (whoever moves a file first
    wins), dropping its staging folder is not."""
    folder = Path(folder)
    committed = folder / _COMMITTED
    if committed.is_dir():
        try:
            order = (committed / _ORDER).read_text().split()
        except FileNotFoundError:  # moved and removed by another process meanwhile
            order = []
        try:
            for name in order:
                try:
                    os.replace(committed / name, folder / name)
                except FileNotFoundError:  # already moved (by another process)
                    pass
            shutil.rmtree(committed, ignore_errors=True)
            fsync_path(folder)
        except OSError as e:
            if roll_back:
                raise
            # a reader of a folder it may not write (e.g. read-only): read what is in place
            log.warning("could not finish the interrupted checkpoint in %s: %s", folder, e)
    if roll_back and (folder / _STAGING).exists():
        shutil.rmtree(folder / _STAGING)
