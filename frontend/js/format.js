// Number and time formatting.

const DASH = "—";

export const isNum = (x) => typeof x === "number" && Number.isFinite(x);

export function pct(x, digits = 2) {
  return isNum(x) ? `${(x * 100).toFixed(digits)} %` : DASH;
}

/** A difference of two accuracies, in percentage points: 0.0111 -> "+1.11 pp". */
export function pp(x, digits = 2) {
  return isNum(x) ? `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(digits)} pp` : DASH;
}

export function num(x, digits = 4) {
  if (!isNum(x)) return DASH;
  if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
  return x.toFixed(digits);
}

export function int(x) {
  return isNum(x) ? Math.round(x).toLocaleString("en-US") : DASH;
}

export function rate(x) {
  if (!isNum(x)) return DASH;
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

/** A p-value as the verdict's sentence writes it (Python's `{p:.3g}`): 0.0312, 1, 2.5e-7. */
export function pValue(p) {
  return isNum(p) ? String(Number(p.toPrecision(3))) : DASH;
}

/** 75 -> "1m 15s", 4000 -> "1h 6m". */
export function duration(seconds) {
  if (!isNum(seconds) || seconds < 0) return DASH;
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function shortId(id) {
  return String(id ?? "").slice(0, 8);
}

/** "cnn · adagrad 0.01 · batch 64 · 5000 steps" */
export function describeConfig(c) {
  if (!c) return "";
  const parts = [c.arch, `${c.optimizer} ${c.learning_rate}`, `batch ${c.batch_size}`, `${c.steps} steps`];
  if (c.train_subset) parts.push(`${c.train_subset} images`);
  if (c.seed) parts.push(`seed ${c.seed}`);
  return parts.join(" · ");
}
