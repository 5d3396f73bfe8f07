"""What a study shows: the best trials table, ``STUDY/best.yaml``, plots (PNG) and ``STUDY/report.html``.

``best.yaml`` is the best trial's config rebuilt from the study's settings and the trial's parameters
(so it is right even when the trial ran on another machine); ``kgc train --config STUDY/best.yaml``
takes it as is. A trial that a budget stopped keeps its epoch count there, so that the final run
trains what was measured. Plots are Optuna's own matplotlib ones, written offline.
"""

from __future__ import annotations

import base64
import html
import json
import warnings
from pathlib import Path
from typing import Optional

import yaml

from ..atomic import atomic_write_bytes, atomic_write_text
from ..config import Config
from .study import Settings, load_settings

BEST_FILE = "best.yaml"
REPORT_FILE = "report.html"
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")
#: stop reasons of a time budget (the run's training.time_budget, which --trial-budget sets; "trial budget
#: used up": studies of the first version): best.yaml then keeps the trial's epoch count, not the budget
BUDGET_STOPS = ("time budget of", "trial budget used up")


def best_trial(study):
    """The COMPLETE trial with the highest validation MRR, or None."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def trial_rows(study) -> list[dict]:
    """One row per trial, best first (finished ones by validation MRR, then the rest by number)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append({
            "trial": t.number, "state": t.state.name, "valid_mrr": t.value,
            "epochs": a.get("epochs"), "time_s": a.get("train_time_s"),
            "stopped": a.get("error") or a.get("stopped") or "", "params": dict(t.params),
            "retry_of": (t.system_attrs.get("retry_history") or [None])[-1],
        })
    return sorted(rows, key=lambda r: (r["valid_mrr"] is None, -(r["valid_mrr"] or 0), r["trial"]))


def format_table(rows: list[dict], limit: Optional[int] = 10) -> str:
    """The best-trials table as text (``limit`` rows; None: all)."""
    shown = rows if limit is None else rows[:limit]
    head = f"{'trial':>5} {'state':<8} {'valid MRR':>9} {'epochs':>6} {'time':>7}  params"
    lines = [head]
    for r in shown:
        mrr = f"{r['valid_mrr']:.4f}" if r["valid_mrr"] is not None else "-"
        t = f"{r['time_s']:.0f}s" if isinstance(r["time_s"], (int, float)) else "-"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())
        note = f"  [{r['stopped']}]" if r["stopped"] and r["state"] != "COMPLETE" else ""
        retry = f" (retry of {r['retry_of']})" if r["retry_of"] is not None else ""
        lines.append(f"{r['trial']:>5} {r['state']:<8} {mrr:>9} {str(r['epochs'] or '-'):>6} {t:>7}  {params}{retry}{note}")
    if limit is not None and len(rows) > limit:
        lines.append(f"... and {len(rows) - limit} more trials")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def best_config(settings: Settings, trial) -> Config:
    """The config trial ``trial`` trained (its parameters through the study's space); a trial that a
    time budget stopped keeps its epoch count instead of the budget."""
    from optuna.trial import FixedTrial

    cfg = settings.parsed_space().config(settings.base_config(), FixedTrial(dict(trial.params)))
    stopped = str(trial.user_attrs.get("stopped") or "")
    if stopped.startswith(BUDGET_STOPS) and trial.user_attrs.get("epochs"):
        cfg.training.epochs = int(trial.user_attrs["epochs"])
        cfg.training.time_budget = ""  # the final run trains those epochs, whatever the machine's speed
    return cfg


def write_best(study_dir: Path, study, settings: Settings) -> Optional[Path]:
    """``STUDY/best.yaml`` (a config ``kgc train --config`` takes), or None while no trial completed."""
    t = best_trial(study)
    if t is None:
        return None
    cfg = best_config(settings, t)
    note = (f"# kgc tune: the best trial of {study.study_name}: trial {t.number} "
            f"(trials/{t.number:03d}), validation MRR {t.value:.4f}, "
            f"{t.user_attrs.get('epochs')} epochs ({t.user_attrs.get('stopped')}).\n"
            f"# Train it with test evaluation: kgc train --config best.yaml --out final (or kgc tune --show STUDY --final)\n")
    path = Path(study_dir) / BEST_FILE
    atomic_write_text(path, note + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return path


def write_plots(study_dir: Path, study) -> dict[str, str]:
    """PNG plots under ``STUDY/plots/``; name -> path, or name -> why it could not be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out = Path(study_dir) / "plots"
    out.mkdir(exist_ok=True)
    result = {}
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = getattr(ovm, f"plot_{name}")(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(13 if name == "parallel_coordinate" else 9, 6)
            fig.tight_layout()
            path = out / f"{name}.png"
            from io import BytesIO

            buf = BytesIO()
            fig.savefig(buf, format="png", dpi=90)
            atomic_write_bytes(path, buf.getvalue())
            result[name] = str(path)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError, optuna.exceptions.OptunaError) as e:
            result[name] = f"not drawn: {e}"
        finally:
            plt.close("all")
    return result


def final_metrics(study_dir: Path) -> Optional[dict]:
    f = Path(study_dir) / "final" / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def write_html(study_dir: Path, study, settings: Settings, rows: list[dict], plots: dict[str, str]) -> Path:
    """``STUDY/report.html``: one self-contained page (plots embedded)."""
    from optuna.trial import TrialState

    study_dir = Path(study_dir)
    states = {s.name: sum(r["state"] == s.name for r in rows) for s in TrialState}
    parts = [f"<h1>kgc tune: {html.escape(study.study_name)}</h1>",
             f"<p>dataset <b>{html.escape(settings.dataset)}</b>, model <b>{html.escape(settings.model)}</b>, "
             f"sampler {settings.sampler}, pruner {settings.pruner}; trials: "
             + ", ".join(f"{n} {k.lower()}" for k, n in states.items() if n) + ". Objective: filtered validation "
             f"MRR (the test split is never evaluated by a trial).</p>",
             "<h2>Best trials</h2>", _html_table(rows[:20])]
    best = study_dir / BEST_FILE
    if best.is_file():
        parts += ["<h2>Best config (best.yaml)</h2>", f"<pre>{html.escape(best.read_text())}</pre>"]
    fm = final_metrics(study_dir)
    if fm:
        parts.append("<h2>Final run (best.yaml, with test evaluation)</h2>")
        for split in ("valid", "test"):
            if split in fm:
                m = fm[split]
                parts.append(f"<p>{split}: MRR {m['mrr']:.4f}, Hits@1 {m['hits@1']:.4f}, Hits@10 {m['hits@10']:.4f}</p>")
    parts.append("<h2>Plots</h2>")
    for name, where in plots.items():
        title = name.replace("_", " ")
        if where.startswith("not drawn"):
            parts.append(f"<h3>{title}</h3><p>{html.escape(where)}</p>")
        else:
            data = base64.b64encode(Path(where).read_bytes()).decode()
            parts.append(f"<h3>{title}</h3><img alt='{title}' src='data:image/png;base64,{data}'>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>kgc tune report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}img{max-width:100%}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    path = study_dir / REPORT_FILE
    atomic_write_text(path, page)
    return path


def _html_table(rows: list[dict]) -> str:
    head = "<tr><th>trial</th><th>state</th><th>valid MRR</th><th>epochs</th><th>time (s)</th><th>params</th><th>note</th></tr>"
    body = []
    for r in rows:
        mrr = f"{r['valid_mrr']:.4f}" if r["valid_mrr"] is not None else ""
        t = f"{r['time_s']:.0f}" if isinstance(r["time_s"], (int, float)) else ""
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())
        note = r["stopped"] + (f" (retry of {r['retry_of']})" if r["retry_of"] is not None else "")
        body.append(f"<tr><td>{r['trial']}</td><td>{r['state']}</td><td>{mrr}</td><td>{r['epochs'] or ''}</td>"
                    f"<td>{t}</td><td>{html.escape(params)}</td><td>{html.escape(note)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def write_report(study_dir: Path, study) -> dict:
    """Everything above; returns ``{"rows", "best", "best_yaml", "plots", "report"}``."""
    settings = load_settings(study)
    rows = trial_rows(study)
    best_yaml = write_best(study_dir, study, settings)
    plots = write_plots(study_dir, study)
    report = write_html(study_dir, study, settings, rows, plots)
    return {"rows": rows, "best": best_trial(study), "best_yaml": best_yaml, "plots": plots, "report": report}


__all__ = ["BEST_FILE", "REPORT_FILE", "best_config", "best_trial", "format_table", "trial_rows", "write_best",
           "write_html", "write_plots", "write_report"]
