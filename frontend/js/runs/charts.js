// Live Plotly charts. Points are appended with Plotly.extendTraces, so new points never
// redraw the chart, and the user's zoom and hidden traces (legend clicks) survive.
// A full Plotly.react only happens when the set of plotted runs or a display option changes;
// `uirevision` keeps the zoom and the trace visibility across those too.

/* global Plotly */

import { withAlpha } from "../plot/colour.js";
import { CONFIG, FONT, GRID, LEGEND, note } from "../plot/figure.js";
import { DECADE_TICKS } from "../plot/logaxis.js";
import { Status, TERMINAL } from "../status.js";

// Plotly uses a trace's uid in CSS selectors: keep it to safe characters.
export const uidOf = (key) => `u-${key.replace(/[^A-Za-z0-9_-]/g, "_")}`;

const finite = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

/** A run's legend entry: its short name (labels.js) and how it ended, unless completed. */
export function runName(run) {
  const flag = TERMINAL.has(run.status) && run.status !== Status.COMPLETED ? ` (${run.status})` : "";
  return `${run.name ?? run.label}${flag}`;
}

const axisNames = (layout) => Object.keys(layout).filter((key) => /^[xy]axis\d*$/.test(key));

/**
 * Why a plot area showing these runs is empty, or null when it has something to draw:
 * nothing evaluated yet (starting, queued, or ended before its first evaluation), or
 * points whose values are all missing (recorded before the value existed) or non-finite.
 */
function whyEmpty(runs, getPoints, value) {
  const points = runs.flatMap((r) => getPoints(r.id));
  if (points.some((p) => finite(value(p)) !== null)) return null;
  if (!points.length) {
    if (runs.some((r) => r.status === Status.RUNNING)) return "starting…<br>the first evaluation is on its way";
    if (runs.some((r) => r.status === Status.QUEUED)) return "queued:<br>waiting for a free worker";
    return "no evaluations:<br>the run ended before its first one";
  }
  // Values that were measured but not finite are stored as null like missing ones; a run
  // whose validation loss is finite throughout did not diverge, so it predates the value.
  if (points.every((p) => finite(p.val_loss) !== null)) return "no values:<br>the run predates this measurement";
  return "no finite values:<br>the run diverged";
}

/** One plotted run: what the charts need to know about it. */
export function chartRun(run, colour, name = undefined) {
  return {
    id: run.id,
    label: run.label || run.id,
    name,
    status: run.status,
    bn: run.config?.batch_norm !== false,
    colour,
  };
}

export class LiveChart {
  constructor(el, getPoints) {
    this.el = el;
    this.getPoints = getPoints; // runId -> Point[] already received
    this.runs = [];
    this.opts = { xMode: "step", yLog: false, smoothing: 0 };
    this.specs = []; // one per trace, in trace order
    this.ema = new Map(); // spec key -> {v, n}: smoothing state after the last point
    this.queue = Promise.resolve();
    this.decorated = ""; // the decorations drawn now (JSON), to redraw them only on a change
  }

  /** Traces drawn after the runs' (none by default); they take no part in updates. */
  frameTraces() {
    return [];
  }

  /** The plot areas with nothing to draw: {why, centre, axes} each (none by default). */
  empties() {
    return [];
  }

  /**
   * What the empty plot areas change in a layout, as a Plotly.relayout update: a note in
   * each saying why, and their axes hidden (their ranges would mean nothing). With no runs
   * at all, the whole chart is one empty area.
   */
  decorations(layout) {
    const axes = axisNames(layout);
    const empties = this.runs.length
      ? this.empties()
      : [{ why: "Select runs in the table (or start one) to plot them", centre: 0.5, axes }];
    const hidden = new Set(empties.flatMap((e) => e.axes));
    const update = { annotations: [...(layout.annotations ?? []), ...empties.map((e) => note(e.why, e.centre))] };
    for (const axis of axes) update[`${axis}.visible`] = !hidden.has(axis);
    return update;
  }

  /** The layout with its decorations (a full redraw). */
  fullLayout() {
    const layout = this.layout();
    const update = this.decorations(layout);
    this.decorated = JSON.stringify(update);
    layout.annotations = update.annotations;
    for (const axis of axisNames(layout)) layout[axis] = { ...layout[axis], visible: update[`${axis}.visible`] };
    return layout;
  }

  /** Redecorates if a point or a status changed what is empty (relayout: the data stays). */
  redecorate() {
    if (!this.drawn) return this.queue;
    const update = this.decorations(this.layout());
    const key = JSON.stringify(update);
    if (key === this.decorated) return this.queue;
    this.decorated = key;
    return this.enqueue(() => Plotly.relayout(this.el, update));
  }

  /** Plotly calls run one after the other; their data is computed when they are asked for. */
  enqueue(fn) {
    this.queue = this.queue.then(fn).catch((err) => console.error("chart update failed:", err));
    return this.queue;
  }

  x(p) {
    return this.opts.xMode === "time" ? finite(p.elapsed) : p.step;
  }

  xTitle() {
    return this.opts.xMode === "time" ? "wall time (s)" : "step";
  }

  columns(spec, points) {
    const x = points.map((p) => this.x(p));
    let y = points.map((p) => finite(spec.value(p)));
    if (spec.ema) {
      const a = this.opts.smoothing;
      const st = this.ema.get(spec.key) ?? { v: 0, n: 0 };
      // Debiased exponential moving average (as TensorBoard); a null stays a gap.
      y = y.map((v) => {
        if (v === null) return null;
        st.n += 1;
        st.v = a * st.v + (1 - a) * v;
        return st.v / (1 - a ** st.n);
      });
      this.ema.set(spec.key, st);
    }
    return { x, y };
  }

  /** Sets the plotted runs; redraws only if the set or the order changed. */
  setRuns(runs) {
    const same =
      runs.length === this.runs.length &&
      runs.every((r, i) => r.id === this.runs[i].id && r.colour === this.runs[i].colour && r.bn === this.runs[i].bn &&
        r.label === this.runs[i].label);
    const before = new Map(this.runs.map((r) => [r.id, r]));
    this.runs = runs;
    if (!same || !this.drawn) return this.redraw();
    const changed = runs.filter((r) => runName(before.get(r.id)) !== runName(r));
    if (changed.length) this.rename(changed);
    return this.redecorate();
  }

  redraw() {
    this.drawn = true;
    this.specs = [];
    this.ema = new Map();
    const traces = [];
    for (const run of this.runs) {
      const points = this.getPoints(run.id);
      for (const spec of this.tracesFor(run)) {
        spec.runId = run.id;
        const { x, y } = this.columns(spec, points);
        traces.push({ ...spec.trace, uid: uidOf(spec.key), meta: { runId: run.id, kind: spec.kind }, x, y });
        this.specs.push(spec);
      }
    }
    traces.push(...this.frameTraces());
    const layout = this.fullLayout();
    return this.enqueue(() => Plotly.react(this.el, traces, layout, CONFIG));
  }

  /** Appends new points of one run to its traces (extendTraces: no redraw). */
  append(runId, points) {
    if (!points.length || !this.runs.some((r) => r.id === runId)) return this.queue;
    const indices = [];
    const xs = [];
    const ys = [];
    this.specs.forEach((spec, i) => {
      if (spec.runId !== runId) return;
      const { x, y } = this.columns(spec, points);
      indices.push(i);
      xs.push(x);
      ys.push(y);
    });
    if (!indices.length) return this.queue;
    this.enqueue(() => Plotly.extendTraces(this.el, { x: xs, y: ys }, indices));
    return this.redecorate();
  }

  rename(runs) {
    const byId = new Map(runs.map((r) => [r.id, r]));
    const indices = [];
    const names = [];
    this.specs.forEach((spec, i) => {
      const run = byId.get(spec.runId);
      if (run && spec.named) {
        indices.push(i);
        names.push(runName(run));
      }
    });
    if (indices.length) this.enqueue(() => Plotly.restyle(this.el, { name: names }, indices));
  }

  baseLayout() {
    return {
      uirevision: "bnlab",
      font: FONT,
      paper_bgcolor: "#ffffff",
      plot_bgcolor: "#ffffff",
      margin: { l: 58, r: 14, t: 34, b: 30 },
      hovermode: "closest",
      // The whole run label in the hover box (Plotly cuts it at 15 characters by default).
      hoverlabel: { font: { size: 12 }, namelength: -1 },
      legend: LEGEND,
      showlegend: true,
    };
  }

  axis(extra) {
    // automargin: room for the tick labels and the title, also when no legend pads the bottom.
    return {
      gridcolor: GRID, zeroline: false, linecolor: "#c9d1db", ticks: "outside", tickcolor: "#c9d1db",
      automargin: true, ...extra,
    };
  }
}

/** Validation loss or accuracy against step or wall time; BN solid, no-BN dashed. */
export class CurveChart extends LiveChart {
  constructor(el, getPoints, { metric, title, yTitle, tickformat, hoverformat, bounds }) {
    super(el, getPoints);
    this.bounds = bounds; // [low, high] the axis never goes past (accuracy: 0 to 1)
    this.metric = metric;
    this.title = title;
    this.yTitle = yTitle;
    this.tickformat = tickformat;
    this.hoverformat = hoverformat;
    this.logToggle = false;
  }

  tracesFor(run) {
    const value = (p) => p[this.metric];
    const line = { color: run.colour, width: 2, dash: run.bn ? "solid" : "dash" };
    const hover = `${this.hoverformat}<extra>${run.label.replace(/</g, "&lt;")}</extra>`;
    const smoothing = this.opts.smoothing > 0;
    const raw = {
      key: `${run.id}|raw`,
      kind: "raw",
      value,
      named: !smoothing,
      trace: {
        type: "scatter",
        mode: "lines+markers",
        name: runName(run),
        legendgroup: run.id,
        line: smoothing ? { ...line, width: 1 } : line,
        marker: { size: smoothing ? 3 : 4, color: run.colour },
        opacity: smoothing ? 0.28 : 1,
        showlegend: !smoothing,
        connectgaps: false,
        hovertemplate: hover,
      },
    };
    if (!smoothing) return [raw];
    const smooth = {
      key: `${run.id}|ema`,
      kind: "smooth",
      value,
      ema: true,
      named: true,
      trace: {
        type: "scatter",
        mode: "lines",
        name: runName(run),
        legendgroup: run.id,
        line: { ...line, width: 2.2 },
        connectgaps: false,
        hovertemplate: hover.replace("<extra>", " (smoothed)<extra>"),
      },
    };
    return [raw, smooth];
  }

  empties() {
    const why = whyEmpty(this.runs, this.getPoints, (p) => p[this.metric]);
    return why ? [{ why, centre: 0.5, axes: ["xaxis", "yaxis"] }] : [];
  }

  layout() {
    return {
      ...this.baseLayout(),
      title: { text: this.title, x: 0.01, xanchor: "left", font: { size: 14 } },
      xaxis: this.axis({ title: { text: this.xTitle() }, uirevision: this.opts.xMode, rangemode: "tozero" }),
      yaxis: this.axis({
        title: { text: this.yTitle },
        type: this.opts.yLog ? "log" : "linear",
        tickformat: this.tickformat,
        uirevision: this.opts.yLog ? "log" : "linear",
        ...(this.opts.yLog ? DECADE_TICKS : {}),
        // One point (step 0) would get an axis from -50 % to 100 % otherwise.
        ...(this.bounds && !this.opts.yLog
          ? { autorangeoptions: { minallowed: this.bounds[0], maxallowed: this.bounds[1] } }
          : {}),
      }),
    };
  }
}

// The probe chart's two plot areas (x domains [0, 0.47] and [0.53, 1]).
const PROBE_PANELS = [
  { bn: false, centre: 0.235, axes: ["xaxis", "yaxis"], title: "Without BN (Fig. 1b)", none: "no run without BN selected" },
  { bn: true, centre: 0.765, axes: ["xaxis2", "yaxis2"], title: "With BN (Fig. 1c)", none: "no run with BN selected" },
];

/**
 * The tracked unit's input over training: its 15th/50th/85th percentiles (BN paper,
 * Fig. 1b/c). Runs without BN on the left, with BN on the right; the band is p15–p85.
 */
export class ProbeChart extends LiveChart {
  tracesFor(run) {
    const axes = run.bn ? { xaxis: "x2", yaxis: "y2" } : { xaxis: "x", yaxis: "y" };
    const dash = run.bn ? "solid" : "dash";
    const label = run.label.replace(/</g, "&lt;");
    const common = { type: "scatter", mode: "lines", legendgroup: run.id, connectgaps: false, ...axes };
    const thin = { color: withAlpha(run.colour, 0.75), width: 1, dash };
    return [
      {
        key: `${run.id}|p15`, kind: "p15", value: (p) => p.probe?.p15,
        trace: { ...common, name: "15th pct", line: thin, showlegend: false,
          hovertemplate: `p15 %{y:.3f}<extra>${label}</extra>` },
      },
      {
        key: `${run.id}|p85`, kind: "p85", value: (p) => p.probe?.p85,
        trace: { ...common, name: "85th pct", line: thin, showlegend: false, fill: "tonexty",
          fillcolor: withAlpha(run.colour, 0.13), hovertemplate: `p85 %{y:.3f}<extra>${label}</extra>` },
      },
      {
        key: `${run.id}|p50`, kind: "p50", value: (p) => p.probe?.p50, named: true,
        trace: { ...common, name: runName(run), line: { color: run.colour, width: 2.4, dash },
          hovertemplate: `median %{y:.3f}<extra>${label}</extra>` },
      },
    ];
  }

  /**
   * One empty trace per panel, so both plot areas always exist: Plotly draws NaN paths
   * (and logs errors) when a plot area loses its last trace, e.g. when the selection goes
   * from BN runs alone to no-BN runs alone.
   */
  frameTraces() {
    return [
      { xaxis: "x", yaxis: "y" },
      { xaxis: "x2", yaxis: "y2" },
    ].map((axes) => ({
      ...axes, type: "scatter", mode: "lines", x: [], y: [], showlegend: false, hoverinfo: "skip",
      uid: `frame-${axes.xaxis}`, meta: { kind: "frame" },
    }));
  }

  /** Each panel says why it is empty: no such run selected, or see whyEmpty. */
  empties() {
    return PROBE_PANELS.flatMap(({ bn, centre, axes, none }) => {
      const runs = this.runs.filter((r) => r.bn === bn);
      const why = runs.length ? whyEmpty(runs, this.getPoints, (p) => p.probe?.p50) : none;
      return why ? [{ why, centre, axes }] : [];
    });
  }

  layout() {
    const head = (text, x) => ({
      text, x, y: 1.02, xref: "paper", yref: "paper", xanchor: "center", yanchor: "bottom",
      showarrow: false, font: { size: 13 },
    });
    return {
      ...this.baseLayout(),
      margin: { l: 58, r: 14, t: 30, b: 40 },
      xaxis: this.axis({ domain: [0, 0.47], title: { text: this.xTitle() }, uirevision: this.opts.xMode, rangemode: "tozero" }),
      yaxis: this.axis({ title: { text: "input to the unit" }, zeroline: true, zerolinecolor: "#d5dbe3" }),
      // One step (or time) axis too: a run ahead of its twin must not stretch one panel.
      xaxis2: this.axis({ domain: [0.53, 1], anchor: "y2", matches: "x", title: { text: this.xTitle() }, uirevision: this.opts.xMode, rangemode: "tozero" }),
      // One scale for both: how far each band moves is what the two panels compare.
      yaxis2: this.axis({ anchor: "x2", matches: "y", zeroline: true, zerolinecolor: "#d5dbe3" }),
      annotations: PROBE_PANELS.map(({ title, centre }) => head(title, centre)),
    };
  }
}
