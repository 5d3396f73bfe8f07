"""Tiny fixtures in the real native layouts of the benchmark KGs (same file names, columns,
compression and dtypes as the published files), built in code by the tests."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd


def _csv_gz(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, compression="gzip")


def _torch_save(obj: dict, path: Path, old_numpy: bool = False) -> None:
    """torch.save a dict of NumPy arrays; ``old_numpy`` rewrites the pickle's module names to the
    NumPy 1.x spelling (``numpy.core.multiarray``) that the published OGB files carry."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    if old_numpy:
        src = zipfile.ZipFile(path)
        entries = [(i, src.read(i.filename)) for i in src.infolist()]
        src.close()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as out:
            for info, data in entries:
                if info.filename.endswith("data.pkl"):
                    assert b"numpy._core.multiarray" in data
                    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
                out.writestr(info, data)


# ------------------------------------------------------------------------------- ogbl-biokg
BIOKG_TYPES = {"disease": 4, "drug": 3, "protein": 5}  # sorted: offsets 0, 4, 7 -> 12 entities


def make_biokg(root: Path, k: int = 6) -> dict:
    """``biokg/`` as in biokg.zip: split/random/*.pt (typed local ids, head_type/tail_type names,
    (n, k) head_neg/tail_neg in valid/test), mapping/*_entidx2name.csv.gz, relidx2relname.csv.gz."""
    rng = np.random.default_rng(0)
    base = root / "biokg"
    for t, n in BIOKG_TYPES.items():
        _csv_gz(base / "mapping" / f"{t}_entidx2name.csv.gz",
                pd.DataFrame({"ent idx": np.arange(n), "ent name": [f"{t[:2].upper()}{i:03d}" for i in range(n)]}))
    rels = ["disease-protein", "drug-drug_a", "drug-protein", "protein-protein"]
    _csv_gz(base / "mapping" / "relidx2relname.csv.gz", pd.DataFrame({"rel idx": np.arange(4), "rel name": rels}))
    sig = {0: ("disease", "protein"), 1: ("drug", "drug"), 2: ("drug", "protein"), 3: ("protein", "protein")}
    out = {}
    for split, n in (("train", 40), ("valid", 5), ("test", 6)):
        r = rng.integers(0, 4, n)
        ht = np.array([sig[x][0] for x in r])
        tt = np.array([sig[x][1] for x in r])
        h = np.array([rng.integers(0, BIOKG_TYPES[x]) for x in ht], dtype=np.int64)
        t = np.array([rng.integers(0, BIOKG_TYPES[x]) for x in tt], dtype=np.int64)
        d = {"head": h, "relation": r.astype(np.int64), "tail": t,
             # the released files hold lists of type names; valid uses a NumPy str array to cover both
             "head_type": list(ht) if split != "valid" else ht, "tail_type": list(tt) if split != "valid" else tt}
        if split != "train":
            d["head_neg"] = np.stack([rng.integers(0, BIOKG_TYPES[x], k) for x in ht]).astype(np.int64)
            d["tail_neg"] = np.stack([rng.integers(0, BIOKG_TYPES[x], k) for x in tt]).astype(np.int64)
        _torch_save(d, base / "split" / "random" / f"{split}.pt", old_numpy=(split == "test"))
        out[split] = d
    return out


# ------------------------------------------------------------------------------- ogbl-wikikg2
def make_wikikg2(root: Path, ne: int = 30, nr: int = 4, k: int = 5) -> dict:
    """``wikikg-v2/`` as in wikikg-v2.zip: split/time/*.pt and the mapping CSVs."""
    rng = np.random.default_rng(1)
    base = root / "wikikg-v2"
    _csv_gz(base / "mapping" / "nodeidx2entityid.csv.gz",
            pd.DataFrame({"node idx": np.arange(ne), "entity id": [f"Q{100 + i}" for i in range(ne)]}))
    _csv_gz(base / "mapping" / "reltype2relid.csv.gz", pd.DataFrame({"reltype": np.arange(nr), "rel id": [f"P{i + 1}" for i in range(nr)]}))
    out = {}
    for split, n in (("train", 60), ("valid", 7), ("test", 8)):
        d = {"head": rng.integers(0, ne, n), "relation": rng.integers(0, nr, n), "tail": rng.integers(0, ne, n)}
        if split != "train":
            d["head_neg"] = rng.integers(0, ne, (n, k))
            d["tail_neg"] = rng.integers(0, ne, (n, k))
        _torch_save(d, base / "split" / "time" / f"{split}.pt")
        out[split] = d
    return out


# ------------------------------------------------------------------------------- WikiKG90Mv2
def make_wikikg90m(root: Path, ne: int = 25, nr: int = 3) -> dict:
    """``wikikg90m-v2/processed/*.npy`` + ``meta.pt`` and ``wikikg90mv2_mapping/{entity,relation}.csv``."""
    rng = np.random.default_rng(2)
    proc = root / "wikikg90m-v2" / "processed"
    proc.mkdir(parents=True)
    train = np.stack([rng.integers(0, ne, 50), rng.integers(0, nr, 50), rng.integers(0, ne, 50)], 1).astype(np.int64)
    val_hr = np.stack([rng.integers(0, ne, 6), rng.integers(0, nr, 6)], 1).astype(np.int64)
    val_t = rng.integers(0, ne, 6).astype(np.int64)
    np.save(proc / "train_hrt.npy", train)
    np.save(proc / "val_hr.npy", val_hr)
    np.save(proc / "val_t.npy", val_t)
    np.save(proc / "test-dev_hr.npy", val_hr[:3])
    _torch_save({"num_entities": ne, "num_relations": nr}, root / "wikikg90m-v2" / "meta.pt")
    mp = root / "wikikg90mv2_mapping"
    mp.mkdir()
    titles = [f"Entity {i}" if i != 3 else "" for i in range(ne)]  # entity 3 has no title
    descs = [f"description, with comma {i}" if i % 2 else "" for i in range(ne)]
    pd.DataFrame({"idx": np.arange(ne), "entity": [f"Q{i * 7 + 1}" for i in range(ne)], "title": titles,
                  "desc": descs}).to_csv(mp / "entity.csv", index=False)
    pd.DataFrame({"idx": np.arange(nr), "relation": [f"P{i + 10}" for i in range(nr)],
                  "title": [f"rel {i}" for i in range(nr)], "desc": ["d"] * nr}).to_csv(mp / "relation.csv", index=False)
    return {"train": train, "valid": np.concatenate([val_hr, val_t[:, None]], 1)}


# ------------------------------------------------------------------------------- Wikidata5M
WD5M_TRAIN = [("Q1", "P31", "Q2"), ("Q2", "P31", "Q3"), ("Q3", "P17", "Q1"), ("Q4", "P17", "Q2"), ("Q5", "P31", "Q1")]


def make_wikidata5m(root: Path) -> None:
    """Files of wikidata5m_transductive.tar.gz and wikidata5m_alias.tar.gz (extracted)."""
    root.mkdir(parents=True, exist_ok=True)
    w = lambda name, rows: (root / name).write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")  # noqa: E731
    w("wikidata5m_transductive_train.txt", WD5M_TRAIN)
    w("wikidata5m_transductive_valid.txt", [("Q1", "P17", "Q3")])
    w("wikidata5m_transductive_test.txt", [("Q5", "P17", "Q4")])
    w("wikidata5m_entity.txt", [("Q1", "universe", "cosmos", "all of space"), ("Q2", "earth"),
                                ("Q3", "Douglas Adams", "douglas noël adams"), ("Q4", "Berlin", "berlin, germany"),
                                ("Q99", "not in the graph")])  # Q5 has no alias line
    w("wikidata5m_relation.txt", [("P31", "instance of", "is a"), ("P17", "country")])


# ------------------------------------------------------------------------------- OpenBioLink2020
def make_openbiolink(root: Path) -> None:
    """``HQ_DIR/train_test_data/`` labeled sample files (6 tab-separated columns, no header) and node files."""
    d = root / "HQ_DIR" / "train_test_data"
    d.mkdir(parents=True)
    rows = lambda xs: "".join("\t".join(x) + "\n" for x in xs)  # noqa: E731
    (d / "train_sample.csv").write_text(rows([
        ("NCBIGENE:1", "GENE_GO", "GO:0001", "0.9", "1", "GO"),
        ("NCBIGENE:2", "GENE_GO", "GO:0002", "", "1", "GO"),  # empty quality score is allowed
        ("PUBCHEM.COMPOUND:5", "DRUG_BINDING_GENE", "NCBIGENE:1", "700", "1", "STITCH"),
        ("NCBIGENE:2", "GENE_DIS", "DOID:9", "", "1", "DisGeNet"),
        ("NCBIGENE:3", "GENE_GO", "GO:0002", "", "0", "GO"),  # a negative row: dropped
        ("NCBIGENE:1", "GENE_DIS", "DOID:9", "", "1", "DisGeNet"),
    ]))
    (d / "val_sample.csv").write_text(rows([("NCBIGENE:1", "GENE_GO", "GO:0002", "", "1", "GO"),
                                            ("NCBIGENE:2", "GENE_GO", "GO:0001", "", "0", "GO")]))
    (d / "test_sample.csv").write_text(rows([("PUBCHEM.COMPOUND:5", "DRUG_BINDING_GENE", "NCBIGENE:2", "", "1", "STITCH")]))
    (d / "negative_train_sample.csv").write_text(rows([("NCBIGENE:9", "GENE_GO", "GO:0009", "", "0", "GO")]))
    (d / "train_val_nodes.csv").write_text(rows([
        ("NCBIGENE:1", "GENE"), ("NCBIGENE:2", "GENE"), ("NCBIGENE:3", "GENE"), ("GO:0001", "GO"), ("GO:0002", "GO"),
        ("PUBCHEM.COMPOUND:5", "DRUG"), ("DOID:9", "DIS")]))
    (d / "test_nodes.csv").write_text(rows([("NCBIGENE:2", "GENE"), ("PUBCHEM.COMPOUND:5", "DRUG")]))


# ------------------------------------------------------------------------------- text layouts
def make_text_layout(folder: Path, crlf: bool = False, unseen_in_test: bool = False) -> dict:
    """``train.txt``/``valid.txt``/``test.txt`` (ConvE/LibKGE; FB15k-237 Release/ has CRLF)."""
    folder.mkdir(parents=True, exist_ok=True)
    train = [("/m/01", "/film/actor", "/m/02"), ("/m/02", "/people/sibling", "/m/03"), ("/m/03", "/film/actor", "/m/04"),
             ("/m/04", "/people/sibling", "/m/01")]
    valid = [("/m/01", "/people/sibling", "/m/03")]
    test = [("/m/02", "/film/actor", "/m/99" if unseen_in_test else "/m/04"), ("/m/03", "/film/actor", "/m/01")]
    nl = "\r\n" if crlf else "\n"
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.txt").write_bytes("".join("\t".join(r) + nl for r in rows).encode())
    return {"train": train, "valid": valid, "test": test}


def tar_gz(folder: Path, archive: Path, arcroot: str = "") -> Path:
    """Pack ``folder``'s files into ``archive`` (files at the archive root unless ``arcroot``)."""
    with tarfile.open(archive, "w:gz") as t:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                t.add(p, arcname=str(Path(arcroot) / p.relative_to(folder)) if arcroot else str(p.relative_to(folder)))
    return archive


def zip_dir(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, str(p.relative_to(folder.parent)))
    return archive


# ------------------------------------------------------------------------------- CoDEx
def make_codex(root: Path, size: str = "s") -> None:
    """The CoDEx repository's ``data/`` layout for one size."""
    tri = root / "data" / "triples" / f"codex-{size}"
    tri.mkdir(parents=True)
    rows = lambda xs: "".join("\t".join(x) + "\n" for x in xs)  # noqa: E731
    (tri / "train.txt").write_text(rows([("Q1", "P27", "Q30"), ("Q2", "P27", "Q30"), ("Q1", "P26", "Q2"), ("Q30", "P530", "Q31")]))
    (tri / "valid.txt").write_text(rows([("Q2", "P26", "Q1")]))
    (tri / "test.txt").write_text(rows([("Q31", "P530", "Q30")]))
    (tri / "valid_negatives.txt").write_text(rows([("Q1", "P530", "Q2")]))
    ents = root / "data" / "entities" / "en"
    ents.mkdir(parents=True)
    json.dump({"Q1": {"label": "Ada Lovelace", "description": "mathematician", "wiki": ""},
               "Q2": {"label": "William King", "description": "", "wiki": ""},
               "Q30": {"label": "United Kingdom", "description": "country", "wiki": ""},
               "Q31": {"label": "", "description": "no label", "wiki": ""}}, open(ents / "entities.json", "w"))
    rel = root / "data" / "relations" / "en"
    rel.mkdir(parents=True)
    json.dump({"P27": {"label": "country of citizenship", "description": ""}, "P26": {"label": "spouse", "description": ""},
               "P530": {"label": "diplomatic relation", "description": ""}}, open(rel / "relations.json", "w"))
    types = root / "data" / "types"
    types.mkdir(parents=True)
    json.dump({"Q1": ["Q5"], "Q2": ["Q5", "Q215627"], "Q30": ["Q6256"], "Q31": ["Q6256"]}, open(types / "entity2types.json", "w"))

