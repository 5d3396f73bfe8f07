"""KGT5 decoding time per query vs the number of entities, next to KGE (ComplEx) scoring.

    PYTHONPATH=src python benchmarks/bench_kgt5_decoding.py [--queries 64] [--threads 1] [--wn18rr PATH]

For umls (135 entities) and wn18rr (40,943; plus 1k and 10k entity subsets of it, same tokenizer,
so only the number of entities changes) it times, per query, with a randomly initialised `tiny`
KGT5 (decoding cost does not depend on the weights' values; unconstrained outputs are capped at
the longest entity sequence, since longer outputs cannot be entities):

* greedy (unconstrained), sampling with N = 50 (unconstrained), constrained beam search k = 10;
* brute force: teacher-forced log-prob of every entity text (exact ranking; grows with E; timed on
  at most 1,000 random entities and scaled linearly to all E, flagged ``brute_force_extrapolated``);
* ComplEx (dim 128) scoring all entities (grows with E).

Times are process CPU time per query with one thread (best of ``--repeats``): on shared cores wall
time mostly measures the neighbours. Writes ``--out`` JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kgcomplete.data.dataset import Dataset  # noqa: E402
from kgcomplete.data.registry import load_dataset  # noqa: E402
from kgcomplete.models import build_model as build_kge  # noqa: E402
from kgcomplete.seq2seq.decoding import KGT5Scorer, score_entities  # noqa: E402
from kgcomplete.seq2seq.encoding import QueryEncoder  # noqa: E402
from kgcomplete.seq2seq.model import build_model  # noqa: E402
from kgcomplete.seq2seq.tokenizer import KGTokenizer  # noqa: E402
from kgcomplete.seq2seq.trie import EntityTrie  # noqa: E402
from kgcomplete.seq2seq.verbalize import EntityTexts  # noqa: E402

DEFAULT_WN = ROOT.parent / "shared" / "datasets" / "wn18rr"


def best_time(fn, repeats: int) -> float:
    """Best of ``repeats`` process-CPU times (s). With one thread this is the work done, robust to
    other processes sharing the cores (wall time here varied 3x between identical runs)."""
    out = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return min(out)


def bench(name: str, ds: Dataset, texts: EntityTexts, tok: KGTokenizer, n_queries: int, repeats: int,
          brute_queries: int, brute_entities: int = 1000) -> dict:
    enc = QueryEncoder(tok, texts)
    trie = EntityTrie(enc.entity_ids, tok.vocab_size)
    model = build_model(tok.vocab_size, "tiny", seed=0).eval()
    kge = build_kge("complex", ds.num_entities, ds.num_relations, dim=128, init_scale=0.1).eval()
    rng = np.random.default_rng(0)
    q = ds.test[rng.choice(len(ds.test), n_queries, replace=len(ds.test) < n_queries)]
    a, r = torch.as_tensor(q[:, 0]), torch.as_tensor(q[:, 1])
    row = {"dataset": name, "entities": ds.num_entities, "vocab": tok.vocab_size, "trie_nodes": trie.num_nodes,
           "max_entity_tokens": trie.depth}
    scorers = {
        "greedy": KGT5Scorer(model, enc, trie, method="greedy", constrained=False),
        "sample50": KGT5Scorer(model, enc, trie, method="sample", num_samples=50, constrained=False),
        "beam10_constrained": KGT5Scorer(model, enc, trie, method="beam", beam_size=10, constrained=True),
    }
    with torch.no_grad():
        for key, sc in scorers.items():
            row[f"{key}_ms"] = 1000 * best_time(lambda: sc.topk(a, r), repeats) / n_queries
        ids, mask = enc.queries(a[:brute_queries], r[:brute_queries], False)
        n_ent = min(ds.num_entities, brute_entities)  # linear in E: time a sample, scale to all
        ents = torch.as_tensor(np.random.default_rng(1).permutation(ds.num_entities)[:n_ent])
        row["brute_force_ms"] = 1000 * best_time(
            lambda: score_entities(model, ids, mask, enc.entity_ids, ents, max_rows=8192), 1) / brute_queries \
            * ds.num_entities / n_ent
        row["brute_force_extrapolated"] = n_ent < ds.num_entities
        row["complex_ms"] = 1000 * best_time(lambda: kge.score_queries(a, r), repeats) / n_queries
    print(json.dumps(row), flush=True)
    return row


def subset(ds: Dataset, texts: EntityTexts, n: int, seed: int = 0) -> tuple[Dataset, EntityTexts]:
    """The first ``n`` entities of a random order and the triples among them."""
    keep = np.sort(np.random.default_rng(seed).permutation(ds.num_entities)[:n])
    remap = np.full(ds.num_entities, -1)
    remap[keep] = np.arange(n)
    splits = {}
    for k, t in ds.splits.items():
        m = (remap[t[:, 0]] >= 0) & (remap[t[:, 2]] >= 0)
        splits[k] = np.stack([remap[t[m, 0]], t[m, 1], remap[t[m, 2]]], 1)
    if not len(splits.get("test", [])):
        splits["test"] = splits["train"][:64]
    sub = Dataset.from_arrays(splits["train"], splits.get("valid"), splits["test"], n, ds.num_relations, name=f"sub{n}")
    return sub, EntityTexts(texts.entity[keep], texts.relation)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--brute-queries", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wn18rr", default=str(DEFAULT_WN))
    ap.add_argument("--out", default="kgt5_decoding.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    umls = load_dataset("umls")
    t = EntityTexts.from_dataset(umls)
    rows.append(bench("umls", umls, t, KGTokenizer.train(t.corpus(), 8000), args.queries, args.repeats, args.brute_queries))
    if Path(args.wn18rr).is_dir():
        wn = load_dataset(args.wn18rr, unknown="keep")
        wt = EntityTexts.from_dataset(wn)
        wtok = KGTokenizer.train(wt.corpus(), 8000)
        for n in (1000, 10000):
            sub, st = subset(wn, wt, n)
            rows.append(bench(f"wn18rr-{n // 1000}k", sub, st, wtok, args.queries, args.repeats, args.brute_queries))
        rows.append(bench("wn18rr", wn, wt, wtok, args.queries, args.repeats, args.brute_queries))
    cols = ["dataset", "entities", "vocab", "greedy_ms", "sample50_ms", "beam10_constrained_ms", "brute_force_ms", "complex_ms"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.2f}" if isinstance(row[c], float) else f"{row[c]:,}" if isinstance(row[c], int)
                                else str(row[c]) for c in cols) + " |")
    Path(args.out).write_text(json.dumps({"threads": args.threads, "queries": args.queries, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
