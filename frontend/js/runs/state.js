// The runs page's state: every run the page knows, whose word about each counts, and
// which runs are selected (remembered in localStorage across visits).

import { RESUMABLE, Status, TERMINAL } from "../status.js";
import { pairOf, withTwin } from "./pairs.js";

const SELECTION_KEY = "bnlab.selected";

/** A REST answer older than what the feed already said (e.g. "running" after "cancelled"). */
function isStale(old, run) {
  const resumed = RESUMABLE.has(old.status) && run.status === Status.QUEUED;
  if (TERMINAL.has(old.status) && !TERMINAL.has(run.status) && !resumed) return true;
  if (old.status === run.status && (run.step ?? 0) < (old.step ?? 0)) return true;
  return old.status === run.status && old.test_metrics && !run.test_metrics;
}

export class RunState {
  constructor() {
    this.runs = new Map(); // id -> Run
    this.inFeed = new Set(); // runs WS /ws/runs reports on
    this.selected = []; // ids, in the order they were selected
  }

  /**
   * Takes a new state of a run unless an older word: the runs feed is the authority (one
   * socket, in order). A run stream only fills in runs the feed does not cover (older
   * than its newest 200); REST answers and evaluation points are checked against what is
   * already known. Returns {old} when taken (old: the state before), null when not.
   */
  accept(run, source) {
    const old = this.runs.get(run.id);
    if (source === "feed") this.inFeed.add(run.id);
    else if (old && ((source === "stream" && this.inFeed.has(run.id)) || isStale(old, run))) return null;
    this.runs.set(run.id, run);
    return { old };
  }

  /** The feed's whole list is coming: who it covers starts over. */
  newList() {
    this.inFeed.clear();
  }

  isSelected(id) {
    return this.selected.includes(id);
  }

  /** Selects these (known) runs, in this order, and remembers them. */
  select(ids) {
    this.selected = [...new Set(ids)].filter((id) => this.runs.has(id));
    try {
      localStorage.setItem(SELECTION_KEY, JSON.stringify(this.selected));
    } catch {
      /* private mode: selection is not remembered */
    }
    return this.selected;
  }

  /** The selection when the feed's first list arrives: the remembered one, else the newest comparison. */
  initialSelection(list) {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(SELECTION_KEY) ?? "null");
    } catch {
      saved = null;
    }
    if (Array.isArray(saved)) return [...new Set([...this.selected, ...saved])].filter((id) => this.runs.has(id));
    if (this.selected.length || !list.length) return this.selected;
    // First visit: show the newest comparison (or run) of the user's own, the table's
    // first rows (an experiment's runs wait behind their group line).
    const newest = list.find((r) => !r.experiment_id) ?? list[0];
    return withTwin(newest, list);
  }

  /** The selected runs in a stable order: oldest pair of twins first, BN before no-BN. */
  plotted() {
    const runs = this.selected.map((id) => this.runs.get(id)).filter(Boolean);
    const group = (r) => pairOf(r) ?? r.id;
    const first = new Map(); // a pair's earliest created_at: twins need not share it
    for (const r of runs) {
      const at = String(r.created_at);
      if (!first.has(group(r)) || at < first.get(group(r))) first.set(group(r), at);
    }
    return runs.sort((a, b) => first.get(group(a)).localeCompare(first.get(group(b))) ||
      group(a).localeCompare(group(b)) ||
      Number(b.config?.batch_norm !== false) - Number(a.config?.batch_norm !== false));
  }

  /** How many runs are running and queued, of how many. */
  counts() {
    let running = 0;
    let queued = 0;
    for (const r of this.runs.values()) {
      if (r.status === Status.RUNNING) running += 1;
      else if (r.status === Status.QUEUED) queued += 1;
    }
    return { running, queued, total: this.runs.size };
  }
}
