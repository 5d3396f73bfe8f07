"""End to end: `--workers 2` training, sharded run folders, resume, gather, re-shard, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import kgcomplete as kgc
from kgcomplete.cli.main import cli
from kgcomplete.data.dataset import Dataset
from kgcomplete.distributed.run import ShardedRun
from kgcomplete.runs import KGERun

import reference

E, R, DIM = 37, 3, 8


def _dataset():
    rng = np.random.default_rng(0)
    tr = np.stack([rng.integers(0, E, 700), rng.integers(0, R, 700), rng.integers(0, E, 700)], 1)
    return Dataset.from_arrays(tr[:600], tr[600:650], tr[650:], num_entities=E, num_relations=R)


OPTS = {"dim": DIM, "epochs": 2, "eval_every": 1, "num_negatives": 8, "batch_size": 64, "progress": False,
        "optimizer": "adagrad", "lr": 0.1, "distributed.threads": 1, "distributed.start_method": "fork",
        "distributed.window": 7}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("bess") / "run"
    run = kgc.train(_dataset(), model="distmult", out=out, **OPTS, **{"distributed.workers": 2})
    return run, out


def test_workers_2_trains_a_sharded_run(sharded):
    run, out = sharded
    assert isinstance(run, ShardedRun) and run.sharding.n_shard == 2
    m = json.loads((out / "metrics.json").read_text())
    assert m["workers"] == 2 and m["epochs"] == 2
    ds = run.dataset  # the sharded run's scores, ranked by the NumPy reference (tests/reference.py)
    ref = reference.metrics(reference.model_score_fn(run), ds.test, ds.all_triples(), ds.num_entities)
    for k in ("mrr", "mr", "hits@1", "hits@10"):
        assert m["test"][k] == pytest.approx(ref[k], abs=1e-9), k
    S = -(-E // 2)
    # per worker: entity rows and their Adagrad state are 1/n of the table
    assert m["entity_bytes"] == S * DIM * 4 and m["entity_optimizer_bytes"] == S * DIM * 4
    assert set(m["ms_per_step"]) == {"sampling", "gather", "exchange", "compute", "update"}
    assert len(kgc.load_run(out).sharding.shard_counts) == 2
    # the in-training distributed evaluation and the streamed one agree exactly
    again = kgc.load_run(out).evaluate("test")
    assert again["mrr"] == m["test"]["mrr"] and again["hits@10"] == m["test"]["hits@10"]


def test_gather_and_reshard_keep_the_model(sharded, tmp_path):
    run, out = sharded
    ref = run.evaluate("test")
    single = run.gather(tmp_path / "single")
    assert type(single) is KGERun and single.model.entity_emb.weight.shape[0] == E
    assert type(kgc.load_run(tmp_path / "single")) is KGERun
    np.testing.assert_allclose(single.evaluate("test")["mrr"], ref["mrr"], rtol=1e-6)
    q = dict(head="3", relation="1", k=5)
    want = [(p["id"], round(p["score"], 4)) for p in single.predict(**q)]
    assert [(p["id"], round(p["score"], 4)) for p in run.predict(**q)] == want
    anchor, rel = torch.tensor([3, 5, 7]), torch.tensor([1, 0, 2])
    for cand in (None, torch.tensor([0, 4, 9, 30]), torch.tensor([[1, 2], [3, 4], [5, 36]])):
        for head in (False, True):  # scoring straight from the shards = scoring the gathered table
            torch.testing.assert_close(run.score_queries(anchor, rel, cand, head=head),
                                       single.score_queries(anchor, rel, cand, head=head), rtol=1e-5, atol=1e-5)
    three = run.reshard(3, tmp_path / "three")
    assert three.sharding.n_shard == 3 and (tmp_path / "three" / "shards" / "optim-2.safetensors").exists()
    assert three.evaluate("test")["mrr"] == pytest.approx(ref["mrr"], rel=1e-6)
    assert [p["id"] for p in three.predict(**q)] == [w[0] for w in want]
    rows = np.load(run.export(tmp_path / "exp")["entity_embeddings"])
    np.testing.assert_array_equal(rows, single.model.entity_emb.weight.detach().numpy())


def test_cli_evaluate_and_predict_on_a_sharded_run(sharded):
    _, out = sharded
    res = CliRunner().invoke(cli, ["evaluate", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["count"] == 2 * 50
    res = CliRunner().invoke(cli, ["predict", str(out), "--tail", "5", "--relation", "0", "--k", "4", "--json",
                                   "--exclude-known"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert len(rows) == 4 and all(r["known"] is None for r in rows)


@pytest.mark.slow
def test_torchrun_launch(tmp_path):
    """``torchrun --nproc-per-node 2 -m kgcomplete train`` (the multi-node entry point)."""
    out = tmp_path / "tr"
    from kgcomplete.distributed.launch import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "kgcomplete", "train", "-d", "nations", "-m", "distmult", "--epochs", "2", "--dim", "8",
           "--no-progress", "--out", str(out), "--set", "distributed.threads=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["workers"] == 2 and (out / "shards" / "latest-1.safetensors").exists()


def test_workers_2_row_gradient_step_learns_umls(tmp_path):
    """BESS with row-wise Adagrad takes the row-gradient step (RowLeaves) and learns like one process."""
    ds = kgc.load_dataset("umls")
    opts = dict(model="distmult", epochs=12, progress=False, mode="negatives", loss="logsigmoid", margin=0.0,
                optimizer="rowadagrad", lr=0.1, dim=32, eval_every=0, regularizer="none", init_scale=0.1,
                reciprocal=False, batch_size=256, **{"distributed.threads": 1, "distributed.start_method": "fork"})
    mrr = {n: kgc.train(ds, out=tmp_path / f"w{n}", **opts, **{"distributed.workers": n}).folder.metrics()["test"]["mrr"]
           for n in (1, 2)}
    assert mrr[1] > 0.5 and mrr[2] > 0.5 and abs(mrr[2] - mrr[1]) < 0.1, mrr  # seeds alone move it by ~0.03


def test_evaluate_test_false_skips_the_final_ranking(tmp_path):
    kgc.train(_dataset(), model="distmult", out=tmp_path / "run", evaluate_test=False,
              **{**OPTS, "epochs": 1}, **{"distributed.workers": 2})
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "test" not in m and "valid" not in m and m["epochs"] == 1
