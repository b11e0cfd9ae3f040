// "Inside the network" (issue #17): the per-layer diagnostics each evaluation records
// (a point's `diagnostics`, docs/api.md), for the plotted runs, one layer at a time.
//
// Same conventions as the curves: one colour per comparison, BN solid, no-BN dashed,
// and in the distribution charts, as in the probe's, runs without BN on the left. Points reach the panel as they reach the other
// charts, but are drawn once per animation frame: everything that arrived since the last
// frame goes into one Plotly.extendTraces per chart (a burst of points after a reconnect
// is one update, not one per point). A full Plotly.react happens only when the plotted
// runs, the layer or a display option change.

/* global Plotly */

import { withAlpha } from "../plot/colour.js";
import { CONFIG } from "../plot/figure.js";
import { PointBatch } from "../plot/frames.js";
import { TICK_KEYS, logTicks } from "../plot/logaxis.js";
import { Status } from "../status.js";
import { LiveChart, runName, uidOf } from "./charts.js";

// More plotted runs than this: the "Recorded" line counts them instead of naming each.
const NAMED_RUNS = 4;

const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const escapeHtml = (text) => text.replace(/</g, "&lt;");

/** The named layer's diagnostics in a point (undefined: not recorded, or no such layer). */
const layerOf = (p, name) => p.diagnostics?.layers?.find((l) => l.name === name);

/** Counts as fractions of the values, so a column's colours read the same at every step. */
function fractions(counts) {
  if (!Array.isArray(counts)) return null;
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((c) => (total > 0 ? c / total : null));
}

/** Why a plot area with these runs has nothing to draw, or null when it has something. */
function whyEmpty(runs, getPoints, value, { none, fullOnly, layer, missing }) {
  if (!runs.length) return none;
  const points = runs.flatMap((r) => getPoints(r.id));
  if (points.some((p) => value(p) !== null)) return null;
  if (!points.length) {
    // An experiment's arm whose runs all evaluated without diagnostics has no mean points.
    if (runs.every((r) => r.notRecorded)) return "not recorded:<br>diagnostics were off, or the runs predate them";
    if (runs.some((r) => r.status === Status.RUNNING)) return "starting…<br>the first evaluation is on its way";
    if (runs.some((r) => r.status === Status.QUEUED)) return "queued:<br>waiting for a free worker";
    return "no evaluations:<br>the run ended before its first one";
  }
  const recorded = points.filter((p) => p.diagnostics);
  if (!recorded.length) return "not recorded:<br>diagnostics were off, or the run predates them";
  if (fullOnly && !recorded.some((p) => p.diagnostics.level === "full")) {
    return "not recorded:<br>only runs with diagnostics = full measure this";
  }
  if (fullOnly && !recorded.some((p) => p.diagnostics.landscape || layerOf(p, fullOnly)?.ics_distance != null)) {
    return "not sampled yet";
  }
  // The layer is there but has no such value (the seed CNN has no BN on its dense layer).
  if (missing && recorded.some((p) => layerOf(p, layer))) return missing;
  return "no values for this layer<br>(or none finite: the run diverged)";
}

/**
 * Plot areas side by side, each for the runs with BN, without, or both; each run draws its
 * series (from `series(run)`) into every area it belongs to. `layer()` is the picked layer.
 */
class LayerChart extends LiveChart {
  constructor(el, getPoints, layer, panels) {
    super(el, getPoints);
    this.layer = layer;
    this.panels = panels.map((panel, i) => {
      const gap = 0.06;
      const width = (1 - gap * (panels.length - 1)) / panels.length;
      const start = i * (width + gap);
      const n = i === 0 ? "" : String(i + 1);
      return { ...panel, domain: [start, start + width], centre: start + width / 2, x: `x${n}`, y: `y${n}`, n };
    });
  }

  runsOf(panel, runs = this.runs) {
    return runs.filter((r) => panel.bn === undefined || r.bn === panel.bn);
  }

  tracesFor(run) {
    const specs = [];
    const label = escapeHtml(run.label);
    const dash = run.bn ? "solid" : "dash";
    this.panels.forEach((panel, i) => {
      if (!this.runsOf(panel, [run]).length) return;
      for (const s of panel.series(run)) {
        // A log axis cannot show zero (a gradient that is exactly 0): a gap, not a cliff.
        const value = panel.log
          ? (p) => ((v) => (v > 0 ? v : null))(s.value(p, this.layer()))
          : (p) => s.value(p, this.layer());
        const common = {
          xaxis: panel.x, yaxis: panel.y, legendgroup: run.id, showlegend: false,
          hovertemplate: `${s.hover ?? "%{y:.4g}"}<extra>${label}</extra>`,
        };
        const trace = s.heat
          ? {
              ...common, type: "heatmap", transpose: true, y: [], colorscale: s.colorscale,
              showscale: false, zmin: 0, hoverongaps: false,
              hovertemplate: `at %{x}: %{z:.1%} of the values near %{y:.3g}<extra>${label}</extra>`,
            }
          : {
              ...common, type: "scatter", mode: s.mode ?? "lines", connectgaps: Boolean(s.connect),
              name: s.name ?? runName(run), line: { color: s.faint ? withAlpha(run.colour, 0.75) : run.colour, width: s.width ?? 2, dash: s.dash ?? dash },
              marker: { size: 4, color: run.colour }, ...(s.trace ?? {}),
            };
        if (s.named) Object.assign(trace, { name: runName(run), showlegend: !specs.some((x) => x.named) });
        specs.push({ key: `${run.id}|${i}|${s.kind}`, kind: s.kind, named: s.named, heat: s.heat, value, edges: s.edges, trace });
      }
    });
    return specs;
  }

  /** A heatmap's columns are rows of z (transposed): one histogram per evaluation. */
  columns(spec, points) {
    if (!spec.heat) return super.columns(spec, points);
    const shown = points.filter((p) => spec.value(p) !== null);
    return { x: shown.map((p) => this.x(p)), z: shown.map((p) => fractions(spec.value(p))) };
  }

  /** The bin edges of a heatmap's run and layer (fixed for the run), once a point has them. */
  edgesOf(spec) {
    for (const p of this.getPoints(spec.runId)) {
      const edges = spec.edges(p, this.layer());
      if (edges) return edges;
    }
    return null;
  }

  redraw() {
    this.drawn = true;
    this.specs = [];
    const traces = [];
    for (const run of this.runs) {
      const points = this.getPoints(run.id);
      for (const spec of this.tracesFor(run)) {
        spec.runId = run.id;
        const trace = { ...spec.trace, uid: uidOf(spec.key), meta: { runId: run.id, kind: spec.kind }, ...this.columns(spec, points) };
        if (spec.heat) trace.y = this.edgesOf(spec) ?? [];
        spec.hasEdges = trace.y.length > 0;
        traces.push(trace);
        this.specs.push(spec);
      }
    }
    traces.push(...this.frameTraces());
    const layout = this.fullLayout();
    return this.enqueue(() => Plotly.react(this.el, traces, layout, CONFIG));
  }

  /** Everything that arrived since the last frame, by run: one extendTraces for the chart. */
  appendBatch(batch) {
    const indices = [];
    const columns = {};
    const edges = [];
    this.specs.forEach((spec, i) => {
      const points = batch.get(spec.runId);
      if (!points?.length) return;
      const cols = this.columns(spec, points);
      if (!cols.x.length) return;
      indices.push(i);
      for (const [k, v] of Object.entries(cols)) {
        columns[k] ??= [];
        columns[k].push(v);
      }
      if (spec.heat && !spec.hasEdges) {
        // The first histogram of the run: its bins (a heatmap drawn before had none).
        const found = this.edgesOf(spec);
        if (found) {
          spec.hasEdges = true;
          edges.push([i, found]);
        }
      }
    });
    if (!indices.length) return this.queue;
    for (const [i, found] of edges) this.enqueue(() => Plotly.restyle(this.el, { y: [found] }, [i]));
    this.enqueue(() => Plotly.extendTraces(this.el, columns, indices));
    return this.redecorate();
  }

  append() {
    // Points come through InsidePanel.flush (appendBatch), once per animation frame.
    return this.queue;
  }

  /** One empty trace per plot area, so each always exists (see ProbeChart.frameTraces). */
  frameTraces() {
    return this.panels.map((panel) => ({
      xaxis: panel.x, yaxis: panel.y, type: "scatter", mode: "lines", x: [], y: [], showlegend: false,
      hoverinfo: "skip", uid: `frame-${panel.x}`, meta: { kind: "frame" },
    }));
  }

  empties() {
    return this.panels.flatMap((panel) => {
      const runs = this.runsOf(panel);
      const series = runs.length ? panel.series(runs[0]) : [];
      const values = (p) => series.map((s) => s.value(p, this.layer())).filter((v) => v != null);
      // Something to draw: a finite number (above 0 on a log axis) or a histogram.
      const value = (p) => values(p).find((v) => !panel.log || v > 0) ?? null;
      const none = panel.bn === undefined ? "no runs selected" : `no run ${panel.bn ? "with" : "without"} BN selected`;
      let why = whyEmpty(runs, this.getPoints, value, {
        none, fullOnly: panel.fullOnly ? this.layer() : null, layer: this.layer(), missing: panel.missing,
      });
      const zeros = runs.some((r) => this.getPoints(r.id).some((p) => values(p).includes(0)));
      if (why && panel.log && zeros) why = panel.zero ?? "0 throughout";
      return why ? [{ why, centre: panel.centre, axes: [`${panel.x.replace("x", "xaxis")}`, `${panel.y.replace("y", "yaxis")}`] }] : [];
    });
  }

  /** The log axes' ticks follow their range as points arrive (see logTicks). */
  decorations(layout) {
    const update = super.decorations(layout);
    for (const panel of this.panels.filter((p) => p.log)) {
      const axis = layout[`yaxis${panel.n}`];
      for (const key of TICK_KEYS) update[`yaxis${panel.n}.${key}`] = axis[key];
    }
    // The histograms' ranges widen as evaluations arrive.
    for (const panel of this.panels.filter((p) => p.heat)) {
      const { range } = layout[`yaxis${panel.n}`];
      if (range) update[`yaxis${panel.n}.range`] = range;
    }
    return update;
  }

  /** [min, max] of a log panel's values drawn now ([1, 1] when it has none). */
  extent(panel) {
    const values = this.runsOf(panel).flatMap((run) => {
      const series = panel.series(run);
      return this.getPoints(run.id).flatMap((p) => series.map((s) => s.value(p, this.layer())));
    }).filter((v) => typeof v === "number" && v > 0);
    return values.length ? [Math.min(...values), Math.max(...values)] : [1, 1];
  }

  /**
   * The picked layer has no BN in the runs with BN (the seed CNN's dense layer): they have
   * recorded it, without a "before BN" distribution. Undecided (false) until they record.
   */
  layerWithoutBn() {
    const layer = this.layer();
    const seen = this.runs.filter((r) => r.bn).flatMap((r) => this.getPoints(r.id)).map((p) => layerOf(p, layer)).filter(Boolean);
    return seen.length > 0 && seen.every((l) => !l.pre_bn);
  }

  /**
   * A histogram panel's value range: the 1st to 99th percentile of every evaluation's
   * histogram, widest over time (so the columns compare), one bin of margin. The bins span
   * the layer's values at initialisation, often far wider than where they end up.
   */
  heatRange(panel) {
    let low = Infinity;
    let high = -Infinity;
    let bin = 0;
    for (const run of this.runsOf(panel)) {
      for (const s of panel.series(run)) {
        for (const p of this.getPoints(run.id)) {
          const counts = s.value(p, this.layer());
          const edges = s.edges?.(p, this.layer());
          if (!counts || !edges) continue;
          const total = counts.reduce((a, b) => a + b, 0);
          if (!(total > 0)) continue;
          let sum = 0;
          let first = -1;
          let last = -1;
          counts.forEach((c, i) => {
            sum += c;
            if (first < 0 && sum > 0.01 * total) first = i;
            if (last < 0 && sum >= 0.99 * total) last = i;
          });
          bin = Math.max(bin, edges[1] - edges[0]);
          low = Math.min(low, edges[first]);
          high = Math.max(high, edges[last + 1]);
        }
      }
    }
    return Number.isFinite(low) && Number.isFinite(high) ? [low - bin, high + bin] : null;
  }

  layout() {
    const bare = this.layerWithoutBn();
    const layout = {
      ...this.baseLayout(),
      margin: { l: 58, r: 14, t: 30, b: 40 },
      showlegend: this.panels.some((p) => !p.heat),
      annotations: this.panels.map((panel) => ({
        text: bare && panel.noBnTitle ? panel.noBnTitle : panel.title, x: panel.centre, y: 1.02, xref: "paper", yref: "paper", xanchor: "center",
        yanchor: "bottom", showarrow: false, font: { size: 12.5 },
      })),
    };
    for (const panel of this.panels) {
      const range = panel.heat ? this.heatRange(panel) : null;
      layout[`xaxis${panel.n}`] = this.axis({
        domain: panel.domain, anchor: panel.y, title: { text: this.xTitle() }, uirevision: this.opts.xMode,
        ...(panel.heat ? {} : { rangemode: "tozero" }),
      });
      layout[`yaxis${panel.n}`] = this.axis({
        anchor: panel.x, title: { text: panel.yTitle ?? "" }, type: panel.log ? "log" : "linear",
        ...(panel.log ? logTicks(...this.extent(panel)) : {}),
        ...(range ? { range, autorange: false } : {}),
        ...(panel.yaxis ?? {}),
      });
    }
    return layout;
  }
}

// ---- what each chart draws ----------------------------------------------------------

/** p15–p85 band and median of one of a layer's distributions ("pre_bn" or "pre_activation"). */
function band(which) {
  const at = (key) => (p, layer) => finite(layerOf(p, layer)?.[which]?.[key]);
  return (run) => [
    { kind: `${which}-p15`, value: at("p15"), faint: true, width: 1, hover: "p15 %{y:.3f}" },
    {
      kind: `${which}-p85`, value: at("p85"), faint: true, width: 1, hover: "p85 %{y:.3f}",
      trace: { fill: "tonexty", fillcolor: withAlpha(run.colour, 0.13) },
    },
    { kind: `${which}-p50`, value: at("p50"), named: true, width: 2.4, hover: "median %{y:.3f}" },
  ];
}

function heat(which) {
  // White (no values) to the comparison's colour (the most).
  return (run) => [
    {
      kind: `${which}-heat`, heat: true, colorscale: [[0, "#ffffff"], [1, run.colour]],
      value: (p, layer) => layerOf(p, layer)?.[which]?.counts ?? null,
      edges: (p, layer) => layerOf(p, layer)?.[which]?.edges ?? null,
    },
  ];
}

const layerValue = (key) => (p, layer) => finite(layerOf(p, layer)?.[key]);
const line = (key, hover) => () => [{ kind: key, value: layerValue(key), named: true, hover }];
const landscape = (key, hover) => () => [
  // Only sampled evaluations probe the landscape: the line joins the samples.
  { kind: key, value: (p) => finite(p.diagnostics?.landscape?.[key]), named: true, hover, mode: "lines+markers", connect: true },
];

const CHARTS = [
  {
    name: "bands",
    title: "Distributions over training",
    caption:
      "15th–85th percentile band and median over the validation set. Look at how far the input " +
      "to the nonlinearity moves and spreads as training goes on, without BN and after BN: " +
      "BN's claim is that it moves less. On a layer without BN, both runs show the raw input.",
    panels: [
      { title: "Without BN: input to the nonlinearity", bn: false, series: band("pre_activation") },
      { title: "With BN: before BN", noBnTitle: "With BN: no BN on this layer", bn: true, missing: "no BN on this layer", series: band("pre_bn") },
      {
        title: "With BN: after BN (input to the nonlinearity)",
        noBnTitle: "With BN: nonlinearity's input (no BN here)", bn: true, series: band("pre_activation"),
      },
    ],
  },
  {
    name: "heatmap",
    title: "Histogram over time",
    caption:
      "Each column is one evaluation's histogram (darker: more of the values) for the first " +
      "BN and no-BN run plotted, over the range the values took (their middle 98 %, every " +
      "evaluation): look for mass piling up at the extremes, where a sigmoid saturates.",
    pair: true,
    panels: [
      { title: "Without BN: input to the nonlinearity", bn: false, heat: true, series: heat("pre_activation"), yTitle: "value" },
      { title: "With BN: before BN", noBnTitle: "With BN: no BN on this layer", bn: true, heat: true, missing: "no BN on this layer", series: heat("pre_bn") },
      {
        title: "With BN: after BN", noBnTitle: "With BN: nonlinearity's input (no BN here)",
        bn: true, heat: true, series: heat("pre_activation"),
      },
    ],
  },
  {
    name: "norms",
    title: "Gradient, weights and effective step",
    caption:
      "BN makes a layer blind to the scale of its weights, so growing weights shrink its " +
      "effective step, the relative change ‖ΔW‖/‖W‖ of the update the optimizer would make now " +
      "(its accumulator, momentum or moments included): compare how fast it decays with and without BN.",
    panels: [
      { title: "‖dL/dW‖ on a training batch", log: true, series: line("grad_norm", "‖g‖ %{y:.3g}") },
      { title: "‖W‖", series: line("weight_norm", "‖W‖ %{y:.4g}") },
      { title: "effective step", log: true, series: line("effective_step", "step %{y:.3g}") },
    ],
  },
  {
    name: "bn",
    title: "BN's train/inference gap",
    caption:
      "Inference uses BN's moving averages, training the batch's own statistics: a growing " +
      "distance between the two, or a validation accuracy that differs between them, means the averages lag the network. " +
      "Both accuracies are on the same first 8 validation batches of the training batch size (at most 8 × batch size images).",
    panels: [
      { title: "distance: batch ↔ moving statistics", bn: true, missing: "no BN on this layer", series: line("bn_gap", "gap %{y:.3g}") },
      {
        title: "validation accuracy (whole network)", bn: true, yaxis: { tickformat: ".0%" },
        // Each line in the legend: which statistics is which is the point of this plot.
        series: (run) => [
          { kind: "val_acc_moving_stats", value: (p) => finite(p.diagnostics?.val_acc_moving_stats), hover: "moving stats %{y:.2%}", trace: { name: `${runName(run)}: moving statistics`, showlegend: true } },
          { kind: "val_acc_batch_stats", value: (p) => finite(p.diagnostics?.val_acc_batch_stats), dash: "dot", hover: "batch stats %{y:.2%}", trace: { name: `${runName(run)}: batch statistics`, showlegend: true } },
        ],
      },
    ],
  },
  {
    name: "ics",
    title: "Internal covariate shift (diagnostics = full)",
    caption:
      "Santurkar et al.'s measure: how much the layer's gradient changes when only the layers " +
      "below it have updated; if BN reduced this shift, its distance would be lower and its cosine nearer 1.",
    panels: [
      { title: "‖G − G′‖₂", log: true, fullOnly: true, zero: "0 throughout:<br>no layer below this one shifts it", series: () => [{ kind: "ics_distance", value: layerValue("ics_distance"), named: true, hover: "%{y:.3g}", mode: "lines+markers", connect: true }] },
      { title: "cos(G, G′)", fullOnly: true, series: () => [{ kind: "ics_cosine", value: layerValue("ics_cosine"), named: true, hover: "%{y:.3f}", mode: "lines+markers", connect: true }] },
    ],
  },
  {
    name: "smoothness",
    title: "Loss landscape along the gradient (diagnostics = full; whole network)",
    caption:
      "Steps of ½× to 4× the learning rate along the gradient: a smaller loss range, gradient " +
      "change and β-smoothness mean a smoother landscape and more predictive gradients, Santurkar et al.'s account of BN.",
    panels: [
      { title: "loss range", log: true, fullOnly: true, series: landscape("loss_range", "%{y:.3g}") },
      { title: "gradient predictiveness", log: true, fullOnly: true, series: landscape("grad_predictiveness", "%{y:.3g}") },
      { title: "β-smoothness", log: true, fullOnly: true, series: landscape("beta_smoothness", "%{y:.3g}") },
    ],
  },
];

/**
 * The panel: a layer picker, a line on what was recorded, and the charts with a caption
 * each. Same interface as a chart for main.js: setRuns, append, redraw and `opts`.
 * `testid` prefixes its elements' data-testid (a second panel lives in the experiment
 * view); `captions` replaces a chart's caption by its name.
 */
export class InsidePanel {
  constructor(root, getPoints, { testid = "inside", captions = {} } = {}) {
    this.root = root;
    this.getPoints = getPoints;
    this.runs = [];
    this.layers = []; // every layer name seen, in network order
    this.chosen = null;
    this.batch = new PointBatch((batch) => this.drawBatch(batch)); // drawn once per frame
    this.opts = { xMode: "step" };
    this.select = root.querySelector(`[data-testid=${testid}-layer]`);
    this.status = root.querySelector(`[data-testid=${testid}-status]`);
    this.select.addEventListener("change", () => this.pick(this.select.value));
    const grid = root.querySelector(`[data-testid=${testid}-charts]`);
    this.charts = CHARTS.map((spec) => {
      const figure = document.createElement("figure");
      figure.className = "inside-chart";
      const el = Object.assign(document.createElement("div"), { className: "chart chart-inside" });
      el.dataset.testid = `${testid}-${spec.name}`;
      const caption = document.createElement("figcaption");
      const title = Object.assign(document.createElement("strong"), { textContent: `${spec.title}. ` });
      caption.append(title, captions[spec.name] ?? spec.caption);
      caption.className = "hint muted";
      // A chart with nothing recorded to show (diagnostics off; or only runs with full
      // diagnostics fill it and none has them) is one line instead: its title and why.
      const collapsed = Object.assign(document.createElement("p"), {
        className: "hint muted inside-collapsed",
        hidden: true,
      });
      collapsed.dataset.testid = `${testid}-${spec.name}-collapsed`;
      figure.append(caption, collapsed, el);
      grid.append(figure);
      const chart = new LayerChart(el, getPoints, () => this.layer(), spec.panels);
      chart.pair = Boolean(spec.pair);
      chart.fullOnly = spec.panels.every((p) => p.fullOnly);
      chart.figure = figure;
      chart.caption = caption;
      chart.collapsed = collapsed;
      chart.title = spec.title;
      return chart;
    });
  }

  layer() {
    return this.chosen ?? this.layers[0] ?? null;
  }

  /** The picker's choice: its points are here already (the experiment's panel loads them). */
  pick(layer) {
    this.chosen = layer;
    this.redraw();
  }

  setRuns(runs) {
    this.flush();
    this.runs = runs;
    // The picker offers the plotted runs' layers: start over (a deselected CNN's conv
    // layers go), and keep the picked layer while a plotted run has it.
    const chosen = this.chosen;
    this.layers = [];
    this.chosen = null;
    this.learn(runs.map((r) => this.getPoints(r.id)), true);
    if (this.layers.includes(chosen)) {
      this.chosen = chosen;
      this.select.value = chosen;
    }
    this.render();
    for (const chart of this.charts) this.show(chart, chart.pair ? this.pair() : runs);
  }

  /** Hands a chart its runs; it redraws at once if they changed. */
  show(chart, runs) {
    chart.setRuns(runs);
  }

  /** Redraws a chart (at once here; the experiment's panel waits for a free frame). */
  paint(chart) {
    chart.redraw();
  }

  /** The heatmaps' runs: the first plotted run without BN and the first with. */
  pair() {
    return [this.runs.find((r) => !r.bn), this.runs.find((r) => r.bn)].filter(Boolean);
  }

  append(runId, points) {
    if (!this.runs.some((r) => r.id === runId)) return;
    this.batch.add(runId, points);
  }

  /** Draws the points waiting for the next frame now (before a redraw, which reads them). */
  flush() {
    this.batch.flush();
  }

  drawBatch(batch) {
    // The first diagnostics of all may pick the default layer: the traces need no redraw,
    // as they read the layer when a point is drawn and had nothing to show for any before.
    this.learn(batch.values());
    this.render();
    for (const chart of this.charts) chart.appendBatch(batch);
  }

  redraw() {
    this.flush();
    for (const chart of this.charts) {
      chart.opts.xMode = this.opts.xMode;
      this.paint(chart);
    }
  }

  /** Adds the layers of these points (lists of points) to the picker, in network order. */
  learn(pointLists, rebuilt = false) {
    let added = rebuilt;
    for (const points of pointLists) {
      for (const p of points) {
        for (const [i, layer] of (p.diagnostics?.layers ?? []).entries()) {
          if (this.layers.includes(layer.name)) continue;
          this.layers.splice(Math.min(i, this.layers.length), 0, layer.name);
          added = true;
        }
      }
    }
    if (!added) return;
    this.select.replaceChildren(
      ...this.layers.map((name) => Object.assign(document.createElement("option"), { value: name, textContent: name })),
    );
    this.select.value = this.layer() ?? "";
  }

  /** What was recorded: the level of each run, or "not recorded". */
  render() {
    const parts = this.runs.map((run) => {
      const points = this.getPoints(run.id);
      const level = points.find((p) => p.diagnostics)?.diagnostics.level;
      return { run, level, evaluated: points.length > 0 || Boolean(run.notRecorded) };
    });
    const missing = parts.filter((x) => x.evaluated && !x.level);
    const recorded = parts.filter((x) => x.level);
    this.root.dataset.state = !this.runs.length
      ? "empty"
      : recorded.length
        ? "recorded"
        : missing.length
          ? "not-recorded"
          : "waiting";
    this.select.disabled = !this.layers.length;
    const full = recorded.some((x) => x.level === "full");
    const offOnly = !recorded.length && missing.length > 0;
    for (const chart of this.charts) {
      // Nothing recorded for any run (diagnostics off: the quick look): the status line
      // says so once, and no chart repeats it.
      const gone = offOnly;
      const why = chart.fullOnly && recorded.length > 0 && !full ? "not recorded: only runs with diagnostics = full measure this." : null;
      const collapse = why !== null;
      if (collapse) {
        const title = Object.assign(document.createElement("strong"), { textContent: `${chart.title}: ` });
        chart.collapsed.replaceChildren(title, why);
      }
      if (chart.collapsed.hidden === !collapse && chart.figure.hidden === gone) continue;
      chart.figure.hidden = gone;
      chart.collapsed.hidden = !collapse;
      chart.el.hidden = collapse;
      chart.caption.hidden = collapse;
      // Drawn while hidden, it has the width of nothing: size it to its column again.
      if (!collapse && !gone && chart.drawn) chart.enqueue(() => Plotly.Plots.resize(chart.el));
    }
    const text = [];
    if (recorded.length) {
      const levels = [...new Set(recorded.map((x) => x.level))];
      text.push(
        recorded.length <= NAMED_RUNS
          ? `Recorded: ${recorded.map((x) => `${x.run.label} (${x.level})`).join(", ")}.`
          : `Recorded: ${levels.map((level) => `${level} for ${recorded.filter((x) => x.level === level).length} runs`).join(", ")}.`,
      );
    }
    if (missing.length) {
      const names = missing.length <= NAMED_RUNS ? missing.map((x) => x.run.label).join(", ") : `${missing.length} runs`;
      text.push(`Not recorded for ${names}: trained with diagnostics off, or before BN Lab recorded them.`);
      if (offOnly) text.push("Train with diagnostics Basic or Full to see inside the network.");
    }
    if (!this.runs.length) text.push("Select runs in the table to look inside them.");
    else if (!recorded.length && !missing.length) text.push("Waiting for the first evaluation…");
    this.status.textContent = text.join(" ");
  }
}
