"""``kgc serve`` (HTTP API + web explorer) and ``kgc report`` (HTML report with plots).

The optional dependencies (``pip install kgcomplete[serve]``: fastapi, uvicorn, matplotlib;
pyarrow for Parquet) are imported inside the commands, so both commands always show up in
``kgc --help`` and explain what to install when something is missing.
"""

from __future__ import annotations

import click

_EXTRA_HINT = "install the serving extra: pip install 'kgcomplete[serve]'"


def _need(module: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        raise click.ClickException(f"`{module}` is not installed ({e}); {_EXTRA_HINT}") from None


def _load(run_path: str, ensemble: str | None = None):
    from .main import _open  # inside the function: main imports this module to register its commands

    return _open(run_path, ensemble)


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--ensemble", type=click.Path(exists=True, file_okay=False), default=None,
              help="KGE run to ensemble with this KGT5 run.")
@click.option("--max-k", type=int, default=1000, show_default=True, help="Largest k a request may ask for.")
@click.option("--max-batch", type=int, default=256, show_default=True, help="Most queries/triples per POST.")
@click.option("--batch-wait-ms", type=float, default=3.0, show_default=True,
              help="Micro-batching window: queries arriving within it share one model call.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
def serve(run, host, port, ensemble, max_k, max_batch, batch_wait_ms, log_level) -> None:
    """Serve a trained RUN: JSON API (/api/...) and web explorer (/) on HOST:PORT."""
    for mod in ("fastapi", "uvicorn"):
        _need(mod)
    import uvicorn

    from ..serving.app import create_app
    from ..serving.engine import Limits

    if max_k < 1 or max_batch < 1:
        raise click.ClickException("--max-k and --max-batch must be at least 1")
    r = _load(run, ensemble)
    app = create_app(r, Limits(max_k=max_k, max_batch=max_batch, max_wait_ms=batch_wait_ms))
    click.echo(f"serving {run} ({type(r).__name__}) on http://{host}:{port}/  (API docs: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder (default RUN/report).")
@click.option("--split", default="test", show_default=True, help="Split for the rank histogram / per-relation MRR.")
@click.option("--embeddings", "emb_format", type=click.Choice(["none", "npy", "parquet", "tsv"]), default="none",
              show_default=True, help="Also export entity/relation embeddings in this format.")
@click.option("--no-projection", is_flag=True, help="Skip the 2-D embedding projection plot.")
def report(run, out, split, emb_format, no_projection) -> None:
    """Write a self-contained HTML report of RUN with plots (also saved as PNGs)."""
    _need("matplotlib")
    from ..serving.report import build_report

    r = _load(run)
    try:
        res = build_report(r, out, split=split, projection=not no_projection)
    except (ValueError, KeyError) as e:
        raise click.ClickException(str(e))
    click.echo(f"report: {res['html']}")
    for name, path in res["images"].items():
        click.echo(f"  {name}: {path}")
    if emb_format != "none":
        from ..serving.projection import export_embeddings

        if emb_format == "parquet":
            _need("pyarrow")
        for kind, path in export_embeddings(r, res["out"] / "embeddings", emb_format).items():
            click.echo(f"  {kind}: {path}")
