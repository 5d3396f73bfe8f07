"""The `kgc` command line end to end on a small umls run."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from kgcomplete.cli.main import cli

import reference


@pytest.fixture(scope="module")
def run_dir(umls_run_dir):
    return umls_run_dir  # trained once per session by `kgc train` (conftest.py)


def test_train_writes_the_run_folder(run_dir):
    for name in ("config.yaml", "entities.tsv", "relations.tsv", "checkpoint.safetensors", "best.safetensors",
                 "trainer_state.json", "log.jsonl", "metrics.json", "entity_names.tsv"):
        assert (run_dir / name).exists(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    assert set(m["test"]) >= {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    assert m["epochs"] == 6 and m["train_triples_per_s"] > 0 and "valid" in m
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 7)) and "valid_mrr" in log[2]
    assert [r["epoch"] for r in log if "valid_mrr" in r] == [3, 6]


def _reference_metrics(run_dir, split, filtered):
    """Metrics of the saved best weights, ranked by the NumPy reference (tests/reference.py)."""
    from kgcomplete.api import load_run

    run = load_run(run_dir)
    ds = run.dataset
    known = ds.all_triples() if filtered else None
    return reference.metrics(reference.model_score_fn(run.model), getattr(ds, split), known, ds.num_entities)


def test_evaluate_json_equals_brute_force_ranks(run_dir):
    res = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    ref = _reference_metrics(run_dir, "test", filtered=True)
    for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
        assert m[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k
    assert m["filtered"] is True and m["count"] == 2 * 661  # head and tail query of every test triple
    # the final test metrics written by training are those of the same (best) weights
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["mrr"] == pytest.approx(ref["mrr"])


def test_evaluate_raw_ranks_every_known_answer(run_dir):
    out = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--json", "--raw", "--split", "valid"]).output
    raw = json.loads(out)
    ref_raw = _reference_metrics(run_dir, "valid", filtered=False)
    ref_filtered = _reference_metrics(run_dir, "valid", filtered=True)
    assert raw["filtered"] is False
    for k in ("mrr", "mr", "hits@1", "hits@10"):
        assert raw[k] == pytest.approx(ref_raw[k], rel=1e-9, abs=1e-12), k
    # umls has many answers per query: raw ranks are far worse than filtered ones
    assert raw["mr"] > ref_filtered["mr"] + 1 and raw["mrr"] < ref_filtered["mrr"] - 0.05


def test_predict_names_in_names_out_known_marked(run_dir):
    res = CliRunner().invoke(cli, ["predict", str(run_dir), "--head", "virus", "--relation", "causes", "--k", "5", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(rows[i]["score"] >= rows[i + 1]["score"] for i in range(4))
    from kgcomplete.api import load_run

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
    res = CliRunner().invoke(cli, ["predict", str(run_dir), "--head", "virus", "--relation", "zzzqqqxx"])
    reference.assert_user_error(res, "unknown relation 'zzzqqqxx'", "no close match among 46 relation labels")


def test_export_writes_the_saved_tables_and_vocabularies(run_dir, tmp_path):
    from safetensors.numpy import load_file

    res = CliRunner().invoke(cli, ["export", str(run_dir), "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    saved = load_file(run_dir / "best.safetensors")  # `kgc export` exports the run's best weights
    emb = np.load(tmp_path / "exp" / "entity_embeddings.npy")
    assert emb.shape == (135, 32) and np.array_equal(emb, saved["entity_emb.weight"])
    assert np.array_equal(np.load(tmp_path / "exp" / "relation_embeddings.npy"), saved["relation_emb.weight"])
    lines = (tmp_path / "exp" / "entities.tsv").read_text().splitlines()
    assert len(lines) == 136 and lines[0] == "id\tlabel\tname"
    vocab = [x.split("\t") for x in (run_dir / "entities.tsv").read_text().splitlines()]  # id, label
    assert [x.split("\t")[:2] for x in lines[1:]] == vocab
    labels = [lab for _, lab in vocab]
    names = dict(x.split("\t", 1) for x in (run_dir / "entity_names.tsv").read_text().splitlines())
    assert lines[1 + labels.index("virus")].split("\t")[2] == names["virus"]


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


def test_train_help_names_the_family_of_each_option():
    from kgcomplete.cli.train import train

    helps = {p.name: p.help or "" for p in train.params}
    kge_only = {"dim", "mode", "loss", "num_negatives", "reciprocal", "hogwild", "workers", "max_memory",
                "entity_table", "max_device_memory", "autocast", "deterministic", "relation_prediction"}
    assert {name for name, h in helps.items() if h.startswith("[KGE]")} == kge_only
    assert {name for name, h in helps.items() if not h} == set(), "every flag has a help text"
    assert helps["optimizer"].startswith("KGE: adagrad|rowadagrad|adam|sgd; KGT5: adamw|adafactor")
    res = CliRunner().invoke(cli, ["train", "--help"])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "[KGE] Embedding size" in text and "--set kgt5.KEY=VALUE" in text
    assert "--patience" in text and "--eval-every" in text and "default 100" in text


@pytest.mark.parametrize("args, words", [
    (["--model", "distmult", "--optimizer", "adafactor"], "--optimizer adafactor is a KGT5 optimizer"),
    (["--model", "kgt5", "--optimizer", "adagrad"], "--optimizer adagrad is a KGE optimizer"),
    (["--model", "kgt5", "--mode", "negatives"], "--mode applies to KGE models, not kgt5"),
    (["--model", "KGT5", "--workers", "2"], "--workers applies to KGE models"),
    (["--set", "model.name=kgt5", "--dim", "8"], "--dim applies to KGE models"),
    (["--model", "kgt5", "--no-reciprocal"], "--reciprocal/--no-reciprocal applies to KGE models"),
])
def test_train_refuses_flags_of_another_family_before_writing(tmp_path, args, words):
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["train", "--dataset", "nations", "--out", str(out), *args])
    reference.assert_user_error(res, words)
    assert not out.exists()


def test_a_set_without_a_value_is_a_usage_error(tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["train", "--dataset", "nations", "--out", str(out), "--set", "nonsense"])
    reference.assert_usage_error(res, "--set", "must look like section.key=value")
    assert not out.exists()


def test_train_family_of_a_config_file_and_of_a_resumed_run(tmp_path):
    cfg = tmp_path / "kgt5.yaml"
    cfg.write_text("model:\n  name: kgt5\n")
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg), "--loss", "bce", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "--loss applies to KGE models, not kgt5" in res.output
    run = tmp_path / "r"  # a resumed run keeps its model: --model does not change the family
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: complex\n")
    res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--model", "kgt5", "--optimizer", "adamw"])
    assert res.exit_code == 1 and "complex (a KGE model) takes adagrad|rowadagrad|adam|sgd" in res.output


def test_cli_modules_share_one_helper_module_and_import_no_torch():
    import inspect as std_inspect

    import kgcomplete.cli as pkg
    from kgcomplete.cli import common

    for name in ("main", "train", "inspect_run", "shards", "datasets", "kgt5", "serve", "report"):
        src = (std_inspect.getfile(pkg)[: -len("__init__.py")] + f"{name}.py")
        text = open(src).read()
        assert not re.search(r"^def _(fail|open|need|load)\(", text, re.M) and "from .main import" not in text, name
    assert common.fail and common.open_run
    code = "import sys, kgcomplete.cli.main; print(sorted(m for m in ('torch', 'pandas', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_broken_yaml_and_a_kge_run_as_ensemble_base_are_one_line_errors(run_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lr: [1, 2\n")
    reference.assert_user_error(CliRunner().invoke(cli, ["train", "--config", str(bad), "--out", str(tmp_path / "o")]),
                                str(bad), "line 3", "not valid YAML")
    broken = tmp_path / "broken-run"
    import shutil

    shutil.copytree(run_dir, broken)
    (broken / "config.yaml").write_text("model: {name: distmult\n")
    reference.assert_user_error(CliRunner().invoke(cli, ["evaluate", str(broken)]), "config.yaml", "not valid YAML")
    reference.assert_user_error(CliRunner().invoke(cli, ["evaluate", str(run_dir), "--ensemble", str(run_dir)]),
                                "KGT5 run")
