"""The ``kgt5`` config section and KGT5's defaults for the generic ``training`` keys.

Light on purpose (the core config finds and imports it, :mod:`kgcomplete.features`):
dataclasses only, no torch or transformers.

A KGT5 run reads, of the core sections, ``data`` and ``model.name``, and from ``training`` only
:data:`TRAINING_KEYS` (``optimizer``/``lr`` mirror the resolved ``kgt5.optimizer``/``kgt5.lr``); the
KGE-only keys (``model.dim``, ``training.regularizer``, ``evaluation``, ...) do not apply and are not
written to its ``config.yaml`` (see :func:`kgcomplete.seq2seq.run.resolve_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

from ..config import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Limit, register_model_defaults, register_section


@dataclass
class DecodingConfig:
    """``kgt5.decoding``: how a run ranks (see docs/kgt5.md, Decoding and ranking)."""

    method: str = "beam"  #: greedy | sample | beam | exhaustive
    beam_size: int = 50
    num_samples: int = 50
    constrained: bool = True  #: restrict every decoding step to the entity trie
    temperature: float = 1.0  #: sampling temperature
    max_rows: int = 2048  #: hypotheses decoded at once
    #: rank the best ``reverse_candidates`` decoded answers ``c`` of a query by ``log p(c | query)``
    #: + this weight x ``log p(anchor | c's query the other way)`` (decoding.py ``rerank``); "auto":
    #: chosen on the validation split from 0, 0.1, 0.25 and 0.5 when training ends (metrics.json)
    reverse_weight: Union[float, str] = 0.0
    #: decoded answers re-ranked by ``reverse_weight`` (each is read the other way: one teacher-forced
    #: pass per answer); fewer than the beam cuts the cost but also the gain (see docs/kgt5.md)
    reverse_candidates: int = 50
    #: beam search: a query keeps up to this many more hypotheses, one per answer it has in the
    #: training graph (rounded up to a power of two), so that the answers filtered ranking removes
    #: do not push new ones out of the beam; reverse_candidates grows by as many (0 = a fixed width)
    widen_for_known: int = 200

    LIMITS: ClassVar[dict[str, Limit]] = {"beam_size": POSITIVE_INT, "num_samples": POSITIVE_INT,
                                          "temperature": POSITIVE, "max_rows": POSITIVE_INT,
                                          "reverse_candidates": POSITIVE_INT, "widen_for_known": NON_NEGATIVE}


@dataclass
class KGT5Config:
    """The ``kgt5`` section (``--set kgt5.KEY=VALUE``)."""

    preset: str = "tiny"  #: micro | tiny | small
    model: dict = field(default_factory=dict)  #: T5Config overrides, e.g. {d_model: 256} (free-form)
    tokenizer: str = "train"  #: "train" (on the KG's strings) or a local T5 tokenizer folder
    tokenizer_model: str = "bpe"  #: bpe | unigram (when trained)
    vocab_size: int = 8000
    description_words: int = 8  #: words of the description used to disambiguate clashing names
    max_length: int = 128  #: input tokens (``</s>`` included); context lines are added while they fit
    #: KGT5-context: the query entity's 1-hop neighbourhood (training graph) follows the query
    context: bool = False
    context_size: int = 100  #: at most this many neighbourhood facts (kgt5-context's max_size)
    #: query: the decoder attends to the query line only, the encoder reads everything (trains far
    #: faster with small models); all: every token (kgt5-context's own model)
    context_attention: str = "query"
    #: the query entity's description follows its text (datasets with entity_descriptions.tsv)
    descriptions: bool = False
    description_max_words: int = 32  #: words of the description in the input
    #: adafactor (the paper's) | adamw | auto: adafactor for `small`, adamw otherwise
    optimizer: str = "auto"
    lr: Optional[float] = None  #: None: Adafactor relative step size / AdamW 2e-3
    warmup_steps: int = 100  #: AdamW linear warm-up
    #: AdamW: none (constant after the warm-up) | linear (to 0 at the last epoch or where a budget ends)
    lr_decay: str = "none"
    weight_decay: float = 0.0
    time_budget_s: Optional[float] = None  #: wall-clock training budget (s)
    cpu_budget_s: Optional[float] = None  #: process CPU-time training budget (s)
    mixed_precision: str = "auto"  #: auto (bf16/fp16 on GPU, bf16 on CPUs that multiply it fast, else no) | no | fp16 | bf16
    valid_max_triples: int = 500  #: validation subset used during training (final metrics use all)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    LIMITS: ClassVar[dict[str, Limit]] = {
        "vocab_size": POSITIVE_INT, "description_words": NON_NEGATIVE, "max_length": POSITIVE_INT, "lr": POSITIVE,
        "context_size": NON_NEGATIVE, "description_max_words": POSITIVE_INT,
        "warmup_steps": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "time_budget_s": POSITIVE,
        "cpu_budget_s": POSITIVE, "valid_max_triples": POSITIVE_INT,
    }


#: KGT5's defaults for the ``training`` keys it reads (not the KGE ones: validation every 10 epochs,
#: no early stopping)
TRAINING_DEFAULTS = {"epochs": 100, "batch_size": 256, "seed": 0, "eval_every": 10, "patience": 0,
                     "threads": 0, "progress": True, "device": "auto", "average_epochs": 0.0}
#: the ``training`` keys of a KGT5 config (``optimizer``/``lr``: the resolved ``kgt5`` ones)
TRAINING_KEYS = (*TRAINING_DEFAULTS, "optimizer", "lr")
#: optimizers of ``training.optimizer`` that KGT5 takes over into ``kgt5.optimizer``
KGT5_OPTIMIZERS = ("adafactor", "adamw")
#: ``training.optimizer`` values that mean "KGT5's own choice": ``training.lr`` still applies
AUTO_OPTIMIZERS = ("", "auto")

register_section("kgt5", KGT5Config)
register_model_defaults("kgt5", {**{f"training.{k}": v for k, v in TRAINING_DEFAULTS.items()},
                                 "training.optimizer": "auto", "training.lr": None})

__all__ = ["AUTO_OPTIMIZERS", "DecodingConfig", "KGT5Config", "KGT5_OPTIMIZERS", "TRAINING_DEFAULTS", "TRAINING_KEYS"]
