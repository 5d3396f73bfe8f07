"""`kgc shards gather` / `kgc shards reshard` end to end on a tiny 2-worker (BESS) run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import kgcomplete as kgc
from kgcomplete.cli.main import cli
from kgcomplete.data.dataset import Dataset
from kgcomplete.distributed.run import ShardedRun
from kgcomplete.runs import KGERun

E, R = 37, 3


def _dataset():
    rng = np.random.default_rng(1)
    tr = np.stack([rng.integers(0, E, 700), rng.integers(0, R, 700), rng.integers(0, E, 700)], 1)
    return Dataset.from_arrays(tr[:600], tr[600:650], tr[650:], num_entities=E, num_relations=R)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "run"
    kgc.train(_dataset(), model="distmult", out=out, dim=8, epochs=2, eval_every=1, num_negatives=8, batch_size=64,
              progress=False, optimizer="adagrad", lr=0.1,
              **{"distributed.workers": 2, "distributed.start_method": "fork", "distributed.threads": 1})
    return out


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def test_gather_writes_a_single_table_run_that_ranks_like_the_shards(sharded, tmp_path):
    out = tmp_path / "single"
    text = _invoke("shards", "gather", sharded, "--out", out)
    assert "gathered 2 shards" in text and str(out) in text
    single, original = kgc.load_run(out), kgc.load_run(sharded)
    assert type(single) is KGERun and isinstance(original, ShardedRun)
    assert not (out / "sharding.json").exists() and (out / "best.safetensors").exists()
    assert single.model.entity_emb.weight.shape[0] == E
    assert single.evaluate("test") == original.evaluate("test")
    # and through the CLI: `kgc evaluate` prints the same metrics for both folders
    assert json.loads(_invoke("evaluate", out, "--json")) == json.loads(_invoke("evaluate", sharded, "--json"))
    q = ("--head", "3", "--relation", "1", "--k", "5", "--json")
    ids = lambda run: [r["id"] for r in json.loads(_invoke("predict", run, *q))]  # noqa: E731
    assert ids(out) == ids(sharded)


def test_reshard_to_3_workers_ranks_like_the_original_and_resumes(sharded, tmp_path):
    out = tmp_path / "three"
    text = _invoke("shards", "reshard", sharded, "--workers", 3, "--out", out)
    assert "from 2 to 3 shards" in text and f"kgc train --resume {out}" in text
    three, original = kgc.load_run(out), kgc.load_run(sharded)
    assert isinstance(three, ShardedRun) and three.sharding.n_shard == 3
    for i in range(3):
        for kind in ("best", "latest", "optim"):
            assert (out / "shards" / f"{kind}-{i}.safetensors").exists(), (kind, i)
    assert three.evaluate("test") == original.evaluate("test")
    # re-sharding again to 2 gives the same rankings too
    _invoke("shards", "reshard", out, "-n", 2, "-o", tmp_path / "two")
    assert kgc.load_run(tmp_path / "two").evaluate("test") == original.evaluate("test")
    # the copy continues with 3 workers, as the command says
    res = CliRunner().invoke(cli, ["train", "--resume", str(out), "--set", "training.epochs=3", "--no-progress",
                                   "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["workers"] == 3 and m["epochs"] == 3
    assert json.loads((sharded / "metrics.json").read_text())["epochs"] == 2  # the source is only read


def test_shards_errors_are_one_line(sharded, tmp_path):
    single = tmp_path / "single"
    _invoke("shards", "gather", sharded, "--out", single)
    for args, words in (
        (["gather", single, "--out", tmp_path / "x"], "is not a sharded run"),
        (["reshard", single, "--workers", 2, "--out", tmp_path / "x"], "is not a sharded run"),
        (["gather", sharded, "--out", single], "not empty"),  # never writes into an existing run
        (["reshard", sharded, "--workers", 3, "--out", sharded], "not empty"),
        (["reshard", sharded, "--workers", 1, "--out", tmp_path / "y"], "kgc shards gather"),
        (["gather", tmp_path, "--out", tmp_path / "z"], "not a run folder"),
    ):
        res = CliRunner().invoke(cli, ["shards", *map(str, args)])
        assert res.exit_code == 1 and words in res.output, (args, res.output)
        assert res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
