"""``kgc datasets``: list, download, inspect and synthesise knowledge graphs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click


def _human(n: Optional[int]) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def _entry(name: str):
    from kgcomplete.data.registry import _REGISTRY, registered_datasets

    e = _REGISTRY.get(name.lower())
    if e is None:
        known = ", ".join(x.name for x in registered_datasets())
        raise click.UsageError(f"no dataset named {name!r}; known: {known}")
    return e


def _cache_status(e) -> str:
    """'bundled', 'ready' (compact copy), 'downloaded', 'partial' or '-'."""
    from kgcomplete.data.compact import is_compact
    from kgcomplete.data.download import cached_files, compact_dir, downloads_dir

    if e.source == "bundled":
        return "bundled"
    root = compact_dir(e.name)
    if root.exists() and any(is_compact(p) for p in root.iterdir()):
        return "ready"
    have = cached_files(e.name, e.files)
    if have and len(have) == len(e.files):
        return "downloaded"
    if have or any((downloads_dir(e.name) / (f.name + ".part")).exists() for f in e.files):
        return "partial"
    return "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _list() -> None:
    from kgcomplete.data.catalog import download_size
    from kgcomplete.data.download import kgc_home
    from kgcomplete.data.registry import registered_datasets

    rows = []
    for e in registered_datasets():
        size = "-" if e.source == "bundled" else _human(download_size(e.files))
        if " entities" in e.stats:
            ents = e.stats.split(" entities")[0]
        elif e.source == "bundled":  # small files in the package: count them
            ents = f"{e.loader().num_entities:,}"
        else:
            ents = "?"
        rows.append([e.name, e.source, size, ents, _cache_status(e), e.licence])  # the licence last, whole
    click.echo(_table(rows, ["NAME", "SOURCE", "DOWNLOAD", "ENTITIES", "CACHED", "LICENCE"]))
    click.echo(f"\ncache: {kgc_home()}  (set KGC_HOME to move it; KGC_OFFLINE=1 forbids downloads)")


@click.group(name="datasets", invoke_without_command=True)
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List the registered datasets (no subcommand), or download / inspect / synthesise one."""
    if ctx.invoked_subcommand is None:
        _list()


@datasets.command("list")
def list_cmd() -> None:
    """List the registered datasets with source, download size, licence and cache state."""
    _list()


@datasets.command("download")
@click.argument("name")
@click.option("--unknown", type=click.Choice(["error", "drop", "keep"]), default="error", show_default=True,
              help="How the compact copy treats valid/test triples with entities unseen in train.")
@click.option("--no-verify", is_flag=True, help="Skip checksum verification.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def download_cmd(name: str, unknown: str, no_verify: bool, quiet: bool) -> None:
    """Download NAME into the cache and build its compact copy."""
    from kgcomplete.data.catalog import materialize
    from kgcomplete.data.dataset import UnknownLabelError
    from kgcomplete.data.download import DownloadError, prepare

    e = _entry(name)
    if e.source == "bundled":
        click.echo(f"{e.name} is bundled with kgcomplete; nothing to download.")
        return
    try:
        raw = prepare(e.name, e.files, progress=not quiet, verify_checksum=not no_verify)
        click.echo(f"files: {raw}")
        out = materialize(e.name, unknown=unknown, progress=not quiet, verify_checksum=not no_verify)
    except DownloadError as err:
        raise click.ClickException(str(err)) from None
    except UnknownLabelError as err:
        click.echo(f"downloaded, but the compact copy needs --unknown drop or keep: {err}", err=True)
        return
    meta = json.loads((Path(out) / "meta.json").read_text())  # counts without loading the vocabularies
    splits = ", ".join(f"{k}={v:,}" for k, v in meta["splits"].items())
    click.echo(f"compact copy: {out}")
    click.echo(f"{meta['name']}: {meta['num_entities']:,} entities, {meta['num_relations']:,} relations, {splits}")


@datasets.command("info")
@click.argument("name")
def info_cmd(name: str) -> None:
    """Show NAME's description, files (URLs, sizes, checksums), licence, citation and cache."""
    from kgcomplete.data.compact import is_compact
    from kgcomplete.data.download import compact_dir, downloads_dir

    e = _entry(name)
    click.echo(f"{e.name}: {e.description}")
    for label, value in (("source", e.source), ("statistics", e.stats), ("licence", e.licence),
                         ("homepage", e.homepage), ("citation", e.citation)):
        if value:
            click.echo(f"  {label:<11}{value}")
    for f in e.files:
        click.echo(f"  file       {f.name}  ({_human(f.size)})")
        for u in f.urls:
            click.echo(f"               {u}")
        if f.checksum:
            click.echo(f"               {f.checksum[0]} {f.checksum[1]}")
        if f.note:
            click.echo(f"               note: {f.note}")
    if e.source != "bundled":
        click.echo(f"  downloads  {downloads_dir(e.name)}")
        click.echo(f"  cached     {_cache_status(e)}")
        root = compact_dir(e.name)
        for p in sorted(root.iterdir()) if root.exists() else []:
            if is_compact(p):
                meta = json.loads((p / "meta.json").read_text())
                sizes = ", ".join(f"{k}={v:,}" for k, v in meta["splits"].items())
                click.echo(f"  compact    {p}: {meta['num_entities']:,} entities, "
                           f"{meta['num_relations']:,} relations, {sizes}")


@datasets.command("synth")
@click.option("--entities", "num_entities", type=int, required=True, help="Number of entities N.")
@click.option("--relations", "num_relations", type=int, required=True, help="Number of relations R.")
@click.option("--triples", "num_triples", type=int, required=True, help="Number of distinct triples T (about).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--valid-fraction", type=float, default=0.01, show_default=True)
@click.option("--test-fraction", type=float, default=0.01, show_default=True)
@click.option("--alpha", type=float, default=1.0, show_default=True, help="Power-law exponent of entity popularity.")
@click.option("--quiet", is_flag=True)
def synth_cmd(num_entities: int, num_relations: int, num_triples: int, seed: int, out: Path,
              valid_fraction: float, test_fraction: float, alpha: float, quiet: bool) -> None:
    """Write a synthetic KG (power-law degrees; symmetric/inverse/composition/1-to-N relations)
    as train.txt/valid.txt/test.txt plus synth.json into OUT."""
    from kgcomplete.data.synth import generate

    try:
        r = generate(out, num_entities, num_relations, num_triples, seed=seed, valid_fraction=valid_fraction,
                     test_fraction=test_fraction, alpha=alpha, progress=not quiet and sys.stderr.isatty())
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    sizes = ", ".join(f"{k}={v:,}" for k, v in r.counts.items())
    click.echo(f"wrote {out}: {r.num_entities_used:,} entities used, {num_relations} relations, {sizes} "
               f"in {r.seconds:.1f} s")


__all__ = ["datasets"]
