"""``kgc evaluate``, ``kgc predict`` and ``kgc export``: looking into a trained run of any kind.

(Not named ``inspect.py``: that would shadow the standard library's module whenever this folder is
on ``sys.path``.)
"""

from __future__ import annotations

import json

import click

from .common import device_option, ensemble_options, fail, metrics_table, open_run


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--raw", is_flag=True, help="Raw instead of filtered ranking.")
@ensemble_options
@click.option("--per-relation", is_flag=True, help="Also print MRR per relation.")
@click.option("--json", "as_json", is_flag=True)
@device_option()
def evaluate(run, split, raw, ensemble, ensemble_rule, per_relation, as_json, device) -> None:
    """Evaluate a trained run on a split (filtered MRR, MR, Hits@k)."""
    r = open_run(run, ensemble, device, ensemble_rule)
    if split not in r.dataset.splits:
        fail(ValueError(f"no split {split!r}; available: {', '.join(r.dataset.splits)}"))
    m = r.evaluate(split, filtered=not raw, progress=not as_json)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    click.echo(metrics_table(m, f"{split} ({'raw' if raw else 'filtered'})"))
    if per_relation and "per_relation" in m:
        for name, pm in sorted(m["per_relation"].items(), key=lambda x: -x[1]["mrr"]):
            click.echo(f"  {name:<40} mrr={pm['mrr']:.4f} count={pm['count']}")


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--head", default=None, help="Head entity (label or name): predict tails.")
@click.option("--relation", default=None, help="Relation (label or name).")
@click.option("--tail", default=None, help="Tail entity: predict heads.")
@click.option("--head-text", default=None,
              help="KGT5 runs: a head that is not in the graph, as free text: predict tails.")
@click.option("--tail-text", default=None,
              help="KGT5 runs: a tail that is not in the graph, as free text: predict heads.")
@click.option("--facts", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --head-text/--tail-text: known facts about the new entity, head<TAB>relation<TAB>tail "
                   "with '?' for it (KGT5 runs trained with kgt5.context).")
@click.option("--description", default=None,
              help="With --head-text/--tail-text: the new entity's description (runs trained with kgt5.descriptions).")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Many queries, one a line: head<TAB>relation<TAB>? (tails) or ?<TAB>relation<TAB>tail (heads).")
@click.option("-k", "--top-k", "--k", "k", type=int, default=10, show_default=True, help="Answers per query.")
@click.option("--exclude-known", is_flag=True, help="Leave out answers already in the KG.")
@click.option("--format", "fmt", type=click.Choice(["tsv", "jsonl", "csv"]), default="tsv", show_default=True,
              help="With --file: tsv/csv (a header, one row per answer) or jsonl (one object per query).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="With --file: write here (atomically) instead of stdout.")
@click.option("--probabilities", is_flag=True,
              help="With --file: add each answer's softmax probability over all entities (one more scoring pass).")
@ensemble_options
@click.option("--json", "as_json", is_flag=True, help="JSON output (with --file: the same as --format jsonl).")
@device_option()
def predict(run, head, relation, tail, head_text, tail_text, facts, description, file, k, exclude_known, fmt, output,
            probabilities, ensemble, ensemble_rule, as_json, device) -> None:
    """Top-k tails for (--head, --relation) or heads for (--relation, --tail); or, with --file, for
    every line of a query file (streamed: any file size).

    \b
    Query file: three tab-separated fields a line, '?' for the entity to predict:
      virus<TAB>causes<TAB>?      tails of (virus, causes, ?)
      ?<TAB>location_of<TAB>cell  heads of (?, location_of, cell)
    Labels or names; a bad line stops with its file and line number. Output columns (tsv/csv):
    line, head, relation, tail, predict, rank, entity, name, score, probability, known.

    \b
    A KGT5 run also answers for an entity that is not in the graph (--head-text/--tail-text),
    optionally with --facts about it; its answers are entities of the graph (docs/kgt5.md).
    """
    if k < 1:
        fail(ValueError(f"--top-k must be at least 1, not {k}"))
    if head_text is not None or tail_text is not None:
        if head_text is not None and tail_text is not None:
            fail(ValueError("give one of --head-text or --tail-text"))
        if head is not None or tail is not None or file is not None or ensemble is not None:
            fail(ValueError("--head-text/--tail-text name the new entity: leave out --head, --tail, --file and --ensemble"))
        if relation is None:
            fail(ValueError("give --relation with --head-text/--tail-text"))
        return _predict_new(run, head_text if head_text is not None else tail_text, relation, tail_text is not None,
                            facts, description, k, as_json, device)
    if facts is not None or description is not None:
        fail(ValueError("--facts and --description describe a new entity: give --head-text or --tail-text"))
    if file is not None:
        if head is not None or relation is not None or tail is not None:
            fail(ValueError("--file takes the queries from the file: leave out --head, --relation and --tail"))
        from .batch import predict_file

        predict_file(run, file, k, exclude_known, "jsonl" if as_json else fmt, output, ensemble, device,
                     probabilities, ensemble_rule)
        return
    if relation is None:
        fail(ValueError("give --relation (and --head or --tail), or --file"))
    if (head is None) == (tail is None):
        fail(ValueError("give exactly one of --head or --tail"))
    r = open_run(run, ensemble, device, ensemble_rule)
    try:
        rows = r.predict(head=head, relation=relation, tail=tail, k=k, exclude_known=exclude_known)
    except (KeyError, ValueError) as e:
        fail(e)
    _print_rows(rows, as_json)


def _print_rows(rows: list[dict], as_json: bool, known: bool = True) -> None:
    """Top-k rows as JSON or as a table (rank, score, [known,] entity (name))."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'rank':>4}  {'score':>10}  " + (f"{'known':<6} " if known else "") + "entity")
    for row in rows:
        name = row["entity"] if row["name"] == row["entity"] else f"{row['entity']} ({row['name']})"
        kn = f"{row['known'] or '-':<6} " if known else ""
        click.echo(f"{row['rank']:>4}  {row['score']:>10.4f}  {kn}{name}")


def _predict_new(run, text, relation, head, facts_file, description, k, as_json, device) -> None:
    """``kgc predict RUN --head-text/--tail-text``: a KGT5 run's answers for a new entity."""
    r = open_run(run, None, device)
    if not hasattr(r, "predict_new"):
        fail(ValueError(f"{run}: queries about entities outside the graph need a KGT5 run (an embedding model has "
                        "no row for an entity it never saw)"))
    try:
        from ..seq2seq.inductive import read_facts

        facts = read_facts(facts_file) if facts_file else None
        rows = r.predict_new(text, relation, head=head, facts=facts, description=description, k=k)
    except (KeyError, ValueError, OSError) as e:
        fail(e)
    _print_rows(rows, as_json, known=False)  # a new entity's triples cannot be in the graph


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Folder (default RUN/export).")
def export(run, out) -> None:
    """Export embeddings (.npy) and vocabularies (TSV with names)."""
    from ..runs.protocol import ExportableRun

    r = open_run(run)
    if not isinstance(r, ExportableRun):
        fail(ValueError(f"{run}: a {type(r).__name__} has no embedding tables to export (KGE runs have)"))
    for kind, path in r.export(out).items():
        click.echo(f"{kind}: {path}")


__all__ = ["evaluate", "export", "predict"]
