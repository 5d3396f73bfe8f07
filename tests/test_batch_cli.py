"""Batch work from the CLI: `kgc predict --file`, `kgc score --file`, `kgc split`, `kgc compare`, and the
warning for a dataset folder without valid/test."""

from __future__ import annotations

import csv
import io
import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

import kgcomplete
from kgcomplete.cli.main import cli
from kgcomplete.data.split import split_triples


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res


@pytest.fixture(scope="module")
def run(umls_run_dir):
    return kgcomplete.load_run(umls_run_dir)


# ------------------------------------------------------------------ predict --file
def test_predict_file_tsv_equals_single_queries_and_streams_in_chunks(umls_run_dir, run, tmp_path, monkeypatch):
    queries = [("virus", "causes", "?"), ("?", "location_of", "cell"), ("acquired abnormality", "result_of", "?"),
               ("?", "causes", "disease_or_syndrome"), ("virus", "causes", "?")]
    f = tmp_path / "queries.tsv"
    f.write_text("".join("\t".join(q) + "\n" for q in queries))
    import kgcomplete.serving.batch as batch

    sizes = []
    real = batch.iter_tsv_chunks

    def recording(*a, **kw):
        for start, frame in real(*a, **kw):
            sizes.append(len(frame))
            yield start, frame

    monkeypatch.setattr(batch, "iter_tsv_chunks", recording)
    results = list(batch.iter_prediction_results(run, f, k=3, chunk_lines=2))
    assert sizes == [2, 2, 1]  # read two lines at a time, each chunk answered at once
    assert [r["line"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["predictions"] == results[4]["predictions"]

    res = _invoke("predict", umls_run_dir, "--file", f, "-k", "3")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output), delimiter="\t"))
    assert list(rows[0]) == ["line", "head", "relation", "tail", "predict", "rank", "entity", "name", "score",
                             "probability", "known"]
    assert len(rows) == 15
    for i, (h, r, t) in enumerate(queries):
        want = run.predict(head=None if h == "?" else h, relation=r, tail=None if t == "?" else t, k=3)
        got = [row for row in rows if row["line"] == str(i + 1)]
        assert [g["entity"] for g in got] == [w["entity"] for w in want]
        assert [g["rank"] for g in got] == ["1", "2", "3"]
        np.testing.assert_allclose([float(g["score"]) for g in got], [w["score"] for w in want], rtol=1e-5)
        assert [g["known"] for g in got] == [w["known"] or "" for w in want]
        assert {g["predict"] for g in got} == {"head" if h == "?" else "tail"}
    assert rows[6]["head"] == "acquired_abnormality"  # a name in, the label out


def test_predict_file_jsonl_exclude_known_probabilities_and_output(umls_run_dir, run, tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text("virus\tcauses\t?\n?\tlocation_of\tcell\n")
    out = tmp_path / "out.jsonl"
    res = _invoke("predict", umls_run_dir, "--file", f, "--top-k", "5", "--exclude-known", "--format", "jsonl",
                  "--probabilities", "--output", out)
    assert res.exit_code == 0, res.output
    assert res.stdout == "" and "2 queries answered" in res.stderr  # results to the file, the note on stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["line"] for x in lines] == [1, 2] and lines[1]["query"]["predict"] == "head"
    want = run.predict(head="virus", relation="causes", k=5, exclude_known=True)
    assert [p["entity"] for p in lines[0]["predictions"]] == [w["entity"] for w in want]
    assert all(p["known"] is None for x in lines for p in x["predictions"])
    # the probability is the softmax over every entity, computed independently here
    import torch

    ds = run.dataset
    with torch.no_grad():
        s = run.score_queries(torch.tensor([ds.entities.id("virus")]), torch.tensor([ds.relations.id("causes")]))
    p = torch.softmax(torch.as_tensor(s).double(), 1)[0].numpy()
    got = [(x["id"], x["probability"]) for x in lines[0]["predictions"]]
    np.testing.assert_allclose([pr for _, pr in got], p[[i for i, _ in got]], rtol=1e-6)


@pytest.mark.parametrize("content, words", [
    ("virus\tcauses\t?\nvirus\tcauses\tcell\n", ["q.tsv, line 2", "no '?'"]),
    ("virus\tcauses\t?\n?\tcauses\t?\n", ["q.tsv, line 2", "both head and tail"]),
    ("virus\tcauses\t?\nvirus\tcauzes\t?\n", ["q.tsv, line 2", "unknown relation 'cauzes'", "causes"]),
    ("virus\tcauses\t?\n\nvirus\tcauses\t?\n", ["q.tsv, line 2", "expected 3 tab-separated fields"]),
    ("virus\tcauses\n", ["q.tsv, line 1", "expected 3 tab-separated fields"]),
    ("?\tcauses\tviruss\n", ["q.tsv, line 1", "unknown entity 'viruss'"]),
])
def test_a_bad_query_line_is_one_error_naming_file_and_line(umls_run_dir, tmp_path, content, words):
    f = tmp_path / "q.tsv"
    f.write_text(content)
    out = tmp_path / "out.tsv"
    res = _invoke("predict", umls_run_dir, "--file", f, "--output", out)
    assert res.exit_code == 1
    err = res.output.strip().splitlines()[-1]
    assert err.startswith("Error: ") and all(w in err for w in words), err
    assert not out.exists() and not list(tmp_path.glob(".out.tsv*"))  # nothing half-written


def test_predict_file_refuses_single_query_flags(umls_run_dir, tmp_path):
    f = tmp_path / "q.tsv"
    f.write_text("virus\tcauses\t?\n")
    res = _invoke("predict", umls_run_dir, "--file", f, "--relation", "causes")
    assert res.exit_code == 1 and "leave out --head" in res.output


# ------------------------------------------------------------------ score --file
def test_score_file_matches_score_triples_and_marks_known(umls_run_dir, run, tmp_path):
    ds = run.dataset
    train, test = ds.splits["train"][:3], ds.splits["test"][:2]
    ids = np.concatenate([train, test, [[0, 0, 1]]])
    labels = np.stack([ds.entities.labels[ids[:, 0]], ds.relations.labels[ids[:, 1]], ds.entities.labels[ids[:, 2]]], 1)
    f = tmp_path / "t.tsv"
    f.write_text("".join("\t".join(map(str, row)) + "\n" for row in labels))
    res = _invoke("score", umls_run_dir, "--file", f, "--format", "jsonl")
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    np.testing.assert_allclose([r["score"] for r in rows], run.score_triples(ids), rtol=1e-5)
    assert [r["known"] for r in rows][:5] == ["train"] * 3 + ["test"] * 2
    assert rows[5]["known"] == run.known_split(ids[5:6])[0]
    res = _invoke("score", umls_run_dir, "--file", f, "--format", "csv")
    assert res.output.splitlines()[0] == "line,head,relation,tail,score,known" and len(res.output.splitlines()) == 7
    f.write_text("virus\tcauses\tcell\nvirus\tcauses\t?\n")
    res = _invoke("score", umls_run_dir, "--file", f)
    assert res.exit_code == 1 and "t.tsv, line 2" in res.output and "a '?' in a triple" in res.output


# ------------------------------------------------------------------ split
def _triples(n_ent=60, n_rel=5, n=900, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, [n_ent, n_rel, n_ent], size=(n, 3))
    return np.array([[f"e{h}", f"r{r}", f"e{t}"] for h, r, t in ids], dtype=object)


def test_split_keeps_every_valid_test_entity_and_relation_in_train():
    labels = _triples()
    labels = np.concatenate([labels, labels[:7]])  # repeated lines are dropped
    parts, info = split_triples(labels, 0.1, 0.15, seed=5)
    assert info["duplicates"] >= 7
    n = len(labels) - info["duplicates"]
    assert sum(len(p) for p in parts.values()) == n
    assert len(parts["valid"]) == round(0.1 * n) and len(parts["test"]) == round(0.15 * n)
    train_ents = set(parts["train"][:, 0]) | set(parts["train"][:, 2])
    for k in ("valid", "test"):
        assert set(parts[k][:, 0]) | set(parts[k][:, 2]) <= train_ents
        assert set(parts[k][:, 1]) <= set(parts["train"][:, 1])
    rows = [set(map(tuple, p)) for p in parts.values()]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    again, _ = split_triples(labels, 0.1, 0.15, seed=5)
    other, _ = split_triples(labels, 0.1, 0.15, seed=6)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)  # seeded
    assert not np.array_equal(parts["test"], other["test"])


def test_split_a_star_graph_holds_out_only_what_it_can():
    # a star: every leaf entity has one triple, which must stay in train; only the hub repeats
    labels = np.array([["hub", "r", f"leaf{i}"] for i in range(20)], dtype=object)
    parts, info = split_triples(labels, 0.2, 0.2, seed=0)
    assert len(parts["valid"]) == len(parts["test"]) == 0 and info["short"] == {"valid": 4, "test": 4}


def test_kgc_split_writes_three_files_and_they_train(tmp_path):
    labels = _triples(n_ent=30, n_rel=3, n=400)
    src = tmp_path / "all.tsv"
    src.write_text("".join("\t".join(r) + "\n" for r in labels))
    out = tmp_path / "ds"
    res = _invoke("split", src, "--out", out, "--valid", "0.1", "--test", "0.1", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert "kgc train --dataset" in res.output
    from kgcomplete.data.registry import load_dataset

    ds = load_dataset(out)  # unknown="error": would fail on an entity missing from train
    assert len(ds.splits["valid"]) == len(ds.splits["test"]) and len(ds.splits["valid"]) > 0
    res = _invoke("split", src, "--out", out)
    assert res.exit_code == 1 and "exists" in res.output and "--force" in res.output
    assert _invoke("split", src, "--out", out, "--force", "--seed", "2").exit_code == 0
    res = _invoke("split", src, "--out", tmp_path / "x", "--valid", "0.6", "--test", "0.5")
    assert res.exit_code == 1 and "nothing to train on" in res.output
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tr\tb\nc\tr\n")
    res = _invoke("split", bad, "--out", tmp_path / "y")
    assert res.exit_code == 1 and "bad.tsv, line 2" in res.output


def test_a_folder_without_valid_and_test_warns_with_the_fix(tmp_path, caplog):
    (tmp_path / "train.txt").write_text("a\tr\tb\nb\tr\tc\n")
    from kgcomplete.data.registry import load_dataset

    with caplog.at_level(logging.WARNING, logger="kgcomplete.data.registry"):
        load_dataset(tmp_path)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "no valid or test split" in text and "kgc split" in text
    caplog.clear()
    (tmp_path / "valid.txt").write_text("a\tr\tc\n")
    (tmp_path / "test.txt").write_text("a\tr\tc\n")
    with caplog.at_level(logging.WARNING, logger="kgcomplete.data.registry"):
        load_dataset(tmp_path)
    assert not [r for r in caplog.records if "kgc split" in r.getMessage()]


# ------------------------------------------------------------------ compare
def test_compare_tabulates_metrics_and_the_config_keys_that_differ(umls_run_dir, tmp_path):
    import shutil

    import yaml

    other = tmp_path / "other"
    shutil.copytree(umls_run_dir, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["model"]["dim"] = 64
    cfg["training"]["lr"] = 0.5
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    m = json.loads((other / "metrics.json").read_text())
    m["test"]["mrr"] = 0.123
    (other / "metrics.json").write_text(json.dumps(m))
    (other / "checksums.json").unlink(missing_ok=True)  # an edited copy: not the checkpoint's record

    res = _invoke("compare", umls_run_dir, other, "--json")
    assert res.exit_code == 0, res.output
    c = json.loads(res.output)
    want = json.loads((umls_run_dir / "metrics.json").read_text())
    assert c["metrics"]["test MRR"] == [pytest.approx(want["test"]["mrr"]), 0.123]
    assert c["metrics"]["epochs"] == [6, 6]
    assert set(c["config"]) == {"model.dim", "training.lr"}
    assert c["config"]["model.dim"] == [32, 64]
    table = _invoke("compare", umls_run_dir, other).output
    assert "test MRR" in table and "model.dim" in table and "0.1230" in table and "training.epochs" not in table
    res = _invoke("compare", umls_run_dir, tmp_path)
    assert res.exit_code == 1 and "not a run folder" in res.output


# ------------------------------------------------------------------ small glitches of the issue
def test_datasets_list_counts_bundled_entities_and_keeps_the_whole_licence():
    from kgcomplete.data.registry import _REGISTRY

    out = _invoke("datasets").output
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip() and not line.startswith("cache")}
    assert rows["umls"].split()[3] == "135" and rows["nations"].split()[3] == "14"
    for name, line in rows.items():
        assert line.rstrip().endswith(_REGISTRY[name].licence), name


def test_evaluate_labels_raw_and_filtered_tables(umls_run_dir):
    raw = _invoke("evaluate", umls_run_dir, "--raw", "--split", "valid").output.splitlines()[0]
    filtered = _invoke("evaluate", umls_run_dir, "--split", "valid").output.splitlines()[0]
    assert raw.startswith("valid (raw)") and filtered.startswith("valid (filtered)")
    assert raw.split()[2:] == filtered.split()[2:] == ["mrr", "mr", "hits@1", "hits@3", "hits@10"]


def test_qa_on_a_kge_run_says_it_is_not_a_kgt5_run(umls_run_dir, tmp_path):
    res = _invoke("qa", "ask", umls_run_dir, "what causes [virus]")
    assert res.exit_code == 1
    assert "is a distmult run, not a KGT5 run" in res.output and "No such file" not in res.output
    f = tmp_path / "q.jsonl"
    f.write_text("{}\n")
    res = _invoke("qa", "evaluate", umls_run_dir, "--data", f)
    assert res.exit_code == 1 and "not a KGT5 run" in res.output
