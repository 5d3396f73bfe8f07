"""Millions of strings on disk, memory-mapped: id -> string and string -> id without a Python object each.

A :class:`StringTable` folder holds::

    bytes.npy    (B,) uint8     the UTF-8 strings, each followed by "\\n" (strings hold no newline)
    offsets.npy  (n + 1,) int64 string i is bytes[offsets[i] : offsets[i + 1] - 1]
    hashes.npy   (n,) uint64    64-bit hashes of the strings, sorted
    order.npy    (n,) int32|64  the string id of each sorted hash

:meth:`StringTable.get` gathers the bytes of the requested ids in one NumPy gather and splits them
(one decode per call, not per string); :meth:`StringTable.lookup` hashes the queried strings the
same vectorised way, finds candidates by binary search and confirms each by comparing the bytes, so
a hash collision can never return a wrong id. Building (:meth:`StringTable.write`) streams blocks of
strings: memory holds one block plus 8 bytes of hash per string (then the sort). About
``mean UTF-8 length + 1 + 8 + 8 + 4`` bytes per string on disk, a few pages of it in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

_FILES = ("bytes", "offsets", "hashes", "order")
#: polynomial hash base and splitmix64 finaliser constants (any odd 64-bit values do)
_BASE = np.uint64(0x100000001B3)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _MIX1
    h = h ^ (h >> np.uint64(27))
    h = h * _MIX2
    return h ^ (h >> np.uint64(31))


def hash_spans(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """64-bit hashes of the byte spans ``buf[starts[i]:starts[i] + lengths[i]]``: a polynomial over
    the bytes (wrapping uint64 arithmetic, one ``np.add.reduceat``) mixed with the length."""
    n = len(starts)
    total = int(lengths.sum())
    with np.errstate(over="ignore"):
        pos = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        longest = int(lengths.max(initial=0))
        steps = np.full(max(longest, 1), _BASE, dtype=np.uint64)
        steps[0] = 1
        powers = np.cumprod(steps)  # BASE**k modulo 2**64 (uint64 products wrap)
        idx = np.repeat(starts, lengths) + pos
        terms = (buf[idx].astype(np.uint64) + np.uint64(1)) * powers[pos]
        out = np.zeros(n, dtype=np.uint64)
        nonempty = lengths > 0
        if total:
            firsts = (np.cumsum(lengths) - lengths)[nonempty]
            out[nonempty] = np.add.reduceat(terms, firsts)
        return _mix(out ^ _mix(lengths.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)))


class NpyWriter:
    """A 1-D ``.npy`` file written by appending blocks whose total is not known in advance: the
    blocks go to ``PATH.raw``; :meth:`close` writes the header, the data behind it, and removes the
    raw file (one sequential copy). Use as a context manager."""

    def __init__(self, path: str | Path, dtype):
        self.path, self.dtype, self.count = Path(path), np.dtype(dtype), 0
        self.raw = self.path.with_name(self.path.name + ".raw")
        self._f = open(self.raw, "wb")

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        self._f.write(block.tobytes())
        self.count += len(block)

    def close(self) -> None:
        self._f.close()
        with open(self.path, "wb") as out, open(self.raw, "rb") as f:
            np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                       "fortran_order": False, "shape": (self.count,)})
            while chunk := f.read(1 << 24):
                out.write(chunk)
        self.raw.unlink()

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self._f.close()
            self.raw.unlink(missing_ok=True)


def _encode(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (UTF-8 bytes with a newline after each, (n,) byte lengths without it)."""
    if not len(strings):
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    buf = np.frombuffer(("\n".join(strings) + "\n").encode("utf-8"), dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(ends) != len(strings):
        raise ValueError("a string holds a newline; a string table stores one string per line")
    lengths = np.diff(np.concatenate([[-1], ends])) - 1
    return buf, lengths.astype(np.int64)


class StringTable:
    """``n`` strings with ids ``0..n-1`` (see the module docstring); ``table[ids]`` -> object array."""

    def __init__(self, buf: np.ndarray, offsets: np.ndarray, hashes: np.ndarray, order: np.ndarray):
        self.buf, self.offsets, self.hashes, self.order = buf, offsets, hashes, order

    # ------------------------------------------------------------------ files
    @classmethod
    def write(cls, folder: str | Path, blocks: Iterable[Sequence[str]]) -> "StringTable":
        """Write the strings of ``blocks`` (in id order) into ``folder`` and open the table."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        offsets, hashes, at = [np.zeros(1, np.int64)], [], 0
        with NpyWriter(folder / "bytes.npy", np.uint8) as out:
            for block in blocks:
                buf, lengths = _encode(list(block))
                starts = np.cumsum(lengths + 1) - (lengths + 1)
                hashes.append(hash_spans(buf, starts, lengths))
                offsets.append(at + np.cumsum(lengths + 1))
                at += len(buf)
                out.append(buf)
        offsets = np.concatenate(offsets)
        hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
        order = np.argsort(hashes, kind="stable").astype(np.int32 if len(hashes) < (1 << 31) - 1 else np.int64)
        np.save(folder / "offsets.npy", offsets)
        np.save(folder / "hashes.npy", hashes[order])
        np.save(folder / "order.npy", order)
        return cls.open(folder)

    @classmethod
    def from_strings(cls, folder: str | Path, strings: Sequence[str], block: int = 1 << 20) -> "StringTable":
        return cls.write(folder, (strings[s:s + block] for s in range(0, len(strings), block)))

    @classmethod
    def open(cls, folder: str | Path, mmap: bool = True) -> "StringTable":
        folder = Path(folder)
        try:
            arrays = [np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None) for name in _FILES]
        except (OSError, ValueError) as e:
            raise ValueError(f"{folder}: not a readable string table ({e})") from None
        t = cls(*arrays)
        if len(t.offsets) != len(t.hashes) + 1 or len(t.order) != len(t.hashes) or int(t.offsets[-1]) != len(t.buf):
            raise ValueError(f"{folder}: string table files of inconsistent sizes")
        return t

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.buf, self.offsets, self.hashes, self.order))

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, ids) -> np.ndarray:
        """``ids`` (any shape) -> object array of strings of the same shape."""
        ids = np.asarray(ids, dtype=np.int64)
        flat = ids.ravel()
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"string ids must be in 0..{len(self) - 1}")
        start, stop = self.offsets[flat], self.offsets[flat + 1]  # each span ends with its newline
        lens = stop - start
        idx = np.repeat(start, lens) + (np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens))
        text = self.buf[idx].tobytes().decode("utf-8")
        out = np.empty(len(flat), dtype=object)
        out[:] = text.split("\n")[:-1] if len(flat) else []
        return out.reshape(ids.shape)

    __getitem__ = get

    def lookup(self, strings) -> np.ndarray:
        """Strings (any shape) -> ids, ``-1`` for strings not in the table (exact match)."""
        arr = np.asarray(strings, dtype=object)
        flat = [str(s) for s in arr.ravel()]
        out = np.full(len(flat), -1, dtype=np.int64)
        if not flat or not len(self):
            return out.reshape(arr.shape)
        if any("\n" in s for s in flat):  # no stored string holds one
            keep = [i for i, s in enumerate(flat) if "\n" not in s]
            out[keep] = self.lookup(np.array([flat[i] for i in keep], dtype=object))
            return out.reshape(arr.shape)
        buf, lengths = _encode(flat)
        h = hash_spans(buf, np.cumsum(lengths + 1) - (lengths + 1), lengths)
        lo = np.searchsorted(self.hashes, h, "left")
        hi = np.searchsorted(self.hashes, h, "right")
        for i in np.flatnonzero(hi > lo):  # a query's candidates: the ids of equal hashes (one, bar collisions)
            cand = np.asarray(self.order[lo[i]:hi[i]], dtype=np.int64)
            hit = cand[self.get(cand) == flat[i]]
            out[i] = int(hit.min()) if len(hit) else -1
        return out.reshape(arr.shape)


__all__ = ["NpyWriter", "StringTable", "hash_spans"]
