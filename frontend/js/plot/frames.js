// Drawing at most once per animation frame: a burst of updates (points after a
// reconnect, 200 runs ending) costs one Plotly call per chart, never one per event.
//
// Painter: charts marked dirty are drawn, one per frame, each from the state it reads then.
// PointBatch: points gathered by run until the next frame, then handed over in one batch.

/** Draws dirty charts (anything with `draw()` returning a promise), one per animation frame. */
export class Painter {
  constructor() {
    this.dirty = new Set();
    this.frame = null;
    this.draws = 0; // Plotly draws made (the test hook reads it)
    this.underway = 0; // draws started and not finished
  }

  /** Nothing left to draw, and no draw under way. */
  idle() {
    return this.frame === null && !this.dirty.size && !this.underway;
  }

  request(chart) {
    this.dirty.add(chart);
    this.frame ??= requestAnimationFrame(() => this.paint());
  }

  async paint() {
    this.frame = null;
    const chart = [...this.dirty].find((c) => !c.drawing);
    if (chart) {
      this.dirty.delete(chart);
      chart.drawing = true;
      this.underway += 1;
      this.draws += 1;
      try {
        await chart.draw();
      } catch (err) {
        console.error("chart update failed:", err);
      } finally {
        chart.drawing = false;
        this.underway -= 1;
      }
    }
    if (this.dirty.size) this.frame ??= requestAnimationFrame(() => this.paint());
  }
}

/** Points by run, held until the next animation frame and then passed to `flush` at once. */
export class PointBatch {
  /** @param {(batch: Map<string, object[]>) => void} flush */
  constructor(flush) {
    this.onFlush = flush;
    this.pending = new Map(); // runId -> points not drawn yet
    this.frame = null;
  }

  add(runId, points) {
    this.pending.set(runId, [...(this.pending.get(runId) ?? []), ...points]);
    this.frame ??= requestAnimationFrame(() => this.flush());
  }

  /** Hands over what is pending now (also before the frame: a redraw must not lose it). */
  flush() {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    if (!this.pending.size) return;
    const batch = this.pending;
    this.pending = new Map();
    this.onFlush(batch);
  }
}
