"""KGT5 question answering: data readers, a template question generator, fine-tuning and a QA run.

Input format: ``predict answer: <topic entity text> | <question>`` -> answer entity text (decoded
with the entity trie, so answers are always entities). Fine-tuning starts from a trained KGT5 run
and, by default, keeps training link prediction on the KG's triples alongside the questions
(the paper's regulariser for incomplete KGs).

QA files (:func:`read_qa`):

* JSONL: ``{"question": ..., "topic": ..., "answers": [...]}`` (``topic_entity``/``entity`` and
  ``answer`` are accepted too);
* TSV with 3 columns: ``question<TAB>topic<TAB>ans1|ans2``;
* TSV with 2 columns, the MetaQA layout: ``question with [topic entity] in brackets<TAB>ans1|ans2``.

Entities may be given by dataset label, entity text or unique name.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from .decoding import KGT5Scorer
from .run import KGT5Run, _merge, _options, resolve_config, train_examples
from .train import fit
from .verbalize import fill_template, resolve_entities, template_parts

DEFAULT_TEMPLATES = {
    "tail": "what is the {relation} of {topic}?",
    "head": "what has {relation} {topic}?",
}


@dataclass
class QAData:
    """Questions with topic entities and answer sets (CSR).

    ``questions (n,)`` object, ``topics (n,)`` int64, answers of question i are
    ``answer_ids[answer_ptr[i]:answer_ptr[i + 1]]``; ``dropped`` counts unusable input rows.
    """

    questions: np.ndarray
    topics: np.ndarray
    answer_ptr: np.ndarray
    answer_ids: np.ndarray
    dropped: int = 0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.questions)

    def answers(self, i: int) -> np.ndarray:
        return self.answer_ids[self.answer_ptr[i]:self.answer_ptr[i + 1]]

    def subset(self, idx: np.ndarray) -> "QAData":
        idx = np.asarray(idx, dtype=np.int64)
        counts = np.diff(self.answer_ptr)[idx]
        starts = self.answer_ptr[idx]
        flat = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        return QAData(self.questions[idx], self.topics[idx], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                      self.answer_ids[flat])

    def pairs(self, max_answers: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """(question index, answer id) pairs, at most ``max_answers`` per question."""
        counts = np.diff(self.answer_ptr)
        q = np.repeat(np.arange(len(self)), counts)
        pos = np.arange(len(self.answer_ids)) - np.repeat(self.answer_ptr[:-1], counts)
        keep = pos < max_answers if max_answers else np.ones(len(q), bool)
        return q[keep], self.answer_ids[keep]

    def to_frame(self, dataset) -> pd.DataFrame:
        labels = dataset.entities.labels
        counts = np.diff(self.answer_ptr)
        ans = np.split(labels[self.answer_ids], np.cumsum(counts)[:-1]) if len(self) else []
        return pd.DataFrame({"question": self.questions, "topic": labels[self.topics],
                             "answers": [list(map(str, a)) for a in ans]})

    def write_jsonl(self, path: str | Path, dataset) -> None:
        self.to_frame(dataset).to_json(path, orient="records", lines=True, force_ascii=False)

    def write_metaqa(self, path: str | Path, dataset) -> None:
        """MetaQA layout: the topic's name in brackets inside the question; answers by name."""
        names = dataset.entity_text(np.arange(dataset.num_entities)).astype(str).astype(object)
        counts = np.diff(self.answer_ptr)
        ans = pd.Series(names[self.answer_ids]).groupby(np.repeat(np.arange(len(self)), counts)).agg("|".join)
        tname = pd.Series(names[self.topics])
        q = pd.Series(self.questions, dtype=object)
        text = pd.Series([a.replace(t, f"[{t}]", 1) if t in a else f"[{t}] {a}" for a, t in zip(q, tname)])
        pd.DataFrame({"q": text, "a": ans.reindex(range(len(self))).fillna("").to_numpy()}).to_csv(
            path, sep="\t", header=False, index=False, quoting=3)


def _from_rows(questions, topic_strings, answer_lists, dataset, texts) -> QAData:
    """Resolve entity strings (vectorised) and build CSR answers; rows without topic/answers dropped."""
    questions = np.asarray(questions, dtype=object)
    n = len(questions)
    topics = resolve_entities(np.asarray(topic_strings, dtype=object), dataset, texts) if n else np.zeros(0, np.int64)
    ex = pd.Series(list(answer_lists), dtype=object).explode()
    ex = ex[ex.notna()].astype(str).str.strip()
    ex = ex[ex != ""]
    ans = resolve_entities(ex.to_numpy(dtype=object), dataset, texts) if len(ex) else np.zeros(0, np.int64)
    rows = ex.index.to_numpy()
    ok_a = ans >= 0
    df = pd.DataFrame({"q": rows[ok_a], "a": ans[ok_a]}).drop_duplicates()
    counts = np.bincount(df["q"].to_numpy(), minlength=n) if n else np.zeros(0, np.int64)
    keep = (topics >= 0) & (counts > 0)
    df = df[keep[df["q"].to_numpy()]].sort_values("q", kind="stable")
    counts = counts[keep]
    return QAData(questions[keep], topics[keep], np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                  df["a"].to_numpy(dtype=np.int64), dropped=int((~keep).sum()),
                  info={"unresolved_answers": int((~ok_a).sum()), "row_index": np.flatnonzero(keep)})


_BRACKET = r"\[([^\]]+)\]"


def read_qa(path: str | Path, dataset, texts) -> QAData:
    """Read JSONL / 3-column TSV / MetaQA 2-column TSV (see module docstring)."""
    path = Path(path)
    head = path.read_text(encoding="utf-8", errors="replace")[:2000].lstrip()
    if path.suffix in (".jsonl", ".json") or head.startswith("{"):
        df = pd.read_json(path, lines=True, dtype=False)
        q = df["question"].astype(str).to_numpy(dtype=object)
        tcol = next((c for c in ("topic", "topic_entity", "entity", "head") if c in df.columns), None)
        acol = next((c for c in ("answers", "answer", "tails") if c in df.columns), None)
        if acol is None:
            raise ValueError(f"{path}: JSONL rows need an 'answers' field")
        ans = df[acol].map(lambda a: a if isinstance(a, list) else [a])
        if tcol is None:
            topic = df["question"].astype(str).str.extract(_BRACKET)[0].fillna("")
            q = df["question"].astype(str).str.replace(_BRACKET, r"\1", regex=True).to_numpy(dtype=object)
        else:
            topic = df[tcol].astype(str)
        return _from_rows(q, topic.to_numpy(dtype=object), ans, dataset, texts)
    df = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=3)
    if df.shape[1] >= 3:
        q, topic, ans = df[0], df[1], df[2]
    elif df.shape[1] == 2:  # MetaQA
        topic = df[0].str.extract(_BRACKET)[0].fillna("")
        q = df[0].str.replace(_BRACKET, r"\1", regex=True)
        ans = df[1]
    else:
        raise ValueError(f"{path}: expected 2 (MetaQA) or 3 tab-separated columns")
    return _from_rows(q.to_numpy(dtype=object), topic.to_numpy(dtype=object), ans.str.split("|"), dataset, texts)


def generate_questions(dataset, templates: Optional[dict] = None, splits: Sequence[str] = ("train", "valid", "test"),
                       relation_templates: Optional[dict] = None) -> QAData:
    """One question per distinct ``(h, r, ?)`` and ``(?, r, t)`` of the given splits, answered by all
    known tails/heads in the whole KG. ``templates``: ``{"tail": ..., "head": ...}`` with ``{topic}``
    and ``{relation}`` (names); ``relation_templates``: per relation label ``{"tail": ..., "head": ...}``."""
    from .verbalize import sanitize

    templates = {**DEFAULT_TEMPLATES, **(templates or {})}
    allt = dataset.all_triples()
    src = np.concatenate([dataset.splits[s] for s in splits if s in dataset.splits])
    ent_names = sanitize(dataset.entity_text(np.arange(dataset.num_entities)))
    rel_names = sanitize(dataset.relation_text(np.arange(dataset.num_relations)))
    parts = []
    for side, (a_col, b_col) in (("tail", (0, 2)), ("head", (2, 0))):  # two directions
        q = pd.DataFrame({"a": src[:, a_col], "r": src[:, 1]}).drop_duplicates()
        known = pd.DataFrame({"a": allt[:, a_col], "r": allt[:, 1], "ans": allt[:, b_col]}).drop_duplicates()
        m = q.merge(known, on=["a", "r"]).sort_values(["a", "r", "ans"])
        grouped = m.groupby(["a", "r"], sort=True)["ans"]
        keys = grouped.size().rename("n").reset_index()
        tmpl = pd.Series(templates[side], index=keys.index, dtype=object)
        if relation_templates:
            per = pd.Series({k: v.get(side) for k, v in relation_templates.items() if v.get(side)}, dtype=object)
            lab = pd.Series(dataset.relations.labels[keys["r"].to_numpy()])
            mapped = lab.map(per)  # NaN (float) where the relation has no template of its own
            tmpl = tmpl.where(mapped.isna(), mapped)
        topic = ent_names[keys["a"].to_numpy()]
        rel = rel_names[keys["r"].to_numpy()]
        text = np.empty(len(keys), dtype=object)
        codes, distinct = pd.factorize(tmpl)  # one fill per distinct template (the default and per-relation ones)
        bounds = np.cumsum(np.bincount(codes, minlength=len(distinct)))[:-1]
        for t, rows in zip(distinct, np.split(np.argsort(codes, kind="stable"), bounds)):
            pieces = template_parts(t, ("topic", "relation"), what="question template")
            text[rows] = fill_template(pieces, {"topic": topic[rows], "relation": rel[rows]})
        parts.append((text, keys["a"].to_numpy(np.int64), keys["n"].to_numpy(np.int64),
                      m["ans"].to_numpy(np.int64)))
    questions = np.concatenate([p[0] for p in parts])
    topics = np.concatenate([p[1] for p in parts])
    counts = np.concatenate([p[2] for p in parts])
    answers = np.concatenate([p[3] for p in parts])
    return QAData(questions, topics, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), answers)


def split_qa(qa: QAData, valid: float = 0.1, test: float = 0.1, seed: int = 0) -> dict[str, QAData]:
    perm = np.random.default_rng(seed).permutation(len(qa))
    nv, nt = int(round(valid * len(qa))), int(round(test * len(qa)))
    return {"valid": qa.subset(np.sort(perm[:nv])), "test": qa.subset(np.sort(perm[nv:nv + nt])),
            "train": qa.subset(np.sort(perm[nv + nt:]))}


# ----------------------------------------------------------------------- runs
class QARun(KGT5Run):
    """A fine-tuned KGT5 QA run (same folder layout as a KGT5 run plus ``model.base_run``)."""

    def answer(self, topics, questions: Sequence[str], k: int = 10, scorer: Optional[KGT5Scorer] = None):
        """``(B,)`` topic ids + questions -> ``(B, K)`` answer ids (-1 none) and log-probs, best first."""
        sc = scorer or self.scorer(method="beam", beam_size=max(k, self.config["kgt5"]["decoding"]["beam_size"]))
        inputs = self.encoder.questions(np.asarray(topics, np.int64), list(questions))
        return sc.topk(None, None, inputs=inputs)

    def evaluate_qa(self, qa: QAData, k: int = 10, batch: int = 256) -> dict:
        """``hits@1``, ``hits@k`` (a correct answer among the top k) and ``mrr`` (first correct answer)."""
        E = self.dataset.num_entities
        ents = []
        sc = self.scorer(method="beam", beam_size=max(k, self.config["kgt5"]["decoding"]["beam_size"]))
        for s in range(0, len(qa), batch):
            e, _ = self.answer(qa.topics[s:s + batch], qa.questions[s:s + batch], k, scorer=sc)
            ents.append(e[:, :k])
        pred = torch.cat(ents).numpy() if ents else np.zeros((0, k), np.int64)
        q, a = qa.pairs()
        gold = q * E + a
        hit = np.isin(np.arange(len(qa))[:, None] * E + pred, gold) & (pred >= 0)
        first = np.where(hit.any(1), hit.argmax(1) + 1, np.inf)
        return {"hits@1": float(hit[:, 0].mean()) if len(qa) else float("nan"),
                f"hits@{k}": float(hit.any(1).mean()) if len(qa) else float("nan"),
                "mrr": float(np.mean(1.0 / first)) if len(qa) else float("nan"), "count": int(len(qa))}

    def ask(self, question: str, topic: Optional[str] = None, k: int = 5) -> list[dict]:
        """Answer one question; the topic entity comes from ``topic`` or the ``[brackets]`` in the question."""
        import re

        if topic is None:
            m = re.search(_BRACKET, question)
            if not m:
                raise ValueError("give the topic entity (--topic) or put it in [brackets] in the question")
            topic = m.group(1)
        question = re.sub(_BRACKET, r"\1", question)
        t = resolve_entities([topic], self.dataset, self.texts)[0]
        if t < 0:
            raise KeyError(f"unknown topic entity {topic!r}; close matches: {self.dataset.entities.close_matches(topic)}")
        e, s = self.answer(np.array([t]), [question], k)
        keep = e[0] >= 0
        ids, vals = e[0][keep][:k].numpy(), s[0][keep][:k].numpy()
        names = self.dataset.entity_text(ids)
        return [{"rank": i + 1, "id": int(x), "entity": str(self.dataset.entities.labels[x]), "name": str(names[i]),
                 "score": float(vals[i])} for i, x in enumerate(ids)]


QA_DEFAULTS = {"epochs": 20, "batch_size": 128, "lr": None, "mix_kg": True, "max_answers": 10, "eval_every": 5}


def train_qa(base_run: str | Path | KGT5Run, train: QAData, out_dir: str | Path, valid: Optional[QAData] = None,
             options: Optional[dict] = None, resume: bool = False) -> QARun:
    """Fine-tune a KGT5 run on questions into a new QA run folder.

    ``options`` (see :data:`QA_DEFAULTS`): epochs, batch_size, lr (None: the base run's optimizer
    settings), mix_kg (also train link prediction on the KG), max_answers (examples per question).
    Writes config.yaml (``model.name: kgt5-qa``, ``qa`` section), weights, log.jsonl, metrics.json.
    """
    base = base_run if isinstance(base_run, KGT5Run) else KGT5Run.load(base_run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = _merge(QA_DEFAULTS, options or {})
    cfg = copy.deepcopy(base.config)
    cfg["model"] = {**cfg.get("model", {}), "name": "kgt5-qa", "base_run": str(base.path)}
    cfg["qa"] = opts
    cfg["training"] = {**cfg["training"], "epochs": int(opts["epochs"]), "batch_size": int(opts["batch_size"]),
                       "eval_every": int(opts["eval_every"])}
    if opts["lr"] is not None:
        cfg["kgt5"]["lr"] = float(opts["lr"])
    cfg["kgt5"]["time_budget_s"] = cfg["kgt5"]["cpu_budget_s"] = None
    cfg = resolve_config(cfg)
    cfg["model"]["name"] = "kgt5-qa"
    if not resume:
        for f in ("entities.tsv", "relations.tsv", "entity_texts.tsv", "relation_texts.tsv", "model_config.json",
                  "tokenizer.json", "entity_names.tsv", "entity_descriptions.tsv", "relation_names.tsv"):
            if (base.path / f).exists() and base.path.resolve() != out.resolve():
                shutil.copy2(base.path / f, out / f)
        if (base.path / "splits").is_dir() and not (out / "splits").exists():
            shutil.copytree(base.path / "splits", out / "splits")
        (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    enc = base.encoder
    q_idx, ans = train.pairs(opts["max_answers"])
    inputs, _ = enc.questions(train.topics[q_idx], train.questions[q_idx])
    targets = torch.as_tensor(ans)
    if opts["mix_kg"]:
        kg_in, kg_t = train_examples(enc, base.dataset.train)
        width = max(inputs.shape[1], kg_in.shape[1])
        pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))  # noqa: E731
        inputs, targets = torch.cat([pad(inputs), pad(kg_in)]), torch.cat([targets, kg_t])
    model = copy.deepcopy(base.model)
    run = QARun(out, cfg, base.dataset, model, base.tokenizer, base.texts, enc, base.trie, base.known)
    evaluate_fn = None
    if valid is not None and len(valid):
        sub = valid.subset(np.arange(min(len(valid), 500)))

        def evaluate_fn(m) -> float:
            run.model = m.eval()
            return run.evaluate_qa(sub)["hits@1"]

    stats = fit(model, inputs, targets, enc, _options(cfg), out, resume=resume, evaluate_fn=evaluate_fn)
    final = QARun.load(out, dataset=base.dataset)
    metrics = {"train_time_s": stats["train_time_s"], "epochs": stats["epochs"], "examples": int(len(targets)),
               "qa_examples": int(len(q_idx))}
    if valid is not None and len(valid):
        metrics["valid"] = final.evaluate_qa(valid)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return final


def load_qa_run(path: str | Path) -> QARun:
    return QARun.load(path)


__all__ = ["QAData", "QARun", "read_qa", "generate_questions", "split_qa", "train_qa", "load_qa_run"]
