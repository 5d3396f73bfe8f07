"""``kgc report``: a self-contained HTML report of a run, with plots.

The optional dependencies (``pip install kgcomplete[serve]``: matplotlib; pyarrow for Parquet) are
imported inside the command, so it always shows up in ``kgc --help`` and explains what to install
when something is missing.
"""

from __future__ import annotations

import click

from .common import fail, need, open_run


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder (default RUN/report).")
@click.option("--split", default="test", show_default=True, help="Split for the rank histogram / per-relation MRR.")
@click.option("--embeddings", "emb_format", type=click.Choice(["none", "npy", "parquet", "tsv"]), default="none",
              show_default=True, help="Also export entity/relation embeddings in this format.")
@click.option("--no-projection", is_flag=True, help="Skip the 2-D embedding projection plot.")
def report(run, out, split, emb_format, no_projection) -> None:
    """Write a self-contained HTML report of RUN with plots (also saved as PNGs)."""
    need("matplotlib")
    from ..serving.report import build_report

    r = open_run(run)
    try:
        res = build_report(r, out, split=split, projection=not no_projection)
    except (ValueError, KeyError) as e:
        fail(e)
    click.echo(f"report: {res['html']}")
    for name, path in res["images"].items():
        click.echo(f"  {name}: {path}")
    if emb_format != "none":
        from ..serving.projection import export_embeddings

        if emb_format == "parquet":
            need("pyarrow")
        for kind, path in export_embeddings(r, res["out"] / "embeddings", emb_format).items():
            click.echo(f"  {kind}: {path}")


__all__ = ["report"]
