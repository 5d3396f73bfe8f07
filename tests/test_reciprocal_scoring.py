"""``model.reciprocal_scoring``: ``auto`` chooses the weight of the other reading of each triple on the
validation split when training ends, records it in metrics.json and ranks with it wherever the run is
opened (a resumed run chooses again); a set weight is used as set. (The scores themselves:
test_reference_models.py.)"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

import kgcomplete as kgc
from kgcomplete.cli.main import cli
from kgcomplete.config import build_config, reciprocal_scoring_weight, validate
from kgcomplete.runs.kge import RECIPROCAL_SCORING_GRID, KGERun

SMALL = dict(model="complex", dim=16, epochs=6, eval_every=2, batch_size=256, seed=0, progress=False, threads=1)


@pytest.fixture(scope="module")
def umls():
    return kgc.load_dataset("umls")


def _metrics(run) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_auto_chooses_the_weight_with_the_best_validation_mrr_and_the_run_keeps_it(tmp_path, umls):
    out = tmp_path / "run"
    kgc.train(umls, out=out, **SMALL)
    chosen = _metrics(out)["reciprocal_scoring"]
    by_weight = chosen["valid_mrr"]
    assert list(by_weight) == [f"{w:g}" for w in RECIPROCAL_SCORING_GRID]
    assert by_weight[f"{chosen['chosen']:g}"] == max(by_weight.values())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert by_weight["0"] == pytest.approx(max(r["valid_mrr"] for r in log if "valid_mrr" in r))  # the best validation
    assert len(set(by_weight.values())) == 3  # the weight changes the ranking
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["reciprocal_scoring"] == "auto"
    run = KGERun.load(out)  # opened again, the run ranks with the chosen weight
    assert run.model.reciprocal_scoring == chosen["chosen"]
    assert run.evaluate("valid")["mrr"] == pytest.approx(max(by_weight.values()), abs=1e-9)
    assert _metrics(out)["valid"]["mrr"] == pytest.approx(max(by_weight.values()), abs=1e-9)


def test_a_resumed_run_chooses_again_for_the_weights_it_ends_with(tmp_path, umls):
    out = tmp_path / "run"
    kgc.train(umls, out=out, **dict(SMALL, epochs=2))
    first = _metrics(out)["reciprocal_scoring"]
    metrics = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").write_text(json.dumps({**metrics, "reciprocal_scoring": {"chosen": 7.0}}))
    with pytest.raises(KeyboardInterrupt):  # stopped in the resumed session: no choice for its weights yet
        kgc.train(out=out, resume=True, epochs=6, on_epoch=_interrupt)
    assert KGERun.load(out).model.reciprocal_scoring == 0.0  # not the stale 7
    kgc.train(out=out, resume=True, epochs=6)
    again = _metrics(out)["reciprocal_scoring"]
    assert again["valid_mrr"]["0"] > first["valid_mrr"]["0"]  # chosen for the 6-epoch weights
    assert KGERun.load(out).model.reciprocal_scoring == again["chosen"]


def _interrupt(record):
    raise KeyboardInterrupt


def test_a_set_weight_is_used_and_not_chosen_again(tmp_path, umls):
    out = tmp_path / "run"
    kgc.train(umls, out=out, **SMALL, **{"model.reciprocal_scoring": 0.5})
    assert "reciprocal_scoring" not in _metrics(out)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["reciprocal_scoring"] == 0.5
    run = KGERun.load(out)
    assert run.model.reciprocal_scoring == 0.5
    # the validations during training ranked with it too: the best logged one is the run's valid MRR
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert run.evaluate("valid")["mrr"] == pytest.approx(max(r["valid_mrr"] for r in log if "valid_mrr" in r))


@pytest.mark.parametrize("value", ["often", -0.5, True, float("nan")])
def test_a_bad_weight_is_a_one_line_error_naming_the_key(value):
    with pytest.raises(ValueError, match=r"model.reciprocal_scoring(=.*expected auto or a number >= 0| must be a finite)"):
        validate(build_config("complex", None, {"model.reciprocal_scoring": value}))


def test_the_cli_refuses_a_bad_weight_before_training(tmp_path):
    res = CliRunner().invoke(cli, ["train", "--dataset", "nations", "--out", str(tmp_path / "run"),
                                   "--set", "model.reciprocal_scoring=often"])
    assert res.exit_code != 0 and not (tmp_path / "run" / "log.jsonl").exists()
    assert "model.reciprocal_scoring='often': expected auto or a number >= 0" in res.output


def test_auto_and_numbers_parse():
    assert reciprocal_scoring_weight("auto") is None and reciprocal_scoring_weight(" AUTO ") is None
    assert reciprocal_scoring_weight(0) == 0.0 and reciprocal_scoring_weight("0.25") == 0.25
