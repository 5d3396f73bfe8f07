"""One configuration for a run: typed sections (dataclasses), YAML files and dotted overrides.

Precedence (later wins): built-in defaults < per-model defaults (:data:`MODEL_DEFAULTS`) <
``--config FILE.yaml`` < CLI flags / ``--set section.key=value``.

Sections: the core's ``data``, ``model``, ``training``, ``evaluation``, and the sections features
register (:func:`register_section`, e.g. ``kgt5``, ``distributed``), each a dataclass with defaults.
Every key is checked: an unknown section or key (in a YAML file, a ``--set`` or a Python override)
raises :class:`ConfigError`, one line naming the key, its section and close matches. Dict-valued
fields (``model.options``, ``kgt5.model``) are free-form; dataclass-valued fields are typed
sub-sections (``kgt5.decoding``).

The core names no feature: every feature folder's ``section.py`` is found and imported on first
need (:mod:`kgcomplete.features`); those modules are light (no torch).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, NamedTuple, Optional, Union

import yaml


class ConfigError(KeyError):
    """An unknown config section or key (a :class:`KeyError` whose text is the plain message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Limit(NamedTuple):
    """The allowed range of a numeric config field: ``low``/``high`` (None = unbounded), each
    inclusive unless ``*_open``. Every float must also be finite."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE_INT, NON_NEGATIVE, POSITIVE = Limit(1), Limit(0), Limit(0, low_open=True)


@dataclass
class DataConfig:
    source: Optional[str] = "umls"  #: registered name or folder path; None = given in code
    unknown: str = "error"  #: valid/test entities unseen in train: error | drop | keep
    #: a folder's columns in order, of which head, relation, tail are used (e.g. head,relation,tail,weight)
    columns: Optional[str] = None
    duplicates: str = "drop"  #: repeated triples in a split: drop (counted) | keep
    whitespace: str = "error"  #: a label with leading/trailing whitespace: error | strip (counted)


@dataclass
class ModelConfig:
    name: str = "complex"
    dim: int = 128
    reciprocal: bool = True
    init_scale: float = 1e-3
    p_norm: int = 1
    #: entity table dtype: float32 | float16 | bfloat16 (math stays float32; needs optimizer rowadagrad)
    storage_dtype: str = "float32"
    options: dict = field(default_factory=dict)  #: model-specific keyword arguments (free-form)
    #: with reciprocal relations, rank by a triple's score in the query's direction plus this weight
    #: x its score read the other way (models/base.py ``score_queries``); "auto": chosen on the
    #: validation split from 0, 0.25 and 0.5 when training ends (until then 0), and written here
    reciprocal_scoring: Union[float, str] = "auto"

    LIMITS: ClassVar[dict[str, Limit]] = {"dim": POSITIVE_INT, "init_scale": POSITIVE, "p_norm": POSITIVE_INT}


#: ``training.mode`` values (lower case) that score every entity for each query
ALL_ENTITY_MODES = ("1vsall", "kvsall")


@dataclass
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 256
    #: "1vsAll" (score every entity, cross-entropy), "KvsAll" (per (h,r) query, all true tails),
    #: "negatives" (shared negative sampling)
    mode: str = "1vsAll"
    loss: str = "ce"  #: ce | bce | logsigmoid | margin | softmax
    #: KGE: adagrad | rowadagrad | adam | sgd; KGT5: auto | adamw | adafactor (see ``kgt5.optimizer``)
    optimizer: str = "adagrad"
    lr: Optional[float] = 0.1  #: KGT5: None = the ``kgt5.lr`` default
    lr_schedule: str = "none"  #: none | cosine | exponential | plateau
    lr_decay: float = 0.95  #: factor for exponential / plateau
    num_negatives: int = 256
    corrupt: str = "both"  #: head | tail | both
    negative_sampler: str = "uniform"  #: uniform | type
    margin: float = 6.0
    adversarial_temperature: float = 0.0  #: > 0 enables self-adversarial weighting
    label_smoothing: float = 0.0
    regularizer: str = "n3"  #: none | l2 | n3
    reg_weight: float = 5e-3
    seed: int = 0
    #: validation cadence (:func:`parse_cadence`): every N epochs (5; 0 = never), a fraction or
    #: multiple of an epoch (0.25: every quarter epoch, at the next batch boundary), or a duration
    #: of training ("10m", "90s")
    eval_every: Union[int, float, str] = 5
    patience: int = 4  #: validations without improvement before stopping (0 = never stop early)
    threads: int = 0  #: torch threads (0 = leave as is)
    #: batches trained at once by this many threads updating the shared tables without locks
    #: (Hogwild; mode=negatives with rowadagrad). 1 = one batch at a time, bit-for-bit reproducible.
    hogwild: int = 1
    progress: bool = True
    #: refuse to start when the up-front memory estimate exceeds this ("16GiB", "500MB", a number
    #: of GiB); "" = no limit (the estimate is still printed, with a warning above the machine's RAM)
    max_memory: str = ""
    device: str = "auto"  #: auto (a GPU when there is one) | cpu | cuda | cuda:N
    #: where the entity table and its optimizer state live: "device", "host" (pinned host memory,
    #: the batch's rows gathered to the device; mode negatives with rowadagrad) or "auto" (the
    #: device when the estimate fits its free memory or max_device_memory, else host)
    entity_table: str = "auto"
    #: cap on the training device's memory for the placement choice ("" = its free memory)
    max_device_memory: str = ""
    #: "bf16": score batches under bfloat16 autocast (matrix products in bf16, loss in float32); "none".
    #: Left at none, the defaults fitted to a large graph may choose bf16 (training/autoconfig.py)
    autocast: str = "none"
    #: deterministic kernels (torch.use_deterministic_algorithms) for seeded runs on a GPU; ops
    #: without one warn. The CPU is deterministic either way.
    deterministic: bool = False
    #: weight of the relation-prediction objective (Chen et al., AKBC 2021): also predict r of
    #: (h, ?, t) with cross-entropy over all relations (modes 1vsAll and negatives); 0 = off
    relation_prediction: float = 0.0
    #: wall-clock budget ("30m", "2h", "1h30m", "90s", seconds): training stops after the epoch that
    #: crosses it (validating that epoch; with validations inside epochs, at the first validation
    #: past it) and keeps the best validated weights; "" = none
    time_budget: str = ""
    #: validate, keep and save an exponential moving average of the weights over about this many
    #: epochs of optimizer steps (training/averaging.py); 0 = off
    average_epochs: float = 0.0

    LIMITS: ClassVar[dict[str, Limit]] = {
        "epochs": POSITIVE_INT, "batch_size": POSITIVE_INT, "lr": POSITIVE, "lr_decay": Limit(0, 1, low_open=True),
        "num_negatives": POSITIVE_INT, "margin": NON_NEGATIVE, "adversarial_temperature": NON_NEGATIVE,
        "label_smoothing": Limit(0, 1, high_open=True), "reg_weight": NON_NEGATIVE, "seed": NON_NEGATIVE,
        "eval_every": NON_NEGATIVE, "patience": NON_NEGATIVE, "threads": NON_NEGATIVE, "hogwild": POSITIVE_INT,
        "relation_prediction": NON_NEGATIVE, "average_epochs": NON_NEGATIVE,
    }


@dataclass
class EvalConfig:
    batch_elements: int = 1 << 22  #: queries x entities scored at once
    filtered: bool = True
    LIMITS: ClassVar[dict[str, Limit]] = {"batch_elements": POSITIVE_INT}
    per_relation: bool = True


#: the core sections, in the order they are written
CORE_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig,
                                  "evaluation": EvalConfig}

_FEATURE_SECTIONS: dict[str, type] = {}
_features_loaded = False


def register_section(name: str, cls: type) -> None:
    """Make ``name`` a config section typed by the dataclass ``cls`` (its field defaults are the
    section's defaults). Called by a feature's light section module at import."""
    if name in CORE_SECTIONS:
        raise ValueError(f"{name!r} is a core config section")
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config section {name!r}: {cls!r} is not a dataclass")
    _FEATURE_SECTIONS[name] = cls


def register_model_defaults(model: str, defaults: dict[str, Any]) -> None:
    """Per-model defaults (dotted keys, e.g. ``{"training.eval_every": 10}``) for ``model``."""
    MODEL_DEFAULTS[model.lower()] = dict(defaults)


def load_feature_sections() -> None:
    """Import every feature's ``section.py`` once (:mod:`kgcomplete.features`)."""
    global _features_loaded
    if _features_loaded:
        return
    _features_loaded = True
    from .features import import_feature_modules

    import_feature_modules("section")


def feature_sections() -> dict[str, type]:
    """Registered feature sections: name -> dataclass."""
    load_feature_sections()
    return dict(_FEATURE_SECTIONS)


def section_names() -> list[str]:
    """Every known section name (core first)."""
    return [*CORE_SECTIONS, *feature_sections()]


def section_class(name: str) -> type:
    """The dataclass of section ``name``; :class:`ConfigError` for an unknown section."""
    if name in CORE_SECTIONS:
        return CORE_SECTIONS[name]
    cls = feature_sections().get(name)
    if cls is None:
        raise ConfigError(_unknown("config section", repr(name), name, section_names(), "known sections"))
    return cls


def _unknown(what: str, shown: str, key: str, known, known_label: str, where: str = "") -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else f"{known_label}: {', '.join(known)}"
    return f"{where}unknown {what} {shown}; {hint}"


@dataclass(eq=False)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    #: the feature sections this config holds (name -> instance of the registered dataclass);
    #: use :meth:`section` or attribute access (``cfg.distributed.workers``)
    features: dict = field(default_factory=dict, repr=False)
    #: where non-default values came from (dotted key -> "model default (NAME)" | "file PATH" |
    #: "flag"), filled by :func:`build_config` (None: a config made otherwise); not saved
    sources: Optional[dict] = field(default=None, repr=False, compare=False)

    def section(self, name: str):
        """The section object ``name`` (a registered feature section is created with its defaults
        on first access); :class:`ConfigError` for an unknown section."""
        if name in CORE_SECTIONS:
            return getattr(self, name)
        cls = section_class(name)
        sec = self.features.get(name)
        if sec is None:
            sec = self.features[name] = cls()
        return sec

    def __getattr__(self, name: str):  # only for names that are not attributes: feature sections
        if name.startswith("_") or name == "features" or "features" not in self.__dict__:
            raise AttributeError(name)
        if name in feature_sections():
            return self.section(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    @property
    def extra(self) -> "_FeatureView":
        """Deprecated mapping view of the feature sections (``cfg.extra["distributed"]["workers"]``);
        use :meth:`section` / ``cfg.distributed``. Writes are checked like every other key."""
        return _FeatureView(self)

    def to_dict(self) -> dict:
        """Nested plain dict: the core sections, then every feature section that differs from its
        defaults (with all its keys)."""
        d = {name: dataclasses.asdict(getattr(self, name)) for name in CORE_SECTIONS}
        for name, sec in self.features.items():
            if sec != type(sec)():
                d[name] = dataclasses.asdict(sec)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "Config":
        cfg = cls()
        apply_dict(cfg, d, where)
        return cfg

    def save(self, path: str | Path) -> None:
        from .atomic import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_dict(read_yaml(path), where=f"{path}: ")


class _SectionView(MutableMapping):
    """A section object seen as a dict (writes are checked and converted like ``--set``)."""

    def __init__(self, obj, path: str):
        self._obj, self._path = obj, path

    def __getitem__(self, key):
        if key not in _fields(self._obj):
            raise KeyError(key)
        value = getattr(self._obj, key)
        return _SectionView(value, f"{self._path}.{key}") if dataclasses.is_dataclass(value) else value

    def __setitem__(self, key, value) -> None:
        _set_field(self._obj, self._path, key, value)

    def __delitem__(self, key) -> None:
        setattr(self._obj, key, getattr(type(self._obj)(), key))

    def __iter__(self) -> Iterator[str]:
        return iter(_fields(self._obj))

    def __len__(self) -> int:
        return len(_fields(self._obj))


class _FeatureView(Mapping):
    """``Config.extra``: feature section name -> :class:`_SectionView` (deprecated)."""

    def __init__(self, cfg: Config):
        self._cfg = cfg

    def __getitem__(self, name):
        if name in CORE_SECTIONS or name not in feature_sections():
            raise KeyError(name)
        return _SectionView(self._cfg.section(name), name)

    def setdefault(self, name, default=None):
        return self[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._cfg.features))

    def __len__(self) -> int:
        return len(self._cfg.features)


#: Per-model defaults, chosen to reach published accuracy on small KGs (umls, nations) on CPU.
#: Features add theirs with :func:`register_model_defaults`.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "complex": {"model.dim": 512},
    "distmult": {"model.reciprocal": True},
    # 1-N scoring as in the paper (KvsAll: each distinct (entity, relation) query once per epoch, 6.7x
    # fewer queries than 1vsAll on umls, where the conv + fc per query is the cost): umls valid MRR .94
    # after 50 cheap epochs; validation every 10, stop after 3 without gain
    "conve": {
        "model.dim": 200, "model.init_scale": 1.0, "training.optimizer": "adam", "training.lr": 0.003,
        "training.regularizer": "none", "training.batch_size": 128, "training.label_smoothing": 0.1,
        "training.mode": "KvsAll", "training.loss": "bce", "training.epochs": 200, "training.eval_every": 10,
        "training.patience": 3,
    },
    "rotate": {
        "model.dim": 32, "model.init_scale": 0.1, "training.optimizer": "adam", "training.lr": 0.03,
        "training.regularizer": "none",
    },
}
for _m in ("transe", "transe_l1", "transe_l2", "transh", "pairre", "triplere", "triplere_v1", "triplere_v2",
           "interht", "trans", "boxe"):
    MODEL_DEFAULTS[_m] = {
        "model.init_scale": 0.1, "training.optimizer": "adam", "training.lr": 0.003, "training.regularizer": "none",
    }
# PairRE still gains on umls at epoch 90-100 (valid MRR .920 -> .925) and plateaus there: more epochs,
# validated every 10 (benchmarks/bench_models.py)
MODEL_DEFAULTS["pairre"].update({"training.epochs": 300, "training.eval_every": 10, "training.patience": 3})


# ------------------------------------------------------------------ setting keys
_HINTS: dict[type, dict[str, Any]] = {}


def _fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _hint(cls: type, key: str):
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls].get(key, Any)


def _strip_optional(hint):
    if typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _is_free_form(cls: type, key: str, current) -> bool:
    hint = _strip_optional(_hint(cls, key))
    return isinstance(current, dict) or hint is dict or typing.get_origin(hint) is dict


def _coerce(hint, value, where: str):
    """``value`` as the field's type (numbers from YAML strings such as ``1e-3``); None stays None."""
    if value is None:
        return None
    hint = _strip_optional(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool):
            raise TypeError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{where} must be an integer, got {value!r}") from None
        if not f.is_integer():
            raise TypeError(f"{where} must be an integer, got {value!r}")
        return int(f)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{where} must be a number, got {value!r}") from None
    return value


def _deep_update(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)


def _check_key(obj, path: str, key, where: str = "") -> None:
    names = _fields(obj)
    if key not in names:
        raise ConfigError(_unknown(f"key {key!r} in config section {path!r}", f"({path}.{key})", str(key),
                                   list(names), "known keys", where))


def _set_field(obj, path: str, key: str, value, where: str = "") -> None:
    """Set ``path.key`` on the section object ``obj``: a sub-section takes a mapping (merged key by
    key), a free-form dict is merged, a scalar is converted to the field's type."""
    _check_key(obj, path, key, where)
    current = getattr(obj, key)
    if dataclasses.is_dataclass(current):
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}{path}.{key} is a section: give a mapping, got {value!r}")
        for k, v in value.items():
            _set_field(current, f"{path}.{key}", k, v, where)
        return
    if _is_free_form(type(obj), key, current):
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}{path}.{key} must be a mapping, got {value!r}")
        if current is None:
            setattr(obj, key, {})
        _deep_update(getattr(obj, key), dict(value))
        return
    value = _coerce(_hint(type(obj), key), value, f"{where}{path}.{key}")
    _check_value(type(obj), key, value, f"{where}{path}.{key}")
    setattr(obj, key, value)


def parse_duration(text, what: str = "budget") -> Optional[float]:
    """``"2h"``, ``"40m"``, ``"1h30m"``, ``"90s"`` or a number of seconds -> seconds ("" / None -> None)."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", s)
        if not s or not parts or not any(parts.groups()):
            raise ValueError(f"{what} {text!r}: expected a duration like 2h, 40m, 1h30m, 90s or a number of seconds")
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        seconds = h * 3600 + m * 60 + sec
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} {text!r} must be a positive duration")
    return seconds


class Cadence(NamedTuple):
    """How often a run validates (``training.eval_every``, :func:`parse_cadence`): exactly one of
    ``epochs`` (every N whole epochs; 0 = never), ``fraction`` (every x epochs of training rows,
    x not a whole number: 0.25, 1.5) or ``seconds`` (every so many seconds of training)."""

    epochs: int = 0
    fraction: Optional[float] = None
    seconds: Optional[float] = None

    @property
    def never(self) -> bool:
        return self.epochs == 0 and self.fraction is None and self.seconds is None

    @property
    def within_epochs(self) -> bool:
        """Validations may fall inside an epoch (a fraction or a duration)."""
        return self.fraction is not None or self.seconds is not None

    def __str__(self) -> str:
        if self.seconds is not None:
            return f"{self.seconds:g} s of training"
        if self.fraction is not None:
            return f"{self.fraction:g} epochs"
        return str(self.epochs) if self.epochs else "never"  # whole epochs: "every 5", as the banner said


def parse_cadence(value, what: str = "training.eval_every") -> Cadence:
    """``training.eval_every`` -> :class:`Cadence`: a whole number of epochs (``5``, ``"5"``; 0 =
    never), a fraction or non-whole multiple of an epoch (``0.25``, ``"1.5"``) or a duration
    (``"10m"``, ``"90s"``, ``"1h30m"``); anything else is a one-line ``ValueError`` naming ``what``."""
    bad = (f"{what}={value!r}: expected a number of epochs (5; 0 = never), a fraction of an epoch (0.25) "
           f"or a duration (10m, 90s)")
    if isinstance(value, bool) or value is None:
        raise ValueError(bad)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            if not re.search(r"[hms]$", text.lower()):
                raise ValueError(bad) from None
            try:
                return Cadence(seconds=parse_duration(text, what))
            except ValueError:
                raise ValueError(bad) from None
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(bad)
    if float(value).is_integer():
        return Cadence(epochs=int(value))
    return Cadence(fraction=float(value))


def weight_or_auto(value, key: str) -> Optional[float]:
    """A weight option that may be ``auto`` (chosen on the validation split when training ends) ->
    its weight, or None for ``auto``; anything else than ``auto`` or a number >= 0 is a one-line
    ``ValueError`` naming ``key``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = math.nan
    if isinstance(value, bool) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{key}={value!r}: expected auto or a number >= 0")
    return weight


def reciprocal_scoring_weight(value) -> Optional[float]:
    """``model.reciprocal_scoring`` -> its weight, or None for ``auto`` (see :func:`weight_or_auto`)."""
    return weight_or_auto(value, "model.reciprocal_scoring")


def _check_value(cls: type, key: str, value, where: str) -> None:
    """A float must be finite; a number must lie in the section's ``LIMITS[key]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    limit = getattr(cls, "LIMITS", {}).get(key)
    if limit is None:
        return
    low_bad = limit.low is not None and (value <= limit.low if limit.low_open else value < limit.low)
    high_bad = limit.high is not None and (value >= limit.high if limit.high_open else value > limit.high)
    if low_bad or high_bad:
        raise ValueError(f"{where} must be {limit}, got {value!r}")


def validate(cfg: "Config") -> None:
    """Check every numeric field of every section of ``cfg`` (finite, in its ``LIMITS``): catches
    values assigned directly in Python, which skip the checks of ``--set`` / YAML / overrides."""
    for name in [*CORE_SECTIONS, *cfg.features]:
        _validate_section(cfg.section(name), name)
    parse_duration(cfg.training.time_budget, "training.time_budget")
    parse_cadence(cfg.training.eval_every, "training.eval_every")
    reciprocal_scoring_weight(cfg.model.reciprocal_scoring)


def _validate_section(obj, path: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate_section(value, f"{path}.{f.name}")
        else:
            _check_value(type(obj), f.name, value, f"{path}.{f.name}")


def section_from_dict(name: str, values: Optional[dict], where: str = ""):
    """A new ``name`` section object: its defaults, then the mapping ``values`` (checked and
    converted like a YAML file's section; :class:`ConfigError` for an unknown key)."""
    obj = section_class(name)()
    _set_section(obj, name, values, where)
    return obj


def _set_section(obj, name: str, values, where: str = "") -> None:
    if values is None:
        return
    if not isinstance(values, Mapping):
        raise TypeError(f"{where}config section {name!r} must be a mapping, got {values!r}")
    for k, v in values.items():
        _set_field(obj, name, k, v, where)


def apply_dict(cfg: Config, d: Optional[dict], where: str = "") -> None:
    """Merge a nested dict (a YAML file's content) into ``cfg``; every section and key is checked
    (``where``, e.g. ``"my.yaml: "``, starts the error messages)."""
    if d is None:
        return
    if not isinstance(d, Mapping):
        raise TypeError(f"{where}a config must be a mapping of sections, got {d!r}")
    for key, value in d.items():
        if key == "extra" and isinstance(value, Mapping):  # a dumped ``extra`` mapping: its sections
            apply_dict(cfg, value, where)
            continue
        if key not in CORE_SECTIONS and key not in feature_sections():
            raise ConfigError(_unknown("config section", repr(key), str(key), section_names(), "known sections", where))
        _set_section(cfg.section(key), key, value, where)


def apply_override(cfg: Config, dotted: str, value: Any) -> None:
    """``apply_override(cfg, "training.lr", 0.05)``; ``kgt5.decoding.beam_size`` sets a key of a
    sub-section; below a free-form dict (``model.options.k``, ``kgt5.model.d_model``) any key goes."""
    parts = str(dotted).split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"bad config key {dotted!r}: expected section.key (e.g. training.lr)")
    obj, path = cfg.section(parts[0]), parts[0]
    for i, p in enumerate(parts[1:-1], start=1):
        _check_key(obj, path, p)
        current = getattr(obj, p)
        if dataclasses.is_dataclass(current):
            obj, path = current, f"{path}.{p}"
            continue
        if _is_free_form(type(obj), p, current):
            if current is None:
                current = {}
                setattr(obj, p, current)
            node = current
            for q in parts[i + 1:-1]:
                if not isinstance(node.get(q, {}), dict):
                    raise TypeError(f"bad config key {dotted!r}: {q!r} holds {node[q]!r}, not a mapping")
                node = node.setdefault(q, {})
            node[parts[-1]] = copy.deepcopy(value)
            return
        raise ConfigError(f"bad config key {dotted!r}: {path}.{p} is a value, not a section")
    _set_field(obj, path, parts[-1], value)


def parse_override(text: str) -> tuple[str, Any]:
    """``"training.lr=0.05"`` -> ``("training.lr", 0.05)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ValueError(f"override {text!r}: the value of {key.strip()!r} is not valid YAML "
                         f"(quote it: {key.strip()}='\"...\"')") from None


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict; a broken file is a one-line ``ConfigError`` naming the line."""
    try:
        d = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8; damaged or binary?)") from None
    except yaml.YAMLError as e:  # one line: where the file breaks
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if d is None:
        raise ConfigError(f"{path}: the config file is empty (a run's config.yaml is never empty: damaged? "
                          f"a config given with --config needs at least one section)")
    if not isinstance(d, dict):
        raise TypeError(f"{path}: a config must be a mapping of sections, got {type(d).__name__}")
    return d


def model_defaults(name: str) -> dict[str, Any]:
    """Per-model defaults of ``name`` (built-in and registered by features)."""
    load_feature_sections()
    return dict(MODEL_DEFAULTS.get(str(name).lower(), {}))


def build_config(
    model: Optional[str] = None,
    file: Optional[str | Path] = None,
    overrides: Optional[dict[str, Any]] = None,
) -> Config:
    """Defaults < per-model defaults < YAML file < overrides (``{"training.lr": 0.1, ...}``).

    ``cfg.sources`` maps each dotted key that is not a plain default to where its value came from:
    ``model default (NAME)``, ``file PATH`` or ``flag`` (``kgc train --print-config`` shows them)."""
    file_dict = read_yaml(file) if file else {}
    overrides = dict(overrides or {})
    file_model = file_dict.get("model") if isinstance(file_dict.get("model"), dict) else {}
    name = overrides.get("model.name") or model or file_model.get("name") or "complex"
    cfg = Config()
    cfg.model.name = name
    sources: dict[str, str] = {}
    for k, v in model_defaults(name).items():
        apply_override(cfg, k, v)
        sources[k] = f"model default ({name})"
    apply_dict(cfg, file_dict, f"{file}: " if file else "")
    sources.update({k: f"file {file}" for k in flatten(file_dict)})
    cfg.model.name = name
    for k, v in overrides.items():
        if v is not None:
            apply_override(cfg, k, v)
            sources[k] = "flag"
    if model or "model.name" in overrides:
        sources["model.name"] = "flag"
    cfg.sources = sources
    return cfg


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": value}`` (lists, scalars and empty mappings are leaves)."""
    if not isinstance(d, Mapping) or not d:
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def explain(cfg: "Config") -> str:
    """The resolved configuration as YAML, every key with a comment saying where its value came
    from (``default`` unless :func:`build_config` recorded another source)."""
    sources = getattr(cfg, "sources", {}) or {}
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"{section}:")
        for key, value in values.items():
            text = yaml.safe_dump({key: value}, default_flow_style=True, width=10**6).strip()[1:-1]
            where = sources.get(f"{section}.{key}") or next(
                (src for k, src in sources.items() if k.startswith(f"{section}.{key}.")), "default")
            lines.append(f"  {text:<44} # {where}")
    return "\n".join(lines)


__all__ = [
    "ALL_ENTITY_MODES", "CORE_SECTIONS", "Cadence", "Config", "ConfigError", "DataConfig", "EvalConfig", "MODEL_DEFAULTS",
    "Limit", "ModelConfig", "TrainingConfig", "apply_dict", "validate", "apply_override", "build_config", "explain", "flatten", "parse_cadence", "parse_duration",
    "feature_sections", "load_feature_sections", "model_defaults", "parse_override", "register_model_defaults",
    "register_section", "section_class", "section_from_dict", "section_names", "reciprocal_scoring_weight",
    "weight_or_auto",
]
