// "Inside the network" for an experiment (issue #17 §3): the run view's panel (InsidePanel),
// fed one synthetic run per cell and arm whose points are the MEANS over the arm's seeds,
// evaluation step by evaluation step. Colours are the cell's, as on the experiment's curves;
// BN solid, no-BN dashed. The server computes the means (GET /api/experiments/{id}/
// diagnostics, bnlab.server.cell_diagnostics) for the picked layer alone; the panel loads
// them when it opens, when another layer is picked, and when the experiment's stream says
// a run ended (or was queued again) — never on a timer. Its charts draw through the view's
// Painter, so the panel too costs at most one Plotly draw per animation frame.

import { api } from "../api.js";
import { ARM_NAME, ARM_ORDER, Arm } from "../arms.js";
import { InsidePanel } from "../runs/inside.js";
import { ACTIVE, Status } from "../status.js";
import { cellColour, cellName } from "./charts.js";

// More arms than this with runs left out: the status line counts them instead of naming each.
const NAMED_ARMS = 4;

const value = (mean) => mean?.mean ?? null;

/** A served DistributionMeans as a point's Distribution (the fractions stand for counts). */
function distribution(d, edges) {
  if (!d) return null;
  const histogram = d.fractions && edges ? { edges, counts: d.fractions } : { edges: null, counts: null };
  return { p15: value(d.p15), p50: value(d.p50), p85: value(d.p85), ...histogram };
}

const LAYER_MEASURES = ["grad_norm", "weight_norm", "effective_step", "bn_gap", "ics_distance", "ics_cosine"];
const LANDSCAPE_MEASURES = ["loss_range", "grad_predictiveness", "beta_smoothness"];

/** One served StepMeans as a point with diagnostics, as the run view's panel reads them. */
function meanPoint(arm, step) {
  const layers = step.layers.map((layer) => ({
    name: layer.name,
    pre_bn: distribution(layer.pre_bn, arm.edges[layer.name]?.pre_bn),
    pre_activation: distribution(layer.pre_activation, arm.edges[layer.name]?.pre_activation),
    ...Object.fromEntries(LAYER_MEASURES.map((k) => [k, value(layer[k])])),
  }));
  const { landscape } = step;
  return {
    step: step.step,
    n: step.n,
    diagnostics: {
      level: arm.level,
      layers,
      val_acc_batch_stats: value(step.val_acc_batch_stats),
      val_acc_moving_stats: value(step.val_acc_moving_stats),
      landscape: landscape ? Object.fromEntries(LANDSCAPE_MEASURES.map((k) => [k, value(landscape[k])])) : null,
    },
  };
}

/** The arm's status as one run's: running while a seed is, queued while one waits. */
function armStatus(counts) {
  if (counts[Status.RUNNING]) return Status.RUNNING;
  if (counts[Status.QUEUED]) return Status.QUEUED;
  return Status.COMPLETED;
}

/**
 * The served means as InsidePanel runs, one per cell and arm ({id, label, bn, colour,
 * status, arm}), with their points.
 */
export function cellMeans(answer) {
  return answer.cells.flatMap((cell, index) => ARM_ORDER.map((name) => {
    const arm = cell.arms[name];
    const run = {
      id: `cell${index}-${name}`,
      label: `${cellName(cell.factors)} · ${ARM_NAME[name]}`,
      bn: name === Arm.BN,
      colour: cellColour(index),
      status: armStatus(arm.runs),
      notRecorded: arm.recorded === 0 && arm.not_recorded > 0,
      arm,
    };
    return { run, points: arm.steps.map((step) => meanPoint(arm, step)) };
  }));
}

/** Every run that ended (or was queued again) so far: a change means the means changed. */
const endedKey = (experiment) =>
  experiment.runs.filter((r) => !ACTIVE.has(r.status)).map((r) => `${r.id}:${r.status}`).join(",");

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export class CellMeansPanel extends InsidePanel {
  /**
   * @param {HTMLDetailsElement} root  the panel's element (its parts' test ids start "exp-inside")
   * @param {import("../plot/frames.js").Painter} painter  the view's: one draw per animation frame
   * @param {(text: string, kind?: string) => void} notice  tells the person what failed
   */
  constructor(root, painter, notice) {
    const points = new Map(); // synthetic run id -> its mean points
    super(root, (id) => points.get(id) ?? [], {
      testid: "exp-inside",
      captions: {
        heatmap:
          "Each column is one evaluation's histogram (darker: more of the values), averaged " +
          "over the seeds of the first cell that share its bins: look for mass piling into " +
          "the extremes, where a sigmoid saturates.",
      },
    });
    this.points = points;
    this.painter = painter;
    this.notice = notice;
    this.known = []; // every layer the experiment's runs recorded, from the server
    this.id = null;
    this.ended = null;
    this.loading = null;
    this.again = false; // a run ended while a load was under way: load once more after it
    this.loads = 0; // loads made (the test hook reads it)
    for (const chart of this.charts) chart.draw = () => chart.redraw();
    root.addEventListener("toggle", () => root.open && this.load());
  }

  /** Another experiment: nothing of the one shown before stays, and the panel closes. */
  reset(id) {
    this.id = id;
    this.ended = null;
    this.known = [];
    this.chosen = null;
    this.points.clear();
    this.root.open = false;
    if (this.runs.length) this.setRuns([]); // (never drawn yet: nothing to clear)
  }

  /** The experiment's state from its stream: the means again when a run ended. */
  onExperiment(experiment) {
    const ended = endedKey(experiment);
    if (ended === this.ended) return;
    this.ended = ended;
    if (this.root.open) this.load();
  }

  pick(layer) {
    this.chosen = layer;
    this.load();
  }

  /** Loads the picked layer's means (every layer's until the layers are known) and draws them. */
  load() {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.root.setAttribute("aria-busy", "true"); // until the means asked for are in
    this.loading = (async () => {
      do {
        this.again = false;
        const id = this.id;
        if (id === null) break;
        this.loads += 1;
        // The picked layer alone, once the layers are known; every layer the first time.
        const layer = this.known.includes(this.layer()) ? this.layer() : null;
        const answer = await api.experimentDiagnostics(id, layer);
        // Another experiment was opened meanwhile: its means, not these.
        if (id !== this.id) this.again = true;
        else this.update(answer);
      } while (this.again && this.root.open);
    })()
      .catch((err) => this.notice(`Could not load the experiment's diagnostics: ${err.message}`, "error"))
      .finally(() => {
        this.loading = null;
        this.root.setAttribute("aria-busy", "false");
      });
    return this.loading;
  }

  /** The served means, replacing the ones drawn. */
  update(answer) {
    this.known = answer.layers;
    this.points.clear();
    const means = cellMeans(answer);
    for (const { run, points } of means) this.points.set(run.id, points);
    this.setRuns(means.map((m) => m.run));
  }

  /** The picker offers every layer the server named, whichever one the points hold. */
  learn(pointLists, rebuilt = false) {
    if (!rebuilt && this.known.every((name) => this.layers.includes(name))) return;
    this.layers = [...this.known];
    this.select.replaceChildren(
      ...this.layers.map((name) => Object.assign(document.createElement("option"), { value: name, textContent: name })),
    );
    this.select.value = this.layer() ?? "";
  }

  /** As the run view's, then what the means are over: the runs recorded and those left out. */
  render() {
    super.render();
    const arms = this.runs.map((run) => run.arm).filter(Boolean);
    if (!arms.length) return;
    const recorded = arms.reduce((sum, arm) => sum + arm.recorded, 0);
    const total = arms.reduce((sum, arm) => sum + arm.n, 0);
    const text = [];
    if (recorded) {
      const levels = [...new Set(arms.map((arm) => arm.level).filter(Boolean))].join(" and ");
      text.push(`Means over each arm's seeds that recorded diagnostics (${levels}): ${recorded} of ${plural(total, "run")}, updated as runs end.`);
    }
    const missing = this.runs.filter((run) => run.arm?.not_recorded);
    if (missing.length) {
      const count = missing.reduce((sum, run) => sum + run.arm.not_recorded, 0);
      const where = missing.length <= NAMED_ARMS ? ` (${missing.map((run) => `${run.label}: ${run.arm.not_recorded}`).join(", ")})` : "";
      text.push(`Left out: ${plural(count, "run")} without diagnostics${where}, trained with diagnostics off or before BN Lab recorded them.`);
    }
    const diverged = arms.reduce((sum, arm) => sum + (arm.runs[Status.DIVERGED] ?? 0), 0);
    if (diverged) text.push(`${plural(diverged, "run")} diverged: each is in the means up to its last finite values.`);
    if (!text.length) return; // nothing evaluated yet: the run view's words
    this.status.textContent = text.join(" ");
  }

  show(chart, runs) {
    chart.runs = runs;
    this.paint(chart);
  }

  paint(chart) {
    this.painter.request(chart);
  }
}
