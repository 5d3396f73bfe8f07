"""``kgc train`` (any model family: KGE, sharded KGE/BESS, KGT5) and ``kgc models``.

Every model-setting flag maps to one config key (:data:`TRAIN_FLAGS`) and names the model families
it applies to; a flag given for a family it does not apply to (``--mode`` with ``--model kgt5``,
``--optimizer adafactor`` with a KGE model) stops with a one-line error before anything is written.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import NamedTuple, Optional

import click

from .common import USER_ERRORS, device_option, fail, metrics_table, need

KGE, KGT5 = "KGE", "KGT5"
#: the values of ``--optimizer`` per family
OPTIMIZERS = {KGE: ("adagrad", "rowadagrad", "adam", "sgd"), KGT5: ("adamw", "adafactor")}


class TrainFlag(NamedTuple):
    key: str  #: the config key the flag sets
    families: tuple[str, ...]  #: model families it applies to


#: ``kgc train`` flags that set one config key (parameter name -> key, families)
TRAIN_FLAGS: dict[str, TrainFlag] = {
    "dim": TrainFlag("model.dim", (KGE,)),
    "epochs": TrainFlag("training.epochs", (KGE, KGT5)),
    "batch_size": TrainFlag("training.batch_size", (KGE, KGT5)),
    "lr": TrainFlag("training.lr", (KGE, KGT5)),
    "optimizer": TrainFlag("training.optimizer", (KGE, KGT5)),  # values checked per family (OPTIMIZERS)
    "mode": TrainFlag("training.mode", (KGE,)),
    "loss": TrainFlag("training.loss", (KGE,)),
    "num_negatives": TrainFlag("training.num_negatives", (KGE,)),
    "reciprocal": TrainFlag("model.reciprocal", (KGE,)),
    "seed": TrainFlag("training.seed", (KGE, KGT5)),
    "patience": TrainFlag("training.patience", (KGE, KGT5)),
    "eval_every": TrainFlag("training.eval_every", (KGE, KGT5)),
    "time_budget": TrainFlag("training.time_budget", (KGE, KGT5)),
    "relation_prediction": TrainFlag("training.relation_prediction", (KGE,)),
    "threads": TrainFlag("training.threads", (KGE, KGT5)),
    "hogwild": TrainFlag("training.hogwild", (KGE,)),
    "workers": TrainFlag("distributed.workers", (KGE,)),
    "max_memory": TrainFlag("training.max_memory", (KGE,)),
    "device": TrainFlag("training.device", (KGE, KGT5)),
    "entity_table": TrainFlag("training.entity_table", (KGE,)),
    "max_device_memory": TrainFlag("training.max_device_memory", (KGE,)),
    "autocast": TrainFlag("training.autocast", (KGE,)),
    "deterministic": TrainFlag("training.deterministic", (KGE,)),
}


def family(model: Optional[str]) -> str:
    """The model family a model name belongs to."""
    return KGT5 if str(model or "").lower() == "kgt5" else KGE


def _cadence(ctx, param, value):
    """``--eval-every``: 5 (epochs), 0.25 (a fraction of an epoch) or 10m (a duration), typed as the
    config stores it (int, float, str); a bad value is a usage error naming the flag."""
    if value is None:
        return None
    from ..config import parse_cadence

    try:
        c = parse_cadence(value, "--eval-every")
    except ValueError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None
    return value if c.seconds is not None else c.fraction if c.fraction is not None else c.epochs


def _kge(text: str = "") -> str:
    return f"[{KGE}] {text}".rstrip()


def _yaml_model_name(path: Path) -> Optional[str]:
    import yaml

    try:
        d = yaml.safe_load(Path(path).read_text()) or {}
        return (d.get("model") or {}).get("name") if isinstance(d, dict) else None
    except (OSError, yaml.YAMLError, AttributeError):
        return None  # the library reports the broken file


def _model_name(model, config_file, resume, set_name) -> Optional[str]:
    """The model the run will train, resolved as :func:`kgcomplete.train` does (None: not known)."""
    if resume:  # the run's config.yaml wins; only --set changes it
        return set_name or _yaml_model_name(Path(resume) / "config.yaml")
    return model or set_name or (_yaml_model_name(Path(config_file)) if config_file else None) or "complex"


def check_flags(model_name: Optional[str], given: dict) -> None:
    """Stop with a one-line error when a given flag does not apply to the model's family."""
    if model_name is None:
        return
    fam = family(model_name)
    for name, value in given.items():
        flag = "--reciprocal/--no-reciprocal" if name == "reciprocal" else f"--{name.replace('_', '-')}"
        if fam not in TRAIN_FLAGS[name].families:
            fail(ValueError(f"{flag} applies to {'/'.join(TRAIN_FLAGS[name].families)} models, not {model_name}"
                            + (" (KGT5 options: --set kgt5.KEY=VALUE, see docs/kgt5.md)" if fam == KGT5 else "")))
        if name == "optimizer" and value not in OPTIMIZERS[fam]:
            other = KGT5 if fam == KGE else KGE
            fail(ValueError(f"--optimizer {value} is a {other} optimizer; {model_name} (a {fam} model) "
                            f"takes {'|'.join(OPTIMIZERS[fam])}"))


@click.command(epilog="[KGE]: applies to the KGE models only (every model but kgt5, sharded or not); "
                      "refused with --model kgt5, which takes its own options as --set kgt5.KEY=VALUE "
                      "(docs/kgt5.md). Unmarked options apply to every model.")
@click.option("--dataset", "-d", default=None, help="Bundled/registered name or folder (default: umls).")
@click.option("--model", "-m", default=None, help="Model name (default: complex). See `kgc models`.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Run folder to create (default: runs/DATASET-MODEL-TIME).")
@click.option("--config", "config_file", default=None, metavar="FILE|published",
              help="YAML config; 'published': the shipped published configuration of the dataset "
                   "(wn18rr, fb15k-237, codex-s/m/l, yago3-10, ogbl-biokg, ogbl-wikikg2), its source cited in it.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), default=None, help="Continue this run folder.")
@click.option("--dim", type=int, default=None, help=_kge("Embedding size (default: the model's, e.g. 512 for complex)."))
@click.option("--epochs", type=int, default=None, help="Most epochs to train (default 100; KGT5: its preset's).")
@click.option("--batch-size", type=int, default=None, help="Training triples per batch (default 256).")
@click.option("--lr", type=float, default=None, help="Learning rate (default: the model's).")
@click.option("--optimizer", type=click.Choice([*OPTIMIZERS[KGE], *OPTIMIZERS[KGT5]]), default=None,
              help="KGE: adagrad|rowadagrad|adam|sgd; KGT5: adamw|adafactor (checked against the model).")
@click.option("--mode", type=click.Choice(["1vsAll", "KvsAll", "negatives"], case_sensitive=False), default=None,
              help=_kge("Training mode."))
@click.option("--loss", type=click.Choice(["ce", "bce", "logsigmoid", "margin", "softmax"]), default=None,
              help=_kge("Loss."))
@click.option("--num-negatives", type=int, default=None, help=_kge("Shared negatives per batch (mode=negatives)."))
@click.option("--reciprocal/--no-reciprocal", default=None, help=_kge("Learn inverse relations."))
@click.option("--seed", type=int, default=None, help="Seed of every random choice (default 0): same seed, same run.")
@click.option("--patience", type=int, default=None,
              help="Stop after this many validations without a better valid MRR (default 4; 0 = never stop early).")
@click.option("--eval-every", default=None, callback=_cadence, metavar="N|FRACTION|DURATION",
              help="Validate every N epochs (default 5; 0 = never), every FRACTION of an epoch (0.25: at the "
                   "batch boundary past each quarter) or every DURATION of training (10m, 90s).")
@click.option("--relation-prediction", type=float, default=None, metavar="WEIGHT",
              help=_kge("Also predict the relation of (h, ?, t), with this weight (Chen et al. 2021; "
                        "modes 1vsAll and negatives; default 0)."))
@click.option("--time-budget", default=None, metavar="DURATION",
              help="Stop after the epoch that crosses this wall-clock budget (30m, 2h, 1h30m, 90s), keeping "
                   "the best validated weights (KGT5: sets kgt5.time_budget_s).")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
@click.option("--hogwild", type=int, default=None, metavar="N",
              help=_kge("Train N batches at once in threads sharing the tables without locks (mode negatives, "
                        "optimizer rowadagrad); faster on several cores, not bit-for-bit reproducible."))
@click.option("--workers", type=int, default=None,
              help=_kge("BESS: shard entities over N local worker processes (see docs/distributed.md)."))
@device_option("Where to train: auto (a GPU when there is one; default) | cpu | cuda | cuda:N. With --workers N "
               "and cuda: one GPU per worker (NCCL).")
@click.option("--max-memory", default=None, metavar="SIZE",
              help=_kge("Refuse to start if the memory estimate exceeds SIZE (e.g. 16GiB, 500MB)."))
@click.option("--entity-table", type=click.Choice(["auto", "device", "host"]), default=None,
              help=_kge("Where the entity table lives: auto (the device when the estimate fits its free memory or "
                        "--max-device-memory, else host memory), device, or host (pinned host memory, the batch's "
                        "rows gathered to the GPU; mode negatives with rowadagrad)."))
@click.option("--max-device-memory", default=None, metavar="SIZE",
              help=_kge("Cap on the training device's memory for --entity-table auto (e.g. 40GiB)."))
@click.option("--autocast", type=click.Choice(["none", "bf16"]), default=None,
              help=_kge("bf16: score batches under bfloat16 autocast (loss in float32). Unset, the defaults "
                        "fitted to a large graph choose bf16 where the device multiplies it faster."))
@click.option("--deterministic/--no-deterministic", default=None,
              help=_kge("Deterministic GPU kernels for seeded runs (ops without one warn)."))
@click.option("--tracker", "trackers", multiple=True, type=click.Choice(["tensorboard", "mlflow", "wandb"]),
              help="Follow the run in an experiment tracker (repeat for several; each is an extra: "
                   "pip install 'kgcomplete[tensorboard]'). See docs/tracking.md.")
@click.option("--drop-unknown", is_flag=True, help="Drop valid/test triples with entities/relations unseen in train.")
@click.option("--columns", default=None, metavar="NAMES",
              help="The data files' columns in order, e.g. head,relation,tail,weight (others are ignored; "
                   "default: exactly head, relation, tail).")
@click.option("--keep-duplicates", is_flag=True, help="Train repeated triples as often as given (default: drop, counted).")
@click.option("--strip-whitespace", is_flag=True,
              help="Strip leading/trailing whitespace from labels (default: an error naming the line).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key, e.g. training.margin=9.")
@click.option("--no-progress", is_flag=True, help="Print nothing while training (bars are drawn only on a terminal).")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config (every key, and where its value came from) and exit.")
@click.option("--dry-run", is_flag=True,
              help="Resolve the config, load the data, print sizes, memory estimate and placement; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of a table.")
def train(dataset, model, out, config_file, resume, sets, trackers, drop_unknown, columns, keep_duplicates,
          strip_whitespace, no_progress, print_config, dry_run, as_json, **flags) -> None:
    """Train a model and print its filtered test metrics.

    Prints a banner, one line per validation and why training stopped on stderr; the metrics on
    stdout. Ctrl-C saves a checkpoint at the next batch (`kgc train --resume RUN` continues it)."""
    from ..config import parse_override

    given = {k: v for k, v in flags.items() if v is not None}
    parsed = []
    for s in sets:
        try:
            parsed.append(parse_override(s))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--set") from None  # a usage error: exit 2
    set_name = next((v for k, v in reversed(parsed) if k == "model.name"), None)
    model_name = _model_name(model, config_file, resume, set_name)
    check_flags(model_name, given)
    set_optimizer = next((v for k, v in reversed(parsed) if k == "training.optimizer"), None)
    if set_optimizer not in (None, "", "auto"):  # --set training.optimizer=X is checked like --optimizer X
        check_flags(model_name, {"optimizer": str(set_optimizer).lower()})
    if family(model_name) == KGT5:
        need("transformers", "install the KGT5 extra: pip install 'kgcomplete[kgt5]'")
    # flags, then --set (which wins over a flag for the same key), then --workers and the switches
    overrides = {TRAIN_FLAGS[k].key: v for k, v in given.items() if k != "workers"}
    overrides.update(parsed)
    if "workers" in given:
        overrides[TRAIN_FLAGS["workers"].key] = given["workers"]
    if drop_unknown:
        overrides["data.unknown"] = "drop"
    if columns:
        overrides["data.columns"] = columns
    if keep_duplicates:
        overrides["data.duplicates"] = "keep"
    if strip_whitespace:
        overrides["data.whitespace"] = "strip"
    if no_progress:
        overrides["training.progress"] = False
    if trackers:
        overrides["tracking.kind"] = ",".join(trackers)
    from ..api import resolve_config, train as train_run

    try:
        if print_config:
            from ..config import explain

            click.echo(explain(resolve_config(model, resume or out, config_file, bool(resume), dataset=dataset,
                                              **overrides)))
            return
        if dry_run:
            plan = train_run(dataset, model=model, out=resume or out, config=config_file, resume=bool(resume),
                             dry_run=True, **overrides)
            click.echo(plan.describe())
            click.echo("dry run: nothing written")
            return
        run = train_run(dataset, model=model, out=resume or out, config=config_file, resume=bool(resume), **overrides)
    except USER_ERRORS as e:
        fail(e)
    except KeyboardInterrupt:  # the run said where it saved and how to continue
        raise SystemExit(130) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    metrics = json.loads((Path(run.path) / "metrics.json").read_text())
    if as_json:
        click.echo(json.dumps({k: v for k, v in metrics.items()}, indent=2))
        return
    click.echo(f"run folder: {run.path}")
    speed = metrics.get("train_triples_per_s")
    speed = f" ({speed:,.0f} triples/s)" if isinstance(speed, (int, float)) else ""
    epochs = metrics.get("epochs", "?")
    click.echo(f"trained {epochs} epoch{'' if epochs == 1 else 's'} in {metrics.get('train_time_s', 0):.1f}s{speed}"
               + (f"; stopped: {metrics['stopped']}" if metrics.get("stopped") else ""))
    if "test" in metrics:
        click.echo(metrics_table(metrics["test"], "test"))
    where = shlex.quote(str(run.path))
    click.echo(f"files: {where}/ (config.yaml, metrics.json, log.jsonl, checkpoint files)\n"
               f"next: kgc evaluate {where} | kgc predict {where} --head NAME --relation NAME | "
               f"kgc serve {where} | kgc report {where}")


@click.command()
def models() -> None:
    """List the available models."""
    import inspect

    from ..models import ALIASES, MODELS, model_names

    for name in model_names():
        cls = MODELS.get(name)
        if cls:
            doc = (inspect.getdoc(cls) or "").splitlines()[0].replace("``", "")
        else:
            base, fixed = ALIASES[name]
            doc = f"{base} with " + ", ".join(f"{k}={v}" for k, v in fixed.items()) if fixed else f"same as {base}"
        click.echo(f"{name:<12} {doc}")
    click.echo(f"{'kgt5':<12} KGT5 (Saxena et al. 2022): a T5 trained from scratch on verbalized triples, "
               f"decoding entity names (the [kgt5] extra; docs/kgt5.md)")


__all__ = ["KGE", "KGT5", "OPTIMIZERS", "TRAIN_FLAGS", "check_flags", "family", "models", "train"]
