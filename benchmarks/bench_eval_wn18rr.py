"""Filtered evaluation of WN18RR's test split: kgcomplete's Evaluator vs PyKEEN's RankBasedEvaluator,
same ComplEx embeddings (d=256 complex coordinates), same filter (train + valid + test).

    python benchmarks/bench_eval_wn18rr.py [--data ../shared/datasets/wn18rr] [--threads 1] [--batch 256]

The embeddings are a random ComplEx initialisation (the ranking work does not depend on training),
written once to a temporary file and loaded by each system in its own subprocess, so peak RSS is
each system's own. Both rank 2 x 6,268 queries against all 40,943 entities with realistic ties;
the MRRs must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "wn18rr"
DIM = 256


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_embeddings(data: str, path: str) -> None:
    from kgcomplete.data import load_dataset
    from kgcomplete.models import build_model

    ds = load_dataset(data, unknown="keep")
    torch.manual_seed(0)
    m = build_model("complex", ds.num_entities, ds.num_relations, dim=DIM, reciprocal=False, init_scale=0.1)
    torch.save({"entity": m.entity_emb.weight.detach(), "relation": m.relation_emb.weight.detach()}, path)


def run_kgcomplete(data: str, emb: str, batch: int) -> dict:
    from kgcomplete.data import load_dataset
    from kgcomplete.evaluation.evaluator import evaluate
    from kgcomplete.models import build_model

    ds = load_dataset(data, unknown="keep")
    w = torch.load(emb)
    m = build_model("complex", ds.num_entities, ds.num_relations, dim=DIM, reciprocal=False)
    m.load_state_dict({"entity_emb.weight": w["entity"], "relation_emb.weight": w["relation"]})
    t0 = time.perf_counter()
    res = evaluate(m, ds, "test", per_relation=False, chunk_elements=batch * ds.num_entities)
    return {"system": "kgcomplete", "eval_s": time.perf_counter() - t0, "mrr": res["mrr"],
            "hits@10": res["hits@10"], "peak_rss_mb": peak_rss_mb()}


def run_pykeen(data: str, emb: str, batch: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import ComplEx
    from pykeen.triples import TriplesFactory

    from kgcomplete.data import load_dataset

    ds = load_dataset(data, unknown="keep")
    e2id = {str(x): i for i, x in enumerate(ds.entities.labels)}
    r2id = {str(x): i for i, x in enumerate(ds.relations.labels)}
    mk = lambda s: TriplesFactory(torch.as_tensor(ds.splits[s]), entity_to_id=e2id, relation_to_id=r2id)  # noqa: E731
    train, valid, test = mk("train"), mk("valid"), mk("test")
    model = ComplEx(triples_factory=train, embedding_dim=DIM, random_seed=0)
    w = torch.load(emb)

    def interleave(x):  # kgcomplete stores [re | im] halves, PyKEEN interleaved (re, im) pairs
        re, im = x.chunk(2, dim=-1)
        return torch.stack([re, im], dim=-1).reshape(x.shape[0], -1)

    with torch.no_grad():
        for rep, x in ((model.entity_representations[0], w["entity"]), (model.relation_representations[0], w["relation"])):
            p = rep._embeddings.weight
            p.copy_(interleave(x).view(p.shape) if not p.is_complex() else torch.view_as_complex(
                interleave(x).reshape(x.shape[0], -1, 2).contiguous()))
    t0 = time.perf_counter()
    res = RankBasedEvaluator(filtered=True).evaluate(
        model, test.mapped_triples, additional_filter_triples=[train.mapped_triples, valid.mapped_triples],
        use_tqdm=False, batch_size=batch)
    return {"system": "pykeen " + __import__("pykeen").get_version(), "eval_s": time.perf_counter() - t0,
            "mrr": float(res.get_metric("both.realistic.inverse_harmonic_mean_rank")),
            "hits@10": float(res.get_metric("both.realistic.hits_at_10")), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256, help="kgcomplete: queries scored at once")
    ap.add_argument("--pykeen-batch", type=int, default=16,
                    help="PyKEEN: queries at once (its ComplEx scores by broadcasting (batch, E, d) on CPU: "
                         "256 needs about 20 GiB)")
    ap.add_argument("--systems", default="kgcomplete,pykeen")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--emb", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        fn = run_kgcomplete if args.child == "kgcomplete" else run_pykeen
        print(json.dumps(fn(args.data, args.emb, args.batch)))
        return
    emb = os.path.join(tempfile.mkdtemp(), "complex.pt")
    make_embeddings(args.data, emb)
    rows = []
    for system in args.systems.split(","):
        batch = args.batch if system == "kgcomplete" else args.pykeen_batch
        cmd = [sys.executable, __file__, "--child", system, "--data", args.data, "--emb", emb,
               "--threads", str(args.threads), "--batch", str(batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if out.returncode != 0:
            print(f"{system} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nWN18RR test, filtered, 2 x 6,268 queries x 40,943 entities, ComplEx d={DIM} (same embeddings), "
          f"batch {args.batch} (kgcomplete) / {args.pykeen_batch} (PyKEEN) queries, torch threads {args.threads}, load average {load}\n")
    print("| evaluator | time (s) | peak RSS (MB) | MRR | Hits@10 |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['system']} | {r['eval_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['mrr']:.5f} | {r['hits@10']:.4f} |")


if __name__ == "__main__":
    main()
