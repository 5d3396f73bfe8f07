"""The bad-input cases of tests/test_bad_inputs.py run through the ``kgc`` of any revision: exit code
and the first line of the message, as a markdown table (the before/after table of the issue).

    python tools/bad_inputs_table.py                 # this checkout
    python tools/bad_inputs_table.py --rev d450e7b   # an earlier revision (a temporary git worktree)

Each case's inputs are written by the current test code (tests/test_bad_inputs.py); the command, and
the training of the runs that the damaged-run cases start from, run under the chosen revision
(``PYTHONPATH=<rev>/src python -m kgcomplete ...``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("WARNING", "INFO", "  warnings"))
             and "UserWarning" not in ln and "return torch" not in ln]
    if any(ln.startswith("Traceback") for ln in lines):
        return "Traceback ... " + lines[-1][:150]
    errors = [ln for ln in lines if ln.startswith("Error")]
    return (errors[0] if errors else (lines[-1] if lines else ""))[:170]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default=None, help="git revision to run (default: this checkout)")
    args = ap.parse_args()
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]
    import test_bad_inputs as cases

    src = ROOT / "src"
    work = None
    if args.rev:
        work = Path(tempfile.mkdtemp()) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(work), args.rev], check=True)
        src = work / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}

    def trained_run(tmp: Path) -> Path:  # the damaged-run cases start from a run of the chosen revision
        run = tmp / "run"
        subprocess.run([sys.executable, "-m", "kgcomplete", "train", "--dataset", "nations", "--out", str(run),
                        *cases.FAST, "--set", "training.eval_every=1"], env=env, check=True, capture_output=True)
        return run

    cases.trained_run = trained_run
    rows = []
    try:
        for name, (setup, *_rest) in {**cases.CASES, **cases.DAMAGED}.items():
            saved = {k: os.environ.get(k) for k in ("KGC_HOME", "KGC_OFFLINE")}
            with tempfile.TemporaryDirectory() as tmp:
                argv = setup(Path(tmp))
                run_env = {**env, **{k: os.environ[k] for k in ("KGC_HOME", "KGC_OFFLINE") if os.environ.get(k)}}
                res = subprocess.run([sys.executable, "-m", "kgcomplete", *argv], capture_output=True, text=True,
                                     env=run_env, cwd=tmp, timeout=300)
                rows.append((name, res.returncode, first_line(res.stderr + res.stdout).replace(tmp, "TMP")))
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        if work is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work)], check=False)
    print(f"| case | exit | first line ({args.rev or 'this checkout'}) |\n|---|---:|---|")
    for name, rc, line in rows:
        print(f"| {name} | {rc} | `{line.replace('|', '/')}` |")


if __name__ == "__main__":
    main()
