"""One configuration for a run: dataclasses, YAML files and dotted overrides.

Precedence (later wins): built-in defaults < per-model defaults (:data:`MODEL_DEFAULTS`) <
``--config FILE.yaml`` < CLI flags / ``--set section.key=value``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml


@dataclass
class DataConfig:
    source: Optional[str] = "umls"  #: registered name or folder path; None = given in code
    unknown: str = "error"  #: valid/test entities unseen in train: error | drop | keep


@dataclass
class ModelConfig:
    name: str = "complex"
    dim: int = 128
    reciprocal: bool = True
    init_scale: float = 1e-3
    p_norm: int = 1
    #: entity table dtype: float32 | float16 | bfloat16 (math stays float32; needs optimizer rowadagrad)
    storage_dtype: str = "float32"
    options: dict = field(default_factory=dict)  #: model-specific keyword arguments


@dataclass
class TrainingConfig:
    epochs: int = 100
    batch_size: int = 256
    #: "1vsAll" (score every entity, cross-entropy), "KvsAll" (per (h,r) query, all true tails),
    #: "negatives" (shared negative sampling)
    mode: str = "1vsAll"
    loss: str = "ce"  #: ce | bce | logsigmoid | margin | softmax
    optimizer: str = "adagrad"  #: adagrad | rowadagrad | adam | sgd
    lr: float = 0.1
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
    eval_every: int = 5
    patience: int = 4  #: validations without improvement before stopping (0 = never stop early)
    threads: int = 0  #: torch threads (0 = leave as is)
    #: batches trained at once by this many threads updating the shared tables without locks
    #: (Hogwild; mode=negatives with rowadagrad). 1 = one batch at a time, bit-for-bit reproducible.
    hogwild: int = 1
    progress: bool = True
    #: refuse to start when the up-front memory estimate exceeds this ("16GiB", "500MB", a number
    #: of GiB); "" = no limit (the estimate is still printed, with a warning above the machine's RAM)
    max_memory: str = ""


@dataclass
class EvalConfig:
    batch_elements: int = 1 << 22  #: queries x entities scored at once
    filtered: bool = True
    per_relation: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    #: free-form sections for plug-ins (e.g. ``kgt5``, ``distributed``)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        cfg = cls()
        apply_dict(cfg, d)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})


_SECTIONS = {"data", "model", "training", "evaluation"}

#: Per-model defaults, chosen to reach published accuracy on small KGs (umls, nations) on CPU.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "complex": {"model.dim": 512},
    "distmult": {"model.reciprocal": True},
    "conve": {
        "model.dim": 200, "model.init_scale": 1.0, "training.optimizer": "adam", "training.lr": 0.003,
        "training.regularizer": "none", "training.batch_size": 128, "training.label_smoothing": 0.1,
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


def apply_dict(cfg: Config, d: dict) -> None:
    """Merge a nested dict into ``cfg`` (unknown top-level sections go to ``cfg.extra``)."""
    for key, value in (d or {}).items():
        if key in _SECTIONS and isinstance(value, dict):
            section = getattr(cfg, key)
            for k, v in value.items():
                _set_field(section, key, k, v)
        elif key == "extra" and isinstance(value, dict):
            apply_dict(cfg, value)
        else:
            if isinstance(value, dict) and isinstance(cfg.extra.get(key), dict):
                cfg.extra[key].update(value)
            else:
                cfg.extra[key] = copy.deepcopy(value)


def _set_field(section, section_name: str, key: str, value) -> None:
    names = {f.name: f for f in dataclasses.fields(section)}
    if key not in names:
        raise KeyError(f"unknown config key {section_name}.{key}; known: {', '.join(sorted(names))}")
    if key == "options" and isinstance(value, dict):
        section.options.update(value)
        return
    default = names[key].default
    if value is not None and isinstance(default, bool) and not isinstance(value, bool):
        raise TypeError(f"{section_name}.{key} must be true/false, got {value!r}")
    if value is not None and isinstance(default, (int, float)) and not isinstance(default, bool):
        value = type(default)(value) if not (isinstance(default, int) and isinstance(value, float) and value != int(value)) else value
    setattr(section, key, value)


def apply_override(cfg: Config, dotted: str, value: Any) -> None:
    """``apply_override(cfg, "training.lr", 0.05)``; ``model.options.k`` sets a model option;
    other first parts (``kgt5.preset``) go to ``cfg.extra``."""
    parts = dotted.split(".")
    if parts[0] in _SECTIONS:
        if len(parts) == 3 and parts[1] == "options":
            cfg.model.options[parts[2]] = value
            return
        if len(parts) != 2:
            raise KeyError(f"bad config key {dotted!r}")
        _set_field(getattr(cfg, parts[0]), parts[0], parts[1], value)
    else:
        node = cfg.extra
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"training.lr=0.05"`` -> ``("training.lr", 0.05)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def build_config(
    model: Optional[str] = None,
    file: Optional[str | Path] = None,
    overrides: Optional[dict[str, Any]] = None,
) -> Config:
    """Defaults < per-model defaults < YAML file < overrides (``{"training.lr": 0.1, ...}``)."""
    file_dict = yaml.safe_load(Path(file).read_text()) if file else {}
    overrides = dict(overrides or {})
    name = overrides.get("model.name") or model or (file_dict.get("model") or {}).get("name") or "complex"
    cfg = Config()
    cfg.model.name = name
    for k, v in MODEL_DEFAULTS.get(name.lower(), {}).items():
        apply_override(cfg, k, v)
    apply_dict(cfg, file_dict)
    cfg.model.name = name
    for k, v in overrides.items():
        if v is not None:
            apply_override(cfg, k, v)
    return cfg
