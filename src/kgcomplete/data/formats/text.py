"""The ConvE / LibKGE text layout: ``train.txt``, ``valid.txt``, ``test.txt`` with
``head<TAB>relation<TAB>tail`` lines (CRLF tolerated, as in FB15k-237's official ``Release/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..compact import ingest_triples

SPLIT_NAMES = {"train": ("train.txt",), "valid": ("valid.txt",), "test": ("test.txt",)}


def find_split_folder(root: str | Path, names: Optional[dict[str, Sequence[str]]] = None) -> dict[str, Path]:
    """Locate the split files under ``root`` (the shallowest folder that has a train file).

    ``names``: accepted file names per split (default ``train.txt`` etc.). Returns ``{split: path}``;
    raises :class:`FileNotFoundError` listing what was looked for.
    """
    root = Path(root)
    names = names or SPLIT_NAMES
    candidates = []
    for fname in names["train"]:
        candidates += list(root.rglob(fname))
    candidates.sort(key=lambda p: (len(p.relative_to(root).parts), str(p)))
    for train in candidates:
        folder = train.parent
        out = {"train": train}
        for split in ("valid", "test"):
            for fname in names.get(split, ()):
                if (folder / fname).exists():
                    out[split] = folder / fname
                    break
        return out
    wanted = ", ".join(f for v in names.values() for f in v)
    raise FileNotFoundError(f"{root}: no split files found (looked for {wanted} in every sub-folder)")


def build_text_layout(raw: str | Path, out: str | Path, name: str, unknown: str = "error",
                      names: Optional[dict[str, Sequence[str]]] = None, progress: bool = False) -> Path:
    """Stream the split files found under ``raw`` into the compact folder ``out``."""
    files = find_split_folder(raw, names)
    return ingest_triples(files, out, name=name, unknown=unknown, progress=progress)
