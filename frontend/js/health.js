// The header's line on the server: TensorFlow's version, its devices, the workers.

import { api } from "./api.js";

/** Fills the header's health line from GET /api/health (once, at start). */
export async function showHealth() {
  try {
    const h = await api.health();
    const workers = h.workers ? `${h.workers.total} workers` : "";
    document.querySelector("[data-testid=health]").textContent = [
      h.tensorflow ? `TensorFlow ${h.tensorflow}` : "", (h.devices ?? []).join(", "), workers,
    ].filter(Boolean).join(" · ");
  } catch {
    /* the banner reports connection trouble */
  }
}
