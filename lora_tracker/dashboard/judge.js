// The judging view: one run's epochs against its test prompts, keyboard first.
// Reads api/judge?run=NAME, writes through the routes of lora_tracker/dashboard/writes.py
// (the same library functions as the CLI), polls api/judge/version to show other tabs' changes.
"use strict";

const errors = [];
function reportError(message) {
  errors.push(String(message));
  document.getElementById("js-errors").textContent = errors.join("\n");
}
window.addEventListener("error", (e) => reportError(e.message));
window.addEventListener("unhandledrejection", (e) => reportError(e.reason && e.reason.stack ? e.reason.stack : e.reason));

const SCORES = [["visual_quality_score", "visual"], ["style_match_score", "style"],
                ["prompt_adherence_score", "adherence"]];
const EPOCH_VERDICTS = ["best", "good", "acceptable", "skip", "failure"];
const VERDICT_KEYS = { b: "best", g: "good", a: "acceptable", s: "skip", f: "failure" };
const FLAG_KEYS = { w: "has_wrong_backgrounds", r: "has_random_pixels", p: "is_photorealistic",
                    y: "production_ready" };
const PROMPT_KEYS = { z: "pass", x: "partial", c: "fail" };
const OVERALL_VERDICTS = ["pending", "success", "partial", "failure"];
const STATUSES = ["planned", "in_progress", "completed", "failed", "cancelled"];
const VIEWS = ["grid", "ab", "strip"];
const LABELS = {
  visual_quality_score: "visual", style_match_score: "style", prompt_adherence_score: "adherence",
  verdict: "verdict", has_wrong_backgrounds: "wrong backgrounds", has_random_pixels: "random pixels",
  is_photorealistic: "photorealistic", production_ready: "production-ready", observations: "note",
  score: "score", notes: "note", overall_verdict: "verdict", quality_score: "quality",
  best_epoch: "best epoch", key_findings: "key findings", issues_found: "issues", strengths: "strengths",
  recommended_for: "recommended for", status: "status",
};
const HELP = [
  ["↑ ↓", "previous / next epoch"], ["← →", "previous / next prompt (or sample image)"],
  ["0-9", "set the focused score"], ["+ −", "focused score one up / down (10 is 9 then +)"],
  ["Tab", "focus the next score: visual → style → adherence (Shift+Tab back)"],
  ["b g a s f", "epoch verdict: best, good, acceptable, skip, failure"],
  ["w r p", "toggle a flag: wrong backgrounds, random pixels, photorealistic"],
  ["y", "toggle production-ready"], ["n", "edit the epoch's note"],
  ["z x c", "the focused prompt result: pass, partial, fail"],
  ["Enter", "the full image (Esc closes)"],
  ["Esc", "close an overlay; leave a field of the verdict form (the keys work again)"],
  ["v", "switch view: grid, A/B compare, one prompt as a strip"],
  ["m", "A/B: compare against the focused epoch (B)"],
  ["u", "undo the last change"], ["?", "this help"],
  ["mouse", "click a cell to focus it, the large image for the full one, a button to set it; " +
            "the run's verdict form saves each field when you leave it"],
];

const params = new URLSearchParams(location.hash.slice(1));
const RUN_REF = params.get("run") || "";
const POLL_MS = Math.max(100, Number(params.get("poll")) || 2000);

const state = {
  view: VIEWS.includes(params.get("view")) ? params.get("view") : "grid",
  row: 0, col: 0, sample: 0, scoreKind: 0, compareWith: null, gridThumb: 256,
};
let M = null;            // the model: run, epochs, results, version; columns and cells derived
const undoStack = [];
let writing = Promise.resolve();
let pendingWrites = 0;
// Changes shown at once but not yet answered, by "kind:id" then field: {seq, value}. An
// answer to an earlier write carries the database's row as it was then; the later changes
// still on their way stay on top of it (else "9" then "+" could step from the old value).
const unanswered = new Map();
let writeSeq = 0;
function remember(key, fields, seq) {
  const fieldsOf = unanswered.get(key) || {};
  for (const [field, value] of Object.entries(fields)) fieldsOf[field] = { seq, value };
  unanswered.set(key, fieldsOf);
}
function answered(key, fields, seq) {
  const fieldsOf = unanswered.get(key);
  if (!fieldsOf) return;
  for (const field of Object.keys(fields)) if (fieldsOf[field] && fieldsOf[field].seq === seq) delete fieldsOf[field];
  if (!Object.keys(fieldsOf).length) unanswered.delete(key);
}
function withUnanswered(key, row) {
  const fieldsOf = unanswered.get(key);
  if (!fieldsOf) return row;
  const on = { ...row };
  for (const [field, { value }] of Object.entries(fieldsOf)) on[field] = value;
  return on;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}
function imageUrl(path) { return "api/image?path=" + encodeURIComponent(path); }
function thumbUrl(path, size) {
  return `api/thumb?path=${encodeURIComponent(path)}&size=${size}`;
}
// a thumbnail that cannot be made (an odd file): the full image instead
document.addEventListener("error", (e) => {
  const img = e.target;
  if (!(img instanceof HTMLImageElement) || img.dataset.full || !img.src.includes("api/thumb?")) return;
  img.dataset.full = "1";
  img.src = imageUrl(new URL(img.src).searchParams.get("path"));
}, true);
function fmt(value) {
  if (value === null || value === undefined || value === "" ||
      (Array.isArray(value) && !value.length)) return "(none)";
  if (value === true) return "yes";
  if (value === false) return "no";
  if (Array.isArray(value)) return value.join("; ");
  const text = String(value);
  return text.length > 40 ? JSON.stringify(text.slice(0, 39) + "…") :
    (typeof value === "string" && /\s/.test(text) ? JSON.stringify(text) : text);
}
function describe(changes) {
  if (!changes.length) return "nothing changed";
  return changes.map((c) => {
    const label = LABELS[c.field] || c.field;
    if (JSON.stringify(c.before) === JSON.stringify(c.after)) return `${label} ${fmt(c.after)} (unchanged)`;
    return `${label} ${fmt(c.before)} → ${fmt(c.after)}`;
  }).join(", ");
}

// ---- the model ----------------------------------------------------------------------------
function derive(data) {
  const model = { ...data, columns: [], cells: new Map(), resultsByEpoch: new Map() };
  const cols = new Map();
  for (const r of data.results) {
    const key = `${r.prompt_id}|${r.seed ?? ""}|${r.lora_weight ?? ""}`;
    if (!cols.has(key)) {
      cols.set(key, { key, prompt_id: r.prompt_id, prompt_name: r.prompt_name, prompt_text: r.prompt_text,
                      seed: r.seed, lora_weight: r.lora_weight });
    }
    const cell = `${r.epoch_number}#${key}`;
    if (!model.cells.has(cell)) model.cells.set(cell, r);
    model.resultsByEpoch.set(r.epoch_number, (model.resultsByEpoch.get(r.epoch_number) || 0) + 1);
  }
  model.columns = [...cols.values()];
  return model;
}
function epochAt(row) { return M.epochs[row]; }
function cellAt(row, col) {
  const epoch = M.epochs[row], column = M.columns[col];
  if (!epoch || !column) return null;
  return M.cells.get(`${epoch.epoch_number}#${column.key}`) || null;
}
function columnLabel(column) {
  const parts = [];
  if (column.seed !== null && column.seed !== undefined) parts.push(`seed ${column.seed}`);
  if (column.lora_weight !== null && column.lora_weight !== undefined) parts.push(`weight ${Number(column.lora_weight)}`);
  return parts.join(" · ");
}
function hasResults(epoch) { return (M.resultsByEpoch.get(epoch.epoch_number) || 0) > 0; }

// ---- drawing ------------------------------------------------------------------------------
function scoreText(value) { return value === null || value === undefined ? "–" : String(value); }
function epochInfo(epoch) {
  const box = el("td", null, "epoch-info");
  const scores = el("div");
  SCORES.forEach(([key, label]) => {
    const span = el("span", null, "sc");
    span.append(label[0].toUpperCase() + " ", el("b", scoreText(epoch[key])));
    span.title = label;
    scores.appendChild(span);
  });
  box.appendChild(scores);
  if (epoch.verdict) box.appendChild(el("span", epoch.verdict, "verdict v-" + epoch.verdict));
  const flags = [epoch.has_wrong_backgrounds && "wrong backgrounds", epoch.has_random_pixels && "random pixels",
                 epoch.is_photorealistic && "photorealistic"].filter(Boolean);
  if (flags.length) box.appendChild(el("div", flags.join(", "), "flags"));
  if (epoch.production_ready) box.appendChild(el("div", "production-ready", "ready"));
  return box;
}
function resultBadge(result) {
  const parts = [result.verdict, result.score !== null && result.score !== undefined ? result.score : null]
    .filter((v) => v !== null && v !== undefined);
  return parts.length ? el("span", parts.join(" "), "badge verdict v-" + (result.verdict || "skip")) : null;
}
function cellNode(row, col) {
  const td = el("td", null, "cell");
  td.dataset.row = row; td.dataset.col = col;
  const result = cellAt(row, col);
  if (result && result.image_path) {
    const img = el("img");
    img.loading = "lazy"; img.decoding = "async";
    img.alt = `epoch ${epochAt(row).epoch_number}, ${M.columns[col].prompt_name}`;
    img.src = thumbUrl(result.image_path, state.gridThumb);
    td.appendChild(img);
  } else {
    td.appendChild(el("div", result ? "no image" : "—", "noimg"));
  }
  if (result) { const badge = resultBadge(result); if (badge) td.appendChild(badge); }
  return td;
}
function epochRow(row) {
  const epoch = epochAt(row);
  const tr = el("tr");
  tr.dataset.row = row;
  const th = el("th", epoch.epoch_number);
  th.title = `epoch ${epoch.epoch_number}`;
  tr.append(th, epochInfo(epoch));
  if (M.columns.length && hasResults(epoch)) {
    M.columns.forEach((_, col) => tr.appendChild(cellNode(row, col)));
  } else {
    const td = el("td", null, "samples-cell");
    td.colSpan = Math.max(1, M.columns.length);
    const box = el("div", null, "samples");
    const samples = epoch.sample_images || [];
    if (!samples.length) box.appendChild(el("span", "no prompt results or sample images", "muted"));
    samples.slice(0, 12).forEach((path, i) => {
      const img = el("img");
      img.loading = "lazy"; img.decoding = "async";
      img.src = thumbUrl(path, state.gridThumb); img.alt = path.split("/").pop(); img.title = path;
      img.dataset.sample = i;
      box.appendChild(img);
    });
    if (samples.length && M.columns.length) box.appendChild(el("span", "sample images (no prompt results)", "muted"));
    td.appendChild(box);
    tr.appendChild(td);
  }
  return tr;
}
function drawGrid() {
  const table = document.getElementById("grid");
  const board = document.getElementById("board");
  const n = Math.max(1, M.columns.length);
  const width = Math.floor((board.clientWidth - 32 - 60 - 160) / n) - 8;
  const thumb = Math.max(72, Math.min(200, width));
  document.documentElement.style.setProperty("--thumb", thumb + "px");
  // the smallest cached thumbnail that fills a cell: fewer bytes to fetch and decode
  state.gridThumb = thumb * (window.devicePixelRatio || 1) <= 128 ? 128 : 256;
  const head = el("tr");
  head.append(el("th", "epoch"), el("th", "scores · verdict"));
  M.columns.forEach((column) => {
    // the name wraps (up to 3 lines): test prompts often share their start ("pixel art baby, ...")
    const th = el("th");
    th.appendChild(el("div", column.prompt_name, "pname"));
    th.title = column.prompt_text || column.prompt_name;
    const extra = columnLabel(column);
    if (extra) th.appendChild(el("span", extra, "seed"));
    head.appendChild(th);
  });
  if (!M.columns.length) head.appendChild(el("th", "sample images"));
  table.tHead.replaceChildren(head);
  const body = document.createDocumentFragment();
  M.epochs.forEach((_, row) => body.appendChild(epochRow(row)));
  table.tBodies[0].replaceChildren(body);
}
function redrawEpoch(row) {
  if (state.view === "grid") {
    const old = document.querySelector(`#grid tbody tr[data-row="${row}"]`);
    if (old) old.replaceWith(epochRow(row));
  } else {
    drawBoard();
  }
  markFocus(false);
}
function figure(epoch, column, caption) {
  const fig = el("figure");
  const result = M.cells.get(`${epoch.epoch_number}#${column.key}`);
  if (result && result.image_path) {
    const img = el("img");
    img.decoding = "async";
    img.src = thumbUrl(result.image_path, 512);
    img.alt = `epoch ${epoch.epoch_number}, ${column.prompt_name}`;
    img.addEventListener("click", (e) => { e.stopPropagation(); openImage(result.image_path, img.alt); });
    fig.appendChild(img);
  } else {
    const why = result ? "no image" : hasResults(epoch) ? "no result" : "sample images only (grid view)";
    fig.appendChild(el("div", why, "noimg-big"));
  }
  // the prompt result's verdict on the image, as in the grid; the epoch's in the caption
  if (result) { const badge = resultBadge(result); if (badge) fig.appendChild(badge); }
  fig.appendChild(el("figcaption", caption));
  return fig;
}
function drawAB() {
  const box = document.getElementById("ab-view");
  const a = epochAt(state.row);
  const bRow = compareRow();
  const b = epochAt(bRow);
  const head = el("div", null, "ab-head");
  for (const [which, epoch] of [["A", a], ["B", b]]) {
    const d = el("div");
    d.append(el("span", which, "which"), " ", el("b", `epoch ${epoch.epoch_number}`), " ");
    d.append(SCORES.map(([key, label]) => `${label} ${scoreText(epoch[key])}`).join(" · ") + " ");
    if (epoch.verdict) d.appendChild(el("span", epoch.verdict, "verdict v-" + epoch.verdict));
    head.appendChild(d);
  }
  const parts = [head];
  if (!M.columns.length) parts.push(el("p", "No prompt results: A/B compares prompt results (same prompt and seed).", "muted"));
  M.columns.forEach((column, col) => {
    const pair = el("div", null, "ab-pair");
    pair.dataset.col = col;
    const extra = columnLabel(column);
    pair.appendChild(el("h3", column.prompt_name + (extra ? " · " + extra : "")));
    pair.append(figure(a, column, `A · epoch ${a.epoch_number}`), figure(b, column, `B · epoch ${b.epoch_number}`));
    pair.addEventListener("click", () => { state.col = col; markFocus(true); });
    parts.push(pair);
  });
  box.replaceChildren(...parts);
}
function compareRow() {
  if (state.compareWith !== null) {
    const row = M.epochs.findIndex((e) => e.epoch_number === state.compareWith);
    if (row >= 0 && row !== state.row) return row;
  }
  const best = M.epochs.findIndex((e) => e.epoch_number === M.run.best_epoch);
  if (best >= 0 && best !== state.row) return best;
  return state.row > 0 ? state.row - 1 : Math.min(1, M.epochs.length - 1);
}
function drawStrip() {
  const box = document.getElementById("strip-view");
  const column = M.columns[state.col];
  if (!column) {
    box.replaceChildren(el("p", "No prompt results: the strip shows one prompt across all epochs.", "muted"));
    return;
  }
  const extra = columnLabel(column);
  const strip = el("div", null, "strip");
  M.epochs.forEach((epoch, row) => {
    const scores = SCORES.map(([key, label]) => label[0].toUpperCase() + scoreText(epoch[key])).join(" ");
    const fig = figure(epoch, column, `epoch ${epoch.epoch_number} · ${scores}` + (epoch.verdict ? ` · ${epoch.verdict}` : ""));
    fig.dataset.row = row;
    fig.addEventListener("click", () => { state.row = row; markFocus(true); });
    strip.appendChild(fig);
  });
  box.replaceChildren(el("h3", `${column.prompt_name}${extra ? " · " + extra : ""} across all epochs`), strip);
}
function drawBoard() {
  document.body.dataset.view = state.view;
  for (const view of VIEWS) document.getElementById(view + "-view").hidden = view !== state.view;
  document.querySelectorAll("#views button").forEach((b) => b.classList.toggle("on", b.dataset.view === state.view));
  const empty = document.getElementById("empty");
  empty.hidden = M.epochs.length > 0;
  if (!M.epochs.length) {
    empty.textContent = `${M.run.run_name} has no epochs recorded yet: nothing to judge.`;
    document.getElementById("grid").tBodies[0].replaceChildren();
    return;
  }
  if (state.view === "grid") drawGrid();
  else if (state.view === "ab") drawAB();
  else drawStrip();
}

function markFocus(scroll) {
  if (!M || !M.epochs.length) { drawPanel(); return; }
  state.row = Math.max(0, Math.min(state.row, M.epochs.length - 1));
  state.col = Math.max(0, Math.min(state.col, M.columns.length - 1));
  if (state.view === "grid") {
    document.querySelectorAll("#grid .focus-row").forEach((n) => n.classList.remove("focus-row"));
    document.querySelectorAll("#grid .focus-cell, #grid .focus-sample").forEach((n) => n.classList.remove("focus-cell", "focus-sample"));
    const tr = document.querySelector(`#grid tbody tr[data-row="${state.row}"]`);
    if (tr) {
      tr.classList.add("focus-row");
      const cell = tr.querySelector(`td.cell[data-col="${state.col}"]`);
      const target = cell || tr.querySelector(`img[data-sample="${state.sample}"]`);
      if (target) target.classList.add(cell ? "focus-cell" : "focus-sample");
      if (scroll) (target || tr).scrollIntoView({ block: "nearest", inline: "nearest" });
    }
  } else if (state.view === "ab") {
    drawAB();
    const pair = document.querySelector(`#ab-view .ab-pair[data-col="${state.col}"]`);
    if (pair) { pair.classList.add("focus-pair"); if (scroll) pair.scrollIntoView({ block: "nearest" }); }
  } else {
    const cur = document.querySelector("#strip-view h3");
    if (!cur || cur.dataset.col !== String(state.col)) { drawStrip(); const h = document.querySelector("#strip-view h3"); if (h) h.dataset.col = String(state.col); }
    document.querySelectorAll("#strip-view figure.focus-cell").forEach((n) => n.classList.remove("focus-cell"));
    const fig = document.querySelector(`#strip-view figure[data-row="${state.row}"]`);
    if (fig) { fig.classList.add("focus-cell"); if (scroll) fig.scrollIntoView({ block: "nearest" }); }
  }
  drawPanel();
  prefetchNeighbours();
}
// the large image of the epochs above and below, fetched ahead so moving there shows it
const prefetched = new Set();
function prefetchNeighbours() {
  for (const row of [state.row + 1, state.row - 1]) {
    const result = cellAt(row, state.col);
    const path = result && result.image_path;
    if (!path || prefetched.has(path)) continue;
    prefetched.add(path);
    const img = new Image();
    img.decoding = "async";
    img.src = thumbUrl(path, 512);
  }
}
function focusedImage() {
  const epoch = epochAt(state.row);
  if (!epoch) return null;
  const result = M.columns.length && hasResults(epoch) ? cellAt(state.row, state.col) : null;
  if (result) return { path: result.image_path, result };
  const samples = epoch.sample_images || [];
  if (samples.length) {
    state.sample = Math.max(0, Math.min(state.sample, samples.length - 1));
    return { path: samples[state.sample], result: null, sample: true };
  }
  return null;
}
function drawPanel() {
  const epoch = M && epochAt(state.row);
  const title = document.getElementById("focus-title");
  const img = document.getElementById("focus-image");
  const caption = document.getElementById("focus-caption");
  caption.title = "";
  if (!epoch) { title.textContent = "No epoch"; img.hidden = true; caption.textContent = ""; return; }
  const focused = focusedImage();
  const column = M.columns[state.col];
  const onPrompt = focused && focused.result;
  title.textContent = `Epoch ${epoch.epoch_number}` + (onPrompt ? ` · ${column.prompt_name}` +
    (columnLabel(column) ? ` · ${columnLabel(column)}` : "") : focused && focused.sample ? ` · sample ${state.sample + 1} of ${epoch.sample_images.length}` : "");
  if (focused && focused.path) {
    const src = thumbUrl(focused.path, 512);
    if (img.dataset.path !== focused.path) { img.src = src; img.dataset.path = focused.path; }
    img.alt = title.textContent;
    img.hidden = false;
    // the file first: a long prompt is cut to 3 lines (all of it on hover)
    caption.textContent = focused.path.split("/").pop() + (onPrompt && column.prompt_text ? " — " + column.prompt_text : "");
    caption.title = caption.textContent;
  } else {
    img.hidden = true; img.removeAttribute("src"); delete img.dataset.path;
    caption.textContent = onPrompt ? "This prompt result has no image." :
      (M.columns.length && !hasResults(epoch) ? "No prompt results and no sample images for this epoch." :
       column ? "No result for this prompt at this epoch: z / x / c records one." : "No images for this epoch.");
  }
  const result = cellAt(state.row, state.col);
  document.getElementById("prompt-row").hidden = !M.columns.length;
  document.querySelectorAll("#prompt-row .pv").forEach((b) => b.classList.toggle("on", !!result && result.verdict === b.dataset.promptVerdict));
  document.getElementById("prompt-score").textContent = result && result.score !== null && result.score !== undefined ? `score ${result.score}` : "";
  const scores = document.getElementById("scores");
  scores.replaceChildren(...SCORES.map(([key, label], i) => {
    const row = el("div", null, "row score-row" + (i === state.scoreKind ? " focused" : ""));
    row.dataset.kind = i;
    row.appendChild(el("span", label, "label"));
    for (let n = 0; n <= 10; n++) {
      const b = el("button", n);
      b.type = "button";
      if (epoch[key] === n) b.classList.add("on");
      b.addEventListener("click", () => { state.scoreKind = i; setEpoch({ [key]: n }); });
      row.appendChild(b);
    }
    return row;
  }));
  document.querySelectorAll("#verdict-row .ev").forEach((b) => b.classList.toggle("on", epoch.verdict === b.dataset.verdict));
  document.querySelectorAll("#flag-row .flag").forEach((b) => b.classList.toggle("on", !!epoch[b.dataset.flag]));
  document.getElementById("note-text").textContent = epoch.observations || "";
}

function fillSelect(select, values, labels) {
  select.replaceChildren(...values.map((v, i) => new Option(labels ? labels[i] : v, v)));
}
function drawForm() {
  const form = document.getElementById("verdict-form");
  const run = M.run;
  fillSelect(form.overall_verdict, OVERALL_VERDICTS);
  fillSelect(form.status, STATUSES, STATUSES.map((s) => s.replace("_", " ")));
  const epochs = M.epochs.map((e) => String(e.epoch_number));
  fillSelect(form.best_epoch, ["", ...epochs], ["(none)", ...epochs.map((n) => "epoch " + n)]);
  const active = document.activeElement;
  const set = (name, value) => { if (form[name] !== active) form[name].value = value; };
  set("overall_verdict", run.overall_verdict || "pending");
  set("quality_score", run.quality_score ?? "");
  set("best_epoch", run.best_epoch === null || run.best_epoch === undefined ? "" : String(run.best_epoch));
  set("status", run.status);
  if (form.production_ready !== active) form.production_ready.checked = !!run.production_ready;
  set("key_findings", run.key_findings || "");
  set("issues_found", (run.issues_found || []).join("\n"));
  set("strengths", (run.strengths || []).join("\n"));
  set("recommended_for", run.recommended_for || "");
  for (const area of form.querySelectorAll("textarea")) fitText(area);
}
function fitText(area) {
  // as tall as its text (2 to 8 lines): findings and issue lists are read here, not scrolled
  const lines = area.value.split("\n").reduce((n, line) => n + Math.max(1, Math.ceil(line.length / 60)), 0);
  area.rows = Math.max(2, Math.min(8, lines));
}
function promptCount() {
  // a column is a prompt at one seed and LoRA weight; the count is of prompts
  const prompts = new Set(M.columns.map((c) => c.prompt_id)).size;
  const text = `${prompts} ${prompts === 1 ? "prompt" : "prompts"}`;
  return M.columns.length > prompts ? `${text} (${M.columns.length} columns)` : text;
}
function drawHeader() {
  const run = M.run;
  document.title = `Judge ${run.run_name} · lora-tracker`;
  document.getElementById("title").textContent = `Judge ${run.run_name}`;
  document.getElementById("back").href = "./#run=" + encodeURIComponent(run.run_name);
  const judged = M.epochs.filter((e) => SCORES.some(([key]) => e[key] !== null && e[key] !== undefined)).length;
  const bits = [run.model_type, run.network_dim && `dim ${run.network_dim}`, run.resolution,
    `${M.epochs.length} ${M.epochs.length === 1 ? "epoch" : "epochs"} (${judged} scored)`,
    promptCount()].filter(Boolean);
  document.getElementById("run-meta").textContent = bits.join(" · ");
}
function drawAll() {
  drawHeader();
  drawBoard();
  drawForm();
  markFocus(false);
}

// ---- status line --------------------------------------------------------------------------
function say(text, kind) {
  const status = document.getElementById("status");
  status.className = kind || "";
  status.textContent = text;
  status.title = text;
}

// ---- writes -------------------------------------------------------------------------------
function post(route, body) {
  // static/write.js: adds the server's token (or asks for it once), says a refusal in one line
  return window.ltWrite.post(route, body);
}
const ROUTES = { epoch: "api/judge/epoch", prompt: "api/judge/prompt", verdict: "api/judge/verdict" };
const READ_ONLY = !window.ltWrite || window.ltWrite.mode === "off";

// Writes go one at a time, in the order they were asked for (two quick keys on the same
// score must land in that order).
function setPending(delta) {
  pendingWrites += delta;
  document.getElementById("ready").dataset.pending = String(pendingWrites);
}
function write(kind, body, what, undoing, key) {
  setPending(1);
  say(`Saving ${what}…`, "pending");
  const seq = ++writeSeq;
  if (key) remember(key, body.fields, seq);
  const job = writing.then(async () => {
    try {
      const done = await post(ROUTES[kind], body);
      if (key) answered(key, body.fields, seq);
      applyWrite(kind, done);
      const before = {};
      for (const c of done.changes) before[c.field] = c.before;
      const changed = done.changes.some((c) => JSON.stringify(c.before) !== JSON.stringify(c.after));
      if (!undoing && changed) undoStack.push({ kind, body: { ...body, fields: before }, what });
      say(`${undoing ? "Undone" : "Saved"} · ${what}: ${describe(done.changes)}`, "ok");
      return true;
    } catch (e) {
      if (key) answered(key, body.fields, seq);
      say(`Not saved · ${what}: ${e.message}`, "err");
      await reloadOrGone();  // show what the database holds (the refused change changed nothing)
      return false;
    } finally {
      setPending(-1);
    }
  });
  writing = job.catch(() => false);
  return job;
}
function applyWrite(kind, done) {
  if (kind === "epoch") {
    const row = M.epochs.findIndex((e) => e.epoch_number === done.epoch.epoch_number);
    if (row >= 0) {
      M.epochs[row] = withUnanswered(`epoch:${done.epoch.epoch_number}`, done.epoch);
      redrawEpoch(row); flash(row); drawHeader();
    }
  } else if (kind === "prompt") {
    const index = M.results.findIndex((r) => r.id === done.result.id);
    if (index >= 0) {
      M.results[index] = withUnanswered(`result:${done.result.id}`, { ...M.results[index], ...done.result });
    }
    else { reloadSoon(); return; }
    M = derive(M);
    const row = M.epochs.findIndex((e) => e.epoch_number === M.results[index].epoch_number);
    if (row >= 0) { redrawEpoch(row); flash(row); }
  } else {
    M.run = { ...M.run, ...done.run };
    drawForm();
    drawHeader();
    if (state.view === "ab") drawAB();
  }
  if (pendingWrites <= 1) M.version = done.version;
}
function flash(row) {
  const tr = document.querySelector(`#grid tbody tr[data-row="${row}"] td.epoch-info`);
  if (tr) { tr.classList.remove("saved"); void tr.offsetWidth; tr.classList.add("saved"); }
}
function readOnly() {
  if (runGone) { say(runGone, "err"); return true; }
  if (READ_ONLY) say("This dashboard is read-only (started with --read-only): nothing can be changed here.", "err");
  return READ_ONLY;
}
function setEpoch(fields) {
  const epoch = epochAt(state.row);
  if (!epoch || readOnly()) return;
  // show it at once; the answer (or a refusal, then the database's values) replaces it
  const row = state.row;
  M.epochs[row] = { ...epoch, ...fields };
  redrawEpoch(row);
  write("epoch", { run: M.run.id, epoch: epoch.epoch_number, fields }, `epoch ${epoch.epoch_number}`,
        false, `epoch:${epoch.epoch_number}`);
}
function setPrompt(fields) {
  const epoch = epochAt(state.row), column = M.columns[state.col];
  if (readOnly()) return;
  if (!epoch || !column) { say("No prompt results for this run: nothing to mark pass / partial / fail.", "err"); return; }
  if (!hasResults(epoch)) { say(`Epoch ${epoch.epoch_number} has no prompt results: only its sample images.`, "err"); return; }
  const result = cellAt(state.row, state.col);
  const body = { run: M.run.id, epoch: epoch.epoch_number, prompt: String(column.prompt_id), fields };
  if (result) body.result = result.id;
  if (result) { Object.assign(result, fields); redrawEpoch(state.row); }
  write("prompt", body, `epoch ${epoch.epoch_number} · ${column.prompt_name}`, false,
        result ? `result:${result.id}` : undefined);
}
function setRun(fields, node) {
  if (readOnly()) { drawForm(); return; }
  write("verdict", { run: M.run.id, fields }, "run verdict").then((ok) => {
    if (ok && node) { node.classList.remove("saved"); void node.offsetWidth; node.classList.add("saved"); }
  });
}
function undo() {
  if (readOnly()) return;
  const last = undoStack.pop();
  if (!last) { say("Nothing to undo.", ""); return; }
  write(last.kind, last.body, last.what, true);
}

// ---- keys ---------------------------------------------------------------------------------
function move(dRow, dCol) {
  if (!M || !M.epochs.length) return;
  if (dRow) state.row = Math.max(0, Math.min(M.epochs.length - 1, state.row + dRow));
  if (dCol) {
    const epoch = epochAt(state.row);
    if (M.columns.length && hasResults(epoch)) state.col = Math.max(0, Math.min(M.columns.length - 1, state.col + dCol));
    else state.sample = Math.max(0, Math.min((epoch.sample_images || []).length - 1, state.sample + dCol));
  }
  markFocus(true);
}
function setScore(n) {
  const [key] = SCORES[state.scoreKind];
  setEpoch({ [key]: n });
}
const SCORE_MIN = 0, SCORE_MAX = 10;  // the epoch scores' rule (models.py, the CLI, the database)
function stepScore(delta) {
  const epoch = epochAt(state.row);
  if (!epoch) return;
  const [key, label] = SCORES[state.scoreKind];
  const now = epoch[key];
  const next = now === null || now === undefined ? 0 : now + delta;
  // out of range: said here and nothing sent (the server would refuse it with the same rule)
  if (next < SCORE_MIN || next > SCORE_MAX) {
    say(`Epoch ${epoch.epoch_number} · ${label} is already ${now}: scores go from ${SCORE_MIN} to ` +
        `${SCORE_MAX} (nothing sent).`, "err");
    return;
  }
  setEpoch({ [key]: next });
}
function openImage(path, caption) {
  if (!path) return;
  const box = document.getElementById("lightbox");
  document.getElementById("lightbox-image").src = imageUrl(path);
  document.getElementById("lightbox-caption").textContent = caption || path;
  box.hidden = false;
}
function openNote() {
  const epoch = epochAt(state.row);
  if (!epoch) return;
  const editor = document.getElementById("note-editor");
  document.getElementById("note-title").textContent = `Note on epoch ${epoch.epoch_number}`;
  const input = document.getElementById("note-input");
  input.value = epoch.observations || "";
  editor.hidden = false;
  editor.dataset.row = state.row;
  input.focus();
}
function closeOverlays() {
  for (const id of ["help", "lightbox", "note-editor"]) document.getElementById(id).hidden = true;
}
function setView(view) {
  state.view = view;
  drawBoard();
  markFocus(true);
}
document.getElementById("note-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    const editor = document.getElementById("note-editor");
    const row = Number(editor.dataset.row);
    editor.hidden = true;
    e.target.blur();  // the keys go back to the page
    state.row = row;
    setEpoch({ observations: e.target.value });
  } else if (e.key === "Escape") {
    e.preventDefault();
    document.getElementById("note-editor").hidden = true;
    e.target.blur();
  }
  e.stopPropagation();
});
document.addEventListener("keydown", (e) => {
  if (!M) return;
  const target = e.target;
  if (target instanceof HTMLElement && target.closest("input, textarea, select")) {
    if (e.key === "Escape") target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const overlayOpen = ["help", "lightbox"].some((id) => !document.getElementById(id).hidden);
  if (overlayOpen) {
    if (e.key === "Escape" || e.key === "?" || e.key === "Enter") { closeOverlays(); e.preventDefault(); }
    return;
  }
  const key = e.key;
  let handled = true;
  if (key === "ArrowUp") move(-1, 0);
  else if (key === "ArrowDown") move(1, 0);
  else if (key === "ArrowLeft") move(0, -1);
  else if (key === "ArrowRight") move(0, 1);
  else if (/^[0-9]$/.test(key)) setScore(Number(key));
  else if (key === "+" || key === "=") stepScore(1);
  else if (key === "-") stepScore(-1);
  else if (key === "Tab") { state.scoreKind = (state.scoreKind + (e.shiftKey ? 2 : 1)) % 3; drawPanel(); }
  else if (key in VERDICT_KEYS) setEpoch({ verdict: VERDICT_KEYS[key] });
  else if (key in FLAG_KEYS) { const f = FLAG_KEYS[key]; const epoch = epochAt(state.row); if (epoch) setEpoch({ [f]: !epoch[f] }); }
  else if (key in PROMPT_KEYS) setPrompt({ verdict: PROMPT_KEYS[key] });
  else if (key === "n") openNote();
  else if (key === "u") undo();
  else if (key === "v") setView(VIEWS[(VIEWS.indexOf(state.view) + 1) % VIEWS.length]);
  else if (key === "m") { const epoch = epochAt(state.row); if (epoch) { state.compareWith = epoch.epoch_number; say(`A/B: B is epoch ${epoch.epoch_number}; move A with ↑ ↓.`, ""); if (state.view === "ab") markFocus(false); } }
  else if (key === "Enter") { const f = focusedImage(); if (f && f.path) openImage(f.path, document.getElementById("focus-title").textContent); }
  else if (key === "?") document.getElementById("help").hidden = false;
  else if (key === "Escape") closeOverlays();
  else handled = false;
  if (handled) e.preventDefault();
});

// ---- mouse --------------------------------------------------------------------------------
document.getElementById("grid").addEventListener("click", (e) => {
  const cell = e.target.closest("td.cell, tr");
  if (!cell) return;
  const tr = e.target.closest("tr[data-row]");
  if (!tr) return;
  state.row = Number(tr.dataset.row);
  if (cell.dataset.col !== undefined) state.col = Number(cell.dataset.col);
  if (e.target.dataset.sample !== undefined) state.sample = Number(e.target.dataset.sample);
  markFocus(false);
  // a narrow screen has the scores below the grid: go to them (and "back to the grid")
  if (NARROW.matches) document.querySelector("aside").scrollIntoView({ block: "start" });
});
const NARROW = window.matchMedia("(max-width: 760px)");
document.getElementById("to-grid").addEventListener("click", () => markFocus(true));
document.getElementById("focus-image").addEventListener("click", () => {
  const f = focusedImage();
  if (f) openImage(f.path, document.getElementById("focus-title").textContent);
});
document.getElementById("lightbox").addEventListener("click", closeOverlays);
document.getElementById("help").addEventListener("click", closeOverlays);
document.getElementById("help-button").addEventListener("click", () => { document.getElementById("help").hidden = false; });
document.getElementById("undo-button").addEventListener("click", undo);
document.querySelectorAll("#views button").forEach((b) => b.addEventListener("click", () => setView(b.dataset.view)));
document.querySelectorAll("#verdict-row .ev").forEach((b) => b.addEventListener("click", () => setEpoch({ verdict: b.dataset.verdict })));
document.querySelectorAll("#flag-row .flag").forEach((b) => b.addEventListener("click", () => {
  const epoch = epochAt(state.row); if (epoch) setEpoch({ [b.dataset.flag]: !epoch[b.dataset.flag] });
}));
document.querySelectorAll("#prompt-row .pv").forEach((b) => b.addEventListener("click", () => setPrompt({ verdict: b.dataset.promptVerdict })));
document.getElementById("note-row").addEventListener("click", openNote);
document.getElementById("verdict-form").addEventListener("change", (e) => {
  const node = e.target;
  const name = node.name;
  let value;
  if (name === "production_ready") value = node.checked;
  else if (name === "quality_score") {
    // a number field takes any number typed (11, 2.5, 1e3; a word reads as ""): only a
    // whole number in its range is sent, else the status line says so and it shows the saved one
    value = node.value === "" ? null : Number(node.value);
    const min = Number(node.min), max = Number(node.max);
    if (node.validity.badInput || (value !== null && (!Number.isInteger(value) || value < min || value > max))) {
      const typed = node.validity.badInput ? "that" : JSON.stringify(node.value);
      say(`Not saved · run verdict: quality ${typed} is not a whole number from ${min} to ${max} (nothing sent).`, "err");
      node.value = M.run.quality_score ?? "";
      return;
    }
  }
  else if (name === "best_epoch") value = node.value === "" ? null : Number(node.value);
  else if (name === "issues_found" || name === "strengths") value = node.value.split("\n").map((s) => s.trim()).filter(Boolean);
  else if (name === "key_findings" || name === "recommended_for") value = node.value.trim() === "" ? null : node.value;
  else value = node.value;
  setRun({ [name]: value }, node);
});
document.getElementById("verdict-form").addEventListener("submit", (e) => e.preventDefault());
document.getElementById("verdict-form").addEventListener("input", (e) => {
  if (e.target instanceof HTMLTextAreaElement) fitText(e.target);
});

// ---- loading and polling ------------------------------------------------------------------
async function fetchView() {
  const response = await fetch("api/judge?run=" + encodeURIComponent(RUN_REF));
  const payload = await response.json();
  if (!response.ok) {
    const error = new Error(payload.error || response.statusText);
    error.status = response.status;  // 404: the run is no longer recorded
    throw error;
  }
  return payload;
}
let runGone = null;  // why nothing can be saved any more (the run was deleted meanwhile)
function gone() {
  runGone = `${M ? M.run.run_name : RUN_REF} is no longer recorded (deleted?): nothing here `
    + "can be saved; open the dashboard to choose a run.";
  document.getElementById("live").textContent = "run deleted";
  document.body.classList.add("run-gone");
  say(runGone, "err");
}
async function reloadOrGone() {
  try {
    await reload();
  } catch (e) {
    if (e.status === 404) gone();
    else throw e;
  }
}
async function reload() {
  const keep = M && epochAt(state.row) ? { epoch: epochAt(state.row).epoch_number, col: M.columns[state.col] && M.columns[state.col].key } : null;
  const data = await fetchView();
  // changes still on their way stay shown (their answers will confirm or refuse them)
  data.epochs = data.epochs.map((e) => withUnanswered(`epoch:${e.epoch_number}`, e));
  data.results = data.results.map((r) => withUnanswered(`result:${r.id}`, r));
  M = derive(data);
  if (keep) {
    const row = M.epochs.findIndex((e) => e.epoch_number === keep.epoch);
    if (row >= 0) state.row = row;
    const col = M.columns.findIndex((c) => c.key === keep.col);
    if (col >= 0) state.col = col;
  }
  drawAll();
}
let reloadTimer = null;
function reloadSoon() { clearTimeout(reloadTimer); reloadTimer = setTimeout(() => reload().catch(reportError), 50); }
async function poll() {
  if (runGone) return;  // nothing left to follow
  try {
    if (M && pendingWrites === 0) {
      const response = await fetch("api/judge/version?run=" + M.run.id);
      const version = await response.text();
      document.getElementById("live").textContent = "live · checked " + new Date().toLocaleTimeString();
      if (pendingWrites === 0 && version !== M.version) {
        await reloadOrGone();
        if (!runGone) say("Updated: another page or the CLI changed this run.", "");
      }
    }
  } catch (e) {
    document.getElementById("live").textContent = "server not answering";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
function fillHelp() {
  const table = document.getElementById("help-keys");
  table.replaceChildren(...HELP.map(([keys, what]) => {
    const tr = el("tr");
    const td = el("td");
    if (keys === "mouse") td.appendChild(el("span", "mouse", "muted"));
    else keys.split(" ").forEach((k) => { td.append(el("kbd", k), " "); });
    tr.append(td, el("td", what));
    return tr;
  }));
}
async function start() {
  fillHelp();
  // nothing to judge: no empty buttons and form that would only answer with errors
  const nothing = (text) => { document.querySelector("aside").hidden = true; say(text, "err"); };
  if (!RUN_REF) {
    nothing("No run chosen: open a run in the dashboard and follow its Judge link (or add #run=NAME).");
    return;
  }
  try {
    await reload();
  } catch (e) {
    nothing(`Cannot show ${RUN_REF}: ${e.message}`);
    return;
  }
  const first = M.epochs.findIndex((e) => e.visual_quality_score === null);
  state.row = first >= 0 ? first : 0;
  markFocus(true);
  if (READ_ONLY) {
    document.querySelectorAll("#verdict-form [name]").forEach((node) => { node.disabled = true; });
    say("Read-only dashboard (--read-only): look, compare; scores cannot be changed here.", "");
  } else {
    say("Ready: ↑ ↓ ← → move, 0-9 score, ? lists every key.", "");
  }
  const ready = document.getElementById("ready");
  ready.dataset.ms = String(Math.round(performance.now()));
  ready.textContent = "ready";
  setTimeout(poll, POLL_MS);
}
window.addEventListener("hashchange", () => location.reload());
window.addEventListener("resize", () => { if (M && state.view === "grid") { drawGrid(); markFocus(false); } });
start();
