// The page's one palette, and colours with transparency.

// Okabe & Ito's palette: told apart with each common colour-vision deficiency. Yellow
// (faint on white) and black (reads as "axis") come last.
export const PALETTE = Object.freeze(["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]);

/** The palette's colour number `index`, round again after the last. */
export const colourAt = (index) => PALETTE[index % PALETTE.length];

/** "#rrggbb" as rgba() with this opacity (bands and faint lines). */
export function withAlpha(hex, alpha) {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}
