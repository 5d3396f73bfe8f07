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

// ------------------------------------------------------------------ predictions
function showMessage(html) {
  const box = $("#message");
  if (!html) { box.hidden = true; box.innerHTML = ""; return; }
  box.innerHTML = html; box.hidden = false;
}

function knownBadge(known) {
  if (!known) return `<span class="badge new">new</span>`;
  const cls = ["train", "valid", "test"].includes(known) ? known : "known";
  return `<span class="badge ${cls}">${esc(known)}</span>`;
}

async function predict() {
  closeSuggestions();
  const head = $("#head").value.trim(), relation = $("#relation").value.trim(), tail = $("#tail").value.trim();
  if (!relation || (!head && !tail)) {
    showMessage("Enter a relation and a head (to rank tails) or a tail (to rank heads)."); return;
  }
  if (head && tail) {
    showMessage("Fill either head or tail, not both — the empty one is what gets predicted."); return;
  }
  const k = $("#k").value, ex = $("#exclude-known").checked;
  const params = new URLSearchParams({ relation, k, exclude_known: ex });
  let url;
  if (head) { params.set("head", head); url = "api/predict/tails?" + params; }
  else { params.set("tail", tail); url = "api/predict/heads?" + params; }
  $("#predict").disabled = true;
  try {
    const data = await getJSON(url);
    showMessage("");
    renderResults(data);
  } catch (e) {
    const d = e.detail || {};
    let html = esc(e.message);
    if (d.close_matches && d.close_matches.length) {
      html += `<div>Did you mean: ${d.close_matches.map((m) =>
        `<span class="chip" data-field="${d.kind === "relation" ? "relation" : (head && d.value === head ? "head" : "tail")}" data-value="${esc(m)}">${esc(m)}</span>`).join("")}</div>`;
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
    ? `(<b>${esc(q.head)}</b>, <b>${esc(q.relation)}</b>, <b>?</b>)`
    : `(<b>?</b>, <b>${esc(q.relation)}</b>, <b>${esc(q.tail)}</b>)`;
  $("#results-title").innerHTML = `Top ${data.predictions.length} ${q.predict}s for ${what}`;
  $("#results-table tbody").innerHTML = data.predictions.map((p) =>
    `<tr data-entity="${esc(p.entity)}">` +
    `<td class="num">${p.rank}</td>` +
    `<td><span class="ename">${esc(p.name)}</span>` + (p.name !== p.entity ? `<span class="elabel">${esc(p.entity)}</span>` : "") + "</td>" +
    `<td class="num">${fmt(p.score)}</td>` +
    `<td>${knownBadge(p.known)}</td></tr>`).join("");
  $("#results").hidden = false;
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
  loadRun();
});
