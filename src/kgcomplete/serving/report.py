"""``kgc report RUN``: a self-contained HTML report (PNG plots embedded as base64), also saved as PNGs.

Plots:

* ``training.png``: training loss and validation MRR per epoch (from ``RUN/log.jsonl``).
* ``per_relation.png``: filtered MRR per relation on the split (bars; query counts in labels).
* ``ranks.png``: histogram of the filtered ranks of the true answers, head and tail queries.
* ``head_vs_tail.png``: MRR / Hits@k of head vs tail queries, and per relation head- vs tail-MRR.
* ``projection.png``: 2-D PCA of the entity embeddings (runs with an embedding table).

Ranks are recomputed with the shared :class:`~kgcomplete.evaluation.evaluator.Evaluator` (the same
protocol as training-time evaluation), so the report's MRR equals ``metrics.json``'s for that split.
Everything plotted is also written to ``report.json``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..evaluation.evaluator import Evaluator, RankingResult
from ..runs.protocol import as_run

RANK_BINS = np.array([1, 2, 3, 4, 6, 11, 21, 51, 101, 201, 501, 1001, 5001, 10001, 100001, 1000001, np.inf])

_COLORS = {"head": "#2f6fde", "tail": "#e07b39", "loss": "#1d2330", "mrr": "#1d8a4e"}


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=110, layout="constrained")


def _style(ax) -> None:
    ax.grid(alpha=0.25)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# ------------------------------------------------------------------ data
def compute_ranks(run: Any, split: str = "test", max_triples: Optional[int] = None, seed: int = 0) -> RankingResult:
    """Filtered ranks of ``split`` (all of it, or a seeded sample of ``max_triples``), scored in the
    chunks the run's own ``evaluate`` uses."""
    from ..evaluation.filter_index import FilterIndex

    run = as_run(run)
    ds = run.dataset
    if split not in ds.splits or len(ds.splits[split]) == 0:
        raise ValueError(f"run's dataset has no (non-empty) split {split!r}; available: {', '.join(ds.splits)}")
    triples = ds.splits[split]
    if max_triples is not None and len(triples) > max_triples:
        keep = np.sort(np.random.default_rng(seed).choice(len(triples), max_triples, replace=False))
        triples = triples[keep]
    fi = FilterIndex(ds.all_triples(), ds.num_relations)
    cand = (ds.candidates or {}).get(split)
    return Evaluator(fi, run.eval_batch_elements, run.device).rank(run, triples, ds.num_entities, filtered=True,
                                                                   candidates=cand)


def rank_histogram(ranks: np.ndarray, bins: np.ndarray = RANK_BINS) -> tuple[list[str], np.ndarray]:
    """Counts of ``ranks`` in ``[bins[i], bins[i+1])`` with readable labels (ranks may be x.5 on ties)."""
    top = bins[np.searchsorted(bins, max(float(np.max(ranks)), 1.0), side="right")] if len(ranks) else bins[1]
    edges = bins[bins <= top]
    counts = np.histogram(ranks, bins=edges)[0] if len(edges) > 1 else np.array([len(ranks)])
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        lo_i, hi_i = int(lo), (None if not np.isfinite(hi) else int(hi) - 1)
        labels.append(str(lo_i) if hi_i == lo_i else (f"{lo_i}+" if hi_i is None else f"{lo_i}-{hi_i}"))
    return labels, counts


# ------------------------------------------------------------------ plots
def plot_training(log: list[dict]):
    """Loss (left) and validation MRR (right) per epoch. Returns the Figure (None without a log)."""
    if not log:
        return None
    fig = _figure(9, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in log if r.get("loss") is not None]
    ax1.plot(ep, [r["loss"] for r in log if r.get("loss") is not None], marker="o", ms=2.5, color=_COLORS["loss"])
    ax1.set(title="Training loss", xlabel="epoch", ylabel="loss")
    val = [(r["epoch"], r["valid_mrr"]) for r in log if r.get("valid_mrr") is not None]
    if val:
        ax2.plot([v[0] for v in val], [v[1] for v in val], marker="o", ms=4, color=_COLORS["mrr"])
        best = max(val, key=lambda v: v[1])
        ax2.annotate(f"best {best[1]:.3f} (epoch {best[0]})", best, xytext=(0, -16), textcoords="offset points",
                     ha="center", fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no validation during training", ha="center", va="center", transform=ax2.transAxes)
    ax2.set(title="Validation MRR (filtered)", xlabel="epoch", ylabel="MRR")
    for ax in (ax1, ax2):
        _style(ax)
    return fig


def plot_per_relation(per_relation: dict[str, dict], max_rows: int = 60):
    """Horizontal bars of MRR per relation, best on top (the worst and best when there are many)."""
    items = sorted(per_relation.items(), key=lambda kv: (-kv[1]["mrr"], kv[0]))
    if len(items) > max_rows:
        items = items[: max_rows // 2] + items[-(max_rows // 2):]
    names = [f"{k} ({v.get('count', 0)})" for k, v in items]
    vals = [v["mrr"] for _, v in items]
    fig = _figure(8, max(2.5, 0.22 * len(items) + 1.0))
    ax = fig.subplots()
    y = np.arange(len(items))[::-1]
    ax.barh(y, vals, color=_COLORS["head"], height=0.7)
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, len(items) - 0.3)
    ax.set(title="MRR per relation (query count)", xlabel="filtered MRR")
    _style(ax)
    return fig


def plot_rank_histogram(result: RankingResult):
    labels, hc = rank_histogram(result.head_ranks)
    labels_t, tc = rank_histogram(result.tail_ranks)
    n = max(len(hc), len(tc))
    labels = labels if len(labels) >= len(labels_t) else labels_t
    hc, tc = np.pad(hc, (0, n - len(hc))), np.pad(tc, (0, n - len(tc)))
    fig = _figure(8, 3.4)
    ax = fig.subplots()
    x = np.arange(n)
    for off, counts, side, lab in ((-0.2, hc, "head", "head queries (?, r, t)"), (0.2, tc, "tail", "tail queries (h, r, ?)")):
        bars = ax.bar(x + off, counts, width=0.4, label=lab, color=_COLORS[side])
        ax.bar_label(bars, labels=[str(int(c)) if c else "" for c in counts], fontsize=7, padding=1)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(0.7, max(2, hc.max(initial=1), tc.max(initial=1)) * 3)
    ax.set(title="Filtered rank of the true answer (log scale)", xlabel="rank", ylabel="queries")
    ax.legend(frameon=False)
    _style(ax)
    return fig


def plot_head_vs_tail(head: dict, tail: dict, per_relation: Optional[dict] = None):
    keys = ["mrr", "hits@1", "hits@3", "hits@10"]
    fig = _figure(9, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(keys))
    ax1.bar(x - 0.2, [head[k] for k in keys], 0.4, label="head", color=_COLORS["head"])
    ax1.bar(x + 0.2, [tail[k] for k in keys], 0.4, label="tail", color=_COLORS["tail"])
    ax1.set_xticks(x, ["MRR", "Hits@1", "Hits@3", "Hits@10"])
    ax1.set_ylim(0, 1.15)
    ax1.set_yticks(np.linspace(0, 1, 6))
    ax1.set(title="Head vs tail queries")
    ax1.legend(frameon=False, ncol=2, loc="upper center")
    if per_relation:
        h = np.array([v["head_mrr"] for v in per_relation.values()])
        t = np.array([v["tail_mrr"] for v in per_relation.values()])
        c = np.array([v.get("count", 1) for v in per_relation.values()], dtype=float)
        ax2.scatter(h, t, s=10 + 60 * c / c.max(), alpha=0.7, color=_COLORS["mrr"])
        ax2.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax2.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="head MRR", ylabel="tail MRR",
                title="Per relation (size = queries)")
    else:
        ax2.set_axis_off()
    for ax in (ax1, ax2):
        _style(ax)
    return fig


# ------------------------------------------------------------------ report
def _png(fig, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _metrics_table(metrics: dict) -> str:
    keys = ["mrr", "mr", "hits@1", "hits@3", "hits@10", "count"]
    rows = []
    for split, m in metrics.items():
        for side in ("both", "head", "tail"):
            mm = m if side == "both" else m.get(side)
            if mm:
                rows.append(f"<tr><td>{html.escape(split)}</td><td>{side}</td>" +
                            "".join(f"<td class=num>{_fmt(mm.get(k), 2 if k == 'mr' else 4)}</td>" for k in keys) + "</tr>")
    if not rows:
        return "<p>No metrics recorded.</p>"
    head = "".join(f"<th class=num>{k.upper() if k in ('mrr', 'mr') else k}</th>" for k in keys)
    return f"<table><thead><tr><th>split</th><th>queries</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _dataset_text(summary: dict) -> str:
    splits = [k for k in ("train", "valid", "test") if k in summary]
    return (f"{summary.get('name')}: {summary.get('entities', 0):,} entities, {summary.get('relations', 0):,} relations, "
            f"{'/'.join(splits)} {' / '.join(f'{summary[k]:,}' for k in splits)} triples")


_CSS = """
body{font:14px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1d2330;background:#f5f6f8;margin:0}
main{max-width:1000px;margin:0 auto;padding:1.5rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.1rem;margin:0 0 .6rem}
section{background:#fff;border:1px solid #e3e6ec;border-radius:10px;padding:1rem 1.3rem;margin:1rem 0}
.sub{color:#6b7385}img{max-width:100%;height:auto;display:block;margin:.4rem auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{padding:.3rem .5rem;border-bottom:1px solid #e3e6ec;text-align:left}
th{color:#6b7385;font-size:.78rem;text-transform:uppercase;letter-spacing:.04em}.num{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem;margin:0}dt{color:#6b7385}dd{margin:0}
"""


def build_report(run: Any, out: Optional[str | Path] = None, split: str = "test", projection: bool = True,
                 max_triples: Optional[int] = 50_000) -> dict:
    """Write ``report.html``, the PNGs and ``report.json`` into ``out`` (default ``RUN/report``).

    Returns ``{"out", "html", "images": {name: path}, "data": the plotted values}``.
    """
    from ..runs.files import read_log

    given, run = run, as_run(run)
    run_path = Path(run.path) if run.path else None
    if out is None:
        if run_path is None:
            raise ValueError("this run has no folder; pass out=")
        out = run_path / "report"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = read_log(run_path) if run_path else []
    stored = json.loads((run_path / "metrics.json").read_text()) if run_path and (run_path / "metrics.json").exists() else {}

    t0 = time.perf_counter()
    result = compute_ranks(run, split, max_triples)
    rel_labels = run.dataset.relations.labels
    m = result.metrics(rel_labels, per_relation=True)
    rank_time = time.perf_counter() - t0

    figures: dict[str, Any] = {}
    captions: dict[str, str] = {}
    fig = plot_training(log)
    if fig is not None:
        figures["training"] = fig
        captions["training"] = f"Training loss and validation MRR per epoch ({len(log)} epochs logged in log.jsonl)."
    figures["per_relation"] = plot_per_relation(m["per_relation"])
    captions["per_relation"] = f"Filtered MRR per relation on {split} (head and tail queries together)."
    figures["ranks"] = plot_rank_histogram(result)
    captions["ranks"] = f"Where the true answer lands among all {run.dataset.num_entities:,} entities ({split}, filtered)."
    figures["head_vs_tail"] = plot_head_vs_tail(m["head"], m["tail"], m["per_relation"])
    captions["head_vs_tail"] = "Predicting heads (?, r, t) vs tails (h, r, ?)."
    proj_note = ""
    if projection:
        try:
            from .projection import plot_projection

            figures["projection"] = plot_projection(given)
            captions["projection"] = "Entity embeddings projected on their two principal components."
        except ValueError as e:  # no embedding table (e.g. KGT5)
            proj_note = str(e)

    images, encoded = {}, {}
    for name, f in figures.items():
        images[name] = out / f"{name}.png"
        encoded[name] = base64.b64encode(_png(f, images[name])).decode("ascii")

    hl, hl_t = rank_histogram(result.head_ranks), rank_histogram(result.tail_ranks)
    data = {
        "split": split,
        "triples_ranked": int(len(result.triples)),
        "rank_time_s": rank_time,
        "training": {
            "epoch": [r["epoch"] for r in log],
            "loss": [r.get("loss") for r in log],
            "valid_epoch": [r["epoch"] for r in log if r.get("valid_mrr") is not None],
            "valid_mrr": [r["valid_mrr"] for r in log if r.get("valid_mrr") is not None],
        },
        "metrics": {k: v for k, v in m.items() if k != "per_relation"},
        "per_relation": {k: {"mrr": v["mrr"], "head_mrr": v["head_mrr"], "tail_mrr": v["tail_mrr"], "count": v["count"]}
                         for k, v in m["per_relation"].items()},
        "rank_histogram": {"head": {"bins": hl[0], "counts": hl[1].tolist()},
                           "tail": {"bins": hl_t[0], "counts": hl_t[1].tolist()}},
    }
    (out / "report.json").write_text(json.dumps(data, indent=1))

    cfg = run.config_dict()
    model_name = (cfg.get("model") or {}).get("name", type(given).__name__)
    facts = {
        "run": str(run_path) if run_path else "(in memory)",
        "model": model_name,
        "dataset": _dataset_text(run.dataset.summary()),
        "epochs": stored.get("epochs", len(log)),
        "best epoch": stored.get("best_epoch", "-"),
        "train time": f"{stored['train_time_s']:.1f} s" if "train_time_s" in stored else "-",
        "parameters": f"{stored['num_parameters']:,}" if "num_parameters" in stored else "-",
        "model config": json.dumps(cfg.get("model", {})),
        "training config": ", ".join(f"{k}={v}" for k, v in (cfg.get("training") or {}).items()
                                     if k in ("epochs", "batch_size", "mode", "loss", "optimizer", "lr", "regularizer", "reg_weight")),
    }
    shown_metrics = {k: stored[k] for k in ("valid", "test") if isinstance(stored.get(k), dict)}
    if split not in shown_metrics or abs(shown_metrics[split].get("mrr", -1) - m["mrr"]) > 1e-9:
        shown_metrics[f"{split} (this report)"] = m  # stored metrics missing or different (e.g. sampled)
    sections = [
        "<section><h2>Run</h2><dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                                              for k, v in facts.items()) + "</dl></section>",
        f"<section><h2>Metrics (filtered)</h2>{_metrics_table(shown_metrics)}</section>",
    ]
    titles = {"training": "Training", "per_relation": "MRR per relation", "ranks": "Rank histogram",
              "head_vs_tail": "Head vs tail", "projection": "Embedding projection"}
    for name in figures:
        sections.append(f"<section id='{name}'><h2>{titles[name]}</h2><p class=sub>{html.escape(captions[name])}</p>"
                        f"<img alt='{name}' src='data:image/png;base64,{encoded[name]}'></section>")
    if proj_note:
        sections.append(f"<section><h2>Embedding projection</h2><p class=sub>{html.escape(proj_note)}</p></section>")
    title = f"kgcomplete report: {run_path.name if run_path else model_name}"
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{_CSS}</style></head><body><main>"
            f"<h1>{html.escape(title)}</h1><p class=sub>{html.escape(model_name)} on {html.escape(run.dataset.name)} · "
            f"generated {time.strftime('%Y-%m-%d %H:%M')}</p>{''.join(sections)}</main></body></html>")
    (out / "report.html").write_text(page)
    return {"out": out, "html": out / "report.html", "images": images, "data": data, "figures": figures}
