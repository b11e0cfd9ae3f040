// Which runs the runs table shows, and how the address says so (a reload, a bookmark or
// a link keeps the view). In the hash's `runs` parameter:
//
//   #runs                    the user's own: comparisons and single runs (experiments'
//                            runs wait behind one line per experiment, see RunsTable)
//   #runs=all                every run
//   #runs=experiment:<id>    one experiment's runs
//   #runs=<id>,<id>,…        these runs (what "Open runs" and deep links name): shown,
//                            plotted and compared
//
// Experiments' runs would otherwise flood the table: two small experiments make 86 rows.

export const Scope = Object.freeze({ OWN: "own", ALL: "all", EXPERIMENT: "experiment", IDS: "ids" });

/** The filter the address names: {scope, experiment?, ids?}. */
export function parseFilter(hash = location.hash) {
  const raw = new URLSearchParams(hash.replace(/^#/, "")).get("runs");
  if (!raw) return { scope: Scope.OWN };
  if (raw === Scope.ALL) return { scope: Scope.ALL };
  if (raw.startsWith("experiment:")) return { scope: Scope.EXPERIMENT, experiment: raw.slice("experiment:".length) };
  const ids = raw.split(",").filter(Boolean);
  return ids.length ? { scope: Scope.IDS, ids } : { scope: Scope.OWN };
}

/** The hash that names `filter` (the inverse of parseFilter). */
export function filterHash(filter) {
  if (filter.scope === Scope.ALL) return "#runs=all";
  if (filter.scope === Scope.EXPERIMENT) return `#runs=experiment:${encodeURIComponent(filter.experiment)}`;
  if (filter.scope === Scope.IDS) return `#runs=${filter.ids.map(encodeURIComponent).join(",")}`;
  return "#runs";
}

/** Whether the table shows `run` under `filter`. */
export function shows(filter, run) {
  if (filter.scope === Scope.ALL) return true;
  if (filter.scope === Scope.EXPERIMENT) return run.experiment_id === filter.experiment;
  if (filter.scope === Scope.IDS) return filter.ids.includes(run.id);
  return !run.experiment_id;
}

/** An experiment's name from one of its runs' labels ("<label> · BN · …"), else its id. */
export function experimentName(run) {
  const cut = String(run.label ?? "").search(/ · (no-)?BN · /);
  return cut > 0 ? run.label.slice(0, cut) : `experiment ${String(run.experiment_id).slice(0, 8)}`;
}
