"""Defaults fitted to the graph and the device: what changes, what does not, and why it says so."""

from __future__ import annotations

import json

from kgcomplete.config import build_config
from kgcomplete.training.autoconfig import epoch_flops, fit_defaults, measured_gflops

import kgcomplete as kgc
import kgcomplete.training.autoconfig as auto
import torch


def test_small_graphs_keep_the_tuned_defaults():
    cfg = build_config("complex", None, {})
    assert fit_defaults(cfg, 135, 5_216, gflops=20.0) == []  # umls: an epoch takes well under a second
    assert (cfg.model.dim, cfg.training.batch_size, cfg.training.eval_every) == (512, 256, 5)


def test_a_mid_size_graph_gets_a_smaller_dim_larger_batches_and_a_cadence():
    cfg = build_config("complex", None, {})
    lines = fit_defaults(cfg, 14_541, 272_115, gflops=100.0)  # FB15k-237 size, 2 CPU cores (~100 GFLOP/s)
    assert cfg.model.dim == 64 and cfg.training.batch_size == 1000
    seconds = epoch_flops(272_115, 14_541, 2 * 64) / 100e9
    assert seconds <= 180 < epoch_flops(272_115, 14_541, 2 * 128) / 100e9
    assert cfg.training.eval_every == max(1, min(5, round(600 / seconds)))
    assert lines[0].startswith("model.dim 512 -> 64: one epoch would take about") and "100 GFLOP/s" in lines[0]
    assert any(l.startswith("training.batch_size 256 -> 1000") for l in lines)


def test_values_the_user_set_are_kept_and_a_budget_tightens_the_aim():
    cfg = build_config("complex", None, {"model.dim": 512, "training.batch_size": 256})
    fit_defaults(cfg, 14_541, 272_115, gflops=40.0)
    assert cfg.model.dim == 512 and cfg.training.batch_size == 256  # flags win
    cfg = build_config("complex", None, {})
    fit_defaults(cfg, 2_034, 32_888, gflops=40.0)
    loose = cfg.model.dim
    cfg = build_config("complex", None, {})
    fit_defaults(cfg, 2_034, 32_888, gflops=40.0, time_budget_s=120)  # 15 s epochs
    assert cfg.model.dim < loose
    cfg = build_config("complex", None, {"training.mode": "negatives"})
    assert fit_defaults(cfg, 14_541, 272_115, gflops=1.0) == []  # cost does not grow with E x N there


def test_sparse_and_mid_size_graphs_get_stronger_n3_weights_unless_set():
    cfg = build_config("complex", None, {})
    lines = fit_defaults(cfg, 40_943, 86_835, gflops=1e6)  # WN18RR: 2.1 triples per entity
    assert cfg.training.reg_weight == 0.1 and any(l.startswith("training.reg_weight 0.005 -> 0.1: a sparse graph (2.1 train triples") for l in lines)
    cfg = build_config("complex", None, {})
    lines = fit_defaults(cfg, 17_050, 185_584, gflops=1e6)  # CoDEx-M: 10.9 per entity
    assert cfg.training.reg_weight == 0.01 and any(l.startswith("training.reg_weight 0.005 -> 0.01: a graph of 17,050 entities") for l in lines)
    assert (cfg.training.lr_schedule, cfg.training.lr_decay) == ("plateau", 0.5)
    assert any(l.startswith("training.lr_schedule none -> plateau (lr_decay 0.95 -> 0.5)") for l in lines)
    cfg = build_config("complex", None, {})
    assert fit_defaults(cfg, 135, 5_216, gflops=1e6) == [] and cfg.training.reg_weight == 0.005  # umls
    assert cfg.training.lr_schedule == "none"
    cfg = build_config("complex", None, {"training.lr_decay": 0.9})
    fit_defaults(cfg, 17_050, 185_584, gflops=1e6)
    assert (cfg.training.lr_schedule, cfg.training.lr_decay) == ("none", 0.9)  # the user's decay is kept
    cfg = build_config("complex", None, {"training.reg_weight": 0.01})
    fit_defaults(cfg, 40_943, 86_835, gflops=1e6)
    assert cfg.training.reg_weight == 0.01  # the user's value is kept
    cfg = build_config("complex", None, {"training.regularizer": "l2"})
    fit_defaults(cfg, 40_943, 86_835, gflops=1e6)
    assert cfg.training.reg_weight == 0.005  # only the N3 weight has a published sparse-graph value


def test_measured_speed_is_positive():
    assert measured_gflops(torch.device("cpu"), seconds=0.02) > 0.1
    assert measured_gflops(torch.device("cpu"), seconds=0.02, dtype=torch.bfloat16) > 0.01


def test_bf16_autocast_where_the_device_multiplies_bf16_faster_and_epochs_are_long():
    cfg = build_config("complex", None, {})  # CoDEx-M, 90 min: float32 products at 40 GFLOP/s, bf16 at 160
    lines = fit_defaults(cfg, 17_050, 185_584, gflops=40.0, time_budget_s=5400, bf16_gflops=160.0)
    assert cfg.training.autocast == "bf16" and lines[0].startswith("training.autocast none -> bf16: this device "
                                                                   "multiplies bfloat16 matrices 4.0x as fast")
    f32 = build_config("complex", None, {})
    fit_defaults(f32, 17_050, 185_584, gflops=40.0, time_budget_s=5400)
    assert f32.training.autocast == "none" and cfg.model.dim > f32.model.dim  # the faster epochs fit a larger model
    # epochs of products at 4x: 1/4 of the products' time plus the rest of a step (EPOCH_OVERHEAD - 1)
    ratio = (0.25 + auto.EPOCH_OVERHEAD - 1) / auto.EPOCH_OVERHEAD
    assert f"{epoch_flops(185_584, 17_050, 2 * 512) / 40e9 * ratio / 60:.1f} min with the products in bf16" in lines[0]
    for slow_bf16 in (None, 48.0):  # not measured, or emulated/barely faster: float32 stays
        cfg = build_config("complex", None, {})
        fit_defaults(cfg, 17_050, 185_584, gflops=40.0, time_budget_s=5400, bf16_gflops=slow_bf16)
        assert cfg.training.autocast == "none"
    cfg = build_config("complex", None, {})
    assert fit_defaults(cfg, 135, 5_216, gflops=100.0, bf16_gflops=1e4) == []  # umls: nothing to gain
    cfg = build_config("complex", None, {"training.autocast": "none"})  # the user's choice is kept
    fit_defaults(cfg, 17_050, 185_584, gflops=100.0, bf16_gflops=400.0)
    assert cfg.training.autocast == "none"


def test_a_run_records_and_prints_what_was_fitted(tmp_path, capsys, monkeypatch):
    import kgcomplete.training.autoconfig as auto

    monkeypatch.setattr(auto, "measured_gflops", lambda device, seconds=0.15, dtype=None: 1e-4)  # a very slow device
    monkeypatch.setattr(auto, "SLOW_GFLOPS", 1e-4)
    kgc.train("nations", out=tmp_path / "r", epochs=1, threads=1)
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["auto_defaults"] and metrics["auto_defaults"][0].startswith("model.dim 512 -> 32")
    assert "fitted to this graph: model.dim 512 -> 32" in capsys.readouterr().err
    kgc.train("nations", out=tmp_path / "s", epochs=1, threads=1, dim=64)  # set: kept
    assert "dim: 64" in (tmp_path / "s" / "config.yaml").read_text()


def test_a_run_on_a_fast_bf16_device_gets_bf16_for_dot_product_models_only(tmp_path, monkeypatch):
    """fit_to_graph measures bf16 products and passes them on; distance models are not offered bf16."""
    monkeypatch.setattr(auto, "measured_gflops", lambda device, seconds=0.15, dtype=torch.float32:
                        4e-4 if dtype == torch.bfloat16 else 1e-4)  # a slow device, 4x in bf16
    monkeypatch.setattr(auto, "SLOW_GFLOPS", 1e-4)
    monkeypatch.setattr(auto, "BF16_MIN_EPOCH_S", 0.0)  # nations' epochs are short
    kgc.train("nations", out=tmp_path / "c", epochs=1, threads=1)
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["auto_defaults"][0].startswith("training.autocast none -> bf16: this device multiplies bfloat16 "
                                                  "matrices 4.0x as fast")
    assert "autocast: bf16" in (tmp_path / "c" / "config.yaml").read_text()
    kgc.train("nations", model="rotate", out=tmp_path / "r", epochs=1, threads=1, **{"training.mode": "1vsAll"})
    fitted = json.loads((tmp_path / "r" / "metrics.json").read_text())["auto_defaults"]
    assert fitted and not any("autocast" in line for line in fitted)  # fitted, but no bf16 products to gain
    assert "autocast: none" in (tmp_path / "r" / "config.yaml").read_text()
    kgc.train("nations", out=tmp_path / "n", epochs=1, threads=1, **{"training.autocast": "none"})  # the user's
    assert "autocast: none" in (tmp_path / "n" / "config.yaml").read_text()


def test_large_graphs_grow_the_dim_up_to_twice_the_default_when_the_budget_allows():
    """Above 10,000 entities (the published ComplEx-N3 runs there use rank 1000) a budget that fits
    dim 1024 gets it; smaller graphs, small budgets and a dim the user set keep theirs."""
    cfg = build_config("complex", None, {})  # CoDEx-M, 90 min, bf16 products 5x float32
    lines = fit_defaults(cfg, 17_050, 185_584, gflops=160.0, time_budget_s=5400, bf16_gflops=800.0)
    assert cfg.model.dim == 1024 and cfg.training.eval_every == 2
    grew = next(l for l in lines if l.startswith("model.dim 512 -> 1024: a graph of 17,050 entities fits a larger"))
    assert "aim: 11.2 min" in grew
    cfg = build_config("complex", None, {})  # ... 30 minutes: dim 1024 would not fit 3.75-minute epochs
    fit_defaults(cfg, 17_050, 185_584, gflops=160.0, time_budget_s=1800, bf16_gflops=800.0)
    assert cfg.model.dim == 512
    cfg = build_config("complex", None, {})  # CoDEx-S (2,034 entities) keeps the default however long
    assert not any(l.startswith("model.dim") for l in fit_defaults(cfg, 2_034, 32_888, gflops=160.0,
                                                                    time_budget_s=5400))
    assert cfg.model.dim == 512
    cfg = build_config("complex", None, {"model.dim": 256})
    fit_defaults(cfg, 17_050, 185_584, gflops=160.0, time_budget_s=5400, bf16_gflops=800.0)
    assert cfg.model.dim == 256
    cfg = build_config("distmult", None, {})  # twice the model's own default, whatever it is
    default = cfg.model.dim
    fit_defaults(cfg, 17_050, 185_584, gflops=1e6, time_budget_s=5400)
    assert cfg.model.dim == max(d for d in auto.DIMS if d <= 2 * default)
