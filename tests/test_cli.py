"""The `kgc` command line end to end on a small umls run."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from kgcomplete.cli.main import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "umls-distmult"
    res = CliRunner().invoke(cli, ["train", "--dataset", "umls", "--model", "distmult", "--out", str(out),
                                   "--epochs", "6", "--dim", "32", "--no-progress", "--set", "training.eval_every=3"])
    assert res.exit_code == 0, res.output
    assert "test" in res.output and "mrr" in res.output
    return out


def test_train_writes_the_run_folder(run_dir):
    for name in ("config.yaml", "entities.tsv", "relations.tsv", "checkpoint.safetensors", "best.safetensors",
                 "trainer_state.json", "log.jsonl", "metrics.json", "entity_names.tsv"):
        assert (run_dir / name).exists(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(m["test"]) >= {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    assert m["epochs"] == 6 and m["train_triples_per_s"] > 0 and "valid" in m
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 7)) and "valid_mrr" in log[2]


def test_evaluate_json_matches_metrics(run_dir):
    res = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    saved = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert m["mrr"] == pytest.approx(saved["mrr"])
    raw = json.loads(CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json", "--raw", "--split", "valid"]).output)
    assert raw["filtered"] is False


def test_predict_names_in_names_out_known_marked(run_dir):
    res = CliRunner().invoke(cli, ["predict", str(run_dir), "--head", "virus", "--relation", "causes", "--k", "5", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(rows[i]["score"] >= rows[i + 1]["score"] for i in range(4))
    from kgcomplete.runs import load_run

    run = load_run(run_dir)
    ds = run.dataset
    v, c = ds.entities.id("virus"), ds.relations.id("causes")
    known_tails = set(ds.train[(ds.train[:, 0] == v) & (ds.train[:, 1] == c)][:, 2].tolist())
    for r in rows:
        assert (r["known"] == "train") == (r["id"] in known_tails)
    # head queries, and a name (not a label) as input
    res = CliRunner().invoke(cli, ["predict", str(run_dir), "--relation", "causes", "--tail", "acquired abnormality", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.output)) == 10


def test_predict_unknown_entity_suggests_close_matches(run_dir):
    res = CliRunner().invoke(cli, ["predict", str(run_dir), "--head", "viruz", "--relation", "causes"])
    assert res.exit_code != 0 and "virus" in res.output
    res = CliRunner().invoke(cli, ["predict", str(run_dir), "--relation", "causes"])
    assert res.exit_code != 0 and "exactly one" in res.output


def test_export(run_dir, tmp_path):
    res = CliRunner().invoke(cli, ["export", str(run_dir), "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    emb = np.load(tmp_path / "exp" / "entity_embeddings.npy")
    assert emb.shape == (135, 32)
    lines = (tmp_path / "exp" / "entities.tsv").read_text().splitlines()
    assert len(lines) == 136 and lines[0] == "id\tlabel\tname"


def test_bad_input_errors_are_clear(tmp_path):
    folder = tmp_path / "kg"
    folder.mkdir()
    (folder / "train.txt").write_text("a\tr\tb\nb\tr\n")
    res = CliRunner().invoke(cli, ["train", "--dataset", str(folder), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "line 2" in res.output and "train.txt" in res.output
    res = CliRunner().invoke(cli, ["train", "--model", "nope", "--out", str(tmp_path / "o2")])
    assert res.exit_code != 0 and "unknown model" in res.output


def test_datasets_lists_bundled():
    res = CliRunner().invoke(cli, ["datasets"])
    assert res.exit_code == 0 and "umls" in res.output and "nations" in res.output


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "kgcomplete", "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "rotate" in out.stdout
