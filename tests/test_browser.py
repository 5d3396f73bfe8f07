"""End to end: `kgc serve` in a subprocess, headless Debian Chromium driven by Playwright.

Needs ``apt-get install chromium`` and ``pip install playwright`` (Playwright's own browser
download is never used: the system Chromium is launched through ``executable_path``). Skips with a
message when either is missing. Screenshots of every view (query, entity page, batch) at desktop
and phone width go to ``$KGC_SCREENSHOTS`` when set (docs/screenshots is made this way), else to
``$KGC_TEST_ARTIFACTS``, else to the pytest temp folder; the test prints where.
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


def _serve(run_dir: Path, tmp_path_factory):
    """`kgc serve RUN_DIR` on a free port; yields its URL once /api/health answers, stops it after."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(_kgc("serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port),
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
def server(umls_run_dir, tmp_path_factory):
    yield from _serve(umls_run_dir, tmp_path_factory)


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
        " score: r.cells[2].innerText, known: r.cells[4].innerText.trim()}))")


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


# ------------------------------------------------------------------ views, URL state, phone width
DESKTOP, PHONE = {"width": 1280, "height": 860}, {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("KGC_SCREENSHOTS") or os.environ.get("KGC_TEST_ARTIFACTS")
                  or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {folder}")
    return folder


def _shoot(page, shots: Path, name: str) -> None:
    """Screenshot the view at desktop and phone width; at phone width nothing may scroll sideways."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(300)
        if label == "phone":
            wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 0, f"{name}: the page is {wide} px wider than a {size['width']} px phone"
        path = shots / f"explorer-{name}-{label}.png"
        page.screenshot(path=str(path), full_page=label == "desktop")
        assert path.stat().st_size > 5_000
    page.set_viewport_size(DESKTOP)


def _rows(page) -> int:
    return page.evaluate("document.querySelectorAll('#results-table tbody tr').length")


def test_queries_live_in_the_url_and_the_back_button_works(server, page, cli_predictions, shots):
    want = cli_predictions("tails")
    page.goto(server + "/?head=virus&relation=causes&k=10")  # a shared link runs its query
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length === 10")
    _check_table(_table(page), want)
    assert page.input_value("#head") == "virus" and page.input_value("#relation") == "causes"
    # probability column: the softmax over all entities, largest first, in (0, 100] %
    probs = page.eval_on_selector_all("#results-table tbody tr", "rows => rows.map(r => r.cells[3].innerText)")
    values = [float(p.rstrip("%")) for p in probs if p.endswith("%")]
    assert values and values == sorted(values, reverse=True) and 0 < values[0] <= 100
    tip = page.get_attribute("#results-table .score-tip", "data-tip")
    assert "distmult" in tip.lower() and "⟨h, r, t⟩" in tip
    assert "Softmax" in page.get_attribute("#results-table .prob-tip", "data-tip")
    page.hover("#results-table .score-tip")
    page.wait_for_timeout(100)
    _shoot(page, shots, "query")

    # a second query through the form is a new history entry
    page.fill("#head", "")
    page.fill("#tail", "cell")
    page.fill("#relation", "location_of")
    page.click("#predict")
    page.wait_for_function("location.search.includes('tail=cell')")
    page.wait_for_function("document.querySelector('#results-title').innerText.includes('heads')")
    _check_table(_table(page), cli_predictions("heads"))
    page.go_back()
    page.wait_for_function("document.querySelector('#results-title').innerText.includes('tails')")
    assert page.input_value("#head") == "virus" and page.input_value("#tail") == ""
    _check_table(_table(page), want)
    page.go_forward()
    page.wait_for_function("document.querySelector('#results-title').innerText.includes('heads')")


def test_an_answer_opens_its_entity_page(server, page, run, shots):
    page.goto(server + "/?head=virus&relation=causes&k=10")
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length === 10")
    first = page.get_attribute("#results-table tbody tr", "data-entity")
    page.click("#results-table tbody tr:first-child td.num.rank")  # the row, not only the link
    page.wait_for_function(f"location.search === '?entity={first}'")
    page.wait_for_selector("#view-entity:not([hidden])")
    page.wait_for_function("document.querySelector('#entity-sub').innerText.includes('facts out')")
    ds = run.dataset
    e = ds.entities.id(first)
    triples = ds.all_triples()
    n_out, n_in = int((triples[:, 0] == e).sum()), int((triples[:, 2] == e).sum())
    assert f"{n_out} facts out" in page.inner_text("#entity-sub") and f"{n_in} facts in" in page.inner_text("#entity-sub")
    counts = page.eval_on_selector_all("#facts-out .count", "els => els.map(e => +e.innerText)")
    assert sum(counts) == n_out
    assert page.locator("#entity-predicted .pred-group").count() > 0
    # the neighbourhood graph: drawn by the vendored library (no network), the entity in the middle
    page.wait_for_function("window.kgcGraph && window.kgcGraph.nodes().length > 1")
    assert page.evaluate("window.kgcGraph.nodes('[center = 1]').data('entity')") == first
    assert page.evaluate("window.kgcGraph.edges('[kind = \"predicted\"]').length") == 5
    assert page.locator("#graph canvas").count() > 0
    _shoot(page, shots, "entity")
    # a fact opens the next entity; back returns to the first one's page, then to the query
    nxt = page.locator("#facts-out a.elink").first
    label = nxt.get_attribute("href").split("=", 1)[1]
    nxt.click()
    page.wait_for_function(f"location.search === '?entity={label}'")
    page.go_back()
    page.wait_for_function(f"location.search === '?entity={first}'")
    page.go_back()
    page.wait_for_function("document.querySelectorAll('#results-table tbody tr').length === 10")
    assert page.is_visible("#view-query") and not page.is_visible("#view-entity")


def test_batch_view_runs_pasted_queries_and_downloads_csv(server, page, cli_predictions, shots):
    page.goto(server + "/")
    page.click(".tabs a[data-tab=batch]")
    page.wait_for_function("location.search === '?view=batch'")
    page.fill("#batch-text", "virus\tcauses\t?\n?, location_of, cell\n")  # tabs, or commas when typed
    page.select_option("#batch-k", "3")
    page.click("#batch-run")
    page.wait_for_selector("#batch-results:not([hidden])")
    assert page.locator("#batch-table tbody tr").count() == 6
    answers = page.eval_on_selector_all("#batch-table tbody tr",
                                        "rows => rows.map(r => r.cells[3].querySelector('.ename').innerText)")
    assert answers[:3] == [w["name"] for w in cli_predictions("tails")[:3]]
    _shoot(page, shots, "batch")
    with page.expect_download() as dl:
        page.click("#batch-download")
    csv_text = Path(dl.value.path()).read_text()
    lines = csv_text.splitlines()
    assert lines[0] == "line,head,relation,tail,predict,rank,entity,name,score,probability,known" and len(lines) == 7
    assert [ln.split(",")[6] for ln in lines[1:4]] == [w["entity"] for w in cli_predictions("tails")[:3]]
    assert lines[4].startswith("2,?,location_of,cell,head,1,")
    page.fill("#batch-text", "virus\tcauzes\t?\n")
    page.click("#batch-run")
    page.wait_for_selector("#batch-message:not([hidden])")
    assert "input, line 1: unknown relation 'cauzes'" in page.inner_text("#batch-message")


def test_api_docs_render_offline(server, page):
    blocked = []
    page.route("**/*", lambda route: (blocked.append(route.request.url), route.abort())
               if not route.request.url.startswith(server) else route.continue_())
    try:
        page.goto(server + "/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
        assert page.locator(".opblock-summary-path", has_text="/api/entity").count() >= 1
        assert not blocked, f"/docs asked the network for {blocked}"
    finally:
        page.unroute("**/*")


# ------------------------------------------------------------------ new entity (KGT5 runs only)
@pytest.fixture(scope="module")
def kgt5_run_dir(tmp_path_factory) -> Path:
    """A micro KGT5-context run on the tiny ring graph of kgt5_fixtures (a few epochs: only the
    page is under test, not the answers' quality)."""
    import torch

    from kgcomplete.seq2seq.run import train_kgt5
    from kgt5_fixtures import micro_config, tiny_kg

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("kgt5-browser") / "run"
    train_kgt5(tiny_kg(), out, micro_config(epochs=3, context=True, context_size=4))
    return out


@pytest.fixture(scope="module")
def kgt5_server(kgt5_run_dir, tmp_path_factory):
    yield from _serve(kgt5_run_dir, tmp_path_factory)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def test_new_entity_view_asks_a_kgt5_run_about_an_entity_outside_the_graph(kgt5_server, kgt5_run_dir, page, shots):
    labels = set((kgt5_run_dir / "entities.tsv").read_text().split())
    page.goto(kgt5_server + "/")
    tab = page.locator(".tabs a[data-tab=new]")
    tab.wait_for(state="visible", timeout=20_000)  # shown once /api/run says kgt5
    tab.click()
    page.wait_for_function("location.search === '?view=new'")
    assert page.is_visible("#view-new") and not page.is_visible("#view-query")
    assert page.is_disabled("#new-description")  # trained without kgt5.descriptions
    assert page.is_enabled("#new-facts")  # trained with kgt5.context
    page.fill("#new-text", "a new node")
    _pick(page, "#new-relation", "pre", "prev")
    page.fill("#new-facts", "?\tnext\te4\n")
    page.select_option("#new-k", "5")
    page.click("#new-run")
    page.wait_for_function("location.search === '?view=new&text=a+new+node&relation=prev&side=tail&k=5'")
    page.wait_for_selector("#new-results:not([hidden])", timeout=30_000)
    shown = page.eval_on_selector_all("#new-table tbody tr", "rows => rows.map(r => r.dataset.entity)")
    assert len(shown) == 5 and set(shown) <= labels
    want = _post(kgt5_server + "/api/predict/new", {"text": "a new node", "relation": "prev", "predict": "tail",
                                                     "facts": [["?", "next", "e4"]], "k": 5})
    assert shown == [r["entity"] for r in want["predictions"]]
    assert "given 1 fact" in page.inner_text("#new-results-title")
    assert "log-probability" in page.get_attribute("#new-table .score-tip", "data-tip")
    _shoot(page, shots, "new")
    # the server's message for a fact it cannot read; an answer opens its entity page
    page.fill("#new-facts", "?, next, nobody")  # commas separate fields too
    page.click("#new-run")
    page.wait_for_selector("#new-message:not([hidden])")
    assert "fact 1: unknown entity 'nobody'" in page.inner_text("#new-message")
    page.fill("#new-facts", "")
    page.select_option("#new-side", "head")
    page.click("#new-run")
    page.wait_for_function("location.search.includes('side=head')")
    page.wait_for_selector("#new-results:not([hidden])")
    assert page.is_hidden("#new-message") and "heads for" in page.inner_text("#new-results-title")
    first = page.get_attribute("#new-table tbody tr", "data-entity")
    assert first in labels
    page.click("#new-table tbody tr:first-child a.elink")
    page.wait_for_function(f"location.search === '?entity={first}'")


def test_new_entity_tab_is_hidden_for_an_embedding_run(server, page):
    page.goto(server + "/")
    page.wait_for_function("document.querySelector('#metrics').innerText.includes('MRR')")  # /api/run answered
    assert page.is_hidden(".tabs a[data-tab=new]")
    page.goto(server + "/?view=new")
    page.wait_for_selector("#new-message:not([hidden])")
    assert "need a KGT5 run" in page.inner_text("#new-message")
    assert page.is_hidden("#new-form") and page.is_visible("#view-new")
