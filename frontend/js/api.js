// REST client for the BN Lab API (docs/api.md). The only place that calls fetch().

import { UNAUTHORIZED_EVENT, token } from "./auth.js";

/**
 * An HTTP error: the server's problem (docs/api.md#errors), its `detail` as the message
 * and, for a 422, the per-field messages of its `errors`.
 */
export class ApiError extends Error {
  constructor(status, message, fieldErrors = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.fieldErrors = fieldErrors; // {field: message}; "" holds errors not tied to a field
  }
}

/** A problem's `errors` ([{field, loc, msg, type}…]) as {field: message}; the server names the field. */
export function fieldErrorsFrom(errors) {
  const out = {};
  for (const item of Array.isArray(errors) ? errors : []) {
    const field = typeof item?.field === "string" ? item.field : "";
    const msg = String(item?.msg ?? "invalid value");
    out[field] = out[field] ? `${out[field]}; ${msg}` : msg;
  }
  return out;
}

// Every request carries the token: a server with one needs it for reads as well as changes
// (unless started with --public-read). A 401 opens the page's token prompt (main.js).
const unauthorized = (message) => window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT, { detail: message }));

async function request(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (token()) init.headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const fieldErrors = fieldErrorsFrom(data?.errors);
    let message = typeof data?.detail === "string" ? data.detail : null;
    if (!message) message = Object.values(fieldErrors).join("; ") || `${response.status} ${response.statusText}`;
    if (response.status === 401) unauthorized(message);
    throw new ApiError(response.status, message, fieldErrors);
  }
  return data;
}

const enc = encodeURIComponent;

/**
 * GET /api/health answers without the token, and says whether this page may read: the runs
 * arrive over a websocket whose refusal a page cannot tell from a network error, so this
 * is how a page without the (right) token learns that it needs one.
 */
async function health() {
  const answer = await request("GET", "/api/health");
  if (answer?.can_read === false) {
    unauthorized(token() ? "The server refuses this access token." : "This server needs its access token to show its runs.");
  }
  return answer;
}

export const api = {
  health,
  // The server's limits the page applies before asking: {compare_max_runs}.
  limits: () => request("GET", "/api/limits"),
  // A run's fields, limits and defaults: RunCreate's JSON schema, as the API publishes it.
  runSchema: async () => (await request("GET", "/openapi.json")).components.schemas.RunCreate,
  startRun: (config) => request("POST", "/api/runs", config),
  startComparison: (config) => request("POST", "/api/comparisons", config),
  cancelRun: (id) => request("POST", `/api/runs/${enc(id)}/cancel`),
  resumeRun: (id) => request("POST", `/api/runs/${enc(id)}/resume`),
  deleteRun: (id) => request("DELETE", `/api/runs/${enc(id)}`),
  compare: (ids) => request("GET", `/api/compare?runs=${ids.map(enc).join(",")}`),
  exportUrl: (ids, format) => `/api/export?runs=${ids.map(enc).join(",")}&format=${format}`,
  metricsCsvUrl: (id) => `/api/runs/${enc(id)}/metrics.csv`,
  // Experiments (frontend/js/experiments/).
  presets: async () => (await request("GET", "/api/experiments/presets")).items,
  experiments: async () => (await request("GET", "/api/experiments")).items,
  planExperiment: (design) => request("POST", "/api/experiments/plan", design),
  startExperiment: (design) => request("POST", "/api/experiments", design),
  cancelExperiment: (id) => request("POST", `/api/experiments/${enc(id)}/cancel`),
  resumeExperiment: (id) => request("POST", `/api/experiments/${enc(id)}/resume`),
  addSeeds: (id, seeds) => request("POST", `/api/experiments/${enc(id)}/seeds`, { seeds }),
  // The seeds' curves need no diagnostics (~7.5 KB a CNN point).
  experimentExport: (id) => request("GET", `/api/experiments/${enc(id)}/export?format=json`),
  // Each cell's seed means inside the network, of one layer (null: of every layer).
  experimentDiagnostics: (id, layer = null) =>
    request("GET", `/api/experiments/${enc(id)}/diagnostics${layer ? `?layer=${enc(layer)}` : ""}`),
  // The download is the whole record, diagnostics included.
  experimentExportUrl: (id, format, part = "runs") =>
    `/api/experiments/${enc(id)}/export?format=${format}${format === "csv" ? `&part=${part}` : "&diagnostics=true"}`,
};

/** ws:// or wss:// URL for a path on this server (with the access token, if any). */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = new URL(`${scheme}//${location.host}${path}`);
  if (token()) url.searchParams.set("token", token());
  return url.toString();
}

// Download links (`<a href="/api/…" download>`) cannot send a header. With a token, a click
// on one fetches the file with it and saves that instead (a token in the URL would end up
// in logs and history).
async function download(url) {
  const response = await fetch(url, { headers: { Authorization: `Bearer ${token()}` } });
  if (!response.ok) {
    const detail = (await response.json().catch(() => null))?.detail;
    const message = typeof detail === "string" ? detail : `${response.status} ${response.statusText}`;
    if (response.status === 401) unauthorized(message);
    else console.warn(`download of ${url.pathname} failed: ${message}`);
    return;
  }
  const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") ?? "")?.[1] ?? "";
  const saved = document.createElement("a");
  saved.href = URL.createObjectURL(await response.blob());
  saved.download = name;
  document.body.append(saved);
  saved.click();
  saved.remove();
  setTimeout(() => URL.revokeObjectURL(saved.href), 60_000);
}

document.addEventListener("click", (ev) => {
  const link = ev.target instanceof Element ? ev.target.closest("a[download][href]") : null;
  if (!link || !token() || ev.defaultPrevented || ev.button !== 0) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/api/")) return;
  ev.preventDefault();
  download(url).catch((err) => console.warn(`download of ${url.pathname} failed: ${err.message}`));
}, true);
