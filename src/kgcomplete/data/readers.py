"""Readers for tab-separated triple and ``id<TAB>text`` files, with errors that name file and line."""

from __future__ import annotations

import csv
import re
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


def read_tsv_columns(path: str | Path, columns: int, what: str = "fields") -> pd.DataFrame:
    """Read a headerless TSV with exactly ``columns`` non-empty string fields per line.

    CRLF line endings are tolerated. Returns a DataFrame with integer column names 0..columns-1,
    one row per line (row i is line i+1). Raises :class:`DataFormatError` naming file and line
    for a wrong number of fields or an empty field.
    """
    path = Path(path)
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            header=None,
            names=list(range(columns)),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,
            engine="c",
            encoding="utf-8",
        )
    except FileNotFoundError:
        raise
    except pd.errors.EmptyDataError:
        return pd.DataFrame({i: pd.Series([], dtype=object) for i in range(columns)})
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+), saw (\d+)", str(e))
        if m:
            line = int(m.group(1))
            raise DataFormatError(
                path, line, f"expected {columns} tab-separated {what}, found {m.group(2)}: {_line_text(path, line)!r}"
            ) from None
        raise DataFormatError(path, None, str(e)) from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, None, f"not valid UTF-8 ({e})") from None
    if len(df) == 0:
        return df
    # CRLF: the C parser keeps a trailing '\r' on the last field when it sees lone '\n' after it.
    last = df[columns - 1]
    if last.str.endswith("\r").any():
        df[columns - 1] = last.str.rstrip("\r")
    # A final line with only '\r' (or a trailing blank line) becomes an all-empty row: drop trailing ones.
    empty = (df == "").to_numpy()
    all_empty = empty.all(axis=1)
    n = len(df)
    while n and all_empty[n - 1]:
        n -= 1
    df, empty = df.iloc[:n], empty[:n]
    bad = np.flatnonzero(empty.any(axis=1))
    if len(bad):
        line = int(bad[0]) + 1
        text = _line_text(path, line)
        found = len(text.split("\t")) if text.strip("\r") else 0
        if found != columns:
            msg = f"expected {columns} tab-separated {what}, found {found}: {text!r}"
        else:
            col = int(np.flatnonzero(empty[bad[0]])[0]) + 1
            msg = f"empty field {col} of {columns}: {text!r}"
        more = f" ({len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        raise DataFormatError(path, line, msg + more)
    return df


def read_triples(path: str | Path) -> np.ndarray:
    """``head<TAB>relation<TAB>tail`` lines -> (n, 3) object array of labels."""
    return read_tsv_columns(path, 3, "fields (head, relation, tail)").to_numpy(dtype=object)


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
