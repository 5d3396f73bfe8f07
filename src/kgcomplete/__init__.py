"""kgcomplete: knowledge graph completion with shallow KGE models (BESS-style) and KGT5.

Quick use::

    import kgcomplete as kgc
    ds = kgc.load_dataset("umls")
    run = kgc.train(ds, model="complex", out="runs/umls-complex")
    print(run.evaluate("test")["mrr"])
    run.predict(head="virus", relation="causes", k=5)
"""

__version__ = "0.1.0"

from .config import Config, build_config
from .data import Dataset, Vocabulary, load_dataset, registered_datasets
from .evaluation import evaluate
from .models import build_model, model_names


def train(*args, **kwargs):
    """See :func:`kgcomplete.runs.train`."""
    from .runs import train as _train

    return _train(*args, **kwargs)


def load_run(path, **kwargs):
    """See :func:`kgcomplete.runs.load_run`."""
    from .runs import load_run as _load

    return _load(path, **kwargs)


__all__ = ["Config", "Dataset", "Vocabulary", "build_config", "build_model", "evaluate", "load_dataset",
           "load_run", "model_names", "registered_datasets", "train", "__version__"]
