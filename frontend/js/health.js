// The header's line on the server: TensorFlow's version, the devices it trains on, the
// workers; under the header, a warning when the NVIDIA driver lists GPUs TensorFlow
// cannot use.

import { api } from "./api.js";

// The server asks TensorFlow for its devices once it has started (seconds): until it
// has an answer the line shows the driver's and asks again.
const ASK_AGAIN_MS = 3000;

/** Fills the header's health line from GET /api/health (at start, and until the
 *  server knows TensorFlow's devices). */
export async function showHealth() {
  try {
    const h = await api.health();
    const workers = h.workers ? `${h.workers.total} workers` : "";
    const devices = h.tensorflow_devices ?? h.devices ?? [];
    document.querySelector("[data-testid=health]").textContent = [
      h.tensorflow ? `TensorFlow ${h.tensorflow}` : "", devices.join(", "), workers,
    ].filter(Boolean).join(" · ");
    const warning = document.querySelector("[data-testid=device-warning]");
    warning.textContent = h.device_warning ? `⚠ ${h.device_warning}` : "";
    warning.hidden = !h.device_warning;
    if (h.can_read && h.tensorflow_devices == null && !h.device_warning) {
      setTimeout(showHealth, ASK_AGAIN_MS);
    }
  } catch {
    /* the banner reports connection trouble */
  }
}
