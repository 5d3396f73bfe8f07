"""Atomic file writes: a file is either the old one or the complete new one, never torn.

The new content goes to a temporary file in the same folder, is flushed to disk (``fsync``) and
then ``os.replace``-d over the target; on any error the temporary file is removed and the target is
untouched. No dependencies (the config and the run folders both write through here).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write_file(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp_path)`` writes the content; it then replaces ``path`` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            write(Path(tmp))
            os.chmod(tmp, FILE_MODE)  # mkstemp (and some writers) make 0600; give the usual mode
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except Exception as e:
            disk_full = disk_full_error(e, path)
            if disk_full is not None:
                raise disk_full from e
            raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask, read once at import (setting it to read it is not thread-safe later)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: the mode a new file gets under this process's umask (``0o644`` under the usual 022)
FILE_MODE = 0o666 & ~_umask()


def disk_full_error(e: Exception, path: Path):
    """An ``OSError(ENOSPC)`` naming ``path`` when ``e`` is a full disk that a library reported
    without the errno (safetensors: "os error 28"; NumPy: "N requested and M written"), else None."""
    if isinstance(e, OSError) and e.errno is not None:
        return None
    text = str(e)
    short_write = "requested and" in text and "written" in text
    if "No space left on device" in text or "os error 28" in text or (short_write and _free_bytes(path) < 1 << 20):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return None


def _free_bytes(path: Path) -> int:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_file(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
