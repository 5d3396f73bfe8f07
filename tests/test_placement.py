"""Where the tables live and how a batch is computed on a device: the entity table in host memory
(``training.entity_table``), the placement choice from the memory estimate, bf16 autocast and
deterministic kernels. The host-table path is exercised on the CPU too (host = device there): it
must equal the all-on-device run bit for bit; the CUDA variants skip with ``gpu:`` here."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import kgcomplete as kgc
from kgcomplete.config import build_config
from kgcomplete.training.memory import estimate_training_memory
from kgcomplete.training.placement import choose_placement

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="gpu: no CUDA device here"))]
ROWS = {"training.mode": "negatives", "training.optimizer": "rowadagrad", "training.loss": "logsigmoid",
        "training.num_negatives": 24, "training.batch_size": 128, "training.lr": 0.5}
FAST = dict(dim=16, epochs=4, eval_every=2, threads=1, progress=False, seed=3)


@pytest.fixture(scope="module")
def umls():
    return kgc.load_dataset("umls")


def _tables(path):
    return load_file(str(path / "checkpoint.safetensors"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model,storage", [("transe", "float32"), ("complex", "float32"), ("distmult", "float16")])
def test_host_table_equals_device_table(umls, tmp_path, device, model, storage):
    """Gathered rows, the write-back in the background and the fresh-row patch of the next batch
    give the same tables as training with everything on the device."""
    runs = {}
    for place in ("device", "host"):
        runs[place] = kgc.train(umls, model=model, out=tmp_path / place, device=device,
                                **FAST, **ROWS, **{"model.storage_dtype": storage, "training.entity_table": place})
        assert json.loads((tmp_path / place / "metrics.json").read_text())["entity_table"] == place
    a, b = _tables(tmp_path / "device"), _tables(tmp_path / "host")
    tol = 0 if device == "cpu" else 1e-5  # GPU kernels may sum in another order
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=0), k
    assert runs["host"].evaluate("test")["mrr"] == pytest.approx(runs["device"].evaluate("test")["mrr"], abs=1e-6)
    assert runs["host"].evaluate("test")["mrr"] > 0.1  # it learned (random ~0.04 on umls)
    if device == "cuda":  # the host run keeps its table in (pinned) host memory
        assert runs["host"].model.entity_emb.weight.device.type == "cpu"
        assert runs["host"].model.relation_emb.weight.device.type == "cuda"


def test_host_table_resumes_bit_for_bit(umls, tmp_path):
    kw = dict(FAST, **ROWS, **{"training.entity_table": "host"}, model="transe")
    kgc.train(umls, out=tmp_path / "straight", **kw)
    kgc.train(umls, out=tmp_path / "resumed", **{**kw, "epochs": 2})
    kgc.train(umls, out=tmp_path / "resumed", resume=True, epochs=4)
    a, b = _tables(tmp_path / "straight"), _tables(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _estimate(cfg, entities=1_000_000):
    return estimate_training_memory(cfg, entities, 100, 5_000_000)


def test_placement_choice_follows_the_device_memory_cap():
    cpu = torch.device("cpu")
    cfg = build_config("transe", None, {**ROWS, "model.dim": 256, "training.max_device_memory": "512MB"})
    est = _estimate(cfg)
    assert est.device_bytes(host_table=True) < 512e6 < est.device_bytes(host_table=False)
    p = choose_placement(cfg, est, cpu)
    assert p.host_table and "more than training.max_device_memory=488.28 MiB" in p.reason
    cfg.training.max_device_memory = "64GB"
    p = choose_placement(cfg, est, cpu)
    assert not p.host_table and "fits training.max_device_memory" in p.reason
    cfg.training.max_device_memory = ""  # the CPU without a cap: everything stays where it is
    assert not choose_placement(cfg, est, cpu).host_table


def test_placement_explains_what_cannot_use_a_host_table():
    cfg = build_config("complex", None, {"model.dim": 256, "training.max_device_memory": "100MB"})  # 1vsAll
    p = choose_placement(cfg, _estimate(cfg), torch.device("cpu"))
    assert not p.host_table and p.tight and "needs training.mode=negatives" in p.reason
    cfg.training.entity_table = "host"
    with pytest.raises(ValueError, match="entity_table=host: .*needs training.mode=negatives"):
        choose_placement(cfg, _estimate(cfg), torch.device("cpu"))
    cfg.training.entity_table = "gpu"
    with pytest.raises(ValueError, match="expected auto | device | host"):
        choose_placement(cfg, _estimate(cfg), torch.device("cpu"))


def test_auto_placement_in_a_run(umls, tmp_path, capsys):
    """A cap below the estimate's device part sends the table to the host and says why at start."""
    kgc.train(umls, model="transe", out=tmp_path / "r", **{**FAST, "progress": True, "epochs": 1}, **ROWS,
              **{"training.max_device_memory": "1MB"})
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["entity_table"] == "host"
    assert "entity table in host memory: on cpu the run would need" in capsys.readouterr().err


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_scores_in_bf16_and_still_learns(umls, tmp_path, device):
    fp32 = kgc.train(umls, model="complex", out=tmp_path / "fp32", device=device, **FAST)
    bf16 = kgc.train(umls, model="complex", out=tmp_path / "bf16", device=device, **FAST,
                     **{"training.autocast": "bf16"})
    dev = torch.device(device)
    h, r = torch.tensor([0, 1], device=dev), torch.tensor([0, 1], device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        assert bf16.model.score_tails(h, r).dtype == torch.bfloat16  # the product runs in bf16
    losses = [[json.loads(line)["loss"] for line in (tmp_path / n / "log.jsonl").read_text().splitlines()]
              for n in ("fp32", "bf16")]
    assert losses[0] != losses[1] and losses[0] == pytest.approx(losses[1], rel=0.05)  # bf16 used, same course
    a, b = fp32.evaluate("test")["mrr"], bf16.evaluate("test")["mrr"]
    assert a > 0.5 and b > a - 0.05, (a, b)
    with pytest.raises(ValueError, match="autocast='fp8': expected none or bf16"):
        kgc.train(umls, model="complex", out=tmp_path / "bad", **FAST, **{"training.autocast": "fp8"})


def test_deterministic_kernels_while_training_only(umls, tmp_path):
    seen = []
    kgc.train(umls, model="distmult", out=tmp_path / "r", **{**FAST, "epochs": 2}, **{"training.deterministic": True},
              on_epoch=lambda rec: seen.append(torch.are_deterministic_algorithms_enabled()))
    assert seen == [True, True]
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.skipif(not CUDA, reason="gpu: no CUDA device here")
def test_open_with_the_table_in_host_memory(umls, tmp_path):
    kgc.train(umls, model="complex", out=tmp_path / "r", **FAST)
    on_cpu = kgc.load_run(tmp_path / "r", device="cpu").evaluate("test")["mrr"]
    run = kgc.load_run(tmp_path / "r", device="cuda", entity_table="host")
    assert run.model.entity_emb.weight.device.type == "cpu" and run.device.type == "cuda"
    assert run.evaluate("test")["mrr"] == pytest.approx(on_cpu, abs=1e-4)


@pytest.mark.parametrize("name", __import__("kgcomplete.models", fromlist=["model_names"]).model_names())
def test_every_model_takes_a_1vsall_step_under_bf16_autocast(umls, name):
    """The fitted defaults may choose bf16 for any 1vsAll run: every model's step runs and learns."""
    from kgcomplete.models import from_config
    from kgcomplete.training.trainer import Trainer

    cfg = build_config(name, None, {"model.dim": 40, "training.mode": "1vsAll", "training.autocast": "bf16",
                                    "training.batch_size": 64})
    model = from_config(cfg, umls.num_entities, umls.num_relations)
    trainer = Trainer(model, umls, cfg.training)
    before = [p.detach().clone() for p in model.parameters()]
    loss, n = trainer.train_batch(torch.arange(64))
    assert loss == loss and abs(loss) < float("inf") and n == 64
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))


def test_the_memory_estimate_counts_bf16_copies_of_the_products():
    f32 = estimate_training_memory(build_config("complex", None, {"training.mode": "1vsAll"}), 17_050, 51, 185_584)
    bf16 = estimate_training_memory(build_config("complex", None, {"training.mode": "1vsAll", "training.autocast": "bf16"}),
                                    17_050, 51, 185_584)
    B, E, W = 256, 17_050, 2 * 512
    assert bf16.parts["batch buffers"] - f32.parts["batch buffers"] == 2 * B * E * 2 + E * W * 2
    assert "bf16 copies" in bf16.notes["batch buffers"]
