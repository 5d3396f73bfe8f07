"""Search spaces: a YAML file of fixed config keys and Optuna parameters (see ``spaces/bilinear.yaml``).

:func:`load_space` reads a file (or the default of a model's family from ``spaces/``), checks every
entry and every config key it names (an unknown key is a one-line error before any trial starts),
and :meth:`Space.config` turns one Optuna trial into a :class:`~kgcomplete.config.Config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import Config, ConfigError, apply_dict, apply_override, build_config, read_yaml

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
_ENTRY_KEYS = {"key", "choices", "low", "high", "log", "step", "when"}


@dataclass
class Param:
    """One Optuna parameter: ``name`` (its Optuna name), the config ``key`` it sets, and either
    ``choices`` or a ``low``/``high`` range; ``when`` holds conditions on the config built so far."""

    name: str
    key: str
    choices: Optional[list] = None
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    when: dict = field(default_factory=dict)

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high, self.step) if v is not None)

    def applies(self, cfg: Config) -> bool:
        return all(_value(cfg, k) in vs for k, vs in self.when.items())

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list:
        """The values a grid search tries: the choices, or every step of an int/stepped range."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and not self.is_int:
            raise ValueError(f"search space: {self.name} is a continuous range; the grid sampler needs "
                             f"`choices` or a `step`")
        step = self.step or 1
        n = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        return [self.low + i * step for i in range(n)]


@dataclass
class Space:
    """A search space: where it came from, the keys every trial gets, its parameters, and keyword
    arguments for the pruner (``pruner:`` in the file, e.g. ``{n_startup_trials: 2}``)."""

    source: str
    fixed: dict = field(default_factory=dict)
    params: list[Param] = field(default_factory=list)
    pruner: dict = field(default_factory=dict)
    models: list = field(default_factory=list)

    def config(self, base: Config, trial) -> Config:
        """``base`` (which holds the fixed keys: :func:`base_config`) with each parameter whose
        conditions hold, sampled by ``trial``."""
        cfg = Config.from_dict(base.to_dict())
        for p in self.params:
            if p.applies(cfg):
                apply_override(cfg, p.key, p.suggest(trial))
        return cfg

    def check(self, base: Config) -> None:
        """Every key of the space must be a config key whose values it can take: set the fixed keys
        and every parameter's extreme values on a copy of ``base`` (one-line errors naming the file)."""
        cfg = Config.from_dict(base.to_dict())
        for k, v in self.fixed.items():
            _apply(cfg, k, v, self.source)
        for p in self.params:
            for v in (p.choices if p.choices is not None else [p.low, p.high]):
                _apply(Config.from_dict(cfg.to_dict()), p.key, v, self.source)
            for k in p.when:
                _value(cfg, k, self.source)

    def grid(self) -> dict[str, list]:
        return {p.name: p.grid() for p in self.params}

    def to_dict(self) -> dict:
        params = {}
        for p in self.params:
            entry = {"key": p.key} if p.key != p.name else {}
            entry.update({k: getattr(p, k) for k in ("choices", "low", "high", "step") if getattr(p, k) is not None})
            if p.log:
                entry["log"] = True
            if p.when:
                entry["when"] = p.when
            params[p.name] = entry
        return {"models": self.models, "fixed": self.fixed, "params": params, "pruner": self.pruner}


def base_config(space: Space, model: str, file=None, overrides: Optional[dict] = None) -> Config:
    """Every trial's config before sampling: defaults < per-model defaults < the space's ``fixed``
    keys < ``file`` (``--config``) < ``overrides`` (``--set``)."""
    cfg = build_config(model, None, {})
    for k, v in space.fixed.items():
        _apply(cfg, k, v, space.source)
    if file:
        apply_dict(cfg, read_yaml(file), f"{file}: ")
    for k, v in (overrides or {}).items():
        apply_override(cfg, k, v)
    return cfg


def _apply(cfg: Config, key: str, value, source: str) -> None:
    try:
        apply_override(cfg, key, value)
    except (ConfigError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: {key}: {e}") from None


def _value(cfg: Config, key: str, source: str = "") -> Any:
    node: Any = cfg.section(key.split(".")[0])
    for part in key.split(".")[1:]:
        if isinstance(node, dict):
            node = node.get(part)
        elif hasattr(node, part):
            node = getattr(node, part)
        else:
            raise ValueError(f"{source}: `when` names {key!r}, which is not a config key")
    return node


def default_space_file(model: str) -> Path:
    """The default space file of ``model``'s family (``spaces/*.yaml`` whose ``models`` list it)."""
    name = str(model).lower()
    for f in sorted(SPACES_DIR.glob("*.yaml")):
        if name in (read_yaml(f).get("models") or []):
            return f
    raise ValueError(f"no default search space for model {model!r}; give one with --space FILE.yaml "
                     f"(format: {SPACES_DIR / 'bilinear.yaml'})")


def load_space(path: Optional[str | Path], model: str) -> Space:
    """The space in ``path``, or the default of ``model``'s family; every entry checked."""
    path = Path(path) if path else default_space_file(model)
    return parse_space(read_yaml(path), str(path))


def parse_space(d: dict, source: str) -> Space:
    unknown = set(d) - {"models", "fixed", "params", "pruner"}
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {sorted(unknown)}; expected models, fixed, params, pruner")
    fixed, entries, pruner = d.get("fixed") or {}, d.get("params") or {}, d.get("pruner") or {}
    for what, v in (("fixed", fixed), ("params", entries), ("pruner", pruner)):
        if not isinstance(v, dict):
            raise ValueError(f"{source}: `{what}` must be a mapping")
    if not entries:
        raise ValueError(f"{source}: `params` is empty: nothing to search")
    params = [_param(name, spec, source) for name, spec in entries.items()]
    return Space(source, dict(fixed), params, dict(pruner), list(d.get("models") or []))


def _param(name: str, spec, source: str) -> Param:
    where = f"{source}: params.{name}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected a mapping like {{choices: [...]}} or {{low: L, high: H}}")
    bad = set(spec) - _ENTRY_KEYS
    if bad:
        raise ValueError(f"{where}: unknown field(s) {sorted(bad)}; fields: {', '.join(sorted(_ENTRY_KEYS))}")
    when = spec.get("when") or {}
    if not isinstance(when, dict) or not all(isinstance(v, list) for v in when.values()):
        raise ValueError(f"{where}: `when` must map config keys to lists of values")
    p = Param(name, str(spec.get("key", name)), spec.get("choices"), spec.get("low"), spec.get("high"),
              bool(spec.get("log", False)), spec.get("step"), dict(when))
    if "." not in p.key:
        raise ValueError(f"{where}: {p.key!r} is not a dotted config key (e.g. training.lr); set `key`")
    if p.choices is not None:
        if not isinstance(p.choices, list) or not p.choices or any(k in spec for k in ("low", "high", "log", "step")):
            raise ValueError(f"{where}: `choices` must be a non-empty list, without low/high/log/step")
        return p
    if p.low is None or p.high is None:
        raise ValueError(f"{where}: give `choices` or both `low` and `high`")
    for k in ("low", "high", "step"):
        v = getattr(p, k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{where}: `{k}` must be a number, got {v!r}")
    if not p.low < p.high or (p.log and p.low <= 0) or (p.log and p.step is not None):
        raise ValueError(f"{where}: need low < high (and low > 0, no step, with log: true)")
    return p


__all__ = ["Param", "SPACES_DIR", "Space", "base_config", "default_space_file", "load_space", "parse_space"]
