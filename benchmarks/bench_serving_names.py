"""Unknown names in ``kgc serve``: close-match latency and /api/health latency under load.

    python benchmarks/bench_serving_names.py [--sizes 40000 1000000] [--queries 40]

For each vocabulary size: an untrained DistMult run whose labels look alike (``protein_kinase_17``),
then (1) the build time of the close-match index, (2) the latency of one unknown-name lookup with
the index and with the previous full scan (pandas ``str`` scans + ``difflib`` over every label; for
comparison in the same run), (3) a live server: 40 concurrent misspelt queries (404) while
/api/health is polled -- its worst latency, and the time for all 404s.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).resolve().parents[1] / "tests")]


def scan_close_matches(labels: np.ndarray, label: str, n: int = 5) -> list[str]:
    """The previous ``Vocabulary.close_matches``: a scan of every label per call."""
    import pandas as pd

    s = pd.Index(labels).astype(str)
    low = label.lower()
    lower = s.str.lower()
    prefix = s[lower.str.startswith(low)][:n].tolist()
    if len(prefix) >= n:
        return prefix
    contains = [x for x in s[lower.str.contains(low, regex=False)][: n * 2].tolist() if x not in prefix]
    out = (prefix + contains)[:n]
    if len(out) < n and len(s) <= 200_000:
        out += [x for x in difflib.get_close_matches(label, s.tolist(), n=n) if x not in out]
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[40_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=40)
    args = ap.parse_args()
    import httpx

    from kgcomplete.serving.app import create_app
    from live_server import live_server
    from test_serving_limits import big_run

    rows = []
    for n in args.sizes:
        run = big_run(n)
        labels = run.dataset.entities.labels
        t0 = time.perf_counter()
        run.dataset.entities.fuzzy_index()
        build = time.perf_counter() - t0
        misspelt = [f"protien_kinaes_{i}x" for i in range(20)]
        idx_ms = []
        for q in misspelt:
            t0 = time.perf_counter()
            run.dataset.entities.close_matches(q)
            idx_ms.append(1000 * (time.perf_counter() - t0))
        scan_ms = []
        for q in misspelt[:3]:
            t0 = time.perf_counter()
            scan_close_matches(labels, q)
            scan_ms.append(1000 * (time.perf_counter() - t0))
        app = create_app(run)
        with live_server(app, timeout_s=600) as url:
            async def fire():
                async with httpx.AsyncClient(base_url=url, timeout=120,
                                             limits=httpx.Limits(max_connections=args.queries + 8)) as c:
                    t0 = time.perf_counter()
                    pending = asyncio.ensure_future(asyncio.gather(*[
                        c.get("/api/predict/tails", params={"head": f"protien_kinaes_{i}x", "relation": "1"})
                        for i in range(args.queries)]))
                    health = []
                    while not pending.done():
                        h0 = time.perf_counter()
                        await c.get("/api/health")
                        health.append(time.perf_counter() - h0)
                        await asyncio.sleep(0.005)
                    answers = await pending
                    return answers, health, time.perf_counter() - t0

            answers, health, total = asyncio.run(fire())
        assert all(a.status_code == 404 for a in answers)
        rows.append((n, build, statistics.median(idx_ms), statistics.median(scan_ms), 1000 * max(health),
                     1000 * statistics.median(health), total))
    print("| entities | index build s | unknown name, index (ms, median) | unknown name, full scan (ms) "
          f"| /api/health under {args.queries} concurrent 404s: max / median ms | all 404s answered in s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, build, idx, scan, hmax, hmed, total in rows:
        print(f"| {n:,} | {build:.1f} | {idx:.1f} | {scan:,.0f} | {hmax:.0f} / {hmed:.0f} | {total:.2f} |")


if __name__ == "__main__":
    main()
