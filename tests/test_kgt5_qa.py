"""KGT5 question answering: template generator, JSONL/TSV/MetaQA readers, fine-tuning, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from kgt5_fixtures import one_thread, tiny_kg, trained_kgt5  # noqa: E402,F401

from kgcomplete.seq2seq.qa import QARun, generate_questions, read_qa, split_qa, train_qa  # noqa: E402
from kgcomplete.seq2seq.verbalize import EntityTexts, sanitize  # noqa: E402


def _as_sets(qa):
    return {(q, int(t), tuple(sorted(qa.answers(i).tolist()))) for i, (q, t) in enumerate(zip(qa.questions, qa.topics))}


def test_generator_answers_are_all_known_entities():
    ds = tiny_kg()
    qa = generate_questions(ds)
    allt = {tuple(t) for t in ds.all_triples().tolist()}
    heads = {(h, r) for h, r, _ in allt}
    assert len(qa) == len(heads) + len({(r, t) for _, r, t in allt})
    for i in range(len(qa)):
        t = int(qa.topics[i])
        q = qa.questions[i]
        r = [j for j, name in enumerate(ds.relation_text(np.arange(ds.num_relations))) if name in q][0]
        if q.startswith("what is the"):
            expect = sorted(x for h, rr, x in allt if h == t and rr == r)
        else:
            expect = sorted(h for h, rr, x in allt if x == t and rr == r)
        assert qa.answers(i).tolist() == expect


def test_generated_questions_are_the_templates_filled_per_question():
    ds = tiny_kg()
    labels = ds.relations.labels
    per = {str(labels[0]): {"tail": "{{{topic}}} -> {relation}?"}}  # literal braces, one relation's own template
    qa = generate_questions(ds, templates={"head": "who: {relation} / {topic}"}, relation_templates=per)
    ent = sanitize(ds.entity_text(np.arange(ds.num_entities)))
    rel = sanitize(ds.relation_text(np.arange(ds.num_relations)))
    expect = set()
    for h, r, t in ds.all_triples().tolist():
        tail_t = per.get(str(labels[r]), {}).get("tail", "what is the {relation} of {topic}?")
        expect.add((tail_t.format(topic=ent[h], relation=rel[r]), h))
        expect.add(("who: {relation} / {topic}".format(topic=ent[t], relation=rel[r]), t))
    assert {(q, int(t)) for q, t in zip(qa.questions, qa.topics)} == expect
    assert any(q.startswith("{") for q in qa.questions)
    with pytest.raises(ValueError, match=r"question template 'what is \{name\}\?': \{name\}"):
        generate_questions(ds, templates={"tail": "what is {name}?"})


def test_readers_round_trip(tmp_path):
    ds = tiny_kg()
    texts = EntityTexts.from_dataset(ds)
    qa = generate_questions(ds, splits=("train",))
    qa.write_jsonl(tmp_path / "q.jsonl", ds)
    assert _as_sets(read_qa(tmp_path / "q.jsonl", ds, texts)) == _as_sets(qa)
    # 3-column TSV with labels
    lines = [f"{q}\t{ds.entities.labels[t]}\t" + "|".join(ds.entities.labels[qa.answers(i)])
             for i, (q, t) in enumerate(zip(qa.questions, qa.topics))]
    (tmp_path / "q.tsv").write_text("\n".join(lines) + "\n")
    assert _as_sets(read_qa(tmp_path / "q.tsv", ds, texts)) == _as_sets(qa)
    # MetaQA: topic name in brackets, answers by (unique) name or text; ambiguous "node" is skipped
    (tmp_path / "m.txt").write_text("what is next after [entity 5]\tentity 6\n"
                                    "what is next after [node]\tentity 1|entity 9\n"
                                    "which is next of [left | right]\tentity 5|unknown thing\n")
    m = read_qa(tmp_path / "m.txt", ds, texts)
    assert len(m) == 2 and m.dropped == 1  # the [node] row: ambiguous topic
    assert m.info["unresolved_answers"] == 2  # "entity 1" (e1 is called "node") and "unknown thing"
    assert m.questions[0] == "what is next after entity 5"
    assert ds.entities.labels[m.topics].tolist() == ["e5", "e4"]
    assert ds.entities.labels[m.answers(1)].tolist() == ["e5"]
    parts = split_qa(qa, 0.2, 0.2, seed=1)
    assert sum(len(p) for p in parts.values()) == len(qa)


def test_finetune_ask_and_cli(trained_kgt5, tmp_path):
    ds, out, run = trained_kgt5
    qa = generate_questions(ds)
    train_qa(run, qa, tmp_path / "qa", valid=qa, options={"epochs": 15, "batch_size": 16, "lr": 0.01})
    m = json.loads((tmp_path / "qa" / "metrics.json").read_text())
    again = QARun.load(tmp_path / "qa")
    scores = again.evaluate_qa(qa)
    # reference: the top answer of every question checked against its answer set, one by one
    pred, _ = again.answer(qa.topics, list(qa.questions), 10)
    top1 = [int(pred[i, 0]) in set(qa.answers(i).tolist()) for i in range(len(qa))]
    first = [next((j + 1 for j, e in enumerate(pred[i].tolist()) if e in set(qa.answers(i).tolist())), np.inf)
             for i in range(len(qa))]
    assert scores["hits@1"] == pytest.approx(np.mean(top1)) and scores["mrr"] == pytest.approx(np.mean(1 / np.array(first)))
    assert m["epochs"] == 15 and m["valid"]["hits@1"] == pytest.approx(np.mean(top1))  # valid = the same questions
    assert scores["hits@1"] > 0.5  # questions seen in training (random: ~0.1)
    rows = again.ask("what is the next of [entity 5]?")
    assert rows and rows[0]["entity"] in ds.entities.labels
    with pytest.raises(ValueError):
        again.ask("no topic here")

    from click.testing import CliRunner

    from kgcomplete.cli.kgt5 import qa as qa_cli

    qa.write_jsonl(tmp_path / "all.jsonl", ds)
    r = CliRunner().invoke(qa_cli, ["evaluate", str(tmp_path / "qa"), "--data", str(tmp_path / "all.jsonl"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["hits@1"] == pytest.approx(scores["hits@1"])
    r = CliRunner().invoke(qa_cli, ["ask", str(tmp_path / "qa"), "what is the prev of [entity 7]?", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["rank"] == 1
    r = CliRunner().invoke(qa_cli, ["train", str(out), "--train", str(tmp_path / "all.jsonl"), "--out",
                                    str(tmp_path / "qa2"), "--epochs", "1", "--no-mix-kg"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "qa2" / "model.safetensors").exists()


def test_cli_generate(tmp_path):
    from click.testing import CliRunner

    from kgcomplete.cli.kgt5 import qa as qa_cli

    r = CliRunner().invoke(qa_cli, ["generate", "--dataset", "nations", "--out", str(tmp_path), "--format", "metaqa"])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "qa_train.txt").read_text().splitlines()
    assert lines and all(line.count("\t") == 1 and "[" in line.split("\t")[0] for line in lines)
