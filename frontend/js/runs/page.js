// The runs page: the start form, the runs table, the curves, the probe chart, the Inside
// panel and the compare panel, fed by the runs feed and one stream per plotted run.

import { api } from "../api.js";
import { route } from "../experiments/page.js";
import { RunStream } from "../livesocket.js";
import { notice } from "../notice.js";
import { TERMINAL } from "../status.js";
import { PointStore } from "../store.js";
import { CurveChart, ProbeChart, chartRun } from "./charts.js";
import { Colours } from "./colours.js";
import { ComparePanel } from "./compare.js";
import { RunForm } from "./form.js";
import { Scope, filterHash, parseFilter, shows } from "./filter.js";
import { InsidePanel } from "./inside.js";
import { legendNames } from "./labels.js";
import { withTwin } from "./pairs.js";
import { RunsTable } from "./runstable.js";
import { RunState } from "./state.js";

const $ = (sel) => document.querySelector(sel);

export class RunsPage {
  constructor() {
    this.state = new RunState();
    this.store = new PointStore();
    this.streams = new Map(); // id -> RunStream, for the selected runs
    this.listed = false; // the feed's first list has arrived
    const colours = new Colours();
    this.colours = colours;
    const colourOf = (run) => colours.of(run);
    this.colourOf = colourOf;

    this.table = new RunsTable($("[data-testid=runs-panel]"), {
      onToggle: (id, on) => this.setSelected(on ? [...this.state.selected, id] : this.state.selected.filter((x) => x !== id)),
      onCancel: (id) => this.act(api.cancelRun(id), "cancel"),
      onResume: (id) => this.act(api.resumeRun(id), "resume"),
      onDelete: (id) => this.act(api.deleteRun(id), "delete"),
      onFilter: (filter) => this.showFilter(filter),
    }, colourOf);
    this.table.setFilter(parseFilter());
    window.addEventListener("hashchange", () => this.followAddress());

    const points = (id) => this.store.points(id);
    this.lossChart = new CurveChart($("[data-testid=chart-loss]"), points, {
      metric: "val_loss", title: "Validation loss", yTitle: "cross-entropy",
      hoverformat: "loss %{y:.4f} at %{x}",
    });
    const accChart = new CurveChart($("[data-testid=chart-acc]"), points, {
      metric: "val_acc", title: "Validation accuracy", yTitle: "accuracy", tickformat: ".0%",
      hoverformat: "%{y:.2%} at %{x}", bounds: [0, 1],
    });
    this.probeChart = new ProbeChart($("[data-testid=chart-probe]"), points);
    this.charts = [this.lossChart, accChart, this.probeChart, new InsidePanel($("[data-testid=inside-panel]"), points)];
    this.compare = new ComparePanel($("[data-testid=compare-panel]"), colourOf);

    new RunForm($("[data-testid=run-form]"), (started) => {
      for (const run of started) this.upsertRun(run);
      // New runs of the user's own: shown, whichever runs the table showed.
      if (!started.every((r) => shows(this.table.filter, r))) this.showFilter({ scope: Scope.OWN });
      // What was just started is what the user wants to watch: it replaces the selection
      // (ticking older runs back on adds them to it).
      this.setSelected(started.map((r) => r.id));
    });
    this.wireControls();
  }

  // ---- runs --------------------------------------------------------------------------

  /** One place for every new state of a run (see RunState.accept for whose word counts). */
  upsertRun(run, source = "rest") {
    const taken = this.state.accept(run, source);
    if (!taken) return;
    const { old } = taken;
    this.table.upsert(run);
    if (this.state.isSelected(run.id)) {
      if (!old || old.status !== run.status || old.label !== run.label) this.replot();
      if (old && (old.status !== run.status || (!old.test_metrics && run.test_metrics))) this.compare.refreshSoon(0);
      this.ensureStream(run.id);
    }
    this.updateSummary();
  }

  /**
   * An evaluation at a step proves training got there. The feed sends progress at most once
   * a second, so it may never say that the last step was reached: without this, a run in its
   * final test evaluation would still show the ETA of the last progress it published.
   */
  reachedStep(id, step) {
    const run = this.state.runs.get(id);
    if (!run || TERMINAL.has(run.status) || step <= (run.step ?? 0)) return;
    this.upsertRun({ ...run, step }, "points");
  }

  removeRun(id) {
    this.state.runs.delete(id);
    this.table.remove(id);
    this.streams.get(id)?.stop();
    this.streams.delete(id);
    this.store.delete(id);
    if (this.state.isSelected(id)) this.setSelected(this.state.selected.filter((x) => x !== id));
    this.updateSummary();
  }

  /** The feed's whole list (first message, and after every reconnect). */
  onList(list) {
    this.colours.assign(list);
    const ids = new Set(list.map((r) => r.id));
    for (const id of [...this.state.runs.keys()]) if (!ids.has(id) && !this.state.isSelected(id)) this.removeRun(id);
    this.state.newList();
    for (const run of list) this.upsertRun(run, "feed");
    this.updateSummary();
    if (!this.listed) {
      this.listed = true;
      const filter = parseFilter();
      if (filter.scope === Scope.IDS && !route()) this.followAddress();
      else this.setSelected(this.shownOf(this.state.initialSelection(list), filter));
    } else {
      this.compare.refreshSoon(0);
    }
  }

  /**
   * A cell's runs, from the Experiments area: the table shows them alone, and they are
   * plotted and compared as a selection of their own; the address names them.
   */
  openRuns(runs) {
    for (const run of runs) this.upsertRun(run);
    this.showFilter({ scope: Scope.IDS, ids: runs.map((r) => r.id) });
  }

  /** Puts `filter` in the address (a reload keeps it), which shows it (followAddress). */
  showFilter(filter) {
    const hash = filterHash(filter);
    if (location.hash === hash) this.followAddress();
    else location.hash = hash;
  }

  /**
   * The runs the address names: the table shows them and, for runs named one by one
   * (a deep link, "Open runs"), they are the selection; the page opens at its top.
   * Before the feed's first list the runs are not known: onList comes back here.
   */
  followAddress() {
    if (route()) return; // the Experiments area's address
    const filter = parseFilter();
    this.table.setFilter(filter);
    if (!this.listed) return;
    if (filter.scope === Scope.IDS) {
      this.setSelected(filter.ids);
      requestAnimationFrame(() => window.scrollTo(0, 0));
    } else {
      this.setSelected(this.shownOf(this.state.selected, filter));
    }
  }

  /**
   * The runs of `ids` that `filter` shows in the table, else (ids given, none of them
   * shown) the newest shown run and its twin: charts of runs the table hides, which cannot be
   * unticked there, read as broken (after "Open runs" and back to the user's own).
   */
  shownOf(ids, filter) {
    const shown = [...this.state.runs.values()].filter((r) => shows(filter, r));
    const visible = new Set(shown.map((r) => r.id));
    const kept = ids.filter((id) => visible.has(id));
    if (kept.length || !ids.length || !shown.length) return kept; // nothing chosen stays so
    const newest = shown.reduce((a, b) => (String(b.created_at) > String(a.created_at) ? b : a));
    return withTwin(newest, shown);
  }

  // ---- selection, streams, charts -----------------------------------------------------

  setSelected(ids) {
    const selected = this.state.select(ids);
    this.table.setSelected(selected);
    for (const [id, stream] of this.streams) {
      if (!selected.includes(id)) {
        stream.stop();
        this.streams.delete(id);
      }
    }
    for (const id of selected) this.ensureStream(id);
    this.replot();
    this.compare.setRuns(this.state.plotted().map((r) => r.id));
    $("[data-testid=selection-count]").textContent = selected.length
      ? `${selected.length} selected`
      : "none selected";
  }

  ensureStream(id) {
    const current = this.streams.get(id);
    const run = this.state.runs.get(id);
    // A finished stream is reopened when its run comes back (resumed).
    if (current && !(current.finished && run && !TERMINAL.has(run.status))) return;
    const stream = new RunStream(id, {
      lastSeq: this.store.lastSeq(id),
      onRun: (r) => this.upsertRun(r, "stream"),
      onPoints: (runId, pts) => {
        const fresh = this.store.add(runId, pts);
        if (!fresh.length) return;
        for (const chart of this.charts) chart.append(runId, fresh);
        this.compare.refreshSoon();
        this.reachedStep(runId, fresh.at(-1).step);
      },
      onGone: (runId) => this.removeRun(runId),
    });
    this.streams.set(id, stream);
    stream.start();
  }

  replot() {
    const plotted = this.state.plotted();
    const names = legendNames(plotted);
    const list = plotted.map((r) => chartRun(r, this.colourOf(r), names.get(r.id)));
    for (const chart of this.charts) chart.setRuns(list);
  }

  /** The x axis, log scale and smoothing above the charts. */
  wireControls() {
    const controls = $("[data-testid=chart-controls]");
    controls.addEventListener("submit", (ev) => ev.preventDefault());
    controls.addEventListener("change", () => {
      const data = new FormData(controls);
      const xMode = data.get("xmode");
      const smoothing = Number(data.get("smoothing"));
      for (const chart of this.charts) {
        chart.opts.xMode = xMode;
        if (chart !== this.probeChart) chart.opts.smoothing = smoothing;
      }
      this.lossChart.opts.yLog = data.get("yscale") === "log";
      for (const chart of this.charts) chart.redraw();
    });
  }

  // ---- actions, summary -----------------------------------------------------------------

  async act(promise, what) {
    try {
      const run = await promise;
      if (run?.id) this.upsertRun(run);
    } catch (err) {
      notice(`Could not ${what}: ${err.message}`, "error");
    }
  }

  updateSummary() {
    const { running, queued, total } = this.state.counts();
    const runs = `${total} run${total === 1 ? "" : "s"}`;
    $("[data-testid=activity]").textContent = `${running} running · ${queued} queued · ${runs}`;
  }

  /** Empty charts and compare panel until the feed's first list (they say what to do). */
  start() {
    this.replot();
    this.compare.setRuns([]);
  }
}
