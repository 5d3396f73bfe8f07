"""KGT5 run folders: :func:`train_kgt5` writes one, :class:`KGT5Run` opens it.

Layout of ``RUN/``::

    config.yaml            full config (model.name = kgt5, kgt5 section with defaults filled in)
    entities.tsv relations.tsv   vocabularies (Vocabulary.save)
    entity_texts.tsv relation_texts.tsv   the unique texts the model reads and writes
    tokenizer.json         trained tokenizer (or a copied T5 tokenizer folder's files)
    model_config.json      T5Config
    model.safetensors      best weights; checkpoint.safetensors + checkpoint_state.pt for --resume
    log.jsonl metrics.json

A run provides ``dataset``, ``score_queries``, ``evaluate``, ``predict`` like the KGE runs.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from ..runs import KnownTriples, recover_checkpoint, top_k_predictions
from .decoding import KGT5Scorer
from .encoding import QueryEncoder
from .model import build_model, model_from_folder, num_parameters, save_model_config
from .tokenizer import build_tokenizer, KGTokenizer
from .train import BEST, TrainOptions, fit
from .trie import EntityTrie
from .verbalize import EntityTexts, resolve_entities, resolve_relations

log = logging.getLogger(__name__)

#: Options of the ``kgt5`` config section (``--set kgt5.KEY=VALUE``).
KGT5_DEFAULTS: dict = {
    "preset": "tiny",  # micro | tiny | small
    "model": {},  # T5Config overrides, e.g. {d_model: 256}
    "tokenizer": "train",  # "train" (on the KG's strings) or a local T5 tokenizer folder
    "tokenizer_model": "bpe",  # bpe | unigram (when trained)
    "vocab_size": 8000,
    "description_words": 8,  # words of the description used to disambiguate clashing names
    "max_length": 128,
    "optimizer": "auto",  # adafactor (the paper's) | adamw | auto: adafactor for `small`, adamw otherwise
    "lr": None,  # None: Adafactor relative step size / AdamW 2e-3
    "warmup_steps": 100,
    "weight_decay": 0.0,
    "time_budget_s": None,  # wall-clock training budget (s)
    "cpu_budget_s": None,  # process CPU-time training budget (s)
    "mixed_precision": "auto",
    "valid_max_triples": 500,  # validation subset used during training (final metrics use all)
    "decoding": {"method": "beam", "beam_size": 50, "num_samples": 50, "constrained": True,
                 "temperature": 1.0, "max_rows": 2048},
}
TRAINING_DEFAULTS = {"epochs": 100, "batch_size": 256, "seed": 0, "eval_every": 10, "patience": 0,
                     "threads": 0, "progress": True}


def _merge(base: dict, over: Optional[dict]) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif v is not None or k not in out:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(config: Optional[dict]) -> dict:
    """Fill the KGT5 defaults into a full config dict (returns a copy).

    Generic ``training`` keys (epochs, batch_size, seed, ...) are honoured when not None;
    ``training.optimizer``/``training.lr`` only when the optimizer is ``adafactor``/``adamw``
    (KGE optimizers such as adagrad do not apply); ``kgt5.optimizer``/``kgt5.lr`` win.
    """
    cfg = copy.deepcopy(config or {})
    tr_in = cfg.get("training") or {}
    k_in = cfg.get("kgt5") or {}
    kgt5 = _merge(KGT5_DEFAULTS, k_in)
    tr_opt = str(tr_in.get("optimizer") or "").lower()
    if "optimizer" not in k_in and tr_opt in ("adafactor", "adamw"):
        kgt5["optimizer"] = tr_opt
        if "lr" not in k_in and tr_in.get("lr") is not None:
            kgt5["lr"] = float(tr_in["lr"])
    if kgt5["optimizer"] == "auto":
        kgt5["optimizer"] = "adafactor" if kgt5["preset"] == "small" else "adamw"
    if kgt5["optimizer"] == "adamw" and kgt5["lr"] is None:
        kgt5["lr"] = 2e-3
    training = dict(tr_in)
    for k, v in TRAINING_DEFAULTS.items():
        if training.get(k) is None:
            training[k] = v
    training["optimizer"], training["lr"] = kgt5["optimizer"], kgt5["lr"]
    model = dict(cfg.get("model") or {})
    model["name"] = "kgt5"
    cfg.update(training=training, kgt5=kgt5, model=model)
    return cfg


def _data_section(cfg: dict) -> dict:
    return cfg.get("data") or cfg.get("dataset") or {}


def _options(cfg: dict) -> TrainOptions:
    tr, k = cfg["training"], cfg["kgt5"]
    return TrainOptions(
        epochs=int(tr["epochs"]), batch_size=int(tr["batch_size"]), optimizer=k["optimizer"], lr=k["lr"],
        warmup_steps=int(k["warmup_steps"]), weight_decay=float(k["weight_decay"]), seed=int(tr["seed"]),
        eval_every=int(tr["eval_every"] or 0), patience=int(tr["patience"] or 0),
        time_budget_s=k["time_budget_s"], cpu_budget_s=k["cpu_budget_s"], mixed_precision=k["mixed_precision"], progress=bool(tr["progress"]),
    )


def build_texts(dataset, tokenizer_source, vocab_size: int, description_words: int, max_length: int,
                tokenizer_model: str = "bpe"):
    """Entity texts, tokenizer and token tables; entities whose token sequences collide (e.g. both
    all-``<unk>``) get a `` #id`` suffix."""
    texts = EntityTexts.from_dataset(dataset, description_words=description_words)
    tok = build_tokenizer(texts.corpus(), tokenizer_source, vocab_size, tokenizer_model)
    enc = QueryEncoder(tok, texts, max_length=max_length)
    for attempt in range(4):  # up to 3 rounds of suffixes; the check runs once per encoder
        dup = enc.duplicate_targets()
        if not len(dup) or attempt == 3:
            break
        ent = texts.entity.copy()
        ent[dup] = ent[dup] + " #" + dup.astype(str).astype(object)
        texts = EntityTexts(ent, texts.relation, texts.level)
        enc = QueryEncoder(tok, texts, max_length=max_length)
    if len(dup):
        show = ", ".join(f"{dataset.entities.labels[i]!r} ({texts.entity[i]!r})" for i in dup[:5])
        raise ValueError(f"{len(dup)} entities still share a token sequence with another after adding ' #id' "
                         f"suffixes, e.g. {show}: the tokenizer ({tokenizer_source or 'trained'}) maps their "
                         f"texts to the same tokens (unknown characters?); use kgt5.tokenizer=train or a "
                         f"tokenizer whose vocabulary covers these names, '#' and digits")
    return texts, tok, enc


def train_examples(encoder: QueryEncoder, triples: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of every triple: ``predict tail: h | r -> t`` and ``predict head: t | r -> h``.
    Returns ``inputs (2n, L)`` and ``targets (2n,)``."""
    t = torch.as_tensor(np.asarray(triples, dtype=np.int64))
    tail_in, _ = encoder.queries(t[:, 0], t[:, 1], head=False)
    head_in, _ = encoder.queries(t[:, 2], t[:, 1], head=True)
    width = max(tail_in.shape[1], head_in.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))  # noqa: E731
    return torch.cat([pad(tail_in), pad(head_in)]), torch.cat([t[:, 2], t[:, 0]])


class KGT5Run:
    """An opened (or freshly trained) KGT5 run; see the module docstring for the folder layout."""

    def __init__(self, path: Path, config: dict, dataset, model, tokenizer, texts: EntityTexts,
                 encoder: Optional[QueryEncoder] = None, trie: Optional[EntityTrie] = None,
                 known: Optional[KnownTriples] = None):
        self.path, self.config, self.dataset = Path(path), config, dataset
        self.model, self.tokenizer, self.texts = model.eval(), tokenizer, texts
        self.encoder = encoder or QueryEncoder(tokenizer, texts, max_length=config["kgt5"]["max_length"])
        self.trie = trie or EntityTrie(self.encoder.entity_ids, tokenizer.vocab_size)
        self._scorer: Optional[KGT5Scorer] = None
        self.known = known or KnownTriples(dataset)  # filter indexes, built once on first use

    # ---------------------------------------------------------------- opening
    @classmethod
    def load(cls, path: str | Path, dataset=None, device: Optional[str] = None, weights: str = BEST) -> "KGT5Run":
        from ..data.registry import load_dataset
        from ..data.vocabulary import Vocabulary

        path = Path(path)
        recover_checkpoint(path)  # finish a checkpoint a crash left half moved into place
        cfg = yaml.safe_load((path / "config.yaml").read_text())
        if dataset is None:
            data = _data_section(cfg)
            if data.get("source"):
                dataset = load_dataset(data["source"], unknown=data.get("unknown", "error") or "error")
            elif (path / "splits").is_dir():
                from ..data.dataset import Dataset

                dataset = Dataset(name=path.name, entities=Vocabulary.load(path / "entities.tsv"),
                                  relations=Vocabulary.load(path / "relations.tsv"),
                                  splits={p.stem: np.load(p) for p in sorted((path / "splits").glob("*.npy"))})
                dataset.attach_metadata_folder(path)
            else:
                raise ValueError(f"{path}/config.yaml names no dataset source; pass dataset=")
        if (path / "entities.tsv").exists() and Vocabulary.load(path / "entities.tsv") != dataset.entities:
            raise ValueError(f"{path}: the dataset's entities differ from the run's entities.tsv")
        texts = EntityTexts.load(path)
        tok = KGTokenizer.load(path)
        model = model_from_folder(path, path / weights)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = model.to(device)
        return cls(path, cfg, dataset, model, tok, texts)

    # ---------------------------------------------------------------- scoring
    def scorer(self, **decoding) -> KGT5Scorer:
        """A :class:`KGT5Scorer` with the run's decoding options, overridden by ``decoding``."""
        opts = _merge(self.config["kgt5"]["decoding"], decoding)
        return KGT5Scorer(self.model, self.encoder, self.trie, method=opts["method"], beam_size=opts["beam_size"],
                          num_samples=opts["num_samples"], constrained=opts["constrained"],
                          temperature=opts["temperature"], max_rows=opts["max_rows"],
                          seed=int(self.config["training"].get("seed") or 0))

    @property
    def default_scorer(self) -> KGT5Scorer:
        if self._scorer is None:
            self._scorer = self.scorer()
        return self._scorer

    @property
    def training(self) -> bool:
        return False

    def eval(self) -> "KGT5Run":
        self.model.eval()
        return self

    def score_queries(self, anchor, r, candidates=None, head: bool = False) -> torch.Tensor:
        """``(B,)`` -> ``(B, E)``: log-prob of generated entities, ``-inf`` otherwise (see decoding)."""
        return self.default_scorer.score_queries(anchor, r, candidates, head)

    def topk(self, anchor, r, head: bool = False):
        """Sparse decoder output ``(B, K)`` entity ids (-1 none) and log-probs."""
        return self.default_scorer.topk(torch.as_tensor(anchor), torch.as_tensor(r), head)

    def evaluate(self, split: str = "test", filtered: bool = True, progress: bool = False, **decoding) -> dict:
        """Shared-evaluator metrics (``mrr``, ``mr``, ``hits@k``, ...) plus the decoding options used."""
        from ..evaluation.evaluator import evaluate

        sc = self.scorer(**decoding) if decoding else self.default_scorer
        t0 = time.time()
        m = evaluate(sc, self.dataset, split, filtered=filtered, progress=progress, filter_index=self.filter_index if filtered else None)
        m["decoding"] = {"method": sc.method, "beam_size": sc.beam_size, "num_samples": sc.num_samples,
                         "constrained": sc.constrained}
        m["eval_time_s"] = time.time() - t0
        return m

    @property
    def filter_index(self):
        return self.known.index("all")

    def predict(self, head: Optional[str] = None, relation: Optional[str] = None, tail: Optional[str] = None,
                k: int = 10, exclude_known: bool = False) -> list[dict]:
        """Top-``k`` answers of ``(head, relation, ?)`` or ``(?, relation, tail)``; names in, names out.

        Returns ``[{rank, id, entity, name, score, known}]`` like the KGE runs (``score`` = sequence
        log-prob; ``known`` = the split holding the completed triple, or None). Only generated
        entities are listed, so fewer than ``k`` rows are possible.
        """
        if (head is None) == (tail is None) or relation is None:
            raise ValueError("give a relation and exactly one of head / tail")
        anchor_name = head if head is not None else tail
        a = resolve_entities([anchor_name], self.dataset, self.texts)[0]
        r = resolve_relations([relation], self.dataset, self.texts)[0]
        if a < 0:
            raise KeyError(f"unknown entity {anchor_name!r}; close matches: {self.dataset.entities.close_matches(str(anchor_name))}")
        if r < 0:
            raise KeyError(f"unknown relation {relation!r}; close matches: {self.dataset.relations.close_matches(str(relation))}")
        return self.predict_ids(np.array([a]), np.array([r]), head is None, k, exclude_known)[0]

    def predict_ids(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int = 10,
                    exclude_known: bool = False) -> list[list[dict]]:
        """Batched top-``k`` for ``(B,)`` anchors/relations (rows as in :meth:`predict`)."""
        anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
        k = max(1, min(int(k), self.dataset.num_entities))
        sc = self.default_scorer
        if sc.method in ("beam", "exhaustive") or exclude_known:
            extra = 0 if not exclude_known else 50
            sc = self.scorer(method="beam", beam_size=max(sc.beam_size, k + extra)) if sc.method != "exhaustive" else sc
        return top_k_predictions(sc, self.dataset, self.known, anchor, r, head, k, exclude_known)

    def known_split(self, triples: np.ndarray) -> list[Optional[str]]:
        """For ``(B, 3)`` triples: the first split that contains each, or None."""
        return self.known.split_of(triples)


def _write_metadata(out: Path, cfg: dict, dataset, texts: EntityTexts, tok, model) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    dataset.entities.save(out / "entities.tsv")
    dataset.relations.save(out / "relations.tsv")
    texts.save(out)
    tok.save(out)
    for fname, frame in dataset.metadata_frames().items():
        frame.to_csv(out / fname, sep="\t", header=False, index=False)
    if not _data_section(cfg).get("source"):  # dataset given in code: keep its splits
        (out / "splits").mkdir(exist_ok=True)
        for k, v in dataset.splits.items():
            np.save(out / "splits" / f"{k}.npy", v)
    save_model_config(model, out)


def train_kgt5(dataset, out_dir: str | Path, config: Optional[dict] = None, resume: bool = False) -> KGT5Run:
    """Train KGT5 on ``dataset`` into the run folder ``out_dir`` and evaluate it (valid + test).

    ``config``: full config dict (``training`` generic keys, ``kgt5`` options; see
    :data:`KGT5_DEFAULTS`). Writes config.yaml, vocabularies, texts, tokenizer, weights,
    log.jsonl and metrics.json; returns the opened :class:`KGT5Run`.
    """
    out = Path(out_dir)
    cfg = resolve_config(config)
    cfg.setdefault("data", _data_section(cfg) or {"source": None})
    k, tr = cfg["kgt5"], cfg["training"]
    if int(tr.get("threads") or 0) > 0:
        torch.set_num_threads(int(tr["threads"]))
    if resume and (out / "config.yaml").exists():
        (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))  # e.g. raised epochs
        texts, tok = EntityTexts.load(out), KGTokenizer.load(out)
        enc = QueryEncoder(tok, texts, max_length=k["max_length"])
        model = model_from_folder(out, out / "checkpoint.safetensors") if (out / "checkpoint.safetensors").exists() \
            else build_model(tok.vocab_size, k["preset"], seed=tr["seed"], **k["model"])
    else:
        texts, tok, enc = build_texts(dataset, k["tokenizer"], k["vocab_size"], k["description_words"],
                                     k["max_length"], k["tokenizer_model"])
        model = build_model(tok.vocab_size, k["preset"], seed=int(tr["seed"]), **k["model"])
        _write_metadata(out, cfg, dataset, texts, tok, model)
    log.info("KGT5 %s: %d parameters, vocabulary %d", k["preset"], num_parameters(model), tok.vocab_size)
    inputs, targets = train_examples(enc, dataset.train)
    trie = EntityTrie(enc.entity_ids, tok.vocab_size)

    evaluate_fn = None
    known = KnownTriples(dataset)  # shared with the returned run: the filter index is built once
    valid = dataset.splits.get("valid")
    if valid is not None and len(valid):
        from ..evaluation.evaluator import evaluate

        fi = known.index("all")
        rng = np.random.default_rng(0)
        sub = valid if len(valid) <= k["valid_max_triples"] else valid[rng.choice(len(valid), k["valid_max_triples"], replace=False)]
        sub_ds = copy.copy(dataset)
        sub_ds.splits = {**dataset.splits, "valid": sub}
        dec = k["decoding"]

        def evaluate_fn(m) -> float:
            m.eval()
            sc = KGT5Scorer(m, enc, trie, dec["method"], dec["beam_size"], dec["num_samples"], dec["constrained"],
                            dec["temperature"], dec["max_rows"], seed=int(tr["seed"]))
            return evaluate(sc, sub_ds, "valid", filter_index=fi, per_relation=False)["mrr"]

    stats = fit(model, inputs, targets, enc, _options(cfg), out, resume=resume, evaluate_fn=evaluate_fn)
    best = model_from_folder(out, out / BEST).to("cuda" if torch.cuda.is_available() else "cpu")
    run = KGT5Run(out, cfg, dataset, best, tok, texts, enc, trie, known)
    metrics = {}
    for split in ("valid", "test"):
        if split in dataset.splits and len(dataset.splits[split]):
            metrics[split] = run.evaluate(split)
    metrics.update(train_time_s=stats["train_time_s"], train_cpu_s=stats["cpu_s"], throughput=stats["examples_per_s"], epochs=stats["epochs"],
                   parameters=num_parameters(run.model), model="kgt5", preset=k["preset"])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return run


__all__ = ["KGT5Run", "train_kgt5", "resolve_config", "KGT5_DEFAULTS", "build_texts", "train_examples"]
