"""Readers for tab-separated triple and ``id<TAB>text`` files, with errors that name file and line."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Iterator, Optional
from pathlib import Path

import numpy as np
import pandas as pd


class DataFormatError(ValueError):
    """Bad input file; the message names the file and the 1-based line."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


def _line_text(path: Path, line_no: int) -> str:
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            if i == line_no:
                return raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return ""


def read_tsv_columns(path: str | Path, columns: int) -> pd.DataFrame:
    """Read a headerless TSV with exactly ``columns`` non-empty string fields per line.

    CRLF line endings are tolerated. Returns a DataFrame with integer column names 0..columns-1,
    one row per line (row i is line i+1). Raises :class:`DataFormatError` naming file and line
    for a wrong number of fields or an empty field (checks of :func:`iter_tsv_chunks`).
    """
    try:
        parts = [df for _, df in iter_tsv_chunks(path, columns)]
    except pd.errors.EmptyDataError:
        parts = []
    if not parts:
        return pd.DataFrame({i: pd.Series([], dtype=object) for i in range(columns)})
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


DEFAULT_CHUNK_LINES = 2_000_000


def iter_tsv_chunks(path: str | Path, columns: int = 3, chunk_lines: int = DEFAULT_CHUNK_LINES,
                    required: Optional[tuple[int, ...]] = None) -> Iterator[tuple[int, pd.DataFrame]]:
    """Yield ``(first_line_index, frame)`` chunks of a headerless TSV (any compression pandas infers).

    Checks field count, empty fields, CRLF and trailing blank lines, raising :class:`DataFormatError` with the file and the global line number.
    ``required``: the columns that must be non-empty (default: all).
    """
    req = list(range(columns)) if required is None else list(required)
    path = Path(path)
    reader = pd.read_csv(
        path, sep="\t", header=None, names=list(range(columns)), dtype=str, keep_default_na=False,
        na_filter=False, quoting=csv.QUOTE_NONE, skip_blank_lines=False, engine="c", encoding="utf-8",
        chunksize=chunk_lines, compression="infer",
    )
    start = 0
    blank_from: Optional[int] = None  # first line of a run of blank lines at the end of the previous chunk
    try:
        for df in reader:
            if len(df) == 0:
                continue
            if not isinstance(df.index, pd.RangeIndex):  # every line has more fields: pandas made one the index
                line = start + 1
                found = len(_line_text(path, line).split("\t"))
                raise DataFormatError(path, line, f"expected {columns} tab-separated fields, found {found}: "
                                      f"{_line_text(path, line)!r}" + _COLUMNS_HINT)
            if blank_from is not None:
                raise DataFormatError(path, blank_from + 1, f"expected {columns} tab-separated fields, found 0: ''")
            last = df[columns - 1]
            if last.str.endswith("\r").any():
                df[columns - 1] = last.str.rstrip("\r")
            empty = (df == "").to_numpy()
            all_empty = empty.all(axis=1)
            n = len(df)
            while n and all_empty[n - 1]:
                n -= 1
            if n < len(df):
                blank_from = start + n
            bad = np.flatnonzero(empty[:n][:, req].any(axis=1))
            if len(bad):
                line = start + int(bad[0]) + 1
                plain = path.suffix not in (".gz", ".bz2", ".xz", ".zip")  # line text only from plain files
                text = _line_text(path, line) if plain else ""
                found = len(text.split("\t")) if text.strip("\r") else 0
                if plain and found != columns:
                    msg = f"expected {columns} tab-separated fields, found {found}: {text!r}"
                else:
                    col = int(np.flatnonzero(empty[bad[0]][req])[0])
                    msg = f"empty field {req[col] + 1} of {columns}: {text!r}"
                raise DataFormatError(path, line, msg)
            yield start, df.iloc[:n]
            start += len(df)
    except pd.errors.ParserError as e:
        import re

        m = re.search(r"line (\d+), saw (\d+)", str(e))
        if m:
            line = int(m.group(1))
            raise DataFormatError(path, line, f"expected {columns} tab-separated fields, found {m.group(2)}: "
                                  f"{_line_text(path, line)!r}" + _COLUMNS_HINT) from None
        raise DataFormatError(path, None, str(e)) from None
    except UnicodeDecodeError as e:
        line = _first_non_utf8_line(path)
        raise DataFormatError(path, line, f"not valid UTF-8 ({e.reason} at byte {e.start} of a block); "
                              f"convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _first_non_utf8_line(path: Path) -> Optional[int]:
    if path.suffix in (".gz", ".bz2", ".xz", ".zip"):
        return None
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return i
    return None


_COLUMNS_HINT = " (a file with more columns: name them, e.g. --columns head,relation,tail,weight)"
TRIPLE_ROLES = ("head", "relation", "tail")


@dataclass(frozen=True)
class ReadOptions:
    """How triple files are read (config ``data.columns`` / ``duplicates`` / ``whitespace``).

    * ``columns``: the names of the file's columns in order, of which ``head``, ``relation`` and
      ``tail`` are used and the others ignored (e.g. ``("head", "relation", "tail", "weight")``);
      None: exactly three columns, head relation tail.
    * ``duplicates``: ``drop`` (default; counted and reported) or ``keep`` repeated triples.
    * ``whitespace``: a label with leading/trailing whitespace is an ``error`` naming the line
      (default) or is ``strip``-ped (counted and reported).
    """

    columns: Optional[tuple[str, ...]] = None
    duplicates: str = "drop"
    whitespace: str = "error"

    @classmethod
    def parse(cls, columns: Optional[str] = None, duplicates: str = "drop", whitespace: str = "error") -> "ReadOptions":
        cols = None
        if columns:
            cols = tuple(c.strip() for c in str(columns).split(","))
            missing = [r for r in TRIPLE_ROLES if cols.count(r) != 1]
            if missing:
                raise ValueError(f"data.columns={columns!r}: name each of head, relation, tail exactly once "
                                 f"(e.g. head,relation,tail,weight); {', '.join(missing)} missing or repeated")
        if duplicates not in ("drop", "keep"):
            raise ValueError(f"data.duplicates={duplicates!r}: expected drop | keep")
        if whitespace not in ("error", "strip"):
            raise ValueError(f"data.whitespace={whitespace!r}: expected error | strip")
        return cls(cols, duplicates, whitespace)


def read_triples(path: str | Path, options: Optional[ReadOptions] = None) -> np.ndarray:
    """``head<TAB>relation<TAB>tail`` lines -> (n, 3) object array of labels (see :func:`read_triple_file`)."""
    return read_triple_file(path, options)[0]


def read_triple_file(path: str | Path, options: Optional[ReadOptions] = None) -> tuple[np.ndarray, int]:
    """``head<TAB>relation<TAB>tail`` lines (or the columns ``options.columns`` names) -> ``(n, 3)``
    object array of labels and the number of lines whose labels were stripped. A label with
    leading/trailing whitespace is an error naming its line unless ``options.whitespace == "strip"``."""
    options = options or ReadOptions()
    if options.columns is None:
        frame = read_tsv_columns(path, 3)
    else:
        frame = read_tsv_columns(path, len(options.columns))[[options.columns.index(r) for r in TRIPLE_ROLES]]
    arr = frame.to_numpy(dtype=object)
    if not len(arr):
        return arr.reshape(0, 3), 0
    # strip each distinct label once (far fewer than the triples' fields), then map back
    codes, uniq = pd.factorize(arr.reshape(-1))
    uniq = pd.Series(uniq, dtype=object)
    stripped_uniq = uniq.str.strip()
    padded = (stripped_uniq != uniq).to_numpy()[codes].reshape(-1, 3)
    if padded.any():
        if options.whitespace != "strip":
            i, j = np.argwhere(padded)[0]
            raise DataFormatError(path, int(i) + 1, f"{TRIPLE_ROLES[j]} label {arr[i, j]!r} has leading or trailing "
                                  f"whitespace ({int(padded.any(axis=1).sum())} lines); fix the file or strip them "
                                  f"(--strip-whitespace, data.whitespace=strip)")
        arr = stripped_uniq.to_numpy(dtype=object)[codes].reshape(-1, 3)
        if (arr == "").any():
            i, j = np.argwhere(arr == "")[0]
            raise DataFormatError(path, int(i) + 1, f"{TRIPLE_ROLES[j]} label is only whitespace")
    return arr, int(padded.any(axis=1).sum())


def read_id_text(path: str | Path) -> pd.Series:
    """``id<TAB>text`` lines -> Series text indexed by id (first occurrence of an id wins).

    Text may itself contain tabs: everything after the first tab is the text.
    """
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        lines = pd.Series(f.read().splitlines(), dtype=object)
    if lines.empty:
        return pd.Series([], dtype=object)
    parts = lines.str.partition("\t")
    keep = lines != ""
    bad = np.flatnonzero(keep & ((parts[1] == "") | (parts[0] == "")))
    if len(bad):
        raise DataFormatError(path, int(bad[0]) + 1, f"expected 'id<TAB>text', found {lines.iloc[bad[0]]!r}")
    s = pd.Series(parts[2][keep].to_numpy(), index=parts[0][keep].to_numpy(), dtype=object)
    return s[~s.index.duplicated()]
