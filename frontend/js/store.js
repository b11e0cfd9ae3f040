// The points of each run the page has seen, deduplicated by seq (and by step).

export class PointStore {
  constructor() {
    this.runs = new Map(); // id -> {points: Point[], seqs: Set, steps: Set, lastSeq}
  }

  entry(runId) {
    let e = this.runs.get(runId);
    if (!e) {
      e = { points: [], seqs: new Set(), steps: new Set(), lastSeq: null };
      this.runs.set(runId, e);
    }
    return e;
  }

  /** Adds points; returns only the ones that were new, in step order. */
  add(runId, points) {
    const e = this.entry(runId);
    const fresh = [];
    for (const p of points) {
      if (p == null || typeof p.step !== "number") continue;
      if (typeof p.seq === "number" && e.seqs.has(p.seq)) continue;
      if (e.steps.has(p.step)) continue;
      if (typeof p.seq === "number") {
        e.seqs.add(p.seq);
        e.lastSeq = Math.max(e.lastSeq ?? -1, p.seq);
      }
      e.steps.add(p.step);
      fresh.push(p);
    }
    fresh.sort((a, b) => a.step - b.step);
    const last = e.points.at(-1);
    e.points.push(...fresh);
    if (last && fresh.length && fresh[0].step < last.step) e.points.sort((a, b) => a.step - b.step);
    return fresh;
  }

  points(runId) {
    return this.runs.get(runId)?.points ?? [];
  }

  lastSeq(runId) {
    return this.runs.get(runId)?.lastSeq ?? null;
  }

  delete(runId) {
    this.runs.delete(runId);
  }
}
