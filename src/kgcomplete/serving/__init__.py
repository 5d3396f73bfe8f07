"""Predictions for people: HTTP API + web explorer (``kgc serve``), run reports (``kgc report``),
embedding export and 2-D projections.

Optional dependencies (``pip install kgcomplete[serve]``) are imported only where used:
fastapi/uvicorn by :mod:`.app`, matplotlib by :mod:`.report` / :mod:`.projection`'s plot,
pyarrow by Parquet export.
"""

from __future__ import annotations

__all__ = ["create_app", "serve", "build_report", "export_embeddings", "project_embeddings", "QueryEngine"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from . import app

        return getattr(app, name)
    if name == "build_report":
        from .report import build_report

        return build_report
    if name in ("export_embeddings", "project_embeddings"):
        from . import projection

        return getattr(projection, name)
    if name == "QueryEngine":
        from .engine import QueryEngine

        return QueryEngine
    raise AttributeError(name)
