"""Published KGT5 checkpoints: the memory-mapped trie and string table, `kgc kgt5 import` of Hugging Face
folders built here (a tiny T5 with a SentencePiece tokenizer and with a `tokenizers` one), the sparse
ranking against the shared evaluator, and a nations run exported and imported again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("transformers")

from kgt5_fixtures import one_thread  # noqa: E402,F401
from test_kgt5_decoding import setup  # noqa: E402,F401  (tiny_kg, a unigram tokenizer, a micro T5)

from kgcomplete.cli.main import cli  # noqa: E402
from kgcomplete.evaluation.evaluator import evaluate  # noqa: E402
from kgcomplete.runs.protocol import KnownTriples, top_k_predictions  # noqa: E402
from kgcomplete.seq2seq.decoding import KGT5Scorer, evaluate_generated, generated_top_k  # noqa: E402
from kgcomplete.seq2seq.strings import StringTable  # noqa: E402
from kgcomplete.seq2seq.tokenizer import EOS_ID, pad_lists  # noqa: E402
from kgcomplete.seq2seq.trie import EntityTrie, RaggedTokens  # noqa: E402

# ------------------------------------------------------------------ a small graph with text
#: entity strings sharing words (multi-token prefixes in the trie); the last two are characters no
#: tokenizer here knows: both become <unk> and share one token sequence
NAMES = ["saint john", "saint paul", "saint john city", "john", "paul", "river north", "river south", "north city",
         "south city", "mount alpha", "mount beta", "alpha", "beta", "gamma river", "delta", "city of delta",
         "\u5317", "\u4eac"]
RELATIONS = ["located in", "next to", "named after"]


def _graph(seed: int = 0):
    rng = np.random.default_rng(seed)
    E, R = len(NAMES) - 2, len(RELATIONS)  # the two <unk> entities only appear in the strings
    h, r, t = rng.integers(0, E, 150), rng.integers(0, R, 150), rng.integers(0, E, 150)
    triples = np.unique(np.stack([h, r, t], 1), axis=0)
    triples = triples[rng.permutation(len(triples))]
    return triples


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory):
    """A dataset folder (labels Q0.., relations P0..) whose every entity occurs in train."""
    d = tmp_path_factory.mktemp("graph")
    tr = _graph()
    n = len(tr)
    splits = {"train": tr[: n - 20], "valid": tr[n - 20: n - 10], "test": tr[n - 10:]}
    ents = np.array([f"Q{i}" for i in range(len(NAMES))])
    extra = np.array([[len(NAMES) - 2, 0, 0], [len(NAMES) - 1, 1, 1]])  # the <unk> entities, in train
    splits["train"] = np.concatenate([splits["train"], extra])
    for name, t in splits.items():
        (d / f"{name}.txt").write_text("".join(f"Q{a}\tP{b}\tQ{c}\n" for a, b, c in t))
    # labeled strings in shuffled order; relations one a line in id order (P0 < P1 < P2)
    order = np.random.default_rng(1).permutation(len(NAMES))
    (d / "entity_strings.tsv").write_text("".join(f"{ents[i]}\t{NAMES[i]}\n" for i in order))
    (d / "relation_strings.txt").write_text("".join(f"{r}\n" for r in RELATIONS))
    return d


def _tiny_t5(vocab_size: int, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                   num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0,
                   pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(cfg).eval()


def _corpus() -> list[str]:
    return [*(f"predict tail: {n} | {r}" for n in NAMES[:-2] for r in RELATIONS),
            *(f"predict head: {n} | {r}" for n in NAMES[:-2] for r in RELATIONS)]


@pytest.fixture(scope="module")
def sentencepiece_folder(tmp_path_factory):
    """spiece.model trained here (T5 ids: pad 0, </s> 1, <unk> 2), config.json, pytorch_model.bin."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("hf-spm")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus()), model_prefix=str(d / "spiece"), vocab_size=48,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="unigram",
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    (d / "spiece.vocab").unlink()
    from transformers import AutoTokenizer

    model = _tiny_t5(1)  # config.json first: AutoTokenizer reads model_type t5 from it
    model.config.to_json_file(str(d / "config.json"))
    vocab = len(AutoTokenizer.from_pretrained(str(d), local_files_only=True))  # + T5's 100 sentinel tokens
    model = _tiny_t5(vocab)
    model.config.to_json_file(str(d / "config.json"))
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    return d


@pytest.fixture(scope="module")
def tokenizers_folder(tmp_path_factory):
    """A `tokenizers` BPE saved as a PreTrainedTokenizerFast (tokenizer.json appending </s>), model.safetensors."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from kgcomplete.seq2seq.tokenizer import KGTokenizer

    d = tmp_path_factory.mktemp("hf-tok")
    raw = KGTokenizer.train(_corpus(), vocab_size=80).tok
    raw.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS_ID)])
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(str(d))
    _tiny_t5(raw.get_vocab_size(), seed=3).save_pretrained(str(d))
    return d


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res


def _import(hf, out, *extra):
    res = _invoke("kgt5", "import", hf, "--out", out, *extra)
    assert res.exit_code == 0, res.output
    return res


def _teacher_forced(folder: Path, inputs: list[str], targets: list[str]) -> np.ndarray:
    """Sequence log-probs of ``targets`` given ``inputs`` with transformers' own tokenizer and model
    (``tokenizer(text)`` appends </s>), independent of this library's encoder and decoder."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = T5ForConditionalGeneration.from_pretrained(str(folder), local_files_only=True).eval()
    out = []
    for x, y in zip(inputs, targets):
        xi = torch.tensor([tok(x)["input_ids"]])
        yi = torch.tensor([tok(y)["input_ids"]])
        assert yi[0, -1] == EOS_ID
        with torch.no_grad():
            logits = model(input_ids=xi, labels=yi).logits
        out.append(float(torch.log_softmax(logits.float(), -1)[0].gather(1, yi[0, :, None]).sum()))
    return np.array(out)


# ------------------------------------------------------------------ the trie and the string table
def _sequences(seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    seqs = [tuple(rng.integers(3, 12, size=rng.integers(1, 6))) for _ in range(300)]
    seqs = list(dict.fromkeys(seqs))
    seqs += [seqs[0][:1], seqs[1][:2]]  # entities that are prefixes of others
    return [list(s) for s in dict.fromkeys(seqs)]


def _brute_force_children(seqs) -> dict[tuple, set]:
    out: dict[tuple, set] = {}
    for s in seqs:
        full = [*s, EOS_ID]
        for d in range(len(full)):
            out.setdefault(tuple(full[:d]), set()).add(full[d])
    return out


def test_mapped_trie_gives_the_same_next_tokens_as_the_in_memory_trie_and_brute_force(tmp_path):
    seqs = _sequences()
    padded = pad_lists(seqs, eos=True)
    mem = EntityTrie(padded, 16)  # the trie every trained run builds
    ragged = RaggedTokens.from_padded(padded)
    ragged.save(tmp_path)
    built = EntityTrie.from_ragged(RaggedTokens.open(tmp_path), 16)
    built.save(tmp_path)
    mapped = EntityTrie.open(tmp_path)
    assert isinstance(np.load(tmp_path / "token.npy", mmap_mode="r"), np.memmap)
    assert mapped.num_nodes == mem.num_nodes and mapped.depth == mem.depth == 6
    children = _brute_force_children(seqs)
    assert mem.num_nodes == len(children) + len(seqs)  # one node per distinct prefix, plus one leaf per entity
    # walk every prefix in all tries at once: allowed next tokens and the mask
    prefixes = sorted(children, key=len)
    for trie in (mem, mapped):
        nodes = torch.zeros(len(prefixes), dtype=torch.long)
        width = max(len(p) for p in prefixes)
        for d in range(width):
            toks = torch.tensor([p[d] if len(p) > d else 0 for p in prefixes])
            nodes = torch.where(torch.tensor([len(p) > d for p in prefixes]), trie.step(nodes, toks), nodes)
        assert (nodes >= 0).all()
        rows, toks = trie.allowed(nodes)
        got = [set() for _ in prefixes]
        for i, t in zip(rows.tolist(), toks.tolist()):
            got[i].add(t)
        assert got == [children[p] for p in prefixes]
        m = trie.mask(nodes)
        assert [set(torch.nonzero(row == 0)[:, 0].tolist()) for row in m] == got
        assert torch.equal(trie.lookup(padded), torch.arange(len(seqs)))
        # a token that is not a child, a dead node, a sequence that is no entity
        assert trie.step(torch.tensor([0, -1]), torch.tensor([13, 3])).tolist() == [-1, -1]
        assert trie.lookup(torch.tensor([[15, EOS_ID], [*seqs[0], 7, EOS_ID][:2]])).tolist()[0] == -1


def test_trie_duplicates_error_or_first_wins():
    seqs = pad_lists([[3, 4], [5], [3, 4], [5, 6], [5]], eos=True)
    with pytest.raises(ValueError, match="same token sequence"):
        EntityTrie(seqs, 8)
    trie = EntityTrie(seqs, 8, duplicates="first")
    assert trie.shadowed == 2
    assert trie.lookup(seqs).tolist() == [0, 1, 0, 3, 1]  # the smallest id holds the leaf
    with pytest.raises(ValueError, match="entity 1: its token sequence must hold </s> once"):
        EntityTrie.from_ragged(RaggedTokens(np.array([3, 1, 4, 5], np.int32), np.array([0, 2, 4])), 8)


def test_ragged_rows_equal_the_padded_table():
    padded = pad_lists(_sequences(1), eos=True)
    ragged = RaggedTokens.from_padded(padded)
    ids = torch.tensor([5, 0, 5, len(padded) - 1])
    rows = ragged[ids]
    assert torch.equal(rows, padded[ids][:, :rows.shape[1]]) and (padded[ids][:, rows.shape[1]:] == 0).all()


def test_string_table_get_and_lookup(tmp_path):
    strings = ["saint john", "", "\u5317\u4eac", "a|b c", "saint john", "x" * 500] + [f"entity {i}" for i in range(1000)]
    t = StringTable.from_strings(tmp_path, strings, block=7)
    ids = np.array([0, 1, 2, 3, 5, 1005, 17])
    assert t.get(ids).tolist() == [strings[i] for i in ids]
    assert t.get(ids.reshape(7, 1)).shape == (7, 1)
    # exact lookups; the first of two equal strings; absent, newline and near-miss queries give -1
    assert t.lookup(["saint john", "", "\u5317\u4eac", "x" * 500, "entity 999", "entity 9999", "a\nb", "saint  john"]).tolist() \
        == [0, 1, 2, 5, 1005, -1, -1, -1]
    assert t.lookup(np.array(strings[6:])).tolist() == list(range(6, len(strings)))
    assert StringTable.open(tmp_path).get([3]).tolist() == ["a|b c"]


# ------------------------------------------------------------------ sparse ranking = the shared evaluator
@pytest.mark.parametrize("method,width", [("beam", 3), ("beam", 10), ("sample", 6), ("greedy", 1)])
def test_generated_ranks_and_top_k_equal_the_dense_ones(setup, method, width):
    ds, _, _, enc, trie, model = setup
    sc = lambda: KGT5Scorer(model, enc, trie, method, beam_size=width, num_samples=width, seed=4)  # noqa: E731
    known = KnownTriples(ds)
    for filtered in (True, False):
        fi = known.index("all") if filtered else None
        dense = evaluate(sc(), ds, "test", filtered=filtered, filter_index=fi)
        sparse = evaluate_generated(sc(), ds, "test", filtered=filtered, filter_index=fi)
        for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
            assert sparse[key] == pytest.approx(dense[key], abs=1e-12)
            assert sparse["head"][key] == pytest.approx(dense["head"][key], abs=1e-12)
        assert sparse["per_relation"].keys() == dense["per_relation"].keys()
    a, r = np.array([0, 3, 7, 1]), np.array([0, 1, 2, 2])
    for head in (False, True):
        for exclude in (False, True):
            want = top_k_predictions(sc(), ds, known, a, r, head, 5, exclude)
            got = generated_top_k(sc(), ds, known, a, r, head, 5, exclude)
            assert [[x["id"] for x in q] for q in got] == [[x["id"] for x in q] for q in want]
            for g, w in zip(sum(got, []), sum(want, [])):
                assert g["score"] == pytest.approx(w["score"], abs=1e-6)
                assert g["probability"] == pytest.approx(w["probability"], rel=1e-6)
                assert g["known"] == w["known"]


# ------------------------------------------------------------------ importing checkpoints built here
def test_import_sentencepiece_checkpoint_predicts_real_entities(sentencepiece_folder, tmp_path):
    import kgcomplete

    ents = tmp_path / "entities.txt"
    ents.write_text("".join(f"{n}\n" for n in NAMES))
    rels = tmp_path / "relations.txt"
    rels.write_text("".join(f"{r}\n" for r in RELATIONS))
    out = tmp_path / "run"
    res = _import(sentencepiece_folder, out, "--entities", ents, "--relations", rels, "--beam-size", 8)
    assert "1 entities share their token sequence" in res.output  # the two <unk> names
    assert "pytorch_model.bin (hardlink)" in res.output
    assert "tokenizer.json written from the SentencePiece model" in res.output
    assert json.loads((out / "pretrained.json").read_text())["tokenizer_json_converted"] is True
    run = kgcomplete.load_run(out, device="cpu")
    assert type(run).__name__ == "PretrainedKGT5Run" and run.dataset.num_entities == len(NAMES)
    rows = run.predict(head="saint john", relation="located in", k=8)  # by entity string (labels are 0..n-1)
    assert len(rows) == 8 and len({r["entity"] for r in rows}) == 8
    assert all(r["name"] == NAMES[int(r["entity"])] for r in rows)  # real entities, named by their strings
    assert str(len(NAMES) - 1) not in {r["entity"] for r in rows}  # the shadowed <unk> twin is never generated
    # each score is the sequence log-prob under transformers' own tokenizer and model
    want = _teacher_forced(sentencepiece_folder, ["predict tail: saint john | located in"] * len(rows),
                           [r["name"] for r in rows])
    np.testing.assert_allclose([r["score"] for r in rows], want, atol=1e-4)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    head_rows = run.predict(tail="delta", relation="next to", k=3)
    want = _teacher_forced(sentencepiece_folder, ["predict head: delta | next to"] * 3, [r["name"] for r in head_rows])
    np.testing.assert_allclose([r["score"] for r in head_rows], want, atol=1e-4)
    # an entity outside the graph, given by its text: the template filled with it (here a known name: the same answers)
    new = run.predict_new("saint john", "located in", k=8)
    assert [(r["entity"], r["known"]) for r in new] == [(r["entity"], None) for r in rows]
    np.testing.assert_allclose([r["score"] for r in new], [r["score"] for r in rows], atol=1e-6)
    res = _invoke("predict", out, "--head-text", "mount gamma", "--relation", "next to", "-k", 2, "--json")
    assert res.exit_code == 0, res.output
    want = _teacher_forced(sentencepiece_folder, ["predict tail: mount gamma | next to"] * 2,
                           [r["name"] for r in json.loads(res.output)])
    np.testing.assert_allclose([r["score"] for r in json.loads(res.output)], want, atol=1e-4)
    with pytest.raises(ValueError, match="reads only its input template"):
        run.predict_new("mount gamma", "next to", facts=[("?", "next to", "delta")])
    res = _invoke("evaluate", out)
    assert res.exit_code != 0 and "no split 'test'" in res.output  # no dataset: the strings alone
    res = _invoke("qa", "ask", out, "what is near [saint john]?")
    assert res.exit_code != 0 and "is an imported checkpoint (kgc kgt5 import)" in res.output
    res = _invoke("predict", out, "--head", "saint john", "--relation", "located in", "-k", 3, "--json")
    assert res.exit_code == 0, res.output
    assert [r["entity"] for r in json.loads(res.output)] == [r["entity"] for r in rows[:3]]


def test_import_tokenizers_checkpoint_with_dataset_evaluates_like_the_shared_evaluator(tokenizers_folder, graph_dir, tmp_path):
    import kgcomplete
    from kgcomplete.data.registry import load_dataset

    out = tmp_path / "run"
    _import(tokenizers_folder, out, "--entities", graph_dir / "entity_strings.tsv", "--relations",
            graph_dir / "relation_strings.txt", "--dataset", graph_dir, "--beam-size", 6)
    res = _invoke("evaluate", out, "--json")
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["filtered"] and m["directions"] == ["head", "tail"] and m["count"] == 20
    run = kgcomplete.load_run(out, device="cpu")
    assert run.dataset.num_entities == len(NAMES) and (run.known.index("all").num_relations == len(RELATIONS))
    dense = evaluate(run.default_scorer, run.dataset, "test", filter_index=run.filter_index("all"))
    for key in ("mrr", "mr", "hits@1", "hits@10"):
        assert m[key] == pytest.approx(dense[key], abs=1e-12)
    # the same metrics from the dataset loaded in code and the run opened on it
    same = kgcomplete.load_run(out, dataset=load_dataset(graph_dir), device="cpu").evaluate("test")
    assert same["mrr"] == pytest.approx(m["mrr"])
    # names: the dataset labels resolve, the checkpoint's strings too; answers are entities of the list
    rows = run.predict(head="Q0", relation="P0", k=5)
    assert rows == run.predict(head="saint john", relation="located in", k=5)
    assert {r["entity"] for r in rows} <= {f"Q{i}" for i in range(len(NAMES))}
    want = _teacher_forced(tokenizers_folder, ["predict tail: saint john | located in"] * len(rows),
                           [NAMES[int(r["entity"][1:])] for r in rows])
    np.testing.assert_allclose([r["score"] for r in rows], want, atol=1e-4)


def test_tail_only_template(tokenizers_folder, graph_dir, tmp_path):
    import kgcomplete

    out = tmp_path / "run"
    _import(tokenizers_folder, out, "--entities", graph_dir / "entity_strings.tsv", "--relations",
            graph_dir / "relation_strings.txt", "--dataset", graph_dir, "--template", "wikikg90mv2", "--beam-size", 4)
    run = kgcomplete.load_run(out, device="cpu")
    assert run.encoder.input_text(np.array([0]), np.array([1]), False).tolist() == ["saint john| next to"]
    m = run.evaluate("test")
    assert m["directions"] == ["tail"] and m["count"] == 10 and "head" not in m
    assert m["mrr"] == pytest.approx(m["tail"]["mrr"])
    with pytest.raises(ValueError, match="tail queries .* only"):
        run.predict(tail="Q1", relation="P0")
    with pytest.raises(ValueError, match=r"reverse_weight=0.25: this run answers tail queries only"):
        run.evaluate("test", reverse_weight=0.25)  # no head queries: no other reading to add
    rows = run.predict(head="Q0", relation="P1", k=4)
    want = _teacher_forced(tokenizers_folder, ["saint john| next to"] * len(rows), [NAMES[int(r["entity"][1:])] for r in rows])
    np.testing.assert_allclose([r["score"] for r in rows], want, atol=1e-4)


def test_weights_are_linked_not_copied_and_survive_the_source_moving(tokenizers_folder, graph_dir, tmp_path):
    import kgcomplete

    src = tmp_path / "ckpt"
    shutil.copytree(tokenizers_folder, src)
    common = ("--entities", graph_dir / "entity_strings.tsv", "--relations", graph_dir / "relation_strings.txt")
    _import(src, tmp_path / "linked", *common)
    _import(src, tmp_path / "copied", *common, "--weights", "copy")
    w = "model.safetensors"
    assert (tmp_path / "linked/hf" / w).stat().st_ino == (src / w).stat().st_ino
    assert (tmp_path / "copied/hf" / w).stat().st_ino != (src / w).stat().st_ino
    before = kgcomplete.load_run(tmp_path / "linked", device="cpu").predict(head="john", relation="next to", k=3)
    src.rename(tmp_path / "moved")
    after = kgcomplete.load_run(tmp_path / "linked", device="cpu").predict(head="john", relation="next to", k=3)
    assert after == before
    # shards with their index: every shard is linked, the model is the same
    from transformers import T5ForConditionalGeneration

    shards = tmp_path / "sharded"
    shutil.copytree(tmp_path / "moved", shards)
    (shards / w).unlink()
    T5ForConditionalGeneration.from_pretrained(str(tmp_path / "moved")).save_pretrained(str(shards), max_shard_size="20KB")
    assert (shards / "model.safetensors.index.json").exists() and len(list(shards.glob("model-0*.safetensors"))) > 2
    res = _import(shards, tmp_path / "from-shards", *common)
    assert "model.safetensors.index.json (hardlink), model-00001-of-" in res.output
    assert kgcomplete.load_run(tmp_path / "from-shards", device="cpu").predict(head="john", relation="next to", k=3) == before
    # a weights file replaced by something else is refused with its name
    (tmp_path / "copied/hf" / w).write_bytes(b"0" * 10)
    res = _invoke("predict", tmp_path / "copied", "--head", "john", "--relation", "next to")
    assert res.exit_code != 0 and "model.safetensors: 10 bytes, imported with" in res.output


def test_import_refuses_bad_folders_with_one_line(sentencepiece_folder, graph_dir, tmp_path):
    common = ["--entities", graph_dir / "entity_strings.tsv", "--relations", graph_dir / "relation_strings.txt"]
    bad = tmp_path / "bad"
    bad.mkdir()
    res = _invoke("kgt5", "import", bad, "--out", tmp_path / "r1", *common)
    assert res.exit_code != 0 and "no config.json" in res.output
    shutil.copytree(sentencepiece_folder, tmp_path / "bert")
    cfg = json.loads((tmp_path / "bert/config.json").read_text())
    (tmp_path / "bert/config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    res = _invoke("kgt5", "import", tmp_path / "bert", "--out", tmp_path / "r2", *common)
    assert res.exit_code != 0 and "model_type 'bert'" in res.output
    short = tmp_path / "short.txt"
    short.write_text("saint john\npaul\n")
    res = _invoke("kgt5", "import", sentencepiece_folder, "--out", tmp_path / "r3", "--entities", short,
                  "--relations", graph_dir / "relation_strings.txt", "--dataset", graph_dir)
    assert res.exit_code != 0 and "2 entity strings (one a line, in id order) for the dataset's 18 entities" in res.output
    assert not (tmp_path / "r3").exists() and not list(tmp_path.glob(".r3.importing-*"))  # nothing left behind
    res = _invoke("kgt5", "import", sentencepiece_folder, "--out", tmp_path / "r4", *common, "--tail-template", "{entity}")
    assert res.exit_code != 0 and "needs {entity} and {relation}" in res.output


def test_served_answers_are_the_runs(sentencepiece_folder, tmp_path):
    fastapi = pytest.importorskip("fastapi", reason="serving extra not installed (pip install 'kgcomplete[serve]')")  # noqa: F841
    from fastapi.testclient import TestClient

    import kgcomplete
    from kgcomplete.serving.app import create_app

    ents = tmp_path / "e.tsv"
    ents.write_text("".join(f"E{i}\t{n}\n" for i, n in enumerate(NAMES)))
    rels = tmp_path / "r.tsv"
    rels.write_text("".join(f"R{i}\t{n}\n" for i, n in enumerate(RELATIONS)))
    _import(sentencepiece_folder, tmp_path / "run", "--entities", ents, "--relations", rels, "--beam-size", 5)
    run = kgcomplete.load_run(tmp_path / "run", device="cpu")
    with TestClient(create_app(run)) as client:
        r = client.get("/api/predict/tails", params={"head": "river north", "relation": "named after", "k": 5})
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
    want = run.predict(head="E5", relation="R2", k=5)
    assert [x["entity"] for x in got] == [x["entity"] for x in want] and len(want) == 5
    np.testing.assert_allclose([x["score"] for x in got], [x["score"] for x in want], atol=1e-6)


# ------------------------------------------------------------------ our own runs, exported and imported
def test_nations_run_exports_and_imports_with_the_same_predictions(tmp_path):
    import kgcomplete
    from transformers import AutoTokenizer

    run = kgcomplete.train("nations", model="kgt5", out=tmp_path / "run", **{
        "kgt5.preset": "micro", "kgt5.optimizer": "adamw", "kgt5.lr": 0.01, "kgt5.warmup_steps": 5,
        "kgt5.decoding.beam_size": 6, "training.epochs": 4, "training.eval_every": 4, "training.batch_size": 64,
        "training.threads": 1, "training.progress": False})
    res = _invoke("kgt5", "export", tmp_path / "run", tmp_path / "hf")
    assert res.exit_code == 0, res.output
    hf = tmp_path / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", "entity_strings.tsv", "kgt5.json"} <= {p.name for p in hf.iterdir()}
    # transformers opens it as it is: its tokenizer appends </s>, as the model was trained
    tok = AutoTokenizer.from_pretrained(str(hf), local_files_only=True)
    assert tok("brazil")["input_ids"] == run.tokenizer.encode(["brazil"])[0].tolist()
    _import(hf, tmp_path / "imported", "--dataset", "nations", "--beam-size", 6)  # strings and templates from kgt5.json
    imp = kgcomplete.load_run(tmp_path / "imported", device="cpu")
    assert type(imp).__name__ == "PretrainedKGT5Run"
    for q in ({"head": "brazil", "relation": "intergovorgs"}, {"tail": "usa", "relation": "embassy"},
              {"head": "china", "relation": "treaties", "exclude_known": True}):
        want, got = run.predict(k=6, **q), imp.predict(k=6, **q)
        assert [r["entity"] for r in got] == [r["entity"] for r in want] and len(want) == 6
        np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)
        assert [r["known"] for r in got] == [r["known"] for r in want]
    a, b = run.evaluate("test"), imp.evaluate("test")  # the trained run ranks densely, the import from the decoder
    for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
        assert b[key] == pytest.approx(a[key], abs=1e-9)
    res = _invoke("kgt5", "export", tmp_path / "imported", tmp_path / "again")
    assert res.exit_code != 0 and "export takes a run trained with kgc train --model kgt5" in res.output


def test_export_refuses_a_non_empty_target(tmp_path, sentencepiece_folder):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    res = _invoke("kgt5", "export", tmp_path / "nope", tmp_path / "full")
    assert res.exit_code != 0
    assert (tmp_path / "full" / "x").read_text() == "mine"
    assert not os.path.exists(tmp_path / "nope")
