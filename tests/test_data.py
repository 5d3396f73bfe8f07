import numpy as np
import pandas as pd
import pytest

from kgcomplete.data import DataFormatError, Dataset, UnknownLabelError, Vocabulary, load_dataset


def write(folder, name, text, newline="\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(text.replace("\n", newline).encode())


def small_kg(folder, newline="\n"):
    write(folder, "train.txt", "a\tr1\tb\nb\tr1\tc\nc\tr2\ta\nd\tr2\tb\n", newline)
    write(folder, "valid.txt", "a\tr2\tc\n", newline)
    write(folder, "test.txt", "b\tr2\td\nd\tr1\ta\n", newline)
    return folder


def test_bundled_umls_counts_and_names():
    ds = load_dataset("umls")
    assert (ds.num_entities, ds.num_relations) == (135, 46)
    assert [len(ds.splits[s]) for s in ("train", "valid", "test")] == [5216, 652, 661]
    assert ds.train.dtype == np.int64 and ds.train.shape[1] == 3
    i = ds.entities.id("acquired_abnormality")
    assert ds.entity_names[i] == "acquired abnormality"
    assert ds.relation_names is not None and len(ds.relation_names) == 46


def test_bundled_nations_by_name_and_unknown_name():
    ds = load_dataset("nations")
    assert ds.num_entities == 14 and ds.num_relations == 55
    with pytest.raises(FileNotFoundError, match="umls"):
        load_dataset("no-such-dataset")


def test_folder_reader_roundtrip_labels(tmp_path):
    ds = Dataset.from_folder(small_kg(tmp_path / "kg"))
    assert ds.num_entities == 4 and ds.num_relations == 2
    labels = np.stack([ds.entities.decode(ds.test[:, 0]), ds.relations.decode(ds.test[:, 1]),
                       ds.entities.decode(ds.test[:, 2])], 1)
    assert labels.tolist() == [["b", "r2", "d"], ["d", "r1", "a"]]


def test_crlf_is_tolerated(tmp_path):
    a = Dataset.from_folder(small_kg(tmp_path / "lf"))
    b = Dataset.from_folder(small_kg(tmp_path / "crlf", newline="\r\n"))
    assert a.entities == b.entities and a.relations == b.relations
    for s in a.splits:
        np.testing.assert_array_equal(a.splits[s], b.splits[s])


@pytest.mark.parametrize(
    "content, line, message",
    [
        ("a\tr\tb\nb\tr\n", 2, "expected 3 tab-separated fields.*found 2"),
        ("a\tr\tb\nb\tr\tc\nc\tr\ta\tx\n", 3, "expected 3 tab-separated fields.*found 4"),
        ("a\tr\tb\n\tr\tc\n", 2, "empty field 1 of 3"),
        ("a\tr\tb\n\nb\tr\ta\n", 2, "found 0"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, content, line, message):
    folder = tmp_path / "bad"
    write(folder, "train.txt", content)
    with pytest.raises(DataFormatError, match=message) as exc:
        Dataset.from_folder(folder)
    assert exc.value.line == line
    assert str(folder / "train.txt") in str(exc.value) and f"line {line}" in str(exc.value)


def test_unknown_entities_error_or_drop(tmp_path):
    folder = small_kg(tmp_path / "kg")
    write(folder, "test.txt", "b\tr2\td\nzz\tr1\ta\nd\tr9\ta\n")
    with pytest.raises(UnknownLabelError, match=r"test.txt, line 2: entity 'zz'"):
        Dataset.from_folder(folder)
    ds = Dataset.from_folder(folder, unknown="drop")
    assert ds.dropped == {"test": 2} and len(ds.test) == 1
    kept = Dataset.from_folder(folder, unknown="keep")
    assert kept.num_entities == 5 and kept.num_relations == 3 and len(kept.test) == 3


def test_metadata_files_partial_coverage(tmp_path):
    folder = small_kg(tmp_path / "kg")
    write(folder, "entity_names.tsv", "a\tAlpha\nc\tGamma\n")
    write(folder, "entity_types.tsv", "a\tletter\nb\tletter\nd\tother\n")
    ds = Dataset.from_folder(folder)
    assert ds.entity_text(ds.entities.encode(["a", "b"])).tolist() == ["Alpha", "b"]
    types = ds.entity_types[ds.entities.encode(["a", "b", "c", "d"])]
    assert types[0] == types[1] != types[3] and types[2] == -1


def test_dataframe_and_arrays():
    df = pd.DataFrame({"head": ["x", "y", "x"], "relation": ["r", "s", "r"], "tail": ["y", "z", "z"],
                       "split": ["train", "train", "test"]})
    ds = Dataset.from_dataframe(df)
    assert ds.num_entities == 3 and len(ds.train) == 2 and len(ds.test) == 1
    ds2 = Dataset.from_dataframe({"train": df.iloc[:2], "test": df.iloc[2:]})
    np.testing.assert_array_equal(ds.test, ds2.test)
    arr = Dataset.from_arrays(np.array([[0, 0, 1], [1, 1, 2]]), test=np.array([[2, 0, 0]]))
    assert arr.num_entities == 3 and arr.num_relations == 2 and arr.entities.labels.tolist() == ["0", "1", "2"]
    with pytest.raises(ValueError):
        Dataset.from_arrays(np.array([[0, 0, 5]]), num_entities=3)


def test_vocabulary_encode_and_close_matches(tmp_path):
    v = Vocabulary(["alpha", "beta", "alphabet"])
    assert v.encode(["beta", "nope"]).tolist() == [1, -1]
    assert v.close_matches("alp")[:2] == ["alpha", "alphabet"]
    with pytest.raises(KeyError, match="close matches"):
        v.id("alphx")
    v.save(tmp_path / "v.tsv")
    assert Vocabulary.load(tmp_path / "v.tsv") == v


@pytest.mark.parametrize("sizes", [(50, 7), (2**40, 2**10)], ids=["int64 key", "row view (key would overflow)"])
def test_duplicate_rows_found_by_key_like_unique_rows(sizes):
    from kgcomplete.data.dataset import row_keys

    rng = np.random.default_rng(0)
    ids = np.stack([rng.integers(0, 50, 2000), rng.integers(0, 7, 2000), rng.integers(0, 50, 2000)], axis=1)
    _, want = np.unique(ids, axis=0, return_index=True)
    _, got = np.unique(row_keys(ids, *sizes), return_index=True)
    assert np.array_equal(np.sort(got), np.sort(want)) and len(got) < len(ids)
