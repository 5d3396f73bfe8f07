"""Downloads into the kgcomplete cache: resume, checksums, progress bar, offline mode.

Cache layout under :func:`kgc_home` (env ``KGC_HOME``; default ``<user data dir>/kgcomplete``)::

    downloads/<dataset>/<file>        the archives/files exactly as published
    raw/<dataset>/                    archives extracted
    compact/<dataset>/                preprocessed copy (see :mod:`kgcomplete.data.compact`)

``KGC_OFFLINE=1`` forbids network access: a missing file raises :class:`OfflineError` naming the
URL to fetch by hand and the exact path to put it at. Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB
USER_AGENT = "kgcomplete-downloader/1 (+https://github.com/)"


class DownloadError(RuntimeError):
    """A file could not be obtained; the message says which file to put where."""


class ChecksumError(DownloadError):
    """Downloaded bytes do not match the published checksum."""


class DamagedArchiveError(DownloadError):
    """A cached archive that cannot be unpacked (truncated or corrupt)."""


class OfflineError(DownloadError):
    """``KGC_OFFLINE`` is set and a needed file is not in the cache."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file.

    ``name``: file name in the cache; ``urls``: official URL first, mirrors after;
    ``size``: expected bytes (None if unpublished); ``sha256``/``md5``: published digests or None;
    ``extract``: unpack the archive (zip/tar[.gz]) into ``raw/<dataset>/``;
    ``subdir``/``raw_name``: folder and file name under ``raw/<dataset>/`` for a plain (non-archive)
    file (default name: ``name``).
    """

    name: str
    urls: tuple[str, ...]
    size: Optional[int] = None
    sha256: Optional[str] = None
    md5: Optional[str] = None
    extract: bool = True
    subdir: str = ""
    raw_name: str = ""
    note: str = ""

    @property
    def checksum(self) -> Optional[tuple[str, str]]:
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None


# ------------------------------------------------------------------------------------ locations
def _user_data_dir() -> Path:
    """Platform data dir without extra dependencies (XDG on Linux, AppData on Windows, macOS Library)."""
    try:  # use platformdirs when it happens to be installed
        import platformdirs  # type: ignore

        return Path(platformdirs.user_data_dir("kgcomplete", appauthor=False))
    except ImportError:
        pass
    home = Path.home()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "kgcomplete"


def kgc_home() -> Path:
    """Cache root: ``$KGC_HOME`` if set, else ``<user data dir>/kgcomplete``."""
    env = os.environ.get("KGC_HOME")
    return Path(env).expanduser() if env else _user_data_dir()


def downloads_dir(dataset: str) -> Path:
    return kgc_home() / "downloads" / dataset


def raw_dir(dataset: str) -> Path:
    return kgc_home() / "raw" / dataset


def compact_dir(dataset: str) -> Path:
    return kgc_home() / "compact" / dataset


def is_offline() -> bool:
    return os.environ.get("KGC_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------------ checksums
def file_digest(path: str | Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK * 8)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _verified_before(path: Path, spec: RemoteFile) -> bool:
    """True if ``path`` was verified earlier and has not changed since (size + mtime stamp)."""
    m = _marker(path)
    if not m.exists():
        return False
    st = path.stat()
    return m.read_text().strip() == f"{st.st_size} {st.st_mtime_ns} {spec.checksum}"


def verify(path: str | Path, spec: RemoteFile) -> None:
    """Check size (warning only) and checksum (:class:`ChecksumError`) of a complete file."""
    path = Path(path)
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        if spec.checksum is None:  # nothing else can tell a truncated file from a good one
            bad = path.with_name(path.name + ".corrupt")
            path.replace(bad)
            raise ChecksumError(f"{spec.name}: {size:,} bytes, the published size is {spec.size:,} (truncated?). "
                                f"The file was moved to {bad}. " + _manual_hint(spec, path))
        log.warning("%s: %d bytes, the published size is %d", path, size, spec.size)
    if spec.checksum is None or _verified_before(path, spec):
        return
    algo, expected = spec.checksum
    got = file_digest(path, algo)
    if got != expected:
        bad = path.with_name(path.name + ".corrupt")
        path.replace(bad)
        raise ChecksumError(
            f"{spec.name}: {algo} mismatch (expected {expected}, got {got}; {size:,} bytes). "
            f"The file was moved to {bad}. Download it again from {spec.urls[0]} and put it at {path}"
        )
    st = path.stat()
    _marker(path).write_text(f"{st.st_size} {st.st_mtime_ns} {spec.checksum}")


def _manual_hint(spec: RemoteFile, dest: Path) -> str:
    extras = []
    if spec.size:
        extras.append(f"{spec.size:,} bytes")
    if spec.checksum:
        extras.append(f"{spec.checksum[0]} {spec.checksum[1]}")
    facts = f" ({', '.join(extras)})" if extras else ""
    urls = " or ".join(spec.urls)
    return f"download {urls}{facts} and put it at {dest}"


# ------------------------------------------------------------------------------------ download
def _progress(total: Optional[int], initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=not enabled, leave=False)


def _download_one(url: str, part: Path, spec: RemoteFile, progress: bool, timeout: float) -> bool:
    """Stream ``url`` into ``part``, resuming with an HTTP Range request if ``part`` has bytes.
    Returns whether the file's length was known (published size or Content-Length)."""
    have = part.stat().st_size if part.exists() else 0
    if spec.size is not None and have == spec.size:
        return True  # the partial file is already complete
    if spec.size is not None and have > spec.size:
        part.unlink()
        have = 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range past the end: the part already holds the whole file
            return spec.size is not None
        raise
    with resp:
        status = getattr(resp, "status", 200)
        if have and status == 206:
            cr = resp.headers.get("Content-Range", "")
            if not cr.startswith(f"bytes {have}-"):
                raise DownloadError(f"{url}: server answered Range {have}- with Content-Range {cr!r}")
            mode = "ab"
        else:
            if have:
                log.info("%s: server ignored the Range request; restarting from byte 0", url)
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        expected_end = have + int(length) if length is not None else None
        written = have
        with open(part, mode) as f, _progress(expected_end or spec.size, have, spec.name, progress) as bar:
            while True:
                b = resp.read(CHUNK)
                if not b:
                    break
                f.write(b)
                written += len(b)
                bar.update(len(b))
        if expected_end is not None and written < expected_end:
            raise DownloadError(f"{url}: connection closed after {written:,} of {expected_end:,} bytes")
    return expected_end is not None or spec.size is not None


def fetch(
    spec: RemoteFile,
    folder: str | Path,
    progress: bool = True,
    verify_checksum: bool = True,
    timeout: float = 60.0,
    retries: int = 2,
) -> Path:
    """Return ``folder/spec.name``, downloading it first if missing (resuming a ``.part`` file).

    Tries each URL in order, ``retries`` extra resume attempts per URL on connection errors.
    Raises :class:`OfflineError` (``KGC_OFFLINE=1``), :class:`ChecksumError`, or
    :class:`DownloadError`; each message names the URL(s) and the exact path to put the file at.
    """
    folder = Path(folder)
    dest = folder / spec.name
    if dest.exists():
        if verify_checksum:
            verify(dest, spec)
        return dest
    if is_offline():
        raise OfflineError(f"offline mode (KGC_OFFLINE=1) and {spec.name} is not in the cache: "
                           + _manual_hint(spec, dest))
    folder.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    ok = sized = False
    for url in spec.urls:
        for attempt in range(retries + 1):
            try:
                sized = _download_one(url, part, spec, progress, timeout)
                ok = True
                break
            except (urllib.error.URLError, OSError, http.client.HTTPException, DownloadError) as e:
                errors.append(f"{url}: {e!r}" if not str(e) else f"{url}: {e}")
                fatal = isinstance(e, urllib.error.HTTPError) and e.code in (401, 403, 404, 410)
                log.warning("download of %s failed (%s)%s", url, e,
                            "; retrying" if attempt < retries and not fatal else "")
                if fatal:
                    break
                if attempt < retries:
                    time.sleep(min(0.5 * 2.0 ** attempt, 5.0))
        if ok:
            break
    if not ok:
        kept = f"Partial data is kept in {part} and resumes next time. " if part.exists() else ""
        raise DownloadError(f"could not download {spec.name} ({'; '.join(errors[-3:])}). {kept}Or "
                            + _manual_hint(spec, dest))
    part.replace(dest)
    if spec.checksum is None and not sized:
        log.warning("%s: accepted without a check: the server sent no length and no checksum or size is "
                    "published, so a download cut short would look complete (%s bytes received); if the "
                    "dataset fails to load, delete %s and download again", spec.name, f"{dest.stat().st_size:,}", dest)
    if verify_checksum:
        verify(dest, spec)
    return dest


# ------------------------------------------------------------------------------------ archives
def _safe_target(root: Path, member: str) -> Path:
    target = (root / member).resolve()
    if root.resolve() not in target.parents and target != root.resolve():
        raise DownloadError(f"archive member {member!r} would be written outside {root}")
    return target


def extract(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a ``.zip``/``.tar``/``.tar.gz``/``.tgz`` into ``dest`` (atomically via ``dest.tmp``)."""
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for m in z.namelist():
                    _safe_target(tmp, m)
                z.extractall(tmp)
        elif name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
            with tarfile.open(archive) as t:
                for m in t.getmembers():
                    _safe_target(tmp, m.name)
                    if m.issym() or m.islnk():
                        raise DownloadError(f"{archive}: links in archives are not extracted ({m.name})")
                if hasattr(tarfile, "data_filter"):  # Python >= 3.12 (and 3.11.4+)
                    t.extractall(tmp, filter="data")
                else:
                    t.extractall(tmp)
        else:
            raise DownloadError(f"{archive}: not an archive kgcomplete can extract")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DamagedArchiveError(f"{archive}: damaged archive ({' '.join(str(e).split())})") from None
    if dest.exists():
        for p in tmp.iterdir():  # merge (several archives may share one raw folder)
            target = dest / p.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            p.replace(target)
        tmp.rmdir()
    else:
        tmp.replace(dest)
    return dest


def _stamp(archive_name: str) -> str:
    return f".extracted-{archive_name}"


def prepare(dataset: str, files: Sequence[RemoteFile], progress: bool = True,
            verify_checksum: bool = True) -> Path:
    """Make ``raw/<dataset>/`` hold every file of ``files`` (downloaded and extracted); return it."""
    raw = raw_dir(dataset)
    todo = [f for f in files if not (raw / _stamp(f.name)).exists()]
    if not todo:
        return raw
    if is_offline():
        missing = [f for f in todo if not (downloads_dir(dataset) / f.name).exists()]
        if missing:
            hints = "; ".join(_manual_hint(f, downloads_dir(dataset) / f.name) for f in missing)
            raise OfflineError(f"offline mode (KGC_OFFLINE=1) and {dataset} is not in the cache: {hints}")
    raw.mkdir(parents=True, exist_ok=True)
    for f in todo:
        path = fetch(f, downloads_dir(dataset), progress=progress, verify_checksum=verify_checksum)
        if f.extract:
            try:
                extract(path, raw)
            except DamagedArchiveError as e:  # e.g. cut short before checksums were published: fetch again
                bad = path.with_name(path.name + ".corrupt")
                path.replace(bad)
                _marker(path).unlink(missing_ok=True)
                if is_offline():
                    raise OfflineError(f"{e}; moved to {bad}; offline mode (KGC_OFFLINE=1): "
                                       + _manual_hint(f, path)) from None
                log.warning("%s; moved to %s, downloading it again", e, bad)
                path = fetch(f, downloads_dir(dataset), progress=progress, verify_checksum=verify_checksum)
                try:
                    extract(path, raw)
                except DamagedArchiveError as again:
                    raise DamagedArchiveError(f"{again} (downloaded twice; the server's copy may be damaged): "
                                              + _manual_hint(f, path)) from None
        else:
            target = raw / f.subdir / (f.raw_name or f.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        (raw / _stamp(f.name)).write_text("ok")
    return raw


def cached_files(dataset: str, files: Sequence[RemoteFile]) -> list[Path]:
    """Files of ``files`` already present in ``downloads/<dataset>/``."""
    d = downloads_dir(dataset)
    return [d / f.name for f in files if (d / f.name).exists()]


__all__ = [
    "ChecksumError",
    "DamagedArchiveError",
    "DownloadError",
    "OfflineError",
    "RemoteFile",
    "cached_files",
    "compact_dir",
    "downloads_dir",
    "extract",
    "fetch",
    "file_digest",
    "is_offline",
    "kgc_home",
    "prepare",
    "raw_dir",
    "verify",
]
