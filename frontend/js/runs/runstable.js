// The runs table: one row per run, updated in place from WS /ws/runs.

import { api } from "../api.js";
import { RESUMABLE, Status, TERMINAL } from "../status.js";
import { describeConfig, duration, isNum, pct, rate, shortId } from "../format.js";
import { Scope, experimentName, shows } from "./filter.js";
import { pairOf } from "./pairs.js";

const BAD = new Set([Status.FAILED, Status.DIVERGED, Status.INTERRUPTED]);

/**
 * What a running run is doing, for its speed and ETA: "starting" until it has trained a
 * step (loading data, building the network, evaluating step 0: no speed yet), "testing"
 * once no training is left (the final evaluations, which an ETA would call 0 s), else
 * "training". Progress arrives about once a second, so an ETA under a second means the
 * last steps are done or nearly so.
 */
function phase(run, step, total) {
  if (run.status !== Status.RUNNING) return null;
  if ((total && step >= total) || (isNum(run.eta_seconds) && run.eta_seconds < 1)) return "testing";
  if (!step || !isNum(run.steps_per_sec)) return "starting";
  return "training";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export class RunsTable {
  /**
   * @param {HTMLElement} root  element holding the table
   * @param {object} handlers  onToggle(id, selected), onCancel(id), onResume(id), onDelete(id),
   *   onFilter(filter): the user asks for other runs (filter.js)
   * @param {(run) => string} colourOf
   */
  constructor(root, { onToggle, onCancel, onResume, onDelete, onFilter }, colourOf) {
    this.root = root;
    this.handlers = { onToggle, onCancel, onResume, onDelete, onFilter };
    this.filter = { scope: Scope.OWN };
    this.filterSelect = root.querySelector("[data-testid=runs-filter]");
    this.groups = root.querySelector("[data-testid=run-groups]");
    this.groupsPending = false;
    this.filterSelect.addEventListener("change", () => {
      const [scope, experiment] = this.filterSelect.value.split(":");
      if (scope === Scope.IDS) return; // the linked runs: only a link names them
      onFilter(scope === Scope.EXPERIMENT ? { scope, experiment } : { scope });
    });
    this.groups.addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-experiment-id], button[data-scope]");
      if (!button) return;
      const { experimentId, scope } = button.dataset;
      onFilter(experimentId ? { scope: Scope.EXPERIMENT, experiment: experimentId } : { scope });
    });
    this.colourOf = colourOf;
    this.rows = new Map(); // id -> {tr, parts}
    this.pairCreated = new Map(); // pairOf(run) -> its earliest created_at
    this.selected = new Set();
    this.tbody = root.querySelector("tbody");
    this.empty = root.querySelector("[data-testid=runs-empty]");
    this.count = document.querySelector("[data-testid=runs-count]");
    this.wrap = root.querySelector(".table-wrap");
    // The stylesheet's max-height is the room the table may take; fit() trims it to rows.
    this.budget = parseFloat(getComputedStyle(this.wrap).maxHeight);
    this.fitPending = false;
    window.addEventListener("resize", () => this.fitSoon());
    this.tbody.addEventListener("click", (ev) => this.onClick(ev));
    this.tbody.addEventListener("change", (ev) => {
      const box = ev.target.closest("input[data-action=select]");
      if (box) this.handlers.onToggle(box.dataset.runId, box.checked);
    });
  }

  onClick(ev) {
    const button = ev.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const id = button.dataset.runId;
    if (button.dataset.action === "cancel") this.handlers.onCancel(id);
    else if (button.dataset.action === "resume") this.handlers.onResume(id);
    else if (button.dataset.action === "delete") this.handlers.onDelete(id);
  }

  upsert(run) {
    let row = this.rows.get(run.id);
    if (!row) {
      row = this.build(run);
      this.rows.set(run.id, row);
      this.place(row, run);
    }
    row.run = run;
    this.fill(row, run);
    row.tr.hidden = !shows(this.filter, run);
    this.refreshEmpty();
    this.fitSoon();
  }

  /** Shows the runs `filter` names (filter.js), the rest waiting behind the group line. */
  setFilter(filter) {
    this.filter = filter;
    for (const row of this.rows.values()) row.tr.hidden = !shows(filter, row.run);
    this.wrap.scrollTop = 0;
    this.refreshEmpty();
    this.fitSoon();
  }

  /**
   * The filter picker and, for the user's own runs, one line per experiment whose runs
   * are not shown (a collapsed group: a click shows them). Newest experiment first.
   */
  renderGroups() {
    this.groupsPending = false;
    const experiments = new Map(); // id -> {name, count, newest}
    for (const { run } of this.rows.values()) {
      if (!run.experiment_id) continue;
      const e = experiments.get(run.experiment_id) ?? { name: experimentName(run), count: 0, newest: "" };
      e.count += 1;
      if (String(run.created_at) > e.newest) e.newest = String(run.created_at);
      experiments.set(run.experiment_id, e);
    }
    const ordered = [...experiments.entries()].sort((a, b) => b[1].newest.localeCompare(a[1].newest));
    const option = (value, text) => Object.assign(document.createElement("option"), { value, textContent: text });
    const own = [...this.rows.values()].filter(({ run }) => !run.experiment_id).length;
    const options = [
      option(Scope.OWN, `Comparisons and single runs (${own})`),
      option(Scope.ALL, `All runs (${this.rows.size})`),
      ...ordered.map(([id, e]) => option(`${Scope.EXPERIMENT}:${id}`, `Experiment ${e.name} (${e.count} runs)`)),
    ];
    if (this.filter.scope === Scope.IDS) options.unshift(option(Scope.IDS, `The ${this.filter.ids.length} runs linked`));
    this.filterSelect.replaceChildren(...options);
    this.filterSelect.value = this.filter.scope === Scope.EXPERIMENT ? `${Scope.EXPERIMENT}:${this.filter.experiment}` : this.filter.scope;
    const parts = [];
    if (this.filter.scope === Scope.OWN && ordered.length) {
      parts.push("Experiments' runs:");
      for (const [id, e] of ordered) {
        parts.push(Object.assign(document.createElement("button"), {
          type: "button", className: "chip", textContent: `▸ ${e.name} · ${e.count} runs`,
          title: "show this experiment's runs",
        }));
        parts.at(-1).dataset.experimentId = id;
        parts.at(-1).dataset.testid = "run-group";
      }
    } else if (this.filter.scope !== Scope.OWN) {
      const back = Object.assign(document.createElement("button"), {
        type: "button", className: "chip", textContent: "◂ Comparisons and single runs",
      });
      back.dataset.scope = Scope.OWN;
      back.dataset.testid = "run-group-back";
      parts.push(back);
    }
    this.groups.replaceChildren(...parts.flatMap((x, i) => (i ? [" ", x] : [x])));
    this.groups.hidden = !parts.length;
  }

  remove(id) {
    const row = this.rows.get(id);
    if (!row) return;
    row.tr.remove();
    this.rows.delete(id);
    this.refreshEmpty();
    this.fitSoon();
  }

  fitSoon() {
    if (this.fitPending) return;
    this.fitPending = true;
    requestAnimationFrame(() => this.fit());
  }

  /**
   * Makes the scroller the header plus a whole number of rows high, so the last visible row
   * is never cut in half; rows snap to the top edge (CSS), so scrolling keeps them whole.
   */
  fit() {
    this.fitPending = false;
    const rows = [...this.tbody.rows].filter((r) => !r.hidden);
    if (!rows.length || !Number.isFinite(this.budget)) {
      this.wrap.style.maxHeight = "";
      return;
    }
    const top = rows[0].getBoundingClientRect().top;
    const rowHeight = (rows[rows.length - 1].getBoundingClientRect().bottom - top) / rows.length;
    const head = top - this.tbody.parentElement.getBoundingClientRect().top;
    const scrollbar = this.wrap.offsetHeight - this.wrap.clientHeight; // a horizontal one
    const fitting = Math.max(1, Math.floor((this.budget - head) / rowHeight));
    this.wrap.style.maxHeight = `${head + fitting * rowHeight + scrollbar}px`;
    this.wrap.style.scrollPaddingTop = `${head}px`;
  }

  setSelected(ids) {
    this.selected = new Set(ids);
    for (const [id, row] of this.rows) {
      const on = this.selected.has(id);
      row.parts.select.checked = on;
      row.tr.classList.toggle("selected", on);
    }
  }

  /** Newest first; the two runs of a comparison or an experiment's twins stay together (BN first). */
  place(row, run) {
    const mine = this.sortKey(run);
    for (const other of this.tbody.children) {
      const otherRun = this.rows.get(other.dataset.runId)?.run;
      if (otherRun && otherRun.id !== run.id && this.sortKey(otherRun) < mine) {
        this.tbody.insertBefore(row.tr, other);
        return;
      }
    }
    this.tbody.append(row.tr);
  }

  /** Larger sorts first: the pair's creation time, the pair, then BN before no-BN. */
  sortKey(run) {
    const pair = pairOf(run);
    let created = String(run.created_at ?? "");
    if (pair) {
      // The pair's first run's time, remembered so that placing a run stays linear.
      const known = this.pairCreated.get(pair);
      if (known === undefined || created < known) this.pairCreated.set(pair, created);
      else created = known;
    }
    return `${created}|${pair ?? run.id}|${run.config?.batch_norm === false ? 0 : 1}`;
  }

  build(run) {
    const id = run.id;
    const select = el("input", {
      type: "checkbox", "data-action": "select", "data-run-id": id, "data-testid": "run-select",
      "aria-label": `plot ${run.label}`,
    });
    const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
    const label = el("span", { class: "run-label", "data-testid": "run-label" });
    const meta = el("span", { class: "run-meta" });
    const error = el("span", { class: "run-error", "data-testid": "run-error", hidden: true });
    const badge = el("span", { class: "badge", "data-testid": "run-status" });
    const bar = el("div", { class: "bar-fill" });
    const progress = el("div", {
      class: "bar", role: "progressbar", "aria-valuemin": "0", "data-testid": "run-progress",
    }, bar);
    const stepText = el("span", { class: "step-text", "data-testid": "run-steps" });
    const speed = el("td", { class: "num speed", "data-testid": "run-speed" });
    const eta = el("td", { class: "num", "data-testid": "run-eta" });
    const acc = el("td", { class: "num strong", "data-testid": "run-test-acc" });
    const cancel = el("button", {
      type: "button", class: "btn small", "data-action": "cancel", "data-run-id": id, "data-testid": "run-cancel",
      text: "Cancel",
    });
    const resume = el("button", {
      type: "button", class: "btn small", "data-action": "resume", "data-run-id": id, "data-testid": "run-resume",
      text: "Resume", title: "continue from the last checkpoint",
    });
    const del = el("button", {
      type: "button", class: "btn small danger", "data-action": "delete", "data-run-id": id, "data-testid": "run-delete",
      text: "Delete",
    });
    const csv = el("a", { class: "link small", href: api.metricsCsvUrl(id), text: "CSV", download: "",
      title: "this run's points as CSV" });
    const tr = el("tr", { "data-testid": "run-row", "data-run-id": id },
      el("td", { class: "sel" }, select),
      el("td", { class: "run-cell" }, el("div", { class: "run-title" }, swatch, label), meta, error),
      el("td", {}, badge),
      el("td", { class: "progress-cell" }, progress, stepText),
      speed, eta, acc,
      el("td", { class: "actions" }, cancel, resume, del, csv),
    );
    return { tr, run, parts: { select, swatch, label, meta, error, badge, bar, progress, stepText, speed, eta, acc, cancel, resume, del } };
  }

  fill(row, run) {
    const p = row.parts;
    const status = run.status ?? Status.QUEUED;
    const terminal = TERMINAL.has(status);
    row.tr.dataset.status = status;
    row.tr.classList.toggle("bad", BAD.has(status));
    p.swatch.style.setProperty("--c", this.colourOf(run));
    p.swatch.classList.toggle("dashed", run.config?.batch_norm === false);
    // Every row is two lines high, so the scroller can show whole rows: long texts end in
    // "…" (in full on hover), and a run's trouble takes the place of its configuration.
    const label = run.label || shortId(run.id);
    const config = describeConfig(run.config);
    const reason = run.error || (status === Status.INTERRUPTED ? "the server stopped during this run" : "");
    p.label.textContent = label;
    p.label.title = `${label}\n${config}\nid ${run.id}`;
    p.meta.textContent = config;
    p.meta.title = config;
    p.meta.hidden = Boolean(reason);
    p.badge.textContent = status;
    p.badge.className = `badge badge-${status}`;
    p.error.hidden = !reason;
    p.error.textContent = reason ? `⚠ ${reason}` : "";
    p.error.title = reason;
    p.badge.title = reason;
    const total = run.total_steps ?? run.config?.steps ?? 0;
    const step = run.step ?? 0;
    const frac = total ? Math.min(1, step / total) : 0;
    p.bar.style.width = `${(frac * 100).toFixed(1)}%`;
    p.progress.className = `bar bar-${status}`;
    p.progress.setAttribute("aria-valuemax", String(total));
    p.progress.setAttribute("aria-valuenow", String(step));
    p.progress.setAttribute("aria-label", `${step} of ${total} steps`);
    p.stepText.textContent = `${step.toLocaleString("en-US")} / ${total.toLocaleString("en-US")}`;
    const now = phase(run, step, total);
    p.speed.textContent = now && isNum(run.steps_per_sec) ? `${rate(run.steps_per_sec)}/s` : "—";
    p.eta.textContent = now === "training" ? duration(run.eta_seconds) : now ? `${now}…` : "—";
    p.eta.dataset.phase = now ?? "";
    p.acc.textContent = pct(run.test_metrics?.test_accuracy);
    p.cancel.hidden = terminal;
    p.cancel.disabled = terminal;
    p.resume.hidden = !RESUMABLE.has(status);
    p.del.hidden = !terminal;
    p.del.disabled = !terminal;
    p.select.checked = this.selected.has(run.id);
    row.tr.classList.toggle("selected", this.selected.has(run.id));
  }

  refreshEmpty() {
    const shown = [...this.rows.values()].filter((row) => !row.tr.hidden).length;
    this.empty.hidden = shown > 0;
    this.empty.textContent = this.rows.size
      ? this.filter.scope === Scope.OWN
        ? "No comparisons or single runs yet: start one from the form (the experiments' runs are behind the line above)."
        : "None of the runs named here is on this server any more."
      : "No runs yet — start a comparison from the form.";
    if (this.count) this.count.textContent = this.rows.size ? (shown === this.rows.size ? `${shown}` : `${shown} of ${this.rows.size}`) : "";
    // The group line and the picker follow the runs, once per frame.
    if (!this.groupsPending) {
      this.groupsPending = true;
      requestAnimationFrame(() => this.renderGroups());
    }
  }
}
