"""Embedding export for other tools (``.npy``, Parquet, TSV with names) and a 2-D PCA projection.

``export_embeddings(run, out, fmt)`` is what ``kgc export --format`` / ``kgc report --embeddings``
call. Formats:

* ``npy``: ``entity_embeddings.npy`` / ``relation_embeddings.npy`` (float32, row ``i`` = id ``i``)
  plus ``entities.tsv`` / ``relations.tsv`` (``id label name`` with a header).
* ``parquet``: ``entity_embeddings.parquet`` / ``relation_embeddings.parquet`` with columns
  ``id, label, name, embedding`` (``embedding``: fixed-size list of float32; needs pyarrow).
* ``tsv``: ``entity_embeddings.tsv`` / ``relation_embeddings.tsv`` with header
  ``id label name e0 e1 ...`` (one row per entity/relation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from ..runs.protocol import Run, as_run, embedding_matrix

FORMATS = ("npy", "parquet", "tsv")


def entity_embeddings(run: Run) -> np.ndarray:
    """``(E, d)`` float32 entity embeddings; ValueError for runs without them (e.g. KGT5)."""
    w = as_run(run).entity_embeddings()
    if w is None:
        raise ValueError(f"{type(run).__name__} has no entity embedding table to export or project")
    return embedding_matrix(w)


def relation_embeddings(run: Run) -> Optional[np.ndarray]:
    w = as_run(run).relation_embeddings()
    return None if w is None else embedding_matrix(w)


def _relation_table(run: Any, n: int) -> pd.DataFrame:
    ds = run.dataset
    labels = ds.relations.labels.astype(str)
    names = ds.relation_text(np.arange(ds.num_relations)).astype(str)
    if n > len(labels):  # reciprocal relations learned as extra rows
        labels = np.concatenate([labels, np.char.add(labels, "^-1")])
        names = np.concatenate([names, np.char.add(names, " (inverse)")])
    return pd.DataFrame({"id": np.arange(n), "label": labels[:n], "name": names[:n]})


def _entity_table(run: Any) -> pd.DataFrame:
    ds = run.dataset
    ids = np.arange(ds.num_entities)
    return pd.DataFrame({"id": ids, "label": ds.entities.labels.astype(str), "name": ds.entity_text(ids).astype(str)})


def export_embeddings(run: Any, out: str | Path, fmt: str = "npy") -> dict[str, Path]:
    """Write the run's entity (and relation) embeddings to ``out`` in ``fmt``; returns the paths."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown embedding format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = [("entity", entity_embeddings(run), _entity_table(run))]
    rel = relation_embeddings(run)
    if rel is not None:
        tables.append(("relation", rel, _relation_table(run, len(rel))))
    files: dict[str, Path] = {}
    for kind, w, meta in tables:
        if fmt == "npy":
            files[f"{kind}_embeddings"] = p = out / f"{kind}_embeddings.npy"
            np.save(p, w)
            files[f"{kind}_names"] = p = out / ("entities.tsv" if kind == "entity" else "relations.tsv")
            meta.to_csv(p, sep="\t", index=False)
        elif fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise ImportError("Parquet export needs pyarrow: pip install pyarrow") from None
            flat = pa.array(w.ravel(), type=pa.float32())
            table = pa.table({
                "id": pa.array(meta["id"].to_numpy(np.int64)),
                "label": pa.array(meta["label"].tolist(), type=pa.string()),
                "name": pa.array(meta["name"].tolist(), type=pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, w.shape[1]),
            })
            files[f"{kind}_embeddings"] = p = out / f"{kind}_embeddings.parquet"
            pq.write_table(table, p)
        else:
            frame = pd.concat([meta, pd.DataFrame(w, columns=[f"e{i}" for i in range(w.shape[1])])], axis=1)
            files[f"{kind}_embeddings"] = p = out / f"{kind}_embeddings.tsv"
            frame.to_csv(p, sep="\t", index=False, float_format="%.7g")
    return files


# ------------------------------------------------------------------ projection
def pca(x: np.ndarray, dim: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of ``x (n, d)`` onto their top ``dim`` principal components.

    Eigen-decomposition of the ``d x d`` covariance (memory ``O(d^2)`` beyond ``x``; fine for
    millions of rows). Returns ``(coords (n, dim), explained variance ratio (dim,))``; component
    signs are fixed so that each component's largest-magnitude loading is positive.
    """
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0, keepdims=True)
    cov = xc.T @ xc / max(1, len(x) - 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:dim]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    signs = np.sign(vecs[np.abs(vecs).argmax(0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(signs == 0, 1, signs)
    total = float(np.clip(np.linalg.eigvalsh(cov), 0, None).sum()) or 1.0
    return xc @ vecs, vals / total


def project_embeddings(run: Any, dim: int = 2) -> dict:
    """2-D (``dim``) PCA of the entity embeddings: ``{"coords", "explained", "labels", "names"}``."""
    w = entity_embeddings(run)
    coords, explained = pca(w, dim)
    ds = run.dataset
    return {"coords": coords, "explained": explained, "labels": ds.entities.labels.astype(str),
            "names": ds.entity_text(np.arange(ds.num_entities)).astype(str)}


def plot_projection(run: Any, path: Optional[str | Path] = None, max_labels: int = 20, max_points: int = 50_000):
    """Scatter of the 2-D projection, coloured by train degree; the best-connected entities are named.

    Returns the matplotlib Figure (also saved as PNG when ``path`` is given).
    """
    from matplotlib.figure import Figure

    proj = project_embeddings(run, 2)
    xy = proj["coords"]
    ds = run.dataset
    train = ds.splits.get("train", np.zeros((0, 3), np.int64))
    degree = np.bincount(np.concatenate([train[:, 0], train[:, 2]]), minlength=ds.num_entities)
    idx = np.arange(len(xy))
    if len(idx) > max_points:  # keep the plot readable and the PNG small
        idx = np.sort(np.random.default_rng(0).choice(idx, max_points, replace=False))
    fig = Figure(figsize=(7.5, 6.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    sc = ax.scatter(xy[idx, 0], xy[idx, 1], c=np.log1p(degree[idx]), cmap="viridis", s=18 if len(idx) < 2000 else 4,
                    alpha=0.85, linewidths=0)
    fig.colorbar(sc, ax=ax, label="log(1 + train degree)")
    # name the best-connected entities, skipping ones too close to an already named point
    span = np.ptp(xy[idx], axis=0) + 1e-12
    named: list[np.ndarray] = []
    for i in idx[np.argsort(-degree[idx], kind="stable")[: max_labels * 10]]:
        p = xy[i] / span
        if any(abs(p[0] - q[0]) < 0.12 and abs(p[1] - q[1]) < 0.035 for q in named):
            continue
        named.append(p)
        ax.annotate(proj["names"][i], xy[i], fontsize=7, alpha=0.9, xytext=(4, 3), textcoords="offset points")
        if len(named) >= max_labels:
            break
    ev = proj["explained"]
    ax.set_xlabel(f"PC1 ({ev[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({ev[1]:.0%} of variance)" if len(ev) > 1 else "PC2")
    ax.set_title(f"Entity embeddings, 2-D PCA ({len(xy):,} entities)")
    ax.grid(alpha=0.25)
    if path is not None:
        fig.savefig(path)
    return fig
