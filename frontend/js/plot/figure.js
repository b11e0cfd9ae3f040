// What every chart of the page shares: Plotly's config, the font, the grid, the legend
// and the grey note in an empty plot area. The runs page, the experiments page and the
// Inside panel all draw with these, so their charts look alike.

export const CONFIG = Object.freeze({
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
  toImageButtonOptions: { format: "png", scale: 2 },
});

export const FONT = Object.freeze({
  family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
  size: 12,
  color: "#1f2933",
});
export const GRID = "#e9edf2";

// Many traces: the legend sits at the bottom of the figure, below the x title (the plot
// area makes room for it). No scroll box: a two-row box sliced its third row in half;
// the names are short instead (runs/labels.js), so a few rows hold them all.
export const LEGEND = Object.freeze({
  orientation: "h", x: 0, xanchor: "left", yref: "container", y: 0, yanchor: "bottom",
  font: { size: 11 },
});

const NOTE_FONT = { size: 13, color: "#7b8794" };

/** Grey text in the middle of an empty plot area (x: its centre, as a fraction of the width). */
export function note(text, x = 0.5) {
  return {
    text, xref: "paper", yref: "paper", x, y: 0.5, xanchor: "center", yanchor: "middle",
    showarrow: false, font: NOTE_FONT,
  };
}
