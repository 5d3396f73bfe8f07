"""Loading time and peak memory of an ogbl-wikikg2-sized synthetic KG: text first, compact copy second.

    PYTHONPATH=src python benchmarks/bench_loading.py [--entities 2500000] [--triples 17000000]
        [--relations 535] [--workdir /tmp/kgc-bench] [--skip-from-folder]

Each phase runs in a fresh subprocess, so "peak RSS" is that process's own maximum resident set
(``ru_maxrss``), imports included. Phases:

1. ``synth``           generate the graph (train/valid/test.txt)
2. ``from_folder``     ``Dataset.from_folder``: the plain in-memory text reader (reference)
3. ``first load``      ``compact.load_folder``: streaming text ingestion + compact copy written
4. ``second load``     ``compact.load_folder`` again: memory-maps the compact copy
5. ``second + touch``  as 4, then one pass over all triples (sum), so the pages are really read
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PHASES = {
    "synth": """
from kgcomplete.data.synth import generate
r = generate(OUT, ENT, REL, TRI, seed=0)
info = {"triples": sum(r.counts.values())}
""",
    "from_folder": """
from kgcomplete.data import Dataset
ds = Dataset.from_folder(OUT)
info = {"entities": ds.num_entities, "triples": int(sum(len(v) for v in ds.splits.values()))}
""",
    "first load (text -> compact)": """
from kgcomplete.data.compact import load_folder
ds = load_folder(OUT, cache_dir=CACHE)
info = {"entities": ds.num_entities, "triples": int(sum(len(v) for v in ds.splits.values()))}
""",
    "second load (compact)": """
from kgcomplete.data.compact import load_folder
ds = load_folder(OUT, cache_dir=CACHE)
info = {"entities": ds.num_entities, "triples": int(sum(len(v) for v in ds.splits.values()))}
""",
    "second load + touch all triples": """
from kgcomplete.data.compact import load_folder
ds = load_folder(OUT, cache_dir=CACHE)
s = sum(int(v.sum()) for v in ds.splits.values())
info = {"entities": ds.num_entities, "triples": int(sum(len(v) for v in ds.splits.values()))}
""",
}

RUNNER = """
import json, resource, sys, time
OUT, CACHE, ENT, REL, TRI = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t0 = time.perf_counter()
{body}
info["seconds"] = time.perf_counter() - t0
info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(info))
"""


def run_phase(name: str, args: argparse.Namespace, out: Path, cache: Path) -> dict:
    code = RUNNER.replace("{body}", PHASES[name])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    p = subprocess.run([sys.executable, "-c", code, str(out), str(cache), str(args.entities), str(args.relations),
                        str(args.triples)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"phase {name!r} failed:\n{p.stderr[-3000:]}")
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entities", type=int, default=2_500_000)
    ap.add_argument("--relations", type=int, default=535)
    ap.add_argument("--triples", type=int, default=17_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/kgc-bench"))
    ap.add_argument("--skip-from-folder", action="store_true", help="skip the in-memory reader (slow, large)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    out, cache = args.workdir / "kg", args.workdir / "compact"
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    rows = []
    for name in PHASES:
        if name == "from_folder" and args.skip_from_folder:
            continue
        r = run_phase(name, args, out, cache)
        rows.append((name, r))
        print(f"  {name}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:,.0f} MB", file=sys.stderr)
    text_mb = sum((out / f"{s}.txt").stat().st_size for s in ("train", "valid", "test")) / 1e6
    compact_mb = sum(p.stat().st_size for p in cache.iterdir()) / 1e6
    print(f"\nSynthetic KG: {args.entities:,} entities, {args.relations} relations, {args.triples:,} triples "
          f"(text {text_mb:,.0f} MB, compact copy {compact_mb:,.0f} MB); {os.cpu_count()} CPUs\n")
    print(f"| {'phase':<32} | {'seconds':>8} | {'peak RSS (MB)':>13} | {'entities':>10} | {'triples':>11} |")
    print(f"|{'-' * 34}|{'-' * 9}:|{'-' * 14}:|{'-' * 11}:|{'-' * 12}:|")
    for name, r in rows:
        ent = f"{r['entities']:,}" if "entities" in r else ""
        print(f"| {name:<32} | {r['seconds']:>8.1f} | {r['peak_rss_mb']:>13,.0f} | {ent:>10} | {r['triples']:>11,} |")
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
