"""The downloadable benchmark KGs: official URLs, sizes/checksums where published, licences, builders.

Importing this module only registers entries; files are downloaded on the first
``load_dataset(name)`` (or ``kgc datasets download NAME``), extracted under ``$KGC_HOME/raw/``,
converted once to a compact copy under ``$KGC_HOME/compact/`` and memory-mapped from then on.

Sources of the facts below: OGB ``ogb/linkproppred/master.csv`` and ``ogb/lsc/wikikg90mv2.py``
(ogb 1.3.6), the OGB-LSC WikiKG90Mv2 page, the Wikidata5M project page, the OpenBioLink README
and Zenodo record, the ConvE repository (TimDettmers/ConvE), the CoDEx repository (tsafavi/codex),
and the FB15k-237 Microsoft download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .dataset import Dataset
from .download import RemoteFile, compact_dir, prepare
from .registry import DatasetEntry, register_dataset

log = logging.getLogger(__name__)

CONVE = "https://github.com/TimDettmers/ConvE/raw/master"
CODEX = "https://raw.githubusercontent.com/tsafavi/codex/master/data"

OGB_CITATION = ("Hu, Fey, Zitnik, Dong, Ren, Liu, Catasta, Leskovec. Open Graph Benchmark: Datasets for "
                "Machine Learning on Graphs. NeurIPS 2020.")
CONVE_CITATION = ("Dettmers, Minervini, Stenetorp, Riedel. Convolutional 2D Knowledge Graph Embeddings. "
                  "AAAI 2018.")


@dataclass(frozen=True)
class Recipe:
    """How to turn the downloaded files into a compact copy.

    ``build(raw, out, name=..., unknown=..., progress=...)`` writes the compact folder ``out``.
    ``id_based``: ids are given by the files (OGB), so ``unknown`` does not change the result.
    """

    build: Callable[..., Path]
    id_based: bool = False


def _text(raw: Path, out: Path, name: str, unknown: str, progress: bool) -> Path:
    from .formats.text import build_text_layout

    return build_text_layout(raw, out, name=name, unknown=unknown, progress=progress)


def _ogb(raw: Path, out: Path, name: str, unknown: str, progress: bool) -> Path:
    from .formats.ogb import build_ogb

    return build_ogb(raw, out, name=name, trusted=True)


def _wikikg90m(raw: Path, out: Path, name: str, unknown: str, progress: bool) -> Path:
    from .formats.wikikg90m import build_wikikg90m

    return build_wikikg90m(raw, out, name=name, progress=progress)


def _wikidata5m(raw: Path, out: Path, name: str, unknown: str, progress: bool) -> Path:
    from .formats.wikidata5m import build_wikidata5m

    return build_wikidata5m(raw, out, name=name, unknown=unknown, progress=progress)


def _openbiolink(raw: Path, out: Path, name: str, unknown: str, progress: bool) -> Path:
    from .formats.openbiolink import build_openbiolink

    return build_openbiolink(raw, out, name=name, unknown=unknown, progress=progress)


def _codex(size: str) -> Callable[..., Path]:
    def build(raw: Path, out: Path, name: str, unknown: str, progress: bool) -> Path:
        from .formats.codex import build_codex

        return build_codex(raw, out, name=name, unknown=unknown, size=size, progress=progress)

    return build


_RECIPES: dict[str, Recipe] = {}


def compact_path(name: str, unknown: str = "error") -> Path:
    """Where the compact copy of a registered dataset lives."""
    recipe = _RECIPES[name]
    return compact_dir(name) / ("ids" if recipe.id_based else f"unknown-{unknown}")


def materialize(name: str, unknown: str = "error", progress: bool = True, verify_checksum: bool = True) -> Path:
    """Download (if needed), extract and convert ``name``; return its compact folder."""
    from .compact import is_compact

    entry_files = _FILES[name]
    out = compact_path(name, unknown)
    if is_compact(out):
        return out
    raw = prepare(name, entry_files, progress=progress, verify_checksum=verify_checksum)
    log.info("%s: building the compact copy in %s (once)", name, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _RECIPES[name].build(raw, out, name=name, unknown=unknown, progress=progress)
    return out


def _loader(name: str) -> Callable[..., Dataset]:
    def load(unknown: str = "error", progress: bool = True) -> Dataset:
        from .compact import load_compact

        return load_compact(materialize(name, unknown=unknown, progress=progress), name=name)

    return load


_FILES: dict[str, tuple[RemoteFile, ...]] = {}


def _register(name: str, files: tuple[RemoteFile, ...], recipe: Recipe, description: str, licence: str,
              homepage: str, citation: str, stats: str) -> None:
    _FILES[name] = files
    _RECIPES[name] = recipe
    register_dataset(DatasetEntry(name=name, loader=_loader(name), description=description, source="download",
                                  licence=licence, files=files, homepage=homepage, citation=citation, stats=stats))


def download_size(files: tuple[RemoteFile, ...]) -> Optional[int]:
    """Sum of the published sizes, or None if any is unknown."""
    sizes = [f.size for f in files]
    return None if any(s is None for s in sizes) else int(sum(sizes))


# ---------------------------------------------------------------------------------------- OGB
_register(
    "ogbl-biokg",
    (RemoteFile("biokg.zip", ("http://snap.stanford.edu/ogb/data/linkproppred/biokg.zip",), size=963_312_546,
                note="URL from ogb/linkproppred/master.csv (ogb 1.3.6); size from an HTTP HEAD, not published"),),
    Recipe(_ogb, id_based=True),
    "OGB biomedical KG: 5 entity types, 51 relations; random split with 500 typed head/tail negatives per "
    "valid/test triple (OGB protocol, MRR)",
    "CC0 1.0 (as listed by OGB)",
    "https://ogb.stanford.edu/docs/linkprop/#ogbl-biokg",
    OGB_CITATION,
    "93,773 entities, 51 relations, 4,762,678 / 162,886 / 162,870 triples",
)
_register(
    "ogbl-wikikg2",
    (RemoteFile("wikikg-v2.zip", ("http://snap.stanford.edu/ogb/data/linkproppred/wikikg-v2.zip",),
                note="URL from ogb/linkproppred/master.csv (ogb 1.3.6)"),),
    Recipe(_ogb, id_based=True),
    "OGB Wikidata KG: time split with 500 head/tail negatives per valid/test triple (OGB protocol, MRR)",
    "CC0 1.0 (Wikidata)",
    "https://ogb.stanford.edu/docs/linkprop/#ogbl-wikikg2",
    OGB_CITATION,
    "2,500,604 entities, 535 relations, 16,109,182 / 429,456 / 598,543 triples",
)
_register(
    "wikikg90m-v2",
    (
        RemoteFile("wikikg90m-v2.zip",
                   ("https://dgl-data.s3-accelerate.amazonaws.com/dataset/OGB-LSC/wikikg90m-v2.zip",
                    "http://ogb-data.stanford.edu/data/lsc/wikikg90m-v2.zip"),
                   md5="bfd6257134b7eb59e2edc0a4af21faa8",
                   note="URLs and md5 from ogb/lsc/wikikg90mv2.py (ogb 1.3.6); includes ~140 GB of text "
                        "features that kgcomplete does not load"),
        RemoteFile("wikikg90mv2_mapping.zip", ("http://snap.stanford.edu/ogb/data/lsc/mapping/wikikg90mv2_mapping.zip",),
                   md5="2f0e3178a5e201bd1ab59a81f2dcba72",
                   note="'Text data' download of the OGB-LSC WikiKG90Mv2 page (2.4 GB)"),
    ),
    Recipe(_wikikg90m, id_based=True),
    "OGB-LSC WikiKG90Mv2 (Wikidata 2021): train_hrt + validation; entity/relation titles and descriptions "
    "as names (test tails are hidden by the challenge and not loaded)",
    "CC0 1.0 (Wikidata)",
    "https://ogb.stanford.edu/docs/lsc/wikikg90mv2/",
    "Hu, Fey, Ren, Nakata, Dong, Leskovec. OGB-LSC: A Large-Scale Challenge for Machine Learning on Graphs. "
    "NeurIPS Datasets and Benchmarks 2021.",
    "91,230,610 entities, 1,387 relations, 601,062,811 train / 15,000 valid triples",
)

# ---------------------------------------------------------------------------------------- Wikidata5M
_register(
    "wikidata5m",
    (
        RemoteFile("wikidata5m_transductive.tar.gz",
                   ("https://www.dropbox.com/s/6sbhm0rwo4l73jq/wikidata5m_transductive.tar.gz?dl=1",),
                   size=168_258_214,
                   sha256="383160990b41c0905fc03f4a8afbb9b12be1ca3591e026bde6cdc94a59542597",
                   note="URL from the Wikidata5M page; size/sha256 as recorded for the intfloat/wikidata5m mirror"),
        RemoteFile("wikidata5m_alias.tar.gz",
                   ("https://www.dropbox.com/s/lnbhc8yuhit4wm5/wikidata5m_alias.tar.gz?dl=1",),
                   size=197_449_751,
                   sha256="0330f580c9f7a57cbad949ac380835fdd2a2e14d96cc0f13fc435401d6b463a8",
                   note="URL from the Wikidata5M page; size/sha256 as recorded for the intfloat/wikidata5m mirror"),
    ),
    Recipe(_wikidata5m),
    "Wikidata5M transductive split; first alias as entity/relation name, other aliases kept in entity_aliases",
    "CC BY 4.0 (Wikidata5M release; derived from Wikidata CC0 and Wikipedia)",
    "https://deepgraphlearning.github.io/project/wikidata5m",
    "Wang, Gao, Zhu, Zhang, Liu, Li, Tang. KEPLER: A Unified Model for Knowledge Embedding and Pre-trained "
    "Language Representation. TACL 2021.",
    "4,594,485 entities, 822 relations, 20,614,279 / 5,163 / 5,133 triples",
)

# ---------------------------------------------------------------------------------------- OpenBioLink
_register(
    "openbiolink2020",
    (RemoteFile("HQ_DIR.zip", ("https://zenodo.org/record/3834052/files/HQ_DIR.zip",), size=109_387_184,
                note="Zenodo record 3834052 (OpenBioLink2020, directed, high quality)"),),
    Recipe(_openbiolink),
    "OpenBioLink2020 high-quality directed split: positive samples of the labeled train/val/test files, "
    "node types as entity types",
    "CC BY 4.0 (Zenodo record); source databases keep their own licences (see the OpenBioLink README)",
    "https://github.com/OpenBioLink/OpenBioLink",
    "Breit, Ott, Agibetov, Samwald. OpenBioLink: a benchmarking framework for large-scale biomedical link "
    "prediction. Bioinformatics 36(13), 2020.",
    "180,992 entities, 28 relations, 4,192,002 / 188,394 / 183,011 triples",
)

# ---------------------------------------------------------------------------------------- text layout
_register(
    "yago3-10",
    (RemoteFile("YAGO3-10.tar.gz", (f"{CONVE}/YAGO3-10.tar.gz",), note="ConvE repository"),),
    Recipe(_text),
    "YAGO3 subset of entities with at least 10 relations (ConvE split)",
    "CC BY 3.0 (YAGO3)",
    "https://github.com/TimDettmers/ConvE",
    "Mahdisoltani, Biega, Suchanek. YAGO3: A Knowledge Base from Multilingual Wikipedias. CIDR 2015; "
    + CONVE_CITATION,
    "123,182 entities, 37 relations, 1,079,040 / 5,000 / 5,000 triples",
)
_register(
    "fb15k-237",
    (RemoteFile("FB15K-237.2.zip",
                ("https://download.microsoft.com/download/8/7/0/8700516A-AB3D-4850-B4BB-805C515AECE1/FB15K-237.2.zip",),
                note="official Microsoft release; Release/{train,valid,test}.txt have CRLF line ends"),),
    Recipe(_text),
    "Freebase subset without inverse-relation leakage (Toutanova & Chen 2015), official release",
    "Freebase-derived (Freebase data: CC BY 2.5); terms on the Microsoft download page",
    "https://www.microsoft.com/en-us/download/details.aspx?id=52312",
    "Toutanova, Chen. Observed versus latent features for knowledge base and text inference. "
    "CVSC workshop 2015.",
    "14,541 entities, 237 relations, 272,115 / 17,535 / 20,466 triples",
)
_register(
    "wn18rr",
    (RemoteFile("WN18RR.tar.gz", (f"{CONVE}/WN18RR.tar.gz",), note="ConvE repository"),),
    Recipe(_text),
    "WordNet subset without inverse relations (ConvE); valid/test contain entities unseen in train: "
    "load with unknown='drop' or 'keep'",
    "WordNet 3.0 licence (Princeton)",
    "https://github.com/TimDettmers/ConvE",
    CONVE_CITATION,
    "40,943 entities, 11 relations, 86,835 / 3,034 / 3,134 triples",
)
_register(
    "kinships",
    (RemoteFile("kinship.tar.gz", (f"{CONVE}/kinship.tar.gz",), note="ConvE repository"),),
    Recipe(_text),
    "Alyawarra kinship terms (Denham 1973; Kok & Domingos 2007), ConvE split",
    "distributed for research (Kok & Domingos 2007 / ConvE release)",
    "https://github.com/TimDettmers/ConvE",
    "Kok, Domingos. Statistical Predicate Invention. ICML 2007; " + CONVE_CITATION,
    "104 entities, 25 relations, 8,544 / 1,068 / 1,074 triples",
)

# ---------------------------------------------------------------------------------------- CoDEx
def _codex_files(size: str) -> tuple[RemoteFile, ...]:
    files = [
        RemoteFile(f"codex-{size}-{s}.txt", (f"{CODEX}/triples/codex-{size}/{s}.txt",), extract=False,
                   subdir=f"data/triples/codex-{size}", raw_name=f"{s}.txt") for s in ("train", "valid", "test")
    ]
    files += [
        RemoteFile("entities.json", (f"{CODEX}/entities/en/entities.json",), extract=False, subdir="data/entities/en"),
        RemoteFile("relations.json", (f"{CODEX}/relations/en/relations.json",), extract=False,
                   subdir="data/relations/en"),
        RemoteFile("entity2types.json", (f"{CODEX}/types/entity2types.json",), extract=False, subdir="data/types"),
    ]
    return tuple(files)


for _size, _stats in {
    "s": "2,034 entities, 42 relations, 32,888 / 1,827 / 1,828 triples",
    "m": "17,050 entities, 51 relations, 185,584 / 10,310 / 10,311 triples",
    "l": "77,951 entities, 69 relations, 551,193 / 30,622 / 30,622 triples",
}.items():
    _register(
        f"codex-{_size}",
        _codex_files(_size),
        Recipe(_codex(_size)),
        f"CoDEx-{_size.upper()} (Wikidata/Wikipedia) with English names, descriptions and entity types",
        "MIT (CoDEx repository); Wikidata content CC0",
        "https://github.com/tsafavi/codex",
        "Safavi, Koutra. CoDEx: A Comprehensive Knowledge Graph Completion Benchmark. EMNLP 2020.",
        _stats,
    )

__all__ = ["Recipe", "compact_path", "download_size", "materialize"]
