"""kgcomplete: knowledge graph completion with shallow KGE models (BESS-style) and KGT5.

Quick use::

    import kgcomplete as kgc
    ds = kgc.load_dataset("umls")
    run = kgc.train(ds, model="complex", out="runs/umls-complex")
    print(run.evaluate("test")["mrr"])
    run.predict(head="virus", relation="causes", k=5)
"""

__version__ = "0.1.0"

import importlib

#: public name -> submodule; imported on first use, so ``kgc --help`` and ``import kgcomplete.config``
#: do not pay for torch and pandas (PEP 562)
_EXPORTS = {
    "Config": ".config", "build_config": ".config",
    "Dataset": ".data", "Vocabulary": ".data", "load_dataset": ".data", "registered_datasets": ".data",
    "evaluate": ".evaluation", "build_model": ".models", "model_names": ".models",
    "train": ".api", "load_run": ".api", "tune": ".tune",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = [*_EXPORTS, "__version__"]
