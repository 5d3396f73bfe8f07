"""Run folders written by an older version (tests/fixtures/runs-5c97b15) still open, rank exactly as
they did when they were written, answer queries and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import kgcomplete as kgc
from kgcomplete.distributed.run import ShardedRun
from kgcomplete.runs import KGERun

OLD = Path(__file__).parent / "fixtures" / "runs-5c97b15"


@pytest.mark.parametrize("name, cls", [("kge", KGERun), ("sharded", ShardedRun)])
def test_old_run_opens_and_ranks_as_when_written(name, cls):
    run = kgc.load_run(OLD / name)
    assert type(run) is cls
    saved = json.loads((OLD / name / "metrics.json").read_text())["test"]
    got = run.evaluate("test")
    for k in ("mrr", "mr", "hits@1", "hits@10"):
        assert got[k] == pytest.approx(saved[k], abs=1e-9), k
    rows = run.predict(head="usa", relation="embassy", k=3)
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["score"] >= rows[-1]["score"]


@pytest.mark.parametrize("name", ["kge", "sharded"])
def test_old_run_resumes(tmp_path, name):
    run_dir = tmp_path / name
    shutil.copytree(OLD / name, run_dir)
    kgc.train(out=run_dir, resume=True, epochs=3)
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert json.loads((run_dir / "trainer_state.json").read_text())["epoch"] == 3
