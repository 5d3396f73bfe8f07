"""The ``kgc`` command line: a thin layer over :mod:`kgcomplete.runs` and friends."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

import click

METRIC_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


def _metrics_table(metrics: dict, title: str = "") -> str:
    rows = [f"{title:<8}" + "".join(f"{k:>10}" for k in METRIC_KEYS)]
    for label, m in (("both", metrics), ("head", metrics.get("head")), ("tail", metrics.get("tail"))):
        if m:
            rows.append(f"{label:<8}" + "".join(f"{m[k]:>10.4f}" if k != "mr" else f"{m[k]:>10.2f}" for k in METRIC_KEYS))
    return "\n".join(rows)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc).strip("'\""))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kgcomplete")
@click.option("-v", "--verbose", is_flag=True, help="Log every epoch.")
def cli(verbose: bool) -> None:
    """kgcomplete: knowledge graph completion (KGE models, BESS, KGT5)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message="Sparse invariant checks")


@cli.command()
@click.option("--dataset", "-d", default=None, help="Bundled/registered name or folder (default: umls).")
@click.option("--model", "-m", default=None, help="Model name (default: complex). See `kgc models`.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Run folder to create.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None, help="YAML config.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), default=None, help="Continue this run folder.")
@click.option("--dim", type=int, default=None, help="Embedding size.")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adagrad", "rowadagrad", "adam", "sgd", "adamw", "adafactor"]), default=None,
              help="KGE: adagrad|rowadagrad|adam|sgd; KGT5: adamw|adafactor.")
@click.option("--mode", type=click.Choice(["1vsAll", "KvsAll", "negatives"], case_sensitive=False), default=None,
              help="Training mode.")
@click.option("--loss", type=click.Choice(["ce", "bce", "logsigmoid", "margin", "softmax"]), default=None)
@click.option("--num-negatives", type=int, default=None, help="Shared negatives per batch (mode=negatives).")
@click.option("--reciprocal/--no-reciprocal", default=None, help="Learn inverse relations.")
@click.option("--seed", type=int, default=None)
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
@click.option("--hogwild", type=int, default=None, metavar="N",
              help="Train N batches at once in threads sharing the tables without locks (mode negatives, "
                   "optimizer rowadagrad); faster on several cores, not bit-for-bit reproducible.")
@click.option("--workers", type=int, default=None,
              help="BESS: shard entities over N local worker processes (see docs/distributed.md).")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Refuse to start if the memory estimate exceeds SIZE (e.g. 16GiB, 500MB).")
@click.option("--drop-unknown", is_flag=True, help="Drop valid/test triples with entities/relations unseen in train.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key, e.g. training.margin=9.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of a table.")
def train(dataset, model, out, config_file, resume, sets, drop_unknown, no_progress, as_json, **flags) -> None:
    """Train a model and print its filtered test metrics."""
    from ..config import parse_override
    from ..api import train as train_run

    workers = flags.pop("workers", None)
    overrides = {k: v for k, v in flags.items() if v is not None}
    for s in sets:
        k, v = parse_override(s)
        overrides[k] = v
    if workers is not None:
        overrides["distributed.workers"] = workers
    if drop_unknown:
        overrides["data.unknown"] = "drop"
    if no_progress:
        overrides["training.progress"] = False
    try:
        run = train_run(dataset, model=model, out=resume or out, config=config_file, resume=bool(resume), **overrides)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, TypeError) as e:
        _fail(e)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    metrics = json.loads((Path(run.path) / "metrics.json").read_text())
    if as_json:
        click.echo(json.dumps({k: v for k, v in metrics.items()}, indent=2))
        return
    click.echo(f"run folder: {run.path}")
    speed = metrics.get("train_triples_per_s")
    speed = f" ({speed:,.0f} triples/s)" if isinstance(speed, (int, float)) else ""
    click.echo(f"trained {metrics.get('epochs', '?')} epochs in {metrics.get('train_time_s', 0):.1f}s{speed}")
    if "test" in metrics:
        click.echo(_metrics_table(metrics["test"], "test"))


def _open(run_path: str, ensemble: str | None = None):
    from ..api import load_run

    try:
        run = load_run(run_path)
        if ensemble:
            from ..seq2seq.ensemble import EnsembleRun

            run = EnsembleRun(run, load_run(ensemble))
        return run
    except ImportError as e:  # e.g. --ensemble without the KGT5 extra
        raise click.ClickException(f"cannot open {run_path}: {e}")
    except (FileNotFoundError, ValueError, KeyError) as e:
        _fail(e)


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--raw", is_flag=True, help="Raw instead of filtered ranking.")
@click.option("--ensemble", type=click.Path(exists=True, file_okay=False), default=None,
              help="KGE run to ensemble with this KGT5 run.")
@click.option("--per-relation", is_flag=True, help="Also print MRR per relation.")
@click.option("--json", "as_json", is_flag=True)
def evaluate(run, split, raw, ensemble, per_relation, as_json) -> None:
    """Evaluate a trained run on a split (filtered MRR, MR, Hits@k)."""
    r = _open(run, ensemble)
    if split not in r.dataset.splits:
        _fail(ValueError(f"no split {split!r}; available: {', '.join(r.dataset.splits)}"))
    m = r.evaluate(split, filtered=not raw, progress=not as_json)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    click.echo(_metrics_table(m, split))
    if per_relation and "per_relation" in m:
        for name, pm in sorted(m["per_relation"].items(), key=lambda x: -x[1]["mrr"]):
            click.echo(f"  {name:<40} mrr={pm['mrr']:.4f} count={pm['count']}")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--head", default=None, help="Head entity (label or name): predict tails.")
@click.option("--relation", required=True)
@click.option("--tail", default=None, help="Tail entity: predict heads.")
@click.option("--k", type=int, default=10, show_default=True)
@click.option("--exclude-known", is_flag=True, help="Leave out answers already in the KG.")
@click.option("--ensemble", type=click.Path(exists=True, file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
def predict(run, head, relation, tail, k, exclude_known, ensemble, as_json) -> None:
    """Top-k tails for (--head, --relation) or heads for (--relation, --tail)."""
    if (head is None) == (tail is None):
        _fail(ValueError("give exactly one of --head or --tail"))
    if k < 1:
        _fail(ValueError("--k must be at least 1"))
    r = _open(run, ensemble)
    try:
        rows = r.predict(head=head, relation=relation, tail=tail, k=k, exclude_known=exclude_known)
    except (KeyError, ValueError) as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'rank':>4}  {'score':>10}  {'known':<6} entity")
    for row in rows:
        name = row["entity"] if row["name"] == row["entity"] else f"{row['entity']} ({row['name']})"
        click.echo(f"{row['rank']:>4}  {row['score']:>10.4f}  {row['known'] or '-':<6} {name}")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder (default RUN/export).")
def export(run, out) -> None:
    """Export embeddings (.npy) and vocabularies (TSV with names)."""
    r = _open(run)
    for kind, path in r.export(out).items():
        click.echo(f"{kind}: {path}")


@cli.command()
def models() -> None:
    """List the available models."""
    from ..models import ALIASES, MODELS, model_names

    for name in model_names():
        cls = MODELS.get(name)
        import inspect

        doc = (inspect.getdoc(cls) or "").splitlines()[0] if cls else f"alias of {ALIASES[name][0]} {ALIASES[name][1]}"
        click.echo(f"{name:<12} {doc}")


def _add_plugins() -> None:
    """Sub-commands that live with their feature (datasets, kgt5/qa, serving); each optional."""
    import importlib

    for module, attr in (("datasets", "datasets"), ("kgt5", "qa"), ("serve", "serve"), ("serve", "report")):
        try:
            mod = importlib.import_module(f"{__package__}.{module}")
        except ImportError as e:  # feature not present, or its optional extra not installed
            if e.name and (e.name.startswith(f"{__package__}.{module}") or not e.name.startswith("kgcomplete")):
                continue
            raise
        cmd = getattr(mod, attr, None)
        if cmd is not None:
            cli.add_command(cmd)


_add_plugins()


def main() -> None:  # console-script entry point
    cli(prog_name="kgc")


if __name__ == "__main__":
    sys.exit(main())
