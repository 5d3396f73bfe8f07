"""The configuration: typed core and feature sections, checked keys (files, --set, Python overrides),
free-form dicts, saving/loading, and the old run folders' config files."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kgcomplete.config import (Config, ConfigError, apply_override, build_config, feature_sections,
                               register_section, section_names)

OLD_RUNS = Path(__file__).parent / "fixtures" / "runs-5c97b15"


def _error(fn) -> str:
    with pytest.raises(ConfigError) as e:
        fn()
    text = str(e.value)
    assert "\n" not in text and not text.startswith(("'", '"'))
    return text


def test_feature_sections_are_registered_and_typed():
    assert {"kgt5", "distributed"} <= set(feature_sections())
    assert section_names()[:4] == ["data", "model", "training", "evaluation"]
    cfg = build_config("complex", None, {"distributed.workers": "2", "kgt5.decoding.beam_size": 3.0})
    assert cfg.distributed.workers == 2 and cfg.section("distributed") is cfg.distributed
    assert cfg.kgt5.decoding.beam_size == 3 and isinstance(cfg.kgt5.decoding.beam_size, int)
    with pytest.raises(ValueError):
        register_section("training", type("X", (), {}))


def test_unknown_keys_are_rejected_with_close_matches(tmp_path):
    assert _error(lambda: build_config("complex", None, {"training.lrr": 1})) == (
        "unknown key 'lrr' in config section 'training' (training.lrr); did you mean lr?")
    assert _error(lambda: build_config("complex", None, {"trainig.lr": 1})) == (
        "unknown config section 'trainig'; did you mean training, tracking?")
    msg = _error(lambda: build_config("complex", None, {"distributed.worker": 2}))
    assert "'worker'" in msg and "'distributed'" in msg and "workers" in msg
    msg = _error(lambda: build_config("complex", None, {"kgt5.decoding.beam": 2}))
    assert "'kgt5.decoding'" in msg and "beam_size" in msg
    msg = _error(lambda: build_config("complex", None, {"bogus.key": 2}))
    assert "known sections: data, model, training, evaluation" in msg
    f = tmp_path / "my.yaml"
    f.write_text("trainig:\n  lr: 0.1\n")
    assert _error(lambda: build_config(None, f)) == f"{f}: unknown config section 'trainig'; did you mean training, tracking?"
    f.write_text("model:\n  name: distmult\n  dimm: 8\n")
    assert "unknown key 'dimm' in config section 'model'" in _error(lambda: Config.load(f))
    f.write_text("distributed:\n  exchnage: scores\n")
    assert "did you mean exchange?" in _error(lambda: build_config(None, f))
    with pytest.raises(TypeError, match="training.epochs must be an integer"):
        build_config("complex", None, {"training.epochs": 2.5})


def test_python_overrides_are_checked():
    import kgcomplete as kgc

    with pytest.raises(ConfigError, match=r"unknown key 'lrr' in config section 'training'"):
        kgc.train("nations", model="distmult", **{"training.lrr": 0.1})
    with pytest.raises(ConfigError, match="did you mean training"):
        kgc.train("nations", model="distmult", trainig__lr=0.1)
    with pytest.raises(TypeError, match="did you mean epochs"):
        kgc.train("nations", model="distmult", epochz=3)


def test_cli_set_unknown_key_is_one_line(tmp_path):
    from click.testing import CliRunner

    from kgcomplete.cli import main

    res = CliRunner().invoke(main.cli, ["train", "-m", "distmult", "-d", "nations", "--out", str(tmp_path / "r"),
                                        "--set", "trainig.lr=0.1"])
    assert res.exit_code == 1
    assert res.output.strip() == "Error: unknown config section 'trainig'; did you mean training, tracking?"
    assert not (tmp_path / "r").exists()


def test_free_form_dicts_stay_free_form():
    cfg = build_config("complex", None, {"model.options.anything": 1, "kgt5.model.d_model": 64,
                                         "kgt5.model": {"num_heads": 2}})
    assert cfg.model.options == {"anything": 1}
    assert cfg.kgt5.model == {"d_model": 64, "num_heads": 2}


def test_to_dict_writes_feature_sections_that_differ_from_their_defaults(tmp_path):
    cfg = build_config("distmult")
    assert cfg.distributed.workers == 1  # reading a section does not make it part of the file
    assert set(cfg.to_dict()) == {"data", "model", "training", "evaluation"}
    apply_override(cfg, "distributed.workers", 2)
    d = cfg.to_dict()
    assert d["distributed"] == {**dataclasses.asdict(type(cfg.distributed)()), "workers": 2}
    cfg.save(tmp_path / "config.yaml")
    again = Config.load(tmp_path / "config.yaml")
    assert again == cfg and again.distributed.workers == 2


def test_extra_is_a_checked_view_of_the_feature_sections():
    cfg = Config()
    cfg.extra.setdefault("distributed", {})["workers"] = 3
    assert cfg.distributed.workers == 3
    assert (cfg.extra.get("distributed") or {}).get("window") == cfg.distributed.window
    assert cfg.extra.get("nothing") is None
    with pytest.raises(KeyError):
        cfg.extra["distributed"]["wrokers"] = 2


@pytest.mark.parametrize("kind", ["kge", "sharded"])
def test_old_run_configs_load(kind):
    raw = yaml.safe_load((OLD_RUNS / kind / "config.yaml").read_text())
    cfg = Config.load(OLD_RUNS / kind / "config.yaml")
    d = cfg.to_dict()
    for section in ("data", "model", "training", "evaluation"):
        assert {k: d[section][k] for k in raw[section]} == raw[section]
        # keys added since (e.g. data.columns) take their defaults, so an old run reads as before
        default = Config().to_dict()[section]
        assert {k: d[section][k] for k in set(d[section]) - set(raw[section])} == \
            {k: default[k] for k in set(d[section]) - set(raw[section])}
    if kind == "sharded":
        assert {k: d["distributed"][k] for k in raw["distributed"]} == raw["distributed"]
    else:
        assert "distributed" not in d


def test_config_needs_no_torch():
    code = ("import sys; from kgcomplete.config import build_config; c = build_config('kgt5', None, "
            "{'distributed.workers': 2}); c.to_dict(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
