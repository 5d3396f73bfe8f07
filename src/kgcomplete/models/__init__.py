"""Shallow KGE models and the name -> class registry."""

from __future__ import annotations

from .base import KGEModel
from .bilinear import ComplEx, ConvE, DistMult
from .distance import BoxE, InterHT, PairRE, RotatE, TranS, TransE, TransH, TripleRE, TripleREv2

MODELS: dict[str, type[KGEModel]] = {
    cls.name: cls
    for cls in (TransE, TransH, RotatE, PairRE, TripleRE, TripleREv2, DistMult, ComplEx, ConvE, BoxE, InterHT, TranS)
}
#: aliases -> (class name, fixed options)
ALIASES: dict[str, tuple[str, dict]] = {
    "transe_l1": ("transe", {"p_norm": 1}),
    "transe_l2": ("transe", {"p_norm": 2}),
    "triplere_v1": ("triplere", {}),
}


def model_names() -> list[str]:
    return sorted(MODELS) + sorted(ALIASES)


def resolve_model(name: str) -> tuple[type[KGEModel], dict]:
    """The class a model name (case-insensitive, or an alias) stands for, with the alias's fixed options."""
    key = name.lower().replace("-", "_")
    key, fixed = ALIASES.get(key, (key, {}))
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    return MODELS[key], fixed


def build_model(name: str, num_entities: int, num_relations: int, **options) -> KGEModel:
    """Instantiate a model by name (case-insensitive), e.g. ``build_model("complex", E, R, dim=100)``."""
    cls, fixed = resolve_model(name)
    return cls(num_entities, num_relations, **{**options, **fixed})


def from_config(cfg, num_entities: int, num_relations: int) -> KGEModel:
    """The model a configuration describes: ``cfg`` is a :class:`~kgcomplete.config.Config` or its
    ``model`` section (name, dim, reciprocal, init_scale, p_norm, storage_dtype, options). A BESS
    worker passes its shard size as ``num_entities``."""
    from ..config import reciprocal_scoring_weight

    m = getattr(cfg, "model", cfg)
    model = build_model(m.name, num_entities, num_relations, dim=m.dim, reciprocal=m.reciprocal,
                        init_scale=m.init_scale, p_norm=m.p_norm, storage_dtype=m.storage_dtype, **m.options)
    model.reciprocal_scoring = reciprocal_scoring_weight(m.reciprocal_scoring) or 0.0
    if model.reciprocal_scoring and not model.reads_both_ways:
        raise ValueError(f"model.reciprocal_scoring={model.reciprocal_scoring:g} needs model.reciprocal: true and a model that "
                         f"scores candidates as heads ({m.name} does not); set it to 0 or auto")
    return model


__all__ = ["KGEModel", "MODELS", "build_model", "resolve_model", "from_config", "model_names", *[c.__name__ for c in MODELS.values()]]
