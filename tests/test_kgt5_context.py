"""KGT5-context and descriptions: the neighbourhood in the input (never the predicted triple, never a
validation/test triple), the input format, seeded samples, the caps by count and by tokens,
descriptions, length-bucketed batches, and a micro run trained, saved and reopened with context."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers")

from kgt5_fixtures import micro_config, one_thread, tiny_kg  # noqa: E402,F401

from kgcomplete.data.dataset import Dataset  # noqa: E402
from kgcomplete.seq2seq.context import EVAL_STREAM, Neighbourhood  # noqa: E402
from kgcomplete.seq2seq.encoding import QueryEncoder, run_descriptions  # noqa: E402
from kgcomplete.seq2seq.tokenizer import KGTokenizer, PAD_ID  # noqa: E402
from kgcomplete.seq2seq.train import QueryExamples, TensorExamples, bucketed_batches, prefetch  # noqa: E402
from kgcomplete.seq2seq.verbalize import EntityTexts, context_lines, input_text  # noqa: E402


def _encoder(ds, max_length=512, context_size=100, descriptions=False, seed=0, tok=None):
    texts = EntityTexts.from_dataset(ds)
    desc = run_descriptions(ds, {"descriptions": True, "description_max_words": 32}) if descriptions else None
    tok = tok or KGTokenizer.train(texts.corpus(desc), vocab_size=300)
    nbh = Neighbourhood(ds.train, ds.num_entities, ds.num_relations)
    return QueryEncoder(tok, texts, max_length, neighbourhood=nbh, context_size=context_size, descriptions=desc,
                        seed=seed)


def _lines(enc, ids) -> list[list[str]]:
    """Decoded inputs split into lines (first: the query line)."""
    return [[x.strip() for x in s.split("\n")] for s in enc.tokenizer.decode(ids)]


def _leaky_kg() -> Dataset:
    """Ring graph plus, in valid and test, the reverse and 'twin' of training facts, so that a
    neighbourhood built from every split, or without removing the target, would show the answer;
    a self-loop in train (its two edges must go together)."""
    n = 8
    tr = [(f"e{i}", "next", f"e{(i + 1) % n}") for i in range(n)] + [(f"e{i}", "link", f"e{(i + 3) % n}") for i in range(n)]
    tr += [("e0", "link", "e0"), ("e0", "back", f"e{n - 1}")]
    valid = [(f"e{i}", "back", f"e{(i - 1) % n}") for i in range(2, n, 2)]
    test = [(f"e{i}", "back", f"e{(i - 1) % n}") for i in range(1, n, 2)]
    return Dataset.from_labeled({"train": np.array(tr, dtype=object), "valid": np.array(valid, dtype=object),
                                 "test": np.array(test, dtype=object)}, name="leaky")


def test_context_never_holds_the_target_nor_valid_or_test_triples():
    ds = _leaky_kg()
    enc = _encoder(ds)  # everything fits: a context is all of the anchor's training edges but the target
    R = ds.num_relations
    ex = QueryExamples.from_triples(enc, ds.train)
    state = ex.epoch_state(0)
    ids, mask, labels = ex.batch(np.arange(len(ex)), state)
    decoded = _lines(enc, ids)
    for i in range(len(ex)):
        a, r, head, target, x = ex.anchor[i], ex.relation[i], ex.head[i], ex.target[i], ex.exclude[i]
        facts = enc.context_facts(a, x, state)
        expected = {(rr, nb, inv) for rr, nb, inv in
                    [(t[1], t[2], 0) for k, t in enumerate(ds.train) if t[0] == a and k != x]
                    + [(t[1], t[0], 1) for k, t in enumerate(ds.train) if t[2] == a and k != x]}
        assert set(map(tuple, facts.tolist())) == expected
        target_line = context_lines([enc.texts.relation[r]], [enc.texts.entity[target]], [bool(head)])[0]
        if ds.train[x, 0] != ds.train[x, 2]:  # a self-loop's other edge is the same triple: removed too
            assert target_line not in decoded[i][1:]
        assert len(decoded[i]) - 1 == len(expected)
    loop = int(np.flatnonzero(ds.train[:, 0] == ds.train[:, 2])[0])
    e0 = ds.train[loop, 0]
    assert not any(f[1] == e0 for f in enc.context_facts(e0, loop, state).tolist())  # both self-loop edges gone
    assert sum(f[1] == e0 for f in enc.context_facts(e0, -1, state).tolist()) == 2
    # evaluation: contexts come from train only; no valid/test fact appears (everything would fit)
    for split in ("valid", "test"):
        for h, r, t in ds.splits[split]:
            for anchor, fact, head in ((h, [r, t, 0], False), (t, [r, h, 1], True)):
                facts = enc.context_facts(anchor)
                assert fact not in facts.tolist() and len(facts) == enc.neighbourhood.degree[anchor]
                lines = _lines(enc, enc.queries([anchor], [r], head)[0])[0]
                assert context_lines([enc.texts.relation[r]], [enc.texts.entity[fact[1]]], [head])[0] not in lines
    assert R == 3


def test_input_format_and_assembly_equals_tokenising_the_text():
    ds = Dataset.from_labeled({"train": np.array([["a", "likes", "b"], ["c", "likes", "a"], ["a", "owns", "d"]],
                                                 dtype=object)}, name="fmt")
    enc = _encoder(ds)
    a, b = ds.entities.id("a"), ds.entities.id("b")
    likes = ds.relations.id("likes")
    lines = _lines(enc, enc.queries([a], [likes], False, exclude=[0])[0])[0]
    assert lines[0] == "query: a | likes"
    assert sorted(lines[1:]) == ["owns | d", "reverse of likes | c"]
    head_q = _lines(enc, enc.queries([b], [likes], True, exclude=[0])[0])[0]
    assert head_q == ["query: b | reverse of likes"]  # b's only edge is the target
    # the string form, tokenised, is the assembled input
    t = enc.texts
    for anchor, rel, head in ((a, likes, False), (b, likes, True), (a, ds.relations.id("owns"), True)):
        facts = enc.context_facts(anchor)
        text = input_text(t.entity[anchor], t.relation[rel], head, list(t.context_lines(facts)))
        ids, mask = enc.queries([anchor], [rel], head)
        ref, ref_mask = enc.encode_text([text])
        assert torch.equal(ids, ref) and torch.equal(mask, ref_mask)
    # plain KGT5 keeps its format
    plain = QueryEncoder(enc.tokenizer, t)
    assert _lines(plain, plain.queries([a], [likes], True)[0])[0] == ["predict head: a | likes"]


def test_samples_are_seeded():
    ds = tiny_kg()
    nbh = Neighbourhood(ds.train, ds.num_entities, ds.num_relations)
    s1, s2 = nbh.sample(2, seed=3, stream=0), nbh.sample(2, seed=3, stream=0)
    assert np.array_equal(s1.edge, s2.edge) and np.array_equal(s1.ptr, s2.ptr)
    others = [nbh.sample(2, seed=3, stream=k).edge for k in (1, 2, 3, EVAL_STREAM)] + [nbh.sample(2, seed=4, stream=0).edge]
    assert all(not np.array_equal(s1.edge, o) for o in others)
    assert np.array_equal(np.diff(s1.ptr), np.minimum(nbh.degree, 3))  # size + 1 spare per entity
    for e in range(ds.num_entities):  # each entity's sample is a subset of its own edges
        own = set(range(nbh.ptr[e], nbh.ptr[e + 1]))
        assert set(s1.edge[s1.ptr[e]:s1.ptr[e + 1]].tolist()) <= own
    # two encoders built independently give the same evaluation inputs; epochs differ
    e1, e2 = _encoder(ds, context_size=2), _encoder(ds, context_size=2)
    a, r = ds.test[:, 0], ds.test[:, 1]
    assert torch.equal(e1.queries(a, r, False)[0], e2.queries(a, r, False)[0])
    ex = QueryExamples.from_triples(e1, ds.train)
    idx = np.arange(len(ex))
    b0 = ex.batch(idx, ex.epoch_state(0))[0]
    assert torch.equal(b0, ex.batch(idx, ex.epoch_state(0))[0])
    assert not torch.equal(b0, ex.batch(idx, ex.epoch_state(1))[0])


def test_context_capped_by_size_and_by_tokens():
    ds = tiny_kg()
    big = _encoder(ds)
    deg = Neighbourhood(ds.train, ds.num_entities, ds.num_relations).degree
    a = np.arange(ds.num_entities)
    for size in (0, 1, 2):
        enc = _encoder(ds, context_size=size, tok=big.tokenizer)
        n = [len(enc.context_facts(e)) for e in a]
        assert n == np.minimum(deg, size).tolist()
    # the token budget: lines are added in the sample's order while the input fits max_length
    full = [big.context_facts(e) for e in a]
    ids_full, mask_full = big.queries(a, np.zeros_like(a), False)
    for max_length in (12, 20, 28):
        enc = _encoder(ds, max_length=max_length, tok=big.tokenizer)
        ids, mask = enc.queries(a, np.zeros_like(a), False)
        assert ids.shape[1] <= max_length and (mask.sum(1) <= max_length).all()
        qlen = (enc.queries(a, np.zeros_like(a), False, sample=_empty_sample(ds))[1]).sum(1).numpy() - 1
        for e in a:
            kept = enc.context_facts(e)
            assert np.array_equal(kept, full[e][:len(kept)])  # a prefix of the same order
            line_len = enc.edge_line_len[_edge_ids(enc, e, len(full[e]))]
            used = qlen[e] + line_len[:len(kept)].sum() + 1
            assert used == int(mask[e].sum()) <= max_length
            if len(kept) < len(full[e]):  # the next line would not have fitted
                assert used + line_len[len(kept)] > max_length
    assert int(mask_full.sum(1).max()) > 28  # the small budgets did cut something


def _empty_sample(ds):
    from kgcomplete.seq2seq.context import ContextSample

    return ContextSample(np.zeros(ds.num_entities + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))


def _edge_ids(enc, entity, n):
    s = enc.eval_sample
    return s.edge[s.ptr[entity]:s.ptr[entity] + n]


def test_descriptions_follow_the_query_entity():
    ds = tiny_kg()
    enc = _encoder(ds, descriptions=True)
    e0, e5 = ds.entities.id("e0"), ds.entities.id("e5")
    rel = ds.relations.id("next")
    first = _lines(enc, enc.queries([e0, e5], [rel, rel], False)[0])
    assert first[0][0] == "query: node (the first one) : the first one | next"
    assert first[1][0] == "query: entity 5 | next"  # no description: no separator
    plain = QueryEncoder(enc.tokenizer, enc.texts, descriptions=enc.descriptions)
    assert _lines(plain, plain.queries([e0], [rel], True)[0])[0] == ["predict head: node (the first one) : the first one | next"]
    text = input_text(enc.texts.entity[e0], "next", False, list(enc.texts.context_lines(enc.context_facts(e0))),
                      enc.descriptions[e0])
    assert torch.equal(enc.encode_text([text])[0], enc.queries([e0], [rel], False)[0])
    bare = Dataset.from_arrays(np.array([[0, 0, 1]]))
    with pytest.raises(ValueError, match="no entity descriptions"):
        run_descriptions(bare, {"descriptions": True, "description_max_words": 8})


def test_bucketed_batches_same_examples_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=5000)
    batches = bucketed_batches(lengths, 64, np.random.default_rng(1), bucket_batches=20)
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(5000))  # each example exactly once
    again = bucketed_batches(lengths, 64, np.random.default_rng(1), bucket_batches=20)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))  # seeded
    padded = sum(len(b) * lengths[b].max() for b in batches)
    perm = np.random.default_rng(1).permutation(5000)
    unsorted = sum(64 * lengths[perm[i:i + 64]].max() for i in range(0, 5000, 64))
    assert padded < 0.6 * unsorted
    # the examples' own batches: each input padded to its batch's longest only
    ds = tiny_kg()
    enc = _encoder(ds, context_size=3)
    ex = QueryExamples.from_triples(enc, ds.train)
    st = ex.epoch_state(0)
    lens = ex.lengths(st)
    for b in bucketed_batches(lens, 8, np.random.default_rng(0), bucket_batches=2):
        ids, mask, labels = ex.batch(b, st)
        assert ids.shape[1] == lens[b].max() and torch.equal(mask.sum(1), torch.as_tensor(lens[b]))
        assert torch.equal(labels, enc.targets(ex.target[b]))
    te = TensorExamples(*_plain_tensors(enc, ds), enc)
    ids, mask, _ = te.batch(np.array([0, 1]), None)
    assert ids.shape[1] == int(mask.sum(1).max())


def _plain_tensors(enc, ds):
    ids, _ = enc.queries(ds.train[:, 0], ds.train[:, 1], False)
    return ids, torch.as_tensor(ds.train[:, 2])


def test_prefetch_passes_items_and_errors():
    assert list(prefetch(iter(range(10)), depth=2)) == list(range(10))

    def bad():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(bad()))
    it = prefetch(iter(range(1000)), depth=2)
    assert next(it) == 0
    it.close()  # the thread stops


def test_context_run_trains_saves_and_reopens(tmp_path):
    pytest.importorskip("transformers")
    from kgcomplete.seq2seq.run import KGT5Run, train_kgt5

    ds = tiny_kg()
    cfg = micro_config(epochs=3, context=True, context_size=4, descriptions=True, max_length=48)
    cfg["training"]["eval_every"] = 3
    run = train_kgt5(ds, tmp_path / "run", cfg)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["train_examples_per_s"] > 0 and m["train_tokens_per_s"] > m["train_examples_per_s"]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(0 <= e["padding"] < 1 and e["tokens_per_s"] > 0 for e in log)
    assert run.encoder.context and run.encoder.descriptions is not None
    again = KGT5Run.load(tmp_path / "run")
    a, r = torch.as_tensor(ds.test[:, 0]), torch.as_tensor(ds.test[:, 1])
    assert torch.equal(again.encoder.queries(a, r, False)[0], run.encoder.queries(a, r, False)[0])
    assert torch.equal(again.score_queries(a, r), run.score_queries(a, r))
    assert (again.encoder.queries(a, r, False)[0] != PAD_ID).sum(1).max() > 12  # context lines are there


def test_train_examples_leave_the_target_out_of_the_context():
    """The ready-tensor examples (QA's mix_kg) follow the same rule as the batches."""
    from kgcomplete.seq2seq.run import train_examples

    ds = _leaky_kg()
    enc = _encoder(ds)
    inputs, targets = train_examples(enc, ds.train)
    ex = QueryExamples.from_triples(enc, ds.train)
    ids, _, _ = ex.batch(np.arange(len(ex)), None)  # the evaluation sample, as train_examples reads
    assert torch.equal(inputs[:, :ids.shape[1]], ids) and torch.equal(targets, torch.as_tensor(ex.target))


def test_query_attention_model_reads_context_through_the_encoder_only():
    """``kgt5.context_attention: query``: context tokens carry mask value 2; the encoder reads them,
    the decoder's cross-attention sees only the query tokens, the same in forward (training) and in
    get_encoder + forward (the decoders)."""
    pytest.importorskip("transformers")
    from transformers.modeling_outputs import BaseModelOutput

    from kgcomplete.seq2seq.decoding import score_entities
    from kgcomplete.seq2seq.model import CONTEXT_MASK, build_model

    ds = tiny_kg()
    plain_masks = _encoder(ds, context_size=3)
    texts, tok = plain_masks.texts, plain_masks.tokenizer
    enc = QueryEncoder(tok, texts, 64, neighbourhood=plain_masks.neighbourhood, context_size=3, query_attention=True)
    a, r = ds.train[:, 0], ds.train[:, 1]
    ids, mask = enc.queries(a, r, False)
    ids0, mask0 = plain_masks.queries(a, r, False)
    assert torch.equal(ids, ids0) and torch.equal(mask > 0, mask0 > 0)
    n_query = (enc.queries(a, r, False, sample=_empty_sample(ds))[1] > 0).sum(1)
    assert torch.equal((mask == 1).sum(1), n_query)  # query line + </s>
    assert ((mask == CONTEXT_MASK).sum(1) > 0).all()
    facts = [list(texts.context_lines(enc.context_facts(x))) for x in a[:3]]
    text_ids, text_mask = enc.encode_text([input_text(texts.entity[x], texts.relation[y], False, f)
                                           for x, y, f in zip(a[:3], r[:3], facts)])
    assert torch.equal(text_ids, ids[:3, :text_ids.shape[1]]) and torch.equal(text_mask, mask[:3, :text_mask.shape[1]])

    torch.manual_seed(0)
    model = build_model(tok.vocab_size, "micro", seed=0, query_attention=True).eval()
    labels = enc.targets(ds.train[:, 2])
    with torch.no_grad():
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        hidden = model.encoder(input_ids=ids, attention_mask=(mask > 0).long()).last_hidden_state
        manual = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=(mask == 1).long(),
                       labels=labels).loss
        everything = build_model(tok.vocab_size, "micro", seed=0)(input_ids=ids, attention_mask=(mask > 0).long(),
                                                                   labels=labels).loss
    assert torch.allclose(loss, manual) and not torch.allclose(loss, everything)
    # the decoders' path (get_encoder, then forward with encoder outputs) scores the same
    scores = score_entities(model, ids[:4], mask[:4], enc.entity_ids, torch.as_tensor(ds.train[:4, 2:3]))
    with torch.no_grad():
        out = model(input_ids=ids[:4], attention_mask=mask[:4], labels=labels[:4])
    lp = torch.log_softmax(out.logits, -1).gather(2, labels[:4].clamp(min=0)[:, :, None])[:, :, 0]
    assert torch.allclose(scores[:, 0], (lp * (labels[:4] != -100)).sum(1), atol=1e-5)
    # the context changes the answer only through the encoder: other context, other scores
    other = enc.queries(a[:4], r[:4], False, sample=enc.sample(5))
    assert not torch.allclose(score_entities(model, *other, enc.entity_ids, torch.as_tensor(ds.train[:4, 2:3])), scores)
    # beam search hands the KV cache to the subclass under T5's own (current) keyword: no deprecation warning
    import warnings

    from kgcomplete.seq2seq.decoding import beam_search
    from kgcomplete.seq2seq.trie import EntityTrie

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        seqs, logp = beam_search(model, ids[:4], mask[:4], 2, EntityTrie(enc.entity_ids, tok.vocab_size))
    assert logp.shape[0] == 4 and torch.isfinite(logp[:, 0]).all()
