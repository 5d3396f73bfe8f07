"""KGT5 training, run folders, resume, load_run/CLI integration and the KGE ensemble."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import reference  # noqa: E402
from kgt5_fixtures import micro_config, one_thread, tiny_kg, trained_kgt5  # noqa: E402,F401

from kgcomplete.seq2seq.ensemble import EnsembleRun, combine, unseen_logp  # noqa: E402
from kgcomplete.seq2seq.run import KGT5Run, resolve_config, train_kgt5  # noqa: E402


def test_run_folder_contents(trained_kgt5):
    ds, out, run = trained_kgt5
    for f in ("config.yaml", "entities.tsv", "relations.tsv", "entity_texts.tsv", "tokenizer.json",
              "model_config.json", "model.safetensors", "checkpoint.safetensors", "checkpoint_state.pt",
              "log.jsonl", "metrics.json"):
        assert (out / f).exists(), f
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["name"] == "kgt5" and cfg["kgt5"]["preset"] == "micro"
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, 41))
    assert {"loss", "lr", "time_s", "examples_per_s"} <= set(log[0])
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert "valid_mrr" in log[19]
    m = json.loads((out / "metrics.json").read_text())
    assert {"mrr", "mr", "hits@1", "hits@3", "hits@10"} <= set(m["test"])
    assert m["train_time_s"] > 0 and m["throughput"] > 0
    assert m["mixed_precision"] in ("no", "bf16") and {e["mixed_precision"] for e in log} == {m["mixed_precision"]}


def test_model_learns_training_triples(trained_kgt5):
    ds, out, run = trained_kgt5
    m = run.evaluate("train", filtered=True)
    assert m["mrr"] > 0.8  # random ranking of 10 entities gives ~0.29


def test_load_predict_and_load_run(trained_kgt5):
    ds, out, run = trained_kgt5
    again = KGT5Run.load(out)  # dataset given in code: reloaded from the saved splits
    assert np.array_equal(again.dataset.train, ds.train)
    a, r = torch.as_tensor(ds.test[:, 0]), torch.as_tensor(ds.test[:, 1])
    assert torch.equal(again.score_queries(a, r), run.score_queries(a, r))
    h, rel, t = ds.train[0]
    rows = again.predict(head=str(ds.entities.labels[h]), relation=str(ds.relations.labels[rel]), k=3)
    assert 1 <= len(rows) <= 3 and rows[0]["rank"] == 1
    assert {"rank", "id", "entity", "name", "score", "known"} <= set(rows[0])
    assert all(rows[i]["score"] >= rows[i + 1]["score"] for i in range(len(rows) - 1))
    by_name = again.predict(tail="left | right", relation="next", k=2)  # names in (with the separator)
    assert by_name and by_name[0]["entity"] in ds.entities.labels
    excl = again.predict(head=str(ds.entities.labels[h]), relation=str(ds.relations.labels[rel]), k=5, exclude_known=True)
    assert all(row["known"] is None for row in excl)
    with pytest.raises(ValueError):
        again.predict(head="e0", tail="e1", relation="next")
    with pytest.raises(KeyError):
        again.predict(head="no such entity", relation="next")
    from kgcomplete import api

    assert isinstance(api.load_run(out), KGT5Run)


def test_resolve_config_ignores_kge_optimizer():
    cfg = resolve_config({"training": {"optimizer": "adagrad", "lr": 0.1, "epochs": None}, "kgt5": {}})
    assert cfg["kgt5"]["optimizer"] == "adamw" and cfg["kgt5"]["lr"] == 2e-3
    assert cfg["training"]["epochs"] == 100 and cfg["model"]["name"] == "kgt5"
    cfg = resolve_config({"training": {"optimizer": "adafactor", "lr": None}, "kgt5": {"preset": "small"}})
    assert cfg["kgt5"]["optimizer"] == "adafactor" and cfg["kgt5"]["lr"] is None


def test_adafactor_step(tmp_path):
    """`kgt5.optimizer: adafactor` with lr None: Adafactor's relative step, factored second moments."""
    ds = tiny_kg()
    cfg = micro_config(epochs=3, optimizer="adafactor", lr=None)
    train_kgt5(ds, tmp_path / "a", cfg)
    loss = [json.loads(x)["loss"] for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert len(loss) == 3 and loss[0] > loss[1] > loss[2]  # it learns (micro model: 5.0, 4.1, 3.4)
    opt = torch.load(tmp_path / "a" / "checkpoint_state.pt", weights_only=False)["optimizer"]
    group = opt["param_groups"][0]
    assert group["lr"] is None and group["relative_step"] and group["scale_parameter"]
    matrices = [s for s in opt["state"].values() if "exp_avg_sq_row" in s]
    assert matrices and all(s["step"] == 3 * 3 for s in opt["state"].values())  # 3 epochs x 3 steps
    assert all(s["exp_avg_sq_row"].dim() == 1 for s in matrices)  # factored: one row + one column vector


class _FakeKGE:
    """A KGE 'run': fixed random scores per (query, entity)."""

    def __init__(self, ds, seed=0):
        self.dataset = ds
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(ds.num_entities, ds.num_relations, 2, ds.num_entities, generator=g)

    def score_queries(self, anchor, r, candidates=None, head=False):
        s = self.table[anchor, r, int(head)]
        if candidates is not None:
            s = s[:, candidates] if candidates.dim() == 1 else s.gather(1, candidates)
        return s


def test_combine_rules():
    kge = torch.tensor([[3.0, 1.0, 2.0, 0.0]])
    t5 = torch.tensor([[float("-inf"), -0.1, float("-inf"), -2.0]])
    for rule in ("product", "paper"):
        assert combine(kge, t5, 0.0, rule).argsort(descending=True).tolist() == [[0, 2, 1, 3]]  # KGE alone
    assert combine(kge, t5, 1.0, "paper").argsort(descending=True).tolist() == [[1, 3, 0, 2]]  # candidates first
    # product: log p_KGE + w l; not generated -> the lowest generated log-prob - 1 = -3
    lse = torch.logsumexp(kge, 1).item()
    want = torch.tensor([[3.0, 1.0, 2.0, 0.0]]) - lse + 0.5 * torch.tensor([[-3.0, -0.1, -3.0, -2.0]])
    torch.testing.assert_close(combine(kge, t5, 0.5), want)
    assert combine(kge, t5, 10.0).argsort(descending=True).tolist() == [[1, 3, 0, 2]]  # KGT5 dominates
    none = torch.full((1, 4), float("-inf"))  # nothing generated: KGE's order at any weight
    assert combine(kge, none, 10.0).argsort(descending=True).tolist() == [[0, 2, 1, 3]]
    # a subset of columns keeps the query's floor when it is passed
    torch.testing.assert_close(combine(kge[:, :3], t5[:, :3], 0.5, unseen=unseen_logp(t5)),
                               want[:, :3] + torch.logsumexp(kge, 1) - torch.logsumexp(kge[:, :3], 1))
    with pytest.raises(ValueError, match="unknown ensemble rule"):
        combine(kge, t5, 0.5, "sum")


def _numpy_ensemble_mrr(run, kge, ds, split, w, rule="product"):
    """Filtered MRR of an ensemble rule computed in NumPy from the two score tables."""
    def score_fn(anchor, rel, head):
        a, r = torch.as_tensor(anchor), torch.as_tensor(rel)
        k = kge.score_queries(a, r, None, head).double().numpy()
        t5 = run.score_queries(a, r, None, head).double().numpy()  # -inf: not generated
        p = np.exp(k - k.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        gen = np.isfinite(t5)
        if rule == "paper":
            return p + w * np.where(gen, 1.0 + np.exp(np.minimum(np.where(gen, t5, 0.0), 0.0)), 0.0)
        low = np.where(gen, t5, np.inf).min(1, keepdims=True)
        low = np.where(np.isfinite(low), low - 1.0, 0.0)
        return np.log(p) + w * np.where(gen, t5, low)

    return reference.metrics(score_fn, getattr(ds, split), ds.all_triples(), ds.num_entities)["mrr"]


@pytest.mark.parametrize("rule", ["product", "paper"])
def test_ensemble_tuned_on_valid(trained_kgt5, rule):
    ds, out, run = trained_kgt5
    kge = _FakeKGE(ds)
    ens = EnsembleRun(run, kge, rule=rule)
    w = ens.weight
    brute = {g: _numpy_ensemble_mrr(run, kge, ds, "valid", g, rule) for g in ens.grid}
    assert set(ens.tuning) == set(brute)
    for g in brute:
        assert ens.tuning[g] == pytest.approx(brute[g], abs=1e-6), g
    best = max(brute.values())
    assert w == min(g for g in brute if brute[g] >= best - 1e-9)  # the smallest weight of the best MRR
    from kgcomplete.evaluation.evaluator import evaluate

    kge_valid = evaluate(kge, ds, "valid", per_relation=False)["mrr"]
    assert ens.tuning[0.0] == pytest.approx(kge_valid)  # w = 0 is the KGE model alone
    m = ens.evaluate("test")
    assert m["ensemble"]["weight"] == w and m["ensemble"]["rule"] == rule
    assert m["mrr"] == pytest.approx(_numpy_ensemble_mrr(run, kge, ds, "test", w, rule), abs=1e-6)
    rows = ens.predict(head="e0", relation="next", k=3)
    assert len(rows) == 3 and rows[0]["score"] >= rows[-1]["score"]
    small = KGT5Run.load(out)
    small._scorer = small.scorer(beam_size=3, widen_for_known=0)  # 3 of the 10 entities are KGT5 candidates
    fixed = EnsembleRun(small, kge, weight=1.0 if rule == "paper" else 1e3, rule=rule)
    s = fixed.score_queries(torch.tensor([0, 4]), torch.tensor([0, 1]))
    gen = torch.isfinite(small.score_queries(torch.tensor([0, 4]), torch.tensor([0, 1])))
    assert (gen.sum(1) == 3).all()
    for i in range(2):  # with w = 1 (paper; product: w large) KGT5's candidates outrank everything else
        assert s[i][gen[i]].min() > s[i][~gen[i]].max()


def test_run_decodes_each_split_once(trained_kgt5, monkeypatch):
    """A run's metrics, an evaluation asking for its own decoding and an ensemble reuse one decoding of
    each split (wn18rr: minutes per split); another decoding is decoded afresh."""
    import kgcomplete.seq2seq.decoding as dec

    ds, out, _ = trained_kgt5
    run = KGT5Run.load(out)
    calls = []
    real = dec.beam_search
    monkeypatch.setattr(dec, "beam_search", lambda m, ids, *a, **k: calls.append(len(ids)) or real(m, ids, *a, **k))
    first = run.evaluate("test")
    n = sum(calls)
    assert n > 0
    d = run.config_dict()["kgt5"]["decoding"]
    again = run.evaluate("test", method=d["method"], beam_size=d["beam_size"])
    assert sum(calls) == n and again["mrr"] == first["mrr"]
    EnsembleRun(run, _FakeKGE(ds), weight=0.5).evaluate("test")
    assert sum(calls) == n
    run.evaluate("test", beam_size=d["beam_size"] - 1)
    assert sum(calls) == 2 * n
    fresh = run.scorer(memo_queries=0)  # what a decoding-time benchmark times: no decoding kept
    t = ds.splits["test"][:4]
    for _ in range(2):
        fresh.topk(torch.as_tensor(t[:, 0]), torch.as_tensor(t[:, 1]))
    assert sum(calls) == 2 * n + 2 * len(t)


def test_cli_train_kgt5(tmp_path):
    from kgcomplete.cli import main
    from click.testing import CliRunner

    res = CliRunner().invoke(main.cli, [
        "train", "--model", "kgt5", "--dataset", "nations", "--out", str(tmp_path / "n"), "--epochs", "1",
        "--set", "kgt5.preset=micro", "--set", "training.batch_size=512", "--set", "kgt5.decoding.beam_size=2",
        "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "n" / "metrics.json").exists()
    res = CliRunner().invoke(main.cli, ["evaluate", str(tmp_path / "n"), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output[res.output.index("{"):])
    run = KGT5Run.load(tmp_path / "n")
    ds = run.dataset
    ref = reference.metrics(reference.model_score_fn(run), ds.test, ds.all_triples(), ds.num_entities)
    for k in ("mrr", "hits@1", "hits@10"):
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k
    reference.assert_user_error(CliRunner().invoke(main.cli, ["export", str(tmp_path / "n")]), "no embedding tables")
    # --ensemble-rule reaches the ensemble: each rule's metrics equal the API's EnsembleRun under that rule
    from kgcomplete.api import load_run
    from kgcomplete.seq2seq.ensemble import RULES

    res = CliRunner().invoke(main.cli, ["train", "--model", "distmult", "--dataset", "nations", "--out",
                                        str(tmp_path / "k"), "--epochs", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    for rule in RULES:
        res = CliRunner().invoke(main.cli, ["evaluate", str(tmp_path / "n"), "--ensemble", str(tmp_path / "k"),
                                            "--ensemble-rule", rule, "--json"])
        assert res.exit_code == 0, res.output
        got = json.loads(res.output[res.output.index("{"):])
        want = EnsembleRun(KGT5Run.load(tmp_path / "n"), load_run(tmp_path / "k"), rule=rule).evaluate("test")
        assert got["ensemble"]["rule"] == rule and got["ensemble"]["weight"] == want["ensemble"]["weight"]
        assert got["mrr"] == pytest.approx(want["mrr"], abs=1e-9), rule
    res = CliRunner().invoke(main.cli, ["evaluate", str(tmp_path / "n"), "--ensemble", str(tmp_path / "k"),
                                        "--ensemble-rule", "mean"])
    assert res.exit_code != 0 and "mean" in res.output


def _t5_tokenizer_folder(folder, corpus: list[str]):
    """A T5 tokenizer folder as ``transformers`` writes it (tokenizer.json + tokenizer_config.json),
    from a SentencePiece Unigram model trained on ``corpus`` (T5 ids: pad 0, eos 1, unk 2)."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text("\n".join(corpus * 20))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "spiece"), vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    out = folder / "t5-tokenizer"
    tok.save_pretrained(str(out))
    return out, len(vocab)


def test_training_with_a_local_t5_tokenizer_folder(tmp_path):
    """`kgt5.tokenizer: FOLDER` loads a transformers T5 tokenizer folder, trains with its ids, and
    the run folder reopens with the same tokenizer."""
    from kgcomplete.seq2seq.tokenizer import KGTokenizer
    from kgcomplete.seq2seq.verbalize import EntityTexts

    ds = tiny_kg()
    corpus = list(EntityTexts.from_dataset(ds).corpus()) + ["predict tail: predict head: | # 0123456789"]
    folder, size = _t5_tokenizer_folder(tmp_path, corpus)
    tok = KGTokenizer.load(folder)
    assert tok.vocab_size == size
    ids = tok.encode(["entity 7 | next"])
    assert ids[0, -1].item() == 1 and (ids[0, :-1] > 2).all()  # </s> last, no <unk>/<pad> inside
    assert tok.decode(ids) == ["entity 7 | next"]
    torch.manual_seed(0)
    run = train_kgt5(ds, tmp_path / "run", micro_config(epochs=3, tokenizer=str(folder)))
    assert run.tokenizer.vocab_size == size
    again = KGT5Run.load(tmp_path / "run")
    assert again.tokenizer.encode(["entity 7 | next"]).tolist() == ids.tolist()
    assert isinstance(again.texts, EntityTexts)

    # a vocabulary that cannot tell the entities apart fails with a message naming them
    poor, _ = _t5_tokenizer_folder(tmp_path / "poor", ["a b c d e f g h i j k"])
    with pytest.raises(ValueError, match="share a token sequence"):
        train_kgt5(ds, tmp_path / "run-poor", micro_config(epochs=1, tokenizer=str(poor)))


def test_evaluate_test_false_skips_the_final_ranking(tmp_path):
    import kgcomplete as kgc

    kgc.train(tiny_kg(), model="kgt5", out=tmp_path / "r", evaluate_test=False,
              **{"training.epochs": 1, "kgt5.preset": "micro", "progress": False})
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "test" not in m and "valid" not in m and m["epochs"] == 1


def test_linear_lr_decay_anneals_to_zero_at_the_last_epoch(tmp_path):
    """kgt5.lr_decay: linear (AdamW): the lr falls linearly with the steps done of the planned epochs and is
    0 after the last one (each log record shows the lr of the next step); other values are refused."""
    cfg = {"training": {"epochs": 4, "batch_size": 16, "eval_every": 0, "threads": 1, "progress": False},
           "kgt5": {"preset": "micro", "optimizer": "adamw", "lr": 0.01, "warmup_steps": 1, "lr_decay": "linear"}}
    train_kgt5(tiny_kg(), tmp_path / "r", cfg, evaluate_test=False)
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.0075, 0.005, 0.0025, 0.0], abs=1e-12)
    with pytest.raises(ValueError, match=r"kgt5.lr_decay='cosine': expected none \| linear"):
        resolve_config({"kgt5": {"lr_decay": "cosine"}})
