// kgcomplete explorer: plain JS, no build step. Talks to the JSON API of `kgc serve`.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (x, d = 4) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);

async function getJSON(url, options) {
  const res = await fetch(url, options);
  let body = null;
  try { body = await res.json(); } catch (e) { /* non-JSON error page */ }
  if (!res.ok) {
    const err = new Error(describeError(body, res.status));
    err.detail = body && body.detail;
    throw err;
  }
  return body;
}

function describeError(body, status) {
  const d = body && body.detail;
  if (!d) return `request failed (${status})`;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((x) => `${(x.loc || []).slice(-1)[0]}: ${x.msg}`).join("; ");
  return d.error || JSON.stringify(d);
}

// ------------------------------------------------------------------ autocomplete
function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

const closers = [];  // close every suggestion list (on submit)
const closeSuggestions = () => closers.forEach((fn) => fn());

function setupAutocomplete(input) {
  const list = input.parentElement.querySelector(".ac-list");
  let items = [], active = -1, seq = 0;

  const close = () => { list.innerHTML = ""; items = []; active = -1; seq++; };
  closers.push(close);
  const render = () => {
    list.innerHTML = items.map((it, i) =>
      `<li role="option" data-index="${i}" class="${i === active ? "active" : ""}">` +
      `<span class="nm">${esc(it.name)}</span>` +
      (it.name !== it.label ? `<span class="lbl">${esc(it.label)}</span>` : "") + "</li>").join("");
  };
  const choose = (i) => {
    const it = items[i];
    if (!it) return;
    input.value = it.label;
    input.dataset.label = it.label;
    close();
    input.dispatchEvent(new CustomEvent("chosen", { bubbles: true }));
  };
  const lookup = debounce(async () => {
    const my = ++seq;
    const prefix = input.value.trim();
    if (!prefix || document.activeElement !== input) { close(); return; }
    try {
      const data = await getJSON(`api/${input.dataset.kind}?limit=8&prefix=${encodeURIComponent(prefix)}`);
      if (my !== seq || document.activeElement !== input) return;
      items = data.items; active = items.length ? 0 : -1; render();
    } catch (e) { close(); }
  }, 90);

  input.addEventListener("input", () => { delete input.dataset.label; lookup(); });
  input.addEventListener("focus", lookup);
  input.addEventListener("blur", () => setTimeout(close, 150));
  input.addEventListener("keydown", (ev) => {
    if (!items.length) return;
    if (ev.key === "ArrowDown") { active = (active + 1) % items.length; render(); ev.preventDefault(); }
    else if (ev.key === "ArrowUp") { active = (active - 1 + items.length) % items.length; render(); ev.preventDefault(); }
    else if (ev.key === "Enter" || ev.key === "Tab") { if (active >= 0) { choose(active); if (ev.key === "Enter") ev.preventDefault(); } }
    else if (ev.key === "Escape") close();
  });
  list.addEventListener("mousedown", (ev) => {
    const li = ev.target.closest("li");
    if (li) { ev.preventDefault(); choose(Number(li.dataset.index)); }
  });
}

// ------------------------------------------------------------------ what a score means
const SCORE_MEANING = {
  transe: "the negative distance −‖h + r − t‖ between the head moved by the relation and the tail (0 is best)",
  trans: "the negative distance −‖h + r − t‖ between the head moved by the relation and the tail (0 is best)",
  transh: "the negative distance between head and tail projected on the relation's hyperplane, after the translation (0 is best)",
  rotate: "the negative distance −‖h ∘ r − t‖ after rotating the head by the relation in the complex plane (0 is best)",
  pairre: "the negative distance −‖h ∘ rᴴ − t ∘ rᵀ‖ between head and tail, each scaled by its half of the relation (0 is best)",
  triplere: "the negative distance between head and tail, each scaled by the relation's vectors plus a shared offset (0 is best)",
  triplere_v2: "the negative distance between head and tail, each scaled by the relation's vectors plus a learnt offset (0 is best)",
  interht: "the negative distance between head and tail after each is scaled by the other's auxiliary vector (0 is best)",
  distmult: "the trilinear product ⟨h, r, t⟩ = Σ hᵢ·rᵢ·tᵢ (higher is better; no fixed scale)",
  complex: "Re⟨h, r, conj(t)⟩, the real part of the complex trilinear product (higher is better; no fixed scale)",
  conve: "a 2-D convolution of head and relation, projected and compared with the tail by a dot product",
  boxe: "the negative distance of head and tail points to the relation's boxes (0 is best)",
  kgt5: "the log-probability of generating the entity's text (−∞ for entities not generated)",
};
let RUN = { model: "", entities: 0 };
let runReady = Promise.resolve();  // loadRun(): route() waits for it before deciding on the new-entity view

function explainScores() {
  const meaning = SCORE_MEANING[RUN.model] || "the model's plausibility of the triple (higher is better)";
  const scoreTip = `Raw score of ${RUN.model || "the model"}: ${meaning}. Compare scores only within one query of one run.`;
  const probTip = `Softmax of the scores over all ${RUN.entities.toLocaleString()} entities as candidates of the query: ` +
    "exp(score) / Σ exp(score of each entity). A relative confidence, not a calibrated probability of truth.";
  document.querySelectorAll(".score-tip").forEach((el) => { el.dataset.tip = scoreTip; el.title = scoreTip; });
  document.querySelectorAll(".prob-tip").forEach((el) => { el.dataset.tip = probTip; el.title = probTip; });
}

const pct = (p) => (p === null || p === undefined) ? "–" : (p >= 0.001 ? (100 * p).toFixed(1) + "%" : "<0.1%");
const entityLink = (label, name) => `<a href="?entity=${encodeURIComponent(label)}" data-nav class="elink">` +
  `<span class="ename">${esc(name)}</span>` + (name !== label ? ` <span class="elabel">${esc(label)}</span>` : "") + "</a>";

// ------------------------------------------------------------------ routing: the state lives in the URL
function navigate(params, replace = false) {
  const qs = new URLSearchParams(params).toString();
  const url = qs ? "?" + qs : location.pathname;
  if (url !== location.search || replace) history[replace ? "replaceState" : "pushState"]({}, "", url);
  route();
}

function showView(name) {
  for (const v of ["query", "entity", "batch", "new"]) $("#view-" + v).hidden = v !== name;
  document.querySelectorAll(".tabs a[data-tab]").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
}

function route() {
  closeSuggestions();
  const p = new URLSearchParams(location.search);
  if (p.get("entity")) { showView("entity"); loadEntity(p.get("entity")); return; }
  if (p.get("view") === "batch") { showView("batch"); document.title = "batch · kgcomplete"; return; }
  if (p.get("view") === "new") { showView("new"); routeNew(p); return; }
  showView("query");
  $("#head").value = p.get("head") || ""; $("#relation").value = p.get("relation") || "";
  $("#tail").value = p.get("tail") || "";
  if (p.get("k")) $("#k").value = p.get("k");
  $("#exclude-known").checked = p.get("exclude_known") === "1";
  if (p.get("relation") && (!!p.get("head") !== !!p.get("tail"))) runQuery();
  else { $("#results").hidden = true; showMessage(""); document.title = "kgcomplete explorer"; }
}

// ------------------------------------------------------------------ query view
function showMessage(html, box = "#message") {
  const el = $(box);
  if (!html) { el.hidden = true; el.innerHTML = ""; return; }
  el.innerHTML = html; el.hidden = false;
}

function knownBadge(known) {
  if (!known) return `<span class="badge new">new</span>`;
  const cls = ["train", "valid", "test"].includes(known) ? known : "known";
  return `<span class="badge ${cls}">${esc(known)}</span>`;
}

function predict() {  // the form -> the URL (a history entry), which runs the query
  closeSuggestions();
  const head = $("#head").value.trim(), relation = $("#relation").value.trim(), tail = $("#tail").value.trim();
  if (!relation || (!head && !tail)) {
    showMessage("Enter a relation and a head (to rank tails) or a tail (to rank heads)."); return;
  }
  if (head && tail) {
    showMessage("Fill either head or tail, not both — the empty one is what gets predicted."); return;
  }
  const params = head ? { head, relation } : { relation, tail };
  params.k = $("#k").value;
  if ($("#exclude-known").checked) params.exclude_known = "1";
  navigate(params);
}

let querySeq = 0;
async function runQuery() {
  const p = new URLSearchParams(location.search);
  const head = p.get("head"), tail = p.get("tail");
  const params = new URLSearchParams({ relation: p.get("relation"), k: p.get("k") || "10",
    exclude_known: p.get("exclude_known") === "1" });
  const url = head ? (params.set("head", head), "api/predict/tails?" + params) : (params.set("tail", tail), "api/predict/heads?" + params);
  const my = ++querySeq;
  $("#predict").disabled = true;
  try {
    const data = await getJSON(url);
    if (my !== querySeq) return;
    showMessage("");
    renderResults(data);
  } catch (e) {
    if (my !== querySeq) return;
    const d = e.detail || {};
    let html = esc(e.message);
    if (d.close_matches && d.close_matches.length) {
      const field = d.kind === "relation" ? "relation" : (head ? "head" : "tail");
      html += `<div>Did you mean: ${d.close_matches.map((m) =>
        `<span class="chip" data-field="${field}" data-value="${esc(m)}">${esc(m)}</span>`).join("")}</div>`;
    }
    showMessage(html);
    $("#results").hidden = true;
  } finally {
    $("#predict").disabled = false;
  }
}

function renderResults(data) {
  const q = data.query;
  const what = q.predict === "tail"
    ? `(${entityLink(q.head, q.head)}, <b>${esc(q.relation)}</b>, <b>?</b>)`
    : `(<b>?</b>, <b>${esc(q.relation)}</b>, ${entityLink(q.tail, q.tail)})`;
  $("#results-title").innerHTML = `Top ${data.predictions.length} ${q.predict}s for ${what}`;
  document.title = `${q.head || "?"} ${q.relation} ${q.tail || "?"} · kgcomplete`;
  $("#results-table tbody").innerHTML = data.predictions.map((p) =>
    `<tr data-entity="${esc(p.entity)}" class="clickable">` +
    `<td class="num rank">${p.rank}</td>` +
    `<td>${entityLink(p.entity, p.name)}</td>` +
    `<td class="num">${fmt(p.score)}</td>` +
    `<td class="num">${pct(p.probability)}</td>` +
    `<td>${knownBadge(p.known)}</td></tr>`).join("");
  $("#results").hidden = false;
}

// ------------------------------------------------------------------ entity page
let entitySeq = 0;
async function loadEntity(text) {
  const my = ++entitySeq;
  $("#entity-title").textContent = text;
  $("#entity-sub").textContent = "loading…";
  showMessage("", "#entity-message");
  for (const id of ["#facts-out", "#facts-in", "#entity-predicted"]) $(id).innerHTML = "";
  try {
    const [data, graph] = await Promise.all([
      getJSON(`api/entity?k=3&entity=${encodeURIComponent(text)}`),
      getJSON(`api/neighbourhood?limit=12&predicted=5&entity=${encodeURIComponent(text)}`)]);
    if (my !== entitySeq) return;
    renderEntity(data);
    drawGraph(graph);
  } catch (e) {
    if (my !== entitySeq) return;
    const d = e.detail || {};
    let html = esc(e.message);
    if (d.close_matches && d.close_matches.length) {
      html += `<div>Did you mean: ${d.close_matches.map((m) => entityLink(m, m)).join(" · ")}</div>`;
    }
    $("#entity-sub").textContent = "";
    showMessage(html, "#entity-message");
  }
}

function factGroups(groups, arrow) {
  if (!groups.length) return `<p class="muted">none</p>`;
  return groups.map((g, i) =>
    `<details ${i < 4 ? "open" : ""}><summary><b>${esc(g.name)}</b> ${arrow} <span class="count">${g.count}</span></summary>` +
    `<ul class="fact-list">${g.facts.map((f) => `<li>${entityLink(f.entity, f.name)} ${knownBadge(f.known)}</li>`).join("")}` +
    (g.count > g.facts.length ? `<li class="muted">… ${g.count - g.facts.length} more</li>` : "") +
    "</ul></details>").join("");
}

function renderEntity(d) {
  const e = d.entity;
  $("#entity-title").innerHTML = esc(e.name) + (e.name !== e.label ? ` <span class="elabel">${esc(e.label)}</span>` : "");
  $("#entity-sub").textContent = `${d.counts.out} facts out (as head) · ${d.counts.in} facts in (as tail) · ` +
    `${d.out.length + d.in.length} relation groups`;
  document.title = `${e.name} · kgcomplete`;
  $("#ask-tails").dataset.label = e.label; $("#ask-heads").dataset.label = e.label;
  $("#facts-out-title").innerHTML = `Known facts out <span class="muted">(${esc(e.name)} → ?)</span>`;
  $("#facts-in-title").innerHTML = `Known facts in <span class="muted">(? → ${esc(e.name)})</span>`;
  $("#facts-out").innerHTML = factGroups(d.out, "→");
  $("#facts-in").innerHTML = factGroups(d.in, "←");
  const pred = [];
  for (const [dir, rows] of [["out", d.predicted.out], ["in", d.predicted.in]]) {
    for (const g of rows.slice(0, 6)) {
      const rel = dir === "out" ? `${esc(e.name)} <b>${esc(g.name)}</b> ?` : `? <b>${esc(g.name)}</b> ${esc(e.name)}`;
      pred.push(`<div class="pred-group"><div class="pred-rel">${rel}</div><ol>` +
        g.predictions.map((p) => `<li>${entityLink(p.entity, p.name)} <span class="prob" title="score ${fmt(p.score)}">${pct(p.probability)}</span></li>`).join("") +
        "</ol></div>");
    }
  }
  $("#entity-predicted").innerHTML = pred.join("") || `<p class="muted">no new facts predicted</p>`;
}

let cyLoading = null;
function loadCytoscape() {
  if (window.cytoscape) return Promise.resolve();
  cyLoading = cyLoading || new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "static/vendor/cytoscape.min.js"; s.onload = resolve; s.onerror = () => reject(new Error("could not load the graph library"));
    document.head.appendChild(s);
  });
  return cyLoading;
}

async function drawGraph(g) {
  await loadCytoscape();
  if (window.kgcGraph) window.kgcGraph.destroy();
  const elements = g.nodes.map((n) => ({ data: { id: String(n.id), label: n.name, entity: n.label, center: n.center ? 1 : 0 } }))
    .concat(g.edges.map((e, i) => ({ data: { id: "e" + i, source: String(e.source), target: String(e.target),
      label: e.relation, kind: e.kind } })));
  window.kgcGraph = window.cytoscape({
    container: $("#graph"), elements, wheelSensitivity: 0.3,
    layout: { name: "concentric", concentric: (n) => n.data("center") ? 2 : 1, levelWidth: () => 1, minNodeSpacing: 18,
      animate: false },
    style: [
      { selector: "node", style: { "background-color": "#8fb5ff", label: "data(label)", "font-size": 9, color: "#1d2330",
        "text-valign": "bottom", "text-margin-y": 3, width: 14, height: 14, "text-wrap": "ellipsis", "text-max-width": 90 } },
      { selector: "node[center = 1]", style: { "background-color": "#2f6fde", width: 24, height: 24, "font-weight": 700, "font-size": 11 } },
      { selector: "edge", style: { width: 1, "line-color": "#c3cad6", "curve-style": "bezier", "target-arrow-shape": "triangle",
        "target-arrow-color": "#c3cad6", "arrow-scale": 0.6 } },
      { selector: "edge[kind = 'predicted']", style: { "line-style": "dashed", "line-color": "#b4530f", "target-arrow-color": "#b4530f",
        width: 1.6, label: "data(label)", "font-size": 8, color: "#b4530f", "text-rotation": "autorotate" } },
    ],
  });
  window.kgcGraph.on("tap", "node", (ev) => { const ent = ev.target.data("entity"); if (ent) navigate({ entity: ent }); });
}

// ------------------------------------------------------------------ batch view
function splitFields(line) {  // tabs as typed; a line without tabs may use commas or runs of 2+ spaces
  return line.includes("\t") ? line.split("\t") : line.split(/\s*,\s*|\s{2,}/);
}

function batchText() {
  return $("#batch-text").value.split(/\r?\n/).map((line) => splitFields(line).join("\t")).join("\n").replace(/\n+$/, "") + "\n";
}

async function runBatch() {
  const text = batchText();
  if (!text.trim()) { showMessage("Paste or upload some lines first.", "#batch-message"); return; }
  const kind = $("#batch-kind").value;
  $("#batch-run").disabled = true;
  try {
    const data = await getJSON("api/batch", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, kind, k: Number($("#batch-k").value), exclude_known: $("#batch-exclude").checked }) });
    showMessage("", "#batch-message");
    renderBatch(data);
  } catch (e) {
    showMessage(esc(e.message), "#batch-message");
    $("#batch-results").hidden = true;
  } finally {
    $("#batch-run").disabled = false;
  }
}

let batchUrl = null;
function renderBatch(data) {
  const head = $("#batch-table thead"), body = $("#batch-table tbody");
  if (data.kind === "predict") {
    head.innerHTML = `<tr><th class="num rank hide-phone">Line</th><th>Query</th><th class="num rank">#</th><th>Answer</th>` +
      `<th class="num">Score <span class="tip score-tip" tabindex="0">?</span></th><th class="num">Prob.</th><th>Known</th></tr>`;
    body.innerHTML = data.results.map((r) => r.predictions.map((p, i) => {
      const q = r.query;
      const query = i ? "" : `${esc(q.head || "?")} <b>${esc(q.relation)}</b> ${esc(q.tail || "?")}`;
      return `<tr class="${i ? "" : "first"}"><td class="num rank hide-phone">${i ? "" : r.line}</td><td>${query}</td><td class="num rank">${p.rank}</td>` +
        `<td>${entityLink(p.entity, p.name)}</td><td class="num">${fmt(p.score)}</td><td class="num">${pct(p.probability)}</td>` +
        `<td>${knownBadge(p.known)}</td></tr>`;
    }).join("")).join("");
  } else {
    head.innerHTML = `<tr><th class="num rank">Line</th><th>Triple</th><th class="num">Score <span class="tip score-tip" tabindex="0">?</span></th><th>Known</th></tr>`;
    body.innerHTML = data.results.map((r) => `<tr><td class="num rank">${r.line}</td>` +
      `<td>${entityLink(r.head, r.head)} <b>${esc(r.relation)}</b> ${entityLink(r.tail, r.tail)}</td>` +
      `<td class="num">${fmt(r.score)}</td><td>${knownBadge(r.known)}</td></tr>`).join("");
  }
  explainScores();
  const n = data.results.length;
  $("#batch-summary").textContent = `${n} ${data.kind === "predict" ? "queries" : "triples"}`;
  if (batchUrl) URL.revokeObjectURL(batchUrl);
  batchUrl = URL.createObjectURL(new Blob([data.csv], { type: "text/csv" }));
  $("#batch-download").href = batchUrl;
  $("#batch-results").hidden = false;
}

// ------------------------------------------------------------------ new entity (KGT5 runs)
const isKGT5 = () => RUN.model === "kgt5";

function newFacts() {  // the textarea -> [[h, r, t], ...]; throws with the line number on a bad line
  const facts = [];
  $("#new-facts").value.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    const f = splitFields(line.trim()).map((x) => x.trim());
    if (f.length !== 3) throw new Error(`facts, line ${i + 1}: expected head, relation, tail (tab-separated), found ${f.length} field(s)`);
    if ((f[0] === "?") === (f[2] === "?")) throw new Error(`facts, line ${i + 1}: exactly one of head or tail must be ? (the new entity)`);
    facts.push(f);
  });
  return facts;
}

async function routeNew(p) {  // ?view=new[&text=&relation=&side=&k=]: the form from the URL; a complete one runs
  document.title = "new entity · kgcomplete";
  await runReady;
  if (new URLSearchParams(location.search).get("view") !== "new") return;  // moved on meanwhile
  $("#new-form").hidden = !isKGT5();
  if (!isKGT5()) {
    $("#new-results").hidden = true;
    showMessage(`Queries about new entities need a KGT5 run; this run's model is ${esc(RUN.model || "unknown")}.`, "#new-message");
    return;
  }
  $("#new-text").value = p.get("text") || ""; $("#new-relation").value = p.get("relation") || "";
  $("#new-side").value = p.get("side") === "head" ? "head" : "tail";
  if (p.get("k")) $("#new-k").value = p.get("k");
  if (p.get("text") && p.get("relation")) runNew();
  else { $("#new-results").hidden = true; showMessage("", "#new-message"); }
}

function submitNew() {  // the form -> the URL (text, relation, side, k; facts and description stay in the form)
  closeSuggestions();
  const text = $("#new-text").value.trim(), relation = $("#new-relation").value.trim();
  if (!text || !relation) { showMessage("Enter the new entity's text and a relation.", "#new-message"); return; }
  navigate({ view: "new", text, relation, side: $("#new-side").value, k: $("#new-k").value });
}

let newSeq = 0;
async function runNew() {
  const p = new URLSearchParams(location.search);
  const body = { text: p.get("text"), relation: p.get("relation"), predict: p.get("side") === "head" ? "head" : "tail",
    k: Number(p.get("k") || 10) };
  const my = ++newSeq;
  try {
    const facts = $("#new-facts").disabled ? [] : newFacts();
    if (facts.length) body.facts = facts;
    const desc = $("#new-description").value.trim();
    if (desc && !$("#new-description").disabled) body.description = desc;
  } catch (e) {
    showMessage(esc(e.message), "#new-message"); $("#new-results").hidden = true; return;
  }
  $("#new-run").disabled = true;
  try {
    const data = await getJSON("api/predict/new", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
    if (my !== newSeq) return;
    showMessage("", "#new-message");
    renderNew(data, body);
  } catch (e) {
    if (my !== newSeq) return;
    showMessage(esc(e.message), "#new-message");
    $("#new-results").hidden = true;
  } finally {
    $("#new-run").disabled = false;
  }
}

function renderNew(data, body) {
  const q = data.query, n = data.predictions.length;
  const what = q.predict === "tail" ? `(<b>${esc(q.text)}</b>, <b>${esc(q.relation)}</b>, <b>?</b>)`
    : `(<b>?</b>, <b>${esc(q.relation)}</b>, <b>${esc(q.text)}</b>)`;
  const facts = (body.facts || []).length;
  $("#new-results-title").innerHTML = `Top ${n} ${q.predict}s for ${what}` +
    (facts ? ` given ${facts} fact${facts > 1 ? "s" : ""}` : "") + (body.description ? " and a description" : "") +
    (n < q.k ? ` <span class="muted">(the beam found ${n} of the ${q.k} asked for)</span>` : "");
  document.title = `${q.predict === "tail" ? q.text : "?"} ${q.relation} ${q.predict === "tail" ? "?" : q.text} · kgcomplete`;
  $("#new-table tbody").innerHTML = data.predictions.map((r) =>
    `<tr data-entity="${esc(r.entity)}" class="clickable">` +
    `<td class="num rank">${esc(r.rank)}</td>` +
    `<td>${entityLink(r.entity, r.name)}</td>` +
    `<td class="num">${fmt(r.score)}</td></tr>`).join("");
  explainScores();
  $("#new-results").hidden = false;
}

function setupNewView(info) {  // after /api/run: the tab only for KGT5; fields the run cannot read are disabled
  $(".tabs a[data-tab=new]").hidden = !isKGT5();
  const cfg = (info.config || {}).kgt5;
  if (!isKGT5() || !cfg) return;
  const facts = $("#new-facts"), desc = $("#new-description");
  facts.disabled = !cfg.context;
  if (!cfg.context) facts.placeholder = "this run was trained without kgt5.context: it reads no facts";
  desc.disabled = !cfg.descriptions;
  if (!cfg.descriptions) desc.placeholder = "this run was trained without kgt5.descriptions";
}

// ------------------------------------------------------------------ run info
function metricRows(m) {
  const rows = [["both", m], ["head", m.head], ["tail", m.tail]].filter(([, x]) => x);
  return `<table><thead><tr><th></th><th class="num">MRR</th><th class="num">MR</th><th class="num">H@1</th><th class="num">H@10</th></tr></thead><tbody>` +
    rows.map(([n, x]) => `<tr><td>${n}</td><td class="num">${fmt(x.mrr, 3)}</td><td class="num">${fmt(x.mr, 1)}</td>` +
      `<td class="num">${fmt(x["hits@1"], 3)}</td><td class="num">${fmt(x["hits@10"], 3)}</td></tr>`).join("") + "</tbody></table>";
}

async function loadRun() {
  try {
    const info = await getJSON("api/run");
    const ds = info.dataset || {};
    RUN = { model: String(info.model || "").toLowerCase(), entities: ds.entities || 0 };
    explainScores();
    setupNewView(info);
    const path = info.path ? info.path.split("/").filter(Boolean).pop() : info.run_type;
    $("#run-summary").innerHTML = `<b>${esc(path)}</b> · ${esc(info.model)} on ${esc(ds.name)} · ` +
      `${(ds.entities ?? "?").toLocaleString()} entities · ${(ds.relations ?? "?").toLocaleString()} relations`;
    const m = info.metrics || {};
    const main = m.test || m.valid;
    let html = "";
    if (main) {
      html += `<div class="big">${fmt(main.mrr, 3)} <small>${m.test ? "test" : "valid"} MRR (filtered)</small></div>`;
    }
    for (const split of ["test", "valid"]) if (m[split]) html += `<h3>${split}</h3>` + metricRows(m[split]);
    html += "<h3>Training</h3><dl class=\"kv\">";
    const kv = [["epochs", m.epochs ?? info.epochs_logged], ["best epoch", m.best_epoch],
      ["train time", m.train_time_s !== undefined ? `${fmt(m.train_time_s, 1)} s` : null],
      ["parameters", m.num_parameters !== undefined ? Number(m.num_parameters).toLocaleString() : null],
      ["train / valid / test", ds.train !== undefined ? `${ds.train} / ${ds.valid} / ${ds.test}` : null]];
    for (const [k, v] of kv) if (v !== null && v !== undefined) html += `<dt>${k}</dt><dd>${esc(v)}</dd>`;
    html += "</dl>";
    $("#metrics").innerHTML = html || "no metrics recorded";
  } catch (e) {
    $("#metrics").textContent = "could not load run info: " + e.message;
  }
}

// ------------------------------------------------------------------ wiring
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".ac input").forEach(setupAutocomplete);
  $("#query-form").addEventListener("submit", (ev) => { ev.preventDefault(); predict(); });
  $("#query-form").addEventListener("chosen", () => {
    const ready = $("#relation").value.trim() && (!!$("#head").value.trim() !== !!$("#tail").value.trim());
    if (ready) predict();
  });
  $("#k").addEventListener("change", () => { if (!$("#results").hidden) predict(); });
  $("#exclude-known").addEventListener("change", () => { if (!$("#results").hidden) predict(); });
  $("#clear").addEventListener("click", () => {
    ["#head", "#relation", "#tail"].forEach((s) => { $(s).value = ""; });
    $("#results").hidden = true; showMessage(""); $("#head").focus();
  });
  $("#message").addEventListener("click", (ev) => {
    const chip = ev.target.closest(".chip");
    if (chip) { $("#" + chip.dataset.field).value = chip.dataset.value; predict(); }
  });
  // in-page links (answers, facts, tabs) become history entries instead of page loads
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a[data-nav]");
    if (a && !ev.ctrlKey && !ev.metaKey && !ev.shiftKey && ev.button === 0) {
      ev.preventDefault();
      navigate(Object.fromEntries(new URL(a.href).searchParams));
      window.scrollTo(0, 0);
      return;
    }
    const row = ev.target.closest("tr.clickable");
    if (row && !ev.target.closest("a")) navigate({ entity: row.dataset.entity });
  });
  $("#ask-tails").addEventListener("click", (ev) => { navigate({ head: ev.target.dataset.label }); $("#relation").focus(); });
  $("#ask-heads").addEventListener("click", (ev) => { navigate({ tail: ev.target.dataset.label }); $("#relation").focus(); });
  $("#batch-form").addEventListener("submit", (ev) => { ev.preventDefault(); runBatch(); });
  $("#new-form").addEventListener("submit", (ev) => { ev.preventDefault(); submitNew(); });
  $("#new-k").addEventListener("change", () => { if (!$("#new-results").hidden) submitNew(); });
  $("#new-side").addEventListener("change", () => { if (!$("#new-results").hidden) submitNew(); });
  $("#batch-file").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    if (f) $("#batch-text").value = await f.text();
  });
  window.addEventListener("popstate", route);
  window.addEventListener("resize", debounce(() => {  // keep the graph inside its box (phone rotated, window resized)
    if (window.kgcGraph && !$("#view-entity").hidden) { window.kgcGraph.resize(); window.kgcGraph.fit(undefined, 24); }
  }, 100));
  runReady = loadRun();
  route();
});
