// Log axes. Over a decade or more Plotly labels a log axis's in-between ticks with their
// first digit alone ("5" for 0.5), and its 1-to-9 ticks pile up at the top of each decade.

import { isNum } from "../format.js";

// Ticks at 1-2-5 in every decade from 1e-5 to 5e5, written out: for an axis whose range
// the user moves (the loss curves), so every zoom finds labelled ticks.
const DECADE_VALS = [];
for (let e = -5; e <= 5; e += 1) for (const m of [1, 2, 5]) DECADE_VALS.push(Number((m * 10 ** e).toPrecision(1)));
export const DECADE_TICKS = Object.freeze({
  tickmode: "array",
  tickvals: DECADE_VALS,
  ticktext: DECADE_VALS.map((v) => (v >= 1e4 || v < 1e-3 ? v.toExponential(0) : String(v))),
});

// For an axis whose range follows its values (low..high > 0): over a decade or more,
// ticks at 1, 2 and 5 (or whole decades, a few of them, over a wide span) with whole
// numbers. Over less Plotly picks ticks as precise as the range needs, and over a narrow
// range they need many digits (0.00040685): there, a few ticks only, each with as few
// digits as they need, and small values with an exponent (4.069e−4; not SI's "406.9μ").
export function logTicks(low, high) {
  const span = low > 0 ? high / low : 1;
  if (span < 3) {
    return { tickmode: "auto", dtick: null, tickformat: "", nticks: 4, exponentformat: high < 0.01 ? "e" : "none" };
  }
  const decades = Math.log10(span);
  const dtick = decades < 2.5 ? "D2" : Math.max(1, Math.ceil(decades / 4));
  return { tickmode: "linear", dtick, tickformat: "~g", nticks: 0, exponentformat: "none" };
}
/** The axis keys logTicks sets (to carry them into a relayout). */
export const TICK_KEYS = Object.freeze(["tickmode", "dtick", "tickformat", "nticks", "exponentformat"]);

const WIDE_SPAN = 20;

/** Positive values spread over more than a factor of 20: a log axis shows them evenly. */
export function spreadByFactors(values) {
  if (!values.length || !values.every((v) => isNum(v) && v > 0)) return false;
  return Math.max(...values) / Math.min(...values) > WIDE_SPAN;
}
