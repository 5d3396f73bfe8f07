"""`kgc report` (HTML + PNGs whose plotted values match the run's log and metrics) and embedding export."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="serving extra not installed (pip install 'kgcomplete[serve]')")

from click.testing import CliRunner  # noqa: E402

from kgcomplete.cli.main import cli  # noqa: E402
from kgcomplete.serving.projection import export_embeddings, pca, project_embeddings  # noqa: E402
from kgcomplete.serving.report import build_report  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def log(umls_run_dir):
    return [json.loads(x) for x in (umls_run_dir / "log.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def metrics(umls_run_dir):
    return json.loads((umls_run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def report(run, tmp_path_factory):
    return build_report(run, tmp_path_factory.mktemp("report"))


def test_cli_report_writes_html_and_pngs(umls_run_dir, tmp_path):
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", str(umls_run_dir), "--out", str(out), "--embeddings", "tsv"])
    assert res.exit_code == 0, res.output
    names = ["training", "per_relation", "ranks", "head_vs_tail", "projection"]
    for name in names:
        png = out / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == PNG_MAGIC, name
        assert str(png) in res.output
    page = (out / "report.html").read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == len(names)
    # self-contained: the embedded images are the PNGs, nothing is fetched from elsewhere
    assert sorted(base64.b64decode(e) for e in embedded) == sorted((out / f"{n}.png").read_bytes() for n in names)
    assert not re.search(r"""(src|href)=["']?(https?:|//|[\w./-]+\.(png|css|js))""", page)
    assert (out / "embeddings" / "entity_embeddings.tsv").exists()
    data = json.loads((out / "report.json").read_text())
    assert data["training"]["epoch"] == list(range(1, 7))


def test_cli_report_bad_split(umls_run_dir, tmp_path):
    res = CliRunner().invoke(cli, ["report", str(umls_run_dir), "--out", str(tmp_path), "--split", "nope"])
    assert res.exit_code != 0 and "no (non-empty) split 'nope'" in res.output


def test_training_plot_matches_the_log(report, log):
    fig = report["figures"]["training"]
    loss_ax, mrr_ax = fig.axes
    line = loss_ax.lines[0]
    assert list(line.get_xdata()) == [r["epoch"] for r in log]
    np.testing.assert_allclose(line.get_ydata(), [r["loss"] for r in log])
    validated = [r for r in log if "valid_mrr" in r]
    assert [r["epoch"] for r in validated] == [3, 6]  # eval_every 3 (conftest.py)
    np.testing.assert_allclose(mrr_ax.lines[0].get_xdata(), [r["epoch"] for r in validated])
    np.testing.assert_allclose(mrr_ax.lines[0].get_ydata(), [r["valid_mrr"] for r in validated])
    assert report["data"]["training"]["loss"] == [r["loss"] for r in log]


def test_rank_histogram_and_per_relation_match_metrics(report, metrics, run):
    test = metrics["test"]
    data = report["data"]
    n_test = len(run.dataset.splits["test"])
    # the recomputed ranks reproduce the stored test metrics
    assert data["metrics"]["mrr"] == pytest.approx(test["mrr"], rel=1e-9)
    assert data["metrics"]["head"]["hits@10"] == pytest.approx(test["head"]["hits@10"])
    ax = report["figures"]["ranks"].axes[0]
    heights = np.array([p.get_height() for p in ax.patches])
    head_bars, tail_bars = np.split(heights, 2)
    assert head_bars.sum() == n_test and tail_bars.sum() == n_test
    assert head_bars.tolist() == data["rank_histogram"]["head"]["counts"]
    # bar 0 counts ranks in [1, 2): hits@1 times the query count (no tied scores in this float run)
    assert head_bars[0] == pytest.approx(test["head"]["hits@1"] * n_test)
    # per relation: one bar per relation, widths are the stored per-relation MRRs
    ax = report["figures"]["per_relation"].axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    widths = [p.get_width() for p in ax.patches]
    stored = test["per_relation"]
    assert len(labels) == len(stored)
    for label, w in zip(labels, widths):
        name, count = re.fullmatch(r"(.+) \((\d+)\)", label).groups()
        assert w == pytest.approx(stored[name]["mrr"]) and int(count) == stored[name]["count"]
    assert widths == sorted(widths, reverse=True)


def test_head_vs_tail_plot(report, metrics):
    bars_ax, scatter_ax = report["figures"]["head_vs_tail"].axes
    heights = [p.get_height() for p in bars_ax.patches]
    keys = ["mrr", "hits@1", "hits@3", "hits@10"]
    want = [metrics["test"]["head"][k] for k in keys] + [metrics["test"]["tail"][k] for k in keys]
    np.testing.assert_allclose(heights, want)
    offsets = scatter_ax.collections[0].get_offsets()
    per = metrics["test"]["per_relation"]
    np.testing.assert_allclose(offsets[:, 0], [v["head_mrr"] for v in per.values()])
    np.testing.assert_allclose(offsets[:, 1], [v["tail_mrr"] for v in per.values()])


# ------------------------------------------------------------------ embeddings
def test_pca_matches_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)) @ np.diag([5, 3, 1, 1, 0.5, 0.2, 0.1, 0.1]) + 7
    coords, ratio = pca(x, 2)
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(np.abs(coords), np.abs(u[:, :2] * s[:2]), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ratio, s[:2] ** 2 / (s**2).sum(), rtol=1e-6)


def test_projection_of_the_run(run):
    proj = project_embeddings(run)
    w = run.model.entity_emb.weight.detach().numpy()
    assert proj["coords"].shape == (run.dataset.num_entities, 2)
    assert proj["explained"][0] >= proj["explained"][1] > 0
    # coordinates are the centred embeddings on orthonormal directions: distances shrink, never grow
    d_full = np.linalg.norm(w[0] - w[1])
    assert np.linalg.norm(proj["coords"][0] - proj["coords"][1]) <= d_full + 1e-5


@pytest.mark.parametrize("fmt", ["npy", "tsv", "parquet"])
def test_export_embeddings_roundtrip(run, tmp_path, fmt):
    import pandas as pd

    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet export needs pyarrow")
    files = export_embeddings(run, tmp_path, fmt)
    ent = run.model.entity_emb.weight.detach().numpy()
    rel = run.model.relation_emb.weight.detach().numpy()
    ds = run.dataset
    if fmt == "npy":
        np.testing.assert_array_equal(np.load(files["entity_embeddings"]), ent)
        np.testing.assert_array_equal(np.load(files["relation_embeddings"]), rel)
        names = pd.read_csv(files["entity_names"], sep="\t", keep_default_na=False)
    elif fmt == "tsv":
        names = pd.read_csv(files["entity_embeddings"], sep="\t", keep_default_na=False)
        np.testing.assert_allclose(names[[f"e{i}" for i in range(ent.shape[1])]].to_numpy(), ent, rtol=1e-6)
        rel_df = pd.read_csv(files["relation_embeddings"], sep="\t", keep_default_na=False)
        assert len(rel_df) == len(rel)
    else:
        names = pd.read_parquet(files["entity_embeddings"])
        np.testing.assert_array_equal(np.stack(names["embedding"].to_numpy()), ent)
    assert names["label"].tolist() == ds.entities.labels.tolist()
    assert names["name"].tolist() == ds.entity_text(np.arange(ds.num_entities)).tolist()
    assert names["id"].tolist() == list(range(ds.num_entities))


def test_export_rejects_unknown_format(run, tmp_path):
    with pytest.raises(ValueError, match="unknown embedding format"):
        export_embeddings(run, tmp_path, "xlsx")
