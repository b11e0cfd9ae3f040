// One colour per pair of twins (a comparison, or an experiment's cell and seed; a single
// run is its own group), from the page's palette.

import { colourAt } from "../plot/colour.js";
import { pairOf } from "./pairs.js";

/** Each comparison's colour, stable for the page's life. */
export class Colours {
  constructor() {
    this.byGroup = new Map();
  }
  static group(run) {
    return pairOf(run) ?? run.id;
  }
  /** Assign colours to runs in creation order, so older groups keep theirs. */
  assign(runs) {
    const sorted = [...runs].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)));
    for (const r of sorted) this.of(r);
  }
  of(run) {
    const g = Colours.group(run);
    if (!this.byGroup.has(g)) this.byGroup.set(g, colourAt(this.byGroup.size));
    return this.byGroup.get(g);
  }
}
