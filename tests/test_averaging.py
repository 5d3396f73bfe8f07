"""Weight averaging (``training.average_epochs``, training/averaging.py): the average is the
exponential moving average its docs state, the model holds it only while it is judged, and a run
that averages validates, keeps and saves the average while training goes on from its own weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import kgcomplete as kgc
from kgcomplete.runs.kge import KGERun
from kgcomplete.training.averaging import WeightAverage


def _steps(model: nn.Module, n: int, seed: int = 0):
    """``n`` random updates of every floating tensor of ``model``, yielding the state after each."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        with torch.no_grad():
            for v in model.state_dict(keep_vars=True).values():
                if v.is_floating_point():
                    v.add_(torch.randn(v.shape, generator=g))
        yield {k: v.clone() for k, v in model.state_dict().items()}


def test_the_average_is_the_stated_moving_average_with_even_first_steps():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    avg = WeightAverage(model, window_steps=4)  # decay 0.75 once past the first steps
    ref: dict = {}
    for n, state in enumerate(_steps(model, 8), start=1):
        avg.update()
        decay = min(0.75, (n - 1) / n)  # step 1 takes the weights, steps 2-4 average evenly
        for k, v in state.items():
            if v.is_floating_point():
                ref[k] = v.clone() if k not in ref else decay * ref[k] + (1 - decay) * v
    got = avg.state_dict()
    assert sorted(got) == sorted(k for k, v in model.state_dict().items() if v.is_floating_point())
    assert "1.num_batches_tracked" not in got  # an integer buffer is not averaged
    for k in got:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-6)


def test_the_model_holds_the_average_only_inside_the_block():
    model = nn.Linear(3, 2)
    avg = WeightAverage(model, window_steps=3)
    for _ in _steps(model, 5):
        avg.update()
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with avg.applied():
        inside = {k: v.clone() for k, v in model.state_dict().items()}
    for k in own:
        assert torch.equal(inside[k], avg.state_dict()[k]) and not torch.equal(inside[k], own[k])
        assert torch.equal(model.state_dict()[k], own[k])


def test_a_tied_tensor_is_averaged_once():
    a = nn.Embedding(5, 3)
    model = nn.ModuleDict({"enc": a, "dec": a})  # one weight under two keys, like T5's shared embedding
    avg = WeightAverage(model, window_steps=2)
    assert len(avg.names) == 1
    next(_steps(model, 1))
    avg.update()
    with avg.applied():
        assert torch.equal(model["dec"].weight, avg.average[0])


def test_restored_average_continues_like_the_original():
    model = nn.Linear(2, 2)
    avg = WeightAverage(model, window_steps=5)
    for _ in _steps(model, 3):
        avg.update()
    copy = WeightAverage(model, window_steps=5)
    copy.load_state_dict(avg.state_dict(), avg.steps)
    for _ in _steps(model, 4, seed=1):
        avg.update()
        copy.update()
    for k, v in avg.state_dict().items():
        assert torch.equal(copy.state_dict()[k], v)
    with pytest.raises(KeyError, match="lacks 'bias'"):
        copy.load_state_dict({"weight": torch.zeros(2, 2)}, 1)


def test_a_run_that_averages_validates_and_saves_the_average(tmp_path):
    nations = kgc.load_dataset("nations")
    out = tmp_path / "run"
    kgc.train(nations, out=out, model="complex", dim=16, epochs=6, eval_every=1, batch_size=128, seed=1,
              progress=False, threads=1, evaluate_test=False, **{"training.average_epochs": 2})
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    best = max(log, key=lambda r: r["valid_mrr"])
    best_w, live_w = load_file(out / "best.safetensors"), load_file(out / "checkpoint.safetensors")
    state = load_file(out / "trainer_state.safetensors")
    averaged = {k.removeprefix("__average__/"): v for k, v in state.items() if k.startswith("__average__/")}
    assert sorted(averaged) == sorted(live_w)
    assert best["epoch"] == 6  # still improving: the best weights are the average at the last validation,
    assert all(torch.equal(best_w[k], averaged[k]) for k in best_w)  # not the trained ones
    assert not any(torch.equal(best_w[k], live_w[k]) for k in best_w)
    run = KGERun.load(out)  # the best weights score the validation MRR that was logged for them
    assert run.evaluate("valid")["mrr"] == pytest.approx(best["valid_mrr"], abs=1e-6)


def test_a_negative_window_is_refused():
    from kgcomplete.config import build_config

    with pytest.raises(ValueError, match="training.average_epochs"):
        build_config(overrides={"training.average_epochs": -1})


def test_averaging_is_refused_where_it_cannot_work(tmp_path):
    """The host-memory entity table (rows live outside the model between write-backs) and BESS
    workers (each holds one shard) refuse it with a one-line error."""
    from types import SimpleNamespace

    from kgcomplete.config import build_config
    from kgcomplete.distributed.sharding import Sharding
    from kgcomplete.distributed.trainer import BessTrainer
    from kgcomplete.models import from_config

    nations = kgc.load_dataset("nations")
    rows = {"training.mode": "negatives", "training.optimizer": "rowadagrad", "training.loss": "logsigmoid",
            "training.entity_table": "host", "training.average_epochs": 1}
    with pytest.raises(ValueError, match="training.average_epochs needs the entity table on the device"):
        kgc.train(nations, out=tmp_path / "host", model="transe", dim=8, epochs=1, progress=False, **rows)
    for key, value in (("training.average_epochs", 1), ("model.reciprocal_scoring", 0.25)):
        cfg = build_config("complex", None, {"model.dim": 8, "training.mode": "negatives", key: value})
        model = from_config(cfg, nations.num_entities, nations.num_relations)
        with pytest.raises(ValueError, match=f"{key}.* not supported with distributed workers"):
            BessTrainer(cfg, nations, Sharding.create(nations.num_entities, 1), model, SimpleNamespace(world=1))
