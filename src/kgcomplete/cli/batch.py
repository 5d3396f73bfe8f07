"""``kgc score``, ``kgc split``, ``kgc compare`` and the file mode of ``kgc predict``: batch work
from the command line.

Query and triple files are read in chunks and answered through the run interface by the same
functions the server's batch endpoint uses (:mod:`kgcomplete.serving.batch`); results stream to
stdout or, atomically, to ``--output``. A progress bar goes to stderr only when it is a terminal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import click

from .common import device_option, ensemble_options, fail, open_run

FORMATS = click.Choice(["tsv", "jsonl", "csv"])


# ------------------------------------------------------------------ streaming results
def _count_lines(path: Path) -> Optional[int]:
    """Lines of a plain file (for the progress bar's total); None for a compressed one."""
    if path.suffix in (".gz", ".bz2", ".xz", ".zip", ".zst"):
        return None
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def stream_results(results: Iterator[dict], path: Path, fmt: str, kind: str, output: Optional[str]) -> int:
    """Write ``results`` (of the file ``path``) as ``fmt`` to stdout or atomically to ``output``;
    a bar on stderr when it is a terminal. Returns the number of lines answered."""
    from ..serving.batch import RowWriter

    bar = None
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=_count_lines(path), unit=" lines", desc=kind, file=sys.stderr, leave=False)
    done = 0

    def write_all(stream) -> None:
        nonlocal done
        writer = RowWriter(stream, fmt, kind)
        for result in results:
            writer.write(result)
            done += 1
            if bar is not None:
                bar.update(1)

    try:
        if output is None:
            write_all(sys.stdout)
        else:
            from ..atomic import atomic_write_file

            def write(tmp: Path) -> None:
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    write_all(f)

            atomic_write_file(output, write)
    finally:
        if bar is not None:
            bar.close()
    return done


def predict_file(run_path: str, file: str, k: int, exclude_known: bool, fmt: str, output: Optional[str],
                 ensemble: Optional[str], device: Optional[str], probabilities: bool, rule: str = "product") -> None:
    """``kgc predict RUN --file QUERIES``: top-k answers of every query line."""
    from ..serving.batch import iter_prediction_results

    r = open_run(run_path, ensemble, device, rule)
    results = iter_prediction_results(r, file, k=k, exclude_known=exclude_known, probabilities=probabilities)
    n = stream_results(results, Path(file), fmt, "predict", output)
    if output:
        click.echo(f"{n:,} queries answered -> {output}", err=True)


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--file", "file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Triples to score: head<TAB>relation<TAB>tail per line (labels or names).")
@click.option("--format", "fmt", type=FORMATS, default="tsv", show_default=True,
              help="tsv/csv: a header, then line, head, relation, tail, score, known; jsonl: one object a line.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write here (atomically) instead of stdout.")
@ensemble_options
@device_option()
def score(run, file, fmt, output, ensemble, ensemble_rule, device) -> None:
    """Score every triple of a file with RUN (streamed: any file size).

    Each output row gives the model's raw score of the triple (higher = more plausible; comparable
    only within one run) and the split that already holds it (train/valid/test), empty when new.
    A line that names an unknown entity or relation stops with its file and line.
    """
    from ..serving.batch import iter_score_results

    r = open_run(run, ensemble, device, ensemble_rule)
    n = stream_results(iter_score_results(r, file), Path(file), fmt, "score", output)
    if output:
        click.echo(f"{n:,} triples scored -> {output}", err=True)


# ------------------------------------------------------------------ split
@click.command()
@click.argument("triples", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Folder for train.txt, valid.txt, test.txt.")
@click.option("--valid", "valid_ratio", type=float, default=0.05, show_default=True,
              help="Fraction of the triples for valid.txt.")
@click.option("--test", "test_ratio", type=float, default=0.05, show_default=True,
              help="Fraction of the triples for test.txt.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random draw.")
@click.option("--force", is_flag=True, help="Replace train/valid/test.txt already in --out.")
def split(triples, out, valid_ratio, test_ratio, seed, force) -> None:
    """Split one file of triples (head<TAB>relation<TAB>tail) into train/valid/test.

    valid and test are drawn at random (seeded) among the triples whose removal leaves every entity
    and relation in train, so every valid/test triple can be ranked. Repeated lines are dropped.
    Train with `kgc train --dataset OUT`.
    """
    from ..atomic import atomic_write_text
    from ..data.readers import read_triples
    from ..data.split import split_triples, triples_text

    for name, ratio in (("--valid", valid_ratio), ("--test", test_ratio)):
        if not 0 <= ratio < 1:
            fail(ValueError(f"{name} {ratio}: expected a fraction in [0, 1)"))
    if valid_ratio + test_ratio >= 1:
        fail(ValueError(f"--valid {valid_ratio} + --test {test_ratio} leave nothing to train on"))
    outdir = Path(out)
    files = {k: outdir / f"{k}.txt" for k in ("train", "valid", "test")}
    there = [str(p) for p in files.values() if p.exists()]
    if there and not force:
        fail(FileExistsError(f"{there[0]} exists; choose another --out or pass --force"))
    labels = read_triples(triples)
    parts, info = split_triples(labels, valid_ratio, test_ratio, seed)
    outdir.mkdir(parents=True, exist_ok=True)
    for k, arr in parts.items():
        atomic_write_text(files[k], triples_text(arr))
    if info["duplicates"]:
        click.echo(f"dropped {info['duplicates']:,} repeated lines", err=True)
    for k in ("valid", "test"):
        if info["short"][k]:
            click.echo(f"warning: {k} has {len(parts[k]):,} triples, {info['short'][k]:,} fewer than asked: the "
                       f"others are needed in train to keep every entity and relation there", err=True)
    click.echo(", ".join(f"{k}: {len(v):,}" for k, v in parts.items()) + f" triples -> {outdir}")
    click.echo(f"train on it: kgc train --dataset {outdir}")


# ------------------------------------------------------------------ compare
COMPARE_METRICS = (
    ("test MRR", ("test", "mrr")), ("test Hits@1", ("test", "hits@1")), ("test Hits@3", ("test", "hits@3")),
    ("test Hits@10", ("test", "hits@10")), ("valid MRR", ("valid", "mrr")), ("valid Hits@10", ("valid", "hits@10")),
    ("epochs", ("epochs",)), ("best epoch", ("best_epoch",)), ("train time (s)", ("train_time_s",)),
    ("parameters", ("num_parameters",)),
)


def _dig(d: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def read_run_summary(path: Path) -> tuple[dict, dict]:
    """``(metrics, flat config)`` of a run folder, read from metrics.json / config.yaml (no model)."""
    import yaml

    from ..config import flatten
    from ..runs.files import read_json

    if not (path / "config.yaml").exists():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    try:
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path / 'config.yaml'}: not valid YAML ({str(e).splitlines()[0]})") from None
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}
    return metrics, flatten(config if isinstance(config, dict) else {})


def compare_runs(paths: list[Path]) -> dict:
    """Metrics of each run and the config keys whose values differ between them."""
    names = _run_names(paths)
    summaries = [read_run_summary(p) for p in paths]
    metrics = {label: [_dig(m, keys) for m, _ in summaries] for label, keys in COMPARE_METRICS}
    keys = sorted(set().union(*(c.keys() for _, c in summaries)))
    missing = object()
    differ = {k: [c.get(k) for _, c in summaries] for k in keys
              if len({json.dumps(c.get(k, missing), default=str, sort_keys=True) for _, c in summaries}) > 1}
    return {"runs": names, "paths": [str(p) for p in paths], "metrics": metrics, "config": differ}


def _run_names(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt_row = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt_row(header), "  ".join("-" * w for w in widths)] + [fmt_row(r) for r in rows])


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print {runs, paths, metrics, config} as JSON.")
def compare(runs, as_json) -> None:
    """One table of RUNS' metrics (test/valid MRR, Hits@k, epochs, train time) and of the config
    keys that differ between them (read from metrics.json / config.yaml; no model is loaded)."""
    c = compare_runs([Path(p) for p in runs])
    if as_json:
        click.echo(json.dumps(c, indent=2, default=str))
        return
    header = [""] + c["runs"]
    rows = [[label] + [_cell(v) for v in vals] for label, vals in c["metrics"].items()
            if any(v is not None for v in vals)]
    click.echo(_grid(header, rows))
    click.echo("")
    if c["config"]:
        click.echo(_grid(["config"] + c["runs"], [[k] + [_cell(v) for v in vals] for k, vals in c["config"].items()]))
    else:
        click.echo("config: the same in every run")


__all__ = ["compare", "compare_runs", "predict_file", "score", "split", "stream_results"]

