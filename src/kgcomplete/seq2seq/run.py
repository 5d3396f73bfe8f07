"""KGT5 run folders: :func:`train_kgt5` writes one, :class:`KGT5Run` opens it.

Layout of ``RUN/``::

    config.yaml            resolved config (resolve_config: model.name = kgt5, KGT5's training keys, kgt5 section
                           with defaults filled in; no KGE-only keys)
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
import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from ..config import (CORE_SECTIONS, Config, ModelConfig, TrainingConfig, feature_sections, read_yaml, section_class,
                      section_from_dict, weight_or_auto)
from ..runs.protocol import KnownTriples, RunBase, top_k_predictions
from ..atomic import atomic_write_text
from ..device import resolve_device
from ..runs.files import RunFolder, recover_checkpoint, verify
from .decoding import KGT5Scorer, evaluate_generated, generated_top_k
from .encoding import QueryEncoder, run_descriptions
from .model import build_model, model_from_folder, num_parameters, save_model_config
from .section import AUTO_OPTIMIZERS, KGT5_OPTIMIZERS, TRAINING_KEYS, KGT5Config
from .section import TRAINING_DEFAULTS as _TRAINING_DEFAULTS
from .tokenizer import build_tokenizer, KGTokenizer
from .train import BEST, QueryExamples, TrainOptions, fit
from .trie import EntityTrie
from .verbalize import EntityTexts, resolve_entities, resolve_relations

log = logging.getLogger(__name__)

#: Options of the ``kgt5`` config section (``--set kgt5.KEY=VALUE``): the defaults of
#: :class:`~kgcomplete.seq2seq.section.KGT5Config` as a dict.
KGT5_DEFAULTS: dict = dataclasses.asdict(KGT5Config())
#: KGT5's defaults of the ``training`` keys it reads (see :mod:`kgcomplete.seq2seq.section`)
TRAINING_DEFAULTS: dict = dict(_TRAINING_DEFAULTS)
#: AdamW's learning rate when ``kgt5.lr`` is None
ADAMW_DEFAULT_LR = 2e-3


def _merge(base: dict, over: Optional[dict]) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif v is not None or k not in out:
            out[k] = copy.deepcopy(v)
    return out


def _without_none(d: dict) -> dict:
    """``d`` without None values, recursively (None means "the default" in a KGT5 config dict)."""
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


#: ``kgt5.mixed_precision`` values (accelerate's, plus ``auto``)
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
#: ``kgt5.lr_decay`` values
LR_DECAYS = ("none", "linear")


def _mixed_precision(value) -> str:
    """``kgt5.mixed_precision`` checked; YAML reads an unquoted ``no`` (or ``off``) as false, which
    means ``no`` here, not an error from accelerate deep inside training."""
    if value is False:
        return "no"
    if not isinstance(value, str) or value.lower() not in MIXED_PRECISION:
        raise ValueError(f"kgt5.mixed_precision={value!r}: expected {' | '.join(MIXED_PRECISION)}")
    return value.lower()


def resolve_config(config) -> dict:
    """The full KGT5 config dict of ``config`` (a :class:`~kgcomplete.config.Config` or a config dict;
    returns a new dict): ``data``, ``model`` (``name: kgt5``), ``training`` (:data:`TRAINING_KEYS`
    only) and ``kgt5`` (every key, ``auto`` resolved), then any other top-level key (e.g. ``qa``).

    * ``training`` keys that are None take KGT5's :data:`TRAINING_DEFAULTS`, not the KGE ones.
    * ``training.optimizer: adafactor|adamw`` sets an ``auto`` ``kgt5.optimizer``; ``training.lr``
      sets ``kgt5.lr`` when that is None and ``training.optimizer`` is that optimizer or ``auto``.
      KGE optimizers (adagrad, ...) and their lr are ignored. The resolved ``kgt5.optimizer``/``lr``
      are mirrored into ``training``.
    * Unknown keys in ``training``/``kgt5``/``data`` raise :class:`~kgcomplete.config.ConfigError`.
    * ``training.time_budget`` (a duration, ``--time-budget``) sets ``kgt5.time_budget_s`` (both given
      and different: an error).
    * KGE-only keys (``model.dim``, ``training.regularizer``, the ``evaluation`` and ``distributed``
      sections, ...) do not apply: they are dropped, with a warning when they differ from their
      defaults.
    """
    if isinstance(config, Config):
        config = config.to_dict()
    cfg = copy.deepcopy(config or {})
    tr_in = _without_none(cfg.get("training") or {})
    tr_sec = section_from_dict("training", tr_in)
    kgt5 = dataclasses.asdict(section_from_dict("kgt5", _without_none(cfg.get("kgt5") or {})))
    section_from_dict("data", cfg.get("data"))
    tr_opt = str(tr_in.get("optimizer") or "").lower()
    kgt5["optimizer"] = str(kgt5["optimizer"]).lower()
    if kgt5["optimizer"] == "auto" and tr_opt in KGT5_OPTIMIZERS:
        kgt5["optimizer"] = tr_opt
    if kgt5["lr"] is None and tr_in.get("lr") is not None and tr_opt in (*AUTO_OPTIMIZERS, kgt5["optimizer"]):
        kgt5["lr"] = float(tr_in["lr"])
    if kgt5["optimizer"] == "auto":
        kgt5["optimizer"] = "adafactor" if kgt5["preset"] == "small" else "adamw"
    if kgt5["optimizer"] not in KGT5_OPTIMIZERS:
        raise ValueError(f"kgt5.optimizer={kgt5['optimizer']!r}: expected {' | '.join(KGT5_OPTIMIZERS)} | auto")
    if kgt5["optimizer"] == "adamw" and kgt5["lr"] is None:
        kgt5["lr"] = ADAMW_DEFAULT_LR
    kgt5["mixed_precision"] = _mixed_precision(kgt5["mixed_precision"])
    reverse = weight_or_auto(kgt5["decoding"]["reverse_weight"], "kgt5.decoding.reverse_weight")
    kgt5["decoding"]["reverse_weight"] = "auto" if reverse is None else reverse
    if reverse != 0 and kgt5["decoding"]["method"] == "exhaustive":
        raise ValueError("kgt5.decoding.reverse_weight re-ranks decoded answers: set it to 0 with method exhaustive")
    if kgt5["lr_decay"] not in LR_DECAYS:
        raise ValueError(f"kgt5.lr_decay={kgt5['lr_decay']!r}: expected {' | '.join(LR_DECAYS)}")
    from ..config import parse_cadence, parse_duration

    budget = parse_duration(tr_in.get("time_budget") or "", "training.time_budget")
    if budget is not None:  # --time-budget: the wall-clock budget of every model kind
        if kgt5["time_budget_s"] is not None and float(kgt5["time_budget_s"]) != budget:
            raise ValueError(f"training.time_budget={tr_in['time_budget']!r} ({budget:g} s) and "
                             f"kgt5.time_budget_s={kgt5['time_budget_s']:g} disagree: give one of them")
        kgt5["time_budget_s"] = budget
    training = {k: getattr(tr_sec, k) if k in tr_in else v for k, v in TRAINING_DEFAULTS.items()}
    training["optimizer"], training["lr"] = kgt5["optimizer"], kgt5["lr"]
    cadence = parse_cadence(training["eval_every"])
    if cadence.fraction is not None or cadence.seconds is not None:
        raise ValueError(f"training.eval_every={training['eval_every']!r}: KGT5 validates between epochs; "
                         "give a whole number of epochs (0 = never)")

    ignored = [f"training.{k}" for k in tr_in if k not in (*TRAINING_KEYS, "time_budget")
               and getattr(tr_sec, k) != getattr(TrainingConfig(), k)]
    model = dict(cfg.get("model") or {})
    for k in [k for k in model if k != "name" and k in ModelConfig.__dataclass_fields__]:
        v = model.pop(k)
        if getattr(section_from_dict("model", {k: v}), k) != getattr(ModelConfig(), k):
            ignored.append(f"model.{k}")
    model["name"] = "kgt5"
    out = {"data": cfg["data"]} if "data" in cfg else {}
    out.update(model=model, training=training, kgt5=kgt5)
    for key, value in cfg.items():
        if key in out or key in ("training", "kgt5"):
            continue
        if key in CORE_SECTIONS or key in feature_sections():  # evaluation, distributed: KGE only
            if section_from_dict(key, value) != section_class(key)():
                ignored.append(key)
            continue
        out[key] = value
    if ignored:
        warnings.warn(f"KGE-only config keys do not apply to KGT5 and are ignored: {', '.join(ignored)}",
                      UserWarning, stacklevel=2)
    return out


def _data_section(cfg: dict) -> dict:
    return cfg.get("data") or cfg.get("dataset") or {}


def _options(cfg: dict) -> TrainOptions:
    """The :class:`TrainOptions` of a resolved KGT5 config dict (:func:`resolve_config`)."""
    return TrainOptions.from_config(cfg)


def build_texts(dataset, tokenizer_source, vocab_size: int, description_words: int, max_length: int,
                tokenizer_model: str = "bpe", extra_corpus=None):
    """Entity texts, tokenizer and token tables; entities whose token sequences collide (e.g. both
    all-``<unk>``) get a `` #id`` suffix. ``extra_corpus``: more strings the trained tokenizer
    learns from (the descriptions a run reads)."""
    texts = EntityTexts.from_dataset(dataset, description_words=description_words)
    tok = build_tokenizer(texts.corpus(extra_corpus), tokenizer_source, vocab_size, tokenizer_model)
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
    Returns ``inputs (2n, L)`` and ``targets (2n,)``. ``triples``: the training triples (with
    ``kgt5.context`` row ``i``'s own edge is left out of its two examples' contexts)."""
    t = torch.as_tensor(np.asarray(triples, dtype=np.int64))
    rows = np.arange(len(t))
    tail_in, _ = encoder.queries(t[:, 0], t[:, 1], head=False, exclude=rows)
    head_in, _ = encoder.queries(t[:, 2], t[:, 1], head=True, exclude=rows)
    width = max(tail_in.shape[1], head_in.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]))  # noqa: E731
    return torch.cat([pad(tail_in), pad(head_in)]), torch.cat([t[:, 2], t[:, 0]])


class KGT5Run(RunBase):
    """An opened (or freshly trained) KGT5 run; see the module docstring for the folder layout.

    Implements :class:`~kgcomplete.runs.protocol.Run`; ``config`` is the plain config dict (also
    :meth:`config_dict`), names resolve by label or unique name (``predict`` also takes entity
    texts), and there is no embedding table (``entity_embeddings()`` is None).
    """

    #: the query sides the run answers and ranks (an imported checkpoint may answer tails only)
    directions: tuple[str, ...] = ("head", "tail")

    def __init__(self, path: Path, config: dict, dataset, model, tokenizer, texts: EntityTexts,
                 encoder: Optional[QueryEncoder] = None, trie: Optional[EntityTrie] = None,
                 known: Optional[KnownTriples] = None):
        self.path, self.config, self.dataset = Path(path), config, dataset
        self.model, self.tokenizer, self.texts = model.eval(), tokenizer, texts
        self.encoder = encoder or QueryEncoder.from_config(tokenizer, texts, config["kgt5"], dataset,
                                                           int(config["training"].get("seed") or 0))
        self.trie = trie or EntityTrie(self.encoder.entity_ids, tokenizer.vocab_size)
        self._scorer: Optional[KGT5Scorer] = None
        self.known = known or KnownTriples(dataset)  # filter indexes, built once on first use

    def config_dict(self) -> dict:
        return copy.deepcopy(self.config)

    # ---------------------------------------------------------------- opening
    @classmethod
    def load(cls, path: str | Path, dataset=None, device: Optional[str] = None, weights: str = BEST) -> "KGT5Run":
        from ..data.vocabulary import Vocabulary

        path = Path(path)
        recover_checkpoint(path, roll_back=False)  # finish a checkpoint a crash left half moved into place
        cfg = read_yaml(path / "config.yaml")
        folder = RunFolder(path)
        if dataset is None:
            dataset = folder.dataset({"data": _data_section(cfg)})
        elif (path / "entities.tsv").exists() and Vocabulary.load(path / "entities.tsv") != dataset.entities:
            raise ValueError(f"{path}: the dataset's entities differ from the run's entities.tsv")
        texts = EntityTexts.load(path)
        tok = KGTokenizer.load(path)
        verify(path / weights)
        model = model_from_folder(path, path / weights)
        device = resolve_device(device or "auto")
        model = model.to(device)
        return cls(path, cfg, dataset, model, tok, texts)

    # ---------------------------------------------------------------- scoring
    def scorer(self, memo_queries: int = 200_000, **decoding) -> KGT5Scorer:
        """A :class:`KGT5Scorer` with the run's decoding options, overridden by ``decoding``;
        ``memo_queries=0`` decodes every call afresh (timing)."""
        opts = _merge(self.config["kgt5"]["decoding"], decoding)
        return KGT5Scorer(self.model, self.encoder, self.trie, method=opts["method"], beam_size=opts["beam_size"],
                          num_samples=opts["num_samples"], constrained=opts["constrained"],
                          temperature=opts["temperature"], max_rows=opts["max_rows"],
                          seed=int(self.config["training"].get("seed") or 0), memo_queries=memo_queries,
                          reverse_weight=self.reverse_weight(opts.get("reverse_weight", 0.0)),
                          reverse_candidates=int(opts.get("reverse_candidates", 50)),
                          known_answers=self.training_answer_counts, widen_for_known=int(opts.get("widen_for_known", 0)))

    def training_answer_counts(self, anchor: np.ndarray, relation: np.ndarray, head: bool) -> np.ndarray:
        """``(B,)`` the number of answers each query has in the training split (0 without one)."""
        if "train" not in self.dataset.splits:
            return np.zeros(len(anchor), np.int64)
        return self.known.index("train").answer_counts(anchor, relation, head)

    def reverse_weight(self, value) -> float:
        """``kgt5.decoding.reverse_weight`` as the number the run ranks with: ``auto`` is the weight
        training chose on the validation split (``metrics.json``, :func:`fit_reverse_weight`), 0
        until then."""
        weight = weight_or_auto(value, "kgt5.decoding.reverse_weight")
        if weight is None:
            weight = RunFolder(self.path).chosen_weight("reverse_reading", "the other reading of each answer")
        if weight and set(self.directions) != {"head", "tail"}:
            raise ValueError(f"kgt5.decoding.reverse_weight={value!r}: this run answers {' and '.join(self.directions)} "
                             "queries only, so there is no other reading to add; set it to 0")
        return weight

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
        """Shared-evaluator metrics (``mrr``, ``mr``, ``hits@k``, ...) plus the decoding options used.
        Decoded rankings (beam / sample / greedy, all entities) come from the decoder's top-k
        (:func:`~.decoding.evaluate_generated`: the same numbers, no score row per entity);
        ``exhaustive`` and OGB candidates go through the shared evaluator."""
        from ..evaluation.evaluator import evaluate

        same = _merge(self.config["kgt5"]["decoding"], decoding) == self.config["kgt5"]["decoding"]
        sc = self.default_scorer if same else self.scorer(**decoding)  # the default one keeps its decodings
        t0 = time.time()
        fi = self.filter_index("all") if filtered else None
        if sc.method != "exhaustive" and not (self.dataset.candidates or {}).get(split):
            m = evaluate_generated(sc, self.dataset, split, filtered, fi, self.directions, progress=progress)
        else:
            m = evaluate(sc, self.dataset, split, filtered=filtered, progress=progress, filter_index=fi)
        m["decoding"] = {"method": sc.method, "beam_size": sc.beam_size, "num_samples": sc.num_samples,
                         "constrained": sc.constrained, "reverse_weight": sc.reverse_weight,
                         "widen_for_known": sc.widen_for_known if sc.method == "beam" else 0}
        if sc.reverse_weight:
            m["decoding"]["reverse_candidates"] = sc.reverse_candidates
        m["eval_time_s"] = time.time() - t0
        return m

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

    def predict_new(self, text: str, relation: str, head: bool = False, facts=None,
                    description: Optional[str] = None, k: int = 10) -> list[dict]:
        """Top-``k`` known entities for a query about an entity that is not in the graph, given by
        ``text`` (and ``facts``: ``(head, relation, tail)`` with ``?`` for it, runs trained with
        ``kgt5.context``); ``head=True``: the new entity is the tail. See :mod:`.inductive`."""
        from .inductive import predict_new_entity

        return predict_new_entity(self, text, relation, head, facts, description, k)

    def predict_ids(self, anchor: np.ndarray, r: np.ndarray, head: bool, k: int = 10,
                    exclude_known: bool = False) -> list[list[dict]]:
        """Batched top-``k`` for ``(B,)`` anchors/relations (rows as in :meth:`predict`)."""
        anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
        k = max(1, min(int(k), self.dataset.num_entities))
        sc = self.default_scorer
        if sc.method in ("beam", "exhaustive") or exclude_known:
            extra = 0 if not exclude_known else 50
            sc = self.scorer(method="beam", beam_size=max(sc.beam_size, k + extra)) if sc.method != "exhaustive" else sc
        if sc.method == "exhaustive":
            return top_k_predictions(sc, self.dataset, self.known, anchor, r, head, k, exclude_known)
        return generated_top_k(sc, self.dataset, self.known, anchor, r, head, k, exclude_known)


#: the weights ``kgt5.decoding.reverse_weight: auto`` chooses from (0 first: it wins ties)
REVERSE_WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5)


def fit_reverse_weight(run: KGT5Run, grid=REVERSE_WEIGHT_GRID) -> dict:
    """``kgt5.decoding.reverse_weight: auto`` once training has ended: the weight of ``grid`` whose
    ranking of the whole validation split has the highest filtered MRR. Each query is decoded and
    its best answers read the other way once (the run's scorer keeps both); the choice is set on
    the run's scorer and returned, ``{"valid_mrr": {weight: MRR}, "chosen": weight}``, for
    ``metrics.json``, where :meth:`KGT5Run.reverse_weight` finds it."""
    sc = run.default_scorer
    mrr = {}
    for weight in grid:
        sc.reverse_weight = float(weight)
        sc.generator.manual_seed(sc.seed)  # sampling: the same samples for every weight
        mrr[float(weight)] = evaluate_generated(sc, run.dataset, "valid", True, run.filter_index("all"),
                                                run.directions, per_relation=False)["mrr"]
    sc.reverse_weight = chosen = max(mrr, key=mrr.get)
    table = ", ".join(f"{w:g}: {m:.4f}" for w, m in mrr.items())
    log.info("kgt5.decoding.reverse_weight=%g chosen on the validation split (MRR %s)", chosen, table)
    return {"valid_mrr": {f"{w:g}": m for w, m in mrr.items()}, "chosen": chosen}


def train_kgt5(dataset, out_dir: str | Path, config: Optional[dict | Config] = None, resume: bool = False,
               evaluate_test: bool = True) -> KGT5Run:
    """Train KGT5 on ``dataset`` into the run folder ``out_dir`` and evaluate it (valid + test).

    ``config``: a :class:`~kgcomplete.config.Config` or a config dict (``training`` generic keys,
    ``kgt5`` options; see :data:`KGT5_DEFAULTS`), resolved by :func:`resolve_config`. Writes
    config.yaml (the resolved config), vocabularies, texts, tokenizer, weights, log.jsonl and
    metrics.json; returns the opened :class:`KGT5Run`.
    """
    out = Path(out_dir)
    cfg = resolve_config(config)
    if "data" not in cfg:
        cfg = {"data": _data_section(cfg) or {"source": None}, **cfg}
    k, tr = cfg["kgt5"], cfg["training"]
    if int(tr.get("threads") or 0) > 0:
        torch.set_num_threads(int(tr["threads"]))
    folder = RunFolder(out)
    resuming = resume and (out / "config.yaml").exists()
    if resuming:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))  # e.g. raised epochs
        if "reverse_reading" in folder.metrics():  # chosen for the weights training goes on from
            folder.update_metrics(reverse_reading=None)
        texts, tok = EntityTexts.load(out), KGTokenizer.load(out)
    else:
        texts, tok, _ = build_texts(dataset, k["tokenizer"], k["vocab_size"], k["description_words"],
                                   k["max_length"], k["tokenizer_model"], run_descriptions(dataset, k))
    enc = QueryEncoder.from_config(tok, texts, k, dataset, int(tr["seed"]))  # context / descriptions
    if resuming and (out / "checkpoint.safetensors").exists():
        model = model_from_folder(out, out / "checkpoint.safetensors")
    else:
        model = build_model(tok.vocab_size, k["preset"], seed=int(tr["seed"]), query_attention=enc.query_attention,
                            **k["model"])
    if not resuming:
        folder.create(cfg, dataset)
        texts.save(out)
        tok.save(out)
        save_model_config(model, out)
    log.info("KGT5 %s: %d parameters, vocabulary %d", k["preset"], num_parameters(model), tok.vocab_size)
    examples = QueryExamples.from_triples(enc, dataset.train)
    trie = EntityTrie(enc.entity_ids, tok.vocab_size)

    evaluate_fn = None
    dec = k["decoding"]
    known = KnownTriples(dataset)  # shared with the returned run: the filter index is built once
    valid = dataset.splits.get("valid")
    if valid is not None and len(valid):
        from ..evaluation.evaluator import evaluate

        fi = known.index("all")
        rng = np.random.default_rng(0)
        sub = valid if len(valid) <= k["valid_max_triples"] else valid[rng.choice(len(valid), k["valid_max_triples"], replace=False)]
        sub_ds = copy.copy(dataset)
        sub_ds.splits = {**dataset.splits, "valid": sub}

        def evaluate_fn(m) -> float:
            m.eval()
            sc = KGT5Scorer(m, enc, trie, dec["method"], dec["beam_size"], dec["num_samples"], dec["constrained"],
                            dec["temperature"], dec["max_rows"], seed=int(tr["seed"]))
            return evaluate(sc, sub_ds, "valid", filter_index=fi, per_relation=False)["mrr"]

    stats = fit(model, examples, None, enc, _options(cfg), out, resume=resume, evaluate_fn=evaluate_fn)
    best = model_from_folder(out, out / BEST).to(resolve_device(tr.get("device") or "auto"))
    run = KGT5Run(out, cfg, dataset, best, tok, texts, enc, trie, known)
    metrics = {}
    if dec["reverse_weight"] == "auto" and valid is not None and len(valid):
        folder.update_metrics(reverse_reading=fit_reverse_weight(run))  # kept even if the ranking below is stopped
    for split in ("valid", "test") if evaluate_test else ():  # the best weights on valid and test
        if split in dataset.splits and len(dataset.splits[split]):
            metrics[split] = run.evaluate(split)
    metrics.update(train_time_s=stats["train_time_s"], train_cpu_s=stats["cpu_s"], throughput=stats["examples_per_s"],
                   train_examples_per_s=stats["examples_per_s"], train_tokens_per_s=stats["tokens_per_s"], epochs=stats["epochs"],
                   parameters=num_parameters(run.model), model="kgt5", preset=k["preset"])
    metrics["stopped"], metrics["mixed_precision"] = stats["stopped"], stats["mixed_precision"]
    metrics["device"] = str(resolve_device(tr.get("device") or "auto"))
    folder.update_metrics(**metrics)
    return run


__all__ = ["KGT5Run", "train_kgt5", "fit_reverse_weight", "REVERSE_WEIGHT_GRID", "resolve_config", "KGT5_DEFAULTS", "TRAINING_DEFAULTS", "build_texts",
           "train_examples"]
