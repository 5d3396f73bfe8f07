"""Compact copies: round trips, streaming ingestion equals the in-memory reader, cache reuse."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from kgcomplete.data import DataFormatError, Dataset, UnknownLabelError, load_dataset
from kgcomplete.data.compact import ingest_triples, is_compact, load_compact, load_folder, save_compact
from kgcomplete.data.registry import BUNDLED_DIR

from native_fixtures import make_biokg, make_text_layout


def _same(a: Dataset, b: Dataset) -> None:
    assert a.entities == b.entities and a.relations == b.relations
    assert list(a.splits) == list(b.splits)  # same split order (train, valid, test)
    for k in a.splits:
        assert np.array_equal(np.asarray(a.splits[k]), np.asarray(b.splits[k])), k


def test_save_load_roundtrip_with_names_types_candidates(tmp_path):
    from kgcomplete.data.formats import read_ogb

    make_biokg(tmp_path / "raw")
    ds = read_ogb(tmp_path / "raw", name="bio")
    ds.entity_names = np.array([f"name {i}\nwith break" for i in range(ds.num_entities)], dtype=object)
    save_compact(ds, tmp_path / "c")
    assert is_compact(tmp_path / "c") and not (tmp_path / "c.tmp").exists()
    back = load_compact(tmp_path / "c")
    _same(ds, back)
    assert back.entity_names[3] == "name 3 with break"  # line breaks inside text become spaces
    assert back.type_vocab == ds.type_vocab and np.array_equal(back.entity_types, ds.entity_types)
    assert np.array_equal(back.candidates["valid"]["head"], ds.candidates["valid"]["head"])
    assert isinstance(back.train, np.memmap) and back.train.flags.writeable  # copy-on-write mapping
    back.train[0, 0] = -5  # does not reach the file
    assert load_compact(tmp_path / "c").train[0, 0] == ds.train[0, 0]


def test_label_with_newline_cannot_be_stored(tmp_path):
    ds = Dataset.from_labeled({"train": np.array([["a\nb", "r", "c"]], dtype=object)})
    with pytest.raises(ValueError, match="line break"):
        save_compact(ds, tmp_path / "c")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("unknown", ["error", "drop", "keep"])
@pytest.mark.parametrize("chunk", [97, 100_000])
def test_streaming_ingest_equals_from_folder(tmp_path, unknown, chunk):
    files = {k: BUNDLED_DIR / "umls" / f"{k}.txt" for k in ("train", "valid", "test")}
    ingest_triples(files, tmp_path / "c", name="umls", unknown=unknown, chunk_lines=chunk)
    _same(load_compact(tmp_path / "c"), Dataset.from_folder(BUNDLED_DIR / "umls", unknown=unknown))


def test_streaming_ingest_drop_counts_and_error_line(tmp_path):
    src = tmp_path / "src"
    make_text_layout(src, unseen_in_test=True)
    ref = Dataset.from_folder(src, unknown="drop")
    ingest_triples({k: src / f"{k}.txt" for k in ("train", "valid", "test")}, tmp_path / "c", unknown="drop", chunk_lines=1)
    ds = load_compact(tmp_path / "c")
    _same(ds, ref)
    assert ds.dropped == ref.dropped == {"test": 1}
    # the unknown entity sits on line 1 of test.txt, in the first chunk; move it to line 3 (third chunk)
    p = src / "test.txt"
    p.write_text("/m/03\t/film/actor\t/m/01\n/m/01\t/film/actor\t/m/02\n/m/02\t/film/actor\t/m/99\n")
    with pytest.raises(UnknownLabelError, match=r"test.txt, line 3: entity '/m/99'"):
        ingest_triples({k: src / f"{k}.txt" for k in ("train", "test")}, tmp_path / "e", chunk_lines=1)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("content, line, what", [
    ("a\tr\tb\nc\tr\td\te\n", 2, "found 4"),
    ("a\tr\tb\n\nc\tr\td\n", 2, "found 0"),
    ("a\tr\tb\nc\t\td\n", 2, "empty field 2 of 3"),
])
def test_streaming_bad_lines_name_file_and_line(tmp_path, content, line, what):
    p = tmp_path / "train.txt"
    p.write_text(content)
    with pytest.raises(DataFormatError, match=rf"train.txt, line {line}: .*{what}"):
        ingest_triples({"train": p}, tmp_path / "c", chunk_lines=1)


def test_trailing_blank_lines_are_fine(tmp_path):
    p = tmp_path / "train.txt"
    p.write_bytes(b"a\tr\tb\r\nc\tr\td\r\n\r\n\n")
    ingest_triples({"train": p}, tmp_path / "c", chunk_lines=2)
    assert len(load_compact(tmp_path / "c").train) == 2


def test_load_folder_caches_and_rebuilds_when_source_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("KGC_HOME", str(tmp_path / "home"))
    src = tmp_path / "kg"
    make_text_layout(src)
    ref = Dataset.from_folder(src)
    (src / "entity_names.tsv").write_text("/m/01\tAlice\n/m/02\tBob\n")
    ds = load_folder(src)
    _same(ds, ref)
    assert list(ds.entity_names[:2]) == ["Alice", "Bob"] and ds.entity_names[2] == "/m/03"
    cache = next((tmp_path / "home" / "compact" / "folders").iterdir())
    stamp = (cache / "meta.json").stat().st_mtime_ns
    again = load_folder(src)  # memory-mapped from the cache, not re-ingested
    assert (cache / "meta.json").stat().st_mtime_ns == stamp
    assert list(again.entity_names[:2]) == ["Alice", "Bob"]
    time.sleep(0.01)
    with open(src / "train.txt", "a") as f:
        f.write("/m/05\t/film/actor\t/m/01\n")
    os.utime(src / "train.txt")
    assert load_folder(src).num_entities == 5


def test_registered_bundled_dataset_unaffected():
    assert load_dataset("umls").num_entities == 135
