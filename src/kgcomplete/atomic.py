"""Atomic file writes: a file is either the old one or the complete new one, never torn.

The new content goes to a temporary file in the same folder, is flushed to disk (``fsync``) and
then ``os.replace``-d over the target; on any error the temporary file is removed and the target is
untouched. No dependencies (the config and the run folders both write through here).
"""

from __future__ import annotations

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
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_file(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
