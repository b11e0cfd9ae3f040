// "Inside the network" for an experiment (issue #17 §3): the run view's panel (InsidePanel),
// fed one synthetic run per cell and arm whose points are the MEANS over the arm's seeds,
// evaluation step by evaluation step. Colours are the cell's, as on the experiment's curves;
// BN solid, no-BN dashed. The data is the experiment's export (every run's points with their
// diagnostics, one request): the view loads it only while the panel is open, as it is large.
// Its charts draw through the view's Painter, so the panel too costs at most one Plotly draw
// per animation frame.

import { InsidePanel } from "../inside.js";
import { ARMS, ARM_NAME, cellColour, cellName } from "./charts.js";

const isFinite = (v) => typeof v === "number" && Number.isFinite(v);

/** The mean of the finite values, or null when there is none. */
function mean(values) {
  const finite = values.filter(isFinite);
  return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
}

/** Counts as fractions of their total (null: nothing counted). */
function fractions(counts) {
  const total = counts.reduce((a, b) => a + b, 0);
  return total > 0 ? counts.map((c) => c / total) : null;
}

/**
 * The seed mean of one of a layer's distributions. Each run fixes each distribution's
 * histogram edges from its own initial weights, so the seeds' histograms are averaged (as
 * fractions) only when their edges agree; otherwise the mean has no histogram.
 */
function meanDistribution(dists) {
  const present = dists.filter(Boolean);
  if (!present.length) return null;
  const out = Object.fromEntries(["p15", "p50", "p85"].map((k) => [k, mean(present.map((d) => d[k]))]));
  const sameEdges = present.every((d) => JSON.stringify(d.edges) === JSON.stringify(present[0].edges));
  out.edges = sameEdges ? present[0].edges : null;
  const parts = sameEdges ? present.map((d) => fractions(d.counts)) : [];
  out.counts = parts.length && parts.every(Boolean) ? parts[0].map((_, i) => mean(parts.map((f) => f[i]))) : null;
  return out;
}

const LAYER_MEASURES = ["grad_norm", "weight_norm", "effective_step", "bn_gap", "ics_distance", "ics_cosine"];
const LANDSCAPE_MEASURES = ["loss_range", "grad_predictiveness", "beta_smoothness"];

/** One point whose measures are the means of these seeds' points (all at one step). */
function meanPoint(step, points) {
  const recorded = points.map((p) => p.diagnostics).filter(Boolean);
  const point = { step, val_acc: mean(points.map((p) => p.val_acc)), diagnostics: null };
  if (!recorded.length) return point;
  const names = [];
  for (const d of recorded) for (const layer of d.layers) if (!names.includes(layer.name)) names.push(layer.name);
  const layers = names.map((name) => {
    const seeds = recorded.map((d) => d.layers.find((l) => l.name === name)).filter(Boolean);
    return {
      name,
      pre_bn: meanDistribution(seeds.map((l) => l.pre_bn)),
      pre_activation: meanDistribution(seeds.map((l) => l.pre_activation)),
      ...Object.fromEntries(LAYER_MEASURES.map((k) => [k, mean(seeds.map((l) => l[k]))])),
    };
  });
  // Full samples the landscape on some evaluations only: the mean of those that have it.
  const probes = recorded.map((d) => d.landscape).filter(Boolean);
  point.diagnostics = {
    level: recorded.some((d) => d.level === "full") ? "full" : "basic",
    layers,
    val_acc_batch_stats: mean(recorded.map((d) => d.val_acc_batch_stats)),
    val_acc_moving_stats: mean(recorded.map((d) => d.val_acc_moving_stats)),
    landscape: probes.length ? Object.fromEntries(LANDSCAPE_MEASURES.map((k) => [k, mean(probes.map((l) => l[k]))])) : null,
  };
  return point;
}

/** The arm's status as one run's: running while a seed is, queued while one waits. */
function armStatus(statuses) {
  if (statuses.includes("running")) return "running";
  if (statuses.includes("queued")) return "queued";
  return "completed";
}

/**
 * The experiment's cells as InsidePanel runs, one per cell and arm ({id, label, bn, colour,
 * status}), with their points: at each step some seed evaluated, the mean over the seeds
 * with a finite value there (a diverged seed drops out from where it diverged).
 */
export function cellMeans(experiment, exported) {
  const cells = experiment.cells.map((c) => JSON.stringify(c.factors));
  const byRun = new Map(exported.runs.map((r) => [r.run_id, r]));
  const arms = new Map(); // "cell|arm" -> {run, points by step}
  experiment.cells.forEach((cell, index) => {
    for (const arm of ARMS) {
      const id = `cell${index}-${arm}`;
      const label = `${cellName(cell.factors)} · ${ARM_NAME[arm]}`;
      arms.set(`${index}|${arm}`, { run: { id, label, bn: arm === "bn", colour: cellColour(index) }, statuses: [], steps: new Map() });
    }
  });
  for (const row of exported.runs) arms.get(`${cells.indexOf(JSON.stringify(row.factors))}|${row.arm}`)?.statuses.push(row.status);
  for (const p of exported.curves) {
    const row = byRun.get(p.run_id);
    const steps = arms.get(`${cells.indexOf(JSON.stringify(row?.factors))}|${row?.arm}`)?.steps;
    if (!steps) continue;
    if (!steps.has(p.step)) steps.set(p.step, []);
    steps.get(p.step).push(p);
  }
  return [...arms.values()].map(({ run, statuses, steps }) => ({
    run: { ...run, status: armStatus(statuses) },
    points: [...steps.entries()].sort((a, b) => a[0] - b[0]).map(([step, points]) => meanPoint(step, points)),
  }));
}

export class CellMeansPanel extends InsidePanel {
  /**
   * @param {HTMLElement} root  the panel's element (its parts' test ids start "exp-inside")
   * @param {import("./charts.js").Painter} painter  the view's: one draw per animation frame
   */
  constructor(root, painter) {
    const points = new Map(); // synthetic run id -> its mean points
    super(root, (id) => points.get(id) ?? [], {
      testid: "exp-inside",
      captions: {
        heatmap:
          "Each column is one evaluation's histogram (darker: more of the values), averaged " +
          "over the seeds of the first cell (the seeds' bins must agree): look for mass " +
          "piling into the end bins, where a sigmoid saturates.",
      },
    });
    this.points = points;
    this.painter = painter;
    for (const chart of this.charts) chart.draw = () => chart.redraw();
  }

  /** The means of `exported` (the experiment's export), replacing the ones drawn. */
  update(experiment, exported) {
    this.points.clear();
    const means = cellMeans(experiment, exported);
    for (const { run, points } of means) this.points.set(run.id, points);
    this.setRuns(means.map((m) => m.run));
  }

  show(chart, runs) {
    chart.runs = runs;
    this.paint(chart);
  }

  paint(chart) {
    this.painter.request(chart);
  }
}
