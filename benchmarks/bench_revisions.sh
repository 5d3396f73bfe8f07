#!/usr/bin/env bash
# Speed of two revisions side by side, alternating in one run (both see the same machine load):
# bench_kernels.py and bench_scale.py throughput of each, REPS times, one torch thread.
#
#   benchmarks/bench_revisions.sh REV_A REV_B DATA [REPS]
#   e.g. benchmarks/bench_revisions.sh 5c97b15 HEAD data/synth200k 2
#   (DATA: a folder from `kgc datasets synth --entities 200000 --relations 50 --triples 1000000 --out DATA`)
#
# Each benchmark script puts its own checkout's src/ first on sys.path, so each revision runs its own code.
set -euo pipefail
a=${1:?REV_A}; b=${2:?REV_B}; data=${3:?DATA}; reps=${4:-2}
repo=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for rev in "$a" "$b"; do
  git -C "$repo" worktree add -q --detach "$work/$rev" "$rev"
done
trap 'for r in "$a" "$b"; do git -C "$repo" worktree remove --force "$work/$r" 2>/dev/null || true; done; rm -rf "$work"' EXIT
for rep in $(seq "$reps"); do
  for rev in "$a" "$b"; do
    echo "== $rev (rep $rep): bench_kernels"
    python "$work/$rev/benchmarks/bench_kernels.py" --threads 1 --entities 100000 2>&1 | grep '^|'
    echo "== $rev (rep $rep): bench_scale throughput"
    python "$work/$rev/benchmarks/bench_scale.py" throughput --data "$data" --threads 1 --batches 100 --reps 2 2>&1 | grep '^|'
  done
done
