"""Shared fixtures of the KGT5 tests: a tiny named KG and one micro KGT5 run trained once per session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgcomplete.data.dataset import Dataset


def tiny_kg() -> Dataset:
    """10 entities on a ring; ``next`` maps i -> i+1, ``prev`` i -> i-1; ``same_colour`` links i and i+5.

    Names include a clash (two "node") resolved by description, a clash with equal descriptions
    (resolved by label) and the separator ``|``.
    """
    n = 10
    ents = [f"e{i}" for i in range(n)]
    triples = [(ents[i], "next", ents[(i + 1) % n]) for i in range(n)]
    triples += [(ents[i], "prev", ents[(i - 1) % n]) for i in range(n)]
    triples += [(ents[i], "same_colour", ents[(i + 5) % n]) for i in range(n)]
    arr = np.array(triples, dtype=object)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(arr))
    splits = {"train": arr[perm[:24]], "valid": arr[perm[24:27]], "test": arr[perm[27:]]}
    ds = Dataset.from_labeled(splits, name="tiny")
    names = {f"e{i}": f"entity {i}" for i in range(n)}
    names.update({"e0": "node", "e1": "node", "e2": "twin", "e3": "twin", "e4": "left | right"})
    desc = {f"e{i}": "" for i in range(n)}
    desc.update({"e0": "the first one", "e1": "the second one", "e2": "same words", "e3": "same words"})
    ds.entity_names = np.array([names[x] for x in ds.entities.labels], dtype=object)
    ds.entity_descriptions = np.array([desc[x] for x in ds.entities.labels], dtype=object)
    ds.relation_names = np.array([x.replace("_", " ") for x in ds.relations.labels], dtype=object)
    return ds


def untrained_micro():
    """``(dataset, texts, tokenizer, encoder, trie, model)``: :func:`tiny_kg` with a unigram tokenizer
    (multi-token entity texts sharing prefixes: "node (the ...", "entity ...") and an untrained
    ``micro`` T5 in eval mode, for decoding tests."""
    from kgcomplete.seq2seq.encoding import QueryEncoder
    from kgcomplete.seq2seq.model import build_model
    from kgcomplete.seq2seq.tokenizer import KGTokenizer
    from kgcomplete.seq2seq.trie import EntityTrie
    from kgcomplete.seq2seq.verbalize import EntityTexts

    torch.manual_seed(0)
    ds = tiny_kg()
    texts = EntityTexts.from_dataset(ds)
    tok = KGTokenizer.train(texts.corpus(), vocab_size=120, model="unigram")
    enc = QueryEncoder(tok, texts)
    trie = EntityTrie(enc.entity_ids, tok.vocab_size)
    model = build_model(tok.vocab_size, "micro", seed=1).eval()
    return ds, texts, tok, enc, trie, model


def micro_config(epochs: int = 40, **kgt5) -> dict:
    return {
        "data": {"source": None},
        "training": {"epochs": epochs, "batch_size": 16, "seed": 0, "eval_every": 20, "progress": False},
        "kgt5": {"preset": "micro", "optimizer": "adamw", "lr": 0.01, "warmup_steps": 5,
                 "decoding": {"method": "beam", "beam_size": 10}, **kgt5},
    }


@pytest.fixture(scope="session")
def trained_kgt5(tmp_path_factory):
    """(dataset, run folder, KGT5Run) of a micro model trained on :func:`tiny_kg`."""
    from kgcomplete.seq2seq.run import train_kgt5

    torch.manual_seed(0)
    ds = tiny_kg()
    out = tmp_path_factory.mktemp("kgt5") / "run"
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures are set up before the module-scoped one_thread
    try:
        run = train_kgt5(ds, out, micro_config())
    finally:
        torch.set_num_threads(old)
    return ds, out, run


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Micro models: one intra-op thread is faster (and far faster on shared, loaded cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
