// One experiment, live: progress with an ETA, curves with bands, the factor plot, the
// heatmap (two varied fields) and the verdict table, all from the experiment's stream.
// Every update replaces the state; the charts redraw from it at the next free frame.

import { api } from "../api.js";
import { duration, isNum, pct, pp, pValue } from "../format.js";
import { ARM_ORDER, Arm } from "../arms.js";
import { Painter } from "../plot/frames.js";
import { ACTIVE, ExperimentStatus, RESUMABLE, Status } from "../status.js";
import { BandChart, FactorPlot, Heatmap, cellColour, cellName } from "./charts.js";
import { CellMeansPanel } from "./inside.js";
import { ExperimentStream } from "./stream.js";

// The progress line's counts of runs by status, in this order, each with its status's
// name as the word, but "done" for completed.
const PROGRESS_KEYS = [
  Status.COMPLETED, Status.RUNNING, Status.QUEUED, Status.DIVERGED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED,
].map((status) => [status, status === Status.COMPLETED ? "done" : status]);
// Counted even at 0: what is done, running and waiting.
const ALWAYS_COUNTED = new Set([Status.COMPLETED, Status.RUNNING, Status.QUEUED]);
// An experiment is under way while queued or running (its statuses share the runs' names).
const EXPERIMENT_ACTIVE = new Set([ExperimentStatus.QUEUED, ExperimentStatus.RUNNING]);
const VERDICT_WORDS = {
  bn_better: "BN better", bn_worse: "BN worse", no_difference: "no difference (within the margin)",
  inconclusive: "can't tell either way", not_enough_seeds: "too few seeds to ever tell",
};
// The claim's verdict, worded for someone who is not a statistician.
const CLAIM_WORDS = {
  supported: ["Supported", "the runs show what the claim says."],
  contradicted: ["Contradicted", "the runs show the opposite of what the claim says."],
  inconclusive: ["Inconclusive", "the runs neither show the claim nor rule it out: the difference could still be zero. More seeds may settle it."],
  not_enough_seeds: ["Not enough seeds", "with this few seeds no outcome could have passed the test, whatever the runs did. Add seeds to be able to tell."],
};
const CONTRAST_KINDS = {
  effect: "BN's effect", interaction: "difference in BN's effect", sensitivity: "sensitivity",
  cross_cell: "across cells", milestone: "time to a milestone", divergence: "divergence",
};
const RATE_WINDOW_MS = 60_000; // the ETA's speed: steps over the last minute
const EXPORT_REFRESH_MS = 2000; // the export (the seeds' curves): at most one load per interval

// A difference of accuracies: in percentage points, never in %.
const signed = (x) => pp(x);
/** A contrast's estimate in its unit (server/experiments/claims.py's `unit`). */
function inUnit(x, unit) {
  if (!isNum(x)) return "—";
  if (unit.startsWith("accuracy")) return signed(x);
  if (unit === "steps") return `${x >= 0 ? "+" : ""}${Math.round(x)} steps`;
  return pct(x, 0);
}
const interval = (low, high, f) => (isNum(low) && isNum(high) ? `${f(low)} to ${f(high)}` : "—");
const ratio = (x) => (isNum(x) ? `${x.toFixed(2)}×` : "—");

function td(text, attrs = {}) {
  const cell = document.createElement("td");
  for (const [k, v] of Object.entries(attrs)) cell.setAttribute(k, v);
  if (text instanceof Node) cell.append(text);
  else cell.textContent = text;
  return cell;
}

/** "97.12 % [96.80 to 97.44]", an interval on its own line. */
function meanCell(iv, format = pct, extra = "") {
  const cell = td("", { class: "num" });
  cell.append(`${iv.mean === null ? "—" : format(iv.mean)}${extra}`);
  if (iv.mean === null) return cell;
  const ci = document.createElement("span");
  ci.className = "ci";
  ci.textContent = interval(iv.ci_low, iv.ci_high, format);
  cell.append(ci);
  return cell;
}

/** The speed-up and its bootstrap interval, whose ends may be unbounded (null). */
function speedupCell(speedup) {
  const cell = meanCell({ mean: speedup.estimate, ci_low: null, ci_high: null }, ratio);
  const ci = cell.querySelector(".ci");
  if (ci && (isNum(speedup.ci_low) || isNum(speedup.ci_high))) {
    ci.textContent = `${isNum(speedup.ci_low) ? ratio(speedup.ci_low) : "0×"} to ${isNum(speedup.ci_high) ? ratio(speedup.ci_high) : "∞"}`;
  }
  return cell;
}

export class ExperimentView {
  /**
   * @param {HTMLElement} root  the view's section
   * @param {{openRuns: (runs: object[]) => void, notice: (text: string, kind?: string) => void}} host
   */
  constructor(root, host) {
    this.root = root;
    this.host = host;
    this.painter = new Painter();
    const $ = (id) => root.querySelector(`[data-testid=${id}]`);
    this.el = {
      title: $("exp-title"), status: $("exp-status"), hypothesis: $("exp-hypothesis"), progress: $("exp-progress"),
      bar: $("exp-bar"), table: $("verdict-table"), seeds: $("seed-toggle"), cancel: $("exp-cancel"),
      resume: $("exp-resume"), json: $("exp-export-json"), claim: $("exp-claim"),
      moreSeeds: $("exp-more-seeds"), moreSeedsN: $("exp-more-seeds-n"), addSeeds: $("exp-add-seeds"), csvRuns: $("exp-export-csv"),
      csvCurves: $("exp-export-curves"), heatmap: $("heatmap"), gone: $("exp-gone"), body: $("exp-body"),
    };
    this.charts = {
      acc: new BandChart($("exp-chart-acc"), this.painter, {
        metric: "val_acc", title: "Validation accuracy against step (mean and 95 % band)", yTitle: "accuracy", tickformat: ".1~%",
      }),
      loss: new BandChart($("exp-chart-loss"), this.painter, {
        metric: "val_loss", title: "Validation loss against step (mean and 95 % band)", yTitle: "cross-entropy",
      }),
      factor: new FactorPlot($("factor-plot"), this.painter),
      heatmap: new Heatmap(this.el.heatmap, this.painter),
    };
    this.inside = new CellMeansPanel($("exp-inside-panel"), this.painter, (text, kind) => host.notice(text, kind));
    this.el.seeds.addEventListener("change", () => this.loadExport());
    this.el.cancel.addEventListener("click", () => this.act(api.cancelExperiment, "cancel"));
    this.el.resume.addEventListener("click", () => this.act(api.resumeExperiment, "resume"));
    this.el.addSeeds.addEventListener("click", () =>
      this.act((id) => api.addSeeds(id, Number(this.el.moreSeedsN.value)), "add seeds to"));
    this.presets = [];
  }

  /** Shows experiment `id` (the same one again does nothing). */
  show(id) {
    if (this.id === id) return;
    this.close();
    this.id = id;
    this.experiment = null;
    this.samples = [];
    this.seedRuns = null;
    this.cellsKey = "";
    this.inside.reset(id); // another experiment's means: reopening loads this one's
    this.el.gone.hidden = true;
    this.el.body.hidden = true;
    this.el.title.textContent = `Experiment ${id}`;
    // Nothing of the experiment shown before stays: its hypothesis, its buttons, and the
    // exports only once this one is known to exist (a missing one's would answer 404).
    this.el.hypothesis.textContent = "";
    this.el.cancel.hidden = this.el.resume.hidden = this.el.moreSeeds.hidden = true;
    this.el.claim.hidden = true;
    this.showExports(false);
    this.el.status.textContent = "connecting…";
    this.el.status.className = "badge";
    this.el.json.href = api.experimentExportUrl(id, "json");
    this.el.csvRuns.href = api.experimentExportUrl(id, "csv", "runs");
    this.el.csvCurves.href = api.experimentExportUrl(id, "csv", "curves");
    this.stream = new ExperimentStream(id, {
      experiment: (experiment) => this.onExperiment(experiment),
      progress: (msg) => this.onProgress(msg),
      gone: () => this.onGone(),
    });
    this.stream.start();
  }

  close() {
    this.stream?.stop();
    this.stream = null;
    this.id = null;
  }

  showExports(shown) {
    for (const link of [this.el.json, this.el.csvRuns, this.el.csvCurves]) link.hidden = !shown;
  }

  onGone() {
    this.el.gone.hidden = false;
    this.el.body.hidden = true;
    this.el.hypothesis.textContent = "";
    this.el.cancel.hidden = this.el.resume.hidden = this.el.moreSeeds.hidden = true;
    this.showExports(false);
    this.el.status.textContent = "not found";
  }

  onExperiment(experiment) {
    this.experiment = experiment;
    this.el.body.hidden = false;
    this.showExports(true);
    this.renderHead();
    this.renderProgress(experiment.status, experiment.progress);
    // Runs starting change the progress only; the answer changes when one ends.
    const key = JSON.stringify([experiment.claim, experiment.cells]);
    if (key !== this.cellsKey) {
      this.cellsKey = key;
      this.renderClaim();
      this.renderTable();
      this.redraw();
      if (this.el.seeds.checked) this.loadExportSoon();
    }
    this.inside.onExperiment(experiment);
  }

  onProgress(msg) {
    if (!this.experiment) return;
    this.experiment = { ...this.experiment, status: msg.status, progress: msg.progress };
    this.renderProgress(msg.status, msg.progress);
  }

  redraw() {
    const state = { experiment: this.experiment, seeds: this.seedRuns };
    const twoFields = Object.keys(this.experiment.design.vary).length === 2;
    this.el.heatmap.hidden = !twoFields;
    for (const [name, chart] of Object.entries(this.charts)) if (name !== "heatmap" || twoFields) chart.update(state);
  }

  renderHead() {
    const { experiment } = this;
    this.el.title.textContent = experiment.label ? `${experiment.label}` : `Experiment ${experiment.id}`;
    this.el.status.textContent = experiment.status;
    this.el.status.className = `badge badge-${experiment.status}`;
    // A preset's design carries its name as the label; an edited copy may add to it.
    const preset = this.presets.find((p) => experiment.label === p.name || experiment.label?.startsWith(`${p.name} `));
    const vary = Object.entries(experiment.design.vary).map(([f, v]) => `${f} ∈ {${v.join(", ")}}`);
    const base = experiment.design.base;
    const design = [`${base.arch} · ${base.optimizer}${"learning_rate" in base ? ` ${base.learning_rate}` : ""} · ${base.steps} steps`,
      ...vary, `${experiment.design.seeds} seeds`].join(" · ");
    this.el.hypothesis.textContent = preset ? `${preset.hypothesis} (${design})` : design;
    const active = experiment.runs.some((r) => ACTIVE.has(r.status));
    this.el.cancel.hidden = !active;
    this.el.resume.hidden = active || !experiment.runs.some((r) => RESUMABLE.has(r.status));
    this.el.moreSeeds.hidden = EXPERIMENT_ACTIVE.has(experiment.status);
  }

  /** The experiment's headline: its claim's verdict, then each contrast's figures. */
  renderClaim() {
    const { claim } = this.experiment;
    const box = this.el.claim;
    box.hidden = !claim;
    if (!claim) {
      box.replaceChildren();
      return;
    }
    const [word, meaning] = CLAIM_WORDS[claim.verdict] ?? [claim.verdict, ""];
    box.dataset.verdict = claim.verdict;
    const head = document.createElement("p");
    head.className = "claim-head";
    const verdict = document.createElement("strong");
    verdict.className = `claim-verdict claim-${claim.verdict}`;
    verdict.dataset.testid = "claim-verdict";
    verdict.textContent = claim.provisional ? `${word} (provisional)` : word;
    const statement = document.createElement("span");
    statement.dataset.testid = "claim-statement";
    statement.textContent = ` ${claim.statement}`;
    head.append(verdict, statement);
    const explain = document.createElement("p");
    explain.className = "hint";
    explain.dataset.testid = "claim-meaning";
    explain.textContent = `${claim.provisional ? "Provisional: runs are still going, so this can change. " : ""}${meaning}${
      this.experiment.seeds_added_after_looking ? " Seeds were added after the first results were seen, so the p-values are optimistic." : ""}`;
    const list = document.createElement("ul");
    list.className = "claim-contrasts";
    for (const result of claim.contrasts) {
      const li = document.createElement("li");
      li.dataset.testid = "claim-contrast";
      const iv = result.interval;
      const range = isNum(iv.low) || isNum(iv.high)
        ? ` (${(iv.level * 100).toFixed(1)} % interval ${isNum(iv.low) ? inUnit(iv.low, result.unit) : "−∞"} to ${isNum(iv.high) ? inUnit(iv.high, result.unit) : "+∞"})`
        : "";
      const figures = document.createElement("span");
      figures.className = "num";
      figures.textContent = `${CONTRAST_KINDS[result.contrast.kind] ?? result.contrast.kind}: ${inUnit(result.estimate, result.unit)}${range} · p = ${pValue(result.p_value)} · after Holm ${pValue(result.p_adjusted)} · ${result.n_pairs} seeds`;
      const sentence = document.createElement("span");
      sentence.className = "muted small";
      sentence.textContent = ` ${result.sentence}`;
      li.append(figures, sentence);
      list.append(li);
    }
    box.replaceChildren(head, explain, list);
  }

  renderProgress(status, progress) {
    const now = Date.now();
    this.samples.push([now, progress.steps]);
    while (this.samples.length > 2 && now - this.samples[0][0] > RATE_WINDOW_MS) this.samples.shift();
    const counts = PROGRESS_KEYS.filter(([key]) => progress.runs[key] || ALWAYS_COUNTED.has(key))
      .map(([key, word]) => `${progress.runs[key] ?? 0} ${word}`);
    const total = Object.values(progress.runs).reduce((a, b) => a + b, 0);
    let eta = "";
    if (EXPERIMENT_ACTIVE.has(status) && isNum(progress.eta_seconds)) {
      // The server's, by the model the designer's estimate uses (the runs finished here).
      eta = ` · ETA ${duration(progress.eta_seconds)}`;
    } else if (EXPERIMENT_ACTIVE.has(status)) {
      // No run of this kind finished here yet: the steps trained over the last minute.
      const [t0, s0] = this.samples[0];
      const rate = now > t0 ? (progress.steps - s0) / ((now - t0) / 1000) : 0;
      eta = rate > 0 ? ` · ETA ${duration((progress.total_steps - progress.steps) / rate)}` : " · ETA estimating…";
    }
    this.el.progress.textContent = `${counts.join(" · ")} of ${total} runs${eta}`;
    this.el.bar.max = progress.total_steps || 1;
    this.el.bar.value = progress.steps;
    this.el.bar.textContent = `${Math.round((100 * progress.steps) / (progress.total_steps || 1))} %`;
    this.el.status.textContent = status;
    this.el.status.className = `badge badge-${status}`;
  }

  renderTable() {
    const body = this.el.table.querySelector("tbody");
    const rows = this.experiment.cells.flatMap((cell, index) => {
      const { [Arm.BN]: bn, [Arm.NO_BN]: noBn } = cell.arms;
      const effect = cell.effect;
      const tr = document.createElement("tr");
      tr.className = "verdict-row";
      tr.dataset.testid = "verdict-row";
      tr.dataset.verdict = effect.verdict;
      const name = document.createElement("span");
      name.className = "cell-name";
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.setProperty("--c", cellColour(index));
      name.append(swatch, cellName(cell.factors));
      const diverged = (arm) => (cell.arms[arm].n_diverged ? ` (${cell.arms[arm].n_diverged} diverged)` : "");
      tr.append(
        td(name),
        td(`${effect.n_pairs}`, { class: "num", title: `${bn.n_finished} + ${noBn.n_finished} of ${bn.n + noBn.n} runs finished` }),
        ...ARM_ORDER.map((arm) => meanCell(cell.arms[arm].test_accuracy, pct, diverged(arm))),
        meanCell(effect.difference, signed),
        td(pValue(effect.p_value), { class: "num", title: effect.test }),
        td(pValue(effect.p_adjusted), { class: "num", title: `Holm over ${effect.cells} cells`, "data-testid": "p-adjusted" }),
        effect.n_pairs && effect.speedup.estimate === null
          ? td("not reached", { class: "num muted", title: "an arm's median run never reached 98 % validation accuracy" })
          : speedupCell(effect.speedup),
        td(`${VERDICT_WORDS[effect.verdict] ?? effect.verdict}${effect.provisional ? " (provisional)" : ""}`, {
          class: `verdict verdict-${effect.verdict}`,
        }),
      );
      const open = document.createElement("button");
      open.type = "button";
      open.className = "btn small";
      open.textContent = "Open runs";
      open.setAttribute("aria-label", `Open the runs of ${cellName(cell.factors)} in the runs view`);
      open.dataset.testid = "open-cell-runs";
      open.addEventListener("click", () => this.openCell(cell));
      tr.append(td(open));
      // The verdict in words, under its figures, across the whole table.
      const sentence = document.createElement("tr");
      sentence.className = "sentence-row";
      const text = td(`${effect.sentence} (${effect.test} test)`, {
        colspan: "10", class: `verdict-${effect.verdict}`, "data-testid": "verdict-sentence",
      });
      sentence.append(text);
      for (const row of [tr, sentence]) {
        row.addEventListener("click", (ev) => {
          if (!ev.target.closest("button, a")) this.openCell(cell);
        });
      }
      return [tr, sentence];
    });
    body.replaceChildren(...rows);
  }

  /** The cell's runs, in today's run and comparison views. */
  openCell(cell) {
    const runs = this.experiment.runs.filter((r) =>
      Object.entries(cell.factors).every(([field, value]) => r.config[field] === value));
    this.host.openRuns(runs);
  }

  // ---- individual seeds: from the experiment's export (one request for every run, without
  // the points' diagnostics), loaded only while the toggle asks ----

  loadExportSoon() {
    if (this.exportTimer) return;
    this.exportTimer = setTimeout(() => {
      this.exportTimer = null;
      this.loadExport();
    }, EXPORT_REFRESH_MS);
  }

  async loadExport() {
    const seeds = this.el.seeds.checked;
    if (!seeds && this.seedRuns) {
      this.seedRuns = null;
      if (this.experiment) this.redraw();
    }
    if (!seeds) return;
    const id = this.id;
    try {
      const exported = await api.experimentExport(id);
      // Before the stream's first state there are no cells yet: that state loads again.
      const { experiment } = this;
      if (id !== this.id || !experiment || !this.el.seeds.checked) return;
      this.seedRuns = seedCurves(experiment, exported);
      this.redraw();
    } catch (err) {
      this.host.notice(`Could not load the experiment's runs: ${err.message}`, "error");
    }
  }

  async act(call, what) {
    try {
      await call(this.id);
    } catch (err) {
      this.host.notice(`Could not ${what} the experiment: ${err.message}`, "error");
    }
  }
}

/** cell index -> {bn: [run…], no_bn: [run…]}, each run {runId, seed, status, points}. */
function seedCurves(experiment, exported) {
  const cells = experiment.cells.map((c) => JSON.stringify(c.factors));
  const byRun = new Map();
  for (const row of exported.runs) {
    const index = cells.indexOf(JSON.stringify(row.factors));
    if (index < 0) continue;
    byRun.set(row.run_id, { index, arm: row.arm, run: { runId: row.run_id, seed: row.seed, status: row.status, points: [] } });
  }
  for (const point of exported.curves) byRun.get(point.run_id)?.run.points.push(point);
  const out = new Map();
  for (const { index, arm, run } of byRun.values()) {
    if (!out.has(index)) out.set(index, Object.fromEntries(ARM_ORDER.map((a) => [a, []])));
    out.get(index)[arm].push(run);
  }
  return out;
}
