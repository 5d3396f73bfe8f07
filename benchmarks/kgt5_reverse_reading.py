"""Would KGT5 rank better by both readings of a triple? (the KGT5 side of ``model.reciprocal_scoring``)

For each query of a split, the run's constrained beam (k = 50) gives candidates with their sequence
log-probabilities ``log p(c | query)``; each candidate is also scored by teacher forcing in the other
direction, ``log p(anchor | query of c)`` (the head query ``(?, r, c)`` for a tail query, with c's own
context), and the candidates are ranked by ``log p(c | query) + w log p(anchor | query of c)``.
Prints the filtered MRR and Hits@1 for each ``w`` (w = 0 is the run's own ranking).

    python benchmarks/kgt5_reverse_reading.py RUN [--split valid] [--threads 1] [--weights 0 0.1 0.25 0.5 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--beam", type=int, default=50)
    ap.add_argument("--weights", type=float, nargs="+", default=[0, 0.1, 0.25, 0.5, 1.0])
    args = ap.parse_args(argv)
    from kgcomplete.evaluation.filter_index import FilterIndex
    from kgcomplete.seq2seq.decoding import generated_ranks, score_entities
    from kgcomplete.seq2seq.run import KGT5Run

    torch.set_num_threads(args.threads)
    run = KGT5Run.load(args.run)
    scorer, ds = run.scorer(method="beam", beam_size=args.beam), run.dataset
    enc, known = scorer.encoder, FilterIndex.from_dataset(ds)
    triples = np.asarray(ds.splits[args.split], dtype=np.int64)
    ranks: dict[float, list[np.ndarray]] = {w: [] for w in args.weights}
    t0 = time.perf_counter()
    with torch.no_grad():
        for head in (True, False):
            anchor_col, answer_col = (2, 0) if head else (0, 2)
            for s in range(0, len(triples), 256):
                b = triples[s:s + 256]
                anchor, rel = torch.as_tensor(b[:, anchor_col]), torch.as_tensor(b[:, 1])
                ents, own = scorer.topk(anchor, rel, head)  # (B, K)
                B, K = ents.shape
                ids, mask = enc.queries(ents.clamp(min=0).reshape(-1), rel.repeat_interleave(K), not head)
                other = score_entities(scorer.model, ids, mask, enc.entity_ids,
                                       anchor.repeat_interleave(K)[:, None]).reshape(B, K)
                q, ent = known.known(b[:, anchor_col], b[:, 1], head=head)
                keep = ent != b[:, answer_col][q]
                for w in args.weights:
                    score = torch.where(ents >= 0, own + w * other, torch.full_like(own, float("-inf")))
                    ranks[w].append(generated_ranks(ents.numpy(), score.numpy(), b[:, answer_col], q[keep], ent[keep],
                                                    ds.num_entities))
    print(f"{args.run}, {args.split}, constrained beam {args.beam}: {time.perf_counter() - t0:.0f} s")
    print("| w | MRR | Hits@1 |\n|---:|---:|---:|")
    for w in args.weights:
        r = np.concatenate(ranks[w])
        print(f"| {w:g} | {(1 / r).mean():.4f} | {(r <= 1).mean():.4f} |")


if __name__ == "__main__":
    main()
