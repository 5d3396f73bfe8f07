"""``kgc serve``: HTTP API + web explorer over a run.

The optional dependencies (``pip install kgcomplete[serve]``: fastapi, uvicorn) are imported inside
the command, so it always shows up in ``kgc --help`` and explains what to install when something is
missing.
"""

from __future__ import annotations

import click

from .common import device_option, ensemble_options, need, open_run


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it).")
@click.option("--port", type=int, default=8000, show_default=True)
@ensemble_options
@click.option("--max-k", type=int, default=1000, show_default=True, help="Largest k a request may ask for.")
@click.option("--max-batch", type=int, default=256, show_default=True, help="Most queries/triples per POST.")
@click.option("--batch-wait-ms", type=float, default=3.0, show_default=True,
              help="Micro-batching window: queries arriving within it share one model call.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@device_option("Where the model scores: auto (a GPU when there is one) | cpu | cuda | cuda:N.")
def serve(run, host, port, ensemble, ensemble_rule, max_k, max_batch, batch_wait_ms, log_level, device) -> None:
    """Serve a trained RUN: JSON API (/api/...) and web explorer (/) on HOST:PORT."""
    for mod in ("fastapi", "uvicorn"):
        need(mod)
    import uvicorn

    from ..serving.app import create_app
    from ..serving.engine import Limits

    if max_k < 1 or max_batch < 1:
        raise click.ClickException("--max-k and --max-batch must be at least 1")
    r = open_run(run, ensemble, device, ensemble_rule)
    app = create_app(r, Limits(max_k=max_k, max_batch=max_batch, max_wait_ms=batch_wait_ms))
    click.echo(f"serving {run} ({type(r).__name__}, on {r.device}) on http://{host}:{port}/  (API docs: /docs)",
               err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


__all__ = ["serve"]
