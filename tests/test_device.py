"""One ``--device`` for every path: training (all modes), evaluation, predict, serving and resume on
each device present (``cpu`` always; ``cuda`` when there is one, else skipped with ``gpu:``), and runs
that open on a device other than the one they trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import kgcomplete as kgc
import reference
from kgcomplete.cli.main import cli
from kgcomplete.device import resolve_device

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="gpu: no CUDA device here"))]
FAST = dict(model="distmult", dim=16, epochs=2, batch_size=256, threads=1, progress=False, seed=0, eval_every=1)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda:0") if CUDA else torch.device("cpu"))
    assert resolve_device(None) == resolve_device("auto")
    for bad in ("gpu", "cuda:x", "tpu:0"):
        with pytest.raises(ValueError, match="expected auto | cpu | cuda | cuda:N"):
            resolve_device(bad)
    if not CUDA:
        with pytest.raises(ValueError, match="no CUDA device on this machine.*use --device cpu or auto"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.fixture(scope="module")
def nations():
    return kgc.load_dataset("nations")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", [dict(mode="1vsAll"), dict(mode="KvsAll", loss="bce"),
                                  dict(mode="negatives", num_negatives=16, loss="logsigmoid"),
                                  dict(mode="negatives", num_negatives=16, optimizer="rowadagrad", loss="logsigmoid")],
                         ids=["1vsAll", "KvsAll", "negatives", "negatives-rowadagrad"])
def test_training_runs_on_the_device_and_records_it(nations, tmp_path, device, mode):
    run = kgc.train(nations, out=tmp_path / "run", device=device, **{**FAST, **mode})
    assert run.model.entity_emb.weight.device.type == device
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["device"] == str(resolve_device(device))
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["training"]["device"] == device
    assert metrics["test"]["mrr"] > 0.3  # it learned (random is ~0.2 on nations)


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_predict_and_serve_on_the_device_agree_with_the_cpu(nations, tmp_path, device):
    kgc.train(nations, out=tmp_path / "run", device="cpu", **FAST)
    on_cpu, on_dev = kgc.load_run(tmp_path / "run", device="cpu"), kgc.load_run(tmp_path / "run", device=device)
    assert on_dev.model.entity_emb.weight.device.type == device
    a, b = on_cpu.evaluate("test"), on_dev.evaluate("test")
    assert abs(a["mrr"] - b["mrr"]) < 1e-4 and a["hits@10"] == b["hits@10"]
    pa = on_cpu.predict(head="usa", relation="embassy", k=5)
    pb = on_dev.predict(head="usa", relation="embassy", k=5)
    assert [r["entity"] for r in pa] == [r["entity"] for r in pb]
    pytest.importorskip("fastapi", reason="serving extra not installed (pip install 'kgcomplete[serve]')")
    from fastapi.testclient import TestClient

    from kgcomplete.serving.app import create_app

    with TestClient(create_app(on_dev)) as c:
        r = c.get("/api/predict/tails", params={"head": "usa", "relation": "embassy", "k": 5})
        assert r.status_code == 200 and [x["entity"] for x in r.json()["predictions"]] == [x["entity"] for x in pa]


@pytest.mark.parametrize("device", DEVICES)
def test_resume_on_the_device_continues_exactly(nations, tmp_path, device):
    full = kgc.train(nations, out=tmp_path / "full", device=device, **{**FAST, "epochs": 4})
    kgc.train(nations, out=tmp_path / "part", device=device, **{**FAST, "epochs": 2})
    resumed = kgc.train(out=tmp_path / "part", resume=True, epochs=4)
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v.cpu(), resumed.model.state_dict()[k].cpu(), atol=0 if device == "cpu" else 1e-5), k


def recorded_as_cuda(run: Path) -> None:
    """Make ``run`` look trained on a GPU machine: config.yaml and metrics.json say cuda."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["training"]["device"] = "cuda"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["device"] = "cuda:0"
    (run / "metrics.json").write_text(json.dumps(metrics))


def test_a_run_trained_on_a_gpu_opens_evaluates_and_resumes_on_the_cpu(nations, tmp_path):
    run = tmp_path / "run"
    kgc.train(nations, out=run, device="cpu", **FAST)
    recorded_as_cuda(run)
    opened = kgc.load_run(run, device="cpu")
    assert opened.model.entity_emb.weight.device.type == "cpu" and opened.evaluate("test")["mrr"] > 0.3
    res = CliRunner().invoke(cli, ["evaluate", str(run), "--device", "cpu", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["mrr"] > 0.3, res.output
    if not CUDA:  # the recorded device is not here: said in one line, with the way out
        res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "3"])
        reference.assert_user_error(res, "no CUDA device on this machine", "--device cpu")
    res = CliRunner().invoke(cli, ["train", "--resume", str(run), "--epochs", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["device"] == "cpu"


@pytest.mark.skipif(CUDA, reason="gpu: this checks the message of a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_one_line_for_every_command(tmp_path, nations):
    kgc.train(nations, out=tmp_path / "run", device="cpu", **FAST)
    for argv in (["train", "-d", "nations", "--out", str(tmp_path / "new"), "--device", "cuda", "--epochs", "1"],
                 ["evaluate", str(tmp_path / "run"), "--device", "cuda"],
                 ["predict", str(tmp_path / "run"), "--head", "usa", "--relation", "embassy", "--device", "cuda:1"]):
        res = CliRunner().invoke(cli, argv)
        reference.assert_user_error(res, "no CUDA device on this machine")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not CUDA, reason="gpu: Hogwild with a GPU needs one to refuse")
def test_hogwild_is_a_cpu_feature(nations, tmp_path):
    with pytest.raises(ValueError, match="hogwild=2 is a CPU feature"):
        kgc.train(nations, out=tmp_path / "run", device="cuda", mode="negatives", optimizer="rowadagrad",
                  hogwild=2, **{k: v for k, v in FAST.items() if k != "model"}, model="distmult")


def test_entity_tables_move_back_to_the_cpu_for_export(nations, tmp_path):
    run = kgc.train(nations, out=tmp_path / "run", device="cpu", **FAST)
    emb = run.entity_embeddings()
    assert isinstance(emb, np.ndarray) and emb.shape[0] == nations.num_entities


def test_out_of_gpu_memory_is_one_line_that_says_what_to_do(tmp_path, monkeypatch):
    """A CUDA OOM anywhere in a command (simulated: this machine may have no GPU) ends in one line."""
    import kgcomplete.api as api

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 80 GiB total)\nmore")

    monkeypatch.setattr(api, "run_kinds", oom)
    res = CliRunner().invoke(cli, ["train", "-d", "nations", "--out", str(tmp_path / "o"), "--epochs", "1"])
    reference.assert_user_error(res, "out of GPU memory (CUDA out of memory. Tried to allocate 20.00 GiB",
                                "--device cpu")


def test_evaluation_chunks_fit_the_free_gpu_memory(monkeypatch):
    from kgcomplete.evaluation.evaluator import fit_chunk

    assert fit_chunk(1 << 22, torch.device("cpu")) == 1 << 22
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (64 << 20, 80 << 30))  # 64 MiB free
    assert fit_chunk(1 << 22, torch.device("cuda:0")) == (64 << 20) // 4 // 16
    assert fit_chunk(1 << 10, torch.device("cuda:0")) == 1 << 10  # a smaller setting stays
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 20, 80 << 30))  # 1 MiB free
    assert fit_chunk(1 << 22, torch.device("cuda:0")) == 1 << 16  # a floor: progress, not an endless crawl
