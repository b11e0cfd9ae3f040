// The experiment's charts: curves with 95 % bands per arm, the factor plot and the
// BN − no-BN heatmap. Each chart is drawn from the latest state with one Plotly.react,
// and the painter draws at most one chart per animation frame: a burst of updates
// (200 runs ending) costs one draw per chart, never one per event.

/* global Plotly */

import { ARM_NAME, ARM_ORDER, Arm } from "../arms.js";
import { isNum, pValue, pp } from "../format.js";
import { colourAt, withAlpha } from "../plot/colour.js";
import { CONFIG, FONT, GRID, LEGEND, note } from "../plot/figure.js";
import { spreadByFactors } from "../plot/logaxis.js";
import { Status } from "../status.js";

// The factor plot keeps the curves' code, colour = cell: its arms are told apart by line
// (solid BN, dashed no-BN, as on the curves) and marker fill (filled BN, open no-BN); the
// lines and interval bars, which join or span cells, are a neutral grey.
const NEUTRAL = "#52606d";
const ARM_SYMBOL_SUFFIX = { [Arm.BN]: "", [Arm.NO_BN]: "-open" };
// With a second varied field, one line per value of it, told apart by marker shape.
const GROUP_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "pentagon", "star"];
const DASH = { [Arm.BN]: "solid", [Arm.NO_BN]: "dash" };
// Fields whose values are spread by factors: a log axis shows them evenly.
const LOG_FIELDS = new Set(["learning_rate", "init_scale"]);
const CHANCE = 0.1; // a diverged run's test accuracy in the statistics (ten classes)

/** A cell's colour (the palette's, in the experiment's cell order). */
export const cellColour = colourAt;

/** "learning_rate 0.05 · activation relu", or "every run" for a design without factors. */
export function cellName(factors) {
  const parts = Object.entries(factors).map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(" · ") : "every run";
}

/** Whether a varied field's values are best read on a log axis. */
export function logAxis(field, values) {
  if (!values.every((v) => isNum(v) && v > 0)) return false;
  return LOG_FIELDS.has(field) || spreadByFactors(values);
}

function baseLayout(title, extra = {}) {
  return {
    title: { text: title, font: { size: 13 }, x: 0, xanchor: "left" },
    font: FONT,
    margin: { l: 58, r: 12, t: 36, b: 44 },
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    // The Runs page's: below the axis (the plot area makes room for it, as the axes have
    // automargin), a few rows at most and scrolling past them, so many cells never cover
    // the curves.
    legend: LEGEND,
    hovermode: "closest",
    uirevision: "keep", // zoom and legend clicks survive every update
    ...extra,
  };
}

/**
 * A y range around `values` within [floor, ceiling]: an interval over two seeds can
 * reach far past 0 % or 100 %, and the axis should not follow it out there.
 */
function clampedRange(values, floor, ceiling = Infinity) {
  const finite = values.filter(isNum);
  if (!finite.length) return undefined;
  const low = Math.max(floor, Math.min(...finite));
  const high = Math.min(ceiling, Math.max(...finite));
  const pad = (high - low || Math.abs(high) || 1) * 0.05;
  return [Math.max(floor, low - pad), Math.min(ceiling, high + pad)];
}

class Chart {
  constructor(el, painter) {
    this.el = el;
    this.painter = painter;
    this.drawing = false;
  }

  /** Redraw from `state` at the next free animation frame. */
  update(state) {
    this.state = state;
    this.painter.request(this);
  }

  draw() {
    const { data, layout } = this.figure(this.state);
    return Plotly.react(this.el, data, layout, CONFIG);
  }
}

/**
 * Validation accuracy or loss against step: per cell and arm, the mean line over a
 * shaded 95 % band (one colour per cell; BN solid, no-BN dashed), and, when asked, each
 * seed as a thin line, a diverged seed marked with an x where its curve ends.
 */
export class BandChart extends Chart {
  constructor(el, painter, { metric, title, yTitle, tickformat }) {
    super(el, painter);
    Object.assign(this, { metric, title, yTitle, tickformat });
  }

  figure({ experiment, seeds }) {
    const data = [];
    experiment.cells.forEach((cell, index) => {
      const colour = cellColour(index);
      for (const arm of ARM_ORDER) {
        const summary = cell.arms[arm];
        const curve = summary.curve.filter((p) => isNum(p[this.metric].mean));
        const x = curve.map((p) => p.step);
        const mean = curve.map((p) => p[this.metric].mean);
        // An interval of one run is unknown: the band closes on the mean there.
        const high = curve.map((p) => p[this.metric].ci_high ?? p[this.metric].mean);
        const low = curve.map((p) => p[this.metric].ci_low ?? p[this.metric].mean);
        const name = `${cellName(cell.factors)} · ${ARM_NAME[arm]}`;
        const diverged = summary.n_diverged ? ` (${summary.n_diverged} diverged)` : "";
        data.push({
          type: "scatter", mode: "lines", x: [...x, ...[...x].reverse()], y: [...high, ...[...low].reverse()],
          fill: "toself", fillcolor: withAlpha(colour, arm === Arm.BN ? 0.18 : 0.1), line: { width: 0 },
          hoverinfo: "skip", showlegend: false, legendgroup: name,
          meta: { cell: index, arm, kind: "band" },
        });
        data.push({
          type: "scatter", mode: "lines", x, y: mean, name: `${name}${diverged}`, legendgroup: name,
          line: { color: colour, width: 2, dash: DASH[arm] },
          hovertemplate: `${name}<br>mean %{y:${this.tickformat ? ".2%" : ".4f"}} at step %{x}<extra></extra>`,
          meta: { cell: index, arm, kind: "mean" },
        });
        for (const run of seeds?.get(index)?.[arm] ?? []) data.push(...this.seedTraces(run, colour, arm, name));
      }
    });
    const empty = !experiment.cells.some((c) => ARM_ORDER.some((a) => c.arms[a].curve.length));
    const accuracy = this.metric === "val_acc";
    // Before any data Plotly's own range (-1..4) would read -100 %..400 %.
    const range = clampedRange(data.flatMap((t) => t.y), 0, accuracy ? 1 : Infinity) ?? (accuracy ? [0, 1] : undefined);
    const layout = baseLayout(this.title, {
      xaxis: { gridcolor: GRID, zeroline: false, hoverformat: "d", automargin: true },
      yaxis: { title: { text: this.yTitle }, gridcolor: GRID, tickformat: this.tickformat ?? "", range, automargin: true },
      annotations: empty ? [note("no evaluations yet: the curves appear as runs report")] : [],
    });
    return { data, layout };
  }

  seedTraces(run, colour, arm, name) {
    const points = run.points.filter((p) => isNum(p[this.metric]));
    const x = points.map((p) => p.step);
    const y = points.map((p) => p[this.metric]);
    const meta = { kind: "seed", arm, runId: run.runId };
    const traces = [{
      type: "scatter", mode: "lines", x, y, legendgroup: name, showlegend: false, opacity: 0.55,
      line: { color: colour, width: 0.8, dash: DASH[arm] }, meta,
      hovertemplate: `${name} · seed ${run.seed}<br>%{y} at step %{x}<extra></extra>`,
    }];
    if (run.status === Status.DIVERGED && x.length) {
      traces.push({
        type: "scatter", mode: "markers", x: [x.at(-1)], y: [y.at(-1)], legendgroup: name, showlegend: false,
        marker: { symbol: "x", size: 9, color: colour }, meta: { ...meta, kind: Status.DIVERGED },
        hovertemplate: `${name} · seed ${run.seed} diverged after step %{x}<extra></extra>`,
      });
    }
    return traces;
  }
}

/**
 * Final test accuracy of each arm (mean with its 95 % interval) against the first varied
 * field; with a second one, one line per value of it. Arms with diverged runs are marked
 * at chance, where the statistics count them, with how many.
 */
export class FactorPlot extends Chart {
  figure({ experiment }) {
    const fields = Object.keys(experiment.design.vary);
    const [field, other] = fields;
    const values = field ? experiment.design.vary[field] : ["every run"];
    const log = field ? logAxis(field, values) : false;
    const numeric = field && values.every(isNum);
    const groups = other ? experiment.design.vary[other] : [null];
    const data = [];
    groups.forEach((group, g) => {
      const cells = experiment.cells.filter((c) => !other || c.factors[other] === group);
      const colours = cells.map((c) => cellColour(experiment.cells.indexOf(c)));
      const symbol = GROUP_SYMBOLS[g % GROUP_SYMBOLS.length];
      for (const arm of ARM_ORDER) {
        const armOffset = arm === Arm.BN ? -1 : 1;
        const x = cells.map((c) => this.place(field ? c.factors[field] : "every run", { log, numeric, values, armOffset }));
        const acc = cells.map((c) => c.arms[arm].test_accuracy);
        const name = other ? `${other} ${group} · ${ARM_NAME[arm]}` : ARM_NAME[arm];
        // The legend's key is the arm's line and marker in grey: a cell's colour there
        // would read as that cell alone.
        data.push({
          type: "scatter", mode: "lines+markers", x: [null], y: [null], name, legendgroup: name, hoverinfo: "skip",
          line: { color: NEUTRAL, width: 1.5, dash: DASH[arm] },
          marker: { color: NEUTRAL, size: 9, symbol: symbol + ARM_SYMBOL_SUFFIX[arm], line: { width: 2, color: NEUTRAL } },
          meta: { arm, group, kind: "key" },
        });
        data.push({
          type: "scatter", mode: "lines+markers", x, y: acc.map((a) => a.mean), name, legendgroup: name, showlegend: false,
          line: { color: NEUTRAL, width: 1.5, dash: DASH[arm] },
          marker: { color: colours, size: 9, symbol: symbol + ARM_SYMBOL_SUFFIX[arm], line: { width: 2, color: colours } },
          error_y: {
            type: "data", symmetric: false, color: NEUTRAL, thickness: 1.2, width: 4,
            array: acc.map((a) => (isNum(a.ci_high) ? a.ci_high - a.mean : 0)),
            arrayminus: acc.map((a) => (isNum(a.ci_low) ? a.mean - a.ci_low : 0)),
          },
          hovertemplate: `${name}<br>${field ?? ""} %{x}: %{y:.2%}<extra></extra>`,
          meta: { arm, group, kind: "arm" },
        });
        const diverged = cells.map((c, i) => [c, x[i], colours[i]]).filter(([c]) => c.arms[arm].n_diverged);
        if (diverged.length) {
          data.push({
            type: "scatter", mode: "markers+text", x: diverged.map(([, xi]) => xi), y: diverged.map(() => CHANCE),
            text: diverged.map(([c]) => `${c.arms[arm].n_diverged}/${c.arms[arm].n} diverged`),
            textposition: "top center", textfont: { size: 10, color: NEUTRAL },
            marker: { symbol: "x", size: 11, color: diverged.map(([, , colour]) => colour) }, name: `${name}: diverged runs (at chance)`,
            legendgroup: name, meta: { arm, group, kind: Status.DIVERGED },
            hovertemplate: "%{text}<extra></extra>",
          });
        }
      }
    });
    const layout = baseLayout(field ? `Final test accuracy against ${field}` : "Final test accuracy", {
      xaxis: {
        gridcolor: GRID, automargin: true, type: log ? "log" : numeric ? "linear" : "category",
        ...(numeric ? { tickvals: values, ticktext: values.map(String) } : {}),
      },
      yaxis: {
        automargin: true, title: { text: "test accuracy" }, gridcolor: GRID, tickformat: ".1~%",
        // No finished run yet: the whole 0–100 % (Plotly's empty axis would read 0–5 %).
        range: clampedRange(data.flatMap((t) => t.y.flatMap((y, i) => (isNum(y) ? [
          y, y + (t.error_y?.array[i] ?? 0), y - (t.error_y?.arrayminus[i] ?? 0)] : []))), 0, 1) ?? [0, 1],
      },
      annotations: experiment.cells.every((c) => ARM_ORDER.every((a) => !c.arms[a].n_finished))
        ? [note("no finished runs yet")] : [],
    });
    return { data, layout };
  }

  /** The x of a cell's marker: BN a little left of no-BN so the interval bars never overlap. */
  place(value, { log, numeric, values, armOffset }) {
    if (!numeric) return String(value);
    if (log) return value * 1.04 ** armOffset;
    const span = Math.max(...values) - Math.min(...values) || 1;
    return value + armOffset * 0.01 * span;
  }
}

/** With two varied fields: BN − no-BN test accuracy per cell, annotated with its value. */
export class Heatmap extends Chart {
  figure({ experiment }) {
    const [field, other] = Object.keys(experiment.design.vary);
    const columns = experiment.design.vary[field].map(String);
    const rows = experiment.design.vary[other].map(String);
    const z = rows.map(() => columns.map(() => null));
    const text = rows.map(() => columns.map(() => "not finished"));
    for (const cell of experiment.cells) {
      const r = rows.indexOf(String(cell.factors[other]));
      const c = columns.indexOf(String(cell.factors[field]));
      const d = cell.effect.difference.mean;
      if (!isNum(d)) continue;
      z[r][c] = d * 100;
      const p = isNum(cell.effect.p_value) ? `p ${pValue(cell.effect.p_value)}` : "";
      text[r][c] = `${pp(d)}<br>${p}`;
    }
    const reach = Math.max(0.01, ...z.flat().filter(isNum).map(Math.abs));
    const data = [{
      type: "heatmap", x: columns, y: rows, z, text, texttemplate: "%{text}", textfont: { size: 11 },
      // Purple–orange: a diverging scale read the same with the common deficiencies.
      colorscale: [[0, "#b35806"], [0.5, "#f7f7f7"], [1, "#542788"]], zmin: -reach, zmax: reach,
      colorbar: { title: { text: "BN − no BN<br>(% points)", side: "right" }, thickness: 12 },
      hovertemplate: `${field} %{x}, ${other} %{y}<br>%{text}<extra></extra>`,
      meta: { kind: "heatmap" },
    }];
    const layout = baseLayout("BN − no-BN test accuracy per cell (paired by seed)", {
      xaxis: { title: { text: field }, type: "category" },
      yaxis: { title: { text: other }, type: "category" },
    });
    return { data, layout };
  }
}
