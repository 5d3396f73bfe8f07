"""Published configurations shipped as YAML (``--config published``): each cites its source, loads
as a config, and is found by the dataset's name (a registered name or a folder named like it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import kgcomplete
from kgcomplete.cli.main import cli
from kgcomplete.config import build_config
from kgcomplete.configs import published_config, published_configs

EXPECTED = {"wn18rr", "fb15k-237", "codex-s", "codex-m", "codex-l", "yago3-10", "ogbl-biokg", "ogbl-wikikg2"}


def test_every_shipped_config_cites_its_source_and_loads():
    found = published_configs()
    assert {d for d, _ in found} == EXPECTED
    for (dataset, model), path in found.items():
        head = path.read_text().splitlines()[:4]
        assert any(l.startswith("# source: ") and len(l) > 40 for l in head), path
        assert any(l.startswith("# published result: ") for l in head), path
        cfg = build_config(None, path)
        assert cfg.model.name == model and cfg.training.regularizer == "n3" and cfg.training.optimizer == "adagrad"


def test_batches_are_the_published_ones_in_triples():
    """kbc and ssl-relation-prediction train each triple's reciprocal as a separate example, so their
    batch counts queries; ours counts triples (each gives both queries): half the cited batch."""
    import re

    for (dataset, model), path in published_configs().items():
        cited = int(re.search(r"batch (\d+)", path.read_text().splitlines()[1]).group(1))
        assert build_config(None, path).training.batch_size * 2 == cited, path


def test_a_folder_named_like_the_benchmark_finds_its_config(tmp_path):
    folder = tmp_path / "codex-s"  # nations' files under CoDEx-S's name: only the name matters here
    shutil.copytree(Path(kgcomplete.__file__).parent / "data" / "bundled" / "nations", folder)
    res = CliRunner().invoke(cli, ["train", "--dataset", str(folder), "--config", "published", "--print-config"])
    assert res.exit_code == 0, res.output
    rows = {l.split(":")[0].strip(): l for l in res.stdout.splitlines() if l.startswith("  ")}
    assert "0.125" in rows["relation_prediction"] and "codex-s-complex.yaml" in rows["relation_prediction"]
    assert "0.01" in rows["lr"] and "500" in rows["batch_size"]
    assert published_config(str(folder)) == published_config("codex-s", "complex")


def test_no_published_config_names_the_shipped_ones(tmp_path):
    res = CliRunner().invoke(cli, ["train", "-d", "nations", "--config", "published", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "no published configuration for any model on 'nations'; shipped: codex-l" in res.output
    with pytest.raises(FileNotFoundError, match="for rotate on 'wn18rr'"):
        published_config("wn18rr", "rotate")
