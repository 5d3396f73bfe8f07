"""Every code block of README.md and docs/*.md runs as written, so the docs cannot drift.

Per markdown file, its blocks run in order in one fresh folder (what one block writes, e.g.
``runs/nations``, the next may use), with the installed ``kgc`` and Python, nothing downloaded
(``KGC_OFFLINE=1``, ``KGC_HOME`` inside the folder) and ``../shared`` linked where it is:

- ```` ```bash ```` blocks run with ``bash -euo pipefail``; ```` ```python ```` blocks with ``python``;
- ```` ```yaml ```` blocks that hold config sections must load as a config (unknown keys fail);
- ```` ```text ```` (or an unlabelled fence) is output or a layout, not code: it must not hold a
  command;
- an HTML comment on the line before a fence changes what happens: ``<!-- docs-test: skip REASON
  -->`` (not run: REASON says why, e.g. it needs a GPU or hours; the test lists them),
  ``<!-- docs-test: background -->`` (a server: started, waited for, stopped after the file).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?:<!--\s*docs-test:\s*(?P<mark>.*?)\s*-->[ \t]*\n)?^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$",
                   re.S | re.M)
COMMAND = re.compile(r"^\s*(\$ )?(kgc|python|pip|curl|torchrun)\b", re.M)
#: seconds a file's blocks may take together
FILE_TIMEOUT = 420


def blocks(path: Path) -> list[dict]:
    """The fenced blocks of a markdown file: ``lang``, ``body``, ``mark`` (the docs-test comment), ``line``."""
    text = path.read_text()
    return [{"lang": m["lang"].strip().split()[0].lower() if m["lang"].strip() else "", "body": m["body"],
             "mark": (m["mark"] or "").strip(), "line": text.count("\n", 0, m.start("body"))}
            for m in FENCE.finditer(text)]


def test_every_block_is_accounted_for():
    """Each block is run, a loadable config, plain text without commands, or skipped with a reason."""
    problems = []
    for path in DOCS:
        for b in blocks(path):
            where = f"{path.relative_to(ROOT)}:{b['line']}"
            if b["mark"].startswith("skip"):
                if len(b["mark"].split(None, 1)) < 2:
                    problems.append(f"{where}: 'docs-test: skip' needs a reason")
            elif b["mark"] and b["mark"] != "background":
                problems.append(f"{where}: unknown docs-test mark {b['mark']!r}")
            elif b["lang"] not in ("bash", "python", "yaml", "text", ""):
                problems.append(f"{where}: fence language {b['lang']!r} (bash, python, yaml or text)")
            elif b["lang"] in ("text", "") and COMMAND.search(b["body"]):
                problems.append(f"{where}: commands in a text block: mark it bash (it will run)")
    assert not problems, "\n".join(problems)


def _env(folder: Path) -> dict:
    env = dict(os.environ)
    env.update(KGC_HOME=str(folder / ".kgc"), KGC_OFFLINE="1", KGC_TEST_THREADS="1", OMP_NUM_THREADS="1",
               MPLBACKEND="Agg", WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1",
               MLFLOW_TRACKING_URI=(folder / "mlruns").as_uri())
    return env


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import httpx

    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the background block exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no server at {url} after {timeout}s")


def _check_yaml(body: str, where: str) -> None:
    from kgcomplete.config import Config, section_names

    data = yaml.safe_load(body)
    if isinstance(data, dict) and set(data) <= set(section_names()):
        cfg = Config()
        for name, values in data.items():  # documented subsets of sections: each key must exist
            for key, value in (values or {}).items():
                cfg.section(name)  # the section exists
                assert hasattr(cfg.section(name), key), f"{where}: {name}.{key} is not a config key"


def run_file(path: Path, tmp_path: Path) -> Optional[str]:
    """Run the blocks of one markdown file in order in ``tmp_path``; None when every block passed,
    else what failed (the block's place, body and output)."""
    todo = [b for b in blocks(path) if not b["mark"].startswith("skip")]
    if not any(b["lang"] in ("bash", "python", "yaml") for b in todo):
        return None  # nothing to run in this file (layouts and output only)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    env, t0, servers = _env(tmp_path), time.time(), []
    try:
        for b in todo:
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{b['line']}"
            if b["lang"] == "yaml":
                _check_yaml(b["body"], where)
                continue
            if b["lang"] not in ("bash", "python"):
                continue
            cmd = (["bash", "-euo", "pipefail", "-c", b["body"]] if b["lang"] == "bash"
                   else [sys.executable, "-c", b["body"]])
            if b["mark"] == "background":
                proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
                servers.append(proc)
                port = re.search(r"--port (\d+)", b["body"])
                _wait_for_server(f"http://127.0.0.1:{port[1] if port else 8000}/api/health", proc)
                continue
            left = FILE_TIMEOUT - (time.time() - t0)
            try:
                res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=max(1, left))
            except subprocess.TimeoutExpired:
                return f"{where}: the file's blocks took more than {FILE_TIMEOUT} s:\n{b['body']}"
            if res.returncode != 0:
                return (f"{where} failed ({res.returncode}):\n{b['body']}\n--- stdout\n{res.stdout[-3000:]}\n"
                        f"--- stderr\n{res.stderr[-3000:]}")
    except AssertionError as e:  # a yaml block or a server that did not come up
        return str(e)
    finally:
        for proc in servers:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    return None


def _runnable_chars(path: Path) -> int:
    return sum(len(b["body"]) for b in blocks(path) if b["lang"] in ("bash", "python") and not b["mark"].startswith("skip"))


@pytest.fixture(scope="module")
def doc_results(request, tmp_path_factory) -> dict:
    """Every selected file's :func:`run_file` result, the files run side by side (their commands use one
    thread each, ``OMP_NUM_THREADS=1``): one process per core instead of one for the whole suite. Each
    file has its own folder; only docs/serving.md starts a server (its own port)."""
    from concurrent.futures import ThreadPoolExecutor

    chosen = {item.callspec.params["path"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_blocks_run_as_written"}
    files = sorted(chosen, key=_runnable_chars, reverse=True)  # the longest first: the pool ends together
    with ThreadPoolExecutor(max_workers=max(1, min(len(files), os.cpu_count() or 1))) as pool:
        futures = {f: pool.submit(run_file, f, tmp_path_factory.mktemp(f.stem)) for f in files}
        return {f: fut.result() for f, fut in futures.items()}


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_blocks_run_as_written(path, doc_results):
    failure = doc_results[path]
    assert failure is None, failure


def test_a_failing_block_is_reported_with_its_place_and_output(tmp_path):
    """The runner itself: blocks run in order in one folder, and the first failing one is named with
    its line, body and output (the rest are not run)."""
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n\n```bash\necho one > a.txt\n```\n\n```bash\ncat a.txt; echo oops >&2; false\n```\n\n"
                   "```bash\ntouch never\n```\n")
    (tmp_path / "run").mkdir()
    failure = run_file(doc, tmp_path / "run")
    assert failure.startswith(f"{doc}:7 failed (1):") and "--- stdout\none" in failure and "oops" in failure
    assert not (tmp_path / "run" / "never").exists()
    doc.write_text("```bash\necho fine\n```\n")
    (tmp_path / "run2").mkdir()
    assert run_file(doc, tmp_path / "run2") is None
