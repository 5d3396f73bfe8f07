"""Readers for the native layouts of published benchmark KGs.

Each ``build_*`` function turns an extracted download (a folder) into a compact folder (see
:mod:`kgcomplete.data.compact`); ``read_*`` functions return a :class:`Dataset` in memory.

| module        | layout                                                                      |
|---------------|-----------------------------------------------------------------------------|
| text          | ConvE / LibKGE ``train.txt valid.txt test.txt`` (CRLF tolerated), kinships, |
|               | YAGO3-10, FB15k-237 (Microsoft ``Release/``), WN18RR                          |
| ogb           | OGB link prediction: ``split/<scheme>/{train,valid,test}.pt`` + ``mapping/``  |
| wikikg90m     | OGB-LSC WikiKG90Mv2 ``processed/*.npy`` + ``wikikg90mv2_mapping/*.csv``       |
| wikidata5m    | ``wikidata5m_transductive_*.txt`` + alias files                             |
| openbiolink   | OpenBioLink2020 ``train_test_data/*_sample.csv`` (labeled) + node types      |
| codex         | CoDEx repository ``data/`` layout (triples, entities/relations JSON, types) |
"""

from .codex import build_codex, read_codex
from .ogb import build_ogb, load_ogb_dict, read_ogb
from .openbiolink import build_openbiolink, read_openbiolink
from .text import build_text_layout, find_split_folder
from .wikidata5m import build_wikidata5m, read_aliases
from .wikikg90m import build_wikikg90m

__all__ = [
    "build_codex",
    "build_ogb",
    "build_openbiolink",
    "build_text_layout",
    "build_wikidata5m",
    "build_wikikg90m",
    "find_split_folder",
    "load_ogb_dict",
    "read_aliases",
    "read_codex",
    "read_ogb",
    "read_openbiolink",
]
