// Which runs are BN/no-BN twins: a comparison's two runs, or an experiment's two runs of
// one cell and seed (the same config but for batch norm), as the server pairs them for
// GET /api/compare (server/runs/compare.py, `twins_key`). Twins share a colour and sit
// together in the runs table.

const keys = new Map(); // run id -> its pair's key (a run's config never changes)

/** The key a run shares with its twin; null for a single run, which has none. */
export function pairOf(run) {
  if (run.comparison_id) return `comparison:${run.comparison_id}`;
  if (!run.experiment_id) return null;
  let key = keys.get(run.id);
  if (key === undefined) {
    const { batch_norm: _bn, ...rest } = run.config ?? {};
    const fields = Object.keys(rest).sort().map((k) => [k, rest[k]]);
    key = `experiment:${run.experiment_id}|${JSON.stringify(fields)}`;
    keys.set(run.id, key);
  }
  return key;
}

/** The ids of `run` and of its twin among `runs`: what the page selects when it picks one. */
export function withTwin(run, runs) {
  const pair = pairOf(run);
  return runs.filter((r) => r.id === run.id || (pair && pairOf(r) === pair)).map((r) => r.id);
}
