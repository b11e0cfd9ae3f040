// BN Lab dashboard: wires the modules together and holds the page state
// (runs, selection, points). No framework; each module does one job.

import { api } from "./api.js";
import { TOKEN_EVENT, UNAUTHORIZED_EVENT, captureTokenFromUrl, setToken, token } from "./auth.js";
import { CurveChart, ProbeChart, chartRun } from "./charts.js";
import { ComparePanel } from "./compare.js";
import { ExperimentsPage, route } from "./experiments/page.js";
import { Colours, duration } from "./format.js";
import { RunForm } from "./form.js";
import { InsidePanel } from "./inside.js";
import { RunStream, RunsFeed, connections } from "./livesocket.js";
import { RunsTable } from "./runstable.js";
import { RESUMABLE, Status, TERMINAL } from "./status.js";
import { PointStore } from "./store.js";

const $ = (sel) => document.querySelector(sel);
const SELECTION_KEY = "bnlab.selected";
captureTokenFromUrl(); // before any socket opens

const store = new PointStore();
const colours = new Colours();
const runs = new Map(); // id -> Run
const streams = new Map(); // id -> RunStream, for the selected runs
let selected = []; // ids, in the order they were selected
let listed = false; // the feed's first list has arrived

const colourOf = (run) => colours.of(run);
const table = new RunsTable($("[data-testid=runs-panel]"), {
  onToggle: (id, on) => setSelected(on ? [...selected, id] : selected.filter((x) => x !== id)),
  onCancel: (id) => act(api.cancelRun(id), "cancel"),
  onResume: (id) => act(api.resumeRun(id), "resume"),
  onDelete: (id) => act(api.deleteRun(id), "delete"),
}, colourOf);

const points = (id) => store.points(id);
const charts = [
  new CurveChart($("[data-testid=chart-loss]"), points, {
    metric: "val_loss", title: "Validation loss", yTitle: "cross-entropy",
    hoverformat: "loss %{y:.4f} at %{x}",
  }),
  new CurveChart($("[data-testid=chart-acc]"), points, {
    metric: "val_acc", title: "Validation accuracy", yTitle: "accuracy", tickformat: ".0%",
    hoverformat: "%{y:.2%} at %{x}",
  }),
];
const lossChart = charts[0];
const probeChart = new ProbeChart($("[data-testid=chart-probe]"), points);
charts.push(probeChart);
charts.push(new InsidePanel($("[data-testid=inside-panel]"), points));
const compare = new ComparePanel($("[data-testid=compare-panel]"), colourOf);

new RunForm($("[data-testid=run-form]"), (started) => {
  for (const run of started) upsertRun(run);
  // What was just started is what the user wants to watch: it replaces the selection
  // (ticking older runs back on adds them to it).
  setSelected(started.map((r) => r.id));
});

// ---- runs ----------------------------------------------------------------------------

const inFeed = new Set(); // runs WS /ws/runs reports on

/** A REST answer older than what the feed already said (e.g. "running" after "cancelled"). */
function isStale(old, run) {
  const resumed = RESUMABLE.has(old.status) && run.status === Status.QUEUED;
  if (TERMINAL.has(old.status) && !TERMINAL.has(run.status) && !resumed) return true;
  if (old.status === run.status && (run.step ?? 0) < (old.step ?? 0)) return true;
  return old.status === run.status && old.test_metrics && !run.test_metrics;
}

/**
 * One place for every new state of a run. The runs feed is the authority: one socket,
 * in order. A run stream only fills in runs the feed does not cover (older than its
 * newest 200); REST answers and evaluation points are checked against what is already known.
 */
function upsertRun(run, source = "rest") {
  const old = runs.get(run.id);
  if (source === "feed") inFeed.add(run.id);
  else if (old && ((source === "stream" && inFeed.has(run.id)) || isStale(old, run))) return;
  runs.set(run.id, run);
  table.upsert(run);
  if (selected.includes(run.id)) {
    if (!old || old.status !== run.status || old.label !== run.label) replot();
    if (old && (old.status !== run.status || (!old.test_metrics && run.test_metrics))) compare.refreshSoon(0);
    ensureStream(run.id);
  }
  updateSummary();
}

/**
 * An evaluation at a step proves training got there. The feed sends progress at most once
 * a second, so it may never say that the last step was reached: without this, a run in its
 * final test evaluation would still show the ETA of the last progress it published.
 */
function reachedStep(id, step) {
  const run = runs.get(id);
  if (!run || TERMINAL.has(run.status) || step <= (run.step ?? 0)) return;
  upsertRun({ ...run, step }, "points");
}

function removeRun(id) {
  runs.delete(id);
  table.remove(id);
  streams.get(id)?.stop();
  streams.delete(id);
  store.delete(id);
  if (selected.includes(id)) setSelected(selected.filter((x) => x !== id));
  updateSummary();
}

function onList(list) {
  colours.assign(list);
  const ids = new Set(list.map((r) => r.id));
  for (const id of [...runs.keys()]) if (!ids.has(id) && !selected.includes(id)) removeRun(id);
  inFeed.clear();
  for (const run of list) upsertRun(run, "feed");
  updateSummary();
  if (!listed) {
    listed = true;
    setSelected(initialSelection(list));
  } else {
    compare.refreshSoon(0);
  }
}

function initialSelection(list) {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(SELECTION_KEY) ?? "null");
  } catch {
    saved = null;
  }
  if (Array.isArray(saved)) return [...new Set([...selected, ...saved])].filter((id) => runs.has(id));
  if (selected.length || !list.length) return selected;
  // First visit: show the newest comparison (or run).
  const newest = list[0];
  return list.filter((r) => r.id === newest.id || (newest.comparison_id && r.comparison_id === newest.comparison_id)).map((r) => r.id);
}

// ---- selection, streams, charts ---------------------------------------------------

function setSelected(ids) {
  selected = [...new Set(ids)].filter((id) => runs.has(id));
  try {
    localStorage.setItem(SELECTION_KEY, JSON.stringify(selected));
  } catch {
    /* private mode: selection is not remembered */
  }
  table.setSelected(selected);
  for (const [id, stream] of streams) {
    if (!selected.includes(id)) {
      stream.stop();
      streams.delete(id);
    }
  }
  for (const id of selected) ensureStream(id);
  replot();
  compare.setRuns(plotted().map((r) => r.id));
  $("[data-testid=selection-count]").textContent = selected.length
    ? `${selected.length} selected`
    : "none selected";
}

function ensureStream(id) {
  const current = streams.get(id);
  const run = runs.get(id);
  // A finished stream is reopened when its run comes back (resumed).
  if (current && !(current.finished && run && !TERMINAL.has(run.status))) return;
  const stream = new RunStream(id, {
    lastSeq: store.lastSeq(id),
    onRun: (run) => upsertRun(run, "stream"),
    onPoints: (runId, pts) => {
      const fresh = store.add(runId, pts);
      if (!fresh.length) return;
      for (const chart of charts) chart.append(runId, fresh);
      compare.refreshSoon();
      reachedStep(runId, fresh.at(-1).step);
    },
    onGone: removeRun,
  });
  streams.set(id, stream);
  stream.start();
}

/** The selected runs in a stable order: oldest comparison first, BN before no-BN. */
function plotted() {
  return selected
    .map((id) => runs.get(id))
    .filter(Boolean)
    .sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)) ||
      String(a.comparison_id ?? a.id).localeCompare(String(b.comparison_id ?? b.id)) ||
      Number(b.config?.batch_norm !== false) - Number(a.config?.batch_norm !== false));
}

function replot() {
  const list = plotted().map((r) => chartRun(r, colourOf(r)));
  for (const chart of charts) chart.setRuns(list);
}

// ---- chart controls ----------------------------------------------------------------

const controls = $("[data-testid=chart-controls]");
controls.addEventListener("submit", (ev) => ev.preventDefault());
controls.addEventListener("change", () => {
  const data = new FormData(controls);
  const xMode = data.get("xmode");
  const smoothing = Number(data.get("smoothing"));
  const yLog = data.get("yscale") === "log";
  for (const chart of charts) {
    chart.opts.xMode = xMode;
    if (chart !== probeChart) chart.opts.smoothing = smoothing;
  }
  lossChart.opts.yLog = yLog;
  for (const chart of charts) chart.redraw();
});

// ---- actions, notices, summary -------------------------------------------------------

let noticeTimer = null;
function notice(text, kind = "info") {
  const box = $("[data-testid=notice]");
  box.textContent = text;
  box.className = `notice notice-${kind}`;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}

async function act(promise, what) {
  try {
    const run = await promise;
    if (run && run.id) upsertRun(run);
  } catch (err) {
    notice(`Could not ${what}: ${err.message}`, "error");
  }
}

function updateSummary() {
  let running = 0;
  let queued = 0;
  for (const r of runs.values()) {
    if (r.status === Status.RUNNING) running += 1;
    else if (r.status === Status.QUEUED) queued += 1;
  }
  const total = `${runs.size} run${runs.size === 1 ? "" : "s"}`;
  $("[data-testid=activity]").textContent = `${running} running · ${queued} queued · ${total}`;
}

async function loadHealth() {
  try {
    const h = await api.health();
    const workers = h.workers ? `${h.workers.total} workers` : "";
    $("[data-testid=health]").textContent = [
      h.tensorflow ? `TensorFlow ${h.tensorflow}` : "", (h.devices ?? []).join(", "), workers,
    ].filter(Boolean).join(" · ");
  } catch {
    /* the banner reports connection trouble */
  }
}

// ---- disconnection banner ------------------------------------------------------------

const banner = $("[data-testid=conn-banner]");
const bannerText = $("[data-testid=conn-banner-text]");
let bannerTimer = null;
function renderBanner() {
  const s = connections.trouble();
  const online = !s;
  banner.hidden = online;
  if (online) serverUp = null;
  document.body.classList.toggle("offline", !online);
  $("[data-testid=conn-dot]").className = `dot ${online ? "dot-on" : "dot-off"}`;
  $("[data-testid=conn-dot]").title = online ? "live" : "disconnected";
  if (online) {
    clearInterval(bannerTimer);
    bannerTimer = null;
    return;
  }
  const wait = Math.max(0, (s.retryAt - Date.now()) / 1000);
  const retry = s.ws ? `reconnecting (attempt ${s.attempt})…` : `reconnecting in ${duration(Math.ceil(wait))} (attempt ${s.attempt})…`;
  // Websocket refusals look like network errors to a page; if the REST API answers,
  // the server is up and most likely wants its access token.
  if (s.attempt >= 2 && serverUp === null) probeServer();
  bannerText.textContent = serverUp
    ? `Live connection refused — ${token() ? "check the access token" : "this server may need an access token"}; ${retry}`
    : `Connection to the server lost — ${retry}`;
  $("[data-testid=conn-token]").hidden = !serverUp;
  bannerTimer ??= setInterval(renderBanner, 500);
}

let serverUp = null; // during connection trouble: does GET /api/health answer?
async function probeServer() {
  serverUp = false;
  try {
    await api.health();
    serverUp = true;
  } catch {
    serverUp = false;
  }
  if (!connections.trouble()) serverUp = null;
}
connections.addEventListener("change", renderBanner);
$("[data-testid=conn-retry]").addEventListener("click", () => connections.reconnectNow());

// ---- access token (only for servers started with one) --------------------------------

const tokenForm = $("[data-testid=token-form]");
const tokenInput = $("[data-testid=token-input]");
function openTokenForm(reason = "") {
  tokenForm.hidden = false;
  $("[data-testid=token-reason]").textContent = reason;
  tokenInput.value = token();
  tokenInput.focus();
}
function renderTokenButton() {
  $("[data-testid=token-button]").textContent = token() ? "Access token ✓" : "Access token";
}
$("[data-testid=token-button]").addEventListener("click", () => (tokenForm.hidden ? openTokenForm() : (tokenForm.hidden = true)));
$("[data-testid=conn-token]").addEventListener("click", () => openTokenForm("The server refuses the live connection without its token."));
tokenForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  setToken(tokenInput.value.trim());
  tokenForm.hidden = true;
  connections.reconnectNow();
  notice(token() ? "Access token saved for this tab." : "Access token removed.");
});
$("[data-testid=token-cancel]").addEventListener("click", () => (tokenForm.hidden = true));
window.addEventListener(UNAUTHORIZED_EVENT, (ev) => openTokenForm(ev.detail));
window.addEventListener(TOKEN_EVENT, renderTokenButton);
renderTokenButton();

// ---- views: the runs, or the Experiments area (its address is its state) ------------

const experiments = new ExperimentsPage($("[data-testid=experiments-page]"), {
  notice,
  // A cell's runs, in the runs view: plotted and compared as a selection of their own.
  openRuns: (cellRuns) => {
    for (const run of cellRuns) upsertRun(run);
    location.hash = "runs";
    setSelected(cellRuns.map((r) => r.id));
  },
});
function showView() {
  const where = route();
  $("[data-testid=runs-page]").hidden = Boolean(where);
  for (const link of document.querySelectorAll("[data-view]")) {
    const current = (link.dataset.view === "experiments") === Boolean(where);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  experiments.show(where);
  // Charts drawn while hidden have no size: let Plotly measure them again.
  window.dispatchEvent(new Event("resize"));
}
window.addEventListener("hashchange", showView);
showView();

// ---- start -------------------------------------------------------------------------

new RunsFeed({
  onList,
  onRun: (run) => {
    upsertRun(run, "feed");
    if (run.experiment_id) experiments.runChanged();
  },
  onDeleted: removeRun,
}).start();
loadHealth();
replot();
compare.setRuns([]);

// Test hook (read-only, see frontend/README.md): what the page holds per run, and a way
// to drop every live socket as a network failure would.
window.bnlab = Object.freeze({
  pointsFor: (runId) => store.points(runId).map((p) => ({ seq: p.seq, step: p.step })),
  selected: () => [...selected],
  socket: Object.freeze({
    drop: (offlineMs = 0) => connections.dropAll(offlineMs),
    connected: () => !connections.trouble(),
  }),
  // The open experiment: every stream seq it applied, in order, its charts' draws, and
  // whether every chart asked for has been drawn.
  experiment: Object.freeze({
    appliedSeqs: () => [...(experiments.view.stream?.applied ?? [])],
    draws: () => experiments.view.painter.draws,
    painted: () => experiments.view.painter.idle(),
  }),
});
