"""Native-format readers on tiny fixtures in the real layouts (see native_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest

from kgcomplete.data import Dataset, DataFormatError, UnknownLabelError
from kgcomplete.data.compact import load_compact
from kgcomplete.data.download import extract
from kgcomplete.data.formats import (build_codex, build_ogb, build_openbiolink, build_text_layout, build_wikidata5m,
                                     build_wikikg90m, load_ogb_dict, read_codex, read_ogb, read_openbiolink)

from native_fixtures import (WD5M_TRAIN, make_biokg, make_codex, make_openbiolink, make_text_layout,
                             make_wikidata5m, make_wikikg2, make_wikikg90m, tar_gz)


# ------------------------------------------------------------------------------------ OGB
def test_biokg_global_ids_types_and_candidates(tmp_path):
    src = make_biokg(tmp_path / "raw")
    ds = read_ogb(tmp_path / "raw", name="ogbl-biokg")
    offsets = {"disease": 0, "drug": 4, "protein": 7}
    assert ds.num_entities == 12 and ds.num_relations == 4
    assert list(ds.type_vocab.labels) == ["disease", "drug", "protein"]
    assert np.array_equal(np.bincount(ds.entity_types), [4, 3, 5])
    assert ds.entities.labels[4] == "DR000" and ds.entities.labels[7] == "PR000"
    assert list(ds.relations.labels) == ["disease-protein", "drug-drug_a", "drug-protein", "protein-protein"]
    for split in ("train", "valid", "test"):
        d = src[split]
        tri = ds.splits[split]
        assert tri.shape == (len(d["head"]), 3) and tri.dtype == np.int64
        exp_h = d["head"] + np.array([offsets[t] for t in d["head_type"]])
        exp_t = d["tail"] + np.array([offsets[t] for t in d["tail_type"]])
        assert np.array_equal(tri[:, 0], exp_h) and np.array_equal(tri[:, 2], exp_t)
        assert np.array_equal(tri[:, 1], d["relation"])
        # every head's type matches the type recorded in the split file
        assert list(ds.type_vocab.labels[ds.entity_types[tri[:, 0]]]) == list(d["head_type"])
    assert set(ds.candidates) == {"valid", "test"}
    for split in ("valid", "test"):
        c, d = ds.candidates[split], src[split]
        assert c["head"].shape == (len(d["head"]), 6) == c["tail"].shape
        off_h = np.array([offsets[t] for t in d["head_type"]])[:, None]
        assert np.array_equal(c["head"], d["head_neg"] + off_h)
        # negatives are entities of the right type
        assert (ds.entity_types[c["tail"]] == ds.entity_types[ds.splits[split][:, 2]][:, None]).all()


def test_biokg_build_compact_roundtrip(tmp_path):
    make_biokg(tmp_path / "raw")
    build_ogb(tmp_path / "raw", tmp_path / "c", name="ogbl-biokg")
    ds, mem = load_compact(tmp_path / "c"), read_ogb(tmp_path / "raw")
    assert ds.entities == mem.entities and ds.type_vocab == mem.type_vocab
    for k in mem.splits:
        assert np.array_equal(ds.splits[k], mem.splits[k])
    assert np.array_equal(ds.candidates["test"]["tail"], mem.candidates["test"]["tail"])
    assert isinstance(ds.splits["train"], np.memmap)


def test_ogb_pt_loader_is_safe_and_handles_numpy1_pickles(tmp_path):
    import torch

    make_biokg(tmp_path)
    d = load_ogb_dict(tmp_path / "biokg" / "split" / "random" / "test.pt")  # written with numpy.core names
    assert d["head_neg"].dtype == np.int64 and d["head_neg"].shape[1] == 6

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"head": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DataFormatError, match="evil.pt"):
        load_ogb_dict(tmp_path / "evil.pt")


def test_wikikg2_layout(tmp_path):
    src = make_wikikg2(tmp_path / "raw")
    ds = read_ogb(tmp_path / "raw", name="ogbl-wikikg2")
    assert ds.num_entities == 30 and ds.num_relations == 4 and ds.entity_types is None
    assert ds.entities.labels[0] == "Q100" and ds.relations.labels[3] == "P4"
    assert np.array_equal(ds.valid[:, 0], src["valid"]["head"])
    assert np.array_equal(ds.candidates["test"]["tail"], src["test"]["tail_neg"])
    assert ds.candidates["valid"]["head"].shape == (7, 5)
    assert ds.summary()["train"] == 60


def test_ogb_bad_split_file_names_file(tmp_path):
    import torch

    make_wikikg2(tmp_path / "raw")
    p = tmp_path / "raw" / "wikikg-v2" / "split" / "time" / "valid.pt"
    torch.save({"head": np.arange(3), "relation": np.arange(2), "tail": np.arange(3)}, p)
    with pytest.raises(DataFormatError, match="valid.pt.*'relation' has 2 rows"):
        read_ogb(tmp_path / "raw")


# ------------------------------------------------------------------------------------ WikiKG90Mv2
def test_wikikg90m_arrays_and_text_mapping(tmp_path):
    src = make_wikikg90m(tmp_path / "raw")
    build_wikikg90m(tmp_path / "raw", tmp_path / "c")
    ds = load_compact(tmp_path / "c")
    assert ds.num_entities == 25 and ds.num_relations == 3
    assert set(ds.splits) == {"train", "valid"}  # test-dev tails are hidden
    assert np.array_equal(ds.train, src["train"]) and np.array_equal(ds.valid, src["valid"])
    assert ds.entities.labels[2] == "Q15" and ds.relations.labels[1] == "P11"
    assert ds.entity_names[0] == "Entity 0" and ds.entity_names[3] == "Q22"  # missing title -> id
    assert ds.entity_descriptions[1] == "description, with comma 1" and ds.entity_descriptions[2] == ""
    assert ds.relation_names[2] == "rel 2"


# ------------------------------------------------------------------------------------ Wikidata5M
def test_wikidata5m_triples_and_aliases(tmp_path):
    make_wikidata5m(tmp_path / "raw")
    build_wikidata5m(tmp_path / "raw", tmp_path / "c")
    ds = load_compact(tmp_path / "c")
    assert ds.num_entities == 5 and ds.num_relations == 2
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 5, "valid": 1, "test": 1}
    got = {tuple(x) for x in zip(*(ds.entities.decode(ds.train[:, 0]), ds.relations.decode(ds.train[:, 1]),
                                   ds.entities.decode(ds.train[:, 2])))}
    assert got == set(WD5M_TRAIN)
    name = dict(zip(ds.entities.labels, ds.entity_names))
    alias = dict(zip(ds.entities.labels, ds.entity_aliases))
    assert name["Q1"] == "universe" and alias["Q1"] == "cosmos\tall of space"
    assert name["Q3"] == "Douglas Adams" and alias["Q3"] == "douglas noël adams"
    assert name["Q2"] == "earth" and alias["Q2"] == ""
    assert name["Q5"] == "Q5" and alias["Q5"] == ""  # no alias line: named by its id
    assert dict(zip(ds.relations.labels, ds.relation_names)) == {"P17": "country", "P31": "instance of"}


def test_wikidata5m_alias_line_without_alias_is_an_error(tmp_path):
    make_wikidata5m(tmp_path / "raw")
    with open(tmp_path / "raw" / "wikidata5m_entity.txt", "a") as f:
        f.write("Q7\n")
    with pytest.raises(DataFormatError, match=r"wikidata5m_entity.txt, line 6"):
        build_wikidata5m(tmp_path / "raw", tmp_path / "c")


# ------------------------------------------------------------------------------------ OpenBioLink
def test_openbiolink_positives_only_and_node_types(tmp_path):
    make_openbiolink(tmp_path / "raw")
    build_openbiolink(tmp_path / "raw", tmp_path / "c")
    ds = load_compact(tmp_path / "c")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 5, "valid": 1, "test": 1}
    assert "NCBIGENE:3" not in ds.entities  # only occurs in a negative row
    assert "NCBIGENE:9" not in ds.entities  # negative_train_sample.csv is not read
    types = dict(zip(ds.entities.labels, ds.type_vocab.labels[ds.entity_types]))
    assert types["NCBIGENE:1"] == "GENE" and types["GO:0001"] == "GO" and types["PUBCHEM.COMPOUND:5"] == "DRUG"
    assert sorted(ds.relations.labels) == ["DRUG_BINDING_GENE", "GENE_DIS", "GENE_GO"]
    mem = read_openbiolink(tmp_path / "raw")  # the in-memory reader agrees with the streaming one
    assert mem.entities == ds.entities and np.array_equal(mem.train, ds.train)
    assert np.array_equal(mem.entity_types, ds.entity_types)


def test_openbiolink_missing_label_names_line(tmp_path):
    make_openbiolink(tmp_path / "raw")
    p = tmp_path / "raw" / "HQ_DIR" / "train_test_data" / "val_sample.csv"
    p.write_text(p.read_text() + "NCBIGENE:1\tGENE_GO\tGO:0001\t\t\tGO\n")
    with pytest.raises(DataFormatError, match=r"val_sample.csv, line 3"):
        build_openbiolink(tmp_path / "raw", tmp_path / "c")


# ------------------------------------------------------------------------------------ text layouts
def test_fb15k237_release_crlf_matches_from_folder(tmp_path):
    make_text_layout(tmp_path / "raw" / "Release", crlf=True)
    assert b"\r\n" in (tmp_path / "raw" / "Release" / "train.txt").read_bytes()
    build_text_layout(tmp_path / "raw", tmp_path / "c", name="fb15k-237")
    ds = load_compact(tmp_path / "c")
    ref = Dataset.from_folder(tmp_path / "raw" / "Release")
    assert ds.entities == ref.entities and ds.relations == ref.relations
    assert not any(lab.endswith("\r") for lab in ds.entities.labels)
    for k in ref.splits:
        assert np.array_equal(ds.splits[k], ref.splits[k])


def test_conve_tarball_unseen_entities(tmp_path):
    make_text_layout(tmp_path / "src", unseen_in_test=True)
    archive = tar_gz(tmp_path / "src", tmp_path / "kinship.tar.gz")  # ConvE tarballs hold the files at the root
    raw = extract(archive, tmp_path / "raw")
    with pytest.raises(UnknownLabelError, match=r"test.txt, line 1: entity '/m/99'"):
        build_text_layout(raw, tmp_path / "c", name="kinships")
    build_text_layout(raw, tmp_path / "c", name="kinships", unknown="drop")
    ds = load_compact(tmp_path / "c")
    assert ds.dropped == {"test": 1} and len(ds.test) == 1
    build_text_layout(raw, tmp_path / "k", name="kinships", unknown="keep")
    assert "/m/99" in load_compact(tmp_path / "k").entities


# ------------------------------------------------------------------------------------ CoDEx
def test_codex_repository_layout(tmp_path):
    make_codex(tmp_path / "raw", "s")
    build_codex(tmp_path / "raw", tmp_path / "c", name="codex-s", size="s")
    ds = load_compact(tmp_path / "c")
    assert ds.num_entities == 4 and ds.num_relations == 3
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 4, "valid": 1, "test": 1}
    names = dict(zip(ds.entities.labels, ds.entity_names))
    assert names == {"Q1": "Ada Lovelace", "Q2": "William King", "Q30": "United Kingdom", "Q31": "Q31"}
    assert dict(zip(ds.entities.labels, ds.entity_descriptions))["Q30"] == "country"
    assert dict(zip(ds.relations.labels, ds.relation_names))["P26"] == "spouse"
    types = dict(zip(ds.entities.labels, ds.type_vocab.labels[ds.entity_types]))
    assert types == {"Q1": "Q5", "Q2": "Q5", "Q30": "Q6256", "Q31": "Q6256"}
    mem = read_codex(tmp_path / "raw", "s")
    assert mem.entities == ds.entities and list(mem.entity_names) == list(ds.entity_names)
    with pytest.raises(FileNotFoundError, match="codex-m"):
        build_codex(tmp_path / "raw", tmp_path / "m", name="codex-m", size="m")
