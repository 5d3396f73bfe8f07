"""Datasets: vocabularies, readers, the :class:`Dataset` object and the name registry."""

from .dataset import Dataset, UnknownLabelError
from .readers import DataFormatError
from .registry import DatasetEntry, load_dataset, register_dataset, registered_datasets
from .vocabulary import Vocabulary
from . import catalog as _catalog  # noqa: E402,F401  (registers the downloadable benchmarks)

__all__ = [
    "DataFormatError",
    "Dataset",
    "DatasetEntry",
    "UnknownLabelError",
    "Vocabulary",
    "load_dataset",
    "register_dataset",
    "registered_datasets",
]
