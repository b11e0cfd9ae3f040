// The disconnection banner: while any live socket is down it says so, counts down to the
// next attempt (*Reconnect now* skips the wait), and, when the REST API answers while the
// sockets keep failing, suggests the access token.

import { api } from "./api.js";
import { token } from "./auth.js";
import { duration } from "./format.js";
import { connections } from "./livesocket.js";

const $ = (sel) => document.querySelector(sel);
const TICK_MS = 500; // the countdown's refresh

/** Shows the banner whenever `connections` is in trouble. */
export function watchConnections() {
  const banner = $("[data-testid=conn-banner]");
  const bannerText = $("[data-testid=conn-banner-text]");
  const dot = $("[data-testid=conn-dot]");
  let timer = null;
  let serverUp = null; // during connection trouble: does GET /api/health answer?

  async function probeServer() {
    serverUp = false;
    try {
      await api.health();
      serverUp = true;
    } catch {
      serverUp = false;
    }
    if (!connections.trouble()) serverUp = null;
  }

  function render() {
    const s = connections.trouble();
    const online = !s;
    banner.hidden = online;
    if (online) serverUp = null;
    document.body.classList.toggle("offline", !online);
    dot.className = `dot ${online ? "dot-on" : "dot-off"}`;
    dot.title = online ? "live" : "disconnected";
    if (online) {
      clearInterval(timer);
      timer = null;
      return;
    }
    const wait = Math.max(0, (s.retryAt - Date.now()) / 1000);
    const retry = s.ws ? `reconnecting (attempt ${s.attempt})…` : `reconnecting in ${duration(Math.ceil(wait))} (attempt ${s.attempt})…`;
    // Websocket refusals look like network errors to a page; if the REST API answers,
    // the server is up and most likely wants its access token.
    if (s.attempt >= 2 && serverUp === null) probeServer();
    bannerText.textContent = serverUp
      ? `Live connection refused — ${token() ? "check the access token" : "this server may need an access token"}; ${retry}`
      : `Connection to the server lost — ${retry}`;
    $("[data-testid=conn-token]").hidden = !serverUp;
    timer ??= setInterval(render, TICK_MS);
  }

  connections.addEventListener("change", render);
  $("[data-testid=conn-retry]").addEventListener("click", () => connections.reconnectNow());
}
