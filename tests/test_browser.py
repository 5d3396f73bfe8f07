"""End to end: `kgc serve` in a subprocess, headless Debian Chromium driven by Playwright.

Needs ``apt-get install chromium`` and ``pip install playwright`` (Playwright's own browser
download is never used: the system Chromium is launched through ``executable_path``). Skips with a
message when either is missing. The screenshot goes to ``$KGC_TEST_ARTIFACTS`` (default: the
pytest temp folder) as ``explorer.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in (os.environ.get("KGC_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)
if CHROMIUM is None:
    pytest.skip("browser: Chromium not found (apt-get install -y chromium, or set KGC_CHROMIUM)",
                allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the Playwright package is missing (pip install 'kgcomplete[browser]')")
pytest.importorskip("fastapi", reason="serving extra not installed (pip install 'kgcomplete[serve]')")

from live_server import free_port  # noqa: E402


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _kgc(*args: str) -> list[str]:
    return [sys.executable, "-m", "kgcomplete", *args]


@pytest.fixture(scope="module")
def server(umls_run_dir, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(_kgc("serve", str(umls_run_dir), "--host", "127.0.0.1", "--port", str(port),
                                     "--log-level", "warning"), stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"kgc serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"kgc serve did not answer within 60 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def cli_predictions(umls_run_dir):
    """`kgc predict --json` for the queries the browser asks; started before the server, read later."""
    queries = {"tails": ["--head", "virus", "--relation", "causes"],
               "heads": ["--relation", "location_of", "--tail", "cell"]}
    procs = {k: subprocess.Popen(_kgc("predict", str(umls_run_dir), *q, "--k", "10", "--json"), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for k, q in queries.items()}
    out = {}

    def get(key: str) -> list[dict]:
        if key not in out:
            stdout, stderr = procs[key].communicate(timeout=120)
            assert procs[key].returncode == 0, stderr
            out[key] = json.loads(stdout)
        return out[key]

    yield get
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium-profile")  # fresh --user-data-dir
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860})
        try:
            yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally:
            ctx.close()


def _table(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#results-table tbody tr",
        "rows => rows.map(r => ({entity: r.dataset.entity, rank: +r.cells[0].innerText,"
        " score: r.cells[2].innerText, known: r.cells[3].innerText.trim()}))")


def _pick(page, selector: str, typed: str, expect_label: str) -> None:
    """Type a prefix, wait for the suggestion list, choose ``expect_label`` from it."""
    page.click(selector)
    page.fill(selector, "")
    page.type(selector, typed, delay=25)
    item = page.locator(f"{selector} + .ac-list li", has_text=expect_label.replace("_", " ")).first
    item.wait_for(timeout=10_000)
    item.click()
    assert page.input_value(selector) == expect_label


def _check_table(rows: list[dict], want: list[dict]) -> None:
    assert [r["entity"] for r in rows] == [w["entity"] for w in want]
    assert [r["rank"] for r in rows] == [w["rank"] for w in want]
    assert [float(r["score"]) for r in rows] == pytest.approx([w["score"] for w in want], abs=6e-5)
    assert [r["known"] for r in rows] == [w["known"] or "new" for w in want]


def test_explorer_shows_the_same_top10_as_kgc_predict(cli_predictions, server, page, tmp_path_factory):
    want_tails, want_heads = cli_predictions("tails"), cli_predictions("heads")

    page.goto(server + "/")
    page.wait_for_function("document.querySelector('#metrics').innerText.includes('MRR')")
    # tails of (virus, causes, ?): type prefixes, choose from the autocomplete lists
    _pick(page, "#head", "vir", "virus")
    _pick(page, "#relation", "caus", "causes")  # a completed query runs on selection
    page.wait_for_selector("#results-table tbody tr")
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length === 10")
    _check_table(_table(page), want_tails)
    assert "test MRR" in page.inner_text("#metrics")
    shots = Path(os.environ.get("KGC_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "explorer.png"), full_page=True)
    assert (shots / "explorer.png").stat().st_size > 10_000
    print(f"screenshot: {shots / 'explorer.png'}")

    # heads of (?, location_of, cell): clear, fill relation + tail, press the button
    page.click("#clear")
    _pick(page, "#relation", "locat", "location_of")
    _pick(page, "#tail", "cel", "cell")
    page.click("#predict")
    page.wait_for_function("document.querySelector('#results-title').innerText.includes('heads')")
    _check_table(_table(page), want_heads)


def test_explorer_reports_unknown_names_with_suggestions(server, page):
    page.goto(server + "/")
    page.fill("#head", "viruss")
    page.fill("#relation", "causes")
    page.click("#predict")
    msg = page.locator("#message")
    msg.wait_for(state="visible", timeout=10_000)
    assert "unknown entity 'viruss'" in msg.inner_text()
    page.locator("#message .chip", has_text="virus").first.click()  # accept the suggestion
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length === 10")
    assert page.input_value("#head") == "virus" and page.is_hidden("#message")
