"""``kgc qa``: KGT5 question answering (generate / train / evaluate / ask); ``kgc kgt5 import / export``:
published checkpoints in the Hugging Face layout as runs, and runs in that layout.

KGT5 link prediction itself goes through ``kgc train --model kgt5``, ``kgc evaluate`` and
``kgc predict`` (with ``--ensemble KGE_RUN``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import fail


def require_kgt5(path: str, imported: bool = False) -> None:
    """Stop with one line when ``path`` is a run of another model family (its config.yaml names the
    model), or an imported checkpoint unless ``imported``, instead of failing later on a KGT5 file
    the folder does not have."""
    import yaml

    cfg = Path(path) / "config.yaml"
    if not cfg.exists():
        fail(FileNotFoundError(f"{path}: not a run folder (no config.yaml)"))
    if not imported and (Path(path) / "pretrained.json").exists():
        fail(ValueError(f"{path} is an imported checkpoint (kgc kgt5 import): kgc qa fine-tunes runs trained "
                        f"with kgc train --model kgt5"))
    try:
        model = str(((yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("model") or {}).get("name") or "")
    except (yaml.YAMLError, AttributeError):
        return  # let the loader report a damaged config
    if model and model.lower() not in ("kgt5", "kgt5-qa"):  # a QA run is a fine-tuned KGT5 run
        fail(ValueError(f"{path} is a {model} run, not a KGT5 run: kgc qa needs a run trained with "
                        f"kgc train --model kgt5 (ask a {model} run with kgc predict)"))


@click.group("qa")
def qa() -> None:
    """Question answering with a fine-tuned KGT5 run."""


@qa.command("generate")
@click.option("--dataset", "-d", required=True, help="Registered dataset name or folder.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Folder for train/valid/test files.")
@click.option("--valid", type=float, default=0.1, show_default=True, help="Fraction of questions for valid.")
@click.option("--test", type=float, default=0.1, show_default=True, help="Fraction of questions for test.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "metaqa"]), default="jsonl", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def generate(dataset, out, valid, test, fmt, seed) -> None:
    """Template questions from a KG (one per (h, r, ?) and (?, r, t); answers = all known entities)."""
    from ..data.registry import load_dataset
    from ..seq2seq.qa import generate_questions, split_qa

    try:
        ds = load_dataset(dataset)
    except (FileNotFoundError, ValueError) as e:
        fail(e)
    parts = split_qa(generate_questions(ds), valid, test, seed)
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        path = Path(out) / (f"{name}.jsonl" if fmt == "jsonl" else f"qa_{name}.txt")
        (part.write_jsonl if fmt == "jsonl" else part.write_metaqa)(path, ds)
        click.echo(f"{name}: {len(part):,} questions -> {path}")


@qa.command("train")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--train", "train_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="QA training file (JSONL, TSV or MetaQA).")
@click.option("--valid", "valid_file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="QA run folder to create.")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--no-mix-kg", is_flag=True, help="Train on questions only (default: also link prediction).")
@click.option("--resume", is_flag=True)
def train(run, train_file, valid_file, out, epochs, batch_size, lr, no_mix_kg, resume) -> None:
    """Fine-tune the KGT5 run RUN on questions."""
    from ..seq2seq.qa import read_qa, train_qa
    from ..seq2seq.run import KGT5Run

    require_kgt5(run)
    try:
        base = KGT5Run.load(run)
        tr = read_qa(train_file, base.dataset, base.texts)
        va = read_qa(valid_file, base.dataset, base.texts) if valid_file else None
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(e)
    if tr.dropped:
        click.echo(f"warning: {tr.dropped} training questions without a known topic/answer were skipped", err=True)
    opts = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr}.items() if v is not None}
    if no_mix_kg:
        opts["mix_kg"] = False
    qa_run = train_qa(base, tr, out, va, opts, resume=resume)
    m = json.loads((qa_run.path / "metrics.json").read_text())
    click.echo(f"QA run: {qa_run.path} ({m['epochs']} epochs, {m['train_time_s']:.1f}s)")
    if "valid" in m:
        click.echo("valid: " + "  ".join(f"{k}={v:.4f}" for k, v in m["valid"].items() if k != "count"))


@qa.command("evaluate")
@click.argument("qa_run", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="QA file to evaluate on.")
@click.option("--k", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate(qa_run, data, k, as_json) -> None:
    """Hits@1, Hits@k and MRR of the QA run on a QA file."""
    from ..seq2seq.qa import QARun, read_qa

    require_kgt5(qa_run)
    try:
        r = QARun.load(qa_run)
        d = read_qa(data, r.dataset, r.texts)
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(e)
    m = r.evaluate_qa(d, k=k)
    m["skipped"] = d.dropped
    if as_json:
        click.echo(json.dumps(m, indent=2))
    else:
        click.echo("  ".join(f"{key}={v:.4f}" if isinstance(v, float) else f"{key}={v}" for key, v in m.items()))


@qa.command("ask")
@click.argument("qa_run", type=click.Path(exists=True, file_okay=False))
@click.argument("question")
@click.option("--topic", default=None, help="Topic entity (else taken from [brackets] in the question).")
@click.option("--k", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def ask(qa_run, question, topic, k, as_json) -> None:
    """Answer QUESTION with the QA run."""
    from ..seq2seq.qa import QARun

    require_kgt5(qa_run)
    try:
        rows = QARun.load(qa_run).ask(question, topic=topic, k=k)
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(e)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['rank']:>3}  {row['score']:>9.4f}  {row['name']}")


@click.group("kgt5")
def kgt5() -> None:
    """KGT5 checkpoints in the Hugging Face layout: import one as a run, export a run as one."""


@kgt5.command("import")
@click.argument("hf_folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder to create (new or empty).")
@click.option("--entities", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Entity strings: one a line in the dataset's id order, or label<TAB>string "
                   "[default: HF_FOLDER/entity_strings.tsv].")
@click.option("--relations", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Relation strings, the same way [default: HF_FOLDER/relation_strings.tsv].")
@click.option("--dataset", "-d", default=None,
              help="Registered dataset or folder whose splits kgc evaluate ranks (else: the strings are the graph).")
@click.option("--template", type=click.Choice(["kgt5", "wikikg90mv2"]), default=None,
              help="Input format: kgt5 = 'predict tail: {entity} | {relation}' / 'predict head: ...'; "
                   "wikikg90mv2 = '{entity}| {relation}', tails only [default: HF_FOLDER/kgt5.json, else kgt5].")
@click.option("--tail-template", default=None, help="Input of (h, r, ?) with {entity} and {relation}.")
@click.option("--head-template", default=None, help="Input of (?, r, t); '' for a model of tail queries only.")
@click.option("--weights", type=click.Choice(["link", "copy"]), default="link", show_default=True,
              help="link: hard-link the weights (no copy; safe if the source moves; a copy across file systems).")
@click.option("--max-length", type=int, default=None, help="Input tokens kept [default: kgt5.json's, else 128].")
@click.option("--method", type=click.Choice(["beam", "sample", "greedy"]), default="beam", show_default=True,
              help="Decoding of evaluate / predict / serve (kgt5.decoding.method).")
@click.option("--beam-size", type=int, default=50, show_default=True)
@click.option("--num-samples", type=int, default=50, show_default=True)
def import_(hf_folder, out, entities, relations, dataset, template, tail_template, head_template, weights,
            max_length, method, beam_size, num_samples) -> None:
    """Open the KGT5 checkpoint HF_FOLDER (config.json, weights, tokenizer) with the entity and
    relation strings it was trained on as a run for kgc evaluate / predict / serve."""
    from ..seq2seq.pretrained import import_checkpoint

    try:
        import_checkpoint(hf_folder, out, entities, relations, dataset, template, tail_template, head_template,
                          weights, max_length, {"method": method, "beam_size": beam_size, "num_samples": num_samples},
                          log=click.echo)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
        fail(e)


@kgt5.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
def export(run, out) -> None:
    """Write the KGT5 run RUN in the Hugging Face layout into OUT (model, tokenizer, entity and
    relation strings, kgt5.json); kgc kgt5 import OUT opens it again."""
    from ..seq2seq.pretrained import export_run
    from .common import open_run

    require_kgt5(run, imported=True)
    r = open_run(run, device="cpu")
    try:
        path = export_run(r, out)
    except (FileExistsError, ValueError) as e:
        fail(e)
    click.echo(f"exported: {path}")


__all__ = ["kgt5", "qa"]
