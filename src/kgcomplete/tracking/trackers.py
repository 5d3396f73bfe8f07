"""TensorBoard, MLflow and Weights & Biases as run observers (:class:`~kgcomplete.runs.observers.RunObserver`).

Each logs the resolved config at the start, every epoch's loss / learning rate / speed and, after
validations, the validation MRR (step = epoch; :func:`steps_per_epoch` when validations fall inside
epochs), then the final metrics (``test/mrr``,
``valid/hits@10``, ...) and the report's plots (training curve, head vs tail, per relation) as
images. A missing library is a one-line error naming the extra to install.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from ..config import flatten
from ..runs.observers import RunObserver

log = logging.getLogger(__name__)

#: the pip extra of each tracker
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def build(kind: str, opts) -> RunObserver:
    return {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}[kind](opts)


class TrackerUnavailable(ValueError, ImportError):
    """A tracker's library is not installed (a one-line error naming the extra)."""


def _need(module: str, kind: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TrackerUnavailable(f"--tracker {kind} needs {module.split('.')[0]} ({e}); install the extra: "
                          f"pip install 'kgcomplete[{EXTRAS[kind]}]'") from None


#: tracker steps per epoch when validations fall inside epochs: positions are floored to 4 decimals
STEPS_WITHIN_EPOCHS = 10_000


def steps_per_epoch(cfg) -> int:
    """Tracker steps per epoch: 1 (step = epoch), or ``STEPS_WITHIN_EPOCHS`` when ``training.eval_every``
    is a fraction of an epoch or a duration, so that two validations inside one epoch (positions 3.25
    and 3.5) get steps of their own, in order, and a resumed run continues the same axis."""
    from ..config import parse_cadence

    return STEPS_WITHIN_EPOCHS if parse_cadence(cfg.training.eval_every).within_epochs else 1


def tracker_step(record: dict, scale: int) -> int:
    """The tracker step of an epoch's log record: its epoch position (3 or 3.25) times ``scale``
    (``steps_per_epoch``)."""
    return round(float(record["epoch"]) * scale)


def epoch_scalars(record: dict) -> dict[str, float]:
    """An epoch's log record as named scalars (``train/loss``, ``valid/mrr``, ...)."""
    names = {"loss": "train/loss", "lr": "train/lr", "time_s": "train/epoch_seconds",
             "triples_per_s": "train/triples_per_s", "valid_mrr": "valid/mrr", "valid_time_s": "valid/seconds"}
    return {names[k]: float(v) for k, v in record.items() if k in names and isinstance(v, (int, float))}


def final_scalars(metrics: dict) -> dict[str, float]:
    """metrics.json's split metrics (both directions) as ``test/mrr``, ``valid/hits@10`` ..., plus timing."""
    out = {}
    for split in ("valid", "test"):
        for k, v in (metrics.get(split) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{split}/{k}"] = float(v)
    for k in ("train_time_s", "train_triples_per_s", "epochs", "best_epoch"):
        if isinstance(metrics.get(k), (int, float)):
            out[f"run/{k}"] = float(metrics[k])
    return out


@contextlib.contextmanager
def report_figures(metrics: dict, folder: Path) -> Iterator[dict[str, Any]]:
    """The report's plots that need no new evaluation, as matplotlib figures (none without
    matplotlib), closed when the ``with`` block ends."""
    try:
        from ..serving import report
    except ImportError as e:
        log.warning("tracker: no plots (%s)", e)
        yield {}
        return
    from ..runs.files import read_log

    figs = {}
    records = read_log(folder)
    if records:
        figs["training"] = report.plot_training(records)
    test = metrics.get("test") or {}
    if test.get("head") and test.get("tail"):
        figs["head_vs_tail"] = report.plot_head_vs_tail(test["head"], test["tail"], test.get("per_relation"))
    if test.get("per_relation"):
        figs["per_relation"] = report.plot_per_relation(test["per_relation"])
    try:
        yield figs
    finally:
        import matplotlib.pyplot as plt

        for fig in figs.values():
            plt.close(fig)


class TensorBoardTracker(RunObserver):
    name = "TensorBoard"

    def __init__(self, opts):
        _need("tensorboard", "tensorboard")
        self.opts, self.writer, self.scale = opts, None, 1

    def start(self, cfg, folder: Path) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.scale = steps_per_epoch(cfg)
        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        self.writer.add_text("config", "```\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False) + "\n```")

    def epoch(self, record: dict) -> None:
        for k, v in epoch_scalars(record).items():
            self.writer.add_scalar(k, v, tracker_step(record, self.scale))

    def end(self, metrics: dict, folder: Path) -> None:
        step = int(metrics.get("epochs", 0) or 0) * self.scale
        for k, v in final_scalars(metrics).items():
            self.writer.add_scalar(f"final/{k}", v, step)
        with report_figures(metrics, folder) as figs:
            for name, fig in figs.items():
                self.writer.add_figure(f"report/{name}", fig, step, close=False)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowTracker(RunObserver):
    name = "MLflow"

    def __init__(self, opts):
        self.mlflow = _need("mlflow", "mlflow")
        self.opts, self.run, self.scale = opts, None, 1

    def start(self, cfg, folder: Path) -> None:
        self.scale = steps_per_epoch(cfg)
        mlflow = self.mlflow
        uri = self.opts.uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        if uri.startswith("file:") or "://" not in uri:  # the local file store: MLflow 3 wants an opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(self.opts.project)
        self.run = mlflow.start_run(run_name=self.opts.run_name or folder.name)
        params = {k: ("" if v is None else str(v))[:500] for k, v in flatten(cfg.to_dict()).items()}
        mlflow.log_params(params)
        mlflow.set_tag("kgcomplete.run_folder", str(folder.resolve()))

    def epoch(self, record: dict) -> None:
        self.mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in epoch_scalars(record).items()},
                                step=tracker_step(record, self.scale))

    def end(self, metrics: dict, folder: Path) -> None:
        self.mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in final_scalars(metrics).items()})
        with report_figures(metrics, folder) as figs:
            for name, fig in figs.items():
                self.mlflow.log_figure(fig, f"report/{name}.png")
        self.mlflow.log_artifact(str(folder / "metrics.json"))

    def close(self) -> None:
        if self.run is not None:
            self.mlflow.end_run()
            self.run = None


class WandbTracker(RunObserver):
    name = "Weights & Biases"

    def __init__(self, opts):
        self.wandb = _need("wandb", "wandb")
        self.opts, self.run, self.scale = opts, None, 1

    def start(self, cfg, folder: Path) -> None:
        self.scale = steps_per_epoch(cfg)
        mode = os.environ.get("WANDB_MODE", "offline")  # offline unless the user chose to upload
        self.run = self.wandb.init(project=self.opts.project, name=self.opts.run_name or folder.name,
                                   dir=str(folder), mode=mode, config=cfg.to_dict(), reinit="finish_previous")

    def epoch(self, record: dict) -> None:
        self.run.log({**epoch_scalars(record), "epoch": float(record["epoch"])},
                     step=tracker_step(record, self.scale))

    def end(self, metrics: dict, folder: Path) -> None:
        for k, v in final_scalars(metrics).items():
            self.run.summary[k] = v
        with report_figures(metrics, folder) as figs:
            if figs:
                import matplotlib.pyplot  # noqa: F401  (wandb.Image reads a figure through matplotlib.pyplot,
                # which the report's figures do not import: without it the image, and the run's end, fail)
                self.run.log({f"report/{name}": self.wandb.Image(fig) for name, fig in figs.items()})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
