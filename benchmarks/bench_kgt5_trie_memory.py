"""Memory of an imported KGT5 checkpoint's entity side: strings, token sequences and trie, per million entities.

    PYTHONPATH=src python benchmarks/bench_kgt5_trie_memory.py [--entities 1000000] [--vocab 32000]
        [--out DIR] [--seed 0]

Synthetic entity strings shaped like Wikidata titles (1-4 words drawn from a Zipf vocabulary of
invented words, ``(n)`` appended where a title repeats, made unique as the seed system did), a BPE
tokenizer with a T5-size vocabulary trained on a sample of them, then the pieces
``kgc kgt5 import`` writes (:mod:`kgcomplete.seq2seq.pretrained`):

* ``entity_texts/``: :class:`~kgcomplete.seq2seq.strings.StringTable` (UTF-8 bytes, offsets, sorted hashes)
* ``trie/tokens.npy offsets.npy``: the entity token sequences (``</s>`` included)
* ``trie/token.npy indptr.npy entity.npy``: the :class:`~kgcomplete.seq2seq.trie.EntityTrie`

For each: bytes on disk (what a memory map can page in), build time, and the peak of NumPy's
allocations while building (``tracemalloc``, which NumPy reports to). Then the files are opened
memory-mapped in a fresh process and its resident memory (mapped file pages and its own) is read
after opening and after 10,000
string lookups, 10,000 id -> string reads and 10,000 trie walks (the pages decoding touches).
The last column scales the on-disk bytes to WikiKG90Mv2's 91,230,610 entities. For comparison
the previous trie layout (int64 keys, children, indptr, entity per node, in memory) is computed
from the node count: 32 bytes a node.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kgcomplete.seq2seq.strings import NpyWriter, StringTable  # noqa: E402
from kgcomplete.seq2seq.tokenizer import KGTokenizer  # noqa: E402
from kgcomplete.seq2seq.trie import EntityTrie, RaggedTokens, token_dtype  # noqa: E402

WIKIKG90MV2_ENTITIES = 91_230_610
BLOCK = 1 << 18


def synthetic_titles(n: int, seed: int = 0) -> np.ndarray:
    """``n`` unique title-like strings, vectorised (object-array concatenation)."""
    rng = np.random.default_rng(seed)
    syll = np.array(["ka", "lo", "mi", "ren", "sa", "to", "vel", "an", "dor", "is", "ber", "gun", "ta", "ne", "rio",
                     "mar", "el", "ost", "wa", "lin", "ch", "ez", "ol", "ham", "burg", "son", "ville", "berg"], dtype=object)
    n_words = 60_000
    words = syll[rng.integers(0, len(syll), n_words)] + syll[rng.integers(0, len(syll), n_words)]
    three = rng.random(n_words) < 0.5
    words[three] = words[three] + syll[rng.integers(0, len(syll), int(three.sum()))]
    words = np.char.capitalize(words.astype(str)).astype(object)
    zipf = np.minimum(rng.zipf(1.3, (n, 4)) - 1, n_words - 1)
    length = rng.choice([1, 2, 3, 4], size=n, p=[0.25, 0.4, 0.25, 0.1])
    out = words[zipf[:, 0]].copy()
    for j in range(1, 4):  # four word positions, each one vectorised concatenation
        m = length > j
        out[m] = out[m] + " " + words[zipf[m, j]]
    import pandas as pd

    s = pd.Series(out, dtype=object)
    dup = s.duplicated(keep="first").to_numpy()
    out[dup] = out[dup] + " (" + pd.Series(np.flatnonzero(dup)).astype(str).to_numpy(dtype=object) + ")"
    return out


def measure(label: str, fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  {label}: {seconds:.1f}s, peak NumPy/Python allocations {peak / 2**20:.0f} MiB", flush=True)
    return result, seconds, peak


def folder_bytes(folder: Path, names) -> int:
    return sum((folder / n).stat().st_size for n in names)


def rss() -> dict[str, int]:
    """Resident memory of this process: pages of mapped files (``RssFile``) and its own (``RssAnon``)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssFile:", "RssAnon:")):
                key, kb = line.split()[:2]
                out[key[:-1]] = int(kb) * 1024
    return out


def probe(out: Path, n: int, seed: int) -> dict:
    """In a fresh process: resident memory after opening the maps, and after lookups, reads and trie walks
    (the same operations run once on a tiny trie first, so that torch's first-call setup is not counted)."""
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed + 1)
    ids = rng.integers(0, n, 10_000)
    with tempfile.TemporaryDirectory() as tiny:  # warm-up: torch kernels, NumPy paths
        t = StringTable.from_strings(Path(tiny) / "s", ["a", "b c"])
        t.lookup(t.get([0, 1]))
        seqs = RaggedTokens(np.array([3, 1, 4, 5, 1], np.int16), np.array([0, 2, 5]))
        EntityTrie.from_ragged(seqs, 8).lookup(seqs.rows([0, 1]))
    base = rss()
    table = StringTable.open(out / "entity_texts")
    tokens = RaggedTokens.open(out / "trie")
    trie = EntityTrie.open(out / "trie")
    opened = rss()
    t0 = time.perf_counter()
    texts = table.get(ids)
    t_get = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = table.lookup(texts)
    t_lookup = time.perf_counter() - t0
    assert np.array_equal(found, ids)
    t0 = time.perf_counter()
    got = trie.lookup(tokens.rows(ids))
    t_walk = time.perf_counter() - t0
    assert np.array_equal(got.numpy(), ids)
    del texts, found, got
    used = rss()
    return {"open_file": opened["RssFile"] - base["RssFile"], "open_anon": opened["RssAnon"] - base["RssAnon"],
            "used_file": used["RssFile"] - base["RssFile"], "used_anon": used["RssAnon"] - base["RssAnon"],
            "get_s": t_get, "lookup_s": t_lookup, "walk_s": t_walk}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--vocab", type=int, default=32_000, help="tokenizer vocabulary (T5: 32,100)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the files (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.out, args.entities, args.seed)))
        return
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    out = args.out or Path(tempfile.mkdtemp(prefix="kgt5-trie-bench-"))
    n = args.entities
    print(f"{n:,} synthetic entity strings, BPE vocabulary {args.vocab:,}; files in {out}", flush=True)
    titles = synthetic_titles(n, args.seed)
    mean_chars = float(np.mean([len(t) for t in titles[:100_000]]))
    tok = KGTokenizer.train(titles[: min(n, 200_000)].tolist(), vocab_size=args.vocab)
    V = tok.vocab_size

    _, t_table, p_table = measure("string table", lambda: StringTable.from_strings(out / "entity_texts", titles, BLOCK))

    def tokenize():
        (out / "trie").mkdir(parents=True, exist_ok=True)
        lengths = []
        with NpyWriter(out / "trie" / "tokens.npy", token_dtype(V)) as w:
            for s in range(0, n, BLOCK):
                flat, ln = tok.encode_flat(titles[s:s + BLOCK].tolist(), eos=True)
                w.append(flat)
                lengths.append(ln)
        np.save(out / "trie" / "offsets.npy", np.concatenate([[0], np.cumsum(np.concatenate(lengths))]))

    _, t_tok, p_tok = measure("tokenise (BPE, 1 thread)", tokenize)
    del titles

    def build():
        trie = EntityTrie.from_ragged(RaggedTokens.open(out / "trie"), V, duplicates="first")
        trie.save(out / "trie")
        return trie

    trie, t_trie, p_trie = measure("trie build", build)
    tokens = RaggedTokens.open(out / "trie")
    n_tokens = len(tokens.flat)
    res = subprocess.run([sys.executable, __file__, "--probe", "--out", str(out), "--entities", str(n),
                          "--seed", str(args.seed)], capture_output=True, text=True, check=True)
    pr = json.loads(res.stdout.strip().splitlines()[-1])

    parts = [
        ("entity strings (StringTable)", folder_bytes(out / "entity_texts", ["bytes.npy", "offsets.npy", "hashes.npy", "order.npy"])),
        ("token sequences (tokens + offsets)", folder_bytes(out / "trie", ["tokens.npy", "offsets.npy"])),
        ("trie (token, indptr, entity)", folder_bytes(out / "trie", ["token.npy", "indptr.npy", "entity.npy"])),
    ]
    total = sum(b for _, b in parts)
    per_m = 1e6 / n
    print()
    print(f"{n:,} entities, mean {mean_chars:.1f} characters, {n_tokens / n:.2f} tokens each (</s> included), "
          f"vocabulary {V:,}; trie: {trie.num_nodes:,} nodes ({trie.num_nodes / n:.2f} per entity), depth {trie.depth}, "
          f"{trie.shadowed} shadowed")
    print(f"{'part':<38}{'MiB':>10}{'MiB / 1M entities':>20}{'GiB at 91.2M':>15}")
    for name, b in [*parts, ("total on disk (memory-mapped)", total)]:
        print(f"{name:<38}{b / 2**20:>10.1f}{b * per_m / 2**20:>20.1f}{b * WIKIKG90MV2_ENTITIES / n / 2**30:>15.2f}")
    old = 32 * trie.num_nodes
    print(f"{'previous trie layout (int64, in RAM)':<38}{old / 2**20:>10.1f}{old * per_m / 2**20:>20.1f}"
          f"{old * WIKIKG90MV2_ENTITIES / n / 2**30:>15.2f}")
    print()
    print(f"{'build step':<38}{'seconds':>10}{'peak MiB':>20}")
    for name, s, p in (("string table", t_table, p_table), ("tokenise", t_tok, p_tok), ("trie", t_trie, p_trie)):
        print(f"{name:<38}{s:>10.1f}{p / 2**20:>20.0f}")
    print()
    mib = lambda b: f"{b / 2**20:+.1f} MiB"  # noqa: E731
    print(f"opened memory-mapped in a fresh process: resident {mib(pr['open_file'])} of mapped file pages, "
          f"{mib(pr['open_anon'])} own; after 10,000 string lookups, id reads and trie walks: "
          f"{mib(pr['used_file'])} mapped, {mib(pr['used_anon'])} own "
          f"(string -> id {pr['lookup_s'] * 1e3:.0f} ms, id -> string {pr['get_s'] * 1e3:.0f} ms, "
          f"trie walks {pr['walk_s'] * 1e3:.0f} ms for the 10,000)")


if __name__ == "__main__":
    main()
