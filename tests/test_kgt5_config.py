"""The configuration a KGT5 run resolves and saves, trained through ``kgcomplete.train`` and ``kgc train``:
KGT5's documented defaults (not the KGE ones), and no KGE-only keys in its config.yaml."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from kgt5_fixtures import one_thread, tiny_kg  # noqa: E402,F401

import kgcomplete as kgc  # noqa: E402
from kgcomplete.config import ConfigError  # noqa: E402
from kgcomplete.seq2seq.run import KGT5_DEFAULTS, TRAINING_DEFAULTS, KGT5Run, resolve_config  # noqa: E402

#: what docs/kgt5.md and seq2seq/section.py document
DOCUMENTED_TRAINING = {"epochs": 100, "batch_size": 256, "seed": 0, "eval_every": 10, "patience": 0,
                       "threads": 0, "progress": True, "device": "auto", "average_epochs": 0.0}
DOCUMENTED_KGT5 = {
    "preset": "tiny", "model": {}, "tokenizer": "train", "tokenizer_model": "bpe", "vocab_size": 8000,
    "description_words": 8, "max_length": 128, "context": False, "context_size": 100, "descriptions": False,
    "description_max_words": 32, "context_attention": "query", "optimizer": "auto", "lr": None, "warmup_steps": 100, "lr_decay": "none",
    "weight_decay": 0.0, "time_budget_s": None, "cpu_budget_s": None, "mixed_precision": "auto",
    "valid_max_triples": 500,
    "decoding": {"method": "beam", "beam_size": 50, "num_samples": 50, "constrained": True, "temperature": 1.0,
                 "max_rows": 2048, "reverse_weight": 0.0, "reverse_candidates": 50,
                 "widen_for_known": 200},
}
#: the micro settings both runs use (1 epoch; everything else left to the defaults)
GIVEN_TRAINING = {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False}


def expected_config(source) -> dict:
    """The resolved config of a micro run with :data:`GIVEN_TRAINING` and ``kgt5.preset=micro``,
    ``kgt5.decoding.beam_size=2``: ``auto`` is AdamW with lr 2e-3 for ``micro``."""
    return {
        "data": {"source": source, "unknown": "error", "columns": None, "duplicates": "drop", "whitespace": "error"},
        "model": {"name": "kgt5"},
        "training": {**DOCUMENTED_TRAINING, **GIVEN_TRAINING, "optimizer": "adamw", "lr": 2e-3},
        "kgt5": {**DOCUMENTED_KGT5, "preset": "micro", "optimizer": "adamw", "lr": 2e-3,
                 "decoding": {**DOCUMENTED_KGT5["decoding"], "beam_size": 2}},
    }


def test_defaults_are_the_documented_ones():
    assert TRAINING_DEFAULTS == DOCUMENTED_TRAINING
    assert KGT5_DEFAULTS == DOCUMENTED_KGT5
    cfg = kgc.build_config("kgt5")
    assert {k: getattr(cfg.training, k) for k in DOCUMENTED_TRAINING} == DOCUMENTED_TRAINING
    resolved = resolve_config(cfg)
    assert resolved["training"] == {**DOCUMENTED_TRAINING, "optimizer": "adamw", "lr": 2e-3}
    assert set(resolved) == {"data", "model", "training", "kgt5"} and resolved["model"] == {"name": "kgt5"}


def test_api_train_kgt5_saves_the_documented_config(tmp_path):
    out = tmp_path / "api"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "KGE-only keys ignored" warning for a plain run
        run = kgc.train(tiny_kg(), model="kgt5", out=out, **GIVEN_TRAINING,
                        **{"kgt5.preset": "micro", "kgt5.decoding.beam_size": 2})
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved == expected_config(None)
    assert run.config == saved
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
    # it opens and resumes (to 2 epochs) with the same config, epochs aside
    assert isinstance(kgc.load_run(out), KGT5Run)
    kgc.train(out=out, resume=True, epochs=2)
    again = yaml.safe_load((out / "config.yaml").read_text())
    assert again == {**saved, "training": {**saved["training"], "epochs": 2}}
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_cli_train_kgt5_saves_the_documented_config(tmp_path):
    from click.testing import CliRunner

    from kgcomplete.cli import main

    ds = tiny_kg()
    data = tmp_path / "tiny"
    data.mkdir()
    for split, triples in ds.splits.items():
        rows = [f"{ds.entities.labels[h]}\t{ds.relations.labels[r]}\t{ds.entities.labels[t]}" for h, r, t in triples]
        (data / f"{split}.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cli"
    res = CliRunner().invoke(main.cli, [
        "train", "--model", "kgt5", "--dataset", str(data), "--out", str(out), "--epochs", "1",
        "--batch-size", "16", "--threads", "1", "--set", "kgt5.preset=micro", "--set", "kgt5.decoding.beam_size=2",
        "--no-progress"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((out / "config.yaml").read_text()) == expected_config(str(data))


def test_cli_rejects_unknown_kgt5_keys(tmp_path):
    from click.testing import CliRunner

    from kgcomplete.cli import main

    for bad, words in (("kgt5.presett=micro", ("'presett'", "'kgt5'", "preset")),
                       ("kgt5.decoding.beam=2", ("'beam'", "'kgt5.decoding'", "beam_size")),
                       ("kgt6.preset=micro", ("'kgt6'", "kgt5"))):
        res = CliRunner().invoke(main.cli, ["train", "--model", "kgt5", "--dataset", "nations", "--out",
                                            str(tmp_path / "x"), "--set", bad])
        assert res.exit_code != 0
        line = res.output.strip().splitlines()[-1]
        assert line.startswith("Error: unknown") and all(w in line for w in words), res.output
    assert not (tmp_path / "x").exists()


def test_resolve_config_checks_keys_and_drops_kge_ones():
    with pytest.raises(ConfigError, match="did you mean preset"):
        resolve_config({"kgt5": {"presett": "micro"}})
    with pytest.raises(ConfigError, match="did you mean eval_every"):
        resolve_config({"training": {"eval_evry": 3}})
    # KGE defaults (as old KGT5 config.yaml files hold them) are dropped quietly ...
    old = kgc.Config().to_dict()
    old["model"]["name"] = "kgt5"
    old["training"].update(optimizer="adamw", lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cfg = resolve_config(old)
    assert set(cfg["training"]) == {*DOCUMENTED_TRAINING, "optimizer", "lr"} and "evaluation" not in cfg
    assert cfg["model"] == {"name": "kgt5"} and (cfg["kgt5"]["optimizer"], cfg["kgt5"]["lr"]) == ("adamw", 0.01)
    # ... values that differ from them are dropped with a warning naming them
    with pytest.warns(UserWarning, match=r"training.regularizer, model.dim, evaluation"):
        cfg = resolve_config({"training": {"regularizer": "l2"}, "model": {"dim": 64},
                              "evaluation": {"filtered": False}})
    assert "regularizer" not in cfg["training"] and "dim" not in cfg["model"]


def test_training_lr_and_optimizer_reach_kgt5():
    cfg = kgc.build_config("kgt5", None, {"training.lr": 0.01})  # kgc train --model kgt5 --lr 0.01
    assert resolve_config(cfg)["kgt5"]["lr"] == 0.01
    cfg = kgc.build_config("kgt5", None, {"training.optimizer": "adafactor"})
    r = resolve_config(cfg)
    assert (r["kgt5"]["optimizer"], r["kgt5"]["lr"]) == ("adafactor", None)
    assert (r["training"]["optimizer"], r["training"]["lr"]) == ("adafactor", None)
    cfg = kgc.build_config("kgt5", None, {"training.lr": 0.01, "kgt5.lr": 0.05})  # the kgt5 key wins
    assert resolve_config(cfg)["kgt5"]["lr"] == 0.05


def test_the_time_budget_of_every_model_kind_reaches_kgt5():
    """--time-budget 30m (training.time_budget) is KGT5's wall-clock budget too; the same budget given
    twice is fine, two different ones are an error naming both keys."""
    cfg = kgc.build_config("kgt5", None, {"training.time_budget": "1h30m"})
    assert resolve_config(cfg)["kgt5"]["time_budget_s"] == 5400.0
    cfg = kgc.build_config("kgt5", None, {"training.time_budget": "90s", "kgt5.time_budget_s": 90})
    assert resolve_config(cfg)["kgt5"]["time_budget_s"] == 90.0
    with pytest.raises(ValueError, match=r"training.time_budget='90s' \(90 s\) and kgt5.time_budget_s=60 disagree"):
        resolve_config(kgc.build_config("kgt5", None, {"training.time_budget": "90s", "kgt5.time_budget_s": 60}))
    with pytest.raises(ValueError, match="training.time_budget 'soon'"):
        resolve_config({"training": {"time_budget": "soon"}})
    assert resolve_config({})["kgt5"]["time_budget_s"] is None


def test_cli_time_budget_stops_kgt5(tmp_path):
    from click.testing import CliRunner

    from kgcomplete.cli import main

    out = tmp_path / "r"
    res = CliRunner().invoke(main.cli, [
        "train", "--model", "kgt5", "--dataset", "nations", "--out", str(out), "--epochs", "50", "--batch-size", "64",
        "--threads", "1", "--time-budget", "1s", "--set", "kgt5.preset=micro", "--set", "kgt5.decoding.beam_size=2",
        "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] < 50 and "time budget of 1 s" in metrics["stopped"]
    assert yaml.safe_load((out / "config.yaml").read_text())["kgt5"]["time_budget_s"] == 1.0


def test_a_kge_optimizer_is_refused_for_kgt5_through_set_too(tmp_path):
    """The API keeps ignoring a KGE optimizer in a KGT5 config (a full Config carries training's
    default, adagrad); on the command line, --set training.optimizer=adagrad is refused like --optimizer."""
    from click.testing import CliRunner

    from kgcomplete.cli.main import cli

    res = CliRunner().invoke(cli, ["train", "-m", "kgt5", "--set", "training.optimizer=adagrad", "--out",
                                   str(tmp_path / "r")])
    assert res.exit_code != 0 and "--optimizer adagrad is a KGE optimizer" in res.output
    assert not (tmp_path / "r").exists()


def test_kgt5_refuses_a_cadence_inside_epochs():
    from kgcomplete.seq2seq.run import resolve_config

    for value in (0.25, "10m"):
        with pytest.raises(ValueError, match=r"training.eval_every=.*KGT5 validates between epochs"):
            resolve_config({"model": {"name": "kgt5"}, "training": {"eval_every": value}})
    assert resolve_config({"model": {"name": "kgt5"}, "training": {"eval_every": 2}})["training"]["eval_every"] == 2


def test_mixed_precision_no_as_yaml_reads_it():
    """`--set kgt5.mixed_precision=no` (YAML reads an unquoted no as false) means "no"; an unknown value
    is one line naming the key, before anything trains (accelerate's own error came mid-run)."""
    from kgcomplete.config import parse_override

    key, value = parse_override("kgt5.mixed_precision=no")
    assert value is False
    assert resolve_config(kgc.build_config("kgt5", None, {key: value}))["kgt5"]["mixed_precision"] == "no"
    assert resolve_config({"kgt5": {"mixed_precision": "BF16"}})["kgt5"]["mixed_precision"] == "bf16"
    with pytest.raises(ValueError, match=r"kgt5.mixed_precision='fp8': expected auto \| no \| bf16 \| fp16"):
        resolve_config({"kgt5": {"mixed_precision": "fp8"}})


def test_auto_mixed_precision_follows_the_measured_cpu_and_a_resume_keeps_its_choice(monkeypatch):
    """On a CPU, auto is bf16 where bfloat16 products are measured >= 1.5x as fast as float32 ones (the
    KGE runs' rule), else no; a resumed run takes the mode its log.jsonl records, whatever it measures now."""
    import torch

    from kgcomplete.seq2seq.train import resolve_mixed_precision
    from kgcomplete.training import autoconfig

    from kgcomplete.seq2seq import train

    cpu = torch.device("cpu")
    monkeypatch.setattr(train, "_cpu_bf16_is_fast", train._cpu_bf16_is_fast.__wrapped__)  # measured each call here
    speeds = {torch.float32: 100.0, torch.bfloat16: 400.0}
    monkeypatch.setattr(autoconfig, "measured_gflops", lambda device, dtype=torch.float32: speeds[dtype])
    assert resolve_mixed_precision("auto", cpu) == "bf16"
    speeds[torch.bfloat16] = 120.0  # emulated or slow bf16
    assert resolve_mixed_precision("auto", cpu) == "no"
    assert resolve_mixed_precision("auto", cpu, [{"epoch": 1, "mixed_precision": "bf16"}]) == "bf16"
    assert resolve_mixed_precision("no", cpu, [{"epoch": 1, "mixed_precision": "bf16"}]) == "no"  # a setting wins
    assert resolve_mixed_precision("bf16", cpu) == "bf16"


def test_one_process_trains_runs_of_different_precisions(tmp_path):
    """accelerate keeps one state per process and refused a second mixed precision in it (a notebook
    training a bf16 run after a float32 one failed deep in accelerate)."""
    from kgcomplete.seq2seq.run import train_kgt5

    for mp in ("no", "bf16", "no"):
        cfg = {"training": {"epochs": 1, "batch_size": 16, "eval_every": 0, "threads": 1, "progress": False},
               "kgt5": {"preset": "micro", "mixed_precision": mp}}
        train_kgt5(tiny_kg(), tmp_path / f"r-{mp}", cfg, evaluate_test=False)
        log = json.loads((tmp_path / f"r-{mp}" / "log.jsonl").read_text().splitlines()[0])
        assert log["mixed_precision"] == mp
